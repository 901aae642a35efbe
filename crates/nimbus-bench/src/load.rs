//! The closed-loop load generator: N clients, each on its own kept-alive
//! connection, each sending the next request as soon as the previous
//! response is read. Bounded by a deadline and by a total request budget.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use http::Method;

use crate::client::Conn;

/// The request every target gets: a POST with this small JSON body.
pub(crate) const EVENT: &str = r#"{"key1": "value1", "key2": "value2", "key3": "value3"}"#;

/// Where and what to send.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    pub(crate) path: String,
}

/// What one run of the load generator measured.
#[derive(Debug, Default, Clone)]
pub(crate) struct LoadResult {
    /// Latency of every successful request, in nanoseconds.
    pub(crate) latencies_ns: Vec<u64>,
    /// Requests that failed (transport error, non-200, function error).
    pub(crate) errors: u64,
    /// Wall time from the start signal to the last client's end.
    pub(crate) elapsed: Duration,
    /// The first failure seen, for the report.
    pub(crate) first_error: Option<String>,
}

impl LoadResult {
    /// Merges another run's figures into this one (elapsed times add: the
    /// runs are sequential slices of one measurement).
    pub(crate) fn merge(&mut self, other: LoadResult) {
        self.latencies_ns.extend(other.latencies_ns);
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// Successful requests per second.
    pub(crate) fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.latencies_ns.len() as f64 / secs
        } else {
            0.0
        }
    }
}

struct ClientOutcome {
    latencies_ns: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// Runs `clients` concurrent clients against `target` until `duration`
/// has passed or `max_requests` have been sent, whichever comes first.
/// Connections are opened before the clock starts.
pub(crate) async fn run(
    target: &Target,
    clients: usize,
    duration: Duration,
    max_requests: u64,
) -> Result<LoadResult> {
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(Conn::connect(target.addr).await?);
    }
    let budget = Arc::new(AtomicU64::new(max_requests));
    let body = Bytes::from_static(EVENT.as_bytes());
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(clients);
    for mut conn in conns {
        let (budget, body, target) = (budget.clone(), body.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = ClientOutcome {
                latencies_ns: Vec::with_capacity(4096),
                errors: 0,
                first_error: None,
            };
            while Instant::now() < deadline && take_one(&budget) {
                let t0 = Instant::now();
                let result = conn
                    .send(Method::POST, &target.path, &[], body.clone())
                    .await;
                let took = t0.elapsed();
                let failure = match result {
                    Ok(resp) if resp.is_success() => {
                        out.latencies_ns.push(took.as_nanos() as u64);
                        continue;
                    }
                    Ok(resp) => format!("HTTP {}: {}", resp.status, resp.text()),
                    Err(e) => format!("{e:#}"),
                };
                out.errors += 1;
                out.first_error.get_or_insert(failure);
                // The connection may be broken: start a fresh one, and give
                // up on this client if even that fails.
                match Conn::connect(target.addr).await {
                    Ok(c) => conn = c,
                    Err(_) => break,
                }
            }
            (out, Instant::now())
        }));
    }
    let mut result = LoadResult::default();
    let mut last_end = start;
    for t in tasks {
        let (out, ended) = t.await?;
        last_end = last_end.max(ended);
        result.latencies_ns.extend(out.latencies_ns);
        result.errors += out.errors;
        if result.first_error.is_none() {
            result.first_error = out.first_error;
        }
    }
    result.elapsed = last_end.duration_since(start);
    Ok(result)
}

fn take_one(budget: &AtomicU64) -> bool {
    budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

/// `nimbus-bench load URL`: one load run, printed.
pub(crate) fn standalone(url: &str, clients: usize, secs: f64) -> Result<()> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("{url}: only http:// URLs"))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let target = Target {
        addr: host.parse()?,
        path: if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let r = rt.block_on(run(
        &target,
        clients.max(1),
        Duration::from_secs_f64(secs),
        u64::MAX,
    ))?;
    let lat = crate::stats::Samples::from_nanos(&r.latencies_ns);
    println!(
        "{} requests, {} errors, p50 {:.3} ms, p99 {:.3} ms, {:.0} req/s{}",
        lat.len(),
        r.errors,
        lat.median().unwrap_or(0.0),
        lat.pct(99.0).unwrap_or(0.0),
        r.throughput(),
        r.first_error
            .map(|e| format!(" (first error: {e})"))
            .unwrap_or_default()
    );
    Ok(())
}
