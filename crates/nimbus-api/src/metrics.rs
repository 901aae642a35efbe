//! `GET /metrics`: per-function Lambda metrics and the node's execution
//! environments (idle/busy, reserved memory against the memory budget,
//! evictions) in the Prometheus text exposition format 0.0.4,
//! unauthenticated like `/_nimbus/health`.
//!
//! The values are the in-memory counters of [`nimbus_lambda::Metering`] and
//! the engine's [`nimbus_lambda::EnvironmentStats`]:
//! they start at zero when the server starts, which Prometheus handles as a
//! counter reset. Durable usage is `/_nimbus/usage`.
//!
//! Written by hand rather than with a crate: `prometheus-client` encodes
//! OpenMetrics only (`# EOF`, counter families named without `_total`),
//! not 0.0.4, and `metrics-exporter-prometheus` is built around the
//! process-global `metrics` recorder (two services in one test process would
//! share counters) and a dozen dependencies, for what is a few lines of
//! text over counters we already keep.

use std::fmt::Write;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use nimbus_lambda::{EnvironmentStats, FunctionMetrics};

use crate::AppState;

/// The content type of the 0.0.4 text format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(crate) async fn render(State(state): State<AppState>) -> Response {
    let mut text = exposition(&state.lambda.metrics(), &state.lambda.environments());
    text.push_str(&async_exposition(&state.lambda.async_stats()));
    schedules(&mut text, &state.schedules);
    ([(http::header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

/// The asynchronous invocation queue's gauges and counters.
pub(crate) fn async_exposition(s: &nimbus_lambda::AsyncStats) -> String {
    let mut out = String::new();
    let rows: [(&str, &str, &str, String); 10] = [
        (
            "nimbus_async_queue_depth",
            "gauge",
            "Asynchronous invocations accepted and not finished (waiting or running).",
            s.depth.to_string(),
        ),
        (
            "nimbus_async_in_flight",
            "gauge",
            "Asynchronous invocations running now.",
            s.in_flight.to_string(),
        ),
        (
            "nimbus_async_oldest_event_age_seconds",
            "gauge",
            "Age of the oldest unfinished asynchronous invocation.",
            format!("{:.3}", s.oldest_age_ms as f64 / 1000.0),
        ),
        (
            "nimbus_async_events_accepted_total",
            "counter",
            "Asynchronous invocations queued (since the server started).",
            s.accepted.to_string(),
        ),
        (
            "nimbus_async_events_succeeded_total",
            "counter",
            "Asynchronous invocations that ran without a function error.",
            s.succeeded.to_string(),
        ),
        (
            "nimbus_async_retries_total",
            "counter",
            "Retries after a function error.",
            s.retries.to_string(),
        ),
        (
            "nimbus_async_throttle_retries_total",
            "counter",
            "Retries after a throttle or a platform error.",
            s.throttle_retries.to_string(),
        ),
        (
            "nimbus_async_dead_lettered_total",
            "counter",
            "Events stored in the dead-letter store (nimbus dlq list).",
            s.dead_lettered.to_string(),
        ),
        (
            "nimbus_async_destination_deliveries_total",
            "counter",
            "Destination records sent to destination functions.",
            s.destination_deliveries.to_string(),
        ),
        (
            "nimbus_async_recursive_loops_stopped_total",
            "counter",
            "Events not run because their function ran 16 times in one chain (recursive loop detection).",
            s.recursive_loops_stopped.to_string(),
        ),
    ];
    for (name, kind, help, value) in rows {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    }
    out
}

/// The schedules' counters: ticks fired, and deliveries given up on.
fn schedules(out: &mut String, s: &nimbus_schedule::Schedules) {
    let _ = writeln!(
        out,
        "# HELP nimbus_schedule_ticks_fired_total Schedule and rule ticks fired (since the server started).\n\
         # TYPE nimbus_schedule_ticks_fired_total counter\n\
         nimbus_schedule_ticks_fired_total {}\n\
         # HELP nimbus_schedule_dead_letters_total Scheduled deliveries that failed past their retry policy (kept in the database).\n\
         # TYPE nimbus_schedule_dead_letters_total counter\n\
         nimbus_schedule_dead_letters_total {}",
        s.fired_count(),
        s.dead_letter_count()
    );
}

/// A label value, escaped as the format requires.
fn label(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

/// The exposition of every function's metrics and of the node's execution
/// environments.
pub(crate) fn exposition(functions: &[FunctionMetrics], envs: &EnvironmentStats) -> String {
    let mut out = String::new();
    let mut family =
        |name: &str, kind: &str, help: &str, value: &dyn Fn(&FunctionMetrics) -> String| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for f in functions {
                let _ = writeln!(
                    out,
                    "{name}{{function_name=\"{}\"}} {}",
                    label(&f.function),
                    value(f)
                );
            }
        };
    family(
        "nimbus_lambda_invocations_total",
        "counter",
        "Invocations that ran, function errors included, throttles not (since the server started).",
        &|f| f.invocations.to_string(),
    );
    family(
        "nimbus_lambda_errors_total",
        "counter",
        "Invocations that ended in a function error (since the server started).",
        &|f| f.errors.to_string(),
    );
    family(
        "nimbus_lambda_throttles_total",
        "counter",
        "Invocations refused with 429 TooManyRequestsException (since the server started).",
        &|f| f.throttles.to_string(),
    );
    family(
        "nimbus_lambda_gb_seconds_total",
        "counter",
        "Billed duration (init included) times memory, in GB-seconds (since the server started).",
        &|f| f.gb_seconds.to_string(),
    );
    family(
        "nimbus_lambda_concurrent_executions",
        "gauge",
        "Invocations running now.",
        &|f| f.concurrent.to_string(),
    );
    let name = "nimbus_lambda_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Handler duration (REPORT's Duration, init excluded) in seconds (since the server started)."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for f in functions {
        let fname = label(&f.function);
        for (le, n) in &f.duration.buckets {
            let _ = writeln!(
                out,
                "{name}_bucket{{function_name=\"{fname}\",le=\"{le}\"}} {n}"
            );
        }
        let h = &f.duration;
        let _ = writeln!(
            out,
            "{name}_bucket{{function_name=\"{fname}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(out, "{name}_sum{{function_name=\"{fname}\"}} {}", h.sum);
        let _ = writeln!(out, "{name}_count{{function_name=\"{fname}\"}} {}", h.count);
    }
    environments(&mut out, envs);
    out
}

/// The node-wide gauges of execution environments and the memory budget.
fn environments(out: &mut String, e: &EnvironmentStats) {
    const MB: u64 = 1024 * 1024;
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    family(
        "nimbus_environments",
        "gauge",
        "Execution environments now: idle (warm in a pool) or busy (starting, running an invocation, or killed and not yet gone).",
        &[
            ("{state=\"idle\"}", e.idle),
            ("{state=\"busy\"}", e.live.saturating_sub(e.idle)),
        ],
    );
    family(
        "nimbus_environment_memory_reserved_bytes",
        "gauge",
        "Configured memory (MemorySize) of all live execution environments, idle and busy.",
        &[("", e.reserved_mb * MB)],
    );
    family(
        "nimbus_environment_memory_budget_bytes",
        "gauge",
        "The memory budget live execution environments are kept under (--memory-budget).",
        &[("", e.budget_mb * MB)],
    );
    family(
        "nimbus_environment_evictions_total",
        "counter",
        "Idle execution environments stopped to make room under the memory budget (since the server started).",
        &[("", e.evictions)],
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_lambda::{DURATION_BUCKETS_S, Histogram};

    fn metrics(name: &str) -> FunctionMetrics {
        let mut cumulative = 0;
        FunctionMetrics {
            function: name.into(),
            invocations: 3,
            errors: 1,
            throttles: 2,
            concurrent: 1,
            gb_seconds: 0.375,
            duration: Histogram {
                buckets: DURATION_BUCKETS_S
                    .iter()
                    .map(|le| {
                        if *le == 0.005 || *le == 1.0 {
                            cumulative += 1;
                        }
                        (*le, cumulative)
                    })
                    .collect(),
                count: 3,
                sum: 1000.25,
            },
        }
    }

    #[test]
    fn every_family_is_typed_and_every_sample_parses() {
        let envs = EnvironmentStats {
            live: 5,
            idle: 2,
            reserved_mb: 640,
            budget_mb: 4096,
            evictions: 7,
        };
        let text = exposition(&[metrics("a"), metrics("b\"c")], &envs);
        for family in [
            "nimbus_lambda_invocations_total counter",
            "nimbus_lambda_errors_total counter",
            "nimbus_lambda_throttles_total counter",
            "nimbus_lambda_gb_seconds_total counter",
            "nimbus_lambda_concurrent_executions gauge",
            "nimbus_lambda_duration_seconds histogram",
            "nimbus_environments gauge",
            "nimbus_environment_memory_reserved_bytes gauge",
            "nimbus_environment_memory_budget_bytes gauge",
            "nimbus_environment_evictions_total counter",
        ] {
            assert_eq!(
                text.matches(&format!("# TYPE {family}\n")).count(),
                1,
                "{family}"
            );
        }
        assert!(text.contains("nimbus_lambda_invocations_total{function_name=\"a\"} 3\n"));
        assert!(text.contains("nimbus_lambda_errors_total{function_name=\"a\"} 1\n"));
        assert!(text.contains("nimbus_lambda_throttles_total{function_name=\"a\"} 2\n"));
        assert!(text.contains("nimbus_lambda_gb_seconds_total{function_name=\"a\"} 0.375\n"));
        assert!(text.contains("nimbus_lambda_concurrent_executions{function_name=\"a\"} 1\n"));
        assert!(text.contains(
            "nimbus_lambda_duration_seconds_bucket{function_name=\"a\",le=\"0.001\"} 0\n"
        ));
        assert!(text.contains(
            "nimbus_lambda_duration_seconds_bucket{function_name=\"a\",le=\"0.005\"} 1\n"
        ));
        assert!(
            text.contains(
                "nimbus_lambda_duration_seconds_bucket{function_name=\"a\",le=\"900\"} 2\n"
            )
        );
        assert!(text.contains(
            "nimbus_lambda_duration_seconds_bucket{function_name=\"a\",le=\"+Inf\"} 3\n"
        ));
        assert!(text.contains("nimbus_lambda_duration_seconds_sum{function_name=\"a\"} 1000.25\n"));
        assert!(text.contains("nimbus_lambda_duration_seconds_count{function_name=\"a\"} 3\n"));
        assert!(text.contains("{function_name=\"b\\\"c\"}"), "escaped");
        assert!(text.contains("nimbus_environments{state=\"idle\"} 2\n"));
        assert!(text.contains("nimbus_environments{state=\"busy\"} 3\n"));
        assert!(text.contains("nimbus_environment_memory_reserved_bytes 671088640\n"));
        assert!(text.contains("nimbus_environment_memory_budget_bytes 4294967296\n"));
        assert!(text.contains("nimbus_environment_evictions_total 7\n"));
        // Every line is a comment or `name{labels} number`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(line.starts_with("nimbus_"), "{line}");
        }
    }

    #[test]
    fn no_functions_still_declares_the_families() {
        let text = exposition(&[], &EnvironmentStats::default());
        assert_eq!(text.lines().filter(|l| l.starts_with("# TYPE")).count(), 10);
        assert!(
            text.lines()
                .all(|l| l.starts_with('#') || l.starts_with("nimbus_environment")),
            "{text}"
        );
    }
}
