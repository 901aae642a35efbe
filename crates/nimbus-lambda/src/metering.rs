//! Metering: every invocation is counted twice, off the invoke path's
//! critical section.
//!
//! - In memory, per function, for Prometheus (`/metrics`): counters,
//!   a duration histogram and the concurrency gauge, as atomics. They
//!   start at zero when the server starts, which Prometheus counters allow
//!   (`rate()` treats a drop as a reset).
//! - Durably, per function per UTC hour: each invocation becomes a
//!   [`UsageHour`] increment on a channel; [`spawn_usage_writer`]'s thread
//!   folds whatever has queued up into one upsert per (function, hour) and
//!   commits them together, like the log writer.
//!
//! [`usage_report`] turns the hourly rows into what `nimbus usage` prints:
//! requests, GB-seconds and their cost at the configured prices, with
//! Lambda's monthly free tier applied separately.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use chrono::{Datelike, TimeZone};
use nimbus_core::{LambdaError, LambdaResult};
use nimbus_runtime::InvokeOutcome;
use nimbus_store::{MB_MS_PER_GB_SECOND, Store, UsageHour};
use tokio::sync::mpsc;

/// Lambda's public on-demand prices (x86, first tier), the defaults of
/// `nimbus serve --price-per-million-requests / --price-per-gb-second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prices {
    /// Dollars per 1M requests.
    pub per_million_requests: f64,
    /// Dollars per GB-second (billed duration, init included, × memory).
    pub per_gb_second: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Self {
            per_million_requests: 0.20,
            per_gb_second: 0.000_016_666_7,
        }
    }
}

/// Requests free each calendar month (UTC).
pub const FREE_TIER_REQUESTS: u64 = 1_000_000;
/// GB-seconds free each calendar month (UTC).
pub const FREE_TIER_GB_SECONDS: u64 = 400_000;

/// Upper bounds (seconds) of the duration histogram's buckets, from 1 ms
/// to Lambda's 900 s timeout; `+Inf` follows.
pub const DURATION_BUCKETS_S: [f64; 19] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 900.0,
];

/// One function's live counters.
#[derive(Default)]
struct Counters {
    invocations: AtomicU64,
    errors: AtomicU64,
    throttles: AtomicU64,
    mb_ms: AtomicU64,
    concurrent: AtomicI64,
    /// Per-bucket (not cumulative) counts; the last is above 900 s.
    buckets: [AtomicU64; DURATION_BUCKETS_S.len() + 1],
    duration_sum_us: AtomicU64,
}

/// A histogram as Prometheus exposes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// (upper bound in seconds, observations at or below it), cumulative,
    /// one per [`DURATION_BUCKETS_S`].
    pub buckets: Vec<(f64, u64)>,
    /// All observations (the `+Inf` bucket).
    pub count: u64,
    /// Sum of the observations, seconds.
    pub sum: f64,
}

/// One function's counters since the server started.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionMetrics {
    pub function: String,
    /// Invocations that ran (function errors included, throttles not).
    pub invocations: u64,
    /// Invocations that ended in a function error.
    pub errors: u64,
    /// Invocations refused with 429.
    pub throttles: u64,
    /// Invocations running now.
    pub concurrent: i64,
    pub gb_seconds: f64,
    /// Handler duration (REPORT's Duration), seconds.
    pub duration: Histogram,
}

/// The meter [`crate::LambdaService`] runs every invocation through.
#[derive(Default)]
pub struct Metering {
    functions: RwLock<HashMap<String, Arc<Counters>>>,
    sink: Option<mpsc::UnboundedSender<UsageHour>>,
    prices: Prices,
}

impl std::fmt::Debug for Metering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metering").finish_non_exhaustive()
    }
}

/// Takes one off a function's concurrency gauge when the invocation ends,
/// however it ends (a dropped request future included).
struct Running(Arc<Counters>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.concurrent.fetch_sub(1, Ordering::Relaxed);
    }
}

fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Metering {
    /// A meter that sends hourly increments to `sink` (see
    /// [`spawn_usage_writer`]) and prices usage with `prices`. Without a
    /// sink only the in-memory counters are kept.
    pub fn new(sink: Option<mpsc::UnboundedSender<UsageHour>>, prices: Prices) -> Self {
        Self {
            functions: RwLock::default(),
            sink,
            prices,
        }
    }

    /// The prices reports are made at.
    pub fn prices(&self) -> Prices {
        self.prices
    }

    fn counters(&self, function: &str) -> Arc<Counters> {
        if let Some(c) = self
            .functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(function)
        {
            return c.clone();
        }
        self.functions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(function.to_string())
            .or_default()
            .clone()
    }

    /// Runs one invocation of `function` and records what became of it:
    /// an outcome (a request, maybe a function error) or a throttle. Other
    /// platform errors (a runtime that cannot start) are not billed and
    /// not counted.
    pub(crate) async fn run(
        &self,
        function: &str,
        invocation: impl Future<Output = LambdaResult<InvokeOutcome>>,
    ) -> LambdaResult<InvokeOutcome> {
        let counters = self.counters(function);
        counters.concurrent.fetch_add(1, Ordering::Relaxed);
        let running = Running(counters);
        let result = invocation.await;
        let counters = &running.0;
        match &result {
            Ok(outcome) => self.completed(function, counters, outcome),
            Err(LambdaError::TooManyRequests { .. }) => {
                counters.throttles.fetch_add(1, Ordering::Relaxed);
                self.send(UsageHour {
                    function: function.to_string(),
                    hour_s: UsageHour::hour_of(now_s()),
                    throttles: 1,
                    ..Default::default()
                });
            }
            Err(_) => {}
        }
        result
    }

    fn completed(&self, function: &str, c: &Counters, outcome: &InvokeOutcome) {
        let m = &outcome.metrics;
        let error = outcome.function_error.is_some();
        let mb_ms = m.billed_ms * u64::from(m.memory_size_mb);
        c.invocations.fetch_add(1, Ordering::Relaxed);
        if error {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
        c.mb_ms.fetch_add(mb_ms, Ordering::Relaxed);
        let seconds = m.duration_ms / 1000.0;
        let bucket = DURATION_BUCKETS_S
            .iter()
            .position(|le| seconds <= *le)
            .unwrap_or(DURATION_BUCKETS_S.len());
        c.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        c.duration_sum_us
            .fetch_add((m.duration_ms * 1000.0).round() as u64, Ordering::Relaxed);
        self.send(UsageHour {
            function: function.to_string(),
            hour_s: UsageHour::hour_of(now_s()),
            requests: 1,
            errors: u64::from(error),
            throttles: 0,
            billed_ms: m.billed_ms,
            mb_ms,
            init_ms: m.init_ms.unwrap_or(0.0),
            duration_ms: m.duration_ms,
        });
    }

    fn send(&self, row: UsageHour) {
        if let Some(sink) = &self.sink
            && sink.send(row).is_err()
        {
            tracing::warn!("usage writer is gone; an invocation was not recorded");
        }
    }

    /// Every function's counters since start, ordered by name.
    pub fn snapshot(&self) -> Vec<FunctionMetrics> {
        let functions = self.functions.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<FunctionMetrics> = functions
            .iter()
            .map(|(name, c)| {
                let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
                let mut cumulative = 0;
                let buckets = DURATION_BUCKETS_S
                    .iter()
                    .zip(&c.buckets)
                    .map(|(le, n)| {
                        cumulative += load(n);
                        (*le, cumulative)
                    })
                    .collect();
                // The count is the buckets' sum, so `+Inf` always equals it
                // even while an observation is half recorded.
                let count = cumulative + load(&c.buckets[DURATION_BUCKETS_S.len()]);
                FunctionMetrics {
                    function: name.clone(),
                    invocations: load(&c.invocations),
                    errors: load(&c.errors),
                    throttles: load(&c.throttles),
                    concurrent: c.concurrent.load(Ordering::Relaxed).max(0),
                    gb_seconds: load(&c.mb_ms) as f64 / MB_MS_PER_GB_SECOND as f64,
                    duration: Histogram {
                        buckets,
                        count,
                        sum: load(&c.duration_sum_us) as f64 / 1e6,
                    },
                }
            })
            .collect();
        out.sort_by(|a, b| a.function.cmp(&b.function));
        out
    }
}

/// Starts the thread that adds usage increments to the store. Whatever has
/// queued up while one transaction commits is folded into one row per
/// (function, hour) and goes into the next. The thread ends when every
/// sender is dropped, after writing what was sent.
pub fn spawn_usage_writer(
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<UsageHour>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("nimbus-usage".into())
        .spawn(move || {
            while let Some(first) = rx.blocking_recv() {
                let mut rows = vec![first];
                while rows.len() < 4096
                    && let Ok(more) = rx.try_recv()
                {
                    rows.push(more);
                }
                let rows = fold(rows);
                if let Err(e) = store.record_usage(&rows) {
                    tracing::error!("recording usage of {} function-hours: {e}", rows.len());
                }
            }
        })
}

/// One row per (function, hour), in first-seen order.
fn fold(rows: Vec<UsageHour>) -> Vec<UsageHour> {
    let mut index: HashMap<(String, i64), usize> = HashMap::new();
    let mut out: Vec<UsageHour> = Vec::new();
    for r in rows {
        match index.get(&(r.function.clone(), r.hour_s)) {
            Some(&i) => out[i].add(&r),
            None => {
                index.insert((r.function.clone(), r.hour_s), out.len());
                out.push(r);
            }
        }
    }
    out
}

/// Usage summed over a window, with the free-tier allowance it used.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageTotals {
    pub requests: u64,
    pub errors: u64,
    pub throttles: u64,
    pub billed_ms: u64,
    /// GB-seconds × 1,024,000, exact.
    pub mb_ms: u64,
    pub init_ms: f64,
    pub duration_ms: f64,
    /// Of `requests`, how many the monthly free tier covered.
    pub free_requests: u64,
    /// Of `mb_ms`, how much the monthly free tier covered.
    pub free_mb_ms: u64,
}

impl UsageTotals {
    pub fn gb_seconds(&self) -> f64 {
        self.mb_ms as f64 / MB_MS_PER_GB_SECOND as f64
    }

    pub fn free_gb_seconds(&self) -> f64 {
        self.free_mb_ms as f64 / MB_MS_PER_GB_SECOND as f64
    }

    fn price(requests: u64, mb_ms: u64, p: &Prices) -> f64 {
        requests as f64 * p.per_million_requests / 1e6
            + mb_ms as f64 / MB_MS_PER_GB_SECOND as f64 * p.per_gb_second
    }

    /// Cost before the free tier.
    pub fn cost(&self, p: &Prices) -> f64 {
        Self::price(self.requests, self.mb_ms, p)
    }

    /// What the free tier took off [`Self::cost`].
    pub fn free_tier_credit(&self, p: &Prices) -> f64 {
        Self::price(self.free_requests, self.free_mb_ms, p)
    }

    /// Cost after the free tier.
    pub fn cost_after_free_tier(&self, p: &Prices) -> f64 {
        Self::price(
            self.requests - self.free_requests,
            self.mb_ms - self.free_mb_ms,
            p,
        )
    }

    fn add(&mut self, r: &UsageHour, free_requests: u64, free_mb_ms: u64) {
        self.requests += r.requests;
        self.errors += r.errors;
        self.throttles += r.throttles;
        self.billed_ms += r.billed_ms;
        self.mb_ms += r.mb_ms;
        self.init_ms += r.init_ms;
        self.duration_ms += r.duration_ms;
        self.free_requests += free_requests;
        self.free_mb_ms += free_mb_ms;
    }
}

/// What `GET /_nimbus/usage` answers.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageReport {
    /// Start of the first hour counted (epoch seconds).
    pub since_s: i64,
    /// When the report was made.
    pub until_s: i64,
    pub prices: Prices,
    /// Per function, ordered by name.
    pub functions: Vec<(String, UsageTotals)>,
    pub total: UsageTotals,
}

/// The start (epoch seconds) of the UTC calendar month `epoch_s` is in.
pub(crate) fn month_start(epoch_s: i64) -> i64 {
    let t = chrono::Utc
        .timestamp_opt(epoch_s, 0)
        .single()
        .unwrap_or_default();
    chrono::Utc
        .with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
        .single()
        .map_or(epoch_s, |m| m.timestamp())
}

/// Sums `rows` from the hour `since_s` falls in, for one function or all.
///
/// The free tier is the account's, per calendar month: it is consumed in
/// time order (within an hour, in function-name order) by every function's
/// usage, so `rows` must start at the beginning of `since_s`'s month (what
/// came earlier in the month has used some of it) and must not be filtered
/// by function. Each function is credited with the allowance its own usage
/// consumed.
pub fn usage_report(
    rows: &[UsageHour],
    since_s: i64,
    until_s: i64,
    function: Option<&str>,
    prices: Prices,
) -> UsageReport {
    let since_hour = UsageHour::hour_of(since_s);
    let mut sorted: Vec<&UsageHour> = rows.iter().collect();
    sorted.sort_by(|a, b| (a.hour_s, &a.function).cmp(&(b.hour_s, &b.function)));
    let mut month = None;
    let (mut left_requests, mut left_mb_ms) = (0, 0);
    let mut per_function: HashMap<&str, UsageTotals> = HashMap::new();
    for r in sorted {
        let m = month_start(r.hour_s);
        if month != Some(m) {
            month = Some(m);
            left_requests = FREE_TIER_REQUESTS;
            left_mb_ms = FREE_TIER_GB_SECONDS * MB_MS_PER_GB_SECOND;
        }
        let free_requests = r.requests.min(left_requests);
        let free_mb_ms = r.mb_ms.min(left_mb_ms);
        left_requests -= free_requests;
        left_mb_ms -= free_mb_ms;
        if r.hour_s < since_hour || function.is_some_and(|f| f != r.function) {
            continue;
        }
        per_function
            .entry(&r.function)
            .or_default()
            .add(r, free_requests, free_mb_ms);
    }
    let mut functions: Vec<(String, UsageTotals)> = per_function
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect();
    functions.sort_by(|a, b| a.0.cmp(&b.0));
    let mut total = UsageTotals::default();
    for (_, t) in &functions {
        total.requests += t.requests;
        total.errors += t.errors;
        total.throttles += t.throttles;
        total.billed_ms += t.billed_ms;
        total.mb_ms += t.mb_ms;
        total.init_ms += t.init_ms;
        total.duration_ms += t.duration_ms;
        total.free_requests += t.free_requests;
        total.free_mb_ms += t.free_mb_ms;
    }
    UsageReport {
        since_s: since_hour,
        until_s,
        prices,
        functions,
        total,
    }
}

/// The service's side of metering, kept here so the service's own file only
/// routes invocations through `Metering::run`.
impl crate::LambdaService {
    /// Records usage to `sink` (read by [`spawn_usage_writer`]) and prices
    /// reports with `prices`. Until called, only the in-memory counters
    /// are kept.
    pub fn enable_metering(&mut self, sink: mpsc::UnboundedSender<UsageHour>, prices: Prices) {
        self.metering = Arc::new(Metering::new(Some(sink), prices));
    }

    /// Every function's counters since the server started (`/metrics`).
    pub fn metrics(&self) -> Vec<FunctionMetrics> {
        self.metering.snapshot()
    }

    /// Execution environments now: live, idle, reserved memory, evictions
    /// (`/metrics`).
    pub fn environments(&self) -> crate::EnvironmentStats {
        self.engine.environment_stats()
    }

    /// Usage from the hour `since_s` falls in (default: the start of this
    /// UTC month) until now, for one function or all. Reads the store:
    /// call it on a blocking thread.
    pub fn usage(&self, since_s: Option<i64>, function: Option<&str>) -> LambdaResult<UsageReport> {
        let now = now_s();
        let since = since_s.unwrap_or_else(|| month_start(now));
        let rows = self
            .store
            .usage_since(month_start(since).min(UsageHour::hour_of(since)), None)
            .map_err(LambdaError::internal)?;
        Ok(usage_report(
            &rows,
            since,
            now,
            function,
            self.metering.prices(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_runtime::InvocationMetrics;

    fn outcome(duration_ms: f64, billed_ms: u64, memory: u32, error: bool) -> InvokeOutcome {
        InvokeOutcome {
            request_id: "r".into(),
            payload: bytes::Bytes::new(),
            function_error: error.then_some("Unhandled"),
            error_type: None,
            log_tail: String::new(),
            metrics: InvocationMetrics {
                duration_ms,
                billed_ms,
                memory_size_mb: memory,
                max_memory_used_mb: 10,
                init_ms: Some(100.5),
            },
        }
    }

    fn throttled() -> LambdaResult<InvokeOutcome> {
        Err(LambdaError::TooManyRequests {
            message: "Rate Exceeded.".into(),
            reason: "ConcurrentInvocationLimitExceeded",
            retry_after_s: 1,
        })
    }

    #[tokio::test]
    async fn counts_requests_errors_throttles_and_gb_seconds() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let m = Metering::new(Some(tx), Prices::default());
        m.run("f", async { Ok(outcome(0.5, 101, 128, false)) })
            .await
            .unwrap();
        m.run("f", async { Ok(outcome(1500.0, 1601, 1024, true)) })
            .await
            .unwrap();
        assert!(m.run("f", async { throttled() }).await.is_err());
        assert!(
            m.run("g", async { Err(LambdaError::internal("no runtime")) })
                .await
                .is_err()
        );

        let snap = m.snapshot();
        assert_eq!(
            snap.iter().map(|s| s.function.as_str()).collect::<Vec<_>>(),
            ["f", "g"]
        );
        let f = &snap[0];
        assert_eq!((f.invocations, f.errors, f.throttles), (2, 1, 1));
        assert_eq!(f.concurrent, 0);
        assert_eq!(
            f.gb_seconds,
            (101.0 * 128.0 + 1601.0 * 1024.0) / 1_024_000.0
        );
        assert_eq!(f.duration.count, 2);
        assert_eq!(f.duration.buckets[0], (0.001, 1), "0.5 ms is under 1 ms");
        assert_eq!(f.duration.buckets[9], (1.0, 1));
        assert_eq!(f.duration.buckets[10], (2.5, 2));
        assert!((f.duration.sum - 1.5005).abs() < 1e-9);
        let g = &snap[1];
        assert_eq!((g.invocations, g.errors, g.throttles), (0, 0, 0));

        let mut sent = Vec::new();
        while let Ok(r) = rx.try_recv() {
            sent.push(r);
        }
        assert_eq!(sent.len(), 3, "two outcomes and a throttle");
        let folded = fold(sent);
        assert_eq!(folded.len(), 1);
        let row = &folded[0];
        assert_eq!((row.requests, row.errors, row.throttles), (2, 1, 1));
        assert_eq!(row.billed_ms, 1702);
        assert_eq!(row.mb_ms, 101 * 128 + 1601 * 1024);
        assert_eq!(row.init_ms, 201.0);
        assert_eq!(row.hour_s % 3600, 0);
    }

    #[tokio::test]
    async fn the_gauge_counts_running_invocations() {
        let m = Arc::new(Metering::default());
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let m2 = m.clone();
        let task = tokio::spawn(async move {
            m2.run("f", async {
                let _ = wait.await;
                Ok(outcome(1.0, 1, 128, false))
            })
            .await
        });
        for _ in 0..100 {
            if m.snapshot().first().is_some_and(|f| f.concurrent == 1) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(m.snapshot()[0].concurrent, 1);
        go.send(()).unwrap();
        task.await.unwrap().unwrap();
        assert_eq!(m.snapshot()[0].concurrent, 0);
    }

    #[test]
    fn durations_beyond_the_last_bucket_are_only_in_inf() {
        let m = Metering::default();
        let c = m.counters("f");
        m.completed("f", &c, &outcome(901_000.0, 901_000, 128, false));
        let h = &m.snapshot()[0].duration;
        assert_eq!(h.count, 1);
        assert_eq!(h.buckets.last(), Some(&(900.0, 0)));
    }

    const H: i64 = 3600;

    fn row(function: &str, hour_s: i64, requests: u64, gb_s: u64) -> UsageHour {
        UsageHour {
            function: function.into(),
            hour_s,
            requests,
            mb_ms: gb_s * MB_MS_PER_GB_SECOND,
            ..Default::default()
        }
    }

    #[test]
    fn costs_at_the_public_prices() {
        let p = Prices::default();
        let t = UsageTotals {
            requests: 3_000_000,
            mb_ms: 1_000_000 * MB_MS_PER_GB_SECOND,
            ..Default::default()
        };
        assert!((t.cost(&p) - (0.60 + 16.6667)).abs() < 1e-9);
        // 3M requests of 120 ms at 128 MB: 45,000 GB-s.
        let t = UsageTotals {
            requests: 3_000_000,
            mb_ms: 3_000_000 * 120 * 128,
            ..Default::default()
        };
        assert_eq!(t.gb_seconds(), 45_000.0);
    }

    #[test]
    fn the_free_tier_is_monthly_account_wide_and_consumed_in_time_order() {
        let jan = month_start(1_704_067_200); // 2024-01-01T00:00:00Z
        assert_eq!(jan, 1_704_067_200);
        let feb = 1_706_745_600; // 2024-02-01T00:00:00Z
        assert_eq!(month_start(feb + 5 * H + 17), feb);
        let rows = vec![
            row("a", jan, 900_000, 300_000),
            row("b", jan + H, 200_000, 50_000),
            row("a", jan + 2 * H, 100_000, 100_000),
            // A new month, a new allowance.
            row("a", feb, 1_500_000, 10),
        ];
        let p = Prices::default();
        let r = usage_report(&rows, jan, feb + H, None, p);
        assert_eq!(r.since_s, jan);
        let a = &r.functions[0].1;
        let b = &r.functions[1].1;
        assert_eq!(a.requests, 2_500_000);
        assert_eq!(a.free_requests, 900_000 + 1_000_000);
        assert_eq!(b.free_requests, 100_000, "b used the rest of January's");
        assert_eq!(b.free_mb_ms, 50_000 * MB_MS_PER_GB_SECOND);
        assert_eq!(
            a.free_mb_ms,
            (300_000 + 50_000 + 10) * MB_MS_PER_GB_SECOND,
            "January's 400,000 GB-s ran out in a's second hour"
        );
        assert_eq!(r.total.requests, 2_700_000);
        assert_eq!(r.total.free_requests, 2_000_000);
        let after = r.total.cost_after_free_tier(&p);
        let expected = 700_000.0 * 0.2 / 1e6 + 50_000.0 * p.per_gb_second;
        assert!((after - expected).abs() < 1e-9, "{after} != {expected}");
        assert!(
            (r.total.cost(&p) - r.total.free_tier_credit(&p) - after).abs() < 1e-9,
            "before = credit + after"
        );

        // A window starting mid-month still sees what the month used
        // before it; a function filter does not change who used what.
        let r = usage_report(&rows, jan + H, feb + H, Some("b"), p);
        assert_eq!(r.since_s, jan + H);
        assert_eq!(r.functions.len(), 1);
        assert_eq!(r.total.requests, 200_000);
        assert_eq!(r.total.free_requests, 100_000);
        let r = usage_report(&rows, feb, feb + H, None, p);
        assert_eq!(r.total.requests, 1_500_000);
        assert_eq!(r.total.free_requests, 1_000_000);
    }

    #[test]
    fn since_rounds_down_to_its_hour() {
        let rows = vec![row("a", 10 * H, 1, 0), row("a", 11 * H, 2, 0)];
        let r = usage_report(&rows, 10 * H + 59, 12 * H, None, Prices::default());
        assert_eq!(r.since_s, 10 * H);
        assert_eq!(r.total.requests, 3);
        assert!(
            usage_report(&[], 0, 1, None, Prices::default())
                .functions
                .is_empty()
        );
    }
}
