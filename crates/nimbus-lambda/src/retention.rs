//! Enforces log groups' retention (PutRetentionPolicy): a background thread
//! that periodically deletes the events their group no longer keeps.

use std::sync::Arc;
use std::time::Duration;

use nimbus_store::Store;

/// Starts the sweep: at once, then every `every`. It runs for the life of
/// the process; a sweep cut short by exit is rolled back by SQLite and
/// redone by the next start.
pub fn spawn_retention_sweeper(
    store: Arc<dyn Store>,
    every: Duration,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("nimbus-retention".into())
        .spawn(move || {
            loop {
                sweep(store.as_ref());
                std::thread::sleep(every);
            }
        })
}

/// One pass over every group with a retention setting.
fn sweep(store: &dyn Store) {
    match store.expire_log_events(chrono::Utc::now().timestamp_millis()) {
        Ok(0) => {}
        Ok(n) => tracing::info!("log retention: deleted {n} expired events"),
        Err(e) => tracing::error!("log retention sweep: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_store::{LogAppend, LogEvent, LogQuery, SqliteStore};

    #[test]
    fn the_sweeper_deletes_expired_events_in_the_background() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let now = chrono::Utc::now().timestamp_millis();
        let ev = |ts: i64| LogEvent {
            timestamp_ms: ts,
            ingestion_ms: now,
            message: "m".into(),
        };
        store
            .append_log_events(&[LogAppend {
                group: "g".into(),
                stream: "s".into(),
                events: vec![ev(now - 2 * 86_400_000), ev(now)],
            }])
            .unwrap();
        store.put_log_retention("g", Some(1)).unwrap();
        let _sweeper = spawn_retention_sweeper(store.clone(), Duration::from_millis(10)).unwrap();
        let count = || {
            store
                .query_log_events(&LogQuery {
                    group: "g".into(),
                    limit: 10,
                    ..Default::default()
                })
                .unwrap()
                .len()
        };
        for _ in 0..500 {
            if count() == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(count(), 1);
    }
}
