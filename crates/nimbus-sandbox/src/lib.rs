//! Isolation for execution environments, in two modes behind one
//! [`Sandbox`] type.
//!
//! - **Jailed** ([`Sandbox::spawn_jailed`], [`jail`]): the default as root on
//!   Linux. Its own mount, PID, IPC, UTS and network namespaces, a root
//!   filesystem holding only read-only system directories, the runtime and
//!   the function's code, a private size-limited `/tmp`, a cgroup
//!   ([`cgroup`]) enforcing memory, CPU and pids, an unprivileged uid, no
//!   new privileges and a seccomp filter.
//!   With egress (the default), a veth pair to the host ([`netpool`]);
//!   without, only loopback.
//! - **Plain process** ([`Sandbox::spawn`]): for unprivileged development; a
//!   child process in its own session, nothing more.
//!
//! Both: a scrubbed environment, stdout and stderr merged into one pipe that
//! the caller reads as the function's log, a parent-death signal so no
//! runtime outlives the server, and a kill that takes the whole group.
//!
//! This is the only crate where `unsafe` is allowed; each use has a
//! `// SAFETY:` comment.

pub mod cgroup;
pub mod jail;
mod netlink;
pub mod netpool;

use std::ffi::OsString;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::sys::socket::{
    AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg, sendmsg, socketpair,
};
use nix::unistd::Pid;
use tokio::net::unix::pipe;

use crate::jail::{JailConfig, JailSpec, Message};
use crate::netpool::NetLease;

/// What to run in a new sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The complete environment: nothing is inherited from the server.
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
}

/// A running sandbox: one process group.
#[derive(Debug)]
pub struct Sandbox {
    child: tokio::process::Child,
    pid: u32,
    /// The jail's control socket (jailed mode only).
    control: Option<OwnedFd>,
    exec_error: Option<io::Error>,
    /// The jail's veth pair and address (jailed mode with egress); after
    /// `child` in drop order, so the pair goes once the process is killed.
    net: Option<NetLease>,
}

/// The read end of the sandbox's merged stdout/stderr pipe.
pub type OutputPipe = pipe::Receiver;

/// How long a jail may take to report its listeners.
const JAIL_SETUP_TIMEOUT: Duration = Duration::from_secs(10);

impl Sandbox {
    /// Starts a plain-process sandbox. Returns it with the read end of its
    /// output pipe.
    pub fn spawn(spec: &SandboxSpec) -> io::Result<(Self, OutputPipe)> {
        let mut cmd = tokio::process::Command::new(&spec.program);
        cmd.args(&spec.args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.cwd);
        start(cmd, None)
    }

    /// Starts a jailed sandbox running `spec` (whose paths are as seen
    /// inside the jail). Blocks until the jail is set up and listening, and
    /// returns the listeners it bound inside its network namespace, in the
    /// order of `jail.listen`.
    pub fn spawn_jailed(
        spec: &SandboxSpec,
        jail: &JailSpec,
    ) -> io::Result<(Self, OutputPipe, Vec<std::net::TcpListener>)> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        let config = JailConfig {
            program: spec.program.to_string_lossy().into_owned(),
            args: spec
                .args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            env: spec.env.clone(),
            cwd: spec.cwd.to_string_lossy().into_owned(),
            root_dir: jail.root_dir.clone(),
            code_dir: jail.code_dir.clone(),
            code_root: jail.code_root.clone(),
            runtime_dir: jail.runtime_dir.clone(),
            ro_paths: jail.ro_paths.clone(),
            tmp_mb: jail.tmp_mb,
            uid: jail::SANDBOX_UID,
            gid: jail::SANDBOX_UID,
            hostname: jail.hostname.clone(),
            listen: jail.listen.clone(),
            cgroup_procs: jail.cgroup_procs.clone(),
            nofile: jail.nofile,
            network: jail.network.is_some(),
            user_namespace: jail::user_namespaces_available(),
        };
        let mut cmd = tokio::process::Command::new(&jail.helper);
        cmd.args(&jail.helper_args).env_clear().current_dir("/");
        let (mut sandbox, output) = start(cmd, Some(theirs.as_raw_fd()))?;
        drop(theirs);
        send_json(&ours, &config)?;
        set_receive_timeout(&ours, Some(JAIL_SETUP_TIMEOUT))?;
        let (msg, fds) = receive(&ours)?;
        set_receive_timeout(&ours, None)?;
        match msg {
            Message::Listening if fds.len() == jail.listen.len() => {}
            Message::Failed(step) => {
                return Err(io::Error::other(format!("setting up the sandbox: {step}")));
            }
            other => {
                return Err(io::Error::other(format!(
                    "unexpected message from the sandbox: {other:?}"
                )));
            }
        }
        if let Some(pool) = &jail.network {
            // The jail builds its root meanwhile and waits for this.
            let lease = pool.attach(sandbox.pid)?;
            let net = jail::Network {
                address: lease.address(),
                prefix_len: 30,
                gateway: lease.gateway(),
            };
            sandbox.net = Some(lease);
            send_json(&ours, &net)?;
        }
        sandbox.control = Some(ours);
        let listeners = fds.into_iter().map(std::net::TcpListener::from).collect();
        Ok((sandbox, output, listeners))
    }

    /// Turns a sandbox prepared ahead of demand (see
    /// [`JailSpec::code_root`]) into a function's environment: `code` (a
    /// directory under the code root) appears read-only at `/var/task`,
    /// `/tmp` gets its size, and the waiting runtime its environment.
    pub fn assign(&self, code: &str, tmp_mb: u32, env: &[(String, String)]) -> io::Result<()> {
        let ctl = self
            .control
            .as_ref()
            .ok_or_else(|| io::Error::other("only a jailed sandbox can be assigned"))?;
        send_json(
            ctl,
            &jail::Assignment {
                code: code.to_string(),
                tmp_mb,
                env: env.to_vec(),
            },
        )
    }

    /// The process id of the sandbox's first process (in jailed mode, the
    /// jail's monitor).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The sandbox's own address on its `eth0` (jailed with egress).
    pub fn address(&self) -> Option<std::net::Ipv4Addr> {
        self.net.as_ref().map(NetLease::address)
    }

    /// Takes the sandbox's `eth0` away (a sandbox prepared with egress,
    /// assigned to a function without): when this returns, only loopback
    /// is left.
    pub fn remove_network(&mut self) -> io::Result<()> {
        match self.net.take() {
            Some(lease) => lease.delete_now(),
            None => Ok(()),
        }
    }

    /// Kills every process of the sandbox. Idempotent.
    pub fn kill(&self) {
        // A pid that fits in i32 is the only kind Linux hands out.
        let pgid = Pid::from_raw(self.pid as i32);
        if let Err(e) = killpg(pgid, Signal::SIGKILL)
            && e != nix::errno::Errno::ESRCH
        {
            tracing::warn!(pid = self.pid, "killpg failed: {e}");
        }
    }

    /// Waits for the sandbox to end. In jailed mode this is the runtime's
    /// own exit status when the jail reported it.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.child.wait().await?;
        let Some(ctl) = &self.control else {
            return Ok(status);
        };
        let mut runtime_status = None;
        while let Ok((msg, _)) = receive_nonblocking(ctl) {
            match msg {
                Message::Exited(raw) => runtime_status = Some(ExitStatus::from_raw(raw)),
                Message::ExecFailed(errno) => {
                    self.exec_error = Some(io::Error::from_raw_os_error(errno));
                }
                Message::Failed(step) => {
                    self.exec_error =
                        Some(io::Error::other(format!("setting up the sandbox: {step}")));
                }
                Message::Listening => {}
            }
        }
        Ok(runtime_status.unwrap_or(status))
    }

    /// Why the runtime could not be executed, once [`Sandbox::wait`] has
    /// returned (jailed mode; in plain-process mode `spawn` fails instead).
    pub fn exec_error(&self) -> Option<&io::Error> {
        self.exec_error.as_ref()
    }

    /// Peak resident memory of the sandbox's first process, in bytes, as
    /// the kernel recorded it (`VmHWM`); `None` once it has exited. Jailed
    /// sandboxes are measured by their cgroup instead.
    pub fn peak_memory_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns `cmd` in a new session with a scrubbed environment, its output
/// merged into one pipe, and (jailed mode) the control socket on fd 3.
fn start(
    mut cmd: tokio::process::Command,
    control: Option<RawFd>,
) -> io::Result<(Sandbox, OutputPipe)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let write_err: OwnedFd = write.as_fd().try_clone_to_owned()?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::from(write_err))
        .kill_on_drop(true);
    let std_cmd = cmd.as_std_mut();
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe system calls (setsid, prctl, dup2, fcntl)
    // without allocating or touching locks held by other threads.
    unsafe {
        std_cmd.pre_exec(move || {
            nix::unistd::setsid()?;
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            if let Some(fd) = control {
                if fd == jail::CONTROL_FD {
                    // dup2 onto itself would keep close-on-exec set.
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, jail::CONTROL_FD) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    // The child holds its copies of the write end; `cmd` (with ours) is
    // dropped once it has spawned, so the pipe reports EOF once every
    // process in it has exited.
    let child = spawn_from_lasting_thread(cmd)?;
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("child exited before its pid was read"))?;
    let output = pipe::Receiver::from_owned_fd(read)?;
    Ok((
        Sandbox {
            child,
            pid,
            control: None,
            exec_error: None,
            net: None,
        },
        output,
    ))
}

/// Spawns `cmd` (then drops it) on a thread that lives as long as the
/// process.
///
/// The parent-death signal `start` sets is sent when the *thread* that
/// forked the child exits, not the whole process (prctl(2)). Sandboxes are
/// started from tokio's blocking pool, whose threads exit after 10 s
/// without work: spawned there, a sandbox was SIGKILLed 10 s after its
/// spawning thread last had work, in the middle of a long invocation or
/// while idle and warm.
fn spawn_from_lasting_thread(cmd: tokio::process::Command) -> io::Result<tokio::process::Child> {
    type Reply = std::sync::mpsc::SyncSender<io::Result<tokio::process::Child>>;
    type Job = (tokio::process::Command, tokio::runtime::Handle, Reply);
    static SPAWNER: std::sync::OnceLock<std::sync::mpsc::Sender<Job>> = std::sync::OnceLock::new();
    let gone = || io::Error::other("the sandbox spawner thread is gone");
    // tokio registers the child with the runtime it is spawned in.
    let handle = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
    let spawner = SPAWNER.get_or_init(|| {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        // If the thread cannot start, `queue` is dropped and every send
        // below fails.
        let _ = std::thread::Builder::new()
            .name("nimbus-sandbox-spawner".into())
            .spawn(move || {
                for (mut cmd, handle, reply) in queue {
                    let _runtime = handle.enter();
                    let child = cmd.spawn();
                    drop(cmd);
                    let _ = reply.send(child);
                }
            });
        jobs
    });
    let (reply, result) = std::sync::mpsc::sync_channel(1);
    spawner.send((cmd, handle, reply)).map_err(|_| gone())?;
    result.recv().map_err(|_| gone())?
}

/// Sends one control message: `value` as JSON.
fn send_json(fd: &OwnedFd, value: &impl serde::Serialize) -> io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    if bytes.len() > jail::MAX_MESSAGE {
        return Err(io::Error::other("control message too large"));
    }
    sendmsg::<()>(
        fd.as_raw_fd(),
        &[IoSlice::new(&bytes)],
        &[],
        MsgFlags::empty(),
        None,
    )?;
    Ok(())
}

fn set_receive_timeout(fd: &OwnedFd, timeout: Option<Duration>) -> io::Result<()> {
    let tv = timeout.map_or(nix::sys::time::TimeVal::new(0, 0), |t| {
        nix::sys::time::TimeVal::new(t.as_secs() as i64, i64::from(t.subsec_micros()))
    });
    nix::sys::socket::setsockopt(fd, nix::sys::socket::sockopt::ReceiveTimeout, &tv)?;
    Ok(())
}

fn receive(fd: &OwnedFd) -> io::Result<(Message, Vec<OwnedFd>)> {
    receive_with(fd, MsgFlags::empty())
}

fn receive_nonblocking(fd: &OwnedFd) -> io::Result<(Message, Vec<OwnedFd>)> {
    receive_with(fd, MsgFlags::MSG_DONTWAIT)
}

fn receive_with(fd: &OwnedFd, flags: MsgFlags) -> io::Result<(Message, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut cmsg = nix::cmsg_space!([RawFd; 8]);
    let (n, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            fd.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            flags | MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut fds = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = c {
                for raw in received {
                    // SAFETY: the kernel just installed `raw` in this process
                    // for this message; nothing else owns it.
                    fds.push(unsafe { std::os::fd::FromRawFd::from_raw_fd(raw) });
                }
            }
        }
        (msg.bytes, fds)
    };
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the sandbox closed its control socket",
        ));
    }
    let msg = serde_json::from_slice(&buf[..n]).map_err(io::Error::other)?;
    Ok((msg, fds))
}
