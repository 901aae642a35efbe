//! The benchmark run: start the floor and nimbus, deploy the functions,
//! measure warm invokes, cold starts and memory, stop everything, report.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use bytes::Bytes;
use http::{Method, StatusCode};

use crate::Options;
use crate::client::Conn;
use crate::load::{self, EVENT, LoadResult, Target};
use crate::procs::{self, CpuSnapshot, Server};
use crate::report::{ColdRow, EnvMemory, Meta, Report, WarmRow, WarmTarget};
use crate::stats::Samples;

/// Concurrent clients of each warm measurement point.
pub(crate) const CLIENTS: [usize; 3] = [1, 8, 32];

/// Upper bound on requests in one slice of a warm measurement.
const MAX_REQUESTS_PER_SLICE: u64 = 1_000_000;

const ROLE: &str = "arn:aws:iam::000000000000:role/r";
const FN_PROVIDED: &str = "bench-provided";
const FN_PYTHON: &str = "bench-python";
const FN_PYTHON_COLD: &str = "bench-python-cold";
const FN_NODE_COLD: &str = "bench-node-cold";

/// The run's settings, defaults applied.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) nimbus: PathBuf,
    pub(crate) bootstrap: PathBuf,
    /// Load per warm point (target x clients), all rounds together.
    pub(crate) duration: Duration,
    /// Warm points are measured in this many interleaved slices.
    pub(crate) rounds: u32,
    /// Load at 32 clients per nimbus target before measuring.
    pub(crate) warmup: Duration,
    pub(crate) cold_samples: usize,
    pub(crate) python_runtime: String,
    pub(crate) node_runtime: String,
    /// MemorySize of the functions.
    pub(crate) memory_mb: u32,
}

pub(crate) fn sibling(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.join(name))
}

fn settings(o: &Options) -> Result<Settings> {
    let nimbus = o
        .nimbus
        .clone()
        .or_else(|| sibling("nimbus"))
        .unwrap_or_else(|| "target/release/nimbus".into());
    let bootstrap = o
        .bootstrap
        .clone()
        .or_else(|| sibling("bootstrap"))
        .unwrap_or_else(|| "target/release/bootstrap".into());
    for (p, pkg) in [(&nimbus, "nimbus-cli"), (&bootstrap, "rust-echo")] {
        ensure!(
            p.is_file(),
            "{} not found: build it with `cargo build --release -p {pkg}` or pass its path",
            p.display()
        );
    }
    let secs = o.duration.unwrap_or(if o.quick { 2.0 } else { 8.0 });
    ensure!(
        secs.is_finite() && (0.2..=600.0).contains(&secs),
        "--duration must be between 0.2 and 600 seconds"
    );
    let python_runtime = match &o.python_runtime {
        Some(r) => r.clone(),
        None => {
            let v = output_of(
                "python3",
                &[
                    "-c",
                    "import sys; print('python3.%d' % sys.version_info[1])",
                ],
            )?;
            v.trim().to_string()
        }
    };
    let node_runtime = match &o.node_runtime {
        Some(r) => r.clone(),
        None => {
            let v = output_of("node", &["--version"])?;
            let major = v
                .trim()
                .trim_start_matches('v')
                .split('.')
                .next()
                .unwrap_or("")
                .to_string();
            format!("nodejs{major}.x")
        }
    };
    Ok(Settings {
        nimbus,
        bootstrap,
        duration: Duration::from_secs_f64(secs),
        rounds: if o.quick { 2 } else { 4 },
        warmup: Duration::from_millis(if o.quick { 500 } else { 1500 }),
        cold_samples: o
            .cold_samples
            .unwrap_or(if o.quick { 6 } else { 20 })
            .max(1),
        python_runtime,
        node_runtime,
        memory_mb: o.memory_size,
    })
}

pub(crate) fn output_of(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Result<String> {
    let program = program.as_ref();
    let out = Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .with_context(|| format!("running {program:?}"))?;
    ensure!(out.status.success(), "{program:?} {args:?} failed");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs the whole benchmark and prints the report on stdout.
pub(crate) fn run(options: Options) -> Result<()> {
    let settings = settings(&options)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(bench(&settings, &options))?;
    let text = report.render();
    println!("{text}");
    if let Some(out) = &options.out {
        std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("report written to {}", out.display());
    }
    Ok(())
}

fn progress(msg: impl std::fmt::Display) {
    eprintln!("[nimbus-bench] {msg}");
}

async fn bench(s: &Settings, o: &Options) -> Result<Report> {
    let began = Instant::now();
    let loadavg_start = loadavg();

    // The packages first: reading and zipping the fixture is not measured.
    let provided_zip = crate::fixtures::provided_zip(&s.bootstrap)?;
    let python_zip = crate::fixtures::python_zip()?;
    let node_zip = crate::fixtures::node_zip()?;

    progress("starting the echo floor and nimbus");
    let me = std::env::current_exe()?;
    let mut echo_cmd = Command::new(&me);
    echo_cmd.arg("echo-server");
    let mut echo = Server::spawn(echo_cmd, crate::echo::READY, Duration::from_secs(10))?;

    let data = tempfile::Builder::new().prefix("nimbus-bench-").tempdir()?;
    let log_path = data.path().join("nimbus.log");
    let mut nimbus_cmd = Command::new(&s.nimbus);
    nimbus_cmd
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path().join("data"))
        // Nothing may be reaped or throttled during the run.
        .args(["--keep-alive", "3600", "--concurrency", "128"])
        .args(&o.serve_arg)
        .env("NIMBUS_ACCESS_KEY_ID", crate::client::ACCESS_KEY_ID)
        .env("NIMBUS_SECRET_ACCESS_KEY", crate::client::SECRET_ACCESS_KEY)
        .stderr(std::fs::File::create(&log_path)?);
    let mut nimbus = Server::spawn(nimbus_cmd, "nimbus ready on ", Duration::from_secs(60))
        .with_context(|| format!("nimbus log: {}", read_log(&log_path)))?;
    let nimbus_addr = nimbus.addr()?;
    let echo_addr = echo.addr()?;

    // Idle RSS after start: let start-up work (runtime discovery) settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server_idle = procs::rss(nimbus.pid());
    let echo_idle = procs::rss(echo.pid());

    let servers = Servers {
        nimbus_pid: nimbus.pid(),
        nimbus: nimbus_addr,
        echo_pid: echo.pid(),
        echo: echo_addr,
    };
    let result = measure(s, o, &servers, [&provided_zip, &python_zip, &node_zip]).await;
    let server_after = procs::rss(nimbus.pid());
    nimbus.stop(Duration::from_secs(10));
    echo.stop(Duration::from_secs(2));
    let mut m = result.with_context(|| format!("nimbus log: {}", read_log(&log_path)))?;

    m.meta.loadavg_start = loadavg_start;
    m.meta.loadavg_end = loadavg();
    m.meta.wall_time = began.elapsed();
    m.server_idle = server_idle;
    m.server_after = server_after;
    m.echo_idle = echo_idle;
    Ok(m)
}

pub(crate) fn read_log(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(20).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The two servers under test.
struct Servers {
    nimbus_pid: u32,
    nimbus: SocketAddr,
    echo_pid: u32,
    echo: SocketAddr,
}

async fn measure(
    s: &Settings,
    o: &Options,
    servers: &Servers,
    [provided_zip, python_zip, node_zip]: [&Vec<u8>; 3],
) -> Result<Report> {
    let nimbus_pid = servers.nimbus_pid;
    let mut ctl = Conn::connect(servers.nimbus).await?;
    progress("creating functions");
    let functions: [(&str, &str, &str, &Vec<u8>); 4] = [
        (FN_PROVIDED, "provided.al2023", "bootstrap", provided_zip),
        (
            FN_PYTHON,
            &s.python_runtime,
            "lambda_function.handler",
            python_zip,
        ),
        (
            FN_PYTHON_COLD,
            &s.python_runtime,
            "lambda_function.handler",
            python_zip,
        ),
        (FN_NODE_COLD, &s.node_runtime, "index.handler", node_zip),
    ];
    create_role(&mut ctl).await?;
    for (name, runtime, handler, zip) in functions {
        create_function(&mut ctl, name, runtime, handler, zip, s.memory_mb).await?;
        // The first invoke is a cold start that also warms the page cache;
        // it checks the function works before anything is measured.
        let resp = invoke(&mut ctl, name, false).await?;
        ensure!(
            resp.is_success(),
            "{name}: first invoke failed: {} {:?} {}",
            resp.status,
            resp.headers.get("x-amz-function-error"),
            resp.text()
        );
    }

    // The interpreters nimbus runs, as the kernel sees them.
    let mut python = o.python.clone();
    let mut node = o.node.clone();
    for pid in procs::children(nimbus_pid) {
        let Some(exe) = procs::exe(pid) else { continue };
        match procs::kind_of(&exe) {
            "python" if python.is_none() => python = Some(exe),
            "node" if node.is_none() => node = Some(exe),
            _ => {}
        }
    }
    let python = python
        .context("no Python environment found among nimbus's children; pass --python PATH")?;
    let node =
        node.context("no Node environment found among nimbus's children; pass --node PATH")?;
    let python_version = output_of(&python, &["--version"]).unwrap_or_default();
    let node_version = output_of(&node, &["--version"]).unwrap_or_default();

    let warm = warm_phase(s, servers).await?;

    progress(format!(
        "cold starts: {} per runtime, interleaved with the interpreter floor",
        s.cold_samples
    ));
    let cold_python = cold_phase(
        s,
        &mut ctl,
        FN_PYTHON_COLD,
        &s.python_runtime,
        &python,
        &["-c", "pass"],
    )
    .await?;
    let cold_node = cold_phase(
        s,
        &mut ctl,
        FN_NODE_COLD,
        &s.node_runtime,
        &node,
        &["-e", "0"],
    )
    .await?;

    progress("memory of idle warm environments");
    let envs = env_memory(&mut ctl, nimbus_pid).await?;

    Ok(Report {
        meta: Meta {
            nimbus: s.nimbus.clone(),
            git_commit: output_of("git", &["rev-parse", "--short", "HEAD"])
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            python: python.clone(),
            python_version: python_version.trim().to_string(),
            node: node.clone(),
            node_version: node_version.trim().to_string(),
            python_runtime: s.python_runtime.clone(),
            node_runtime: s.node_runtime.clone(),
            duration: s.duration,
            rounds: s.rounds,
            cold_samples: s.cold_samples,
            quick: o.quick,
            ..Meta::default()
        },
        warm,
        cold: vec![cold_python, cold_node],
        envs,
        ..Report::default()
    })
}

/// Creates the execution role the benchmark's functions run as (trusted by
/// Lambda), as a user does once.
pub(crate) async fn create_role(ctl: &mut Conn) -> Result<()> {
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let form = format!(
        "Action=CreateRole&RoleName=r&AssumeRolePolicyDocument={}",
        nimbus_auth::uri_encode(trust, false)
    );
    let resp = ctl.iam_action(&form).await?;
    if !resp.status.is_success() {
        bail!(
            "creating the execution role: HTTP {}: {}",
            resp.status,
            resp.text()
        );
    }
    Ok(())
}

pub(crate) async fn create_function(
    ctl: &mut Conn,
    name: &str,
    runtime: &str,
    handler: &str,
    zip: &[u8],
    memory_mb: u32,
) -> Result<()> {
    let body = serde_json::json!({
        "FunctionName": name,
        "Runtime": runtime,
        "Role": ROLE,
        "Handler": handler,
        "Timeout": 30,
        "MemorySize": memory_mb,
        "Code": {"ZipFile": base64::engine::general_purpose::STANDARD.encode(zip)},
    });
    let resp = ctl
        .send(
            Method::POST,
            "/2015-03-31/functions",
            &[],
            body.to_string().into(),
        )
        .await?;
    if !resp.status.is_success() {
        bail!(
            "creating {name} ({runtime}): HTTP {}: {}",
            resp.status,
            resp.text()
        );
    }
    Ok(())
}

pub(crate) fn invoke_path(name: &str) -> String {
    format!("/2015-03-31/functions/{name}/invocations")
}

async fn invoke(ctl: &mut Conn, name: &str, tail: bool) -> Result<crate::client::Resp> {
    let headers: &[(&'static str, &str)] = if tail {
        &[("x-amz-log-type", "Tail")]
    } else {
        &[]
    };
    ctl.send(
        Method::POST,
        &invoke_path(name),
        headers,
        Bytes::from_static(EVENT.as_bytes()),
    )
    .await
}

/// Changes the function's configuration: its environments are retired and
/// the next invoke is a cold start.
async fn retire(ctl: &mut Conn, name: &str, tag: &str) -> Result<()> {
    let body = serde_json::json!({ "Description": tag });
    ctl.expect(
        Method::PUT,
        &format!("/2015-03-31/functions/{name}/configuration"),
        body.to_string().into(),
        StatusCode::OK,
    )
    .await?;
    Ok(())
}

async fn warm_phase(s: &Settings, servers: &Servers) -> Result<Vec<WarmRow>> {
    // (what, where, the process whose CPU time is the server's)
    let targets = [
        (
            WarmTarget::Echo,
            Target {
                addr: servers.echo,
                path: invoke_path("echo"),
            },
            servers.echo_pid,
        ),
        (
            WarmTarget::Provided,
            Target {
                addr: servers.nimbus,
                path: invoke_path(FN_PROVIDED),
            },
            servers.nimbus_pid,
        ),
        (
            WarmTarget::Python,
            Target {
                addr: servers.nimbus,
                path: invoke_path(FN_PYTHON),
            },
            servers.nimbus_pid,
        ),
    ];
    progress(format!(
        "warm-up: {:.1} s per target at {} clients (starts the environments)",
        s.warmup.as_secs_f64(),
        CLIENTS[CLIENTS.len() - 1]
    ));
    for (_, t, _) in &targets {
        let r = load::run(
            t,
            CLIENTS[CLIENTS.len() - 1],
            s.warmup,
            MAX_REQUESTS_PER_SLICE,
        )
        .await?;
        if r.errors > 0 {
            bail!(
                "warm-up against {} failed: {}",
                t.path,
                r.first_error.unwrap_or_default()
            );
        }
    }
    let slice = s.duration / s.rounds;
    let mut rows = Vec::new();
    for clients in CLIENTS {
        progress(format!(
            "warm: {clients} client(s), {} rounds of {:.1} s per target",
            s.rounds,
            slice.as_secs_f64()
        ));
        let mut results: Vec<LoadResult> = vec![LoadResult::default(); targets.len()];
        let mut cpu = [CpuSnapshot::default(); 3];
        for round in 0..s.rounds as usize {
            // Rotate the order so no target always follows the same one.
            for k in 0..targets.len() {
                let i = (k + round) % targets.len();
                let (_, target, pid) = &targets[i];
                let before = CpuSnapshot::take(*pid);
                let r = load::run(target, clients, slice, MAX_REQUESTS_PER_SLICE).await?;
                cpu[i].add(&before.until(&CpuSnapshot::take(*pid)));
                results[i].merge(r);
            }
        }
        for (((target, _, _), result), cpu) in targets.iter().zip(results).zip(cpu) {
            let n = result.latencies_ns.len().max(1) as f64;
            rows.push(WarmRow {
                target: *target,
                clients,
                latency: Samples::from_nanos(&result.latencies_ns),
                throughput: result.throughput(),
                errors: result.errors,
                first_error: result.first_error,
                cpu_us_per_request: [cpu.server, cpu.children, cpu.harness].map(|c| c * 1e6 / n),
            });
        }
    }
    Ok(rows)
}

/// Start-to-exit wall time of `program args`, in ms, with the scrubbed
/// environment nimbus gives its runtimes.
async fn floor_sample(program: &Path, args: &[&str]) -> Result<f64> {
    let program = program.to_path_buf();
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(&program);
        cmd.args(&args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "en_US.UTF-8")
            .env("TZ", ":UTC")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let t0 = Instant::now();
        let status = cmd.status()?;
        let took = t0.elapsed();
        ensure!(status.success(), "{} {args:?}: {status}", program.display());
        Ok(took.as_secs_f64() * 1e3)
    })
    .await?
}

/// A REPORT line's `Init Duration` and `Duration`, in ms.
pub(crate) fn parse_report(log_b64: &str) -> (Option<f64>, Option<f64>) {
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(log_b64.trim()) else {
        return (None, None);
    };
    let text = String::from_utf8_lossy(&raw);
    let Some(report) = text.lines().rev().find(|l| l.starts_with("REPORT ")) else {
        return (None, None);
    };
    let field = |name: &str| {
        report
            .split('\t')
            .find_map(|f| f.trim().strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("ms").trim().parse().ok())
    };
    (field("Init Duration:"), field("Duration:"))
}

async fn cold_phase(
    s: &Settings,
    ctl: &mut Conn,
    name: &str,
    runtime: &str,
    interpreter: &Path,
    floor_args: &[&str],
) -> Result<ColdRow> {
    let (mut floor, mut e2e, mut init, mut dur) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut errors = 0u64;
    let mut first_error = None;
    // One unmeasured floor run, as the function had its unmeasured first invoke.
    floor_sample(interpreter, floor_args).await?;
    for i in 0..s.cold_samples {
        retire(ctl, name, &format!("cold start {i}")).await?;
        // Let the retired environment die before anything is timed.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let floor_first = i % 2 == 0;
        if floor_first {
            floor.push(floor_sample(interpreter, floor_args).await?);
        }
        let t0 = Instant::now();
        let resp = invoke(ctl, name, true).await?;
        let took = t0.elapsed().as_secs_f64() * 1e3;
        if !floor_first {
            floor.push(floor_sample(interpreter, floor_args).await?);
        }
        let log = resp
            .headers
            .get("x-amz-log-result")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let (init_ms, dur_ms) = parse_report(log);
        match (resp.is_success(), init_ms) {
            (true, Some(init_ms)) => {
                e2e.push(took);
                init.push(init_ms);
                dur.extend(dur_ms);
            }
            (ok, _) => {
                errors += 1;
                first_error.get_or_insert_with(|| {
                    if ok {
                        "no Init Duration in REPORT (the invoke was not a cold start)".to_string()
                    } else {
                        format!("HTTP {}: {}", resp.status, resp.text())
                    }
                });
            }
        }
    }
    Ok(ColdRow {
        runtime: runtime.to_string(),
        floor_cmd: format!(
            "{} {}",
            interpreter
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            floor_args.join(" ")
        ),
        floor: Samples::new(floor),
        e2e: Samples::new(e2e),
        init: Samples::new(init),
        duration: Samples::new(dur),
        errors,
        first_error,
    })
}

/// RSS of one idle warm environment per runtime: every function's
/// environments are retired, then each of three functions gets one
/// environment (a cold invoke and a few warm ones) and is left idle.
async fn env_memory(ctl: &mut Conn, nimbus_pid: u32) -> Result<Vec<EnvMemory>> {
    for name in [FN_PROVIDED, FN_PYTHON, FN_PYTHON_COLD, FN_NODE_COLD] {
        retire(ctl, name, "memory").await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for name in [FN_PROVIDED, FN_PYTHON_COLD, FN_NODE_COLD] {
        for _ in 0..10 {
            let resp = invoke(ctl, name, false).await?;
            ensure!(resp.is_success(), "{name}: {}", resp.text());
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut by_kind: Vec<EnvMemory> = Vec::new();
    for pid in procs::children(nimbus_pid) {
        let (Some(exe), Some(rss)) = (procs::exe(pid), procs::rss(pid)) else {
            continue;
        };
        let kind = match procs::kind_of(&exe) {
            "python" => "Python",
            "node" => "Node",
            _ if exe.file_name().is_some_and(|n| n == "bootstrap") => "provided (rust-echo)",
            _ => continue,
        };
        match by_kind.iter_mut().find(|e| e.kind == kind) {
            Some(e) => e.rss.push(rss),
            None => by_kind.push(EnvMemory {
                kind,
                rss: vec![rss],
            }),
        }
    }
    Ok(by_kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_line_fields() {
        let log = "START RequestId: x Version: $LATEST\nEND RequestId: x\n\
                   REPORT RequestId: x\tDuration: 1.25 ms\tBilled Duration: 33 ms\t\
                   Memory Size: 128 MB\tMax Memory Used: 9 MB\tInit Duration: 31.50 ms\n";
        let b64 = base64::engine::general_purpose::STANDARD.encode(log);
        assert_eq!(parse_report(&b64), (Some(31.5), Some(1.25)));
        let warm = "REPORT RequestId: x\tDuration: 0.50 ms\tBilled Duration: 1 ms\n";
        let b64 = base64::engine::general_purpose::STANDARD.encode(warm);
        assert_eq!(parse_report(&b64), (None, Some(0.5)));
    }
}
