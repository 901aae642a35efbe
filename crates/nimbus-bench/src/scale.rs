//! `nimbus-bench scale`: many functions on one node whose memory budget
//! holds only a few of their environments at once.
//!
//! The harness starts nimbus with `--memory-budget` (4 GiB by default: 32
//! environments of 128 MB), deploys `--functions` small Python functions
//! (distinct packages, created by several clients at once), then invokes
//! them in a random order, `--concurrency` at a time, `--invocations` in
//! all. Nearly every invocation needs a new environment, so least recently
//! used idle ones must be evicted to make room. Beside it, in the same run:
//! the hyper echo floor and a warm load on one of the functions at the same
//! concurrency (no cold starts, no evictions).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use http::{Method, StatusCode};

use crate::bench::{
    create_function, create_role, invoke_path, loadavg, output_of, parse_report, read_log, sibling,
};
use crate::client::Conn;
use crate::load::{self, EVENT, LoadResult, Target};
use crate::procs::{self, Server};
use crate::report::{host, mib};
use crate::stats::Samples;

/// MemorySize of every function (the benchmark's create_function).
const FUNCTION_MB: u64 = 128;

/// Options of `nimbus-bench scale`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ScaleArgs {
    /// Functions to deploy.
    #[arg(long, default_value_t = 1000)]
    functions: usize,
    /// Clients invoking at once (closed loop, one connection each).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Invocations in all, each of a function picked uniformly at random.
    #[arg(long, default_value_t = 5000)]
    invocations: usize,
    /// nimbus's `--memory-budget`, in MB (4096: 32 environments of 128 MB).
    #[arg(long, value_name = "MB", default_value_t = 4096)]
    memory_budget: u64,
    /// Clients creating functions at once.
    #[arg(long, default_value_t = 8)]
    create_clients: usize,
    /// Seed of the invocation order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds of load for each same-run baseline (echo floor, warm
    /// invokes of one function).
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    baseline: f64,
    /// The nimbus binary [default: `nimbus` next to this executable].
    #[arg(long, value_name = "PATH")]
    nimbus: Option<PathBuf>,
    /// Runtime id of the functions [default: the host `python3`'s, e.g.
    /// python3.11].
    #[arg(long, value_name = "ID")]
    python_runtime: Option<String>,
    /// Extra argument for `nimbus serve` (repeatable).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    serve_arg: Vec<String>,
    /// Also write the report to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

fn progress(msg: impl std::fmt::Display) {
    eprintln!("[nimbus-bench scale] {msg}");
}

fn function_name(i: usize) -> String {
    format!("scale-{i:04}")
}

/// Each function returns its own name, so a response can be checked
/// against the function invoked.
fn package(i: usize) -> Result<Vec<u8>> {
    let source = format!(
        "NAME = {:?}\n\n\ndef handler(event, context):\n    return NAME\n",
        function_name(i)
    );
    crate::fixtures::zip(&[("lambda_function.py", source.as_bytes(), 0o644)])
}

/// Runs the scale benchmark and prints its report on stdout.
pub(crate) fn run(a: ScaleArgs) -> Result<()> {
    ensure!(
        a.functions > 0 && a.concurrency > 0 && a.invocations > 0 && a.create_clients > 0,
        "--functions, --concurrency, --invocations and --create-clients must be positive"
    );
    ensure!(
        a.baseline.is_finite() && (0.2..=600.0).contains(&a.baseline),
        "--baseline must be between 0.2 and 600 seconds"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let text = rt.block_on(scale(&a))?;
    println!("{text}");
    if let Some(out) = &a.out {
        std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("report written to {}", out.display());
    }
    Ok(())
}

/// Everything measured, for the report.
#[derive(Debug, Default)]
struct Figures {
    commit: String,
    runtime: String,
    loadavg_start: String,
    loadavg_end: String,
    wall: Duration,
    server_idle_kb: u64,
    deploy: Duration,
    server_after_deploy_kb: u64,
    echo: LoadResult,
    warm_one: LoadResult,
    warm_one_clients: usize,
    phase: Phase,
    during: Sampled,
    end: Snapshot,
    server_end_kb: u64,
    server_peak_kb: u64,
    metrics_end: Option<EnvMetrics>,
    metrics_peak: EnvMetrics,
}

/// What the invocation phase saw, client side.
#[derive(Debug, Default)]
struct Phase {
    cold_ns: Vec<u64>,
    warm_ns: Vec<u64>,
    /// Init Duration of the cold ones, from REPORT, in ms.
    init_ms: Vec<f64>,
    throttles: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
}

/// The server's descendants at one instant.
#[derive(Debug, Default, Clone, Copy)]
struct Snapshot {
    processes: usize,
    rss_kb: u64,
    pss_kb: u64,
}

impl Snapshot {
    fn take(server: u32) -> Self {
        let pids = procs::descendants(server);
        Self {
            processes: pids.len(),
            rss_kb: pids
                .iter()
                .filter_map(|&p| procs::rss(p))
                .map(|r| r.vm_rss_kb)
                .sum(),
            pss_kb: pids.iter().filter_map(|&p| procs::pss_kb(p)).sum(),
        }
    }
}

/// Peaks seen by the /proc sampler.
#[derive(Debug, Default, Clone, Copy)]
struct Sampled {
    samples: u64,
    server_rss_kb: u64,
    processes: usize,
    rss_kb: u64,
    pss_kb: u64,
}

/// The node-wide environment gauges of `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
struct EnvMetrics {
    idle: u64,
    busy: u64,
    reserved_mb: u64,
    budget_mb: u64,
    evictions: u64,
    throttles: u64,
    /// The most live environments in one scrape (after [`EnvMetrics::max`]).
    live_peak: u64,
}

impl EnvMetrics {
    fn parse(text: &str) -> Option<Self> {
        let value = |sample: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))?
                .parse()
                .ok()
        };
        const MB: u64 = 1024 * 1024;
        Some(Self {
            idle: value("nimbus_environments{state=\"idle\"}")?,
            busy: value("nimbus_environments{state=\"busy\"}")?,
            reserved_mb: value("nimbus_environment_memory_reserved_bytes")? / MB,
            budget_mb: value("nimbus_environment_memory_budget_bytes")? / MB,
            evictions: value("nimbus_environment_evictions_total")?,
            throttles: text
                .lines()
                .filter(|l| l.starts_with("nimbus_lambda_throttles_total{"))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
                .sum(),
            live_peak: 0,
        })
    }

    fn live(&self) -> u64 {
        self.idle + self.busy
    }

    /// Keeps the larger of each figure, and of live environments.
    fn max(&mut self, o: &EnvMetrics) {
        self.live_peak = self.live_peak.max(o.live());
        self.idle = self.idle.max(o.idle);
        self.busy = self.busy.max(o.busy);
        self.reserved_mb = self.reserved_mb.max(o.reserved_mb);
        self.budget_mb = o.budget_mb;
        self.evictions = self.evictions.max(o.evictions);
        self.throttles = self.throttles.max(o.throttles);
    }
}

async fn scrape(conn: &mut Conn) -> Result<EnvMetrics> {
    let resp = conn
        .send(Method::GET, "/metrics", &[], Bytes::new())
        .await?;
    ensure!(
        resp.status == StatusCode::OK,
        "/metrics: HTTP {}",
        resp.status
    );
    EnvMetrics::parse(&resp.text()).context("/metrics has no environment gauges")
}

async fn scale(a: &ScaleArgs) -> Result<String> {
    let began = Instant::now();
    let mut f = Figures {
        loadavg_start: loadavg(),
        commit: output_of("git", &["rev-parse", "--short", "HEAD"])
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        ..Figures::default()
    };
    let nimbus_bin = a
        .nimbus
        .clone()
        .or_else(|| sibling("nimbus"))
        .unwrap_or_else(|| "target/release/nimbus".into());
    ensure!(
        nimbus_bin.is_file(),
        "{} not found: build it with `cargo build --release -p nimbus-cli` or pass --nimbus",
        nimbus_bin.display()
    );
    f.runtime = match &a.python_runtime {
        Some(r) => r.clone(),
        None => output_of(
            "python3",
            &[
                "-c",
                "import sys; print('python3.%d' % sys.version_info[1])",
            ],
        )?
        .trim()
        .to_string(),
    };
    // The packages first: building them is not measured.
    let zips: Vec<Vec<u8>> = (0..a.functions).map(package).collect::<Result<_>>()?;

    progress("starting the echo floor and nimbus");
    let me = std::env::current_exe()?;
    let mut echo_cmd = Command::new(&me);
    echo_cmd.arg("echo-server");
    let mut echo = Server::spawn(echo_cmd, crate::echo::READY, Duration::from_secs(10))?;
    let data = tempfile::Builder::new()
        .prefix("nimbus-bench-scale-")
        .tempdir()?;
    let log_path = data.path().join("nimbus.log");
    let mut cmd = Command::new(&nimbus_bin);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path().join("data"))
        // Only the budget may stop environments: no idle expiry, and the
        // account limit above the clients.
        .args(["--keep-alive", "3600", "--concurrency"])
        .arg((2 * a.concurrency).max(64).to_string())
        .arg("--memory-budget")
        .arg(a.memory_budget.to_string())
        .args(&a.serve_arg)
        .env("NIMBUS_ACCESS_KEY_ID", crate::client::ACCESS_KEY_ID)
        .env("NIMBUS_SECRET_ACCESS_KEY", crate::client::SECRET_ACCESS_KEY)
        .env("NIMBUS_LOG", "warn")
        .stderr(std::fs::File::create(&log_path)?);
    let mut nimbus = Server::spawn(cmd, "nimbus ready on ", Duration::from_secs(60))
        .with_context(|| format!("nimbus log: {}", read_log(&log_path)))?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    f.server_idle_kb = procs::rss(nimbus.pid()).map_or(0, |r| r.vm_rss_kb);

    let result = measure(a, &mut f, &nimbus, echo.addr()?, zips).await;
    f.server_end_kb = procs::rss(nimbus.pid()).map_or(0, |r| r.vm_rss_kb);
    f.server_peak_kb = procs::peak_rss_kb(nimbus.pid()).unwrap_or(0);
    nimbus.stop(Duration::from_secs(10));
    echo.stop(Duration::from_secs(2));
    result.with_context(|| format!("nimbus log: {}", read_log(&log_path)))?;
    f.loadavg_end = loadavg();
    f.wall = began.elapsed();
    Ok(render(a, &f))
}

async fn measure(
    a: &ScaleArgs,
    f: &mut Figures,
    nimbus: &Server,
    echo: std::net::SocketAddr,
    zips: Vec<Vec<u8>>,
) -> Result<()> {
    let addr = nimbus.addr()?;
    let pid = nimbus.pid();
    let mut ctl = Conn::connect(addr).await?;
    create_role(&mut ctl).await?;

    progress(format!(
        "creating {} functions, {} clients at once",
        a.functions, a.create_clients
    ));
    let t0 = Instant::now();
    deploy(addr, &f.runtime, zips, a.create_clients).await?;
    f.deploy = t0.elapsed();
    f.server_after_deploy_kb = procs::rss(pid).map_or(0, |r| r.vm_rss_kb);

    let baseline = Duration::from_secs_f64(a.baseline);
    progress(format!(
        "baselines: echo floor and one warm function, {} clients, {:.1} s each",
        a.concurrency, a.baseline
    ));
    f.echo = load::run(
        &Target {
            addr: echo,
            path: invoke_path("echo"),
        },
        a.concurrency,
        baseline,
        u64::MAX,
    )
    .await?;
    // As many clients as the budget has environments, so the warm load
    // needs no eviction.
    f.warm_one_clients = a
        .concurrency
        .min((a.memory_budget / FUNCTION_MB).max(1) as usize);
    let one = Target {
        addr,
        path: invoke_path(&function_name(0)),
    };
    load::run(&one, f.warm_one_clients, Duration::from_secs(1), u64::MAX).await?;
    f.warm_one = load::run(&one, f.warm_one_clients, baseline, u64::MAX).await?;

    progress(format!(
        "invoking: {} invocations of random functions, {} clients",
        a.invocations, a.concurrency
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || sample(pid, &stop))
    };
    let scraper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut peak = EnvMetrics::default();
            let mut conn = Conn::connect(addr).await?;
            while !stop.load(Ordering::Relaxed) {
                peak.max(&scrape(&mut conn).await?);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Ok::<_, anyhow::Error>(peak)
        })
    };
    let phase = invoke_all(a, addr).await;
    stop.store(true, Ordering::Relaxed);
    f.during = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the /proc sampler panicked"))?;
    f.metrics_peak = scraper.await??;
    f.phase = phase?;
    f.end = Snapshot::take(pid);
    let end = scrape(&mut ctl).await?;
    f.metrics_peak.max(&end);
    f.metrics_end = Some(end);
    Ok(())
}

async fn deploy(
    addr: std::net::SocketAddr,
    runtime: &str,
    zips: Vec<Vec<u8>>,
    clients: usize,
) -> Result<()> {
    let zips = Arc::new(zips);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (zips, next, runtime) = (zips.clone(), next.clone(), runtime.to_string());
        let mut conn = Conn::connect(addr).await?;
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(zip) = zips.get(i) else {
                    return Ok::<_, anyhow::Error>(());
                };
                create_function(
                    &mut conn,
                    &function_name(i),
                    &runtime,
                    "lambda_function.handler",
                    zip,
                    128,
                )
                .await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// A reproducible order of function indices (xorshift64*).
fn order(n: usize, functions: usize, seed: u64) -> Vec<usize> {
    let mut x = seed.max(1);
    (0..n)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as usize % functions
        })
        .collect()
}

async fn invoke_all(a: &ScaleArgs, addr: std::net::SocketAddr) -> Result<Phase> {
    let order = Arc::new(order(a.invocations, a.functions, a.seed));
    let next = Arc::new(AtomicUsize::new(0));
    let mut conns = Vec::new();
    for _ in 0..a.concurrency {
        conns.push(Conn::connect(addr).await?);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut conn in conns {
        let (order, next) = (order.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut p = Phase::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&fi) = order.get(i) else { break };
                let name = function_name(fi);
                let t0 = Instant::now();
                let sent = conn
                    .send(
                        Method::POST,
                        &invoke_path(&name),
                        &[("x-amz-log-type", "Tail")],
                        Bytes::from_static(EVENT.as_bytes()),
                    )
                    .await;
                let took = t0.elapsed().as_nanos() as u64;
                let failure = match sent {
                    Ok(r) if r.is_success() && r.body == format!("{name:?}").as_bytes() => {
                        let log = r
                            .headers
                            .get("x-amz-log-result")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("");
                        match parse_report(log).0 {
                            Some(init) => {
                                p.cold_ns.push(took);
                                p.init_ms.push(init);
                            }
                            None => p.warm_ns.push(took),
                        }
                        continue;
                    }
                    Ok(r) if r.status == StatusCode::TOO_MANY_REQUESTS => {
                        p.throttles += 1;
                        format!("{name}: HTTP 429: {}", r.text())
                    }
                    Ok(r) => {
                        p.errors += 1;
                        format!("{name}: HTTP {}: {}", r.status, r.text())
                    }
                    Err(e) => {
                        p.errors += 1;
                        conn = Conn::connect(addr).await?;
                        format!("{name}: {e:#}")
                    }
                };
                p.first_error.get_or_insert(failure);
            }
            Ok::<_, anyhow::Error>((p, Instant::now()))
        }));
    }
    let mut all = Phase::default();
    let mut last = start;
    for t in tasks {
        let (p, ended) = t.await??;
        last = last.max(ended);
        all.cold_ns.extend(p.cold_ns);
        all.warm_ns.extend(p.warm_ns);
        all.init_ms.extend(p.init_ms);
        all.throttles += p.throttles;
        all.errors += p.errors;
        if all.first_error.is_none() {
            all.first_error = p.first_error;
        }
    }
    all.elapsed = last.duration_since(start);
    Ok(all)
}

/// Samples the server's and its descendants' memory every 250 ms until
/// `stop`; returns the peaks.
fn sample(server: u32, stop: &AtomicBool) -> Sampled {
    let mut s = Sampled::default();
    while !stop.load(Ordering::Relaxed) {
        let snap = Snapshot::take(server);
        s.samples += 1;
        s.server_rss_kb = s
            .server_rss_kb
            .max(procs::rss(server).map_or(0, |r| r.vm_rss_kb));
        s.processes = s.processes.max(snap.processes);
        s.rss_kb = s.rss_kb.max(snap.rss_kb);
        s.pss_kb = s.pss_kb.max(snap.pss_kb);
        std::thread::sleep(Duration::from_millis(250));
    }
    s
}

fn pct(ns: &[u64], p: f64) -> String {
    Samples::from_nanos(ns)
        .pct(p)
        .map_or_else(|| "n/a".into(), |v| format!("{v:.1}"))
}

fn render(a: &ScaleArgs, f: &Figures) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let fits = a.memory_budget / FUNCTION_MB;
    let _ = writeln!(o, "# nimbus scale benchmark\n");
    let _ = writeln!(o, "- Command: `nimbus-bench {}`", args.join(" "));
    let _ = writeln!(o, "- Machine: {}", host());
    let _ = writeln!(
        o,
        "- Load average (1/5/15 min) at start: {}; at end: {}",
        f.loadavg_start, f.loadavg_end
    );
    let _ = writeln!(o, "- nimbus commit: {}", f.commit);
    let _ = writeln!(
        o,
        "- {} {} functions of {FUNCTION_MB} MB (distinct packages); memory budget {} MB = {fits} environments; \
         {} invocations of functions picked uniformly at random (seed {}), {} clients, closed loop, \
         `LogType: Tail` to tell cold (Init Duration in REPORT) from warm",
        a.functions, f.runtime, a.memory_budget, a.invocations, a.seed, a.concurrency
    );
    let _ = writeln!(o, "- Run time: {:.0} s\n", f.wall.as_secs_f64());

    let _ = writeln!(o, "## Deploy\n");
    let _ = writeln!(
        o,
        "| Functions | Clients | Time s | Functions/s | Server VmRSS before / after (MiB) |"
    );
    let _ = writeln!(o, "|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        o,
        "| {} | {} | {:.1} | {:.0} | {:.1} / {:.1} |\n",
        a.functions,
        a.create_clients,
        f.deploy.as_secs_f64(),
        a.functions as f64 / f.deploy.as_secs_f64().max(1e-9),
        mib(f.server_idle_kb),
        mib(f.server_after_deploy_kb)
    );

    let p = &f.phase;
    let ok = p.cold_ns.len() + p.warm_ns.len();
    let secs = p.elapsed.as_secs_f64().max(1e-9);
    let all: Vec<u64> = p.cold_ns.iter().chain(&p.warm_ns).copied().collect();
    let _ = writeln!(o, "## Invocations\n");
    let _ = writeln!(
        o,
        "| Load | Clients | Requests ok | Errors | Throttles | req/s | p50 ms | p99 ms |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let row = |o: &mut String, label: &str, clients: usize, r: &LoadResult| {
        let _ = writeln!(
            o,
            "| {label} | {clients} | {} | {} | — | {:.0} | {} | {} |",
            r.latencies_ns.len(),
            r.errors,
            r.throughput(),
            pct(&r.latencies_ns, 50.0),
            pct(&r.latencies_ns, 99.0)
        );
    };
    row(&mut o, "hyper echo (floor)", a.concurrency, &f.echo);
    row(
        &mut o,
        "one function, all warm (floor)",
        f.warm_one_clients,
        &f.warm_one,
    );
    let _ = writeln!(
        o,
        "| **{} functions, random** | {} | {ok} | {} | {} | **{:.0}** | {} | {} |",
        a.functions,
        a.concurrency,
        p.errors,
        p.throttles,
        ok as f64 / secs,
        pct(&all, 50.0),
        pct(&all, 99.0)
    );
    let _ = writeln!(
        o,
        "| of which cold (Init Duration) | | {} | | | | {} | {} |",
        p.cold_ns.len(),
        pct(&p.cold_ns, 50.0),
        pct(&p.cold_ns, 99.0)
    );
    let _ = writeln!(
        o,
        "| of which warm | | {} | | | | {} | {} |",
        p.warm_ns.len(),
        pct(&p.warm_ns, 50.0),
        pct(&p.warm_ns, 99.0)
    );
    let init = Samples::new(p.init_ms.clone());
    let _ = writeln!(
        o,
        "\nInit Duration of the cold invocations (REPORT): p50 {} ms, p99 {} ms. \
         Invocation phase: {secs:.1} s.",
        init.median()
            .map_or_else(|| "n/a".into(), |v| format!("{v:.1}")),
        init.pct(99.0)
            .map_or_else(|| "n/a".into(), |v| format!("{v:.1}")),
    );
    if let Some(e) = &p.first_error {
        let _ = writeln!(o, "\nFirst error: `{e}`");
    }

    let _ = writeln!(o, "\n## Memory and environments\n");
    let _ = writeln!(
        o,
        "Environment processes are all of the server's descendants (/proc); \
         VmRSS counts shared pages once per process, Pss (smaps_rollup) splits \
         them between the processes sharing them. Peaks are sampled every \
         250 ms during the invocation phase ({} samples), the server's peak is \
         its VmHWM. /metrics was scraped every 2 s.\n",
        f.during.samples
    );
    let _ = writeln!(o, "| | Peak | End |");
    let _ = writeln!(o, "|---|---:|---:|");
    let _ = writeln!(
        o,
        "| nimbus server VmRSS (MiB) | {:.1} | {:.1} |",
        mib(f.server_peak_kb.max(f.during.server_rss_kb)),
        mib(f.server_end_kb)
    );
    let _ = writeln!(
        o,
        "| environment processes | {} | {} |",
        f.during.processes, f.end.processes
    );
    let _ = writeln!(
        o,
        "| environment processes, sum of VmRSS (MiB) | {:.0} | {:.0} |",
        mib(f.during.rss_kb),
        mib(f.end.rss_kb)
    );
    let _ = writeln!(
        o,
        "| environment processes, sum of Pss (MiB) | {:.0} | {:.0} |",
        mib(f.during.pss_kb),
        mib(f.end.pss_kb)
    );
    let m = &f.metrics_peak;
    let e = f.metrics_end.unwrap_or_default();
    let _ = writeln!(
        o,
        "| live environments (/metrics) | {} | {} ({} idle) |",
        m.live_peak,
        e.live(),
        e.idle
    );
    let _ = writeln!(
        o,
        "| reserved memory (/metrics, MB; budget {}) | {} | {} |",
        e.budget_mb, m.reserved_mb, e.reserved_mb
    );
    let _ = writeln!(o, "| evictions (/metrics) | — | {} |", e.evictions);
    let _ = writeln!(o, "| throttles (/metrics) | — | {} |", e.throttles);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_is_reproducible_and_covers_the_functions() {
        let a = order(5000, 1000, 1);
        assert_eq!(a, order(5000, 1000, 1));
        assert_ne!(a, order(5000, 1000, 2));
        assert!(a.iter().all(|&i| i < 1000));
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert!(distinct.len() > 900, "{}", distinct.len());
    }

    #[test]
    fn environment_gauges_are_read_from_metrics() {
        let text = "nimbus_lambda_throttles_total{function_name=\"a\"} 2\n\
                    nimbus_lambda_throttles_total{function_name=\"b\"} 1\n\
                    nimbus_environments{state=\"idle\"} 30\n\
                    nimbus_environments{state=\"busy\"} 2\n\
                    nimbus_environment_memory_reserved_bytes 4294967296\n\
                    nimbus_environment_memory_budget_bytes 4294967296\n\
                    nimbus_environment_evictions_total 4711\n";
        let m = EnvMetrics::parse(text).unwrap();
        assert_eq!(
            (
                m.live(),
                m.reserved_mb,
                m.budget_mb,
                m.evictions,
                m.throttles
            ),
            (32, 4096, 4096, 4711, 3)
        );
    }
}
