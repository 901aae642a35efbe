//! Egress from jails (`nimbus_sandbox::netpool`), driven as the server
//! drives it. Needs root, `ip` (iproute2) and `nft` (nftables); runs when
//! `NIMBUS_PRIVILEGED_TESTS=1` (CI sets it).
//!
//! The host has no internet here, so the test makes its own "remote host":
//! a network namespace behind a veth pair (`rmt<pid>` on the host), which a
//! sandbox reaches only by being routed through the host and masqueraded,
//! like any destination out there.

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nimbus_sandbox::jail::JailSpec;
use nimbus_sandbox::netpool::{NetPool, Subnet};
use nimbus_sandbox::{Sandbox, SandboxSpec};
use tokio::io::AsyncReadExt;

fn privileged() -> bool {
    let on = std::env::var("NIMBUS_PRIVILEGED_TESTS").is_ok_and(|v| v == "1");
    if !on {
        eprintln!("skipped: set NIMBUS_PRIVILEGED_TESTS=1 (as root) to run network tests");
    }
    on
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace standing for a host on the internet, with a TCP
/// listener that answers every connection with the peer's address.
struct Remote {
    netns: String,
    host_if: String,
    /// The host's end of the link: an address of the host itself.
    host_addr: Ipv4Addr,
    addr: Ipv4Addr,
    port: u16,
}

impl Remote {
    fn start(third_octet: u8) -> Remote {
        let pid = std::process::id();
        let netns = format!("nimbus-test-{pid}");
        let host_if = format!("rmt{pid}");
        let host_addr = Ipv4Addr::new(198, 18, third_octet, 1);
        let addr = Ipv4Addr::new(198, 18, third_octet, 2);
        ip(&["netns", "add", &netns]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ]);
        ip(&["addr", "add", &format!("{host_addr}/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{addr}/30"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &netns, "link", "set", "eth0", "up"]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        // A socket belongs to the namespace of the thread that made it.
        let path = format!("/run/netns/{netns}");
        let listener = std::thread::spawn(move || {
            let ns = std::fs::File::open(path).unwrap();
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            TcpListener::bind((addr, 0)).unwrap()
        })
        .join()
        .unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || answer_with_peer(listener));
        Remote {
            netns,
            host_if,
            host_addr,
            addr,
            port,
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}

fn answer_with_peer(listener: TcpListener) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { return };
        let peer = conn
            .peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let _ = conn.write_all(peer.as_bytes());
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    code: PathBuf,
    runtime: PathBuf,
    root: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (code, runtime, root) = (
        dir.path().join("code"),
        dir.path().join("runtime"),
        dir.path().join("root"),
    );
    for d in [&code, &runtime, &root] {
        std::fs::create_dir_all(d).unwrap();
    }
    Fixture {
        _dir: dir,
        code,
        runtime,
        root,
    }
}

fn jail(f: &Fixture, network: Option<Arc<NetPool>>) -> JailSpec {
    JailSpec {
        helper: PathBuf::from(env!("CARGO_BIN_EXE_nimbus-jail")),
        helper_args: Vec::new(),
        root_dir: f.root.clone(),
        code_dir: f.code.clone(),
        code_root: None,
        runtime_dir: f.runtime.clone(),
        ro_paths: Vec::new(),
        tmp_mb: 8,
        hostname: "sandbox-test".into(),
        listen: Vec::new(),
        cgroup_procs: Vec::new(),
        nofile: 1024,
        network,
    }
}

fn program(args: &[&str]) -> SandboxSpec {
    SandboxSpec {
        program: PathBuf::from(args[0]),
        args: args[1..].iter().map(Into::into).collect(),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: PathBuf::from("/var/task"),
    }
}

/// Tries a TCP connection to each `host:port` argument and prints
/// `ok <what the server said>` or `fail <error>` for each.
const CONNECT: &str = r#"
import socket, sys
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2) as s:
            print("ok", s.recv(64).decode(), flush=True)
    except OSError as e:
        print("fail", e, flush=True)
"#;

/// Runs the connect script in a jail; returns the sandbox's address and
/// one result line per target.
async fn connect_from_jail(
    f: &Fixture,
    network: Option<Arc<NetPool>>,
    targets: &[String],
) -> (Option<Ipv4Addr>, Vec<String>) {
    let mut args = vec!["/usr/bin/python3", "-c", CONNECT];
    args.extend(targets.iter().map(String::as_str));
    let (mut sb, mut out, _) = Sandbox::spawn_jailed(&program(&args), &jail(f, network)).unwrap();
    let address = sb.address();
    let status = tokio::time::timeout(Duration::from_secs(30), sb.wait())
        .await
        .expect("jail finished")
        .unwrap();
    let mut text = String::new();
    out.read_to_string(&mut text).await.unwrap();
    assert_eq!(status.code(), Some(0), "{text}");
    (address, text.lines().map(str::to_string).collect())
}

fn pool() -> Arc<NetPool> {
    let subnet: Subnet = "10.215.0.0/24".parse().unwrap();
    NetPool::setup(subnet, &format!("test-{}", std::process::id())).expect("network setup")
}

fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

#[tokio::test]
async fn egress_is_routed_and_masqueraded_and_can_be_left_out() {
    if !privileged() {
        return;
    }
    let f = fixture();
    let remote = Remote::start(101);
    // A service on one of the host's own (non-loopback) addresses.
    let host_service = TcpListener::bind((remote.host_addr, 0)).unwrap();
    let host_port = host_service.local_addr().unwrap().port();
    host_service.set_nonblocking(true).unwrap();
    let targets = [
        format!("{}:{}", remote.addr, remote.port),
        format!("{}:{host_port}", remote.host_addr),
    ];
    let pool = pool();

    let (address, lines) = connect_from_jail(&f, Some(pool.clone()), &targets).await;
    let address = address.expect("the sandbox has an address");
    assert!(address.to_string().starts_with("10.215.0."), "{address}");
    // The remote host saw the host's address, not the sandbox's.
    assert_eq!(lines[0], format!("ok {}", remote.host_addr), "{lines:?}");
    // The host's own services are out of reach.
    assert!(lines[1].starts_with("fail"), "{lines:?}");
    assert!(
        host_service.accept().is_err(),
        "a sandbox connected to the host"
    );

    // The pair goes with the sandbox.
    let gateway = Ipv4Addr::from(u32::from(address) - 1);
    let link = format!("nb{:08x}", u32::from(gateway));
    let deadline = Instant::now() + Duration::from_secs(5);
    while link_exists(&link) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!link_exists(&link), "{link} outlived its sandbox");

    // Without egress: loopback only, and failing at once.
    let started = Instant::now();
    let (address, lines) = connect_from_jail(&f, None, &targets).await;
    assert_eq!(address, None);
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in &lines {
        assert!(line.starts_with("fail"), "{lines:?}");
        assert!(line.contains("unreachable"), "{lines:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(2), "{lines:?}");
}

#[tokio::test]
async fn a_prepared_sandbox_can_lose_its_egress() {
    if !privileged() {
        return;
    }
    let f = fixture();
    let pool = pool();
    let script = "sleep 0.3; cat /proc/net/dev";
    let (mut sb, mut out, _) =
        Sandbox::spawn_jailed(&program(&["/bin/sh", "-c", script]), &jail(&f, Some(pool))).unwrap();
    assert!(sb.address().is_some());
    sb.remove_network().unwrap();
    assert!(sb.address().is_none());
    sb.wait().await.unwrap();
    let mut text = String::new();
    out.read_to_string(&mut text).await.unwrap();
    assert!(text.contains("lo:"), "{text}");
    assert!(!text.contains("eth0"), "{text}");
}

#[tokio::test]
async fn a_restart_removes_the_links_of_the_previous_run() {
    if !privileged() {
        return;
    }
    let f = fixture();
    let subnet: Subnet = "10.215.1.0/24".parse().unwrap();
    let owner = format!("test-restart-{}", std::process::id());
    let pool = NetPool::setup(subnet, &owner).unwrap();
    let (sb, _out, _) =
        Sandbox::spawn_jailed(&program(&["/bin/sleep", "10"]), &jail(&f, Some(pool))).unwrap();
    let address = sb.address().unwrap();
    let link = format!("nb{:08x}", u32::from(address) - 1);
    assert!(link_exists(&link));
    let alias = std::fs::read_to_string(format!("/sys/class/net/{link}/ifalias")).unwrap();
    assert_eq!(alias.trim_end(), format!("nimbus {owner}"));
    // The same server starting again finds a link it does not know of.
    let _again = NetPool::setup(subnet, &owner).unwrap();
    assert!(!link_exists(&link), "{link} survived the restart");
}

/// What egress adds to starting a jail, and that jails keep starting and
/// ending cleanly with and without it, one after another. 10 rounds; 100
/// for a measurement: `NIMBUS_MEASURE=1 cargo test -p nimbus-sandbox --test
/// network cost -- --nocapture` (as root).
#[tokio::test]
async fn cost_of_egress_on_a_cold_start() {
    if !privileged() {
        return;
    }
    let f = fixture();
    let pool = pool();
    let runs = if std::env::var("NIMBUS_MEASURE").is_ok_and(|v| v == "1") {
        100
    } else {
        10
    };
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[v.len() * 9 / 10])
    };
    // From spawning the jail to the end of a program that does nothing,
    // alternating with and without egress.
    let spec = program(&["/bin/true"]);
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for i in 0..2 * runs {
        let network = (i % 2 == 0).then(|| pool.clone());
        let t = Instant::now();
        let (mut sb, _out, _) = Sandbox::spawn_jailed(&spec, &jail(&f, network)).unwrap();
        let status = sb.wait().await.unwrap();
        assert_eq!(status.code(), Some(0), "round {i}");
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if i % 2 == 0 {
            with.push(ms)
        } else {
            without.push(ms)
        }
    }
    let (w, w90) = median(with);
    let (wo, wo90) = median(without);
    eprintln!(
        "jail start to exit: with egress median {w:.2} ms (p90 {w90:.2}), without {wo:.2} ms (p90 {wo90:.2})"
    );
    // The server's part alone: NetPool::attach on a jail's namespace.
    let spec = program(&["/bin/sleep", "5"]);
    let mut attach = Vec::new();
    for _ in 0..runs {
        let (sb, _out, _) = Sandbox::spawn_jailed(&spec, &jail(&f, None)).unwrap();
        let t = Instant::now();
        let lease = pool.attach(sb.pid()).unwrap();
        attach.push(t.elapsed().as_secs_f64() * 1000.0);
        drop(lease);
        drop(sb);
    }
    let (a, a90) = median(attach);
    eprintln!("NetPool::attach (veth pair + host address): median {a:.2} ms (p90 {a90:.2})");
}
