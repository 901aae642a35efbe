//! The durable queue of asynchronous invocations and the dead-letter store.
//!
//! An `Event` invocation is a row of `async_events` from the moment it is
//! accepted (the insert commits, fsynced, before the client hears 202)
//! until its last attempt is over; then the row goes, in the same
//! transaction as the dead letter it may become. A crash at any moment
//! leaves each accepted event either still queued (it runs again: at least
//! once) or finished.

use rusqlite::{Connection, OptionalExtension, params};

use crate::StoreResult;

/// Applied at open, after the main schema.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS async_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    function_name TEXT NOT NULL,
    qualifier TEXT,
    payload BLOB NOT NULL,
    origin TEXT NOT NULL,
    enqueued_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_ms INTEGER NOT NULL,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    request_id TEXT NOT NULL,
    function_name TEXT NOT NULL,
    qualifier TEXT,
    payload BLOB NOT NULL,
    origin TEXT NOT NULL,
    condition TEXT NOT NULL,
    reason TEXT NOT NULL,
    record TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_by_queue ON dead_letters (queue, id);
";

/// An accepted asynchronous invocation, as queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEvent {
    /// The request ID the invocation runs with (every attempt).
    pub id: String,
    pub function: String,
    pub qualifier: Option<String>,
    pub payload: Vec<u8>,
    /// Who asked, as JSON of the service's own (principal, source, trace
    /// header); opaque here.
    pub origin: String,
    pub enqueued_ms: i64,
    /// Attempts that ran the function (throttles do not count).
    pub attempts: u32,
    /// Not before this time (epoch ms).
    pub next_ms: i64,
    pub last_error: Option<String>,
}

/// An event that failed for good, kept until replayed or forgotten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Assigned by the store (0 when adding).
    pub id: i64,
    /// The dead-letter queue's name (`default` when none was configured).
    pub queue: String,
    pub request_id: String,
    pub function: String,
    pub qualifier: Option<String>,
    pub payload: Vec<u8>,
    pub origin: String,
    /// `RetriesExhausted`, `EventAgeExceeded`, `RecursiveInvocation`, ...
    pub condition: String,
    /// A sentence for the user.
    pub reason: String,
    /// The destination record (JSON) as a destination would receive it.
    pub record: String,
    pub created_ms: i64,
}

pub(crate) fn enqueue(conn: &mut Connection, events: &[QueuedEvent]) -> StoreResult<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO async_events
                (id, function_name, qualifier, payload, origin, enqueued_ms, attempts, next_ms, last_error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (id) DO NOTHING",
        )?;
        for e in events {
            stmt.execute(params![
                e.id,
                e.function,
                e.qualifier,
                e.payload,
                e.origin,
                e.enqueued_ms,
                e.attempts,
                e.next_ms,
                e.last_error
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

pub(crate) fn queued(conn: &Connection) -> StoreResult<Vec<QueuedEvent>> {
    let mut stmt = conn.prepare(
        "SELECT id, function_name, qualifier, payload, origin, enqueued_ms, attempts, next_ms, last_error
         FROM async_events ORDER BY seq",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(QueuedEvent {
            id: r.get(0)?,
            function: r.get(1)?,
            qualifier: r.get(2)?,
            payload: r.get(3)?,
            origin: r.get(4)?,
            enqueued_ms: r.get(5)?,
            attempts: r.get::<_, i64>(6)?.clamp(0, i64::from(u32::MAX)) as u32,
            next_ms: r.get(7)?,
            last_error: r.get(8)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn reschedule(
    conn: &Connection,
    id: &str,
    attempts: u32,
    next_ms: i64,
    last_error: Option<&str>,
) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE async_events SET attempts = ?2, next_ms = ?3, last_error = ?4 WHERE id = ?1",
    )?
    .execute(params![id, attempts, next_ms, last_error])?;
    Ok(())
}

/// Removes finished events and adds dead letters, in one transaction.
pub(crate) fn finish(
    conn: &mut Connection,
    done: &[String],
    dead: &[DeadLetter],
) -> StoreResult<()> {
    let tx = conn.transaction()?;
    {
        let mut del = tx.prepare_cached("DELETE FROM async_events WHERE id = ?1")?;
        for id in done {
            del.execute([id])?;
        }
        let mut add = tx.prepare_cached(
            "INSERT INTO dead_letters
                (queue, request_id, function_name, qualifier, payload, origin, condition, reason, record, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        for d in dead {
            add.execute(params![
                d.queue,
                d.request_id,
                d.function,
                d.qualifier,
                d.payload,
                d.origin,
                d.condition,
                d.reason,
                d.record,
                d.created_ms
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn dead_letter(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeadLetter> {
    Ok(DeadLetter {
        id: r.get(0)?,
        queue: r.get(1)?,
        request_id: r.get(2)?,
        function: r.get(3)?,
        qualifier: r.get(4)?,
        payload: r.get(5)?,
        origin: r.get(6)?,
        condition: r.get(7)?,
        reason: r.get(8)?,
        record: r.get(9)?,
        created_ms: r.get(10)?,
    })
}

const DEAD_LETTER_COLUMNS: &str = "id, queue, request_id, function_name, qualifier, payload, origin, condition, reason, record, created_ms";

pub(crate) fn dead_letters(conn: &Connection, queue: Option<&str>) -> StoreResult<Vec<DeadLetter>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters
         WHERE (?1 IS NULL OR queue = ?1) ORDER BY id"
    ))?;
    let rows = stmt.query_map([queue], dead_letter)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Moves dead letters back into the queue as new events, in one
/// transaction: `make` turns each into the event to run.
pub(crate) fn replay(
    conn: &mut Connection,
    ids: &[i64],
    make: &dyn Fn(&DeadLetter) -> QueuedEvent,
) -> StoreResult<Vec<QueuedEvent>> {
    let tx = conn.transaction()?;
    let mut out = Vec::new();
    {
        let mut get = tx.prepare_cached(&format!(
            "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE id = ?1"
        ))?;
        let mut del = tx.prepare_cached("DELETE FROM dead_letters WHERE id = ?1")?;
        let mut add = tx.prepare_cached(
            "INSERT INTO async_events
                (id, function_name, qualifier, payload, origin, enqueued_ms, attempts, next_ms, last_error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for id in ids {
            let Some(d) = get.query_row([id], dead_letter).optional()? else {
                continue;
            };
            let e = make(&d);
            add.execute(params![
                e.id,
                e.function,
                e.qualifier,
                e.payload,
                e.origin,
                e.enqueued_ms,
                e.attempts,
                e.next_ms,
                e.last_error
            ])?;
            del.execute([id])?;
            out.push(e);
        }
    }
    tx.commit()?;
    Ok(out)
}

/// The queue part of [`crate::store_test_suite`].
pub(crate) fn test_suite(store: &dyn crate::Store) {
    let ev = |id: &str, next_ms: i64| QueuedEvent {
        id: id.into(),
        function: "f".into(),
        qualifier: None,
        payload: b"{}".to_vec(),
        origin: "{}".into(),
        enqueued_ms: 1,
        attempts: 0,
        next_ms,
        last_error: None,
    };
    assert!(store.queued_events().unwrap().is_empty());
    store.enqueue_events(&[ev("a", 1), ev("b", 2)]).unwrap();
    store.enqueue_events(&[ev("a", 9)]).unwrap();
    let q = store.queued_events().unwrap();
    assert_eq!(q, vec![ev("a", 1), ev("b", 2)], "an id is queued once");
    store.reschedule_event("b", 2, 50, Some("boom")).unwrap();
    let b = &store.queued_events().unwrap()[1];
    assert_eq!(
        (b.attempts, b.next_ms, b.last_error.as_deref()),
        (2, 50, Some("boom"))
    );
    let dl = |queue: &str| DeadLetter {
        id: 0,
        queue: queue.into(),
        request_id: "b".into(),
        function: "f".into(),
        qualifier: Some("1".into()),
        payload: b"{}".to_vec(),
        origin: "{}".into(),
        condition: "RetriesExhausted".into(),
        reason: "r".into(),
        record: "{}".into(),
        created_ms: 3,
    };
    store
        .finish_events(&["b".into()], &[dl("default"), dl("other")])
        .unwrap();
    assert_eq!(store.queued_events().unwrap(), vec![ev("a", 1)]);
    let all = store.dead_letters(None).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].qualifier.as_deref(), Some("1"));
    let other = store.dead_letters(Some("other")).unwrap();
    assert_eq!(other.len(), 1);
    let back = store
        .replay_dead_letters(&[other[0].id, 9999], &|d| {
            ev(&format!("{}-again", d.request_id), 7)
        })
        .unwrap();
    assert_eq!(back.len(), 1, "an unknown id is skipped");
    assert_eq!(store.dead_letters(None).unwrap().len(), 1);
    assert_eq!(store.queued_events().unwrap().len(), 2);
    store
        .finish_events(&["a".into(), "b-again".into()], &[])
        .unwrap();
    assert!(store.queued_events().unwrap().is_empty());
}
