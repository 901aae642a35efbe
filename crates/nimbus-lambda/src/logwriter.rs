//! Persists invocation logs off the invoke path.

use std::sync::Arc;

use nimbus_iam::{Caller, IamService};
use nimbus_runtime::LogBatch;
use nimbus_store::{LogAppend, LogEvent, Store};
use tokio::sync::mpsc;

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
                let batch: Vec<LogAppend> = pending
                    .into_iter()
                    .filter(|b| may_write(&iam, &region, b))
                    .map(convert)
                    .collect();
                if batch.is_empty() {
                    continue;
                }
                if let Err(e) = store.append_log_events(&batch) {
                    tracing::error!("writing {} log batches: {e}", batch.len());
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
