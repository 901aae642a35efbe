//! The jail's own side: what runs in the helper process the server starts
//! (`nimbus __jail`), from reading its configuration to `execve` of the
//! function's runtime.
//!
//! Three processes, like Firecracker's jailer and the runtime it starts:
//!
//! 1. the **monitor**, started by the server with the control socket on
//!    fd 3: it joins the sandbox's cgroup, unshares the mount, PID, IPC, UTS
//!    and network namespaces, brings up loopback, binds the listeners the
//!    server asked for and hands them back, builds the root filesystem,
//!    configures `eth0` once the server has added it (jails with egress),
//!    then forks and waits;
//! 2. **init**, PID 1 of the new PID namespace: it mounts `/proc`, pivots
//!    into the new root, makes it read-only, starts the runtime and reaps
//!    every orphan until the runtime exits, then reports its wait status to
//!    the server and exits (the kernel kills whatever is left in the
//!    namespace);
//! 3. the **runtime**: a new session, resource limits, the unprivileged
//!    user, no new privileges, the seccomp filter, then `execve`.
//!
//! Every process here is single-threaded, so the code between `fork` and
//! `execve` may allocate and use the standard library freely.

use std::ffi::CString;
use std::fs;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::socket::{ControlMessage, MsgFlags, recvmsg, sendmsg};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid};

use super::{ASSIGN_FD, Assignment, CONTROL_FD, JailConfig, Message, Network};

/// Where a prepared sandbox holds the code root until it is assigned.
const CODE_HOLD: &str = "/.nimbus/code";

/// Runs the jail helper. Never returns: the process exits (or becomes the
/// runtime).
pub fn main() -> ! {
    // SAFETY: the server starts this helper with the control socket on fd 3
    // and nothing else owns that descriptor in this fresh process.
    let ctl = unsafe { OwnedFd::from_raw_fd(CONTROL_FD) };
    let _ = nix::fcntl::fcntl(
        &ctl,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let code = match monitor(&ctl) {
        Ok(code) => code,
        Err(e) => {
            send(&ctl, &Message::Failed(e.to_string()), &[]);
            1
        }
    };
    std::process::exit(code)
}

/// A setup step that failed, with what it was doing.
#[derive(Debug)]
struct StepError {
    step: String,
    errno: Errno,
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.step, self.errno.desc())
    }
}

trait Step<T> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T, StepError>;
}

impl<T> Step<T> for nix::Result<T> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T, StepError> {
        self.map_err(|errno| StepError {
            step: what(),
            errno,
        })
    }
}

impl<T> Step<T> for std::io::Result<T> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T, StepError> {
        self.map_err(|e| StepError {
            step: what(),
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })
    }
}

fn monitor(ctl: &OwnedFd) -> Result<i32, StepError> {
    let cfg = read_config(ctl)?;
    let me = std::process::id().to_string();
    for procs in &cfg.cgroup_procs {
        fs::write(procs, &me).step(|| format!("joining cgroup {}", procs.display()))?;
    }
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWNET,
    )
    .step(|| "unshare".into())?;
    super::net::loopback_up().step(|| "bringing up loopback".into())?;
    let listeners = cfg
        .listen
        .iter()
        .map(|&port| {
            std::net::TcpListener::bind(("127.0.0.1", port))
                .step(|| format!("binding 127.0.0.1:{port}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let fds: Vec<RawFd> = listeners.iter().map(AsRawFd::as_raw_fd).collect();
    send(ctl, &Message::Listening, &fds);
    drop(listeners);
    nix::unistd::sethostname(&cfg.hostname).step(|| "sethostname".into())?;
    build_root(&cfg)?;
    let filters = super::seccomp::filters().map_err(|e| StepError {
        step: format!("compiling the seccomp filter: {e}"),
        errno: Errno::EINVAL,
    })?;
    if cfg.network {
        // The server adds eth0 while the root was being built.
        let net: Network = receive(ctl, "the network configuration")?;
        super::net::uplink_up(&net).step(|| "configuring eth0".into())?;
    }
    // SAFETY: this process is single-threaded (the helper never starts a
    // thread), so the child may do anything the parent could.
    match unsafe { nix::unistd::fork() }.step(|| "fork".into())? {
        ForkResult::Child => {
            let code = match init(&cfg, ctl, &filters) {
                Ok(code) => code,
                Err(e) => {
                    send(ctl, &Message::Failed(e.to_string()), &[]);
                    1
                }
            };
            std::process::exit(code)
        }
        ForkResult::Parent { child } => Ok(match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => code,
            _ => 1,
        }),
    }
}

fn read_config(ctl: &OwnedFd) -> Result<JailConfig, StepError> {
    receive(ctl, "the jail configuration")
}

/// Receives one JSON message from the server.
fn receive<T: serde::de::DeserializeOwned>(ctl: &OwnedFd, what: &str) -> Result<T, StepError> {
    let mut buf = vec![0u8; super::MAX_MESSAGE];
    let n = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        recvmsg::<()>(ctl.as_raw_fd(), &mut iov, None, MsgFlags::empty())
            .step(|| format!("reading {what}"))?
            .bytes
    };
    if n == 0 {
        return Err(StepError {
            step: format!("reading {what}: the server closed the control socket"),
            errno: Errno::EPIPE,
        });
    }
    serde_json::from_slice(&buf[..n]).map_err(|e| StepError {
        step: format!("parsing {what}: {e}"),
        errno: Errno::EINVAL,
    })
}

/// Sends one message (and descriptors) to the server. Failures are ignored:
/// a server that stopped listening kills the jail anyway.
fn send(ctl: &OwnedFd, msg: &Message, fds: &[RawFd]) {
    let Ok(bytes) = serde_json::to_vec(msg) else {
        return;
    };
    let iov = [IoSlice::new(&bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    let _ = sendmsg::<()>(ctl.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None);
}

/// Lays out the new root at `cfg.root_dir`: a small tmpfs holding read-only
/// binds of the system directories, the interpreters, the runtime and the
/// function's code, a private `/tmp` and a minimal `/dev`. `/proc` is
/// mounted by init, the first process of the new PID namespace.
fn build_root(cfg: &JailConfig) -> Result<(), StepError> {
    let none: Option<&str> = None;
    // Nothing mounted here may propagate back to the host.
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_SLAVE, none)
        .step(|| "making / a slave mount".into())?;
    let root = &cfg.root_dir;
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("size=1m,mode=0755"),
    )
    .step(|| format!("mounting the root tmpfs on {}", root.display()))?;
    for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(top);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = fs::read_link(&host).step(|| format!("reading {}", host.display()))?;
                symlink(target, root.join(top)).step(|| format!("linking /{top}"))?;
            }
            Ok(m) if m.is_dir() => bind_ro(&host, &root.join(top))?,
            _ => {}
        }
    }
    bind_ro(Path::new("/usr"), &root.join("usr"))?;
    bind_ro(Path::new("/etc"), &root.join("etc"))?;
    for p in &cfg.ro_paths {
        if p.is_dir() && !p.starts_with("/usr") {
            bind_ro(p, &inside(root, p))?;
        }
    }
    bind_ro(&cfg.runtime_dir, &root.join("var/runtime"))?;
    if let Some(code_root) = &cfg.code_root {
        // Bound when the sandbox is assigned to a function, from the code
        // root held where only root can reach it until then (a directory
        // of mode 0700); it is unmounted before any function code runs.
        mkdir(&root.join("var/task"))?;
        let hold = root.join(CODE_HOLD.trim_start_matches('/'));
        mkdir(&hold)?;
        fs::set_permissions(
            hold.parent().unwrap_or(&hold),
            fs::Permissions::from_mode(0o700),
        )
        .step(|| "restricting the code root".into())?;
        bind_ro(code_root, &hold)?;
    } else {
        bind_ro(&cfg.code_dir, &root.join("var/task"))?;
    }
    mkdir(&root.join("opt"))?;
    let tmp = root.join("tmp");
    mkdir(&tmp)?;
    mount(
        Some("tmpfs"),
        &tmp,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("size={}m,mode=1777", cfg.tmp_mb).as_str()),
    )
    .step(|| "mounting /tmp".into())?;
    build_dev(root)?;
    mkdir(&root.join("proc"))?;
    Ok(())
}

fn build_dev(root: &Path) -> Result<(), StepError> {
    let dev = root.join("dev");
    mkdir(&dev)?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("size=64k,mode=0755"),
    )
    .step(|| "mounting /dev".into())?;
    for node in ["null", "zero", "full", "random", "urandom"] {
        let target = dev.join(node);
        fs::File::create(&target).step(|| format!("creating /dev/{node}"))?;
        let none: Option<&str> = None;
        mount(
            Some(Path::new("/dev").join(node).as_path()),
            &target,
            none,
            MsFlags::MS_BIND,
            none,
        )
        .step(|| format!("binding /dev/{node}"))?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(name)).step(|| format!("linking /dev/{name}"))?;
    }
    Ok(())
}

/// `path` (absolute, on the host) under the new root.
fn inside(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

fn mkdir(path: &Path) -> Result<(), StepError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .step(|| format!("creating {}", path.display()))
}

/// Binds `src` at `dst` (created) read-only, without setuid or devices.
fn bind_ro(src: &Path, dst: &Path) -> Result<(), StepError> {
    mkdir(dst)?;
    let none: Option<&str> = None;
    mount(
        Some(src),
        dst,
        none,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        none,
    )
    .step(|| format!("binding {}", src.display()))?;
    mount(
        none,
        dst,
        none,
        MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV,
        none,
    )
    .step(|| format!("making {} read-only", src.display()))
}

/// PID 1 of the sandbox.
fn init(
    cfg: &JailConfig,
    ctl: &OwnedFd,
    filters: &[seccompiler::BpfProgram],
) -> Result<i32, StepError> {
    let none: Option<&str> = None;
    let root = &cfg.root_dir;
    mount(
        Some("proc"),
        &root.join("proc"),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        none,
    )
    .step(|| "mounting /proc".into())?;
    nix::unistd::chdir(root).step(|| "entering the new root".into())?;
    nix::unistd::pivot_root(".", ".").step(|| "pivot_root".into())?;
    umount2(".", MntFlags::MNT_DETACH).step(|| "detaching the host root".into())?;
    nix::unistd::chdir("/").step(|| "chdir /".into())?;
    mount(
        none,
        "/",
        none,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        none,
    )
    .step(|| "making / read-only".into())?;

    let program = cstring(&cfg.program)?;
    let mut argv = vec![program.clone()];
    for a in &cfg.args {
        argv.push(cstring(a)?);
    }
    let envp = cfg
        .env
        .iter()
        .map(|(k, v)| cstring(&format!("{k}={v}")))
        .collect::<Result<Vec<_>, _>>()?;
    let (exec_r, exec_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).step(|| "pipe".into())?;
    let assign = match cfg.code_root {
        Some(_) => Some(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).step(|| "pipe".into())?),
        None => None,
    };
    // The runtime's user namespace is mapped by init, which is still root
    // of the host's: the runtime says when it has unshared, init answers
    // when the maps are written.
    let (unshared_r, unshared_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).step(|| "pipe".into())?;
    let (mapped_r, mapped_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).step(|| "pipe".into())?;
    // SAFETY: init is single-threaded (a fork of the single-threaded monitor).
    match unsafe { nix::unistd::fork() }.step(|| "fork".into())? {
        ForkResult::Child => {
            drop(exec_r);
            drop((unshared_r, mapped_w));
            if cfg.user_namespace
                && let Err(errno) = enter_user_namespace(&unshared_w, &mapped_r)
            {
                let _ = nix::unistd::write(&exec_w, &(errno as i32).to_ne_bytes());
                // SAFETY: see below.
                unsafe { libc::_exit(127) }
            }
            drop((unshared_w, mapped_r));
            if let Some((read, _)) = &assign {
                // SAFETY: both descriptors are open; dup2 onto ASSIGN_FD
                // (the control socket's number, close-on-exec and unused
                // here) leaves the copy without close-on-exec.
                if unsafe { libc::dup2(read.as_raw_fd(), ASSIGN_FD) } < 0 {
                    let _ = nix::unistd::write(&exec_w, &(Errno::last() as i32).to_ne_bytes());
                    // SAFETY: see below.
                    unsafe { libc::_exit(127) }
                }
            }
            let errno = become_runtime(cfg, filters, &program, &argv, &envp);
            let _ = nix::unistd::write(&exec_w, &(errno as i32).to_ne_bytes());
            // SAFETY: `_exit` ends this forked child without running the
            // parent's atexit handlers or flushing its stdio buffers twice.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            drop(exec_w);
            drop((unshared_w, mapped_r));
            if cfg.user_namespace {
                map_user_namespace(cfg, child, &unshared_r, mapped_w)?;
            }
            drop(unshared_r);
            let mut buf = [0u8; 4];
            let exec_failed = matches!(nix::unistd::read(&exec_r, &mut buf), Ok(4));
            if exec_failed {
                send(ctl, &Message::ExecFailed(i32::from_ne_bytes(buf)), &[]);
            }
            drop(exec_r);
            if let Some((read, write)) = assign {
                drop(read);
                if !exec_failed {
                    // The runtime reads end of file (and exits) if this fails.
                    if let Err(e) = take_assignment(ctl, write) {
                        send(ctl, &Message::Failed(e.to_string()), &[]);
                    }
                }
            }
            let status = reap_until(child);
            send(ctl, &Message::Exited(status), &[]);
            Ok(0)
        }
    }
}

/// Waits for the server to assign this prepared sandbox to a function, then
/// binds its code, sizes `/tmp` and hands the runtime its environment.
fn take_assignment(ctl: &OwnedFd, runtime: OwnedFd) -> Result<(), StepError> {
    let a: Assignment = receive(ctl, "the assignment")?;
    if a.code.is_empty() || a.code.contains('/') || a.code == "." || a.code == ".." {
        return Err(StepError {
            step: format!("assignment names no code directory: {:?}", a.code),
            errno: Errno::EINVAL,
        });
    }
    let none: Option<&str> = None;
    mount(
        none,
        "/tmp",
        none,
        MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("size={}m,mode=1777", a.tmp_mb).as_str()),
    )
    .step(|| "sizing /tmp".into())?;
    bind_ro(&Path::new(CODE_HOLD).join(&a.code), Path::new("/var/task"))?;
    umount2(CODE_HOLD, MntFlags::MNT_DETACH).step(|| "unmounting the code root".into())?;
    let env: serde_json::Map<String, serde_json::Value> = a
        .env
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    let mut line = serde_json::to_vec(&env).map_err(|e| StepError {
        step: format!("encoding the environment: {e}"),
        errno: Errno::EINVAL,
    })?;
    line.push(b'\n');
    let mut out = fs::File::from(runtime);
    std::io::Write::write_all(&mut out, &line).step(|| "handing the runtime its environment".into())
}

fn cstring(s: &str) -> Result<CString, StepError> {
    CString::new(s).map_err(|_| StepError {
        step: format!("{s:?} contains a NUL byte"),
        errno: Errno::EINVAL,
    })
}

/// The host uid and gid the sandbox's 993 is in its user namespace: an id
/// no host account uses, so a runtime that regained privileges in its
/// namespace is still nobody outside it.
const HOST_ID_BASE: u32 = 100_000;

/// The runtime's side: a user namespace of its own, waiting for init to
/// map it.
fn enter_user_namespace(unshared: &OwnedFd, mapped: &OwnedFd) -> Result<(), Errno> {
    unshare(CloneFlags::CLONE_NEWUSER)?;
    nix::unistd::write(unshared, b"u")?;
    let mut b = [0u8; 1];
    match nix::unistd::read(mapped, &mut b)? {
        1 => Ok(()),
        _ => Err(Errno::EPERM),
    }
}

/// Init's side: maps the sandbox's uid and gid (and nothing else) to
/// unprivileged host ids in the runtime's new user namespace.
fn map_user_namespace(
    cfg: &JailConfig,
    runtime: Pid,
    unshared: &OwnedFd,
    mapped: OwnedFd,
) -> Result<(), StepError> {
    let mut b = [0u8; 1];
    if nix::unistd::read(unshared, &mut b).step(|| "waiting for the user namespace".into())? != 1 {
        // The runtime failed before unsharing; its exec error tells why.
        return Ok(());
    }
    for (file, id) in [("uid_map", cfg.uid), ("gid_map", cfg.gid)] {
        let line = format!("{id} {} 1\n", HOST_ID_BASE + id);
        fs::write(format!("/proc/{runtime}/{file}"), line)
            .step(|| format!("writing the runtime's {file}"))?;
    }
    nix::unistd::write(&mapped, b"m").step(|| "releasing the runtime".into())?;
    Ok(())
}

/// Drops everything the runtime must not have, then executes it. Returns
/// only on failure, with the reason.
fn become_runtime(
    cfg: &JailConfig,
    filters: &[seccompiler::BpfProgram],
    program: &CString,
    argv: &[CString],
    envp: &[CString],
) -> Errno {
    let run = || -> nix::Result<std::convert::Infallible> {
        nix::unistd::setsid()?;
        // Under memory pressure the host's OOM killer takes function code
        // before the server (raising the score needs no privilege).
        let _ = fs::write("/proc/self/oom_score_adj", "500");
        use nix::sys::resource::{Resource, setrlimit};
        setrlimit(Resource::RLIMIT_NOFILE, cfg.nofile, cfg.nofile)?;
        setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
        nix::unistd::chdir(cfg.cwd.as_str())?;
        let (uid, gid) = (Uid::from_raw(cfg.uid), Gid::from_raw(cfg.gid));
        nix::unistd::setgroups(&[])?;
        nix::unistd::setresgid(gid, gid, gid)?;
        // Leaving uid 0 for a non-zero uid clears every capability.
        nix::unistd::setresuid(uid, uid, uid)?;
        nix::sys::prctl::set_no_new_privs()?;
        for f in filters {
            seccompiler::apply_filter(f).map_err(|_| Errno::EPERM)?;
        }
        nix::unistd::execve(program, argv, envp)
    };
    match run() {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// Reaps every child until `main` exits; returns its raw wait status.
fn reap_until(main: Pid) -> i32 {
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == main => return (code & 0xff) << 8,
            Ok(WaitStatus::Signaled(pid, sig, core)) if pid == main => {
                return sig as i32 | if core { 0x80 } else { 0 };
            }
            Err(Errno::EINTR) | Ok(_) => {}
            Err(_) => return 0,
        }
    }
}
