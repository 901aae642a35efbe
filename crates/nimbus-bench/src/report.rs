//! The Markdown report: figures, each beside its floor, and the targets of
//! issue 2 with whether each is met.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::bench::CLIENTS;
use crate::procs::Rss;
use crate::stats::Samples;

/// Targets from issue 2 ("Targets").
const OVERHEAD_TARGET_MS: f64 = 0.5;
const THROUGHPUT_TARGET_PCT: f64 = 35.0;
const COLD_TARGET_RATIO: f64 = 1.5;
const SERVER_RSS_TARGET_MIB: f64 = 40.0;
const PYTHON_ENV_RSS_TARGET_MIB: f64 = 20.0;

/// About the run and the machine.
#[derive(Debug, Default)]
pub(crate) struct Meta {
    pub(crate) nimbus: PathBuf,
    pub(crate) git_commit: String,
    pub(crate) python: PathBuf,
    pub(crate) python_version: String,
    pub(crate) node: PathBuf,
    pub(crate) node_version: String,
    pub(crate) python_runtime: String,
    pub(crate) node_runtime: String,
    pub(crate) duration: Duration,
    pub(crate) rounds: u32,
    pub(crate) cold_samples: usize,
    pub(crate) quick: bool,
    pub(crate) loadavg_start: String,
    pub(crate) loadavg_end: String,
    pub(crate) wall_time: Duration,
}

/// What a warm measurement point was run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WarmTarget {
    Echo,
    Provided,
    Python,
}

#[derive(Debug)]
pub(crate) struct WarmRow {
    pub(crate) target: WarmTarget,
    pub(crate) clients: usize,
    pub(crate) latency: Samples,
    pub(crate) throughput: f64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    /// CPU time per successful request, in µs: the server process, its
    /// children (execution environments), and the load generator.
    pub(crate) cpu_us_per_request: [f64; 3],
}

#[derive(Debug)]
pub(crate) struct ColdRow {
    pub(crate) runtime: String,
    /// e.g. `python3.11 -c pass`.
    pub(crate) floor_cmd: String,
    pub(crate) floor: Samples,
    pub(crate) e2e: Samples,
    pub(crate) init: Samples,
    /// REPORT's Duration of the cold invocations.
    pub(crate) duration: Samples,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
}

/// Idle warm environments of one kind.
#[derive(Debug)]
pub(crate) struct EnvMemory {
    pub(crate) kind: &'static str,
    pub(crate) rss: Vec<Rss>,
}

#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) meta: Meta,
    pub(crate) warm: Vec<WarmRow>,
    pub(crate) cold: Vec<ColdRow>,
    pub(crate) envs: Vec<EnvMemory>,
    pub(crate) server_idle: Option<Rss>,
    pub(crate) server_after: Option<Rss>,
    pub(crate) echo_idle: Option<Rss>,
}

fn ms(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.decimals$}"))
}

pub(crate) fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

pub(crate) fn host() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{cpus} vCPU ({model}), {mem_gib:.0} GiB RAM, Linux {kernel}")
}

fn verdict(met: bool) -> &'static str {
    if met { "**met**" } else { "**missed**" }
}

impl Report {
    fn warm(&self, target: WarmTarget, clients: usize) -> Option<&WarmRow> {
        self.warm
            .iter()
            .find(|r| r.target == target && r.clients == clients)
    }

    fn label(&self, t: WarmTarget) -> String {
        match t {
            WarmTarget::Echo => "hyper echo (floor)".into(),
            WarmTarget::Provided => "provided.al2023 no-op (rust-echo)".into(),
            WarmTarget::Python => format!("{} no-op", self.meta.python_runtime),
        }
    }

    /// p50 of `t` minus the echo floor's p50, same number of clients.
    fn overhead(&self, t: WarmTarget, clients: usize) -> Option<f64> {
        let echo = self.warm(WarmTarget::Echo, clients)?.latency.median()?;
        Some(self.warm(t, clients)?.latency.median()? - echo)
    }

    /// Throughput of `t` as a percentage of the echo floor's.
    fn throughput_pct(&self, t: WarmTarget, clients: usize) -> Option<f64> {
        let echo = self.warm(WarmTarget::Echo, clients)?.throughput;
        let this = self.warm(t, clients)?.throughput;
        (echo > 0.0).then(|| 100.0 * this / echo)
    }

    fn cold(&self, prefix: &str) -> Option<&ColdRow> {
        self.cold.iter().find(|c| c.runtime.starts_with(prefix))
    }

    fn env(&self, kind: &str) -> Option<&EnvMemory> {
        self.envs.iter().find(|e| e.kind == kind)
    }

    pub(crate) fn render(&self) -> String {
        let mut o = String::new();
        self.render_header(&mut o);
        self.render_warm(&mut o);
        self.render_cold(&mut o);
        self.render_memory(&mut o);
        self.render_targets(&mut o);
        o
    }

    fn render_header(&self, o: &mut String) {
        let m = &self.meta;
        let args: Vec<String> = std::env::args().skip(1).collect();
        let _ = writeln!(o, "# nimbus benchmark report\n");
        let _ = writeln!(
            o,
            "- Command: `nimbus-bench{}{}` (`cargo run --release -p nimbus-bench --` takes the same arguments)",
            if args.is_empty() { "" } else { " " },
            args.join(" ")
        );
        let _ = writeln!(o, "- Machine: {}", host());
        let _ = writeln!(
            o,
            "- Load average (1/5/15 min) at start: {}; at end: {}",
            m.loadavg_start, m.loadavg_end
        );
        let _ = writeln!(
            o,
            "- nimbus: `{}`{}",
            m.nimbus.display(),
            if m.git_commit.is_empty() {
                String::new()
            } else {
                format!(" (commit {})", m.git_commit)
            }
        );
        let _ = writeln!(
            o,
            "- Interpreters (as nimbus runs them, read from /proc/PID/exe): {} = `{}` ({}); {} = `{}` ({})",
            m.python_runtime,
            m.python.display(),
            m.python_version,
            m.node_runtime,
            m.node.display(),
            m.node_version
        );
        let _ = writeln!(
            o,
            "- Warm: {:.1} s of closed-loop load per point, in {} interleaved rounds; \
             one kept-alive HTTP/1.1 connection per client; POST of a {}-byte JSON event{}",
            m.duration.as_secs_f64(),
            m.rounds,
            crate::load::EVENT.len(),
            if m.quick { " (--quick)" } else { "" }
        );
        let _ = writeln!(
            o,
            "- Cold: {} forced cold starts per runtime, each next to one floor sample",
            m.cold_samples
        );
        let _ = writeln!(o, "- Run time: {:.0} s\n", m.wall_time.as_secs_f64());
    }

    fn render_warm(&self, o: &mut String) {
        let _ = writeln!(o, "## Warm invoke\n");
        let _ = writeln!(
            o,
            "Latency is per request as the client sees it; throughput is successful \
             requests per second. Ratios are against the hyper echo floor at the same \
             number of clients.\n"
        );
        let _ = writeln!(
            o,
            "| Target | Clients | p50 ms | p99 ms | req/s | req/s vs echo | p50 − echo p50 (ms) | Requests | Errors |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for clients in CLIENTS {
            for t in [WarmTarget::Echo, WarmTarget::Provided, WarmTarget::Python] {
                let Some(r) = self.warm(t, clients) else {
                    continue;
                };
                let (pct, over) = if t == WarmTarget::Echo {
                    ("floor".to_string(), "—".to_string())
                } else {
                    (
                        self.throughput_pct(t, clients)
                            .map_or_else(|| "n/a".into(), |p| format!("{p:.0}%")),
                        ms(self.overhead(t, clients), 3),
                    )
                };
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} |",
                    self.label(t),
                    clients,
                    ms(r.latency.median(), 3),
                    ms(r.latency.pct(99.0), 3),
                    r.throughput,
                    pct,
                    over,
                    r.latency.len(),
                    r.errors
                );
            }
        }
        let _ = writeln!(
            o,
            "\nWhere the CPU goes: CPU time (user + system, from /proc/PID/stat, 10 ms \
             ticks) per successful request, in µs, during the same measurement. \
             \"Server\" is nimbus (or the echo server for the floor), \"environments\" \
             the function's runtime processes, \"load generator\" this harness. With \
             2 vCPUs, 2 s of CPU per second is the ceiling, so throughput is at most \
             2e6 / total.\n"
        );
        let _ = writeln!(
            o,
            "| Target | Clients | Server µs/req | Environments µs/req | Load generator µs/req | Total µs/req |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|");
        for clients in CLIENTS {
            for t in [WarmTarget::Echo, WarmTarget::Provided, WarmTarget::Python] {
                let Some(r) = self.warm(t, clients) else {
                    continue;
                };
                let [srv, env, gen_] = r.cpu_us_per_request;
                let _ = writeln!(
                    o,
                    "| {} | {clients} | {srv:.0} | {env:.0} | {gen_:.0} | {:.0} |",
                    self.label(t),
                    srv + env + gen_
                );
            }
        }
        for r in &self.warm {
            if let Some(e) = &r.first_error {
                let _ = writeln!(
                    o,
                    "\nFirst error, {} at {} clients: `{e}`",
                    self.label(r.target),
                    r.clients
                );
            }
        }
        o.push('\n');
    }

    fn render_cold(&self, o: &mut String) {
        let _ = writeln!(o, "## Cold start\n");
        let _ = writeln!(
            o,
            "Each sample: UpdateFunctionConfiguration (retires the environment), then \
             one Invoke with `LogType: Tail`, timed end to end by the client; Init \
             Duration is from the REPORT line. The floor is the interpreter's own \
             start-to-exit time, measured next to each sample (alternately before and \
             after it).\n"
        );
        let _ = writeln!(
            o,
            "| Runtime | Floor | Floor median ms | End-to-end median ms | p90 ms | e2e / floor | Init Duration median ms | Init / floor | REPORT Duration median ms | e2e − Init − Duration ms | Samples | Errors |"
        );
        let _ = writeln!(
            o,
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for c in &self.cold {
            let floor = c.floor.median();
            let ratio = |v: Option<f64>| match (v, floor) {
                (Some(v), Some(f)) if f > 0.0 => format!("{:.2}x", v / f),
                _ => "n/a".into(),
            };
            let rest = match (c.e2e.median(), c.init.median(), c.duration.median()) {
                (Some(e), Some(i), Some(d)) => Some(e - i - d),
                _ => None,
            };
            let _ = writeln!(
                o,
                "| {} | `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c.runtime,
                c.floor_cmd,
                ms(floor, 1),
                ms(c.e2e.median(), 1),
                ms(c.e2e.pct(90.0), 1),
                ratio(c.e2e.median()),
                ms(c.init.median(), 1),
                ratio(c.init.median()),
                ms(c.duration.median(), 2),
                ms(rest, 1),
                c.e2e.len(),
                c.errors
            );
        }
        for c in &self.cold {
            if let Some(e) = &c.first_error {
                let _ = writeln!(o, "\nFirst error, {}: `{e}`", c.runtime);
            }
        }
        o.push('\n');
    }

    fn render_memory(&self, o: &mut String) {
        let _ = writeln!(o, "## Memory\n");
        let _ = writeln!(
            o,
            "VmRSS from /proc/PID/status, in MiB; RssAnon is the part that is the \
             process's own (heap, stacks), the rest is file-backed (executable, shared \
             libraries) and largely shared with other processes.\n"
        );
        let _ = writeln!(o, "| Process | VmRSS MiB | RssAnon MiB | Count |");
        let _ = writeln!(o, "|---|---:|---:|---:|");
        let row = |o: &mut String, label: &str, rss: Option<Rss>, count: usize| {
            let (v, a) = rss.map_or(("n/a".into(), "n/a".into()), |r| {
                (
                    format!("{:.1}", mib(r.vm_rss_kb)),
                    format!("{:.1}", mib(r.rss_anon_kb)),
                )
            });
            let _ = writeln!(o, "| {label} | {v} | {a} | {count} |");
        };
        row(o, "nimbus server, idle after start", self.server_idle, 1);
        row(
            o,
            "nimbus server, end of run (after all load)",
            self.server_after,
            1,
        );
        row(o, "hyper echo server, idle (reference)", self.echo_idle, 1);
        for e in &self.envs {
            row(
                o,
                &format!("{} environment, idle warm (median)", e.kind),
                median_rss(&e.rss),
                e.rss.len(),
            );
        }
        o.push('\n');
    }

    fn render_targets(&self, o: &mut String) {
        let _ = writeln!(o, "## Targets (issue 2)\n");
        let _ = writeln!(o, "| Target | Measured | Verdict |");
        let _ = writeln!(o, "|---|---|---|");
        for t in [WarmTarget::Provided, WarmTarget::Python] {
            if let Some(v) = self.overhead(t, 1) {
                let _ = writeln!(
                    o,
                    "| Warm p50 platform overhead < {OVERHEAD_TARGET_MS} ms ({}, 1 client) | {v:.3} ms | {} |",
                    self.label(t),
                    verdict(v < OVERHEAD_TARGET_MS)
                );
            }
        }
        for t in [WarmTarget::Provided, WarmTarget::Python] {
            if let Some(p) = self.throughput_pct(t, 8) {
                let _ = writeln!(
                    o,
                    "| Throughput at 8 clients ≥ {THROUGHPUT_TARGET_PCT:.0}% of echo ({}) | {p:.0}% | {} |",
                    self.label(t),
                    verdict(p >= THROUGHPUT_TARGET_PCT)
                );
            }
        }
        if let Some(c) = self.cold("python")
            && let (Some(e), Some(f)) = (c.e2e.median(), c.floor.median())
            && f > 0.0
        {
            let r = e / f;
            let _ = writeln!(
                o,
                "| Python cold start end to end ≤ {COLD_TARGET_RATIO}x `{}` | {r:.2}x ({e:.1} ms vs {f:.1} ms) | {} |",
                c.floor_cmd,
                verdict(r <= COLD_TARGET_RATIO)
            );
        }
        if let Some(r) = self.server_idle {
            let v = mib(r.vm_rss_kb);
            let _ = writeln!(
                o,
                "| Server idle RSS < {SERVER_RSS_TARGET_MIB:.0} MB | {v:.1} MiB | {} |",
                verdict(v < SERVER_RSS_TARGET_MIB)
            );
        }
        if let Some(r) = self.env("Python").and_then(|e| median_rss(&e.rss)) {
            let v = mib(r.vm_rss_kb);
            let _ = writeln!(
                o,
                "| Idle warm Python environment RSS < {PYTHON_ENV_RSS_TARGET_MIB:.0} MB | {v:.1} MiB | {} |",
                verdict(v < PYTHON_ENV_RSS_TARGET_MIB)
            );
        }
    }
}

fn median_rss(v: &[Rss]) -> Option<Rss> {
    let mut v = v.to_vec();
    v.sort_by_key(|r| r.vm_rss_kb);
    v.get(v.len().saturating_sub(1) / 2).copied()
}
