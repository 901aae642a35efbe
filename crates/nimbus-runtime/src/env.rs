//! One execution environment: a sandboxed runtime process, the Runtime API
//! endpoint only it is given, and the hand-off of invocations to it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use nimbus_sandbox::cgroup::{Cgroup, CgroupRoot, Limits};
use nimbus_sandbox::jail::JailSpec;
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
    /// Serves the nimbus API inside a jail's network namespace.
    endpoint_task: Option<tokio::task::AbortHandle>,
    /// The jail's cgroup: limits, memory figures, freezing.
    pub(crate) cgroup: Option<Arc<Cgroup>>,
    /// Whether the cgroup is frozen; held while freezing or thawing.
    frozen: Mutex<bool>,
    /// Set while an invocation owns the environment.
    busy: AtomicBool,
    /// Counts claims, so a freeze scheduled at one release can tell that
    /// the environment was used again since.
    claims: std::sync::atomic::AtomicU64,
    /// The CPU share (thousandths of a CPU) applied once init is over;
    /// init runs unthrottled, as Lambda boosts CPU during init.
    cpu_millis: u32,
    boosted: AtomicBool,
}

/// A jail started, not yet adopted as an environment: prepared ahead of
/// demand and assigned later, or for one function right away.
pub(crate) struct Prepared {
    pub(crate) sandbox: Sandbox,
    pipe: nimbus_sandbox::OutputPipe,
    listeners: Vec<std::net::TcpListener>,
    pub(crate) cgroup: Option<Arc<Cgroup>>,
    program: std::path::PathBuf,
    /// When it was started (prepared sandboxes are reaped when stale).
    pub(crate) created: Instant,
    /// Where the code it can be assigned lives (prepared ahead of demand).
    pub(crate) code_root: Option<std::path::PathBuf>,
}

/// Starts a jail in its own cgroup (blocking: run it off the runtime). The
/// cgroup's CPU is unlimited until [`Env::end_init_boost`].
pub(crate) fn prepare(
    spec: &SandboxSpec,
    mut jail: JailSpec,
    limits: Option<CgroupRequest>,
) -> std::io::Result<Prepared> {
    let cgroup = match limits {
        Some((root, name, limits)) => {
            let boosted = Limits {
                cpu_millis: 0,
                ..limits
            };
            Some(Arc::new(root.create(&name, &boosted)?))
        }
        None => None,
    };
    if let Some(cg) = &cgroup {
        jail.cgroup_procs = cg.procs_paths();
    }
    let (sandbox, pipe, listeners) = Sandbox::spawn_jailed(spec, &jail)?;
    Ok(Prepared {
        sandbox,
        pipe,
        listeners,
        cgroup,
        program: spec.program.clone(),
        created: Instant::now(),
        code_root: jail.code_root.clone(),
    })
}

/// Wires a started jail to its environment: the Runtime API and the nimbus
/// API on the listeners it bound.
fn adopt(
    p: Prepared,
    endpoint: Option<crate::engine::EndpointServer>,
    shared: &Arc<Shared>,
    endpoint_task: &mut Option<tokio::task::AbortHandle>,
    cgroup: &mut Option<Arc<Cgroup>>,
) -> std::io::Result<(Sandbox, nimbus_sandbox::OutputPipe, std::path::PathBuf)> {
    *cgroup = p.cgroup;
    let mut listeners = p.listeners.into_iter();
    if let Some(l) = listeners.next() {
        l.set_nonblocking(true)?;
        let l = tokio::net::TcpListener::from_std(l)?;
        crate::api::serve_on(l, shared.clone());
    }
    if let (Some(l), Some(serve)) = (listeners.next(), endpoint) {
        *endpoint_task = Some(serve(l));
    }
    Ok((p.sandbox, p.pipe, p.program))
}

/// A cgroup to create: under which root, its name and its limits.
pub(crate) type CgroupRequest = (Arc<CgroupRoot>, String, Limits);

/// How an environment's sandbox is started.
pub(crate) enum Launch {
    Process(SandboxSpec),
    Jail {
        spec: SandboxSpec,
        jail: Box<JailSpec>,
        endpoint: Option<crate::engine::EndpointServer>,
        /// The cgroup to create for it (the CPU limit is applied once init
        /// is over).
        cgroup: Option<CgroupRequest>,
    },
    /// A prepared jail, already assigned to the function.
    Prepared {
        prepared: Box<Prepared>,
        endpoint: Option<crate::engine::EndpointServer>,
        /// The CPU share applied once init is over.
        cpu_millis: u32,
    },
}

impl Env {
    /// Starts the sandbox and its Runtime API endpoint. A plain-process
    /// spec is completed with `AWS_LAMBDA_RUNTIME_API` here, once the
    /// endpoint's port is known; a jail listens on its own fixed port.
    pub(crate) async fn start(
        launch: Launch,
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
        let started = Instant::now();
        let (death_tx, death_rx) = watch::channel(None);
        let mut endpoint_task = None;
        let mut cgroup: Option<Arc<Cgroup>> = None;
        let mut cpu_millis = 0;
        let spawned = match launch {
            Launch::Process(mut spec) => {
                let addr = crate::api::serve(shared.clone()).await?;
                spec.env
                    .push(("AWS_LAMBDA_RUNTIME_API".into(), addr.to_string()));
                Sandbox::spawn(&spec)
                    .map(|(sandbox, pipe)| (sandbox, pipe, spec.program.clone()))
                    .map_err(|e| spawn_message(&spec.program, &e))
            }
            Launch::Jail {
                spec,
                jail,
                endpoint,
                cgroup: limits,
            } => {
                let program = spec.program.clone();
                cpu_millis = limits.as_ref().map_or(0, |(_, _, l)| l.cpu_millis);
                let jailed = tokio::task::spawn_blocking(move || prepare(&spec, *jail, limits))
                    .await
                    .map_err(std::io::Error::other)?;
                match jailed {
                    Ok(p) => Ok(adopt(
                        p,
                        endpoint,
                        &shared,
                        &mut endpoint_task,
                        &mut cgroup,
                    )?),
                    Err(e) => Err(spawn_message(&program, &e)),
                }
            }
            Launch::Prepared {
                prepared,
                endpoint,
                cpu_millis: millis,
            } => {
                cpu_millis = millis;
                Ok(adopt(
                    *prepared,
                    endpoint,
                    &shared,
                    &mut endpoint_task,
                    &mut cgroup,
                )?)
            }
        };
        let pid = match spawned {
            Ok((sandbox, pipe, program)) => {
                let pid = sandbox.pid();
                let _ = shared.capture.set(Capture::new(pipe));
                tokio::spawn(watch_process(
                    sandbox,
                    program,
                    cgroup.clone(),
                    shared.clone(),
                    death_tx,
                ));
                let reader = shared.clone();
                tokio::spawn(async move {
                    if let Some(c) = reader.capture.get() {
                        c.pump().await;
                    }
                });
                pid
            }
            Err(message) => {
                let _ = death_tx.send(Some(Death::SpawnFailed(message)));
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
            endpoint_task,
            cgroup,
            frozen: Mutex::new(false),
            busy: AtomicBool::new(true),
            claims: std::sync::atomic::AtomicU64::new(0),
            cpu_millis,
            boosted: AtomicBool::new(true),
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

    /// Peak memory of the environment in MB: its cgroup's high-water mark
    /// when jailed, else the first process's `VmHWM`.
    pub(crate) fn peak_memory_mb(&self) -> u64 {
        let bytes = match &self.cgroup {
            Some(cg) => cg.peak_memory_bytes(),
            None => process_peak_bytes(self.pid),
        };
        bytes.map_or(0, |b| b.div_ceil(1024 * 1024))
    }

    /// Whether the kernel killed a process of this environment for using
    /// more memory than its limit.
    pub(crate) fn oom_killed(&self) -> bool {
        self.cgroup.as_ref().is_some_and(|cg| cg.oom_kills() > 0)
    }

    /// Ends the init CPU boost: from now on the environment gets the CPU
    /// share of its memory size.
    pub(crate) fn end_init_boost(&self) {
        if self.boosted.swap(false, Ordering::Relaxed)
            && let Some(cg) = &self.cgroup
            && let Err(e) = cg.set_cpu_limit(self.cpu_millis)
        {
            tracing::warn!("limiting an environment's CPU: {e}");
        }
    }

    /// Claims the environment for an invocation, thawing it if it was
    /// frozen while idle.
    pub(crate) fn claim(&self) {
        self.claims.fetch_add(1, Ordering::SeqCst);
        self.busy.store(true, Ordering::SeqCst);
        let mut frozen = self.frozen.lock().unwrap_or_else(|e| e.into_inner());
        if *frozen {
            if let Some(cg) = &self.cgroup
                && let Err(e) = cg.thaw()
            {
                tracing::warn!("thawing an environment: {e}");
                self.kill();
            }
            *frozen = false;
        }
    }

    /// Marks the environment idle; the caller then freezes it off the
    /// request path with [`Env::freeze_if_idle`].
    pub(crate) fn release(&self) -> u64 {
        self.busy.store(false, Ordering::SeqCst);
        self.claims.load(Ordering::SeqCst)
    }

    /// Whether the environment has stayed idle since the release that
    /// returned `claims`.
    pub(crate) fn idle_since(&self, claims: u64) -> bool {
        !self.busy.load(Ordering::SeqCst) && self.claims.load(Ordering::SeqCst) == claims
    }

    /// Freezes an idle jailed environment so its background threads use no
    /// CPU until the next invocation (blocking: run it off the runtime).
    pub(crate) fn freeze_if_idle(&self) {
        let Some(cg) = &self.cgroup else { return };
        let mut frozen = self.frozen.lock().unwrap_or_else(|e| e.into_inner());
        if *frozen || self.busy.load(Ordering::SeqCst) || self.is_dead() {
            return;
        }
        match cg.freeze() {
            Ok(()) => *frozen = true,
            Err(e) => tracing::debug!("freezing an idle environment: {e}"),
        }
    }

    /// Whether this environment reports Init Duration now (only once).
    pub(crate) fn claim_init_report(&self) -> bool {
        !self.init_reported.swap(true, Ordering::Relaxed)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.kill();
        if let Some(t) = &self.endpoint_task {
            t.abort();
        }
    }
}

fn spawn_message(program: &std::path::Path, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            format!("Couldn't find valid bootstrap(s): [{}]", program.display())
        }
        std::io::ErrorKind::PermissionDenied => {
            format!("fork/exec {}: permission denied", program.display())
        }
        _ => format!("fork/exec {}: {e}", program.display()),
    }
}

/// Owns the sandbox: waits for it to exit or for a kill request, then
/// records the death so a waiting invocation learns of it at once.
async fn watch_process(
    mut sandbox: Sandbox,
    program: std::path::PathBuf,
    cgroup: Option<Arc<Cgroup>>,
    shared: Arc<Shared>,
    death: watch::Sender<Option<Death>>,
) {
    let cause = tokio::select! {
        status = sandbox.wait() => match (status, sandbox.exec_error()) {
            (_, Some(e)) => Death::SpawnFailed(spawn_message(&program, e)),
            (Ok(s), None) => Death::Exited(describe_exit(s)),
            (Err(e), None) => Death::Exited(format!("wait failed: {e}")),
        },
        () = shared.kill.notified() => {
            sandbox.kill();
            if let Some(cg) = cgroup.clone() {
                // A frozen process dies only once thawed; this thaws too.
                let _ = tokio::task::spawn_blocking(move || cg.kill_all()).await;
            }
            let _ = sandbox.wait().await;
            Death::Killed
        }
    };
    // Whatever else is in the group goes with the first process.
    sandbox.kill();
    if let Some(cg) = cgroup {
        // Frozen stragglers too; the directories go when the Env is dropped.
        let _ = tokio::task::spawn_blocking(move || cg.kill_all()).await;
    }
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

fn process_peak_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Whether the flag-style exit reason says the runtime was killed.
pub(crate) fn exited_by_kill(reason: &str) -> bool {
    reason == "signal: killed"
}

/// Tells apart environments that are still usable.
pub(crate) fn usable(env: &Env, revision: &str) -> bool {
    !env.is_dead() && env.revision == revision && Instant::now() < env.usable_until
}
