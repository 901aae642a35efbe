//! Warm pools, concurrency and the life of one invocation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nimbus_core::{LambdaError, LambdaResult, RuntimeId};
use nimbus_sandbox::SandboxSpec;
use nimbus_sandbox::cgroup::{CgroupRoot, Limits, cpu_millis_for_memory};
use nimbus_sandbox::jail::JailSpec;
use tokio::sync::{mpsc, oneshot};

use crate::budget::{EnvironmentStats, MemoryBudget, Plan, Reservation};
use crate::catalog::RuntimeCatalog;
use crate::env::{Death, Dispatch, Env, Launch, Reply};
use crate::logs::{self, LogBatch, LogLine, now_ms};

mod concurrency;
mod spares;
pub use concurrency::{ProvisionedState, ProvisionedStatus};

/// How long a runtime may take from start to its first
/// `GET /invocation/next` (Lambda's init phase limit).
const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a new environment may wait for evicted ones to be gone before
/// its invocation is refused (a killed process is reaped in milliseconds).
const EVICTION_WAIT: Duration = Duration::from_secs(10);

/// The root key pair of the account (read by `nimbus serve` from the data
/// directory).
#[derive(Debug, Clone)]
pub struct RootCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// Temporary credentials for an execution environment.
#[derive(Debug, Clone)]
pub struct TempCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// How long they stay valid from now.
    pub valid_for: Duration,
}

/// Where environments get their execution role's credentials (IAM/STS,
/// implemented above this crate).
pub trait CredentialSource: std::fmt::Debug + Send + Sync + 'static {
    /// Credentials for `role_arn`, with `session_name` in the session ARN;
    /// `None` if the role cannot be assumed.
    fn issue(&self, role_arn: &str, session_name: &str) -> Option<TempCredentials>;
}

/// Environments are not reused within this margin of their credentials'
/// expiry, so a function never runs with credentials about to lapse.
const CREDENTIAL_MARGIN: Duration = Duration::from_secs(15 * 60);

/// Settings of the engine, fixed at start.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where the bootstraps are written.
    pub runtime_dir: PathBuf,
    pub region: String,
    /// The URL functions reach nimbus at (`AWS_ENDPOINT_URL`).
    pub endpoint_url: String,
    /// Issues each environment its execution role's credentials.
    pub credentials: Arc<dyn CredentialSource>,
    /// How long an idle environment is kept warm.
    pub keep_alive: Duration,
    /// Invocations that may run at once, across all functions.
    pub account_concurrency: u32,
    /// The most configured memory (MemorySize, in MB) that live
    /// environments may add up to; idle ones are evicted to stay under it.
    pub memory_budget_mb: u64,
    pub catalog: RuntimeCatalog,
    /// How environments are isolated from the host and from each other.
    pub isolation: Isolation,
    /// Whether jailed cold starts may use sandboxes prepared ahead of
    /// demand (one spare per runtime in use).
    pub prepared_sandboxes: bool,
}

/// How execution environments are isolated.
#[derive(Debug, Clone)]
pub enum Isolation {
    /// Plain child processes: for unprivileged development only.
    Process,
    /// A jail per environment (`nimbus_sandbox::jail`).
    Jail(JailSettings),
}

/// Settings of jailed mode.
#[derive(Debug, Clone)]
pub struct JailSettings {
    /// The jail helper and its arguments (`nimbus __jail`).
    pub helper: PathBuf,
    pub helper_args: Vec<std::ffi::OsString>,
    /// An empty directory each jail mounts its root on, inside its own
    /// mount namespace.
    pub root_dir: PathBuf,
    /// The port nimbus's API is served on inside each jail: the server's
    /// own, so `AWS_ENDPOINT_URL` is the same inside and out.
    pub endpoint_port: u16,
    /// Where each jail gets its cgroup (memory, CPU and pids limits,
    /// freezing); `None` where cgroups are unavailable.
    pub cgroups: Option<Arc<CgroupRoot>>,
    /// Where jails get network egress (a veth pair each); `None` leaves
    /// every jail with loopback only.
    pub network: Option<Arc<nimbus_sandbox::netpool::NetPool>>,
}

/// Serves nimbus's API on a listener bound inside a jail; the task is
/// aborted when the environment ends.
pub type EndpointServer =
    Arc<dyn Fn(std::net::TcpListener) -> tokio::task::AbortHandle + Send + Sync>;

/// Where a jailed runtime finds the Runtime API (Lambda's own address),
/// unless the endpoint already uses that port.
const RUNTIME_API_PORT: u16 = 9001;

/// `RLIMIT_NOFILE` of a jailed runtime (Lambda's limit).
const JAIL_NOFILE: u64 = 1024;

/// Processes and threads a jail may have at once (Lambda's limit).
const JAIL_PIDS: u32 = 1024;

/// How long an environment stays idle before it is frozen. Lambda freezes
/// at once; freezing a cgroup costs a few hundred microseconds of kernel
/// time (and thawing a frozen one on the next invoke more), which at once
/// would be paid by every warm invoke under steady traffic. Background
/// threads get this long after an invocation, then no CPU until the next.
const FREEZE_AFTER: Duration = Duration::from_millis(100);

/// Marks an environment idle and freezes it (jailed) once it has stayed
/// idle for [`FREEZE_AFTER`], off the response's path.
fn release_and_freeze(env: &Arc<Env>) {
    let claims = env.release();
    if env.cgroup.is_some() {
        let idle = env.clone();
        tokio::spawn(async move {
            tokio::time::sleep(FREEZE_AFTER).await;
            if idle.idle_since(claims) {
                let _ = tokio::task::spawn_blocking(move || idle.freeze_if_idle()).await;
            }
        });
    }
}

fn runtime_api_port(j: &JailSettings) -> u16 {
    if j.endpoint_port == RUNTIME_API_PORT {
        RUNTIME_API_PORT + 1
    } else {
        RUNTIME_API_PORT
    }
}

/// What the engine needs to know about a function to run it.
#[derive(Debug, Clone)]
pub struct FunctionHandle {
    pub name: String,
    pub arn: String,
    pub runtime: RuntimeId,
    pub handler: String,
    pub memory_mb: u32,
    pub timeout_s: u32,
    pub environment: Vec<(String, String)>,
    /// The execution role whose credentials the environment gets.
    pub role: String,
    /// The unpacked code (`LAMBDA_TASK_ROOT`).
    pub code_dir: PathBuf,
    /// Size of `/tmp` (`EphemeralStorage`).
    pub ephemeral_storage_mb: u32,
    /// Changes whenever code or configuration change; environments of an
    /// older revision are not reused.
    pub revision: String,
    /// `$LATEST` or a published version's number: each version has its
    /// own environments.
    pub version: String,
    /// Whether its environments may reach the network (jailed mode); off
    /// with the `nimbus:network=none` tag, leaving only loopback.
    pub egress: bool,
}

impl FunctionHandle {
    fn log_group(&self) -> String {
        format!("/aws/lambda/{}", self.name)
    }

    /// The key of this version's environments.
    fn pool_key(&self) -> String {
        version_key(&self.name, &self.version)
    }
}

/// The key of a version's environments: the function's name for
/// `$LATEST`, `name:version` for a published version.
fn version_key(function: &str, version: &str) -> String {
    if version == "$LATEST" {
        function.to_string()
    } else {
        format!("{function}:{version}")
    }
}

/// One invocation as the caller asked for it.
#[derive(Debug, Clone)]
pub struct InvokeRequest {
    pub request_id: String,
    pub payload: Bytes,
    /// Decoded `X-Amz-Client-Context` (JSON text).
    pub client_context: Option<String>,
    /// The ARN the caller invoked (an alias's, say), as the runtime's
    /// `Lambda-Runtime-Invoked-Function-Arn`; the handle's ARN if `None`.
    pub invoked_arn: Option<String>,
    /// The trace header (`Lambda-Runtime-Trace-Id`) to run with, e.g. an
    /// asynchronous event's with its `Lineage`; a fresh one if `None`.
    pub trace_header: Option<String>,
}

/// Measurements of one invocation, as REPORT states them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InvocationMetrics {
    pub duration_ms: f64,
    pub billed_ms: u64,
    pub memory_size_mb: u32,
    pub max_memory_used_mb: u64,
    /// Set on a cold start.
    pub init_ms: Option<f64>,
}

/// The result of an invocation that ran (or tried to): the payload, and
/// whether it is a function error.
#[derive(Debug, Clone)]
pub struct InvokeOutcome {
    pub request_id: String,
    pub payload: Bytes,
    /// `Some("Unhandled")` when the function failed.
    pub function_error: Option<&'static str>,
    /// The error type the runtime reported, e.g. `KeyError`, `Sandbox.Timedout`.
    pub error_type: Option<String>,
    /// The last 4 KB of this invocation's log.
    pub log_tail: String,
    pub metrics: InvocationMetrics,
}

struct Pool {
    idle: Mutex<Vec<Arc<Env>>>,
    retired: AtomicBool,
}

/// Runs invocations in warm or new execution environments.
pub struct Engine {
    config: EngineConfig,
    /// Taken at shutdown: the server it holds refers back to the engine.
    endpoint: Mutex<Option<EndpointServer>>,
    pools: Mutex<HashMap<String, Arc<Pool>>>,
    spares: spares::Spares,
    concurrency: concurrency::Concurrency,
    budget: Arc<MemoryBudget<Env>>,
    log_sink: mpsc::UnboundedSender<LogBatch>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// Outcome of waiting on a runtime.
enum Waited {
    Reply(Reply),
    Timeout,
    Died(Death),
    InitTimeout,
}

impl Engine {
    /// Writes the bootstraps and starts the idle-environment reaper.
    pub fn start(
        config: EngineConfig,
        log_sink: mpsc::UnboundedSender<LogBatch>,
    ) -> std::io::Result<Arc<Self>> {
        write_bootstraps(&config.runtime_dir)?;
        {
            let (catalog, dir) = (config.catalog.clone(), config.runtime_dir.clone());
            std::thread::Builder::new()
                .name("nimbus-pyc".into())
                .spawn(move || catalog.precompile_python(&dir))?;
        }
        let (spares, spare_queue) = spares::Spares::new();
        let engine = Arc::new(Self {
            spares,
            concurrency: concurrency::Concurrency::new(config.account_concurrency),
            budget: MemoryBudget::new(config.memory_budget_mb),
            config,
            endpoint: Mutex::new(None),
            pools: Mutex::new(HashMap::new()),
            log_sink,
        });
        tokio::spawn(spares::run(Arc::downgrade(&engine), spare_queue));
        let weak = Arc::downgrade(&engine);
        let period = (engine.config.keep_alive / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(10));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(engine) = weak.upgrade() else { return };
                engine.reap_idle();
                engine.maintain_provisioned();
            }
        });
        Ok(engine)
    }

    /// Sets how nimbus's API is served inside jails (after the API router
    /// exists; jails started before have no endpoint inside).
    pub fn serve_endpoint_with(&self, server: EndpointServer) {
        *self.endpoint.lock().unwrap_or_else(|e| e.into_inner()) = Some(server);
    }

    /// Whether environments are jailed.
    pub fn is_jailed(&self) -> bool {
        matches!(self.config.isolation, Isolation::Jail(_))
    }

    /// The runtimes this host can run.
    pub fn catalog(&self) -> &RuntimeCatalog {
        &self.config.catalog
    }

    /// The account concurrency limit.
    pub fn account_concurrency(&self) -> u32 {
        self.config.account_concurrency
    }

    /// Live and idle environments, their reserved memory and the budget.
    pub fn environment_stats(&self) -> EnvironmentStats {
        let (live, reserved_mb, evictions) = self.budget.figures();
        let pools: Vec<Arc<Pool>> = self
            .pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let idle = pools
            .iter()
            .map(|p| p.idle.lock().unwrap_or_else(|e| e.into_inner()).len() as u64)
            .sum();
        EnvironmentStats {
            live,
            idle,
            reserved_mb,
            budget_mb: self.budget.limit_mb(),
            evictions,
        }
    }

    /// Environments currently warm and idle, for a function.
    pub fn idle_environments(&self, function: &str) -> usize {
        self.pool(function)
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    fn pool(&self, name: &str) -> Arc<Pool> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Pool {
                    idle: Mutex::new(Vec::new()),
                    retired: AtomicBool::new(false),
                })
            })
            .clone()
    }

    /// Stops reusing a function's environments (its code or configuration
    /// changed, or it was deleted): idle ones are killed now, busy ones when
    /// their invocation ends.
    pub fn retire(&self, name: &str) {
        let pool = self
            .pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if let Some(pool) = pool {
            pool.retired.store(true, Ordering::Relaxed);
            for env in pool
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain(..)
            {
                env.kill();
            }
        }
    }

    /// Kills every environment (server shutdown). Blocks until the jails'
    /// processes are gone.
    pub fn shutdown(&self) {
        self.spares.reap(Duration::ZERO);
        self.endpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let names: Vec<String> = self
            .pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        for n in names {
            self.retire(&n);
        }
        self.shutdown_provisioned();
        // The kills above are carried out by tasks that may not run again
        // before the process exits, and a frozen environment ignores even
        // SIGKILL until thawed: end every jail here, thawing as it goes.
        if let Isolation::Jail(j) = &self.config.isolation
            && let Some(root) = &j.cgroups
            && let Err(e) = root.remove()
        {
            tracing::warn!("stopping the environments' cgroups: {e}");
        }
    }

    /// Stops reusing a published version's environments, provisioned ones
    /// included (the version or its function was deleted).
    pub fn retire_version(&self, function: &str, version: &str) {
        self.retire(&version_key(function, version));
        self.unprovision(function, version);
    }

    fn reap_idle(&self) {
        self.spares.reap(self.config.keep_alive);
        let pools: Vec<Arc<Pool>> = self
            .pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for pool in pools {
            let mut idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.retain(|env| {
                let last = *env.last_used.lock().unwrap_or_else(|e| e.into_inner());
                let keep = last.elapsed() < self.config.keep_alive && !env.is_dead();
                if !keep {
                    env.kill();
                }
                keep
            });
        }
    }

    /// Reserves `f`'s memory for a new environment. If it does not fit,
    /// the rest is claimed from environments on their way out, least
    /// recently used idle ones (of any function) killed for it, and their
    /// shares awaited; if busy ones hold the budget, the invocation is
    /// throttled.
    async fn reserve_memory(&self, f: &FunctionHandle) -> LambdaResult<Reservation<Env>> {
        let mb = u64::from(f.memory_mb);
        if let Some(share) = self.budget.try_reserve(mb) {
            return Ok(share);
        }
        let mut share = match self.make_room(mb) {
            Plan::Reserved(share) | Plan::Evict(share, _) => share,
            Plan::Full => return Err(self.budget_full(mb)),
        };
        if tokio::time::timeout(EVICTION_WAIT, share.ready())
            .await
            .is_err()
        {
            // Dropped, the share gives back what it holds.
            return Err(LambdaError::TooManyRequests {
                message: format!(
                    "Rate Exceeded. Execution environments stopped to make room in this node's memory budget did not end within {} seconds.",
                    EVICTION_WAIT.as_secs()
                ),
                reason: "ConcurrentInvocationLimitExceeded",
                retry_after_s: 1,
            });
        }
        Ok(share)
    }

    /// One look at every idle environment, all pools locked at once so the
    /// view is consistent: reserve, killing the environments the plan
    /// claims from the idle ones.
    fn make_room(&self, mb: u64) -> Plan<Env> {
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        let pools: Vec<&Arc<Pool>> = pools.values().collect();
        let mut idle: Vec<_> = pools
            .iter()
            .map(|p| p.idle.lock().unwrap_or_else(|e| e.into_inner()))
            .collect();
        let candidates: Vec<(Instant, Arc<Env>)> = idle
            .iter()
            .flat_map(|envs| envs.iter())
            .map(|e| {
                (
                    *e.last_used.lock().unwrap_or_else(|e| e.into_inner()),
                    e.clone(),
                )
            })
            .collect();
        let view: Vec<(Instant, &Arc<Env>)> = candidates.iter().map(|(t, e)| (*t, e)).collect();
        let plan = self.budget.plan(mb, &view);
        if let Plan::Evict(_, picked) = &plan {
            for &i in picked {
                let victim = &candidates[i].1;
                for envs in idle.iter_mut() {
                    envs.retain(|e| !Arc::ptr_eq(e, victim));
                }
                victim.kill();
            }
        }
        plan
    }

    /// Gives `share` to `env` until its process is gone.
    fn hold(&self, share: Reservation<Env>, env: &Arc<Env>) {
        let key = self.budget.attach(share, env);
        let budget = self.budget.clone();
        let mut death = env.death();
        tokio::spawn(async move {
            // Set once the process is reaped; an error means its watcher
            // is gone, which also ends the environment.
            let _ = death.wait_for(Option::is_some).await;
            budget.release(key);
        });
    }

    fn budget_full(&self, mb: u64) -> LambdaError {
        let limit = self.budget.limit_mb();
        let message = if mb > limit {
            format!(
                "Rate Exceeded. The function's MemorySize ({mb} MB) is larger than this node's memory budget for execution environments ({limit} MB)."
            )
        } else {
            format!(
                "Rate Exceeded. This node's memory budget for execution environments ({limit} MB) is held by busy environments; a new {mb} MB environment does not fit."
            )
        };
        LambdaError::TooManyRequests {
            message,
            reason: "ConcurrentInvocationLimitExceeded",
            retry_after_s: 1,
        }
    }

    /// Runs one invocation to its end. Errors are platform errors (throttling,
    /// a runtime that cannot be started); function errors are outcomes.
    pub async fn invoke(
        &self,
        f: &FunctionHandle,
        req: InvokeRequest,
    ) -> LambdaResult<InvokeOutcome> {
        let mut admission = self.admit(f)?;
        if let Some((provisioned, env)) = admission.provisioned.take() {
            env.claim();
            let outcome = self.run(f, &env, req).await;
            release_and_freeze(&env);
            self.give_back_provisioned(&provisioned, env);
            return Ok(outcome);
        }
        let pool = self.pool(&f.pool_key());
        let warm = {
            let mut idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner());
            let mut found = None;
            while let Some(env) = idle.pop() {
                if crate::env::usable(&env, &f.revision) {
                    found = Some(env);
                    break;
                }
                env.kill();
            }
            found
        };
        let env = match warm {
            Some(env) => {
                env.claim();
                env
            }
            None => self.start_env(f, concurrency::ON_DEMAND).await?,
        };
        let outcome = self.run(f, &env, req).await;
        *env.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        if !env.is_dead() && env.revision == f.revision && !pool.retired.load(Ordering::Relaxed) {
            release_and_freeze(&env);
            pool.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(env);
        } else {
            env.kill();
        }
        Ok(outcome)
    }

    async fn start_env(&self, f: &FunctionHandle, init_type: &str) -> LambdaResult<Arc<Env>> {
        let share = self.reserve_memory(f).await?;
        let jail = match &self.config.isolation {
            Isolation::Jail(j) => Some(j),
            Isolation::Process => None,
        };
        // Where the code and the runtime are, as the runtime sees them.
        let (task_root, runtime_root) = match jail {
            Some(_) => (PathBuf::from("/var/task"), PathBuf::from("/var/runtime")),
            None => (f.code_dir.clone(), self.config.runtime_dir.clone()),
        };
        let launch = self.config.catalog.launch(
            &f.runtime,
            &self.config.runtime_dir,
            &runtime_root,
            &task_root,
        )?;
        let stream = format!(
            "{}/[{}]{}",
            chrono::Utc::now().format("%Y/%m/%d"),
            f.version,
            uuid::Uuid::new_v4().simple()
        );
        let creds = self
            .config
            .credentials
            .issue(&f.role, &f.name)
            .ok_or_else(|| {
                LambdaError::InvalidParameterValue(
                    "The role defined for the function cannot be assumed by Lambda.".into(),
                )
            })?;
        let mut env = self.environment(f, &stream, &creds, &task_root, &runtime_root, init_type);
        let spec = |env| SandboxSpec {
            program: launch.program,
            args: launch.args,
            env,
            cwd: task_root.clone(),
        };
        let launch = match jail {
            None => Launch::Process(spec(env)),
            Some(j) => {
                self.jail_environment(j, &mut env);
                let cpu_millis = cpu_millis_for_memory(f.memory_mb);
                match self.assign_spare(f, &env, cpu_millis) {
                    Some(launch) => launch,
                    None => Launch::Jail {
                        spec: spec(env),
                        jail: Box::new(JailSpec {
                            network: j.network.clone().filter(|_| f.egress),
                            ..self.jail_spec(
                                j,
                                &f.code_dir,
                                f.ephemeral_storage_mb,
                                &stream[stream.len() - 8..],
                            )
                        }),
                        endpoint: self.endpoint_server(),
                        cgroup: j.cgroups.clone().map(|root| {
                            let limits = Limits {
                                memory_bytes: u64::from(f.memory_mb) * 1024 * 1024,
                                cpu_millis,
                                pids: JAIL_PIDS,
                            };
                            (root, uuid::Uuid::new_v4().simple().to_string(), limits)
                        }),
                    },
                }
            }
        };
        let usable_until = Instant::now() + creds.valid_for.saturating_sub(CREDENTIAL_MARGIN);
        let env = Env::start(launch, stream, f.revision.clone(), usable_until)
            .await
            .map_err(LambdaError::internal)?;
        self.hold(share, &env);
        Ok(env)
    }

    /// Where a jailed runtime finds the Runtime API and nimbus: on its own
    /// loopback, where the jail's listeners are.
    fn jail_environment(&self, j: &JailSettings, env: &mut Vec<(String, String)>) {
        env.retain(|(k, _)| k != "AWS_ENDPOINT_URL" && k != "AWS_LAMBDA_RUNTIME_API");
        env.push((
            "AWS_LAMBDA_RUNTIME_API".into(),
            format!("127.0.0.1:{}", runtime_api_port(j)),
        ));
        env.push((
            "AWS_ENDPOINT_URL".into(),
            format!("http://127.0.0.1:{}", j.endpoint_port),
        ));
    }

    /// The jail of an environment whose code is `code_dir`.
    fn jail_spec(&self, j: &JailSettings, code_dir: &Path, tmp_mb: u32, id: &str) -> JailSpec {
        JailSpec {
            helper: j.helper.clone(),
            helper_args: j.helper_args.clone(),
            root_dir: j.root_dir.clone(),
            code_dir: code_dir.to_path_buf(),
            code_root: None,
            runtime_dir: self.config.runtime_dir.clone(),
            ro_paths: self.config.catalog.interpreter_roots(),
            tmp_mb,
            hostname: format!("sandbox-{}", id.get(..8).unwrap_or(id)),
            listen: vec![runtime_api_port(j), j.endpoint_port],
            cgroup_procs: Vec::new(),
            nofile: JAIL_NOFILE,
            network: j.network.clone(),
        }
    }

    fn endpoint_server(&self) -> Option<EndpointServer> {
        self.endpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The variables every environment of this host has, whatever the
    /// function.
    fn base_environment(&self, task_root: &Path, runtime_root: &Path) -> Vec<(String, String)> {
        let c = &self.config;
        let code = task_root.display().to_string();
        let mut path: Vec<String> = c
            .catalog
            .bin_dirs()
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        path.extend(["/usr/local/bin", "/usr/bin", "/bin"].map(String::from));
        vec![
            ("LAMBDA_TASK_ROOT".into(), code.clone()),
            (
                "LAMBDA_RUNTIME_DIR".into(),
                runtime_root.display().to_string(),
            ),
            ("AWS_REGION".into(), c.region.clone()),
            ("AWS_DEFAULT_REGION".into(), c.region.clone()),
            ("AWS_ENDPOINT_URL".into(), c.endpoint_url.clone()),
            ("TZ".into(), ":UTC".into()),
            ("LANG".into(), "en_US.UTF-8".into()),
            ("PATH".into(), path.join(":")),
            (
                "LD_LIBRARY_PATH".into(),
                format!("{code}/lib:/usr/local/lib:/usr/lib:/lib"),
            ),
        ]
    }

    fn environment(
        &self,
        f: &FunctionHandle,
        stream: &str,
        creds: &TempCredentials,
        task_root: &Path,
        runtime_root: &Path,
        init_type: &str,
    ) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = f.environment.clone();
        let mut set = |k: &str, v: String| env.push((k.to_string(), v));
        set("_HANDLER", f.handler.clone());
        if f.runtime.is_managed() {
            set("AWS_EXECUTION_ENV", format!("AWS_Lambda_{}", f.runtime));
        }
        set("AWS_LAMBDA_FUNCTION_NAME", f.name.clone());
        set("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", f.memory_mb.to_string());
        set("AWS_LAMBDA_FUNCTION_VERSION", f.version.clone());
        set("AWS_LAMBDA_INITIALIZATION_TYPE", init_type.to_string());
        set("AWS_LAMBDA_LOG_GROUP_NAME", f.log_group());
        set("AWS_LAMBDA_LOG_STREAM_NAME", stream.to_string());
        set("AWS_ACCESS_KEY_ID", creds.access_key_id.clone());
        set("AWS_SECRET_ACCESS_KEY", creds.secret_access_key.clone());
        set("AWS_SESSION_TOKEN", creds.session_token.clone());
        env.extend(self.base_environment(task_root, runtime_root));
        env
    }

    async fn run(&self, f: &FunctionHandle, env: &Env, req: InvokeRequest) -> InvokeOutcome {
        let id = req.request_id.clone();
        // Leftovers from between invocations (background threads) come first.
        let mut lines: Vec<LogLine> = env.take_output();
        let (delivered_tx, delivered_rx) = oneshot::channel();
        let (reply_tx, reply_rx) = oneshot::channel();
        let dispatched = env.dispatch(Dispatch {
            request_id: id.clone(),
            payload: req.payload,
            timeout_ms: u64::from(f.timeout_s) * 1000,
            function_arn: req.invoked_arn.unwrap_or_else(|| f.arn.clone()),
            trace_id: req.trace_header.unwrap_or_else(trace_id),
            client_context: req.client_context,
            cognito_identity: None,
            delivered: delivered_tx,
            reply: reply_tx,
        });
        let queued = Instant::now();
        let waited = if dispatched {
            self.wait(f, env, delivered_rx, reply_rx).await
        } else {
            (None, Waited::InitTimeout)
        };
        let (delivery, waited) = waited;
        // Output the runtime wrote before it took the event (module import
        // on a cold start) goes before START, as in CloudWatch.
        let (started, mut pre) = match delivery {
            Some((at, before)) => (Some(at), before),
            None => (None, Vec::new()),
        };
        lines.append(&mut pre);
        let ended = Instant::now();
        let duration = ended.duration_since(started.unwrap_or(queued));
        let init = env.shared.ready_at.get().and_then(|ready| {
            env.claim_init_report()
                .then(|| ready.duration_since(env.started))
        });
        let init_failed = waited.is_init_failure(env);
        let mut body = env.take_output();
        let mem_mb = env.peak_memory_mb();

        let timeout_text = format!("{:.2}", f64::from(f.timeout_s));
        let (payload, error_type, status): (Bytes, Option<String>, Option<String>) = match waited {
            Waited::Reply(Reply::Response(body)) => (body, None, None),
            Waited::Reply(Reply::Error { error_type, body }) => (body, Some(error_type), None),
            Waited::Reply(Reply::ResponseTooLarge) => {
                let t = "Function.ResponseSizeTooLarge";
                let body = serde_json::json!({
                    "errorMessage": format!("Response payload size exceeded maximum allowed payload size ({} bytes).", nimbus_core::limits::SYNC_PAYLOAD_MAX),
                    "errorType": t,
                });
                (
                    body.to_string().into(),
                    Some(t.into()),
                    Some(format!("Status: error\tError Type: {t}")),
                )
            }
            Waited::Timeout => {
                env.kill();
                let msg = format!("Task timed out after {timeout_text} seconds");
                body.push(LogLine {
                    ts_ms: now_ms(),
                    text: format!(
                        "{} {id} {msg}",
                        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ")
                    ),
                });
                let t = "Sandbox.Timedout";
                let body = serde_json::json!({"errorType": t, "errorMessage": format!("RequestId: {id} Error: {msg}")});
                (
                    body.to_string().into(),
                    Some(t.into()),
                    Some("Status: timeout".into()),
                )
            }
            Waited::InitTimeout => {
                env.kill();
                let t = "Runtime.Unknown";
                let msg = format!(
                    "RequestId: {id} Error: Runtime failed to start within {} seconds",
                    INIT_TIMEOUT.as_secs()
                );
                body.push(line(msg.clone()));
                platform_error(t, &msg)
            }
            Waited::Died(death) => {
                if let Some(init) = init_failed {
                    lines.append(&mut body);
                    lines.push(LogLine {
                        ts_ms: now_ms(),
                        text: format!(
                            "INIT_REPORT Init Duration: {:.2} ms\tPhase: init\tStatus: error\tError Type: {}",
                            ms(env.started.elapsed()),
                            init.error_type
                        ),
                    });
                    let t = init.error_type.clone();
                    (
                        init.body,
                        Some(t.clone()),
                        Some(format!("Status: error\tError Type: {t}")),
                    )
                } else {
                    let (t, detail) = match &death {
                        Death::SpawnFailed(m) => ("Runtime.InvalidEntrypoint", m.clone()),
                        Death::Exited(reason)
                            if crate::env::exited_by_kill(reason)
                                && (env.oom_killed() || mem_mb >= u64::from(f.memory_mb)) =>
                        {
                            (
                                "Runtime.OutOfMemory",
                                format!("Runtime exited with error: {reason}"),
                            )
                        }
                        Death::Exited(reason) => (
                            "Runtime.ExitError",
                            format!("Runtime exited with error: {reason}"),
                        ),
                        Death::Killed => (
                            "Runtime.ExitError",
                            "Runtime exited with error: signal: killed".into(),
                        ),
                    };
                    let msg = format!("RequestId: {id} Error: {detail}");
                    body.push(line(msg.clone()));
                    body.push(line(t.into()));
                    platform_error(t, &msg)
                }
            }
        };

        let init_ms = init.map(ms);
        let duration_ms = ms(duration);
        let billed_ms = (duration_ms + init_ms.unwrap_or(0.0)).ceil().max(1.0) as u64;
        let metrics = InvocationMetrics {
            duration_ms,
            billed_ms,
            memory_size_mb: f.memory_mb,
            max_memory_used_mb: mem_mb,
            init_ms,
        };
        // START's wall-clock time, back-dated from now by the time elapsed
        // since delivery (in microseconds, so rounding cannot push it past
        // the first output line), and kept between the output before it and
        // the output after it: a stream's events must be in timestamp order.
        let start_ms = {
            let since = started.map_or(0, |s| s.elapsed().as_micros() as i64);
            let at = (chrono::Utc::now().timestamp_micros() - since).div_euclid(1000);
            let at = lines.last().map_or(at, |l| at.max(l.ts_ms));
            body.first().map_or(at, |l| at.min(l.ts_ms))
        };
        let log = frame_log(
            &id,
            &f.version,
            lines,
            body,
            start_ms,
            &metrics,
            status.as_deref(),
        );
        let log_tail = logs::tail(&log, nimbus_core::limits::LOG_TAIL_MAX);
        let _ = self.log_sink.send(LogBatch {
            group: f.log_group(),
            stream: env.log_stream.clone(),
            lines: log,
            role: f.role.clone(),
            session: f.name.clone(),
        });
        InvokeOutcome {
            request_id: id,
            payload,
            function_error: error_type.as_ref().map(|_| "Unhandled"),
            error_type,
            log_tail,
            metrics,
        }
    }

    async fn wait(
        &self,
        f: &FunctionHandle,
        env: &Env,
        delivered: oneshot::Receiver<(Instant, Vec<LogLine>)>,
        reply: oneshot::Receiver<Reply>,
    ) -> (Option<(Instant, Vec<LogLine>)>, Waited) {
        let mut death = env.death();
        let snapshot = env.death();
        let died = || snapshot.borrow().clone().unwrap_or(Death::Killed);
        // Phase 1: the runtime picks the event up (bounded by init time on
        // a cold start).
        let start = tokio::select! {
            r = delivered => match r {
                Ok(t) => t,
                Err(_) => return (None, Waited::Died(died())),
            },
            r = death.wait_for(Option::is_some) => {
                let d = r.ok().and_then(|d| d.clone()).unwrap_or(Death::Killed);
                return (None, Waited::Died(d));
            }
            () = tokio::time::sleep(INIT_TIMEOUT) => return (None, Waited::InitTimeout),
        };
        env.end_init_boost();
        // Phase 2: it answers before the deadline, or dies trying.
        let deadline = start.0 + Duration::from_secs(u64::from(f.timeout_s));
        let waited = tokio::select! {
            r = reply => match r {
                Ok(reply) => Waited::Reply(reply),
                Err(_) => Waited::Died(died()),
            },
            r = death.wait_for(Option::is_some) => {
                Waited::Died(r.ok().and_then(|d| d.clone()).unwrap_or(Death::Killed))
            }
            () = tokio::time::sleep_until(deadline.into()) => Waited::Timeout,
        };
        (Some(start), waited)
    }
}

impl Waited {
    fn is_init_failure(&self, env: &Env) -> Option<crate::env::InitError> {
        match self {
            Waited::Died(_) => env
                .shared
                .init_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            _ => None,
        }
    }
}

/// The payload, error type and REPORT status of an error the platform
/// raises itself (as opposed to one the runtime reports).
fn platform_error(error_type: &str, message: &str) -> (Bytes, Option<String>, Option<String>) {
    let body = serde_json::json!({"errorType": error_type, "errorMessage": message});
    (
        body.to_string().into(),
        Some(error_type.to_string()),
        Some(format!("Status: error\tError Type: {error_type}")),
    )
}

fn line(text: String) -> LogLine {
    LogLine {
        ts_ms: now_ms(),
        text,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Frames an invocation's output with START, END and REPORT.
fn frame_log(
    id: &str,
    version: &str,
    pre: Vec<LogLine>,
    body: Vec<LogLine>,
    start_ms: i64,
    m: &InvocationMetrics,
    status: Option<&str>,
) -> Vec<LogLine> {
    let mut out = pre;
    out.reserve(body.len() + 3);
    out.push(LogLine {
        ts_ms: start_ms,
        text: format!("START RequestId: {id} Version: {version}"),
    });
    out.extend(body);
    let now = now_ms();
    out.push(LogLine {
        ts_ms: now,
        text: format!("END RequestId: {id}"),
    });
    let mut report = format!(
        "REPORT RequestId: {id}\tDuration: {:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB\tMax Memory Used: {} MB",
        m.duration_ms, m.billed_ms, m.memory_size_mb, m.max_memory_used_mb
    );
    if let Some(init) = m.init_ms {
        report += &format!("\tInit Duration: {init:.2} ms");
    }
    if let Some(s) = status {
        report += "\t";
        report += s;
    }
    out.push(LogLine {
        ts_ms: now,
        text: report,
    });
    out
}

/// An X-Ray style trace header: `Root=1-<epoch hex>-<96 random bits>`.
fn trace_id() -> String {
    let mut r = [0u8; 20];
    let _ = getrandom::fill(&mut r);
    format!(
        "Root=1-{:08x}-{};Parent={};Sampled=0",
        chrono::Utc::now().timestamp(),
        hex::encode(&r[..12]),
        hex::encode(&r[12..])
    )
}

fn write_bootstraps(dir: &Path) -> std::io::Result<()> {
    for (rel, text) in [
        ("python/bootstrap.py", crate::PYTHON_BOOTSTRAP),
        ("nodejs/bootstrap.js", crate::NODE_BOOTSTRAP),
    ] {
        let path = dir.join(rel);
        if std::fs::read_to_string(&path).is_ok_and(|cur| cur == text) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)?;
        // Bytecode of an older bootstrap must not outlive it.
        for entry in std::fs::read_dir(dir.join("python"))?.flatten() {
            if entry.path().extension().is_some_and(|e| e == "pyc") {
                std::fs::remove_file(entry.path())?;
            }
        }
    }
    Ok(())
}
