//! Concurrency controls: the account's unreserved pool, functions'
//! reserved concurrency, and provisioned environments kept initialised for
//! a version.
//!
//! How an invocation is admitted ([`Engine::admit`]):
//! - a function with reserved concurrency takes one of its own permits or
//!   is throttled (`ReservedFunctionConcurrentInvocationLimitExceeded`);
//!   its reservation is carved out of the account, so it takes nothing
//!   else;
//! - an idle provisioned environment of the invoked version serves it if
//!   there is one; provisioned concurrency of a function without a
//!   reservation is carved out of the account too;
//! - otherwise a function without a reservation takes a permit of the
//!   unreserved pool (account limit minus every reservation and the
//!   provisioned concurrency of unreserved functions, set by the caller
//!   with [`Engine::set_unreserved_concurrency`]) or is throttled
//!   (`ConcurrentInvocationLimitExceeded`).
//!
//! Provisioned environments live outside the warm pools: the idle reaper
//! and any eviction of idle environments never see them. One that dies, or
//! whose credentials near expiry, is replaced in the background.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use nimbus_core::{LambdaError, LambdaResult};

use super::{Engine, FunctionHandle, INIT_TIMEOUT, version_key};
use crate::env::{Death, Env};
use crate::logs::{LogBatch, LogLine, now_ms};

/// `AWS_LAMBDA_INITIALIZATION_TYPE` of an environment started on demand.
pub(super) const ON_DEMAND: &str = "on-demand";
/// `AWS_LAMBDA_INITIALIZATION_TYPE` of a provisioned environment.
pub(super) const PROVISIONED: &str = "provisioned-concurrency";

/// A counting limit whose capacity may change while permits are out: a
/// lowered capacity takes effect as permits come back.
pub(super) struct Limiter {
    capacity: AtomicU32,
    used: AtomicU32,
}

/// One admitted invocation's share of a [`Limiter`], given back on drop.
pub(super) struct Permit(Arc<Limiter>);

impl Limiter {
    fn new(capacity: u32) -> Arc<Self> {
        Arc::new(Self {
            capacity: AtomicU32::new(capacity),
            used: AtomicU32::new(0),
        })
    }

    fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let mut used = self.used.load(Ordering::SeqCst);
        loop {
            if used >= self.capacity.load(Ordering::SeqCst) {
                return None;
            }
            match self.used.compare_exchange_weak(
                used,
                used + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return Some(Permit(self.clone())),
                Err(now) => used = now,
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The engine's concurrency state.
pub(super) struct Concurrency {
    unreserved: Arc<Limiter>,
    /// Reserved concurrency by function name.
    reserved: Mutex<HashMap<String, Arc<Limiter>>>,
    /// Provisioned environments by version key (`name:version`).
    provisioned: Mutex<HashMap<String, Arc<Provisioned>>>,
}

impl Concurrency {
    pub(super) fn new(account_limit: u32) -> Self {
        Self {
            unreserved: Limiter::new(account_limit),
            reserved: Mutex::default(),
            provisioned: Mutex::default(),
        }
    }
}

/// What admitted an invocation: the permit it holds until it ends and,
/// when a provisioned environment serves it, that environment.
pub(super) struct Admission {
    _permit: Option<Permit>,
    pub(super) provisioned: Option<(Arc<Provisioned>, Arc<Env>)>,
}

/// Where a provisioned configuration stands, as
/// GetProvisionedConcurrencyConfig reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionedStatus {
    /// Environments initialised and held for the version (idle or busy).
    pub allocated: u32,
    pub state: ProvisionedState,
}

/// `Status` of a provisioned concurrency configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProvisionedState {
    /// Environments are still being initialised.
    InProgress,
    /// All requested environments have been initialised.
    Ready,
    /// An environment failed to initialise; the reason is the
    /// `StatusReason`. Nothing more is started until the configuration is
    /// put again.
    Failed(String),
}

/// Environments kept initialised for one version.
pub(super) struct Provisioned {
    handle: FunctionHandle,
    engine: Weak<Engine>,
    state: Mutex<ProvState>,
}

struct ProvState {
    target: u32,
    idle: Vec<Arc<Env>>,
    /// Initialised environments held: idle ones and busy ones.
    allocated: u32,
    /// Environments being started and initialised.
    starting: u32,
    failure: Option<String>,
    /// Set once `target` environments were ready; a replacement being
    /// started later does not make the configuration IN_PROGRESS again.
    ready: bool,
    released: bool,
}

impl Provisioned {
    fn lock(&self) -> std::sync::MutexGuard<'_, ProvState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts environments until `target` are held or being started.
    fn fill(self: &Arc<Self>) {
        let Some(engine) = self.engine.upgrade() else {
            return;
        };
        let missing = {
            let mut st = self.lock();
            if st.released || st.failure.is_some() {
                return;
            }
            let missing = st.target.saturating_sub(st.allocated + st.starting);
            st.starting += missing;
            missing
        };
        for _ in 0..missing {
            let (prov, engine) = (self.clone(), engine.clone());
            tokio::spawn(async move { prov.start_one(&engine).await });
        }
    }

    async fn start_one(self: Arc<Self>, engine: &Engine) {
        let started = Instant::now();
        let result = match engine.start_env(&self.handle, PROVISIONED).await {
            Ok(env) => {
                let initialised = initialised(&env).await;
                self.log_init(engine, &env, started, initialised.as_ref().err());
                match initialised {
                    Ok(()) => {
                        // It was initialised ahead: no invocation reports
                        // an Init Duration for it.
                        env.claim_init_report();
                        Ok(env)
                    }
                    Err(reason) => {
                        env.kill();
                        Err(reason)
                    }
                }
            }
            Err(e) => Err(e.to_string()),
        };
        let mut st = self.lock();
        st.starting = st.starting.saturating_sub(1);
        match result {
            Ok(env) if !st.released && st.allocated < st.target => {
                st.allocated += 1;
                st.idle.push(env);
                if st.allocated >= st.target {
                    st.ready = true;
                }
            }
            Ok(env) => env.kill(),
            Err(reason) => {
                if !st.released {
                    tracing::warn!(
                        function = %self.handle.name,
                        version = %self.handle.version,
                        "provisioned environment failed to initialise: {reason}"
                    );
                    st.failure.get_or_insert(reason);
                }
            }
        }
    }

    /// What the runtime printed while it initialised goes to the
    /// environment's log stream now, as Lambda logs a provisioned
    /// environment's init when it happens.
    fn log_init(&self, engine: &Engine, env: &Env, started: Instant, failure: Option<&String>) {
        let mut lines = env.take_output();
        if let Some(reason) = failure {
            lines.push(LogLine {
                ts_ms: now_ms(),
                text: format!(
                    "INIT_REPORT Init Duration: {:.2} ms\tPhase: init\tStatus: error\t{reason}",
                    started.elapsed().as_secs_f64() * 1000.0
                ),
            });
        }
        if lines.is_empty() {
            return;
        }
        let _ = engine.log_sink.send(LogBatch {
            group: self.handle.log_group(),
            stream: env.log_stream.clone(),
            lines,
            role: self.handle.role.clone(),
            session: self.handle.name.clone(),
        });
    }

    /// An idle, usable environment, if one is ready.
    fn take_idle(self: &Arc<Self>) -> Option<Arc<Env>> {
        let mut st = self.lock();
        let mut dropped = false;
        let mut found = None;
        while let Some(env) = st.idle.pop() {
            if crate::env::usable(&env, &self.handle.revision) {
                found = Some(env);
                break;
            }
            env.kill();
            st.allocated = st.allocated.saturating_sub(1);
            dropped = true;
        }
        drop(st);
        if dropped {
            self.fill();
        }
        found
    }

    /// Takes back an environment after its invocation; a dead one is
    /// replaced.
    fn give_back(self: &Arc<Self>, env: Arc<Env>) {
        let mut st = self.lock();
        if !st.released
            && st.allocated <= st.target
            && crate::env::usable(&env, &self.handle.revision)
        {
            st.idle.push(env);
            return;
        }
        env.kill();
        st.allocated = st.allocated.saturating_sub(1);
        drop(st);
        self.fill();
    }

    /// Replaces idle environments that died or whose credentials near
    /// expiry.
    fn maintain(self: &Arc<Self>) {
        let mut st = self.lock();
        let before = st.idle.len();
        let revision = &self.handle.revision;
        st.idle.retain(|env| {
            let keep = crate::env::usable(env, revision);
            if !keep {
                env.kill();
            }
            keep
        });
        let gone = (before - st.idle.len()) as u32;
        st.allocated = st.allocated.saturating_sub(gone);
        drop(st);
        if gone > 0 {
            self.fill();
        }
    }

    /// Changes the number of environments: extra idle ones stop now, extra
    /// busy ones when their invocation ends.
    fn set_target(self: &Arc<Self>, target: u32) {
        let mut st = self.lock();
        if target > st.target {
            st.ready = false;
        }
        st.target = target;
        while st.allocated > st.target {
            let Some(env) = st.idle.pop() else { break };
            env.kill();
            st.allocated -= 1;
        }
        if st.allocated >= st.target {
            st.ready = true;
        }
        drop(st);
        self.fill();
    }

    /// Stops every environment: idle ones now, busy ones when their
    /// invocation ends.
    fn release(&self) {
        let mut st = self.lock();
        st.released = true;
        for env in st.idle.drain(..) {
            env.kill();
        }
        st.allocated = 0;
    }

    fn status(&self) -> ProvisionedStatus {
        let st = self.lock();
        let state = match &st.failure {
            Some(reason) => ProvisionedState::Failed(reason.clone()),
            None if st.ready || st.allocated >= st.target => ProvisionedState::Ready,
            None => ProvisionedState::InProgress,
        };
        ProvisionedStatus {
            allocated: st.allocated,
            state,
        }
    }
}

/// Waits until the runtime asks for its first invocation (the end of its
/// init phase), or fails with why it never will.
async fn initialised(env: &Env) -> Result<(), String> {
    let deadline = Instant::now() + INIT_TIMEOUT;
    loop {
        if env.shared.ready_at.get().is_some() {
            return Ok(());
        }
        if env.is_dead() {
            // The death watcher may trail the kill by a moment.
            tokio::time::sleep(Duration::from_millis(20)).await;
            return Err(init_failure(env));
        }
        if Instant::now() >= deadline {
            env.kill();
            return Err(format!(
                "Runtime.Unknown: the runtime did not finish its init phase within {} seconds",
                INIT_TIMEOUT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn init_failure(env: &Env) -> String {
    let reported = env
        .shared
        .init_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if let Some(e) = reported {
        let message = serde_json::from_slice::<serde_json::Value>(&e.body)
            .ok()
            .and_then(|v| v.get("errorMessage")?.as_str().map(str::to_string));
        return match message {
            Some(m) => format!("{}: {m}", e.error_type),
            None => e.error_type,
        };
    }
    let death = env.death().borrow().clone();
    match death {
        Some(Death::SpawnFailed(m)) => format!("Runtime.InvalidEntrypoint: {m}"),
        Some(Death::Exited(reason)) => {
            format!("Runtime.ExitError: Runtime exited with error: {reason}")
        }
        Some(Death::Killed) | None => {
            "Runtime.ExitError: the runtime was stopped during init".into()
        }
    }
}

fn throttle(reason: &'static str) -> LambdaError {
    LambdaError::TooManyRequests {
        message: "Rate Exceeded.".into(),
        reason,
        retry_after_s: 1,
    }
}

impl Engine {
    /// Sets the capacity of the unreserved pool: the account limit minus
    /// every reservation and the provisioned concurrency of functions
    /// without one. Invocations running beyond a lowered capacity finish.
    pub fn set_unreserved_concurrency(&self, n: u32) {
        self.concurrency
            .unreserved
            .capacity
            .store(n, Ordering::SeqCst);
    }

    /// Sets (`Some`) or removes (`None`) a function's reserved concurrency,
    /// shared by all its versions. `Some(0)` throttles every invocation.
    pub fn set_reserved_concurrency(&self, function: &str, reserved: Option<u32>) {
        let mut map = self
            .concurrency
            .reserved
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match reserved {
            None => {
                map.remove(function);
            }
            Some(n) => match map.get(function) {
                Some(l) => l.capacity.store(n, Ordering::SeqCst),
                None => {
                    map.insert(function.to_string(), Limiter::new(n));
                }
            },
        }
    }

    /// Keeps `count` environments of this version initialised and ready,
    /// started in the background now (`AWS_LAMBDA_INITIALIZATION_TYPE=
    /// provisioned-concurrency`). Putting the same version again changes
    /// the count, keeping what is running; a failed configuration starts
    /// over.
    pub fn provision(self: &Arc<Self>, f: FunctionHandle, count: u32) {
        let key = f.pool_key();
        let mut map = self
            .concurrency
            .provisioned
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(p) = map.get(&key)
            && p.handle.revision == f.revision
            && p.lock().failure.is_none()
        {
            let p = p.clone();
            drop(map);
            p.set_target(count);
            return;
        }
        let p = Arc::new(Provisioned {
            handle: f,
            engine: Arc::downgrade(self),
            state: Mutex::new(ProvState {
                target: count,
                idle: Vec::new(),
                allocated: 0,
                starting: 0,
                failure: None,
                ready: false,
                released: false,
            }),
        });
        if let Some(old) = map.insert(key, p.clone()) {
            old.release();
        }
        drop(map);
        p.fill();
    }

    /// Stops keeping environments for a version (its configuration, the
    /// version or the function was deleted).
    pub fn unprovision(&self, function: &str, version: &str) {
        let removed = self
            .concurrency
            .provisioned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&version_key(function, version));
        if let Some(p) = removed {
            p.release();
        }
    }

    /// Where a version's provisioned environments stand; `None` if none
    /// are configured.
    pub fn provisioned_status(&self, function: &str, version: &str) -> Option<ProvisionedStatus> {
        self.concurrency
            .provisioned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&version_key(function, version))
            .map(|p| p.status())
    }

    /// Admits an invocation or throttles it (see the module docs).
    pub(super) fn admit(&self, f: &FunctionHandle) -> LambdaResult<Admission> {
        let reserved = self
            .concurrency
            .reserved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&f.name)
            .cloned();
        let permit = match reserved {
            Some(l) => Some(
                l.try_acquire()
                    .ok_or_else(|| throttle("ReservedFunctionConcurrentInvocationLimitExceeded"))?,
            ),
            None => None,
        };
        let provisioned = self
            .concurrency
            .provisioned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&f.pool_key())
            .filter(|p| p.handle.revision == f.revision)
            .cloned();
        if let Some(p) = provisioned
            && let Some(env) = p.take_idle()
        {
            return Ok(Admission {
                _permit: permit,
                provisioned: Some((p, env)),
            });
        }
        let permit = match permit {
            Some(p) => p,
            None => self
                .concurrency
                .unreserved
                .try_acquire()
                .ok_or_else(|| throttle("ConcurrentInvocationLimitExceeded"))?,
        };
        Ok(Admission {
            _permit: Some(permit),
            provisioned: None,
        })
    }

    /// Hands a provisioned environment back after its invocation.
    pub(super) fn give_back_provisioned(&self, p: &Arc<Provisioned>, env: Arc<Env>) {
        p.give_back(env);
    }

    /// Replaces provisioned environments that died while idle or whose
    /// credentials near expiry (run by the reaper).
    pub(super) fn maintain_provisioned(&self) {
        let all: Vec<Arc<Provisioned>> = self
            .concurrency
            .provisioned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for p in all {
            p.maintain();
        }
    }

    /// Stops every provisioned environment (server shutdown).
    pub(super) fn shutdown_provisioned(&self) {
        let all: Vec<Arc<Provisioned>> = self
            .concurrency
            .provisioned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, p)| p)
            .collect();
        for p in all {
            p.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limiter_counts_permits_and_takes_a_new_capacity_as_they_return() {
        let l = Limiter::new(2);
        let a = l.try_acquire().unwrap();
        let b = l.try_acquire().unwrap();
        assert!(l.try_acquire().is_none());
        l.capacity.store(1, Ordering::SeqCst);
        drop(a);
        assert!(l.try_acquire().is_none(), "still one out, capacity one");
        drop(b);
        let _c = l.try_acquire().unwrap();
        let zero = Limiter::new(0);
        assert!(zero.try_acquire().is_none());
    }
}
