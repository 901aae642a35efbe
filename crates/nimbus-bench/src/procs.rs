//! Child processes (nimbus, the echo server) and what /proc says about
//! processes: resident memory, children, executables.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A server process started by the harness; killed when dropped.
pub(crate) struct Server {
    child: Child,
    /// The URL from the server's ready line.
    pub(crate) url: String,
}

impl Server {
    /// Spawns `cmd` and waits (up to `timeout`) for a stdout line starting
    /// with `ready`; the rest of that line's first word is the URL. Stdout
    /// keeps being drained so the server never blocks on a full pipe.
    pub(crate) fn spawn(mut cmd: Command, ready: &str, timeout: Duration) -> Result<Self> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        let ready = ready.to_string();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix(&ready)
                    && let Some(tx) = tx.take()
                {
                    let url = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(url);
                }
            }
        });
        let mut server = Self {
            child,
            url: String::new(),
        };
        match rx.recv_timeout(timeout) {
            Ok(url) => server.url = url,
            Err(_) => {
                let status = server.child.try_wait().ok().flatten();
                return Err(anyhow!(
                    "{:?} did not print its ready line within {timeout:?} (exit status: {status:?})",
                    cmd.get_program()
                ));
            }
        }
        Ok(server)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The `host:port` of the ready URL.
    pub(crate) fn addr(&self) -> Result<std::net::SocketAddr> {
        self.url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .with_context(|| format!("parsing address of {}", self.url))
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub(crate) fn stop(&mut self, grace: Duration) {
        drop(self.child.stdin.take());
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Resident memory of a process, from /proc/PID/status, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Rss {
    pub(crate) vm_rss_kb: u64,
    /// The anonymous part (heap, stacks): what the process itself allocated,
    /// as opposed to file-backed pages (the executable, shared libraries)
    /// that other processes share.
    pub(crate) rss_anon_kb: u64,
}

pub(crate) fn rss(pid: u32) -> Option<Rss> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some(Rss {
        vm_rss_kb: field("VmRSS:")?,
        rss_anon_kb: field("RssAnon:").unwrap_or(0),
    })
}

/// Every process with its parent, from one scan of /proc/*/stat.
fn parents() -> Vec<(u32, u32)> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in rd.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...; comm may contain spaces and parens.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        if let Some(ppid) = after.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
            out.push((pid, ppid));
        }
    }
    out.sort_unstable();
    out
}

/// Direct children of `parent`, found by scanning /proc/*/stat.
pub(crate) fn children(parent: u32) -> Vec<u32> {
    parents()
        .into_iter()
        .filter(|&(_, ppid)| ppid == parent)
        .map(|(pid, _)| pid)
        .collect()
}

/// Every process below `root`: its children, their children, and so on.
pub(crate) fn descendants(root: u32) -> Vec<u32> {
    let all = parents();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(all.iter().filter(|&&(_, pp)| pp == p).map(|&(pid, _)| pid));
        i += 1;
    }
    found.remove(0);
    found
}

/// Peak resident memory of a process so far (VmHWM), in KiB.
pub(crate) fn peak_rss_kb(pid: u32) -> Option<u64> {
    status_field(pid, "VmHWM:")
}

/// Proportional set size (Pss, KiB, from /proc/PID/smaps_rollup): each
/// shared page counted in equal parts to the processes sharing it, so the
/// sum over processes is the memory they use together.
pub(crate) fn pss_kb(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines()
        .find(|l| l.starts_with("Pss:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn status_field(pid: u32, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The executable a process runs.
pub(crate) fn exe(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// Which kind of execution environment an executable is.
pub(crate) fn kind_of(exe: &Path) -> &'static str {
    let name = exe
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.starts_with("python") {
        "python"
    } else if name.starts_with("node") {
        "node"
    } else {
        "other"
    }
}

/// Clock ticks per second of the utime/stime fields in /proc/PID/stat
/// (USER_HZ, 100 on every mainstream Linux architecture).
const USER_HZ: f64 = 100.0;

/// CPU time (user + system, all threads) a process has used so far, in
/// seconds; 0 if it is gone.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // After "(comm)": state is field 3, utime 14 and stime 15 (1-based).
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0.0;
    };
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / USER_HZ
}

/// CPU seconds of a server, of its children (execution environments), and
/// of this process (the load generator), at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpuSnapshot {
    pub(crate) server: f64,
    pub(crate) children: f64,
    pub(crate) harness: f64,
}

impl CpuSnapshot {
    pub(crate) fn take(server: u32) -> Self {
        Self {
            server: cpu_seconds(server),
            children: children(server).into_iter().map(cpu_seconds).sum(),
            harness: cpu_seconds(std::process::id()),
        }
    }

    /// `later - self`, componentwise.
    pub(crate) fn until(&self, later: &CpuSnapshot) -> CpuSnapshot {
        CpuSnapshot {
            server: (later.server - self.server).max(0.0),
            children: (later.children - self.children).max(0.0),
            harness: (later.harness - self.harness).max(0.0),
        }
    }

    pub(crate) fn add(&mut self, other: &CpuSnapshot) {
        self.server += other.server;
        self.children += other.children;
        self.harness += other.harness;
    }
}

/// The nimbus binary a benchmark runs: `given`, else `nimbus` next to this
/// executable, else `target/release/nimbus`; an error saying how to build
/// it when missing.
pub(crate) fn nimbus_binary(given: Option<&Path>) -> Result<PathBuf> {
    let nimbus = given
        .map(Path::to_path_buf)
        .or_else(|| crate::bench::sibling("nimbus"))
        .unwrap_or_else(|| "target/release/nimbus".into());
    if !nimbus.is_file() {
        return Err(anyhow!(
            "{} not found: build it with `cargo build --release -p nimbus-cli` or pass --nimbus",
            nimbus.display()
        ));
    }
    Ok(nimbus)
}

/// `nimbus serve` on loopback with a fresh temporary data directory and
/// the harness's keys, for one benchmark; its log goes to a file in that
/// directory, which errors quote.
pub(crate) struct TempServer {
    pub(crate) server: Server,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl TempServer {
    pub(crate) fn start(nimbus: &Path, prefix: &str, serve_args: &[String]) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        let log = dir.path().join("nimbus.log");
        let mut cmd = Command::new(nimbus);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(serve_args)
            .env("NIMBUS_ACCESS_KEY_ID", crate::client::ACCESS_KEY_ID)
            .env("NIMBUS_SECRET_ACCESS_KEY", crate::client::SECRET_ACCESS_KEY)
            .env("NIMBUS_LOG", "warn")
            .stderr(std::fs::File::create(&log)?);
        let server = Server::spawn(cmd, "nimbus ready on ", Duration::from_secs(60))
            .with_context(|| format!("nimbus log: {}", crate::bench::read_log(&log)))?;
        Ok(Self { server, log, dir })
    }

    /// The temporary directory (the data directory is `data/` in it).
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server; `result` with the server's log added to an error.
    pub(crate) fn finish<T>(mut self, result: Result<T>) -> Result<T> {
        self.server.stop(Duration::from_secs(10));
        result.with_context(|| format!("nimbus log: {}", crate::bench::read_log(&self.log)))
    }
}

/// Prints a benchmark's report and, with `--out`, writes it there too.
pub(crate) fn emit(report: &str, out: Option<&Path>) -> Result<()> {
    print!("{report}");
    if let Some(out) = out {
        std::fs::write(out, report).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
