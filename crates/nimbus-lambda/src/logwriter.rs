//! Persists invocation logs off the invoke path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nimbus_iam::{Caller, IamService};
use nimbus_runtime::LogBatch;
use nimbus_store::{LogAppend, LogEvent, Store};
use tokio::sync::{mpsc, watch};

/// Whether a function's execution role may write its logs
/// (`logs:CreateLogStream` and `logs:PutLogEvents` on its stream), as on
/// AWS, where a role without AWSLambdaBasicExecutionRole gets no logs.
fn may_write(iam: &IamService, region: &str, b: &LogBatch) -> bool {
    let account = iam.account_id();
    let role_name = b.role.rsplit('/').next().unwrap_or_default();
    let session_arn = format!(
        "arn:aws:sts::{account}:assumed-role/{role_name}/{}",
        b.session
    );
    let caller = Caller::AssumedRole {
        role: role_name.to_string(),
        session_arn: session_arn.clone(),
    };
    let stream_arn = format!(
        "arn:aws:logs:{region}:{account}:log-group:{}:log-stream:{}",
        b.group, b.stream
    );
    let ctx = nimbus_policy::Context::new();
    ["logs:CreateLogStream", "logs:PutLogEvents"]
        .iter()
        .all(|action| {
            iam.authorize_caller(&caller, &session_arn, action, &stream_arn, &ctx)
                .is_ok()
        })
}

/// Lets the asynchronous queue wait until the logs of an invocation that
/// has returned are committed, so an event is marked done only once its
/// logs are on disk too. A barrier is a batch without a group or lines on
/// the same channel as the engine's batches, so it is committed after every
/// batch sent before it; the writer publishes the highest barrier committed.
#[derive(Debug)]
pub struct LogBarrier {
    /// Weak, so the writer still ends when the engine's sender goes.
    sink: mpsc::WeakUnboundedSender<LogBatch>,
    next: AtomicU64,
    committed: watch::Receiver<u64>,
}

/// The writer's side of a [`LogBarrier`]: where it publishes commits.
#[derive(Debug)]
pub struct LogCommits(watch::Sender<u64>);

impl LogBarrier {
    /// A barrier on the channel the engine sends its batches to.
    pub fn new(sink: mpsc::UnboundedSender<LogBatch>) -> (LogBarrier, LogCommits) {
        let (tx, rx) = watch::channel(0);
        let barrier = LogBarrier {
            sink: sink.downgrade(),
            next: AtomicU64::new(0),
            committed: rx,
        };
        (barrier, LogCommits(tx))
    }

    /// Returns once every batch sent before this call is committed (or
    /// the writer is gone).
    pub async fn wait(&self) {
        let n = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        let marker = LogBatch {
            group: String::new(),
            stream: String::new(),
            lines: Vec::new(),
            role: String::new(),
            session: n.to_string(),
        };
        match self.sink.upgrade() {
            Some(sink) if sink.send(marker).is_ok() => {}
            _ => return,
        }
        let mut rx = self.committed.clone();
        let _ = rx.wait_for(|c| *c >= n).await;
    }
}

fn barrier_of(b: &LogBatch) -> Option<u64> {
    if b.group.is_empty() && b.lines.is_empty() {
        b.session.parse().ok()
    } else {
        None
    }
}

/// Starts the thread that writes the engine's log batches to the store,
/// dropping those the function's role may not write. Whatever has queued
/// up while one transaction commits goes into the next, so the cost of a
/// commit is shared by every invocation waiting on it. The thread ends
/// when every sender is dropped.
pub fn spawn_log_writer(
    store: Arc<dyn Store>,
    iam: Arc<IamService>,
    region: String,
    mut rx: mpsc::UnboundedReceiver<LogBatch>,
    commits: Option<LogCommits>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("nimbus-logs".into())
        .spawn(move || {
            while let Some(first) = rx.blocking_recv() {
                let mut pending = vec![first];
                while let Ok(more) = rx.try_recv() {
                    pending.push(more);
                    if pending.len() >= 512 {
                        break;
                    }
                }
                let barrier = pending.iter().filter_map(barrier_of).max();
                let batch: Vec<LogAppend> = pending
                    .into_iter()
                    .filter(|b| barrier_of(b).is_none() && may_write(&iam, &region, b))
                    .map(convert)
                    .collect();
                if !batch.is_empty()
                    && let Err(e) = store.append_log_events(&batch)
                {
                    tracing::error!("writing {} log batches: {e}", batch.len());
                }
                if let (Some(n), Some(c)) = (barrier, &commits) {
                    c.0.send_modify(|v| *v = (*v).max(n));
                }
            }
        })
}

fn convert(b: LogBatch) -> LogAppend {
    let ingest = chrono::Utc::now().timestamp_millis();
    LogAppend {
        group: b.group,
        stream: b.stream,
        events: b
            .lines
            .into_iter()
            .map(|l| LogEvent {
                timestamp_ms: l.ts_ms,
                ingestion_ms: ingest,
                message: l.text,
            })
            .collect(),
    }
}
