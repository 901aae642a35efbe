//! The jail, driven as the server drives it: these run real namespaces and
//! mounts, so they need root and run when `NIMBUS_PRIVILEGED_TESTS=1` (CI
//! sets it).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use nimbus_sandbox::jail::JailSpec;
use nimbus_sandbox::{Sandbox, SandboxSpec};
use tokio::io::AsyncReadExt;

fn privileged() -> bool {
    let on = std::env::var("NIMBUS_PRIVILEGED_TESTS").is_ok_and(|v| v == "1");
    if !on {
        eprintln!("skipped: set NIMBUS_PRIVILEGED_TESTS=1 (as root) to run jail tests");
    }
    on
}

struct Fixture {
    _dir: tempfile::TempDir,
    code: PathBuf,
    runtime: PathBuf,
    root: PathBuf,
    secret: PathBuf,
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
    std::fs::write(code.join("hello.txt"), "hello from the task\n").unwrap();
    let secret = dir.path().join("secret.db");
    std::fs::write(&secret, "server data").unwrap();
    Fixture {
        _dir: dir,
        code,
        runtime,
        root,
        secret,
    }
}

fn jail(f: &Fixture, listen: Vec<u16>) -> JailSpec {
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
        listen,
        cgroup_procs: Vec::new(),
        nofile: 1024,
        network: None,
    }
}

fn sh(script: &str) -> SandboxSpec {
    SandboxSpec {
        program: PathBuf::from("/bin/sh"),
        args: vec!["-c".into(), script.into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: PathBuf::from("/var/task"),
    }
}

/// Runs `script` in a jail; returns its exit code and output.
async fn run(f: &Fixture, script: &str) -> (Option<i32>, String) {
    let (mut sb, mut out, _) = Sandbox::spawn_jailed(&sh(script), &jail(f, Vec::new())).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), sb.wait())
        .await
        .expect("jail finished")
        .unwrap();
    let mut text = String::new();
    out.read_to_string(&mut text).await.unwrap();
    (status.code(), text)
}

#[tokio::test]
async fn runs_as_an_unprivileged_user_in_its_own_namespaces() {
    if !privileged() {
        return;
    }
    let f = fixture();
    let (code, out) = run(
        &f,
        "id -u; id -g; hostname; cat /var/task/hello.txt; echo $$; ls /proc | grep -c '^[0-9]'; \
         grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; cat /proc/self/uid_map",
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "993", "{out}");
    assert_eq!(lines[1], "993", "{out}");
    assert_eq!(lines[2], "sandbox-test", "{out}");
    assert_eq!(lines[3], "hello from the task", "{out}");
    // init is PID 1; the shell is its child.
    assert_eq!(lines[4], "2", "{out}");
    // Only the jail's own processes are visible: init, sh, and ls/grep.
    let visible: u32 = lines[5].parse().unwrap();
    assert!(visible <= 4, "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    // Its own user namespace, where 993 is an unprivileged host id and
    // nothing else (root included) is mapped.
    let map: Vec<&str> = lines.last().unwrap().split_whitespace().collect();
    assert_eq!(map, ["993", "100993", "1"], "{out}");
}

#[tokio::test]
async fn sees_nothing_of_the_host_but_system_directories() {
    if !privileged() {
        return;
    }
    let f = fixture();
    let script = format!(
        "cat {} 2>&1; ls /root 2>&1; ls /work 2>&1; touch /var/task/x 2>&1; touch /usr/x 2>&1; \
         touch /x 2>&1; echo data > /tmp/ok && cat /tmp/ok",
        f.secret.display()
    );
    let (code, out) = run(&f, &script).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("server data"), "{out}");
    assert!(out.contains("No such file or directory"), "{out}");
    assert_eq!(out.matches("Read-only file system").count(), 3, "{out}");
    assert!(out.trim_end().ends_with("data"), "{out}");
}

#[tokio::test]
async fn seccomp_and_namespaces_refuse_escapes() {
    if !privileged() {
        return;
    }
    let f = fixture();
    // unshare(1) needs the unshare syscall; mount needs mount; both are
    // denied even to a process that somehow regained root.
    let (code, out) = run(
        &f,
        "unshare -U true 2>&1; echo rc=$?; kill -9 1 2>&1; echo kill=$?",
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(!out.contains("rc=0"), "{out}");
    assert!(!out.contains("kill=0"), "{out}");
}

#[tokio::test]
async fn the_exit_status_is_the_runtimes() {
    if !privileged() {
        return;
    }
    let f = fixture();
    let (code, _) = run(&f, "exit 7").await;
    assert_eq!(code, Some(7));
    let (mut sb, _out, _) =
        Sandbox::spawn_jailed(&sh("kill -9 $$"), &jail(&f, Vec::new())).unwrap();
    let status = sb.wait().await.unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9));
}

#[tokio::test]
async fn a_missing_program_is_an_exec_error() {
    if !privileged() {
        return;
    }
    let f = fixture();
    let mut spec = sh("");
    spec.program = PathBuf::from("/var/task/bootstrap");
    let (mut sb, _out, _) = Sandbox::spawn_jailed(&spec, &jail(&f, Vec::new())).unwrap();
    sb.wait().await.unwrap();
    let err = sb.exec_error().expect("exec error reported");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
}

#[tokio::test]
async fn listeners_are_reachable_only_inside_the_jail() {
    if !privileged() {
        return;
    }
    let f = fixture();
    let port = 9001;
    let script = "/usr/bin/python3 -c 'import socket; \
                  s = socket.create_connection((\"127.0.0.1\", 9001)); print(s.recv(5).decode())'";
    let (mut sb, mut out, listeners) =
        Sandbox::spawn_jailed(&sh(script), &jail(&f, vec![port])).unwrap();
    assert_eq!(listeners.len(), 1);
    let listener = &listeners[0];
    assert_eq!(listener.local_addr().unwrap().port(), port);
    let (mut conn, _) = listener.accept().unwrap();
    conn.write_all(b"hello").unwrap();
    let _ = sb.wait().await.unwrap();
    let mut text = String::new();
    out.read_to_string(&mut text).await.unwrap();
    assert!(text.contains("hello"), "{text}");
    // The host's loopback has no such listener: the jail's is its own.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[tokio::test]
async fn a_prepared_sandbox_gets_its_code_tmp_and_environment_when_assigned() {
    if !privileged() {
        return;
    }
    let f = fixture();
    let mut spec = jail(&f, Vec::new());
    spec.code_root = f.code.parent().map(PathBuf::from);
    let script = "read -r line <&3; echo \"$line\"; cat /var/task/hello.txt; ls /.nimbus 2>&1; \
                  touch /var/task/x 2>&1; df -m /tmp | tail -1";
    let (mut sb, mut out, _) = Sandbox::spawn_jailed(&sh(script), &spec).unwrap();
    // Nothing of the code is there before the assignment.
    tokio::time::sleep(Duration::from_millis(100)).await;
    sb.assign("code", 16, &[("GREETING".into(), "hi".into())])
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), sb.wait())
        .await
        .expect("jail finished")
        .unwrap();
    let mut text = String::new();
    out.read_to_string(&mut text).await.unwrap();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.starts_with("{\"GREETING\":\"hi\"}"), "{text}");
    assert!(text.contains("hello from the task"), "{text}");
    // The rest of the code root was never within the runtime's reach.
    assert!(
        text.contains("ls: cannot open directory '/.nimbus': Permission denied"),
        "{text}"
    );
    assert!(text.contains("Read-only file system"), "{text}");
    let tmp_mb: u64 = text
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert_eq!(tmp_mb, 16, "{text}");
}

#[tokio::test]
async fn an_assignment_cannot_name_a_path_outside_the_code_root() {
    if !privileged() {
        return;
    }
    let f = fixture();
    let mut spec = jail(&f, Vec::new());
    spec.code_root = Some(f.code.clone());
    let (mut sb, mut out, _) =
        Sandbox::spawn_jailed(&sh("read -r line <&3 || echo no-assignment"), &spec).unwrap();
    sb.assign("../root", 16, &[]).unwrap();
    sb.wait().await.unwrap();
    let mut text = String::new();
    out.read_to_string(&mut text).await.unwrap();
    assert!(text.contains("no-assignment"), "{text}");
    let err = sb.exec_error().expect("the failed assignment is reported");
    assert!(
        err.to_string()
            .contains("assignment names no code directory"),
        "{err}"
    );
}
