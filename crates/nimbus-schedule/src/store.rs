//! The schedules' durable state: tables of their own in nimbus's SQLite
//! database (`nimbus.db`, its own connection, WAL and `synchronous=FULL`
//! like the main store), so one file holds everything and a hand-off
//! could share a transaction with a queue kept there too.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::model::{Rule, Schedule, ScheduleError, ScheduleResult};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sched_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sched_schedules (
    grp TEXT NOT NULL,
    name TEXT NOT NULL,
    doc TEXT NOT NULL,
    -- The last tick handed off (or the baseline after a change), epoch ms
    -- on the schedule clock: ticks at or before it never fire again.
    cursor_ms INTEGER NOT NULL,
    PRIMARY KEY (grp, name)
);
CREATE TABLE IF NOT EXISTS sched_rules (
    name TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    cursor_ms INTEGER NOT NULL
);
-- Fired ticks waiting to be handed to Lambda (or retried).
CREATE TABLE IF NOT EXISTS sched_outbox (
    id TEXT PRIMARY KEY,
    source_arn TEXT NOT NULL,
    principal TEXT NOT NULL,
    function_arn TEXT NOT NULL,
    payload BLOB NOT NULL,
    tick_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_ms INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    max_age_s INTEGER NOT NULL,
    dead_letter_arn TEXT,
    role_arn TEXT
);
CREATE INDEX IF NOT EXISTS sched_outbox_next ON sched_outbox (next_ms);
-- Ticks that could not be handed off within their retry policy.
CREATE TABLE IF NOT EXISTS sched_dead_letters (
    id TEXT PRIMARY KEY,
    source_arn TEXT NOT NULL,
    function_arn TEXT NOT NULL,
    payload BLOB NOT NULL,
    tick_ms INTEGER NOT NULL,
    dead_letter_arn TEXT,
    error TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
";

/// One fired tick for one target, as queued in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutboxRow {
    pub(crate) id: String,
    pub(crate) source_arn: String,
    pub(crate) principal: String,
    pub(crate) function_arn: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) tick_ms: i64,
    pub(crate) attempts: u32,
    pub(crate) next_ms: i64,
    pub(crate) max_attempts: u32,
    pub(crate) max_age_s: u32,
    pub(crate) dead_letter_arn: Option<String>,
    /// The role a Scheduler schedule invokes with; `None` for rules (the
    /// function's resource policy decides for them).
    pub(crate) role_arn: Option<String>,
}

pub(crate) fn open(path: Option<&Path>) -> ScheduleResult<Connection> {
    let conn = match path {
        Some(p) => Connection::open(p)?,
        None => Connection::open_in_memory()?,
    };
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

fn to_json<T: serde::Serialize>(v: &T) -> ScheduleResult<String> {
    serde_json::to_string(v).map_err(|e| ScheduleError::Internal(e.to_string()))
}

pub(crate) fn meta(conn: &Connection, key: &str) -> ScheduleResult<Option<String>> {
    Ok(conn
        .query_row("SELECT value FROM sched_meta WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .optional()?)
}

pub(crate) fn set_meta(conn: &Connection, key: &str, value: &str) -> ScheduleResult<()> {
    conn.execute(
        "INSERT OR REPLACE INTO sched_meta (key, value) VALUES (?1, ?2)",
        params![key, value],
    )?;
    Ok(())
}

/// Every schedule with its cursor; a document that no longer parses is
/// logged and skipped rather than stopping the server.
pub(crate) fn load_schedules(conn: &Connection) -> ScheduleResult<Vec<(Schedule, i64)>> {
    let mut stmt = conn.prepare("SELECT doc, cursor_ms, name FROM sched_schedules")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (doc, cursor, name) = row?;
        match serde_json::from_str(&doc) {
            Ok(s) => out.push((s, cursor)),
            Err(e) => tracing::error!(schedule = %name, "unreadable schedule record: {e}"),
        }
    }
    Ok(out)
}

pub(crate) fn load_rules(conn: &Connection) -> ScheduleResult<Vec<(Rule, i64)>> {
    let mut stmt = conn.prepare("SELECT doc, cursor_ms, name FROM sched_rules")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (doc, cursor, name) = row?;
        match serde_json::from_str(&doc) {
            Ok(s) => out.push((s, cursor)),
            Err(e) => tracing::error!(rule = %name, "unreadable rule record: {e}"),
        }
    }
    Ok(out)
}

pub(crate) fn put_schedule(tx: &Transaction<'_>, s: &Schedule, cursor: i64) -> ScheduleResult<()> {
    tx.execute(
        "INSERT OR REPLACE INTO sched_schedules (grp, name, doc, cursor_ms) VALUES (?1, ?2, ?3, ?4)",
        params![s.group, s.name, to_json(s)?, cursor],
    )?;
    Ok(())
}

pub(crate) fn delete_schedule(tx: &Transaction<'_>, group: &str, name: &str) -> ScheduleResult<()> {
    tx.execute(
        "DELETE FROM sched_schedules WHERE grp = ?1 AND name = ?2",
        params![group, name],
    )?;
    Ok(())
}

pub(crate) fn put_rule(tx: &Transaction<'_>, r: &Rule, cursor: i64) -> ScheduleResult<()> {
    tx.execute(
        "INSERT OR REPLACE INTO sched_rules (name, doc, cursor_ms) VALUES (?1, ?2, ?3)",
        params![r.name, to_json(r)?, cursor],
    )?;
    Ok(())
}

pub(crate) fn delete_rule(tx: &Transaction<'_>, name: &str) -> ScheduleResult<()> {
    tx.execute("DELETE FROM sched_rules WHERE name = ?1", [name])?;
    Ok(())
}

pub(crate) fn set_schedule_cursor(
    tx: &Transaction<'_>,
    group: &str,
    name: &str,
    cursor: i64,
) -> ScheduleResult<()> {
    tx.execute(
        "UPDATE sched_schedules SET cursor_ms = ?3 WHERE grp = ?1 AND name = ?2",
        params![group, name, cursor],
    )?;
    Ok(())
}

pub(crate) fn set_rule_cursor(tx: &Transaction<'_>, name: &str, cursor: i64) -> ScheduleResult<()> {
    tx.execute(
        "UPDATE sched_rules SET cursor_ms = ?2 WHERE name = ?1",
        params![name, cursor],
    )?;
    Ok(())
}

pub(crate) fn push_outbox(tx: &Transaction<'_>, row: &OutboxRow) -> ScheduleResult<()> {
    tx.execute(
        "INSERT INTO sched_outbox (id, source_arn, principal, function_arn, payload, tick_ms,
             attempts, next_ms, max_attempts, max_age_s, dead_letter_arn, role_arn)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            row.id,
            row.source_arn,
            row.principal,
            row.function_arn,
            row.payload,
            row.tick_ms,
            row.attempts,
            row.next_ms,
            row.max_attempts,
            row.max_age_s,
            row.dead_letter_arn,
            row.role_arn
        ],
    )?;
    Ok(())
}

/// Rows due at `now_ms`, oldest first, at most `limit`.
pub(crate) fn due_outbox(
    conn: &Connection,
    now_ms: i64,
    limit: u32,
) -> ScheduleResult<Vec<OutboxRow>> {
    let mut stmt = conn.prepare(
        "SELECT id, source_arn, principal, function_arn, payload, tick_ms, attempts, next_ms,
                max_attempts, max_age_s, dead_letter_arn, role_arn
         FROM sched_outbox WHERE next_ms <= ?1 ORDER BY next_ms, tick_ms LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![now_ms, limit], |r| {
        Ok(OutboxRow {
            id: r.get(0)?,
            source_arn: r.get(1)?,
            principal: r.get(2)?,
            function_arn: r.get(3)?,
            payload: r.get(4)?,
            tick_ms: r.get(5)?,
            attempts: r.get(6)?,
            next_ms: r.get(7)?,
            max_attempts: r.get(8)?,
            max_age_s: r.get(9)?,
            dead_letter_arn: r.get(10)?,
            role_arn: r.get(11)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn next_outbox_ms(conn: &Connection) -> ScheduleResult<Option<i64>> {
    Ok(conn.query_row("SELECT MIN(next_ms) FROM sched_outbox", [], |r| r.get(0))?)
}

pub(crate) fn delete_outbox(conn: &Connection, id: &str) -> ScheduleResult<()> {
    conn.execute("DELETE FROM sched_outbox WHERE id = ?1", [id])?;
    Ok(())
}

pub(crate) fn retry_outbox(
    conn: &Connection,
    id: &str,
    attempts: u32,
    next_ms: i64,
) -> ScheduleResult<()> {
    conn.execute(
        "UPDATE sched_outbox SET attempts = ?2, next_ms = ?3 WHERE id = ?1",
        params![id, attempts, next_ms],
    )?;
    Ok(())
}

/// Moves a row from the outbox to the dead letters, in one transaction.
pub(crate) fn dead_letter(
    conn: &mut Connection,
    row: &OutboxRow,
    error: &str,
    now_ms: i64,
) -> ScheduleResult<()> {
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT OR REPLACE INTO sched_dead_letters
             (id, source_arn, function_arn, payload, tick_ms, dead_letter_arn, error, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            row.id,
            row.source_arn,
            row.function_arn,
            row.payload,
            row.tick_ms,
            row.dead_letter_arn,
            error,
            now_ms
        ],
    )?;
    tx.execute("DELETE FROM sched_outbox WHERE id = ?1", [&row.id])?;
    tx.commit()?;
    Ok(())
}

pub(crate) fn dead_letter_count(conn: &Connection) -> ScheduleResult<u64> {
    Ok(
        conn.query_row("SELECT COUNT(*) FROM sched_dead_letters", [], |r| {
            r.get::<_, i64>(0)
        })? as u64,
    )
}
