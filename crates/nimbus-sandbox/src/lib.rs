//! Process isolation for execution environments.
//!
//! Today this is the *plain-process* mode: each environment is a child
//! process in its own process group and session, with a scrubbed
//! environment, its stdout and stderr merged into one pipe that the caller
//! reads as the function's log, a parent-death signal so no runtime outlives
//! the server, and a kill that takes the whole group. Namespaces, cgroups,
//! seccomp and dropped privileges (issue 4) belong here too, behind the same
//! [`Sandbox`] type.
//!
//! This is the only crate where `unsafe` is allowed; each use has a
//! `// SAFETY:` comment.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::net::unix::pipe;

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
}

/// The read end of the sandbox's merged stdout/stderr pipe.
pub type OutputPipe = pipe::Receiver;

impl Sandbox {
    /// Starts the sandbox. Returns it with the read end of its output pipe.
    pub fn spawn(spec: &SandboxSpec) -> io::Result<(Self, OutputPipe)> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let write_err: OwnedFd = write.as_fd().try_clone_to_owned()?;
        let mut cmd = tokio::process::Command::new(&spec.program);
        cmd.args(&spec.args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(write))
            .stderr(Stdio::from(write_err))
            .kill_on_drop(true);
        let std_cmd = cmd.as_std_mut();
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe system calls (setsid, prctl) without
        // allocating or touching locks held by other threads.
        unsafe {
            std_cmd.pre_exec(|| {
                nix::unistd::setsid()?;
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        // The child holds its copies of the write end; dropping `cmd` drops
        // ours, so the pipe reports EOF once every process in it has exited.
        drop(cmd);
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("child exited before its pid was read"))?;
        let output = pipe::Receiver::from_owned_fd(read)?;
        Ok((Self { child, pid }, output))
    }

    /// The process id of the sandbox's first process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Kills every process of the sandbox (its process group). Idempotent.
    pub fn kill(&self) {
        // A pid that fits in i32 is the only kind Linux hands out.
        let pgid = Pid::from_raw(self.pid as i32);
        if let Err(e) = killpg(pgid, Signal::SIGKILL)
            && e != nix::errno::Errno::ESRCH
        {
            tracing::warn!(pid = self.pid, "killpg failed: {e}");
        }
    }

    /// Waits for the first process to exit.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Peak resident memory of the sandbox's process, in bytes, as the
    /// kernel recorded it (`VmHWM`); `None` once it has exited.
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
