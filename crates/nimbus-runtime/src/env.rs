//! One execution environment: a sandboxed runtime process, the Runtime API
//! endpoint only it is given, and the hand-off of invocations to it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use nimbus_sandbox::{Sandbox, SandboxSpec};
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::logs::Capture;

/// An invocation handed to the runtime by `GET /invocation/next`.
pub(crate) struct Dispatch {
    pub(crate) request_id: String,
    pub(crate) payload: Bytes,
    pub(crate) timeout_ms: u64,
    pub(crate) function_arn: String,
    pub(crate) trace_id: String,
    pub(crate) client_context: Option<String>,
    pub(crate) cognito_identity: Option<String>,
    /// Told when the runtime has received the event, with the output it
    /// wrote before asking for it (module import on a cold start), which
    /// belongs before START.
    pub(crate) delivered: oneshot::Sender<(Instant, Vec<crate::logs::LogLine>)>,
    pub(crate) reply: oneshot::Sender<Reply>,
}

/// What the runtime answered for one invocation.
#[derive(Debug)]
pub(crate) enum Reply {
    Response(Bytes),
    Error { error_type: String, body: Bytes },
    ResponseTooLarge,
}

/// An error the runtime reported from its init phase (`/init/error`).
#[derive(Debug, Clone)]
pub(crate) struct InitError {
    pub(crate) error_type: String,
    pub(crate) body: Bytes,
}

/// Why an environment ended.
#[derive(Debug, Clone)]
pub(crate) enum Death {
    /// The first process exited by itself (`exit status 1`, `signal: killed`).
    Exited(String),
    /// nimbus killed it (timeout, retirement, shutdown).
    Killed,
    /// It could not be started at all.
    SpawnFailed(String),
}

/// The state the Runtime API handlers share with the invoking side.
pub(crate) struct Shared {
    pub(crate) inbox: tokio::sync::Mutex<mpsc::Receiver<Dispatch>>,
    pub(crate) current: Mutex<Option<(String, oneshot::Sender<Reply>)>>,
    pub(crate) init_error: Mutex<Option<InitError>>,
    /// When the runtime first asked for an invocation: the end of init.
    pub(crate) ready_at: OnceLock<Instant>,
    pub(crate) capture: OnceLock<Capture>,
    pub(crate) kill: Notify,
}

/// A live execution environment.
pub(crate) struct Env {
    pub(crate) log_stream: String,
    pub(crate) revision: String,
    pub(crate) started: Instant,
    pub(crate) pid: u32,
    pub(crate) shared: Arc<Shared>,
    inbox_tx: mpsc::Sender<Dispatch>,
    death: watch::Receiver<Option<Death>>,
    /// Init Duration is reported once, on the invocation that started it.
    pub(crate) init_reported: AtomicBool,
    /// Set the moment nimbus decides to kill it, before the process is gone,
    /// so no invocation is handed to an environment on its way out.
    doomed: AtomicBool,
    pub(crate) last_used: Mutex<Instant>,
    /// After this the environment's credentials are too close to expiry
    /// for it to take another invocation.
    usable_until: Instant,
}

impl Env {
    /// Starts the sandbox and its Runtime API endpoint. `spec` is completed
    /// with `AWS_LAMBDA_RUNTIME_API` here, once the endpoint's port is known.
    pub(crate) async fn start(
        mut spec: SandboxSpec,
        log_stream: String,
        revision: String,
        usable_until: Instant,
    ) -> std::io::Result<Arc<Env>> {
        let (inbox_tx, inbox_rx) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            inbox: tokio::sync::Mutex::new(inbox_rx),
            current: Mutex::new(None),
            init_error: Mutex::new(None),
            ready_at: OnceLock::new(),
            capture: OnceLock::new(),
            kill: Notify::new(),
        });
        let addr = crate::api::serve(shared.clone()).await?;
        spec.env
            .push(("AWS_LAMBDA_RUNTIME_API".into(), addr.to_string()));
        let started = Instant::now();
        let (death_tx, death_rx) = watch::channel(None);
        let pid = match Sandbox::spawn(&spec) {
            Ok((sandbox, pipe)) => {
                let pid = sandbox.pid();
                let _ = shared.capture.set(Capture::new(pipe));
                tokio::spawn(watch_process(sandbox, shared.clone(), death_tx));
                let reader = shared.clone();
                tokio::spawn(async move {
                    if let Some(c) = reader.capture.get() {
                        c.pump().await;
                    }
                });
                pid
            }
            Err(e) => {
                let _ = death_tx.send(Some(Death::SpawnFailed(spawn_message(&spec, &e))));
                0
            }
        };
        Ok(Arc::new(Env {
            log_stream,
            revision,
            started,
            pid,
            shared,
            inbox_tx,
            death: death_rx,
            init_reported: AtomicBool::new(false),
            doomed: AtomicBool::new(false),
            last_used: Mutex::new(Instant::now()),
            usable_until,
        }))
    }

    /// Queues an invocation for the runtime's next `GET /invocation/next`.
    pub(crate) fn dispatch(&self, d: Dispatch) -> bool {
        self.inbox_tx.try_send(d).is_ok()
    }

    /// A receiver that changes when the environment dies.
    pub(crate) fn death(&self) -> watch::Receiver<Option<Death>> {
        self.death.clone()
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.doomed.load(Ordering::Relaxed) || self.death.borrow().is_some()
    }

    /// Kills the environment's processes; the watcher records the death.
    pub(crate) fn kill(&self) {
        self.doomed.store(true, Ordering::Relaxed);
        self.shared.kill.notify_one();
    }

    /// Takes the output captured so far.
    pub(crate) fn take_output(&self) -> Vec<crate::logs::LogLine> {
        self.shared
            .capture
            .get()
            .map(Capture::take)
            .unwrap_or_default()
    }

    /// Whether this environment reports Init Duration now (only once).
    pub(crate) fn claim_init_report(&self) -> bool {
        !self.init_reported.swap(true, Ordering::Relaxed)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_message(spec: &SandboxSpec, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            format!(
                "Couldn't find valid bootstrap(s): [{}]",
                spec.program.display()
            )
        }
        std::io::ErrorKind::PermissionDenied => {
            format!("fork/exec {}: permission denied", spec.program.display())
        }
        _ => format!("fork/exec {}: {e}", spec.program.display()),
    }
}

/// Owns the sandbox: waits for it to exit or for a kill request, then
/// records the death so a waiting invocation learns of it at once.
async fn watch_process(
    mut sandbox: Sandbox,
    shared: Arc<Shared>,
    death: watch::Sender<Option<Death>>,
) {
    let cause = tokio::select! {
        status = sandbox.wait() => Death::Exited(match status {
            Ok(s) => describe_exit(s),
            Err(e) => format!("wait failed: {e}"),
        }),
        () = shared.kill.notified() => {
            sandbox.kill();
            let _ = sandbox.wait().await;
            Death::Killed
        }
    };
    // Whatever else is in the group goes with the first process.
    sandbox.kill();
    let _ = death.send(Some(cause));
}

fn describe_exit(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(9)) => "signal: killed".into(),
        (None, Some(sig)) => format!("signal: {sig}"),
        _ => "unknown exit".into(),
    }
}

/// Whether the flag-style exit reason says the runtime was killed.
pub(crate) fn exited_by_kill(reason: &str) -> bool {
    reason == "signal: killed"
}

/// Tells apart environments that are still usable.
pub(crate) fn usable(env: &Env, revision: &str) -> bool {
    !env.is_dead() && env.revision == revision && Instant::now() < env.usable_until
}
