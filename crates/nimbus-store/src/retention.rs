//! Log retention: a group's `retentionInDays`, and the sweep that deletes
//! the events it no longer keeps.
//!
//! The setting is its own table (not a column of `log_groups`), so databases
//! made before it need no migration; it goes with its group (`ON DELETE
//! CASCADE`).

use rusqlite::{Connection, OptionalExtension, params};

use crate::StoreResult;

/// Applied at open, after the main schema.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log_retention (
    group_name TEXT PRIMARY KEY REFERENCES log_groups(name) ON DELETE CASCADE,
    days INTEGER NOT NULL
);
";

/// Events deleted per transaction: a sweep of a large backlog never holds
/// the write lock long enough to stall the log writer.
const CHUNK: i64 = 5000;

const DAY_MS: i64 = 86_400_000;

/// Sets or removes a group's retention; `false` if there is no such group.
pub(crate) fn put(conn: &Connection, group: &str, days: Option<u32>) -> StoreResult<bool> {
    let exists: Option<i64> = conn
        .query_row("SELECT 1 FROM log_groups WHERE name = ?1", [group], |r| {
            r.get(0)
        })
        .optional()?;
    if exists.is_none() {
        return Ok(false);
    }
    match days {
        Some(d) => conn.execute(
            "INSERT INTO log_retention (group_name, days) VALUES (?1, ?2)
             ON CONFLICT (group_name) DO UPDATE SET days = excluded.days",
            params![group, d],
        )?,
        None => conn.execute("DELETE FROM log_retention WHERE group_name = ?1", [group])?,
    };
    Ok(true)
}

/// Deletes every event older than its group's retention as of `now_ms`,
/// and takes the deleted bytes off its stream's `stored_bytes` (counted as
/// the append counts them: UTF-8 bytes + 26). Returns the events deleted.
pub(crate) fn expire(conn: &mut Connection, now_ms: i64) -> StoreResult<u64> {
    let groups: Vec<(String, i64)> = {
        let mut stmt = conn.prepare_cached("SELECT group_name, days FROM log_retention")?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?
    };
    let mut deleted = 0u64;
    for (group, days) in groups {
        let cutoff = now_ms.saturating_sub(days.saturating_mul(DAY_MS));
        loop {
            let n = expire_chunk(conn, &group, cutoff)?;
            deleted += n;
            if n < CHUNK as u64 {
                break;
            }
        }
    }
    Ok(deleted)
}

/// One transaction: up to [`CHUNK`] of a group's events older than
/// `cutoff`, and their streams' bookkeeping.
fn expire_chunk(conn: &mut Connection, group: &str, cutoff: i64) -> StoreResult<u64> {
    const OLDEST: &str = "SELECT seq FROM log_events WHERE group_name = ?1 AND ts_ms < ?2
                          ORDER BY ts_ms, seq LIMIT ?3";
    let tx = conn.transaction()?;
    let per_stream: Vec<(String, i64)> = {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT stream_name, SUM(length(CAST(message AS BLOB)) + 26) FROM log_events
             WHERE seq IN ({OLDEST}) GROUP BY stream_name"
        ))?;
        stmt.query_map(params![group, cutoff, CHUNK], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?
    };
    if per_stream.is_empty() {
        return Ok(0);
    }
    let n = tx
        .prepare_cached(&format!("DELETE FROM log_events WHERE seq IN ({OLDEST})"))?
        .execute(params![group, cutoff, CHUNK])?;
    for (stream, bytes) in &per_stream {
        tx.prepare_cached(
            "UPDATE log_streams SET
                stored_bytes = MAX(stored_bytes - ?3, 0),
                first_event_ms = (SELECT MIN(ts_ms) FROM log_events WHERE group_name = ?1 AND stream_name = ?2),
                last_event_ms = (SELECT MAX(ts_ms) FROM log_events WHERE group_name = ?1 AND stream_name = ?2)
             WHERE group_name = ?1 AND name = ?2",
        )?
        .execute(params![group, stream, bytes])?;
    }
    tx.commit()?;
    Ok(n as u64)
}

/// The retention part of [`crate::store_test_suite`].
pub(crate) fn test_suite(store: &dyn crate::Store) {
    use crate::{LogAppend, LogEvent, LogQuery};

    let group = "/aws/lambda/retained";
    assert!(
        !store.put_log_retention(group, Some(1)).unwrap(),
        "no such group"
    );
    let now = 100 * DAY_MS;
    let ev = |ts: i64, m: &str| LogEvent {
        timestamp_ms: ts,
        ingestion_ms: ts,
        message: m.into(),
    };
    store
        .append_log_events(&[
            LogAppend {
                group: group.into(),
                stream: "s1".into(),
                events: vec![
                    ev(now - 3 * DAY_MS, "old"),
                    ev(now - 2 * DAY_MS, "older than 1 day"),
                    ev(now - 1000, "new"),
                ],
            },
            LogAppend {
                group: group.into(),
                stream: "s2".into(),
                events: vec![ev(now - 5 * DAY_MS, "only old é")],
            },
        ])
        .unwrap();
    store.create_log_group("/aws/lambda/kept", 0).unwrap();
    store
        .append_log_events(&[LogAppend {
            group: "/aws/lambda/kept".into(),
            stream: "s".into(),
            events: vec![ev(1, "ancient, but the group keeps everything")],
        }])
        .unwrap();
    let retention = |g: &str| {
        store
            .list_log_groups(Some(g))
            .unwrap()
            .into_iter()
            .find(|i| i.name == g)
            .unwrap()
            .retention_days
    };
    assert_eq!(retention(group), None);
    assert_eq!(
        store.expire_log_events(now).unwrap(),
        0,
        "no retention, no expiry"
    );

    assert!(store.put_log_retention(group, Some(7)).unwrap());
    assert_eq!(retention(group), Some(7));
    assert_eq!(store.expire_log_events(now).unwrap(), 0);
    assert!(store.put_log_retention(group, Some(1)).unwrap());
    assert_eq!(retention(group), Some(1));
    assert_eq!(store.expire_log_events(now).unwrap(), 3);
    assert_eq!(store.expire_log_events(now).unwrap(), 0, "idempotent");

    let left = store
        .query_log_events(&LogQuery {
            group: group.into(),
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    let msgs: Vec<_> = left.iter().map(|e| e.event.message.as_str()).collect();
    assert_eq!(msgs, ["new"]);
    let streams = store.list_log_streams(group, None).unwrap().unwrap();
    assert_eq!(streams[0].stored_bytes, "new".len() as i64 + 26);
    assert_eq!(streams[0].first_event_ms, Some(now - 1000));
    assert_eq!(streams[1].stored_bytes, 0, "bytes are UTF-8 bytes");
    assert_eq!(streams[1].first_event_ms, None);
    assert_eq!(
        store.list_log_groups(Some(group)).unwrap()[0].stored_bytes,
        29
    );
    let kept = store
        .query_log_events(&LogQuery {
            group: "/aws/lambda/kept".into(),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(kept.len(), 1);

    assert!(store.put_log_retention(group, None).unwrap());
    assert_eq!(retention(group), None);
    assert!(
        store.put_log_retention(group, None).unwrap(),
        "deleting no policy is fine"
    );
    // The setting goes with its group.
    store.put_log_retention(group, Some(3)).unwrap();
    assert!(store.delete_log_group(group).unwrap());
    store.create_log_group(group, 0).unwrap();
    assert_eq!(retention(group), None);
    store.delete_log_group(group).unwrap();
    store.delete_log_group("/aws/lambda/kept").unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LogAppend, LogEvent, SqliteStore, Store};

    #[test]
    fn a_backlog_larger_than_a_chunk_is_swept_whole() {
        let store = SqliteStore::in_memory().unwrap();
        let n = CHUNK as usize * 2 + 7;
        let events = (0..n)
            .map(|i| LogEvent {
                timestamp_ms: i as i64,
                ingestion_ms: 0,
                message: "x".into(),
            })
            .chain([LogEvent {
                timestamp_ms: 10 * DAY_MS,
                ingestion_ms: 0,
                message: "kept".into(),
            }])
            .collect();
        store
            .append_log_events(&[LogAppend {
                group: "g".into(),
                stream: "s".into(),
                events,
            }])
            .unwrap();
        store.put_log_retention("g", Some(1)).unwrap();
        assert_eq!(store.expire_log_events(10 * DAY_MS).unwrap(), n as u64);
        let s = &store.list_log_streams("g", None).unwrap().unwrap()[0];
        assert_eq!(s.stored_bytes, 4 + 26);
        assert_eq!(s.first_event_ms, Some(10 * DAY_MS));
        assert_eq!(s.last_event_ms, Some(10 * DAY_MS));
    }
}
