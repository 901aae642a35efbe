//! The firing loop: the schedule clock, deciding which ticks are due
//! (once each, with the missed-tick policy), and handing the outbox to the
//! [`Invoker`] with retries and dead letters.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

use crate::expr::{Dialect, Expression, parse_timezone};
use crate::model::{RetryPolicy, ScheduleResult};
use crate::store::{self, OutboxRow};
use crate::{Delivery, Invoker, Schedules};

pub(crate) fn real_now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The time schedules run on: real time, or real time compressed
/// `scale` times from a fixed origin (`--schedule-time-scale`, for tests:
/// with 60, `rate(1 minute)` fires every real second). The origin is kept
/// in the database, so the clock runs on continuously across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    origin_ms: i64,
    scale: u32,
}

impl Clock {
    pub fn new(origin_ms: i64, scale: u32) -> Self {
        Self {
            origin_ms,
            scale: scale.max(1),
        }
    }

    /// Now on the schedule clock, epoch ms.
    pub fn now_ms(&self) -> i64 {
        self.at(real_now_ms())
    }

    /// The schedule-clock time of a real instant.
    pub fn at(&self, real_ms: i64) -> i64 {
        self.origin_ms + (real_ms - self.origin_ms).saturating_mul(i64::from(self.scale))
    }

    /// How long to really wait for `ms` of schedule time to pass.
    pub fn real_duration(&self, ms: i64) -> Duration {
        Duration::from_millis((ms.max(0) as u64) / u64::from(self.scale))
    }

    pub fn origin_ms(&self) -> i64 {
        self.origin_ms
    }

    pub fn scale(&self) -> u32 {
        self.scale
    }
}

fn utc(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Which of a schedule's ticks to fire now.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Due {
    /// The tick to fire (the most recent due one).
    pub(crate) fire: Option<i64>,
    /// Due ticks passed over in favour of `fire`.
    pub(crate) skipped: u32,
    /// Whether ticks older than the maximum age were passed over too.
    pub(crate) skipped_old: bool,
    /// When the next tick after those becomes due, if any.
    pub(crate) next_due_ms: Option<i64>,
}

/// What a schedule or rule needs for deciding its ticks.
pub(crate) struct Timing<'a> {
    pub(crate) expr: &'a Expression,
    pub(crate) tz: chrono_tz::Tz,
    pub(crate) anchor_ms: i64,
    pub(crate) start_ms: Option<i64>,
    pub(crate) end_ms: Option<i64>,
    /// The longest a tick may wait and still fire (MaximumEventAge).
    pub(crate) max_age_ms: i64,
    /// FLEXIBLE window: each tick's own delay within it.
    pub(crate) window_ms: i64,
    pub(crate) salt: &'a str,
}

/// A tick's delay inside a flexible window: a hash of the schedule and
/// the tick, so it is random-looking yet the same after a restart.
fn flex_offset(salt: &str, tick_ms: i64, window_ms: i64) -> i64 {
    if window_ms <= 0 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in salt.bytes().chain(tick_ms.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % window_ms as u64) as i64
}

/// The missed-tick policy: of the ticks after `cursor` that are due at
/// `now`, fire the most recent if it is younger than the maximum age;
/// skip the others.
pub(crate) fn due(t: &Timing<'_>, cursor_ms: i64, now_ms: i64) -> Due {
    let lookback = now_ms - t.max_age_ms - t.window_ms;
    let mut base = cursor_ms.max(lookback);
    if let Some(start) = t.start_ms {
        base = base.max(start - 1);
    }
    let mut out = Due {
        skipped_old: base > cursor_ms && cursor_ms < lookback,
        ..Due::default()
    };
    let mut next = t
        .expr
        .next_after(utc(base), utc(t.anchor_ms), t.tz)
        .map(|d| d.timestamp_millis());
    let mut count = 0u32;
    while let Some(tick) = next {
        if t.end_ms.is_some_and(|end| tick > end) && !t.expr.is_one_time() {
            next = None;
            break;
        }
        let at = tick + flex_offset(t.salt, tick, t.window_ms);
        if at > now_ms || count >= 100_000 {
            break;
        }
        out.fire = Some(tick);
        count += 1;
        next = t
            .expr
            .next_after(utc(tick), utc(t.anchor_ms), t.tz)
            .map(|d| d.timestamp_millis());
    }
    // A tick that waited out its window past the maximum age is dropped.
    if out
        .fire
        .is_some_and(|tick| now_ms - tick > t.max_age_ms + t.window_ms)
    {
        out.fire = None;
        out.skipped_old = true;
    }
    out.skipped = count.saturating_sub(1);
    out.next_due_ms = next.map(|tick| tick + flex_offset(t.salt, tick, t.window_ms));
    out
}

/// The EventBridge `Scheduled Event` a rule sends when its target has no
/// Input.
pub(crate) fn scheduled_event(place: &crate::Place, rule_arn: &str, tick_ms: i64) -> Vec<u8> {
    serde_json::json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": place.account_id,
        "time": utc(tick_ms).to_rfc3339_opts(SecondsFormat::Secs, true),
        "region": place.region,
        "resources": [rule_arn],
        "detail": {}
    })
    .to_string()
    .into_bytes()
}

/// Exponential backoff between hand-off attempts, on the schedule clock:
/// 2 s, 4 s, 8 s ... at most 64 s.
fn backoff_ms(attempts: u32) -> i64 {
    1000 * (1i64 << attempts.min(6))
}

impl Schedules {
    /// Fires every due tick once at `now_ms` (the schedule clock); returns
    /// when the next tick falls due, if any is known.
    pub(crate) fn fire_due(&self, now_ms: i64) -> ScheduleResult<Option<i64>> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut next_due: Option<i64> = None;
        let mut earliest = |t: Option<i64>| {
            if let Some(t) = t {
                next_due = Some(next_due.map_or(t, |n: i64| n.min(t)));
            }
        };
        let mut fired_any = false;
        // Schedules.
        let keys: Vec<(String, String)> = inner.schedules.keys().cloned().collect();
        for key in keys {
            let Some(live) = inner.schedules.get(&key) else {
                continue;
            };
            let s = &live.item;
            if !s.enabled {
                continue;
            }
            let (Ok(expr), Ok(tz)) = (
                Expression::parse(&s.expression, Dialect::Scheduler),
                parse_timezone(s.timezone.as_deref()),
            ) else {
                continue;
            };
            let retry = s.target.retry();
            let arn = self.place.schedule_arn(&s.group, &s.name);
            let d = due(
                &Timing {
                    expr: &expr,
                    tz,
                    anchor_ms: s.anchor_ms,
                    start_ms: s.start_date_ms,
                    end_ms: s.end_date_ms,
                    max_age_ms: i64::from(retry.maximum_event_age_s) * 1000,
                    window_ms: i64::from(s.flexible_window_min.unwrap_or(0)) * 60_000,
                    salt: &arn,
                },
                live.cursor_ms,
                now_ms,
            );
            earliest(d.next_due_ms);
            let Some(tick) = d.fire else {
                // A recurring schedule past its EndDate has completed too.
                let ended = s.end_date_ms.is_some_and(|end| now_ms > end)
                    && d.next_due_ms.is_none()
                    && !expr.is_one_time();
                if ended && s.delete_after_completion {
                    let tx = inner.conn.transaction()?;
                    store::delete_schedule(&tx, &key.0, &key.1)?;
                    tx.commit()?;
                    inner.schedules.remove(&key);
                    tracing::info!(schedule = %arn, "schedule past its EndDate completed and deleted");
                }
                continue;
            };
            log_skips(&arn, &d, tick);
            let row = OutboxRow {
                id: format!("{}", uuid::Uuid::new_v4()),
                source_arn: arn.clone(),
                principal: "scheduler.amazonaws.com".into(),
                function_arn: s.target.arn.clone(),
                payload: s
                    .target
                    .input
                    .clone()
                    .unwrap_or_else(|| "{}".into())
                    .into_bytes(),
                tick_ms: tick,
                attempts: 0,
                next_ms: now_ms,
                max_attempts: retry.maximum_retry_attempts,
                max_age_s: retry.maximum_event_age_s,
                dead_letter_arn: s.target.dead_letter_arn.clone(),
                role_arn: s.target.role_arn.clone(),
            };
            let completed = expr.is_one_time() && s.delete_after_completion;
            let tx = inner.conn.transaction()?;
            if completed {
                store::delete_schedule(&tx, &key.0, &key.1)?;
            } else {
                store::set_schedule_cursor(&tx, &key.0, &key.1, tick)?;
            }
            store::push_outbox(&tx, &row)?;
            tx.commit()?;
            tracing::info!(schedule = %arn, tick = %utc(tick).to_rfc3339(), "schedule fired");
            if completed {
                inner.schedules.remove(&key);
                tracing::info!(schedule = %arn, "one-time schedule completed and deleted");
            } else if let Some(l) = inner.schedules.get_mut(&key) {
                l.cursor_ms = tick;
            }
            fired_any = true;
            self.ticks_fired
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        // Rules.
        let names: Vec<String> = inner.rules.keys().cloned().collect();
        for name in names {
            let Some(live) = inner.rules.get(&name) else {
                continue;
            };
            let r = &live.item;
            if !r.enabled {
                continue;
            }
            let Ok(expr) = Expression::parse(&r.expression, Dialect::Events) else {
                continue;
            };
            let max_age_s = r
                .targets
                .iter()
                .map(|t| t.retry().maximum_event_age_s)
                .max()
                .unwrap_or(RetryPolicy::default().maximum_event_age_s);
            let arn = self.place.rule_arn(&r.name);
            let d = due(
                &Timing {
                    expr: &expr,
                    tz: chrono_tz::Tz::UTC,
                    anchor_ms: r.anchor_ms,
                    start_ms: None,
                    end_ms: None,
                    max_age_ms: i64::from(max_age_s) * 1000,
                    window_ms: 0,
                    salt: &arn,
                },
                live.cursor_ms,
                now_ms,
            );
            earliest(d.next_due_ms);
            let Some(tick) = d.fire else { continue };
            log_skips(&arn, &d, tick);
            let tx = inner.conn.transaction()?;
            store::set_rule_cursor(&tx, &name, tick)?;
            for t in &r.targets {
                let retry = t.retry();
                let payload = match &t.input {
                    Some(i) => i.clone().into_bytes(),
                    None => scheduled_event(&self.place, &arn, tick),
                };
                store::push_outbox(
                    &tx,
                    &OutboxRow {
                        id: uuid::Uuid::new_v4().to_string(),
                        source_arn: arn.clone(),
                        principal: "events.amazonaws.com".into(),
                        function_arn: t.arn.clone(),
                        payload,
                        tick_ms: tick,
                        attempts: 0,
                        next_ms: now_ms,
                        max_attempts: retry.maximum_retry_attempts,
                        max_age_s: retry.maximum_event_age_s,
                        dead_letter_arn: t.dead_letter_arn.clone(),
                        role_arn: None,
                    },
                )?;
            }
            tx.commit()?;
            tracing::info!(rule = %arn, tick = %utc(tick).to_rfc3339(), targets = r.targets.len(), "rule fired");
            if let Some(l) = inner.rules.get_mut(&name) {
                l.cursor_ms = tick;
            }
            fired_any = true;
            self.ticks_fired
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if fired_any {
            self.fired.notify_one();
        }
        Ok(next_due)
    }

    /// Hands due outbox rows to `invoker`; returns when the next row is
    /// due, if any.
    async fn deliver_due(&self, invoker: &dyn Invoker) -> ScheduleResult<Option<i64>> {
        let now = self.clock.now_ms();
        let rows = {
            let inner = self.lock();
            store::due_outbox(&inner.conn, now, 64)?
        };
        for row in rows {
            let d = Delivery {
                id: row.id.clone(),
                function_arn: row.function_arn.clone(),
                payload: row.payload.clone(),
                principal: if row.principal == "events.amazonaws.com" {
                    "events.amazonaws.com"
                } else {
                    "scheduler.amazonaws.com"
                },
                source_arn: row.source_arn.clone(),
                source_account: self.place.account_id.clone(),
                role_arn: row.role_arn.clone(),
            };
            let result = invoker.deliver(d.clone()).await;
            let now = self.clock.now_ms();
            if let Err(e) = &result {
                let given_up = row.attempts + 1 > row.max_attempts
                    || now - row.tick_ms > i64::from(row.max_age_s) * 1000;
                if given_up {
                    let kept = invoker
                        .dead_letter(d, row.dead_letter_arn.clone(), e.clone())
                        .await;
                    if let Err(why) = kept {
                        tracing::warn!(source = %row.source_arn, "dead letter not kept in the store ({why})");
                    }
                }
            }
            let mut inner = self.lock();
            match result {
                Ok(()) => store::delete_outbox(&inner.conn, &row.id)?,
                Err(e) => {
                    let attempts = row.attempts + 1;
                    let too_old = now - row.tick_ms > i64::from(row.max_age_s) * 1000;
                    if attempts > row.max_attempts || too_old {
                        store::dead_letter(&mut inner.conn, &row, &e, now)?;
                        self.dead_letters
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        // Also in Lambda's dead-letter store (`nimbus dlq`),
                        // through the invoker, above.
                        tracing::warn!(
                            source = %row.source_arn, function = %row.function_arn,
                            dead_letter_queue = row.dead_letter_arn.as_deref().unwrap_or("none"),
                            attempts, "scheduled delivery failed for good ({e}); dead-lettered"
                        );
                    } else {
                        tracing::info!(
                            source = %row.source_arn, function = %row.function_arn, attempts,
                            "scheduled delivery failed ({e}); retrying"
                        );
                        store::retry_outbox(
                            &inner.conn,
                            &row.id,
                            attempts,
                            now + backoff_ms(attempts),
                        )?;
                    }
                }
            }
        }
        let inner = self.lock();
        store::next_outbox_ms(&inner.conn)
    }

    /// Starts the firing loop and the deliverer; they run until
    /// [`Running::stop`] (which drops the invoker) or the runtime ends.
    pub fn spawn(self: &Arc<Self>, invoker: Arc<dyn Invoker>) -> Running {
        let me = self.clone();
        let ticker = tokio::spawn(async move {
            loop {
                let now = me.clock.now_ms();
                let me2 = me.clone();
                let next = tokio::task::spawn_blocking(move || me2.fire_due(now)).await;
                let next = match next {
                    Ok(Ok(n)) => n,
                    Ok(Err(e)) => {
                        tracing::error!("schedule loop: {e}");
                        None
                    }
                    Err(e) => {
                        tracing::error!("schedule loop panicked: {e}");
                        None
                    }
                };
                let wait = me.sleep_for(next);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = me.changed.notified() => {}
                }
            }
        });
        let me = self.clone();
        let deliverer = tokio::spawn(async move {
            loop {
                let next = match me.deliver_due(&*invoker).await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::error!("schedule deliverer: {e}");
                        None
                    }
                };
                let wait = me.sleep_for(next);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = me.fired.notified() => {}
                }
            }
        });
        Running {
            tasks: vec![ticker, deliverer],
        }
    }

    /// Real time until `next` (schedule clock), between 5 ms and 1 s: the
    /// loop looks again at least every second, which also catches a clock
    /// that jumped.
    fn sleep_for(&self, next: Option<i64>) -> Duration {
        let max = Duration::from_secs(1);
        match next {
            None => max,
            Some(t) => self
                .clock
                .real_duration(t - self.clock.now_ms())
                .clamp(Duration::from_millis(5), max),
        }
    }
}

#[cfg(test)]
impl Schedules {
    pub(crate) async fn deliver_due_for_test(&self, invoker: &dyn Invoker) {
        self.deliver_due(invoker).await.unwrap();
    }
}

/// The firing loop and the deliverer, while they run.
#[derive(Debug)]
pub struct Running {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops both and waits until they are gone (with them the invoker,
    /// which may hold the rest of the server). A tick being handed off is
    /// cut short: its outbox row stays and is delivered after a restart.
    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

fn log_skips(arn: &str, d: &Due, tick: i64) {
    if d.skipped > 0 || d.skipped_old {
        tracing::warn!(
            source = %arn,
            skipped = d.skipped,
            older_than_max_age = d.skipped_old,
            "missed ticks (the server was down or busy): firing only the most recent, {}",
            utc(tick).to_rfc3339_opts(SecondsFormat::Secs, true)
        );
    }
}
