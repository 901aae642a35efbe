//! Jails prepared ahead of demand ("spares"), one runtime at a time.
//!
//! A cold start spends most of its time on what does not depend on the
//! function: namespaces, the root filesystem, the cgroup, the interpreter
//! starting and loading nimbus's bootstrap. A spare has done all of that
//! and waits, its runtime blocked reading its assignment; a cold start that
//! finds one only binds the code, sets the memory limit and hands over the
//! environment (see `nimbus_sandbox::Sandbox::assign`), then the bootstrap
//! imports the handler. After every cold start of a runtime the engine
//! prepares the next spare of that runtime in the background, so steady
//! traffic always finds one; a runtime nobody starts has none (at most one
//! per runtime exists, and it is reaped with idle environments).
//!
//! Only nimbus's own Python and Node.js bootstraps can wait for an
//! assignment, and only when the function's variables do not change how the
//! interpreter itself starts (`PYTHON*`, `NODE_*`, `LD_*`, an exec
//! wrapper): those functions, `provided` runtimes and functions without
//! network egress start cold.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Weak};
use std::time::Duration;

use nimbus_core::RuntimeId;
use nimbus_sandbox::SandboxSpec;
use nimbus_sandbox::cgroup::Limits;
use tokio::sync::mpsc;

use super::{Engine, FunctionHandle, JAIL_PIDS, JailSettings};
use crate::env::{CgroupRequest, Launch, Prepared, prepare};

/// The memory limit of a spare until it is assigned (then the function's
/// MemorySize): Lambda's largest size.
const SPARE_MEMORY_MB: u64 = 10_240;

/// `/tmp` of a spare until it is assigned (Lambda's default).
const SPARE_TMP_MB: u32 = 512;

/// Spares of each runtime, and the queue of runtimes wanting one.
pub(super) struct Spares {
    ready: Mutex<HashMap<String, Vec<Prepared>>>,
    wanted: mpsc::UnboundedSender<Want>,
}

/// A runtime that should have a spare, for code under `code_root`.
struct Want {
    runtime: RuntimeId,
    code_root: PathBuf,
}

impl Spares {
    /// The spares, and the receiving end of their work queue for
    /// [`run`].
    pub(super) fn new() -> (Self, SpareQueue) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                ready: Mutex::new(HashMap::new()),
                wanted: tx,
            },
            SpareQueue(rx),
        )
    }

    fn take(&self, runtime: &RuntimeId, code_root: &Path) -> Option<Prepared> {
        let mut ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        let list = ready.get_mut(&runtime.to_string())?;
        while let Some(p) = list.pop() {
            if p.code_root.as_deref() == Some(code_root) {
                return Some(p);
            }
        }
        None
    }

    /// Kills spares older than `max_age` (all of them with zero).
    pub(super) fn reap(&self, max_age: Duration) {
        let mut ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        for list in ready.values_mut() {
            list.retain(|p| p.created.elapsed() < max_age);
        }
    }
}

/// The work queue of [`run`].
pub(super) struct SpareQueue(mpsc::UnboundedReceiver<Want>);

/// Prepares spares as they are wanted, one at a time (preparing is CPU
/// work that should not compete with invocations more than it must).
pub(super) async fn run(weak: Weak<Engine>, mut queue: SpareQueue) {
    while let Some(want) = queue.0.recv().await {
        let Some(engine) = weak.upgrade() else {
            return;
        };
        if engine.spares_of(&want.runtime) > 0 {
            continue;
        }
        let Some((spec, jail, limits)) = engine.spare_launch(&want) else {
            continue;
        };
        drop(engine);
        let prepared = tokio::task::spawn_blocking(move || prepare(&spec, jail, limits)).await;
        let Some(engine) = weak.upgrade() else {
            return;
        };
        match prepared {
            Ok(Ok(p)) => engine.add_spare(&want.runtime, p),
            Ok(Err(e)) => tracing::warn!(runtime = %want.runtime, "preparing a sandbox: {e}"),
            Err(e) => tracing::warn!("preparing a sandbox: {e}"),
        }
    }
}

impl Engine {
    fn spares_of(&self, runtime: &RuntimeId) -> usize {
        self.spares
            .ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&runtime.to_string())
            .map_or(0, Vec::len)
    }

    fn add_spare(&self, runtime: &RuntimeId, p: Prepared) {
        self.spares
            .ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(runtime.to_string())
            .or_default()
            .push(p);
    }

    /// What a spare of this runtime is started with: the bootstrap, an
    /// environment that names no function, and a cgroup with room for any.
    fn spare_launch(
        &self,
        want: &Want,
    ) -> Option<(
        SandboxSpec,
        nimbus_sandbox::jail::JailSpec,
        Option<CgroupRequest>,
    )> {
        let j = self.jail_settings()?;
        let (task_root, runtime_root) = (PathBuf::from("/var/task"), PathBuf::from("/var/runtime"));
        let launch = self
            .config
            .catalog
            .launch(
                &want.runtime,
                &self.config.runtime_dir,
                &runtime_root,
                &task_root,
            )
            .ok()?;
        let mut env = self.base_environment(&task_root, &runtime_root);
        self.jail_environment(j, &mut env);
        env.push((
            "NIMBUS_ASSIGN_FD".into(),
            nimbus_sandbox::jail::ASSIGN_FD.to_string(),
        ));
        let spec = SandboxSpec {
            program: launch.program,
            args: launch.args,
            env,
            cwd: task_root,
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut jail = self.jail_spec(j, &want.code_root, SPARE_TMP_MB, &id);
        jail.code_root = Some(want.code_root.clone());
        let limits = j.cgroups.clone().map(|root| {
            (
                root,
                id,
                Limits {
                    memory_bytes: SPARE_MEMORY_MB * 1024 * 1024,
                    cpu_millis: 0,
                    pids: JAIL_PIDS,
                },
            )
        });
        Some((spec, jail, limits))
    }

    /// A spare assigned to `f`, if one is ready (and the next one asked
    /// for). `env` is the function's complete environment.
    pub(super) fn assign_spare(
        &self,
        f: &FunctionHandle,
        env: &[(String, String)],
        cpu_millis: u32,
    ) -> Option<Launch> {
        if !self.config.prepared_sandboxes || !assignable(f) {
            return None;
        }
        let code_root = f.code_dir.parent()?;
        let code = f.code_dir.file_name()?.to_str()?;
        let _ = self.spares.wanted.send(Want {
            runtime: f.runtime.clone(),
            code_root: code_root.to_path_buf(),
        });
        let p = self.spares.take(&f.runtime, code_root)?;
        if let Some(cg) = &p.cgroup
            && let Err(e) = cg.set_memory_limit(u64::from(f.memory_mb) * 1024 * 1024)
        {
            tracing::debug!("a spare cannot take the function's memory limit: {e}");
            return None;
        }
        if let Err(e) = p.sandbox.assign(code, f.ephemeral_storage_mb, env) {
            tracing::debug!("assigning a spare: {e}");
            return None;
        }
        Some(Launch::Prepared {
            prepared: Box::new(p),
            endpoint: self.endpoint_server(),
            cpu_millis,
        })
    }

    fn jail_settings(&self) -> Option<&JailSettings> {
        match &self.config.isolation {
            super::Isolation::Jail(j) => Some(j),
            super::Isolation::Process => None,
        }
    }
}

/// Whether `f` can run in a spare: nimbus's own bootstraps, and no
/// variable that changes how the interpreter itself starts.
fn assignable(f: &FunctionHandle) -> bool {
    // Spares are prepared with egress; `nimbus:network=none` starts cold.
    f.egress
        && matches!(f.runtime, RuntimeId::Python { .. } | RuntimeId::Node { .. })
        && !f.environment.iter().any(|(k, _)| {
            k.starts_with("PYTHON")
                || k.starts_with("NODE_")
                || k.starts_with("LD_")
                || k == "AWS_LAMBDA_EXEC_WRAPPER"
        })
}
