//! The durable queue of asynchronous (`Event`) invocations: retries,
//! destinations, the dead-letter store and recursive-loop detection.
//!
//! Every accepted event is a row in the store before its 202 (see
//! `nimbus_store::QueuedEvent`) and stays there until its last attempt is
//! over (and that attempt's logs are committed); the memory here only
//! schedules. A restart loads whatever is still queued and runs it again,
//! so each accepted event runs to completion at least once.
//!
//! Retries follow Lambda: a function error is retried
//! `MaximumRetryAttempts` times (default 2), `base` then `2 × base` later
//! (`--async-retry-base-ms`, 1 minute by default); throttles and platform
//! errors are retried with a backoff that grows with the event's age, from
//! `base / 60` up to `5 × base`, until `MaximumEventAgeInSeconds`. An event
//! that fails for good goes to its `OnFailure` destination, or else to the
//! dead-letter store (queue `default`), so nothing is silently lost.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use nimbus_core::{FunctionRef, LambdaError, LambdaResult};
use nimbus_runtime::{InvokeOutcome, InvokeRequest};
use nimbus_store::{DeadLetter, QueuedEvent};
use serde_json::{Value, json};

use crate::event_config::{AsyncConfigs, Destination, RecursiveLoop};
use crate::events::EventOrigin;
use crate::{LambdaService, LogBarrier};

/// How many times one function may run in one chain of events before
/// Lambda (and nimbus) stops the loop.
pub const MAX_CHAIN_LENGTH: u32 = 16;

/// The dead-letter queue of failed events that had no failure destination.
pub const DEFAULT_DLQ: &str = "default";

/// Timing of the queue's retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsyncSettings {
    /// The first retry after a function error comes this long after it,
    /// the second twice as long (Lambda: about 1 and 2 minutes).
    pub retry_base_ms: u64,
}

impl Default for AsyncSettings {
    fn default() -> Self {
        Self {
            retry_base_ms: 60_000,
        }
    }
}

/// The queue's state for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AsyncStats {
    /// Events accepted and not finished (waiting or running).
    pub depth: u64,
    pub in_flight: u64,
    /// Age of the oldest unfinished event.
    pub oldest_age_ms: u64,
    /// Totals since the server started.
    pub accepted: u64,
    pub succeeded: u64,
    /// Retries after a function error.
    pub retries: u64,
    /// Retries after a throttle or platform error.
    pub throttle_retries: u64,
    /// Events stored in the dead-letter store.
    pub dead_lettered: u64,
    /// Records sent to destination functions.
    pub destination_deliveries: u64,
    pub recursive_loops_stopped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    succeeded: AtomicU64,
    retries: AtomicU64,
    throttle_retries: AtomicU64,
    dead_lettered: AtomicU64,
    destination_deliveries: AtomicU64,
    recursive_loops_stopped: AtomicU64,
}

#[derive(Debug, Default)]
struct Schedule {
    /// Waiting events by (due time, arrival order).
    pending: BTreeMap<(i64, u64), QueuedEvent>,
    /// Running events: id → (enqueued time, function).
    in_flight: HashMap<String, (i64, String)>,
    /// Running events per function.
    running: HashMap<String, usize>,
    /// Every id known (pending or in flight), so a reload adds none twice.
    known: std::collections::HashSet<String>,
    seq: u64,
}

type Commit = (
    QueuedEvent,
    tokio::sync::oneshot::Sender<Result<(), String>>,
);

/// The scheduling half of the queue (the rows are the durable half).
#[derive(Debug, Default)]
pub(crate) struct AsyncQueue {
    /// To the thread that commits accepted events (see `spawn_committer`).
    committer: OnceLock<tokio::sync::mpsc::UnboundedSender<Commit>>,
    schedule: Mutex<Schedule>,
    wake: tokio::sync::Notify,
    settings: OnceLock<AsyncSettings>,
    barrier: OnceLock<LogBarrier>,
    stopping: AtomicBool,
    counters: Counters,
    pub(crate) configs: RwLock<AsyncConfigs>,
}

/// Starts the thread that commits accepted events: whatever arrived while
/// one transaction committed goes into the next, so concurrent `Event`
/// invocations share an fsync instead of queueing for one each. Each
/// caller hears back only once its event is durable. The thread ends when
/// the queue is dropped.
fn spawn_committer(
    store: Arc<dyn nimbus_store::Store>,
) -> std::io::Result<tokio::sync::mpsc::UnboundedSender<Commit>> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Commit>();
    std::thread::Builder::new()
        .name("nimbus-async-queue".into())
        .spawn(move || {
            while let Some(first) = rx.blocking_recv() {
                let mut batch = vec![first];
                while batch.len() < 256 {
                    match rx.try_recv() {
                        Ok(more) => batch.push(more),
                        Err(_) => break,
                    }
                }
                let (events, replies): (Vec<QueuedEvent>, Vec<_>) = batch.into_iter().unzip();
                let result = store.enqueue_events(&events).map_err(|e| e.to_string());
                for reply in replies {
                    let _ = reply.send(result.clone());
                }
            }
        })?;
    Ok(tx)
}

impl Schedule {
    /// An event is no longer running.
    fn stopped(&mut self, id: &str) {
        if let Some((_, function)) = self.in_flight.remove(id)
            && let Some(n) = self.running.get_mut(&function)
        {
            *n -= 1;
            if *n == 0 {
                self.running.remove(&function);
            }
        }
    }
}

impl AsyncQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, ev: QueuedEvent) {
        let mut s = self.lock();
        if !s.known.insert(ev.id.clone()) {
            return;
        }
        s.seq += 1;
        let seq = s.seq;
        s.pending.insert((ev.next_ms, seq), ev);
        drop(s);
        self.wake.notify_one();
    }

    /// Puts a running event back to wait.
    fn requeue(&self, ev: QueuedEvent) {
        let mut s = self.lock();
        s.stopped(&ev.id);
        s.seq += 1;
        let seq = s.seq;
        s.pending.insert((ev.next_ms, seq), ev);
        drop(s);
        self.wake.notify_one();
    }

    fn release(&self, id: &str) {
        let mut s = self.lock();
        s.stopped(id);
        s.known.remove(id);
        drop(s);
        self.wake.notify_one();
    }

    /// Due events, oldest due first, as many as `limit` running allows
    /// and no more of one function than its `cap` (its reserved
    /// concurrency: more would only be throttled); and when the next
    /// waiting one falls due (a capped one waits for a release instead).
    fn take_ready(
        &self,
        now: i64,
        limit: usize,
        cap: &dyn Fn(&str) -> Option<usize>,
    ) -> (Vec<QueuedEvent>, Option<i64>) {
        let mut s = self.lock();
        let mut take = Vec::new();
        let mut extra: HashMap<&str, usize> = HashMap::new();
        for (key, ev) in s.pending.range(..(now.saturating_add(1), 0)) {
            if s.in_flight.len() + take.len() >= limit {
                break;
            }
            let running = s.running.get(&ev.function).copied().unwrap_or(0);
            let more = extra.entry(ev.function.as_str()).or_default();
            if cap(&ev.function).is_some_and(|c| running + *more >= c) {
                continue;
            }
            *more += 1;
            take.push(*key);
        }
        let mut ready = Vec::with_capacity(take.len());
        for key in take {
            if let Some(ev) = s.pending.remove(&key) {
                *s.running.entry(ev.function.clone()).or_default() += 1;
                s.in_flight
                    .insert(ev.id.clone(), (ev.enqueued_ms, ev.function.clone()));
                ready.push(ev);
            }
        }
        let next = s.pending.keys().map(|k| k.0).find(|t| *t > now);
        (ready, next)
    }

    fn retry_base(&self) -> i64 {
        let ms = self
            .settings
            .get()
            .copied()
            .unwrap_or_default()
            .retry_base_ms;
        i64::try_from(ms).unwrap_or(i64::MAX / 8).max(1)
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// How an attempt ended.
enum Ended {
    /// The function ran without error.
    Success(InvokeOutcome, String),
    /// The function ran and failed.
    FunctionError(InvokeOutcome, String),
    /// It did not run: throttled or a platform error; try again later.
    NotRun(String),
    /// It will never run: the function is gone.
    Fatal(String),
    /// Not run: the function already ran this many times in the chain.
    RecursiveLoop(u32),
}

/// Why an event failed for good (a destination record's `condition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    RetriesExhausted,
    EventAgeExceeded,
    RecursiveInvocation,
    FunctionNotFound,
}

impl Condition {
    fn as_str(self) -> &'static str {
        match self {
            Self::RetriesExhausted => "RetriesExhausted",
            Self::EventAgeExceeded => "EventAgeExceeded",
            Self::RecursiveInvocation => "RecursiveInvocationDetected",
            Self::FunctionNotFound => "FunctionNotFound",
        }
    }
}

/// The 8 hex digits naming a function in a `Lineage` field.
fn lineage_key(function_arn: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(function_arn.as_bytes());
    d[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// The trace header an invocation of `function_arn` runs with, given the
/// header the event came with, and how many times the function ran before
/// in this chain (its `Lineage` count, 0 on the first run). The header
/// keeps the caller's `Root` and other fields; `Lineage` holds one
/// `key:count` entry per function of the chain, separated by `|`.
pub(crate) fn advance_lineage(header: Option<&str>, function_arn: &str) -> (String, u32) {
    let me = lineage_key(function_arn);
    let mut fields: Vec<String> = Vec::new();
    let mut entries: Vec<(String, u32)> = Vec::new();
    let mut has_root = false;
    // The header came from a client: keep what can go back out in an HTTP
    // header (visible ASCII), and not without bound.
    for field in header.unwrap_or_default().split(';').take(16) {
        let field = field.trim();
        if field.is_empty() || field.len() > 1024 || !field.bytes().all(|b| b.is_ascii_graphic()) {
            continue;
        }
        match field.split_once('=') {
            Some(("Lineage", v)) => {
                for e in v.split('|') {
                    let mut parts = e.rsplitn(3, ':');
                    let (Some(count), Some(key)) = (parts.next(), parts.next()) else {
                        continue;
                    };
                    if let Ok(n) = count.parse::<u32>() {
                        entries.push((key.to_string(), n));
                    }
                }
            }
            Some(("Root", _)) => {
                has_root = true;
                fields.push(field.to_string());
            }
            _ => fields.push(field.to_string()),
        }
    }
    if !has_root {
        let id = uuid::Uuid::new_v4().simple().to_string();
        fields.insert(
            0,
            format!(
                "Root=1-{:08x}-{}",
                chrono::Utc::now().timestamp(),
                &id[..24]
            ),
        );
        if !fields.iter().any(|f| f.starts_with("Sampled=")) {
            fields.push("Sampled=0".into());
        }
    }
    let count = match entries.iter_mut().find(|(k, _)| *k == me) {
        Some((_, n)) => {
            *n = n.saturating_add(1);
            *n
        }
        None => {
            entries.push((me, 0));
            0
        }
    };
    let lineage: Vec<String> = entries.iter().map(|(k, n)| format!("{k}:{n}")).collect();
    fields.push(format!("Lineage={}", lineage.join("|")));
    (fields.join(";"), count)
}

fn json_or_string(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

impl LambdaService {
    /// Commits an event to the queue; returns its request ID.
    pub(crate) async fn enqueue(
        self: &Arc<Self>,
        f: &FunctionRef,
        payload: Bytes,
        origin: &EventOrigin,
    ) -> LambdaResult<String> {
        let now = now_ms();
        let ev = QueuedEvent {
            id: uuid::Uuid::new_v4().to_string(),
            function: f.name.clone(),
            qualifier: f.qualifier.clone(),
            payload: payload.to_vec(),
            origin: serde_json::to_string(origin).map_err(LambdaError::internal)?,
            enqueued_ms: now,
            attempts: 0,
            next_ms: now,
            last_error: None,
        };
        let committer = match self.queue.committer.get() {
            Some(c) => c.clone(),
            None => {
                let c = spawn_committer(self.store.clone()).map_err(LambdaError::internal)?;
                self.queue.committer.get_or_init(|| c).clone()
            }
        };
        let (reply, committed) = tokio::sync::oneshot::channel();
        committer
            .send((ev.clone(), reply))
            .map_err(|_| LambdaError::internal("the async queue's committer is gone"))?;
        committed
            .await
            .map_err(|_| LambdaError::internal("the async queue's committer is gone"))?
            .map_err(LambdaError::internal)?;
        let id = ev.id.clone();
        self.queue.counters.accepted.fetch_add(1, Ordering::Relaxed);
        self.queue.push(ev);
        Ok(id)
    }

    /// Starts running queued events (those left from a previous run
    /// first). `barrier` lets an event be marked done only once its logs
    /// are committed.
    pub fn start_async(
        self: &Arc<Self>,
        settings: AsyncSettings,
        barrier: Option<LogBarrier>,
    ) -> LambdaResult<()> {
        let _ = self.queue.settings.set(settings);
        if let Some(b) = barrier {
            let _ = self.queue.barrier.set(b);
        }
        let events = self.store.queued_events().map_err(LambdaError::internal)?;
        if !events.is_empty() {
            tracing::info!("resuming {} queued asynchronous invocations", events.len());
        }
        for ev in events {
            self.queue.push(ev);
        }
        tokio::spawn(dispatch(Arc::downgrade(self), self.queue.clone()));
        Ok(())
    }

    /// Stops starting attempts; those running are not recorded, so they
    /// run again after a restart.
    pub fn stop_async(&self) {
        self.queue.stopping.store(true, Ordering::SeqCst);
        self.queue.wake.notify_one();
    }

    /// The queue's state and totals (`/metrics`).
    pub fn async_stats(&self) -> AsyncStats {
        let q = &self.queue;
        let s = q.lock();
        let now = now_ms();
        let oldest = s
            .pending
            .values()
            .map(|e| e.enqueued_ms)
            .chain(s.in_flight.values().map(|(t, _)| *t))
            .min()
            .map_or(0, |t| (now - t).max(0) as u64);
        let c = &q.counters;
        AsyncStats {
            depth: (s.pending.len() + s.in_flight.len()) as u64,
            in_flight: s.in_flight.len() as u64,
            oldest_age_ms: oldest,
            accepted: c.accepted.load(Ordering::Relaxed),
            succeeded: c.succeeded.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            throttle_retries: c.throttle_retries.load(Ordering::Relaxed),
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
            destination_deliveries: c.destination_deliveries.load(Ordering::Relaxed),
            recursive_loops_stopped: c.recursive_loops_stopped.load(Ordering::Relaxed),
        }
    }

    /// Keeps an event that its source could not hand over (a schedule's
    /// tick whose retries ran out) in the dead-letter store, where `nimbus
    /// dlq list` shows it and `nimbus dlq replay` runs it: in the queue an
    /// `arn:aws:sqs:REGION:ACCOUNT:NAME` target names, else `default`.
    pub async fn store_dead_letter(
        &self,
        f: &FunctionRef,
        payload: Bytes,
        origin: &EventOrigin,
        dead_letter_arn: Option<&str>,
        reason: &str,
    ) -> LambdaResult<()> {
        let queue = match dead_letter_arn.map(|arn| self.destination(arn)) {
            Some(Some(Destination::DeadLetterQueue(q))) => q,
            _ => DEFAULT_DLQ.to_string(),
        };
        let request_id = uuid::Uuid::new_v4().to_string();
        let function_arn = match &f.qualifier {
            Some(q) => self.identity.qualified_arn(&f.name, q),
            None => self.identity.function_arn(&f.name),
        };
        let record = json!({
            "version": "1.0",
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "requestContext": {
                "requestId": request_id,
                "functionArn": function_arn,
                "condition": "RetriesExhausted",
                "approximateInvokeCount": 0,
            },
            "requestPayload": serde_json::from_slice::<Value>(&payload)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&payload).into_owned())),
        });
        let letter = DeadLetter {
            id: 0,
            queue,
            request_id,
            function: f.name.clone(),
            qualifier: f.qualifier.clone(),
            payload: payload.to_vec(),
            origin: serde_json::to_string(origin).map_err(LambdaError::internal)?,
            condition: "RetriesExhausted".into(),
            reason: reason.to_string(),
            record: record.to_string(),
            created_ms: now_ms(),
        };
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.finish_events(&[], &[letter]))
            .await
            .map_err(LambdaError::internal)?
            .map_err(LambdaError::internal)?;
        self.queue
            .counters
            .dead_lettered
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The dead letters of one queue or all.
    pub fn dead_letters(&self, queue: Option<&str>) -> LambdaResult<Vec<DeadLetter>> {
        self.store
            .dead_letters(queue)
            .map_err(LambdaError::internal)
    }

    /// Queues dead letters again as new events (new request IDs, no
    /// attempts, a fresh trace); returns (dead letter id, new request id).
    pub fn replay_dead_letters(self: &Arc<Self>, ids: &[i64]) -> LambdaResult<Vec<(i64, String)>> {
        let now = now_ms();
        let pairs = std::cell::RefCell::new(Vec::new());
        let make = |d: &DeadLetter| {
            let mut origin: EventOrigin = serde_json::from_str(&d.origin).unwrap_or_default();
            origin.trace_header = None;
            let ev = QueuedEvent {
                id: uuid::Uuid::new_v4().to_string(),
                function: d.function.clone(),
                qualifier: d.qualifier.clone(),
                payload: d.payload.clone(),
                origin: serde_json::to_string(&origin).unwrap_or_else(|_| "{}".into()),
                enqueued_ms: now,
                attempts: 0,
                next_ms: now,
                last_error: None,
            };
            pairs.borrow_mut().push((d.id, ev.id.clone()));
            ev
        };
        let events = self
            .store
            .replay_dead_letters(ids, &make)
            .map_err(LambdaError::internal)?;
        for ev in events {
            self.queue.counters.accepted.fetch_add(1, Ordering::Relaxed);
            self.queue.push(ev);
        }
        Ok(pairs.into_inner())
    }

    /// One attempt of a queued event, and what follows from it.
    async fn attempt(self: Arc<Self>, mut ev: QueuedEvent) {
        let origin: EventOrigin = serde_json::from_str(&ev.origin).unwrap_or_default();
        let f = FunctionRef {
            name: ev.function.clone(),
            qualifier: ev.qualifier.clone(),
        };
        let cfg = self.event_config_for(&f);
        let now = now_ms();
        let age_ms = now - ev.enqueued_ms;
        if age_ms > i64::from(cfg.max_age_s()) * 1000 {
            let reason = format!(
                "the event is older than MaximumEventAgeInSeconds ({} s){}",
                cfg.max_age_s(),
                ev.last_error
                    .as_deref()
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            );
            self.failed(ev, &origin, Condition::EventAgeExceeded, reason, None)
                .await;
            return;
        }
        let ended = self.run_once(&f, &ev, &origin).await;
        if self.queue.stopping.load(Ordering::SeqCst) {
            // Shutting down: the outcome may be the shutdown's doing; the
            // row stays as it was and the event runs again after a restart.
            return;
        }
        let base = self.queue.retry_base();
        match ended {
            Ended::Success(out, version) => {
                self.logs_committed().await;
                self.queue
                    .counters
                    .succeeded
                    .fetch_add(1, Ordering::Relaxed);
                ev.attempts += 1;
                let dest = cfg.on_success.clone();
                self.finish(ev, &origin, dest, "Success", Some((&out, &version)))
                    .await;
            }
            Ended::FunctionError(out, version) => {
                self.logs_committed().await;
                ev.attempts += 1;
                let error = out.error_type.clone().unwrap_or_else(|| "Unhandled".into());
                if ev.attempts > cfg.max_retries() {
                    let reason = format!(
                        "the function failed {} times ({error}); MaximumRetryAttempts is {}",
                        ev.attempts,
                        cfg.max_retries()
                    );
                    self.failed(
                        ev,
                        &origin,
                        Condition::RetriesExhausted,
                        reason,
                        Some((&out, &version)),
                    )
                    .await;
                } else {
                    self.queue.counters.retries.fetch_add(1, Ordering::Relaxed);
                    ev.next_ms =
                        now_ms().saturating_add(base.saturating_mul(i64::from(ev.attempts)));
                    ev.last_error = Some(format!("function error: {error}"));
                    self.reschedule(ev).await;
                }
            }
            Ended::NotRun(why) => {
                self.queue
                    .counters
                    .throttle_retries
                    .fetch_add(1, Ordering::Relaxed);
                let delay = (age_ms / 4).clamp((base / 60).max(1), base.saturating_mul(5));
                ev.next_ms = now_ms().saturating_add(delay);
                ev.last_error = Some(why);
                // Not an attempt: the row stays as it is (after a crash
                // the event is simply due at once).
                self.queue.requeue(ev);
            }
            Ended::Fatal(why) => {
                self.failed(ev, &origin, Condition::FunctionNotFound, why, None)
                    .await;
            }
            Ended::RecursiveLoop(count) => {
                self.queue
                    .counters
                    .recursive_loops_stopped
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    function = %ev.function,
                    request_id = %ev.id,
                    "recursive loop stopped: {} already ran {count} times in this chain of events; \
                     the event goes to the failure destination (PutFunctionRecursionConfig Allow lets it run)",
                    ev.function
                );
                let reason = format!(
                    "recursive loop detected: the function ran {count} times in one chain of events, \
                     so nimbus stopped it (RecursiveLoop is Terminate)"
                );
                self.failed(ev, &origin, Condition::RecursiveInvocation, reason, None)
                    .await;
            }
        }
    }

    /// How many events of `function` may run at once: its reserved
    /// concurrency (at least 1, so that a function reserved at 0 still
    /// sees its events throttled and, in time, expire).
    fn async_cap(&self, function: &str) -> Option<usize> {
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(function)
            .and_then(|l| l.spec.reserved_concurrency)
            .map(|n| (n as usize).max(1))
    }

    async fn logs_committed(&self) {
        if let Some(b) = self.queue.barrier.get() {
            b.wait().await;
        }
    }

    async fn run_once(
        self: &Arc<Self>,
        f: &FunctionRef,
        ev: &QueuedEvent,
        origin: &EventOrigin,
    ) -> Ended {
        let target = match self.resolve(f) {
            Ok(t) => t,
            Err(LambdaError::ResourceNotFound(m)) => return Ended::Fatal(m),
            Err(e) => return Ended::NotRun(e.to_string()),
        };
        let handle = target.pick_version();
        let (trace, count) = advance_lineage(
            origin.trace_header.as_deref(),
            &self.identity.function_arn(&f.name),
        );
        if count >= MAX_CHAIN_LENGTH && self.recursive_loop(&f.name) == RecursiveLoop::Terminate {
            return Ended::RecursiveLoop(count);
        }
        let request = InvokeRequest {
            request_id: ev.id.clone(),
            payload: Bytes::from(ev.payload.clone()),
            client_context: None,
            invoked_arn: f
                .qualifier
                .as_ref()
                .map(|q| self.identity.qualified_arn(&f.name, q)),
            trace_header: Some(trace),
        };
        let version = handle.version.clone();
        match self
            .metering
            .run(&handle.name, self.engine.invoke(&handle, request))
            .await
        {
            Ok(out) if out.function_error.is_none() => Ended::Success(out, version),
            Ok(out) => Ended::FunctionError(out, version),
            Err(e) => Ended::NotRun(format!("{}: {e}", e.code())),
        }
    }

    async fn reschedule(self: &Arc<Self>, ev: QueuedEvent) {
        let store = self.store.clone();
        let (id, attempts, next, err) = (
            ev.id.clone(),
            ev.attempts,
            ev.next_ms,
            ev.last_error.clone(),
        );
        let saved = tokio::task::spawn_blocking(move || {
            store.reschedule_event(&id, attempts, next, err.as_deref())
        })
        .await;
        if !matches!(saved, Ok(Ok(()))) {
            tracing::error!(request_id = %ev.id, "could not record a retry; the event keeps its previous schedule on disk");
        }
        self.queue.requeue(ev);
    }

    /// The destination record of an event, as Lambda sends it.
    fn record(
        &self,
        ev: &QueuedEvent,
        condition: &str,
        last: Option<(&InvokeOutcome, &str)>,
    ) -> Value {
        let arn = self
            .identity
            .qualified_arn(&ev.function, ev.qualifier.as_deref().unwrap_or("$LATEST"));
        let mut r = json!({
            "version": "1.0",
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "requestContext": {
                "requestId": ev.id,
                "functionArn": arn,
                "condition": condition,
                "approximateInvokeCount": ev.attempts.max(1),
            },
            "requestPayload": json_or_string(&ev.payload),
        });
        if let Some((out, version)) = last {
            let mut ctx = json!({"statusCode": 200, "executedVersion": version});
            if let Some(fe) = out.function_error {
                ctx["functionError"] = fe.into();
            }
            r["responseContext"] = ctx;
            r["responsePayload"] = json_or_string(&out.payload);
        }
        r
    }

    async fn failed(
        self: &Arc<Self>,
        ev: QueuedEvent,
        origin: &EventOrigin,
        condition: Condition,
        reason: String,
        last: Option<(&InvokeOutcome, &str)>,
    ) {
        let condition_name = condition.as_str();
        tracing::warn!(function = %ev.function, request_id = %ev.id, condition = condition_name,
            "asynchronous invocation failed for good: {reason}");
        let f = FunctionRef {
            name: ev.function.clone(),
            qualifier: ev.qualifier.clone(),
        };
        // An OnFailure destination first, else the version's DeadLetterConfig.
        let destination = self.event_config_for(&f).on_failure.or_else(|| {
            self.resolve(&f)
                .ok()
                .and_then(|t| t.spec().dead_letter_target.clone())
        });
        let mut ev = ev;
        ev.last_error = Some(reason);
        self.finish(ev, origin, destination, condition_name, last)
            .await;
    }

    /// Sends the record to `destination` (or, for a failure without one,
    /// to the `default` dead-letter queue) and removes the event.
    async fn finish(
        self: &Arc<Self>,
        ev: QueuedEvent,
        origin: &EventOrigin,
        destination: Option<String>,
        condition: &str,
        last: Option<(&InvokeOutcome, &str)>,
    ) {
        let success = condition == "Success";
        let record = self.record(&ev, condition, last);
        let mut dead = Vec::new();
        let dlq = |queue: &str, reason: String| DeadLetter {
            id: 0,
            queue: queue.to_string(),
            request_id: ev.id.clone(),
            function: ev.function.clone(),
            qualifier: ev.qualifier.clone(),
            payload: ev.payload.clone(),
            origin: ev.origin.clone(),
            condition: condition.to_string(),
            reason,
            record: record.to_string(),
            created_ms: now_ms(),
        };
        let reason = ev.last_error.clone().unwrap_or_default();
        match destination.as_deref().map(|d| (d, self.destination(d))) {
            Some((_, Some(Destination::Function(target)))) => {
                let trace = advance_lineage(
                    origin.trace_header.as_deref(),
                    &self.identity.function_arn(&ev.function),
                )
                .0;
                let o = EventOrigin {
                    trace_header: Some(trace),
                    ..Default::default()
                };
                let body = Bytes::from(record.to_string());
                match self.enqueue(&target, body, &o).await {
                    Ok(_) => {
                        self.queue
                            .counters
                            .destination_deliveries
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if !success => {
                        dead.push(dlq(
                            DEFAULT_DLQ,
                            format!("{reason}; the failure destination refused the record: {e}"),
                        ));
                    }
                    Err(e) => {
                        tracing::warn!(request_id = %ev.id, "the success destination refused the record: {e}");
                    }
                }
            }
            Some((_, Some(Destination::DeadLetterQueue(q)))) => dead.push(dlq(&q, reason)),
            Some((d, None)) if !success => dead.push(dlq(
                DEFAULT_DLQ,
                format!("{reason}; the destination {d} is not one nimbus can deliver to"),
            )),
            None if !success => dead.push(dlq(DEFAULT_DLQ, reason)),
            _ => {}
        }
        let n = dead.len() as u64;
        let store = self.store.clone();
        let id = ev.id.clone();
        let saved = tokio::task::spawn_blocking(move || store.finish_events(&[id], &dead)).await;
        match saved {
            Ok(Ok(())) => {
                self.queue
                    .counters
                    .dead_lettered
                    .fetch_add(n, Ordering::Relaxed);
            }
            _ => {
                tracing::error!(request_id = %ev.id, "could not record a finished event; it runs again after a restart")
            }
        }
        self.queue.release(&ev.id);
    }
}

/// The queue's scheduler: starts due events while fewer than the account's
/// concurrency are running (the engine still throttles per function), and
/// sleeps until the next is due or something changes.
async fn dispatch(service: Weak<LambdaService>, queue: Arc<AsyncQueue>) {
    loop {
        if queue.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Some(svc) = service.upgrade() else {
            return;
        };
        let limit = svc.engine.account_concurrency().max(1) as usize;
        let now = now_ms();
        let cap = |function: &str| svc.async_cap(function);
        let (ready, next) = queue.take_ready(now, limit, &cap);
        for ev in ready {
            tokio::spawn(svc.clone().attempt(ev));
        }
        drop(svc);
        let wait = next.map_or(1000, |t| (t - now).clamp(1, 1000)) as u64;
        tokio::select! {
            () = queue.wake.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(wait)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:lambda:us-east-1:000000000000:function:f";

    fn ev(id: &str, function: &str, next_ms: i64) -> QueuedEvent {
        QueuedEvent {
            id: id.into(),
            function: function.into(),
            qualifier: None,
            payload: b"{}".to_vec(),
            origin: "{}".into(),
            enqueued_ms: 0,
            attempts: 0,
            next_ms,
            last_error: None,
        }
    }

    #[test]
    fn due_events_start_within_the_account_and_function_limits() {
        let q = AsyncQueue::default();
        for (i, f) in ["a", "a", "a", "b", "b"].iter().enumerate() {
            q.push(ev(&format!("e{i}"), f, 10));
        }
        q.push(ev("later", "b", 500));
        let cap = |f: &str| (f == "a").then_some(1);
        let (ready, next) = q.take_ready(100, 10, &cap);
        let ids: Vec<&str> = ready.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["e0", "e3", "e4"], "a is capped at 1, b is not");
        assert_eq!(
            next,
            Some(500),
            "capped events wait for a release, not a timer"
        );
        let (again, _) = q.take_ready(100, 10, &cap);
        assert!(again.is_empty(), "a's one slot is taken");
        q.release("e0");
        let (after, _) = q.take_ready(100, 10, &cap);
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].function, "a");
        // The account limit counts every running event.
        let (none, _) = q.take_ready(1000, 4, &|_| None);
        assert_eq!(none.len(), 1, "3 running + 1 = the limit of 4");
        assert_eq!(q.lock().pending.len(), 1);
    }

    #[test]
    fn lineage_counts_runs_of_each_function() {
        let (h, n) = advance_lineage(None, ARN);
        assert_eq!(n, 0);
        assert!(h.starts_with("Root=1-"), "{h}");
        assert!(
            h.ends_with(&format!("Lineage={}:0", lineage_key(ARN))),
            "{h}"
        );
        let (h2, n2) = advance_lineage(Some(&h), ARN);
        assert_eq!(n2, 1);
        assert_eq!(
            h2.split(';').next(),
            h.split(';').next(),
            "the root is kept"
        );
        let other = "arn:aws:lambda:us-east-1:000000000000:function:g";
        let (h3, n3) = advance_lineage(Some(&h2), other);
        assert_eq!(n3, 0);
        let (_, n4) = advance_lineage(Some(&h3), ARN);
        assert_eq!(n4, 2, "each function has its own count");
    }

    #[test]
    fn lineage_parses_what_clients_send() {
        let key = lineage_key(ARN);
        let h = format!(
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1;Lineage=1:{key}:15"
        );
        let (out, n) = advance_lineage(Some(&h), ARN);
        assert_eq!(n, 16);
        assert!(out.contains("Parent=53995c3f42cd8ad8"));
        let (_, n) = advance_lineage(Some("Root=1-x;Lineage=garbage|zz:notanumber"), ARN);
        assert_eq!(n, 0);
        let (out, _) = advance_lineage(Some("Foo=caf\u{e9};Sampled=1;Bar=a b"), ARN);
        assert!(out.is_ascii() && !out.contains(' '), "{out}");
        assert_eq!(out.matches("Sampled=").count(), 1, "{out}");
    }
}
