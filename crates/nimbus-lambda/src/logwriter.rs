//! Persists invocation logs off the invoke path.

use std::sync::Arc;

use nimbus_runtime::LogBatch;
use nimbus_store::{LogAppend, LogEvent, Store};
use tokio::sync::mpsc;

/// Starts the thread that writes the engine's log batches to the store.
/// Whatever has queued up while one transaction commits goes into the next,
/// so the cost of a commit is shared by every invocation waiting on it.
/// The thread ends when every sender is dropped.
pub fn spawn_log_writer(
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<LogBatch>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("nimbus-logs".into())
        .spawn(move || {
            while let Some(first) = rx.blocking_recv() {
                let mut batch = vec![convert(first)];
                while let Ok(more) = rx.try_recv() {
                    batch.push(convert(more));
                    if batch.len() >= 512 {
                        break;
                    }
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
