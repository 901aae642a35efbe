//! The jail: an execution environment in its own namespaces, root
//! filesystem, cgroup, user and seccomp filter.
//!
//! The server side ([`JailSpec`], used by [`crate::Sandbox::spawn_jailed`])
//! starts a helper process (the `nimbus` binary itself, run as
//! `nimbus __jail`, which calls [`main`]), sends it a `JailConfig` over a
//! `SOCK_SEQPACKET` control socket and receives back, over the same socket,
//! the TCP listeners the helper bound inside the sandbox's network namespace
//! (the Runtime API and the nimbus endpoint are served on them, so only
//! that sandbox can reach them), then whether the runtime could be executed
//! and finally the runtime's wait status. See `inside.rs` for the layers.
//!
//! A jail with egress ([`JailSpec::network`]) waits, after `Listening`, for
//! the server to add its `eth0` ([`crate::netpool`]) and send a `Network`
//! message, configures the interface and only then starts the runtime.

mod inside;
mod net;
mod seccomp;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use inside::main;

/// The descriptor the helper finds its control socket on.
pub(crate) const CONTROL_FD: i32 = 3;

/// Upper bound of one control message (the configuration, with the
/// function's environment, is the largest).
pub(crate) const MAX_MESSAGE: usize = 256 * 1024;

/// Whether this kernel lets a process create a user namespace (the runtime
/// then gets one; see `inside.rs`).
pub(crate) fn user_namespaces_available() -> bool {
    std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|n| n.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0)
}

/// The uid and gid function code runs as (Lambda's `sbx_user1051` is 993).
pub const SANDBOX_UID: u32 = 993;

/// Where a prepared runtime reads its assignment: one line of JSON, an
/// object of the environment variables to set, then end of file. nimbus's
/// bootstraps read it when `NIMBUS_ASSIGN_FD` names this descriptor.
pub const ASSIGN_FD: i32 = 3;

/// How to jail one execution environment.
#[derive(Debug, Clone)]
pub struct JailSpec {
    /// The helper to start: a binary whose `main` calls [`main`] when given
    /// `helper_args`.
    pub helper: PathBuf,
    pub helper_args: Vec<std::ffi::OsString>,
    /// An empty directory the new root is mounted on (inside the sandbox's
    /// own mount namespace, so all sandboxes can share it).
    pub root_dir: PathBuf,
    /// The function's unpacked code, seen read-only at `/var/task`.
    pub code_dir: PathBuf,
    /// Prepared ahead of demand: `/var/task` stays empty until
    /// [`crate::Sandbox::assign`] names a directory under this one (and
    /// `code_dir` is ignored). The runtime waits for its assignment on
    /// [`ASSIGN_FD`].
    pub code_root: Option<PathBuf>,
    /// The runtime's bootstraps, seen read-only at `/var/runtime`.
    pub runtime_dir: PathBuf,
    /// Host directories seen read-only at the same path (interpreters
    /// outside `/usr`).
    pub ro_paths: Vec<PathBuf>,
    /// Size of the private `/tmp` (`EphemeralStorage`), in MB.
    pub tmp_mb: u32,
    pub hostname: String,
    /// Loopback ports to listen on inside the sandbox; the listeners are
    /// handed back in this order.
    pub listen: Vec<u16>,
    /// The cgroup files the helper writes its pid to before anything else,
    /// so every process of the sandbox is accounted and limited.
    pub cgroup_procs: Vec<PathBuf>,
    /// `RLIMIT_NOFILE` of the runtime.
    pub nofile: u64,
    /// Where the sandbox's egress comes from; `None` leaves it only
    /// loopback (the `nimbus:network=none` tag).
    pub network: Option<Arc<crate::netpool::NetPool>>,
}

/// What the helper is told (the serialized form of a [`JailSpec`] and the
/// program to run).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct JailConfig {
    pub(crate) program: String,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) cwd: String,
    pub(crate) root_dir: PathBuf,
    pub(crate) code_dir: PathBuf,
    pub(crate) code_root: Option<PathBuf>,
    pub(crate) runtime_dir: PathBuf,
    pub(crate) ro_paths: Vec<PathBuf>,
    pub(crate) tmp_mb: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) hostname: String,
    pub(crate) listen: Vec<u16>,
    pub(crate) cgroup_procs: Vec<PathBuf>,
    pub(crate) nofile: u64,
    /// Whether the runtime gets a user namespace of its own.
    pub(crate) user_namespace: bool,
    /// Whether to wait for a [`Network`] message before starting the
    /// runtime.
    pub(crate) network: bool,
}

/// What the server tells a jail with egress once its `eth0` exists.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Network {
    pub(crate) address: Ipv4Addr,
    pub(crate) prefix_len: u8,
    pub(crate) gateway: Ipv4Addr,
}

/// What the helper tells the server.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Message {
    /// The listeners are attached to this message, in the order asked.
    Listening,
    /// Setting up the jail failed at this step.
    Failed(String),
    /// `execve` of the runtime failed with this errno.
    ExecFailed(i32),
    /// The runtime exited with this raw wait status.
    Exited(i32),
}

/// What a prepared sandbox is given to become a function's environment
/// (server to jail, after the configuration).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Assignment {
    /// A directory name under the jail's `code_root`, bound at `/var/task`.
    pub(crate) code: String,
    pub(crate) tmp_mb: u32,
    /// The runtime's complete environment.
    pub(crate) env: Vec<(String, String)>,
}
