//! Schedules: AWS's schedule expressions (`expr`), EventBridge Scheduler
//! schedules and EventBridge schedule rules (`model`), kept durably
//! (`store`) and fired by one loop (`fire`).
//!
//! The crate does not know Lambda: it hands each fired tick to an
//! [`Invoker`] that the binary implements over `LambdaService`. Nor does
//! it know a wire format: `nimbus-api` turns requests into the typed calls
//! of [`Schedules`].
//!
//! **Once per tick.** Each schedule and rule has a *cursor*, the last tick
//! it fired (or the moment it was created, changed or enabled). Firing a
//! tick moves the cursor and queues one outbox row per target in the same
//! SQLite transaction, so a tick is decided exactly once, even across
//! crashes and restarts. The outbox is then handed to the [`Invoker`] and
//! each row deleted once it has been accepted; a crash between the two
//! repeats that one hand-off (the row's id is passed along as an
//! idempotency key).
//!
//! **Missed ticks.** When the loop finds several ticks due at once (the
//! server was down or suspended), it fires only the most recent one, and
//! only if it is younger than the target's MaximumEventAgeInSeconds
//! (default 24 hours); the older ones are skipped and logged.

mod expr;
mod fire;
mod model;
mod store;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Mutex;

use rusqlite::Connection;

pub use expr::{Dialect, ExprError, Expression, parse_timezone};
pub use fire::{Clock, Running};
pub use model::{
    DEFAULT_GROUP, RetryPolicy, Rule, Schedule, ScheduleError, ScheduleResult, Target, Trigger,
    TriggerKind,
};

/// A boxed future, for the object-safe [`Invoker`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One fired tick for one target, to be handed to Lambda as an
/// asynchronous (`Event`) invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Unique per tick and target, stable across retries and restarts: an
    /// idempotency key for the hand-off.
    pub id: String,
    /// The target function's ARN, possibly qualified.
    pub function_arn: String,
    pub payload: Vec<u8>,
    /// `scheduler.amazonaws.com` or `events.amazonaws.com`.
    pub principal: &'static str,
    /// The schedule's or rule's ARN (`AWS:SourceArn`).
    pub source_arn: String,
    /// The account that owns it (`AWS:SourceAccount`).
    pub source_account: String,
    /// A Scheduler schedule's execution role: Scheduler invokes as that
    /// role, so the role's permission policies decide, not the function's
    /// resource policy. `None` for rules, which invoke as
    /// `events.amazonaws.com` under the function's resource policy.
    pub role_arn: Option<String>,
}

/// Hands a fired tick to its target; implemented by the binary over
/// `LambdaService::invoke_event`. An `Err` (throttled, no such function,
/// refused by the function's policy) is retried per the target's
/// RetryPolicy, then dead-lettered.
pub trait Invoker: Send + Sync + 'static {
    fn deliver(&self, d: Delivery) -> BoxFuture<'_, Result<(), String>>;
    /// Keeps a delivery that failed for good (`reason`) where the user can
    /// list and replay it: the target's DeadLetterConfig queue (`None`:
    /// none configured). The schedule's own `sched_dead_letters` table
    /// records it either way.
    fn dead_letter(
        &self,
        d: Delivery,
        dead_letter_arn: Option<String>,
        reason: String,
    ) -> BoxFuture<'_, Result<(), String>> {
        let _ = (d, dead_letter_arn, reason);
        Box::pin(async { Err("this invoker keeps no dead letters".to_string()) })
    }
}

/// Where nimbus is: region and account for ARNs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub region: String,
    pub account_id: String,
}

impl Place {
    pub fn schedule_arn(&self, group: &str, name: &str) -> String {
        format!(
            "arn:aws:scheduler:{}:{}:schedule/{group}/{name}",
            self.region, self.account_id
        )
    }
    pub fn group_arn(&self, group: &str) -> String {
        format!(
            "arn:aws:scheduler:{}:{}:schedule-group/{group}",
            self.region, self.account_id
        )
    }
    pub fn rule_arn(&self, name: &str) -> String {
        format!(
            "arn:aws:events:{}:{}:rule/{name}",
            self.region, self.account_id
        )
    }
}

/// A schedule or rule with its cursor, as the loop sees it.
#[derive(Debug, Clone)]
struct Live<T> {
    item: T,
    cursor_ms: i64,
}

struct Inner {
    conn: Connection,
    schedules: BTreeMap<(String, String), Live<Schedule>>,
    rules: BTreeMap<String, Live<Rule>>,
}

/// Schedules and rules: the typed operations behind the Scheduler and
/// EventBridge APIs, and the state the firing loop works on.
pub struct Schedules {
    place: Place,
    clock: Clock,
    inner: Mutex<Inner>,
    /// Wakes the loop after a change.
    changed: tokio::sync::Notify,
    /// Wakes the deliverer after a fire.
    fired: tokio::sync::Notify,
    dead_letters: std::sync::atomic::AtomicU64,
    ticks_fired: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Schedules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schedules")
            .field("place", &self.place)
            .finish_non_exhaustive()
    }
}

/// Scheduler's and EventBridge's name pattern `[0-9a-zA-Z-_.]+`, 1-64.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The messages AWS gives for an expression it refuses.
fn scheduler_invalid(expr: &str) -> ScheduleError {
    ScheduleError::Validation(format!("Invalid Schedule Expression {expr}."))
}
fn events_invalid() -> ScheduleError {
    ScheduleError::Validation("Parameter ScheduleExpression is not valid.".into())
}

/// Whether `arn` names a Lambda function in this region and account.
fn is_function_arn(place: &Place, arn: &str) -> bool {
    let prefix = format!(
        "arn:aws:lambda:{}:{}:function:",
        place.region, place.account_id
    );
    arn.strip_prefix(&prefix).is_some_and(|rest| {
        let mut parts = rest.split(':');
        let name_ok = parts.next().is_some_and(|n| !n.is_empty());
        name_ok && parts.next().is_none_or(|q| !q.is_empty()) && parts.next().is_none()
    })
}

/// Whether a target ARN (maybe qualified) is the function `function_arn`
/// (maybe qualified): equal, or one is the other plus a qualifier.
fn same_function(target: &str, function_arn: &str) -> bool {
    fn base(a: &str) -> &str {
        // arn:aws:lambda:R:A:function:NAME[:Q]
        match a.match_indices(':').nth(6) {
            Some((i, _)) => &a[..i],
            None => a,
        }
    }
    target == function_arn || base(target) == base(function_arn)
}

impl Schedules {
    /// Opens the schedule tables in the database at `db` (in memory for
    /// `None`), with the schedule clock compressed `time_scale` times.
    pub fn open(place: Place, db: Option<&Path>, time_scale: u32) -> ScheduleResult<Self> {
        let conn = store::open(db)?;
        let origin = match store::meta(&conn, "clock-origin-ms")? {
            Some(v) => v.parse().unwrap_or_else(|_| fire::real_now_ms()),
            None => {
                let now = fire::real_now_ms();
                store::set_meta(&conn, "clock-origin-ms", &now.to_string())?;
                now
            }
        };
        let clock = Clock::new(origin, time_scale);
        let mut schedules = BTreeMap::new();
        for (s, cursor_ms) in store::load_schedules(&conn)? {
            schedules.insert(
                (s.group.clone(), s.name.clone()),
                Live { item: s, cursor_ms },
            );
        }
        let mut rules = BTreeMap::new();
        for (r, cursor_ms) in store::load_rules(&conn)? {
            rules.insert(r.name.clone(), Live { item: r, cursor_ms });
        }
        let dead = store::dead_letter_count(&conn)?;
        tracing::info!(
            schedules = schedules.len(),
            rules = rules.len(),
            time_scale,
            "schedules loaded"
        );
        Ok(Self {
            place,
            clock,
            inner: Mutex::new(Inner {
                conn,
                schedules,
                rules,
            }),
            changed: tokio::sync::Notify::new(),
            fired: tokio::sync::Notify::new(),
            dead_letters: dead.into(),
            ticks_fired: 0.into(),
        })
    }

    pub fn place(&self) -> &Place {
        &self.place
    }

    /// The schedule clock (real time unless `--schedule-time-scale`).
    pub fn clock(&self) -> Clock {
        self.clock
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock means a panic mid-operation; the SQLite
        // transaction rolled back and memory is only updated after commit.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ticks fired since the server started.
    pub fn fired_count(&self) -> u64 {
        self.ticks_fired.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Ticks that could not be delivered within their retry policy.
    pub fn dead_letter_count(&self) -> u64 {
        self.dead_letters.load(std::sync::atomic::Ordering::Relaxed)
    }

    // ---- EventBridge Scheduler ----

    fn check_schedule(&self, s: &Schedule) -> ScheduleResult<()> {
        if !valid_name(&s.name) {
            return Err(ScheduleError::Validation(format!(
                "1 validation error detected: Value '{}' at 'name' failed to satisfy constraint: \
                 Member must satisfy regular expression pattern: ^[0-9a-zA-Z-_.]+$",
                s.name
            )));
        }
        if s.group != DEFAULT_GROUP {
            return Err(ScheduleError::NotFound(format!(
                "Schedule group {} does not exist.",
                s.group
            )));
        }
        let e = Expression::parse(&s.expression, Dialect::Scheduler).map_err(|e| {
            tracing::debug!(expression = %s.expression, "refused: {e}");
            scheduler_invalid(&s.expression)
        })?;
        parse_timezone(s.timezone.as_deref()).map_err(|_| {
            ScheduleError::Validation(format!(
                "Invalid Schedule Expression Timezone {}.",
                s.timezone.as_deref().unwrap_or_default()
            ))
        })?;
        if let (Some(a), Some(b)) = (s.start_date_ms, s.end_date_ms)
            && a >= b
        {
            return Err(ScheduleError::Validation(
                "The StartDate must be before the EndDate.".into(),
            ));
        }
        if let Some(end) = s.end_date_ms
            && !e.is_one_time()
            && end <= self.clock.now_ms()
        {
            return Err(ScheduleError::Validation(
                "The EndDate must be in the future.".into(),
            ));
        }
        if !is_function_arn(&self.place, &s.target.arn) {
            return Err(ScheduleError::Validation(format!(
                "Invalid target ARN {}: nimbus delivers schedules to Lambda functions in {} \
                 (arn:aws:lambda:{}:{}:function:NAME)",
                s.target.arn, self.place.region, self.place.region, self.place.account_id
            )));
        }
        if let Some(w) = s.flexible_window_min
            && !(1..=1440).contains(&w)
        {
            return Err(ScheduleError::Validation(
                "MaximumWindowInMinutes must be between 1 and 1440.".into(),
            ));
        }
        check_retry(s.target.retry_policy)?;
        Ok(())
    }

    /// CreateSchedule; returns the schedule's ARN.
    pub fn create_schedule(&self, mut s: Schedule) -> ScheduleResult<String> {
        self.check_schedule(&s)?;
        let now = self.clock.now_ms();
        s.created_ms = now;
        s.modified_ms = now;
        s.anchor_ms = s.start_date_ms.unwrap_or(now);
        let mut inner = self.lock();
        let key = (s.group.clone(), s.name.clone());
        if inner.schedules.contains_key(&key) {
            return Err(ScheduleError::Conflict(format!(
                "Schedule {} already exists.",
                s.name
            )));
        }
        let tx = inner.conn.transaction()?;
        store::put_schedule(&tx, &s, now)?;
        tx.commit()?;
        let arn = self.place.schedule_arn(&s.group, &s.name);
        inner.schedules.insert(
            key,
            Live {
                item: s,
                cursor_ms: now,
            },
        );
        drop(inner);
        self.changed.notify_one();
        Ok(arn)
    }

    /// UpdateSchedule: replaces every field, as AWS does; the schedule
    /// starts counting afresh from now.
    pub fn update_schedule(&self, mut s: Schedule) -> ScheduleResult<String> {
        self.check_schedule(&s)?;
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        let key = (s.group.clone(), s.name.clone());
        let Some(old) = inner.schedules.get(&key) else {
            return Err(not_found_schedule(&s.name));
        };
        s.created_ms = old.item.created_ms;
        s.modified_ms = now;
        s.anchor_ms = s.start_date_ms.unwrap_or(now);
        // Ticks between the last one fired and now are not owed by the new
        // definition.
        let cursor = old.cursor_ms.max(now);
        let tx = inner.conn.transaction()?;
        store::put_schedule(&tx, &s, cursor)?;
        tx.commit()?;
        let arn = self.place.schedule_arn(&s.group, &s.name);
        inner.schedules.insert(
            key,
            Live {
                item: s,
                cursor_ms: cursor,
            },
        );
        drop(inner);
        self.changed.notify_one();
        Ok(arn)
    }

    pub fn get_schedule(&self, group: Option<&str>, name: &str) -> ScheduleResult<Schedule> {
        let group = group.unwrap_or(DEFAULT_GROUP);
        self.lock()
            .schedules
            .get(&(group.to_string(), name.to_string()))
            .map(|l| l.item.clone())
            .ok_or_else(|| not_found_schedule(name))
    }

    pub fn delete_schedule(&self, group: Option<&str>, name: &str) -> ScheduleResult<()> {
        let group = group.unwrap_or(DEFAULT_GROUP);
        let mut inner = self.lock();
        let key = (group.to_string(), name.to_string());
        if !inner.schedules.contains_key(&key) {
            return Err(not_found_schedule(name));
        }
        let tx = inner.conn.transaction()?;
        store::delete_schedule(&tx, group, name)?;
        tx.commit()?;
        inner.schedules.remove(&key);
        Ok(())
    }

    /// ListSchedules' filters, in name order (paging is the caller's).
    pub fn list_schedules(
        &self,
        group: Option<&str>,
        name_prefix: Option<&str>,
        state_enabled: Option<bool>,
    ) -> ScheduleResult<Vec<Schedule>> {
        if let Some(g) = group
            && g != DEFAULT_GROUP
        {
            return Err(ScheduleError::NotFound(format!(
                "Schedule group {g} does not exist."
            )));
        }
        Ok(self
            .lock()
            .schedules
            .values()
            .map(|l| &l.item)
            .filter(|s| name_prefix.is_none_or(|p| s.name.starts_with(p)))
            .filter(|s| state_enabled.is_none_or(|e| s.enabled == e))
            .cloned()
            .collect())
    }

    /// The schedule groups: only `default`, created with the server.
    pub fn groups(&self) -> Vec<String> {
        vec![DEFAULT_GROUP.to_string()]
    }

    /// When the `default` group came to be (the schedule clock's origin).
    pub fn group_created_ms(&self) -> i64 {
        self.clock.origin_ms()
    }

    // ---- EventBridge rules ----

    /// PutRule: creates or updates a schedule rule; returns its ARN.
    pub fn put_rule(
        &self,
        name: &str,
        expression: &str,
        description: Option<String>,
        enabled: bool,
        role_arn: Option<String>,
    ) -> ScheduleResult<String> {
        if !valid_name(name) {
            return Err(ScheduleError::Validation(format!(
                "1 validation error detected: Value '{name}' at 'name' failed to satisfy \
                 constraint: Member must satisfy regular expression pattern: [\\.\\-_A-Za-z0-9]+"
            )));
        }
        Expression::parse(expression, Dialect::Events).map_err(|e| {
            tracing::debug!(%expression, "refused: {e}");
            events_invalid()
        })?;
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        let (rule, cursor) = match inner.rules.get(name) {
            Some(old) => {
                let changed = old.item.expression != expression;
                let mut r = old.item.clone();
                r.description = description;
                r.role_arn = role_arn;
                r.expression = expression.to_string();
                if changed {
                    r.anchor_ms = now;
                }
                let cursor = if changed || (enabled && !r.enabled) {
                    old.cursor_ms.max(now)
                } else {
                    old.cursor_ms
                };
                r.enabled = enabled;
                (r, cursor)
            }
            None => (
                Rule {
                    name: name.to_string(),
                    description,
                    expression: expression.to_string(),
                    enabled,
                    role_arn,
                    targets: Vec::new(),
                    created_ms: now,
                    anchor_ms: now,
                },
                now,
            ),
        };
        let tx = inner.conn.transaction()?;
        store::put_rule(&tx, &rule, cursor)?;
        tx.commit()?;
        inner.rules.insert(
            name.to_string(),
            Live {
                item: rule,
                cursor_ms: cursor,
            },
        );
        drop(inner);
        self.changed.notify_one();
        Ok(self.place.rule_arn(name))
    }

    pub fn get_rule(&self, name: &str) -> ScheduleResult<Rule> {
        self.lock()
            .rules
            .get(name)
            .map(|l| l.item.clone())
            .ok_or_else(|| not_found_rule(name))
    }

    pub fn list_rules(&self, name_prefix: Option<&str>) -> Vec<Rule> {
        self.lock()
            .rules
            .values()
            .map(|l| &l.item)
            .filter(|r| name_prefix.is_none_or(|p| r.name.starts_with(p)))
            .cloned()
            .collect()
    }

    /// DeleteRule: refused while the rule has targets, as AWS does.
    pub fn delete_rule(&self, name: &str) -> ScheduleResult<()> {
        let mut inner = self.lock();
        let Some(rule) = inner.rules.get(name) else {
            // AWS answers a delete of a missing rule with success.
            return Ok(());
        };
        if !rule.item.targets.is_empty() {
            return Err(ScheduleError::Validation(
                "Rule can't be deleted since it has targets.".into(),
            ));
        }
        let tx = inner.conn.transaction()?;
        store::delete_rule(&tx, name)?;
        tx.commit()?;
        inner.rules.remove(name);
        Ok(())
    }

    /// EnableRule / DisableRule. Enabling starts counting from now: ticks
    /// missed while disabled are not owed.
    pub fn set_rule_enabled(&self, name: &str, enabled: bool) -> ScheduleResult<()> {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        let Some(live) = inner.rules.get(name).cloned() else {
            return Err(not_found_rule(name));
        };
        let mut rule = live.item;
        let cursor = if enabled && !rule.enabled {
            live.cursor_ms.max(now)
        } else {
            live.cursor_ms
        };
        rule.enabled = enabled;
        let tx = inner.conn.transaction()?;
        store::put_rule(&tx, &rule, cursor)?;
        tx.commit()?;
        inner.rules.insert(
            name.to_string(),
            Live {
                item: rule,
                cursor_ms: cursor,
            },
        );
        drop(inner);
        self.changed.notify_one();
        Ok(())
    }

    /// PutTargets: adds or replaces targets by Id. Returns the entries that
    /// failed, as (Id, ErrorCode, ErrorMessage).
    pub fn put_targets(
        &self,
        rule: &str,
        targets: Vec<Target>,
    ) -> ScheduleResult<Vec<(String, String, String)>> {
        let mut inner = self.lock();
        let Some(live) = inner.rules.get(rule).cloned() else {
            return Err(not_found_rule(rule));
        };
        let mut r = live.item;
        let mut failed = Vec::new();
        for t in targets {
            if !valid_name(&t.id) {
                return Err(ScheduleError::Validation(format!(
                    "1 validation error detected: Value '{}' at 'targets.id' failed to satisfy \
                     constraint: Member must satisfy regular expression pattern: [\\.\\-_A-Za-z0-9]+",
                    t.id
                )));
            }
            check_retry(t.retry_policy)?;
            if !is_function_arn(&self.place, &t.arn) {
                failed.push((
                    t.id.clone(),
                    "ValidationException".to_string(),
                    format!(
                        "nimbus delivers rules to Lambda functions in {} only: {}",
                        self.place.region, t.arn
                    ),
                ));
                continue;
            }
            if let Some(input) = &t.input
                && serde_json::from_str::<serde_json::Value>(input).is_err()
            {
                failed.push((
                    t.id.clone(),
                    "ValidationException".to_string(),
                    "Input is not valid JSON.".to_string(),
                ));
                continue;
            }
            let count = r.targets.len();
            match r.targets.iter_mut().find(|x| x.id == t.id) {
                Some(x) => *x = t,
                None if count >= 5 => failed.push((
                    t.id.clone(),
                    "LimitExceededException".to_string(),
                    "The requested resource exceeds the maximum number allowed.".to_string(),
                )),
                None => r.targets.push(t),
            }
        }
        let tx = inner.conn.transaction()?;
        store::put_rule(&tx, &r, live.cursor_ms)?;
        tx.commit()?;
        inner.rules.insert(
            rule.to_string(),
            Live {
                item: r,
                cursor_ms: live.cursor_ms,
            },
        );
        drop(inner);
        self.changed.notify_one();
        Ok(failed)
    }

    /// RemoveTargets; returns the ids that were not there as failed
    /// entries.
    pub fn remove_targets(
        &self,
        rule: &str,
        ids: &[String],
    ) -> ScheduleResult<Vec<(String, String, String)>> {
        let mut inner = self.lock();
        let Some(live) = inner.rules.get(rule).cloned() else {
            return Err(not_found_rule(rule));
        };
        let mut r = live.item;
        let failed = ids
            .iter()
            .filter(|id| !r.targets.iter().any(|t| &t.id == *id))
            .map(|id| {
                (
                    id.clone(),
                    "ResourceNotFoundException".to_string(),
                    format!("Target {id} does not exist on rule {rule}."),
                )
            })
            .collect();
        r.targets.retain(|t| !ids.contains(&t.id));
        let tx = inner.conn.transaction()?;
        store::put_rule(&tx, &r, live.cursor_ms)?;
        tx.commit()?;
        inner.rules.insert(
            rule.to_string(),
            Live {
                item: r,
                cursor_ms: live.cursor_ms,
            },
        );
        Ok(failed)
    }

    // ---- for `nimbus trigger list` ----

    /// The schedules and rules whose targets are the function
    /// `function_arn` (any qualifier of it, or none).
    pub fn triggers_for(&self, function_arn: &str) -> Vec<Trigger> {
        let inner = self.lock();
        let mut out = Vec::new();
        for l in inner.schedules.values() {
            let s = &l.item;
            if same_function(&s.target.arn, function_arn) {
                out.push(Trigger {
                    kind: TriggerKind::Schedule,
                    arn: self.place.schedule_arn(&s.group, &s.name),
                    name: s.name.clone(),
                    expression: s.expression.clone(),
                    enabled: s.enabled,
                    target_arn: s.target.arn.clone(),
                });
            }
        }
        for l in inner.rules.values() {
            let r = &l.item;
            for t in r
                .targets
                .iter()
                .filter(|t| same_function(&t.arn, function_arn))
            {
                out.push(Trigger {
                    kind: TriggerKind::Rule,
                    arn: self.place.rule_arn(&r.name),
                    name: r.name.clone(),
                    expression: r.expression.clone(),
                    enabled: r.enabled,
                    target_arn: t.arn.clone(),
                });
            }
        }
        out
    }
}

fn check_retry(p: Option<RetryPolicy>) -> ScheduleResult<()> {
    let Some(p) = p else { return Ok(()) };
    if p.maximum_retry_attempts > 185 {
        return Err(ScheduleError::Validation(
            "MaximumRetryAttempts must be between 0 and 185.".into(),
        ));
    }
    if !(60..=86_400).contains(&p.maximum_event_age_s) {
        return Err(ScheduleError::Validation(
            "MaximumEventAgeInSeconds must be between 60 and 86400.".into(),
        ));
    }
    Ok(())
}

fn not_found_schedule(name: &str) -> ScheduleError {
    ScheduleError::NotFound(format!("Schedule {name} does not exist."))
}

fn not_found_rule(name: &str) -> ScheduleError {
    ScheduleError::NotFound(format!("Rule {name} does not exist on EventBus default."))
}

#[cfg(test)]
mod tests;
