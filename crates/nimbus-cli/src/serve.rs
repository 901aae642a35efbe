//! `nimbus serve`: opens the data directory, starts the engine and serves
//! every API on one port until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nimbus_api::AppState;
use nimbus_core::Identity;
use nimbus_lambda::LambdaService;
use nimbus_runtime::{
    Engine, EngineConfig, Isolation, JailSettings, RootCredentials, RuntimeCatalog,
};
use nimbus_sandbox::cgroup::CgroupRoot;
use nimbus_sandbox::netpool::{NetPool, Subnet};
use nimbus_store::{SqliteStore, Store};

/// Flags of `nimbus serve`; each can also come from the environment.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the address is
    /// printed when ready).
    #[arg(long, env = "NIMBUS_LISTEN", default_value = "127.0.0.1:9070")]
    listen: SocketAddr,
    /// Where nimbus keeps its database, packages, code and credentials
    /// [default: $XDG_DATA_HOME/nimbus or ~/.local/share/nimbus].
    #[arg(long, env = "NIMBUS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Region in every ARN and in functions' AWS_REGION.
    #[arg(long, env = "NIMBUS_REGION", default_value = "us-east-1")]
    region: String,
    /// Account id in every ARN.
    #[arg(long, env = "NIMBUS_ACCOUNT_ID", default_value = "000000000000")]
    account_id: String,
    /// Map a runtime id to an interpreter, e.g. `python3.12=/usr/bin/python3.12`.
    /// Repeatable; NIMBUS_RUNTIMES takes a comma-separated list.
    #[arg(
        long = "runtime",
        value_name = "ID=PATH",
        env = "NIMBUS_RUNTIMES",
        value_delimiter = ','
    )]
    runtimes: Vec<String>,
    /// Seconds an idle execution environment is kept warm before it is
    /// stopped (the function scales to zero).
    #[arg(long, env = "NIMBUS_KEEP_ALIVE", default_value_t = 300)]
    keep_alive: u64,
    /// Invocations that may run at once across all functions (the account
    /// concurrency limit); more are throttled with 429. Reserved and
    /// provisioned concurrency are carved out of it; a tenth of it (at most
    /// 100, AWS's figure) always stays unreserved.
    #[arg(long, env = "NIMBUS_CONCURRENCY", default_value_t = 64)]
    concurrency: u32,
    /// Memory, in MB, that execution environments may be configured with in
    /// total: the sum of the MemorySize of every live environment, idle or
    /// busy. A new environment that does not fit first evicts the least
    /// recently used idle ones; if busy ones hold the budget, the invocation
    /// is throttled with 429 [default: 75% of the host's MemTotal].
    #[arg(long, env = "NIMBUS_MEMORY_BUDGET", value_name = "MB")]
    memory_budget: Option<u64>,
    /// URL functions use to call back into nimbus (AWS_ENDPOINT_URL)
    /// [default: http://LISTEN-ADDRESS, with 0.0.0.0 as 127.0.0.1].
    #[arg(long, env = "NIMBUS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
    /// Dollars per 1M requests, for `nimbus usage` (Lambda's public price).
    #[arg(
        long,
        env = "NIMBUS_PRICE_PER_MILLION_REQUESTS",
        default_value_t = 0.20
    )]
    price_per_million_requests: f64,
    /// Dollars per GB-second (billed duration, init included, × memory),
    /// for `nimbus usage` (Lambda's public price).
    #[arg(
        long,
        env = "NIMBUS_PRICE_PER_GB_SECOND",
        default_value_t = 0.000_016_666_7
    )]
    price_per_gb_second: f64,
    /// Seconds between sweeps that delete log events older than their
    /// group's retention (PutRetentionPolicy).
    #[arg(long, env = "NIMBUS_LOG_RETENTION_SWEEP", default_value_t = 600)]
    log_retention_sweep: u64,
    /// How execution environments are isolated: `jail` (namespaces, a
    /// private root filesystem, cgroup limits, an unprivileged user and
    /// seccomp; needs root on Linux), `process` (plain child processes, for
    /// development: function code can read what the server can), or `auto`
    /// (jail when running as root, else process).
    #[arg(long, env = "NIMBUS_ISOLATION", value_enum, default_value_t = IsolationArg::Auto)]
    isolation: IsolationArg,
    /// Keep one jail per runtime in use prepared ahead of demand, so cold
    /// starts only bind the code and import the handler (costs one idle
    /// interpreter per runtime: about 10 MB for Python, 40 MB for Node.js).
    #[arg(
        long,
        env = "NIMBUS_PREPARED_SANDBOXES",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    prepared_sandboxes: bool,
    /// Where jailed functions' network egress gets its addresses: a /30 per
    /// execution environment from this IPv4 subnet, masqueraded behind the
    /// host (needs `nft`). `none`: no function reaches the network (only
    /// the Runtime API and nimbus, on the jail's loopback).
    #[arg(
        long,
        env = "NIMBUS_SANDBOX_SUBNET",
        value_name = "CIDR|none",
        default_value = nimbus_sandbox::netpool::DEFAULT_SUBNET
    )]
    sandbox_subnet: String,
    /// Asynchronous invocations: the first retry after a function error
    /// comes this many milliseconds later, the second twice as long
    /// (Lambda: about 1 and 2 minutes); throttles back off from a 60th of
    /// it. Lower it to compress retries in tests.
    #[arg(
        long,
        env = "NIMBUS_ASYNC_RETRY_BASE_MS",
        value_name = "MS",
        default_value_t = 60_000
    )]
    async_retry_base_ms: u64,
    /// For tests: run schedules (EventBridge rules and Scheduler) on a
    /// clock N times faster than real time, so `rate(1 minute)` fires every
    /// 60/N seconds and cron minutes pass N times faster. The clock is
    /// continuous across restarts of the same data directory.
    #[arg(
        long,
        env = "NIMBUS_SCHEDULE_TIME_SCALE",
        default_value_t = 1,
        hide = true,
        value_name = "N"
    )]
    schedule_time_scale: u32,
    /// The domain of virtual-hosted-style S3 addressing: a request for
    /// `<bucket>.<domain>[:port]` is for that bucket (path-style works on
    /// any host).
    #[arg(long, env = "NIMBUS_S3_DOMAIN", default_value = "localhost")]
    s3_domain: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum IsolationArg {
    Auto,
    Jail,
    Process,
}

/// Chooses the isolation mode and prepares what jails need.
fn isolation(arg: IsolationArg, data_dir: &Path, port: u16, subnet: &str) -> Result<Isolation> {
    let root = nix::unistd::geteuid().is_root();
    let jail = match arg {
        IsolationArg::Process => false,
        IsolationArg::Jail if !root => {
            bail!("--isolation jail needs root (namespaces, mounts and cgroups)")
        }
        IsolationArg::Jail => true,
        IsolationArg::Auto => root,
    };
    if !jail {
        tracing::warn!(
            "ISOLATION OFF: execution environments run as plain processes with the server's \
             user and files (--isolation process or not root); run only code you trust"
        );
        return Ok(Isolation::Process);
    }
    let root_dir = data_dir.join("run/jail-root");
    std::fs::create_dir_all(&root_dir)
        .with_context(|| format!("creating {}", root_dir.display()))?;
    let helper = std::env::current_exe().context("locating the nimbus binary")?;
    // One cgroup parent per data directory: stable across restarts (so a
    // restart reaps what a crash left behind) and distinct between servers.
    let prefix = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        data_dir.hash(&mut h);
        format!("nimbus-{:016x}", h.finish())
    };
    let cgroups = match CgroupRoot::detect(&prefix).and_then(|root| {
        root.cleanup_stale()?;
        Ok(root)
    }) {
        Ok(root) => Some(Arc::new(root)),
        Err(e) => {
            tracing::warn!(
                "cgroups unavailable ({e}): jails run WITHOUT memory, CPU and process limits"
            );
            None
        }
    };
    let network = match subnet {
        "none" => {
            tracing::info!(
                "network egress is off (--sandbox-subnet none): jails get loopback only"
            );
            None
        }
        cidr => {
            let subnet: Subnet = cidr
                .parse()
                .map_err(|e| anyhow::anyhow!("--sandbox-subnet: {e}"))?;
            match NetPool::setup(subnet, &prefix) {
                Ok(pool) => {
                    tracing::info!(%subnet, "jails have network egress (masqueraded)");
                    Some(pool)
                }
                Err(e) => {
                    tracing::warn!("network egress unavailable ({e}): jails get loopback only");
                    None
                }
            }
        }
    };
    tracing::info!("execution environments are jailed (namespaces, cgroups, seccomp, uid 993)");
    Ok(Isolation::Jail(JailSettings {
        helper,
        helper_args: vec![crate::JAIL_HELPER_ARG.into()],
        root_dir,
        endpoint_port: port,
        cgroups,
        network,
    }))
}

/// The root credentials file, in the AWS shared-credentials format so
/// `AWS_SHARED_CREDENTIALS_FILE=<data-dir>/credentials` works too.
fn load_or_create_credentials(data_dir: &Path) -> Result<(RootCredentials, bool)> {
    let path = data_dir.join("credentials");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return parse_credentials(&text)
            .map(|c| (c, false))
            .with_context(|| format!("reading {}", path.display()));
    }
    let from_env = (
        std::env::var("NIMBUS_ACCESS_KEY_ID"),
        std::env::var("NIMBUS_SECRET_ACCESS_KEY"),
    );
    let creds = match from_env {
        (Ok(id), Ok(secret)) if !id.is_empty() && !secret.is_empty() => RootCredentials {
            access_key_id: id,
            secret_access_key: secret,
        },
        _ => RootCredentials {
            access_key_id: random_key_id()?,
            secret_access_key: random_secret()?,
        },
    };
    let text = format!(
        "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
        creds.access_key_id, creds.secret_access_key
    );
    write_private(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    Ok((creds, true))
}

pub(crate) fn parse_credentials(text: &str) -> Result<RootCredentials> {
    let value = |key: &str| {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
    };
    match (value("aws_access_key_id"), value("aws_secret_access_key")) {
        (Some(a), Some(s)) => Ok(RootCredentials {
            access_key_id: a,
            secret_access_key: s,
        }),
        _ => bail!("no aws_access_key_id / aws_secret_access_key in the credentials file"),
    }
}

/// The key that seals secrets in the database (`<data-dir>/secrets.key`,
/// mode 0600, created on first start): the database alone holds no usable
/// credential.
fn load_or_create_sealing_key(data_dir: &Path) -> Result<[u8; 32]> {
    use base64::Engine as _;
    let path = data_dir.join("secrets.key");
    let engine = base64::engine::general_purpose::STANDARD;
    if let Ok(text) = std::fs::read_to_string(&path) {
        let raw = engine
            .decode(text.trim())
            .with_context(|| format!("reading {}", path.display()))?;
        return raw
            .try_into()
            .map_err(|_| anyhow::anyhow!("{} must hold a 32-byte key", path.display()));
    }
    let key = random_bytes::<32>()?;
    write_private(&path, &format!("{}\n", engine.encode(key)))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(key)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness available: {e}"))?;
    Ok(b)
}

fn random_key_id() -> Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let b = random_bytes::<16>()?;
    Ok(format!(
        "AKIA{}",
        b.iter()
            .map(|x| ALPHABET[usize::from(*x) % 32] as char)
            .collect::<String>()
    ))
}

fn random_secret() -> Result<String> {
    use base64::Engine as _;
    Ok(base64::engine::general_purpose::STANDARD.encode(random_bytes::<30>()?))
}

/// The memory budget from `--memory-budget`, or 75% of MemTotal.
fn memory_budget_mb(flag: Option<u64>) -> Result<u64> {
    let mb = match flag {
        Some(mb) => mb,
        None => {
            let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
            let total_kb: u64 = meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .context("no MemTotal in /proc/meminfo: set --memory-budget")?;
            total_kb / 1024 * 3 / 4
        }
    };
    let min = u64::from(nimbus_core::limits::MEMORY_MIN_MB);
    if mb < min {
        bail!("--memory-budget {mb}: must be at least {min} (MB), the smallest MemorySize");
    }
    Ok(mb)
}

fn parse_runtime_overrides(raw: &[String]) -> Result<Vec<(String, PathBuf)>> {
    raw.iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let (id, path) = s
                .split_once('=')
                .with_context(|| format!("--runtime {s}: expected ID=PATH"))?;
            nimbus_core::RuntimeId::parse(id.trim())
                .map_err(|e| anyhow::anyhow!("--runtime {s}: {e}"))?;
            Ok((id.trim().to_string(), PathBuf::from(path.trim())))
        })
        .collect()
}

pub(crate) async fn run(args: ServeArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NIMBUS_LOG")
                // s3s logs every client error (NoSuchKey...) at ERROR;
                // the object store logs its own failures.
                .unwrap_or_else(|_| "info,s3s=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(crate::default_data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&data_dir)?;
    let (credentials, created) = load_or_create_credentials(&data_dir)?;
    if created {
        println!(
            "Root credentials (also in {}/credentials):",
            data_dir.display()
        );
        println!("  AWS_ACCESS_KEY_ID={}", credentials.access_key_id);
        println!("  AWS_SECRET_ACCESS_KEY={}", credentials.secret_access_key);
    }
    let credentials_for_keys = credentials;
    let sealing_key = load_or_create_sealing_key(&data_dir)?;
    let overrides = parse_runtime_overrides(&args.runtimes)?;
    let memory_budget_mb = memory_budget_mb(args.memory_budget)?;
    tracing::info!("memory budget for execution environments: {memory_budget_mb} MB");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&data_dir.join("nimbus.db"))
            .with_context(|| format!("opening {}/nimbus.db", data_dir.display()))?,
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    let endpoint_url = args.endpoint_url.clone().unwrap_or_else(|| {
        let host = if local.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            local.ip().to_string()
        };
        format!("http://{host}:{}", local.port())
    });
    let catalog = tokio::task::spawn_blocking(move || RuntimeCatalog::discover(&overrides)).await?;
    tracing::info!(runtimes = %catalog.available().join(", "), "runtimes found on this host");
    let isolation = isolation(
        args.isolation,
        &data_dir,
        local.port(),
        &args.sandbox_subnet,
    )?;
    let iam = {
        let (store, creds, account_id) = (
            store.clone(),
            credentials_for_keys.clone(),
            args.account_id.clone(),
        );
        tokio::task::spawn_blocking(move || {
            nimbus_iam::IamService::open(
                &account_id,
                &creds.access_key_id,
                &creds.secret_access_key,
                store,
                &sealing_key,
            )
        })
        .await?
        .map_err(|e| anyhow::anyhow!("loading IAM state: {e}"))?
    };
    let iam = Arc::new(iam);
    let (log_tx, log_rx) = tokio::sync::mpsc::unbounded_channel();
    let (log_barrier, log_commits) = nimbus_lambda::LogBarrier::new(log_tx.clone());
    let log_writer = nimbus_lambda::spawn_log_writer(
        store.clone(),
        iam.clone(),
        args.region.clone(),
        log_rx,
        Some(log_commits),
    )?;
    let engine = Engine::start(
        EngineConfig {
            runtime_dir: data_dir.join("runtime"),
            region: args.region.clone(),
            endpoint_url: endpoint_url.clone(),
            credentials: Arc::new(nimbus_lambda::ExecutionRoleCredentials(iam.clone())),
            keep_alive: Duration::from_secs(args.keep_alive.max(1)),
            account_concurrency: args.concurrency.max(1),
            memory_budget_mb,
            catalog,
            isolation,
            prepared_sandboxes: args.prepared_sandboxes,
        },
        log_tx,
    )?;
    let identity = Identity {
        region: args.region,
        account_id: args.account_id,
    };
    let lambda = {
        let (store, dir, engine, iam) =
            (store.clone(), data_dir.clone(), engine.clone(), iam.clone());
        tokio::task::spawn_blocking(move || LambdaService::open(identity, store, &dir, engine, iam))
            .await??
    };
    let prices = crate::usage::prices(args.price_per_million_requests, args.price_per_gb_second)?;
    let (usage_tx, usage_rx) = tokio::sync::mpsc::unbounded_channel();
    let usage_writer = nimbus_lambda::spawn_usage_writer(store.clone(), usage_rx)?;
    let mut lambda = lambda;
    lambda.enable_metering(usage_tx, prices);
    let lambda = Arc::new(lambda);
    // Queued events (those a crash left too) run from now on.
    lambda.start_async(
        nimbus_lambda::AsyncSettings {
            retry_base_ms: args.async_retry_base_ms.max(1),
        },
        Some(log_barrier),
    )?;
    let sweep_every = Duration::from_secs(args.log_retention_sweep.max(1));
    nimbus_lambda::spawn_retention_sweeper(store.clone(), sweep_every)?;
    let fresh_key = hex::encode(random_bytes::<32>()?);
    let url_key = lambda.server_setting("code-url-key", || fresh_key)?;
    let keys: nimbus_api::Keys = iam.clone();
    let (schedules, schedule_loops) = open_schedules(
        &data_dir,
        lambda.identity(),
        args.schedule_time_scale,
        &lambda,
        &iam,
    )
    .await?;
    let s3 = crate::s3::open(&data_dir, &args.s3_domain, &lambda, &keys, &iam).await?;
    let app = nimbus_api::router(AppState {
        lambda: lambda.clone(),
        store,
        url_key: url_key.into_bytes().into(),
        keys,
        iam,
        schedules,
        s3: Some(s3.clone()),
    });
    {
        // Jailed functions reach the API on a listener inside their own
        // network namespace, served by the same router.
        let app = app.clone();
        engine.serve_endpoint_with(Arc::new(move |listener| {
            let app = app.clone();
            tokio::spawn(async move {
                let _ = listener.set_nonblocking(true);
                if let Ok(l) = tokio::net::TcpListener::from_std(listener) {
                    let _ = axum::serve(l, app).await;
                }
            })
            .abort_handle()
        }));
    }
    // Provisioned environments start now that their functions can reach
    // the API while they initialise.
    lambda.restore_provisioned_concurrency();
    println!(
        "nimbus ready on http://{local} (data in {})",
        data_dir.display()
    );
    // Notifications a crash left in the object store's outbox.
    tokio::spawn(async move { s3.redeliver_pending().await });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    // The schedule loops hold the Lambda service through their invoker.
    schedule_loops.stop().await;
    tracing::info!("shutting down: stopping execution environments");
    lambda.stop_async();
    engine.shutdown();
    drop(lambda);
    drop(engine);
    // The log writer ends when the last sender (the engine's) is gone.
    let _ = tokio::task::spawn_blocking(move || log_writer.join()).await;
    crate::usage::wait_for_writer(&usage_writer).await;
    Ok(())
}

/// Opens the schedules (their tables in `nimbus.db`) and starts their
/// firing loop, which hands ticks to Lambda through [`ScheduleInvoker`].
async fn open_schedules(
    data_dir: &Path,
    identity: &Identity,
    time_scale: u32,
    lambda: &Arc<LambdaService>,
    iam: &Arc<nimbus_iam::IamService>,
) -> Result<(Arc<nimbus_schedule::Schedules>, nimbus_schedule::Running)> {
    if time_scale == 0 {
        bail!("--schedule-time-scale must be at least 1");
    }
    let place = nimbus_schedule::Place {
        region: identity.region.clone(),
        account_id: identity.account_id.clone(),
    };
    let db = data_dir.join("nimbus.db");
    let schedules = tokio::task::spawn_blocking(move || {
        nimbus_schedule::Schedules::open(place, Some(&db), time_scale)
    })
    .await?
    .map_err(|e| anyhow::anyhow!("loading schedules: {e}"))?;
    if time_scale > 1 {
        tracing::warn!(
            "schedules run {time_scale} times faster than real time (--schedule-time-scale)"
        );
    }
    let schedules = Arc::new(schedules);
    let running = schedules.spawn(Arc::new(ScheduleInvoker {
        lambda: lambda.clone(),
        iam: iam.clone(),
    }));
    Ok((schedules, running))
}

/// Delivers fired schedule ticks as asynchronous invocations, with the
/// service principal and source ARN the function's resource policy is
/// checked against.
struct ScheduleInvoker {
    lambda: Arc<LambdaService>,
    iam: Arc<nimbus_iam::IamService>,
}

impl ScheduleInvoker {
    /// Whether a Scheduler schedule's execution role may invoke
    /// `function_arn`: Scheduler assumes the role and calls Invoke with it,
    /// so the role's permission policies decide, as on AWS.
    fn role_may_invoke(&self, role_arn: &str, function_arn: &str) -> Result<(), String> {
        let role = self.iam.role_by_arn(role_arn).ok_or_else(|| {
            format!(
                "AccessDeniedException: the schedule's execution role {role_arn} does not exist"
            )
        })?;
        let session_arn = format!(
            "arn:aws:sts::{}:assumed-role/{}/nimbus-scheduler",
            self.iam.account_id(),
            role.name
        );
        let caller = nimbus_iam::Caller::AssumedRole {
            role: role.name.clone(),
            session_arn: session_arn.clone(),
        };
        self.iam
            .authorize_caller(
                &caller,
                &session_arn,
                "lambda:InvokeFunction",
                function_arn,
                &nimbus_policy::Context::new(),
            )
            .map_err(|e| {
                format!(
                    "AccessDeniedException: the schedule's execution role {role_arn} may not \
                     invoke {function_arn}: {e}"
                )
            })
    }
}

impl nimbus_schedule::Invoker for ScheduleInvoker {
    fn deliver(
        &self,
        d: nimbus_schedule::Delivery,
    ) -> nimbus_schedule::BoxFuture<'_, std::result::Result<(), String>> {
        Box::pin(async move {
            let f = self
                .lambda
                .identity()
                .parse_function_ref(&d.function_arn, None)
                .map_err(|e| e.to_string())?;
            // A schedule invokes as its role (identity policies); a rule as
            // events.amazonaws.com (the function's resource policy).
            let principal = match &d.role_arn {
                Some(role) => {
                    self.role_may_invoke(role, &d.function_arn)?;
                    None
                }
                None => Some(d.principal.to_string()),
            };
            let origin = nimbus_lambda::EventOrigin {
                principal,
                source_arn: Some(d.source_arn),
                source_account: Some(d.source_account),
                trace_header: None,
            };
            self.lambda
                .invoke_event(&f, d.payload.into(), origin)
                .await
                .map(|_| ())
                .map_err(|e| format!("{}: {e}", e.code()))
        })
    }

    fn dead_letter(
        &self,
        d: nimbus_schedule::Delivery,
        dead_letter_arn: Option<String>,
        reason: String,
    ) -> nimbus_schedule::BoxFuture<'_, std::result::Result<(), String>> {
        Box::pin(async move {
            let f = self
                .lambda
                .identity()
                .parse_function_ref(&d.function_arn, None)
                .map_err(|e| e.to_string())?;
            let origin = nimbus_lambda::EventOrigin {
                principal: d.role_arn.is_none().then(|| d.principal.to_string()),
                source_arn: Some(d.source_arn),
                source_account: Some(d.source_account),
                trace_header: None,
            };
            let reason = format!("the scheduled delivery failed for good: {reason}");
            self.lambda
                .store_dead_letter(
                    &f,
                    d.payload.into(),
                    &origin,
                    dead_letter_arn.as_deref(),
                    &reason,
                )
                .await
                .map_err(|e| e.to_string())
        })
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
