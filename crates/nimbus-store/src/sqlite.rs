//! The embedded backend: one SQLite database in WAL mode with
//! `synchronous=FULL`, so a committed write survives a crash or power loss.

use std::path::Path;
use std::sync::Mutex;

use nimbus_core::FunctionSpec;
use rusqlite::{Connection, OptionalExtension, params};

use crate::queue::{self, DeadLetter, QueuedEvent};
use crate::{
    LogAppend, LogEvent, LogGroupInfo, LogQuery, LogStreamInfo, Store, StoreError, StoreResult,
    StoredLogEvent, UsageHour,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS functions (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS log_groups (
    name TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS log_streams (
    group_name TEXT NOT NULL REFERENCES log_groups(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    first_event_ms INTEGER,
    last_event_ms INTEGER,
    last_ingestion_ms INTEGER,
    stored_bytes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (group_name, name)
);
CREATE TABLE IF NOT EXISTS log_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    group_name TEXT NOT NULL,
    stream_name TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    ingest_ms INTEGER NOT NULL,
    message TEXT NOT NULL,
    FOREIGN KEY (group_name, stream_name) REFERENCES log_streams(group_name, name) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS log_events_by_group_time ON log_events (group_name, ts_ms);
CREATE TABLE IF NOT EXISTS documents (
    ns TEXT NOT NULL,
    key TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (ns, key)
);
";

/// The SQLite-backed [`Store`].
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// A second connection for appending invocation logs, with
    /// `synchronous=NORMAL`: in WAL mode that survives a crash of nimbus
    /// (not of the machine), which is all a log written after the response
    /// was sent can promise anyway, and it saves an fsync per batch on the
    /// invoke path's busiest thread. `None` for in-memory databases.
    log_conn: Option<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let mut store = Self::init(Connection::open(path)?)?;
        let log_conn = Connection::open(path)?;
        log_conn.pragma_update(None, "synchronous", "NORMAL")?;
        log_conn.pragma_update(None, "foreign_keys", "ON")?;
        log_conn.busy_timeout(std::time::Duration::from_secs(5))?;
        store.log_conn = Some(Mutex::new(log_conn));
        Ok(store)
    }

    /// An in-memory database, for tests.
    pub fn in_memory() -> StoreResult<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> StoreResult<Self> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(crate::retention::SCHEMA)?;
        conn.execute_batch(crate::usage::SCHEMA)?;
        conn.execute_batch(crate::queue::SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
            log_conn: None,
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> StoreResult<T>) -> StoreResult<T> {
        // A poisoned lock means a panic mid-operation; SQLite's transaction
        // rolled back, so the connection itself is still consistent.
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut conn)
    }

    fn with_log_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        match &self.log_conn {
            Some(m) => f(&mut m.lock().unwrap_or_else(|e| e.into_inner())),
            None => self.with(f),
        }
    }
}

fn decode(name: &str, json: &str) -> StoreResult<FunctionSpec> {
    serde_json::from_str(json).map_err(|source| StoreError::Corrupt {
        key: name.into(),
        source,
    })
}

fn encode(spec: &FunctionSpec) -> String {
    // FunctionSpec holds only strings, numbers and maps: it always encodes.
    serde_json::to_string(spec).unwrap_or_else(|e| unreachable!("FunctionSpec encodes: {e}"))
}

fn ensure_stream(conn: &Connection, group: &str, stream: &str, now_ms: i64) -> StoreResult<bool> {
    conn.prepare_cached("INSERT OR IGNORE INTO log_groups (name, created_ms) VALUES (?1, ?2)")?
        .execute(params![group, now_ms])?;
    let n = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO log_streams (group_name, name, created_ms) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![group, stream, now_ms])?;
    Ok(n == 1)
}

impl Store for SqliteStore {
    fn create_function(&self, spec: &FunctionSpec) -> StoreResult<bool> {
        self.with(|c| {
            let n = c.execute(
                "INSERT OR IGNORE INTO functions (name, spec) VALUES (?1, ?2)",
                params![spec.name, encode(spec)],
            )?;
            Ok(n == 1)
        })
    }

    fn update_function(&self, spec: &FunctionSpec) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "UPDATE functions SET spec = ?2 WHERE name = ?1",
                params![spec.name, encode(spec)],
            )?;
            Ok(())
        })
    }

    fn get_function(&self, name: &str) -> StoreResult<Option<FunctionSpec>> {
        self.with(|c| {
            let json: Option<String> = c
                .query_row("SELECT spec FROM functions WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .optional()?;
            json.map(|j| decode(name, &j)).transpose()
        })
    }

    fn list_functions(&self) -> StoreResult<Vec<FunctionSpec>> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT name, spec FROM functions ORDER BY name")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            rows.map(|row| {
                let (name, json) = row?;
                decode(&name, &json)
            })
            .collect()
        })
    }

    fn delete_function(&self, name: &str) -> StoreResult<bool> {
        self.with(|c| Ok(c.execute("DELETE FROM functions WHERE name = ?1", [name])? == 1))
    }

    fn get_setting(&self, key: &str) -> StoreResult<Option<String>> {
        self.with(|c| {
            Ok(
                c.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                    r.get(0)
                })
                .optional()?,
            )
        })
    }

    fn put_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
            Ok(())
        })
    }

    fn create_log_group(&self, group: &str, now_ms: i64) -> StoreResult<bool> {
        self.with(|c| {
            Ok(c.execute(
                "INSERT OR IGNORE INTO log_groups (name, created_ms) VALUES (?1, ?2)",
                params![group, now_ms],
            )? == 1)
        })
    }

    fn create_log_stream(&self, group: &str, stream: &str, now_ms: i64) -> StoreResult<bool> {
        self.with(|c| ensure_stream(c, group, stream, now_ms))
    }

    fn append_log_events(&self, batches: &[LogAppend]) -> StoreResult<()> {
        self.with_log_conn(|c| {
            let tx = c.transaction()?;
            for b in batches {
                let Some(first) = b.events.first() else {
                    continue;
                };
                ensure_stream(&tx, &b.group, &b.stream, first.ingestion_ms)?;
                let mut insert = tx.prepare_cached(
                    "INSERT INTO log_events (group_name, stream_name, ts_ms, ingest_ms, message)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for e in &b.events {
                    insert.execute(params![
                        b.group,
                        b.stream,
                        e.timestamp_ms,
                        e.ingestion_ms,
                        e.message
                    ])?;
                }
                let bytes: i64 = b.events.iter().map(|e| e.message.len() as i64 + 26).sum();
                let min_ts = b.events.iter().map(|e| e.timestamp_ms).min();
                let max_ts = b.events.iter().map(|e| e.timestamp_ms).max();
                let max_ingest = b.events.iter().map(|e| e.ingestion_ms).max();
                tx.prepare_cached(
                    "UPDATE log_streams SET
                        first_event_ms = MIN(COALESCE(first_event_ms, ?3), ?3),
                        last_event_ms = MAX(COALESCE(last_event_ms, ?4), ?4),
                        last_ingestion_ms = MAX(COALESCE(last_ingestion_ms, ?5), ?5),
                        stored_bytes = stored_bytes + ?6
                     WHERE group_name = ?1 AND name = ?2",
                )?
                .execute(params![
                    b.group, b.stream, min_ts, max_ts, max_ingest, bytes
                ])?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn list_log_groups(&self, prefix: Option<&str>) -> StoreResult<Vec<LogGroupInfo>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT g.name, g.created_ms, COALESCE(SUM(s.stored_bytes), 0),
                    (SELECT days FROM log_retention r WHERE r.group_name = g.name)
                 FROM log_groups g LEFT JOIN log_streams s ON s.group_name = g.name
                 WHERE substr(g.name, 1, length(?1)) = ?1
                 GROUP BY g.name ORDER BY g.name",
            )?;
            let rows = stmt.query_map([prefix.unwrap_or("")], |r| {
                Ok(LogGroupInfo {
                    name: r.get(0)?,
                    created_ms: r.get(1)?,
                    stored_bytes: r.get(2)?,
                    retention_days: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn list_log_streams(
        &self,
        group: &str,
        prefix: Option<&str>,
    ) -> StoreResult<Option<Vec<LogStreamInfo>>> {
        self.with(|c| {
            let exists: Option<i64> = c
                .query_row("SELECT 1 FROM log_groups WHERE name = ?1", [group], |r| r.get(0))
                .optional()?;
            if exists.is_none() {
                return Ok(None);
            }
            let mut stmt = c.prepare(
                "SELECT name, created_ms, first_event_ms, last_event_ms, last_ingestion_ms, stored_bytes
                 FROM log_streams WHERE group_name = ?1 AND substr(name, 1, length(?2)) = ?2
                 ORDER BY name",
            )?;
            let rows = stmt.query_map(params![group, prefix.unwrap_or("")], |r| {
                Ok(LogStreamInfo {
                    name: r.get(0)?,
                    created_ms: r.get(1)?,
                    first_event_ms: r.get(2)?,
                    last_event_ms: r.get(3)?,
                    last_ingestion_ms: r.get(4)?,
                    stored_bytes: r.get(5)?,
                })
            })?;
            Ok(Some(rows.collect::<Result<_, _>>()?))
        })
    }

    fn query_log_events(&self, q: &LogQuery) -> StoreResult<Vec<StoredLogEvent>> {
        self.with(|c| {
            let mut sql = String::from(
                "SELECT seq, stream_name, ts_ms, ingest_ms, message FROM log_events WHERE group_name = ?1",
            );
            let mut args: Vec<rusqlite::types::Value> = vec![q.group.clone().into()];
            if !q.streams.is_empty() {
                let marks: Vec<String> =
                    (0..q.streams.len()).map(|i| format!("?{}", args.len() + 1 + i)).collect();
                sql += &format!(" AND stream_name IN ({})", marks.join(","));
                args.extend(q.streams.iter().map(|s| s.clone().into()));
            }
            let mut push = |clause: &str, v: rusqlite::types::Value| {
                args.push(v);
                sql += &clause.replace("?", &format!("?{}", args.len()));
            };
            if let Some(s) = q.start_ms {
                push(" AND ts_ms >= ?", s.into());
            }
            if let Some(e) = q.end_ms {
                push(" AND ts_ms <= ?", e.into());
            }
            if let Some(text) = &q.contains {
                push(" AND instr(message, ?) > 0", text.clone().into());
            }
            if let Some(after) = q.after_seq {
                let op = if q.newest_first { "<" } else { ">" };
                push(&format!(" AND seq {op} ?"), after.into());
            }
            let order = if q.newest_first { "DESC" } else { "ASC" };
            push(&format!(" ORDER BY seq {order} LIMIT ?"), (q.limit as i64).into());
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
                Ok(StoredLogEvent {
                    seq: r.get(0)?,
                    stream: r.get(1)?,
                    event: LogEvent { timestamp_ms: r.get(2)?, ingestion_ms: r.get(3)?, message: r.get(4)? },
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn delete_log_group(&self, group: &str) -> StoreResult<bool> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM log_events WHERE group_name = ?1", [group])?;
            tx.execute("DELETE FROM log_streams WHERE group_name = ?1", [group])?;
            let n = tx.execute("DELETE FROM log_groups WHERE name = ?1", [group])?;
            tx.commit()?;
            Ok(n == 1)
        })
    }

    fn put_log_retention(&self, group: &str, days: Option<u32>) -> StoreResult<bool> {
        self.with(|c| crate::retention::put(c, group, days))
    }

    fn expire_log_events(&self, now_ms: i64) -> StoreResult<u64> {
        // Deletions are housekeeping like the appends they undo: on the
        // log connection, in turn with the log writer.
        self.with_log_conn(|c| crate::retention::expire(c, now_ms))
    }

    fn record_usage(&self, rows: &[UsageHour]) -> StoreResult<()> {
        // Written after the response, like logs: the log connection's
        // synchronous=NORMAL survives a crash of nimbus, and no fsync per
        // batch competes with control-plane writes.
        self.with_log_conn(|c| crate::usage::record(c, rows))
    }

    fn usage_since(&self, since_s: i64, function: Option<&str>) -> StoreResult<Vec<UsageHour>> {
        self.with(|c| crate::usage::since(c, since_s, function))
    }

    fn get_doc(&self, ns: &str, key: &str) -> StoreResult<Option<String>> {
        self.with(|c| {
            Ok(
                c.prepare_cached("SELECT doc FROM documents WHERE ns = ?1 AND key = ?2")?
                    .query_row(params![ns, key], |r| r.get(0))
                    .optional()?,
            )
        })
    }

    fn put_doc(&self, ns: &str, key: &str, doc: &str) -> StoreResult<()> {
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO documents (ns, key, doc) VALUES (?1, ?2, ?3)
                 ON CONFLICT(ns, key) DO UPDATE SET doc = excluded.doc",
            )?
            .execute(params![ns, key, doc])?;
            Ok(())
        })
    }

    fn delete_doc(&self, ns: &str, key: &str) -> StoreResult<bool> {
        self.with(|c| {
            Ok(c.execute(
                "DELETE FROM documents WHERE ns = ?1 AND key = ?2",
                params![ns, key],
            )? == 1)
        })
    }

    fn list_docs(&self, ns: &str) -> StoreResult<Vec<(String, String)>> {
        self.with(|c| {
            let mut stmt =
                c.prepare("SELECT key, doc FROM documents WHERE ns = ?1 ORDER BY key")?;
            let rows = stmt.query_map([ns], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn enqueue_events(&self, events: &[QueuedEvent]) -> StoreResult<()> {
        self.with(|c| queue::enqueue(c, events))
    }

    fn queued_events(&self) -> StoreResult<Vec<QueuedEvent>> {
        self.with(|c| queue::queued(c))
    }

    fn reschedule_event(
        &self,
        id: &str,
        attempts: u32,
        next_ms: i64,
        last_error: Option<&str>,
    ) -> StoreResult<()> {
        self.with(|c| queue::reschedule(c, id, attempts, next_ms, last_error))
    }

    fn finish_events(&self, done: &[String], dead: &[DeadLetter]) -> StoreResult<()> {
        self.with(|c| queue::finish(c, done, dead))
    }

    fn dead_letters(&self, queue_name: Option<&str>) -> StoreResult<Vec<DeadLetter>> {
        self.with(|c| queue::dead_letters(c, queue_name))
    }

    fn replay_dead_letters(
        &self,
        ids: &[i64],
        make: &dyn Fn(&DeadLetter) -> QueuedEvent,
    ) -> StoreResult<Vec<QueuedEvent>> {
        self.with(|c| queue::replay(c, ids, make))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_passes_the_store_suite() {
        crate::store_test_suite(&SqliteStore::in_memory().unwrap());
    }

    #[test]
    fn sqlite_on_disk_passes_the_store_suite() {
        // On disk, log appends go through the second connection.
        let dir = tempfile::tempdir().unwrap();
        crate::store_test_suite(&SqliteStore::open(&dir.path().join("meta.db")).unwrap());
    }

    #[test]
    fn data_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        SqliteStore::open(&path)
            .unwrap()
            .put_setting("k", "v")
            .unwrap();
        assert_eq!(
            SqliteStore::open(&path)
                .unwrap()
                .get_setting("k")
                .unwrap()
                .as_deref(),
            Some("v")
        );
    }
}
