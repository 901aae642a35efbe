//! The service and the loop's decisions, on a clock the tests move by hand.

use super::*;
use crate::fire::{Due, Timing, due};
use std::sync::Arc;

const MIN: i64 = 60_000;

fn place() -> Place {
    Place {
        region: "us-east-1".into(),
        account_id: "000000000000".into(),
    }
}

fn f_arn(name: &str) -> String {
    format!("arn:aws:lambda:us-east-1:000000000000:function:{name}")
}

fn outbox(s: &Schedules) -> Vec<store::OutboxRow> {
    store::due_outbox(&s.lock().conn, i64::MAX, 1000).unwrap()
}

fn target(id: &str, f: &str) -> Target {
    Target {
        id: id.into(),
        arn: f_arn(f),
        role_arn: None,
        input: None,
        retry_policy: None,
        dead_letter_arn: None,
    }
}

#[test]
fn a_rate_fires_once_per_tick_and_only_the_latest_after_downtime() {
    let rate = Expression::parse("rate(1 minute)", Dialect::Events).unwrap();
    let t = Timing {
        expr: &rate,
        tz: chrono_tz::Tz::UTC,
        anchor_ms: 0,
        start_ms: None,
        end_ms: None,
        max_age_ms: 10 * MIN,
        window_ms: 0,
        salt: "x",
    };
    // Nothing before the first minute.
    assert_eq!(due(&t, 0, 59_999).fire, None);
    // One tick, then nothing more for the same cursor.
    assert_eq!(due(&t, 0, MIN).fire, Some(MIN));
    assert_eq!(due(&t, MIN, MIN + 30_000).fire, None);
    assert_eq!(due(&t, MIN, MIN + 30_000).next_due_ms, Some(2 * MIN));
    // Five minutes down: the most recent fires, four are skipped.
    let d = due(&t, MIN, 6 * MIN + 5_000);
    assert_eq!(
        (d.fire, d.skipped, d.skipped_old),
        (Some(6 * MIN), 4, false)
    );
    // An hour down, max age ten minutes: the most recent still fires (it
    // is a few seconds old), the older ones are reported as skipped.
    let d = due(&t, MIN, 61 * MIN + 5_000);
    assert_eq!(d.fire, Some(61 * MIN));
    assert!(d.skipped_old);
}

#[test]
fn a_tick_older_than_the_maximum_age_is_not_fired() {
    // A daily cron missed by more than the max age is not fired late.
    let cron = Expression::parse("cron(0 0 * * ? *)", Dialect::Events).unwrap();
    let t = Timing {
        expr: &cron,
        tz: chrono_tz::Tz::UTC,
        anchor_ms: 0,
        start_ms: None,
        end_ms: None,
        max_age_ms: 10 * MIN,
        window_ms: 0,
        salt: "x",
    };
    let day = 24 * 60 * MIN;
    assert_eq!(due(&t, 0, day + 5 * MIN).fire, Some(day));
    let late = due(&t, 0, day + 20 * MIN);
    assert_eq!(late.fire, None);
    assert_eq!(late.next_due_ms, Some(2 * day));
}

#[test]
fn a_flexible_window_delays_each_tick_within_the_window() {
    let rate = Expression::parse("rate(1 hour)", Dialect::Scheduler).unwrap();
    let t = Timing {
        expr: &rate,
        tz: chrono_tz::Tz::UTC,
        anchor_ms: 0,
        start_ms: None,
        end_ms: None,
        max_age_ms: 24 * 60 * MIN,
        window_ms: 15 * MIN,
        salt: "arn:aws:scheduler:us-east-1:000000000000:schedule/default/flex",
    };
    let Due { next_due_ms, .. } = due(&t, 0, 0);
    let at = next_due_ms.unwrap();
    assert!((60 * MIN..75 * MIN).contains(&at), "{at}");
    assert_eq!(due(&t, 0, at - 1).fire, None);
    assert_eq!(due(&t, 0, at).fire, Some(60 * MIN));
}

#[test]
fn rules_fire_their_targets_and_survive_a_restart_without_firing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nimbus.db");
    let s = Schedules::open(place(), Some(&db), 1).unwrap();
    let arn = s
        .put_rule("every-minute", "rate(1 minute)", None, true, None)
        .unwrap();
    assert_eq!(
        arn,
        "arn:aws:events:us-east-1:000000000000:rule/every-minute"
    );
    let failed = s
        .put_targets(
            "every-minute",
            vec![
                target("a", "fa"),
                Target {
                    input: Some(r#"{"k":1}"#.into()),
                    ..target("b", "fb")
                },
            ],
        )
        .unwrap();
    assert!(failed.is_empty());
    assert_eq!(
        s.delete_rule("every-minute"),
        Err(ScheduleError::Validation(
            "Rule can't be deleted since it has targets.".into()
        ))
    );
    let created = s.get_rule("every-minute").unwrap().created_ms;
    s.fire_due(created + MIN).unwrap();
    let rows = outbox(&s);
    assert_eq!(rows.len(), 2);
    let envelope: serde_json::Value = serde_json::from_slice(&rows[0].payload).unwrap();
    let (a, b) = if envelope.get("detail-type").is_some() {
        (&rows[0], &rows[1])
    } else {
        (&rows[1], &rows[0])
    };
    let envelope: serde_json::Value = serde_json::from_slice(&a.payload).unwrap();
    assert_eq!(envelope["detail-type"], "Scheduled Event");
    assert_eq!(envelope["source"], "aws.events");
    assert_eq!(envelope["resources"][0], arn);
    assert_eq!(envelope["detail"], serde_json::json!({}));
    assert_eq!(b.payload, br#"{"k":1}"#);
    assert_eq!(a.principal, "events.amazonaws.com");
    // The same instant again fires nothing.
    s.fire_due(created + MIN).unwrap();
    assert_eq!(outbox(&s).len(), 2);
    drop(s);
    // Reopened: the cursor came back with the rule.
    let s = Schedules::open(place(), Some(&db), 1).unwrap();
    s.fire_due(created + MIN + 10_000).unwrap();
    assert_eq!(outbox(&s).len(), 2);
    s.fire_due(created + 2 * MIN).unwrap();
    assert_eq!(outbox(&s).len(), 4);
    // The trigger query finds the rule for each function, qualified or not.
    let t = s.triggers_for(&f_arn("fa"));
    assert_eq!(t.len(), 1);
    assert_eq!(
        (t[0].kind, t[0].name.as_str()),
        (TriggerKind::Rule, "every-minute")
    );
    assert_eq!(s.triggers_for(&format!("{}:prod", f_arn("fb"))).len(), 1);
    assert!(s.triggers_for(&f_arn("other")).is_empty());
    s.remove_targets("every-minute", &["a".into(), "b".into()])
        .unwrap();
    s.delete_rule("every-minute").unwrap();
}

fn schedule(name: &str, expr: &str) -> Schedule {
    Schedule {
        group: DEFAULT_GROUP.into(),
        name: name.into(),
        description: None,
        expression: expr.into(),
        timezone: None,
        start_date_ms: None,
        end_date_ms: None,
        enabled: true,
        flexible_window_min: None,
        target: Target {
            role_arn: Some("arn:aws:iam::000000000000:role/r".into()),
            input: Some(r#"{"hello":"world"}"#.into()),
            ..target("", "f")
        },
        delete_after_completion: false,
        kms_key_arn: None,
        created_ms: 0,
        modified_ms: 0,
        anchor_ms: 0,
    }
}

#[test]
fn schedules_validate_like_scheduler_and_one_time_ones_delete_themselves() {
    let s = Schedules::open(place(), None, 1).unwrap();
    assert_eq!(
        s.create_schedule(schedule("bad", "rate(1 minutes)")),
        Err(ScheduleError::Validation(
            "Invalid Schedule Expression rate(1 minutes).".into()
        ))
    );
    assert_eq!(
        s.put_rule("bad", "cron(0 0 * * * *)", None, true, None),
        Err(ScheduleError::Validation(
            "Parameter ScheduleExpression is not valid.".into()
        ))
    );
    let arn = s
        .create_schedule(schedule("hourly", "rate(1 hour)"))
        .unwrap();
    assert_eq!(
        arn,
        "arn:aws:scheduler:us-east-1:000000000000:schedule/default/hourly"
    );
    assert!(matches!(
        s.create_schedule(schedule("hourly", "rate(1 hour)")),
        Err(ScheduleError::Conflict(_))
    ));
    assert!(matches!(
        s.get_schedule(None, "nope"),
        Err(ScheduleError::NotFound(_))
    ));
    let now = s.clock.now_ms();
    let at = utc_text(now + 2 * MIN);
    let mut once = schedule("once", &format!("at({at})"));
    once.delete_after_completion = true;
    s.create_schedule(once).unwrap();
    s.fire_due(now + MIN).unwrap();
    assert!(outbox(&s).is_empty());
    s.fire_due(now + 3 * MIN).unwrap();
    let rows = outbox(&s);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].payload, br#"{"hello":"world"}"#);
    assert_eq!(rows[0].principal, "scheduler.amazonaws.com");
    assert!(matches!(
        s.get_schedule(None, "once"),
        Err(ScheduleError::NotFound(_))
    ));
    assert_eq!(
        s.list_schedules(None, Some("hou"), Some(true))
            .unwrap()
            .len(),
        1
    );
}

fn utc_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

struct Failing(std::sync::atomic::AtomicU32);

impl Invoker for Failing {
    fn deliver(&self, _: Delivery) -> BoxFuture<'_, Result<(), String>> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async { Err("throttled".to_string()) })
    }
}

#[tokio::test]
async fn a_failing_hand_off_is_retried_then_dead_lettered() {
    let s = Arc::new(Schedules::open(place(), None, 1).unwrap());
    let mut sch = schedule("retry", "rate(1 minute)");
    sch.target.retry_policy = Some(RetryPolicy {
        maximum_retry_attempts: 1,
        maximum_event_age_s: 3600,
    });
    sch.target.dead_letter_arn = Some("arn:aws:sqs:us-east-1:000000000000:dlq".into());
    s.create_schedule(sch).unwrap();
    let now = s.clock.now_ms();
    s.fire_due(now + MIN).unwrap();
    let inv = Failing(0.into());
    s.lock()
        .conn
        .execute("UPDATE sched_outbox SET next_ms = 0", [])
        .unwrap();
    s.deliver_due_for_test(&inv).await;
    assert_eq!(outbox(&s)[0].attempts, 1);
    assert_eq!(s.dead_letter_count(), 0);
    // The retry is due after the backoff; make it due now.
    s.lock()
        .conn
        .execute("UPDATE sched_outbox SET next_ms = 0", [])
        .unwrap();
    s.deliver_due_for_test(&inv).await;
    assert!(outbox(&s).is_empty());
    assert_eq!(s.dead_letter_count(), 1);
    assert_eq!(inv.0.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[test]
fn a_recurring_schedule_past_its_end_date_deletes_itself_when_asked() {
    let s = Schedules::open(place(), None, 1).unwrap();
    let now = s.clock.now_ms();
    let mut ending = schedule("ending", "rate(1 minute)");
    ending.end_date_ms = Some(now + 150_000);
    ending.delete_after_completion = true;
    s.create_schedule(ending).unwrap();
    let mut kept = schedule("kept", "rate(1 minute)");
    kept.end_date_ms = Some(now + 150_000);
    s.create_schedule(kept).unwrap();
    // A rate counts from each schedule's creation, a few ms after `now` on
    // a busy machine: look a little past each tick.
    let slack = 5_000;
    s.fire_due(now + MIN + slack).unwrap();
    s.fire_due(now + 2 * MIN + slack).unwrap();
    assert_eq!(outbox(&s).len(), 4);
    // The third minute is after EndDate: no fire, and "ending" is gone.
    s.fire_due(now + 3 * MIN + slack).unwrap();
    assert_eq!(outbox(&s).len(), 4);
    assert!(s.get_schedule(None, "ending").is_err());
    assert!(s.get_schedule(None, "kept").is_ok());
}
