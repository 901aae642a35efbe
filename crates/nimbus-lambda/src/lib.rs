//! The Lambda service: creating, reading, changing, deleting and invoking
//! functions, as typed commands with typed results.
//!
//! The API crate turns HTTP requests into these calls and the results back
//! into AWS's JSON; this crate knows nothing of either. Control-plane calls
//! are synchronous (they write SQLite and unpack zips: callers on an async
//! runtime run them on a blocking thread); [`LambdaService::invoke`] is
//! async and touches only memory on its hot path.

mod async_queue;
mod concurrency;
mod event_config;
mod events;
mod logwriter;
mod metering;
mod permissions;
mod retention;
mod roles;
mod tags;
mod versions;

pub use async_queue::{AsyncSettings, AsyncStats, DEFAULT_DLQ, MAX_CHAIN_LENGTH};
pub use concurrency::ProvisionedConfig;
pub use event_config::{
    DEFAULT_MAX_EVENT_AGE_S, DEFAULT_MAX_RETRIES, EventInvokeConfig, EventInvokeConfigInput,
    RecursiveLoop,
};
pub use events::EventOrigin;
pub use logwriter::{LogBarrier, LogCommits, spawn_log_writer};
pub use metering::{
    DURATION_BUCKETS_S, FREE_TIER_GB_SECONDS, FREE_TIER_REQUESTS, FunctionMetrics, Histogram,
    Metering, Prices, UsageReport, UsageTotals, spawn_usage_writer, usage_report,
};
pub use nimbus_runtime::EnvironmentStats;
pub use nimbus_runtime::ProvisionedState;
pub use nimbus_store::DeadLetter;
pub use retention::spawn_retention_sweeper;
pub use roles::ExecutionRoleCredentials;
pub use versions::FunctionView;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use nimbus_core::function::{FunctionSettings, now};
use nimbus_core::{
    FunctionRef, FunctionSpec, FunctionState, Identity, LambdaError, LambdaResult,
    LastUpdateStatus, Qualifier, RuntimeId, limits,
};
use nimbus_iam::IamService;
use nimbus_runtime::{Engine, FunctionHandle, InvokeOutcome, InvokeRequest};
use nimbus_store::{BlobStore, Store, UnzipError, UnzipLimits, unpack_zip};

/// How a client asked to invoke (`X-Amz-Invocation-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvocationType {
    RequestResponse,
    Event,
    DryRun,
}

/// The result of an Invoke call and the version that ran it.
#[derive(Debug)]
pub struct InvokeResponse {
    /// `$LATEST` or a version number (`X-Amz-Executed-Version`).
    pub executed_version: String,
    pub invoked: Invoked,
}

/// What became of an Invoke call.
#[derive(Debug)]
pub enum Invoked {
    /// A synchronous invocation ran (successfully or with a function error).
    Completed(InvokeOutcome),
    /// An `Event` invocation was accepted.
    Accepted,
    /// A `DryRun` found the function invocable.
    Validated,
}

/// A new function, as CreateFunction describes it.
#[derive(Debug, Clone, Default)]
pub struct CreateFunction {
    pub name: String,
    pub settings: FunctionSettings,
    pub zip: Option<Vec<u8>>,
    pub package_type: Option<String>,
    pub architectures: Option<Vec<String>>,
    pub tags: BTreeMap<String, String>,
    /// `Publish`: also publish version 1 (the response describes it).
    pub publish: bool,
}

/// Account-wide limits and usage, as GetAccountSettings reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountSettings {
    pub concurrent_executions: u32,
    pub unreserved_concurrent_executions: u32,
    pub total_code_size: u64,
    pub function_count: u64,
}

struct Live {
    /// `$LATEST`, with everything that belongs to the function as a whole
    /// (versions, aliases, concurrency settings).
    spec: FunctionSpec,
    /// How the engine runs `$LATEST`.
    handle: Arc<FunctionHandle>,
    /// How the engine runs each published version.
    versions: HashMap<u32, Arc<FunctionHandle>>,
}

/// The Lambda service over a store, a blob store and an engine.
pub struct LambdaService {
    identity: Identity,
    store: Arc<dyn Store>,
    blobs: BlobStore,
    code_root: PathBuf,
    engine: Arc<Engine>,
    /// Execution roles are checked against IAM.
    iam: Arc<IamService>,
    live: RwLock<HashMap<String, Arc<Live>>>,
    /// Serialises control-plane writes so read-modify-write is atomic.
    writes: std::sync::Mutex<()>,
    /// Counts every invocation (see `metering`).
    metering: Arc<Metering>,
    /// Schedules the durable queue of `Event` invocations.
    queue: Arc<async_queue::AsyncQueue>,
}

impl std::fmt::Debug for LambdaService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LambdaService").finish_non_exhaustive()
    }
}

impl LambdaService {
    /// Opens the service over `data_dir` (blobs and unpacked code live
    /// there) and loads every stored function.
    pub fn open(
        identity: Identity,
        store: Arc<dyn Store>,
        data_dir: &Path,
        engine: Arc<Engine>,
        iam: Arc<IamService>,
    ) -> LambdaResult<Self> {
        let blobs = BlobStore::open(&data_dir.join("blobs")).map_err(LambdaError::internal)?;
        let code_root = data_dir.join("code");
        std::fs::create_dir_all(&code_root).map_err(LambdaError::internal)?;
        let svc = Self {
            identity,
            store,
            blobs,
            code_root,
            engine,
            iam,
            live: RwLock::new(HashMap::new()),
            writes: std::sync::Mutex::new(()),
            metering: Arc::default(),
            queue: Arc::default(),
        };
        svc.load_async_configs()?;
        for spec in svc.store.list_functions().map_err(LambdaError::internal)? {
            // Code directories are a cache of the blobs: rebuild if missing.
            // Published versions keep the package they were published with.
            let digests: std::collections::BTreeSet<&str> = std::iter::once(&spec)
                .chain(&spec.versions)
                .map(|s| s.code_sha256.as_str())
                .collect();
            for sha in digests {
                match svc.blobs.get(sha).map_err(LambdaError::internal)? {
                    Some(zip) => {
                        svc.unpack(sha, &zip)?;
                    }
                    None => {
                        tracing::error!(function = %spec.name, "deployment package {sha} missing from the blob store")
                    }
                }
            }
            if spec.reserved_concurrency.is_some() {
                svc.engine
                    .set_reserved_concurrency(&spec.name, spec.reserved_concurrency);
            }
            svc.publish_live(spec);
        }
        svc.update_unreserved();
        Ok(svc)
    }

    /// The region and account of every ARN.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The stored deployment package with this hex digest.
    pub fn code_package(&self, sha256_hex: &str) -> LambdaResult<Option<Vec<u8>>> {
        if sha256_hex.len() != 64 || !sha256_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        self.blobs.get(sha256_hex).map_err(LambdaError::internal)
    }

    /// A setting of the server's own, created with `init` on first use.
    pub fn server_setting(&self, key: &str, init: impl FnOnce() -> String) -> LambdaResult<String> {
        let _w = self.write_guard();
        if let Some(v) = self.store.get_setting(key).map_err(LambdaError::internal)? {
            return Ok(v);
        }
        let v = init();
        self.store
            .put_setting(key, &v)
            .map_err(LambdaError::internal)?;
        Ok(v)
    }

    fn write_guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn code_dir(&self, sha: &str) -> PathBuf {
        self.code_root.join(sha)
    }

    /// Unpacks a package once per digest; every function and environment
    /// with the same code shares the directory.
    fn unpack(&self, sha: &str, zip: &[u8]) -> LambdaResult<u64> {
        let dest = self.code_dir(sha);
        if dest.is_dir() {
            return Ok(0);
        }
        let tmp = self
            .code_root
            .join(format!(".tmp-{sha}-{}", uuid::Uuid::new_v4().simple()));
        let limits = UnzipLimits {
            max_unzipped: limits::CODE_UNZIPPED_MAX,
            max_entries: limits::CODE_MAX_ENTRIES,
        };
        let size = unpack_zip(zip, &tmp, limits).map_err(|e| match e {
            UnzipError::Io(io) => LambdaError::internal(io),
            other => LambdaError::InvalidParameterValue(other.to_string()),
        })?;
        if let Err(e) = std::fs::rename(&tmp, &dest) {
            let _ = std::fs::remove_dir_all(&tmp);
            if !dest.is_dir() {
                return Err(LambdaError::internal(e));
            }
        }
        Ok(size)
    }

    /// How the engine runs `spec` (`$LATEST` or a published version);
    /// `tags` are the function's (`$LATEST`'s).
    fn handle(&self, spec: &FunctionSpec, tags: &BTreeMap<String, String>) -> Arc<FunctionHandle> {
        Arc::new(FunctionHandle {
            name: spec.name.clone(),
            arn: match spec.version {
                None => self.identity.function_arn(&spec.name),
                Some(n) => self.identity.qualified_arn(&spec.name, &n.to_string()),
            },
            runtime: spec.runtime.clone(),
            handler: spec.handler.clone(),
            memory_mb: spec.memory_mb,
            timeout_s: spec.timeout_s,
            environment: spec
                .environment
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            role: spec.role.clone(),
            code_dir: self.code_dir(&spec.code_sha256),
            ephemeral_storage_mb: spec.ephemeral_storage_mb,
            revision: spec.revision_id.clone(),
            version: spec.version_label(),
            egress: nimbus_core::function::egress_allowed(tags),
        })
    }

    fn publish_live(&self, spec: FunctionSpec) {
        let handle = self.handle(&spec, &spec.tags);
        let versions = spec
            .versions
            .iter()
            .filter_map(|v| Some((v.version?, self.handle(v, &spec.tags))))
            .collect();
        let name = spec.name.clone();
        self.live.write().unwrap_or_else(|e| e.into_inner()).insert(
            name,
            Arc::new(Live {
                spec,
                handle,
                versions,
            }),
        );
    }

    fn live(&self, f: &FunctionRef) -> LambdaResult<Arc<Live>> {
        let not_found = || {
            let mut arn = self.identity.function_arn(&f.name);
            if let Some(q) = &f.qualifier {
                arn = format!("{arn}:{q}");
            }
            LambdaError::ResourceNotFound(format!("Function not found: {arn}"))
        };
        if f.qualifier.as_deref().is_some_and(|q| q != "$LATEST") {
            return Err(not_found());
        }
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&f.name)
            .cloned()
            .ok_or_else(not_found)
    }

    /// Stores a package: checks its size, stores the blob and unpacks it.
    /// Returns (hex digest, zipped size).
    fn store_package(&self, zip: &[u8]) -> LambdaResult<(String, u64)> {
        if zip.len() as u64 > limits::CODE_ZIPPED_MAX {
            return Err(LambdaError::RequestEntityTooLarge(format!(
                "Zipped size must be smaller than {} bytes",
                limits::CODE_ZIPPED_MAX
            )));
        }
        let total = self.total_code_size();
        if total + zip.len() as u64 > limits::TOTAL_CODE_MAX {
            return Err(LambdaError::CodeStorageExceeded(
                "Code storage limit exceeded.".into(),
            ));
        }
        // Unpack before storing, so a bad zip leaves nothing behind.
        let sha = sha256_hex(zip);
        self.unpack(&sha, zip)?;
        let stored = self.blobs.put(zip).map_err(LambdaError::internal)?;
        debug_assert_eq!(stored, sha);
        Ok((sha, zip.len() as u64))
    }

    /// Code storage in use: every function's `$LATEST` and published
    /// versions, as Lambda counts it.
    fn total_code_size(&self) -> u64 {
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .flat_map(|l| std::iter::once(&l.spec).chain(&l.spec.versions))
            .map(|s| s.code_size)
            .sum()
    }

    /// CreateFunction.
    pub fn create_function(&self, cmd: CreateFunction) -> LambdaResult<FunctionSpec> {
        let name = self.identity.parse_function_ref(&cmd.name, None)?;
        if name.qualifier.is_some() {
            return Err(LambdaError::InvalidParameterValue(
                "Function name cannot include a qualifier".into(),
            ));
        }
        let s = &cmd.settings;
        s.validate()?;
        nimbus_core::function::validate_tags(&cmd.tags)?;
        if let Some(pt) = cmd.package_type.as_deref()
            && pt != "Zip"
        {
            return Err(LambdaError::InvalidParameterValue(format!(
                "PackageType {pt} is not supported by nimbus yet; use Zip"
            )));
        }
        let runtime_id = s.runtime.as_deref().ok_or_else(|| {
            LambdaError::InvalidParameterValue("Runtime and Handler are mandatory parameters for functions created with deployment packages.".into())
        })?;
        let runtime = RuntimeId::parse(runtime_id)?;
        self.engine.catalog().check(&runtime)?;
        let handler = s.handler.clone().ok_or_else(|| {
            LambdaError::InvalidParameterValue("Runtime and Handler are mandatory parameters for functions created with deployment packages.".into())
        })?;
        let role = s
            .role
            .clone()
            .ok_or_else(|| LambdaError::InvalidParameterValue("Role is required".into()))?;
        self.iam
            .check_lambda_role(&role)
            .map_err(LambdaError::InvalidParameterValue)?;
        let architectures = cmd.architectures.unwrap_or_else(|| vec!["x86_64".into()]);
        validate_architectures(&architectures)?;
        let zip = cmd.zip.ok_or_else(|| {
            LambdaError::InvalidParameterValue(
                "Please provide a source for function code (ZipFile).".into(),
            )
        })?;
        let _w = self.write_guard();
        if self
            .live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&name.name)
        {
            return Err(LambdaError::ResourceConflict(format!(
                "Function already exist: {}",
                name.name
            )));
        }
        let (code_sha256, code_size) = self.store_package(&zip)?;
        let spec = FunctionSpec {
            name: name.name,
            runtime,
            role,
            handler,
            description: s.description.clone().unwrap_or_default(),
            timeout_s: s.timeout_s.map_or(limits::TIMEOUT_DEFAULT_S, |t| t as u32),
            memory_mb: s.memory_mb.map_or(limits::MEMORY_DEFAULT_MB, |m| m as u32),
            ephemeral_storage_mb: s
                .ephemeral_storage_mb
                .map_or(limits::EPHEMERAL_MIN_MB, |e| e as u32),
            environment: s.environment.clone().unwrap_or_default(),
            architectures,
            tags: cmd.tags,
            code_sha256,
            code_size,
            last_modified: now(),
            revision_id: uuid::Uuid::new_v4().to_string(),
            state: FunctionState::Active,
            last_update_status: LastUpdateStatus::Successful,
            permissions: Vec::new(),
            version: None,
            versions: Vec::new(),
            last_version: 0,
            aliases: Vec::new(),
            reserved_concurrency: None,
            provisioned: Vec::new(),
            dead_letter_target: self.dead_letter_target(s.dead_letter_target.as_deref())?,
        };
        if !self
            .store
            .create_function(&spec)
            .map_err(LambdaError::internal)?
        {
            return Err(LambdaError::ResourceConflict(format!(
                "Function already exist: {}",
                spec.name
            )));
        }
        self.publish_live(spec.clone());
        if cmd.publish {
            return self.publish_locked(&spec.name, None);
        }
        Ok(spec)
    }

    /// ListFunctions: up to `max_items` functions after `marker` (the
    /// name of the last function of the previous page), ordered by name,
    /// and the marker of the next page. With `all_versions`
    /// (`FunctionVersion=ALL`) each function's published versions follow
    /// its `$LATEST`, and a marker may be `name:version`.
    pub fn list_functions(
        &self,
        marker: Option<&str>,
        max_items: usize,
        all_versions: bool,
    ) -> LambdaResult<(Vec<FunctionSpec>, Option<String>)> {
        let after = marker.map(|m| match m.rsplit_once(':') {
            Some((name, n)) => (name, n.parse::<u32>().unwrap_or(u32::MAX)),
            None => (m, 0),
        });
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        let mut entries: Vec<(&str, u32, &FunctionSpec)> = Vec::new();
        for l in live.values() {
            entries.push((&l.spec.name, 0, &l.spec));
            if all_versions {
                entries.extend(
                    l.spec
                        .versions
                        .iter()
                        .filter_map(|v| Some((l.spec.name.as_str(), v.version?, v))),
                );
            }
        }
        entries.retain(|(name, n, _)| after.is_none_or(|a| (*name, *n) > a));
        entries.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let page: Vec<FunctionSpec> = entries
            .iter()
            .take(max_items)
            .map(|(_, _, s)| (*s).clone())
            .collect();
        let next = (entries.len() > max_items)
            .then(|| {
                entries.get(max_items - 1).map(|(name, n, _)| match n {
                    0 => name.to_string(),
                    n => format!("{name}:{n}"),
                })
            })
            .flatten();
        Ok((page, next))
    }

    fn check_revision(spec: &FunctionSpec, revision_id: Option<&str>) -> LambdaResult<()> {
        match revision_id {
            Some(r) if r != spec.revision_id => Err(LambdaError::PreconditionFailed(
                "The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id".into(),
            )),
            _ => Ok(()),
        }
    }

    fn commit(&self, mut spec: FunctionSpec) -> LambdaResult<FunctionSpec> {
        spec.last_modified = now();
        spec.revision_id = uuid::Uuid::new_v4().to_string();
        spec.last_update_status = LastUpdateStatus::Successful;
        self.store
            .update_function(&spec)
            .map_err(LambdaError::internal)?;
        self.engine.retire(&spec.name);
        self.publish_live(spec.clone());
        Ok(spec)
    }

    /// UpdateFunctionCode. With `dry_run` the package is checked, not
    /// applied; with `publish` a version is published after the update and
    /// the result describes it.
    pub fn update_function_code(
        &self,
        f: &FunctionRef,
        zip: Option<Vec<u8>>,
        revision_id: Option<&str>,
        dry_run: bool,
        publish: bool,
        architectures: Option<Vec<String>>,
    ) -> LambdaResult<FunctionSpec> {
        if f.qualifier.is_some() {
            return Err(LambdaError::InvalidParameterValue(
                "UpdateFunctionCode does not accept a qualifier".into(),
            ));
        }
        let zip = zip.ok_or_else(|| {
            LambdaError::InvalidParameterValue(
                "Please provide a source for function code (ZipFile).".into(),
            )
        })?;
        if let Some(a) = &architectures {
            validate_architectures(a)?;
        }
        let _w = self.write_guard();
        let mut spec = self.live(f)?.spec.clone();
        Self::check_revision(&spec, revision_id)?;
        let (sha, size) = self.store_package(&zip)?;
        spec.code_sha256 = sha;
        spec.code_size = size;
        if let Some(a) = architectures {
            spec.architectures = a;
        }
        if dry_run {
            return Ok(spec);
        }
        let old = self.live(f)?.spec.code_sha256.clone();
        let spec = self.commit(spec)?;
        self.collect_code(&old);
        if publish {
            return self.publish_locked(&spec.name, None);
        }
        Ok(spec)
    }

    /// UpdateFunctionConfiguration.
    pub fn update_function_configuration(
        &self,
        f: &FunctionRef,
        s: FunctionSettings,
        revision_id: Option<&str>,
    ) -> LambdaResult<FunctionSpec> {
        if f.qualifier.is_some() {
            return Err(LambdaError::InvalidParameterValue(
                "UpdateFunctionConfiguration does not accept a qualifier".into(),
            ));
        }
        s.validate()?;
        let _w = self.write_guard();
        let mut spec = self.live(f)?.spec.clone();
        Self::check_revision(&spec, revision_id)?;
        if let Some(r) = &s.runtime {
            let runtime = RuntimeId::parse(r)?;
            self.engine.catalog().check(&runtime)?;
            spec.runtime = runtime;
        }
        if let Some(v) = s.role {
            self.iam
                .check_lambda_role(&v)
                .map_err(LambdaError::InvalidParameterValue)?;
            spec.role = v;
        }
        if let Some(v) = s.handler {
            spec.handler = v;
        }
        if let Some(v) = s.description {
            spec.description = v;
        }
        if let Some(v) = s.timeout_s {
            spec.timeout_s = v as u32;
        }
        if let Some(v) = s.memory_mb {
            spec.memory_mb = v as u32;
        }
        if let Some(v) = s.ephemeral_storage_mb {
            spec.ephemeral_storage_mb = v as u32;
        }
        if let Some(v) = s.environment {
            spec.environment = v;
        }
        if let Some(v) = s.dead_letter_target.as_deref() {
            spec.dead_letter_target = self.dead_letter_target(Some(v))?;
        }
        self.commit(spec)
    }

    /// DeleteFunction: the whole function without a qualifier, one
    /// published version with one.
    pub fn delete_function(&self, f: &FunctionRef) -> LambdaResult<()> {
        match f.parsed_qualifier()? {
            None => {}
            Some(Qualifier::Version(n)) => return self.delete_version(f, n),
            Some(Qualifier::Latest) => {
                self.live(f)?;
                return Err(LambdaError::InvalidParameterValue(
                    "$LATEST version cannot be deleted without deleting the function.".into(),
                ));
            }
            Some(Qualifier::Alias(_)) => {
                self.resolve(f)?;
                return Err(LambdaError::InvalidParameterValue(
                    "An alias cannot be deleted with DeleteFunction; use DeleteAlias.".into(),
                ));
            }
        }
        let _w = self.write_guard();
        let live = self.live(f)?;
        self.store
            .delete_function(&f.name)
            .map_err(LambdaError::internal)?;
        self.live
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&f.name);
        self.engine.retire(&f.name);
        for v in live.versions.keys() {
            self.engine.retire_version(&f.name, &v.to_string());
        }
        if live.spec.reserved_concurrency.is_some() {
            self.engine.set_reserved_concurrency(&f.name, None);
        }
        self.update_unreserved();
        self.drop_async_configs(&f.name);
        for s in std::iter::once(&live.spec).chain(&live.spec.versions) {
            self.collect_code(&s.code_sha256);
        }
        Ok(())
    }

    /// Removes a package and its unpacked code once no function uses it.
    fn collect_code(&self, sha: &str) {
        let used = self
            .live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .flat_map(|l| std::iter::once(&l.spec).chain(&l.spec.versions))
            .any(|s| s.code_sha256 == sha);
        if used {
            return;
        }
        if let Err(e) = self.blobs.remove(sha) {
            tracing::warn!("removing unused package {sha}: {e}");
        }
        // Environments still running the old code keep their open files; the
        // directory goes once they are gone, which retire() has arranged.
        let _ = std::fs::remove_dir_all(self.code_dir(sha));
    }

    /// GetAccountSettings.
    pub fn account_settings(&self) -> AccountSettings {
        let unreserved = self.unreserved_concurrency(None);
        let total_code_size = self.total_code_size();
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        AccountSettings {
            concurrent_executions: self.engine.account_concurrency(),
            unreserved_concurrent_executions: unreserved,
            total_code_size,
            function_count: live.len() as u64,
        }
    }

    /// Invoke. Payload checks (size, JSON) come first, as Lambda does them.
    /// A qualifier picks the version: `$LATEST`, a number, or an alias
    /// (whose routing weights pick between its two versions).
    pub async fn invoke(
        self: &Arc<Self>,
        f: &FunctionRef,
        kind: InvocationType,
        payload: Bytes,
        client_context: Option<String>,
    ) -> LambdaResult<InvokeResponse> {
        let target = self.resolve(f)?;
        let max = if kind == InvocationType::Event {
            limits::ASYNC_PAYLOAD_MAX
        } else {
            limits::SYNC_PAYLOAD_MAX
        };
        let payload = events::check_payload(payload, max)?;
        let handle = target.pick_version();
        let request = InvokeRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            payload,
            client_context,
            invoked_arn: f
                .qualifier
                .as_ref()
                .map(|q| self.identity.qualified_arn(&f.name, q)),
            trace_header: None,
        };
        let executed_version = handle.version.clone();
        let invoked = match kind {
            InvocationType::DryRun => Invoked::Validated,
            InvocationType::RequestResponse => Invoked::Completed(
                self.metering
                    .run(&handle.name, self.engine.invoke(&handle, request))
                    .await?,
            ),
            InvocationType::Event => {
                self.enqueue(f, request.payload, &EventOrigin::default())
                    .await?;
                Invoked::Accepted
            }
        };
        Ok(InvokeResponse {
            executed_version,
            invoked,
        })
    }
}

fn validate_architectures(a: &[String]) -> LambdaResult<()> {
    let host = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "x86_64"
    };
    match a {
        [one] if one == host => Ok(()),
        [one] if one == "x86_64" || one == "arm64" => Err(LambdaError::InvalidParameterValue(
            format!("This nimbus host runs {host} functions only; {one} was requested"),
        )),
        _ => Err(LambdaError::Validation(format!(
            "1 validation error detected: Value '{a:?}' at 'architectures' failed to satisfy constraint: \
             Member must have length less than or equal to 1 and each member must be one of [x86_64, arm64]"
        ))),
    }
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(data);
    d.iter().map(|b| format!("{b:02x}")).collect()
}
