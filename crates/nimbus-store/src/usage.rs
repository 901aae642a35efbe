//! Metering rollups: one row per function per UTC hour, added to with an
//! upsert, so the table grows with functions × hours, not with invocations.
//!
//! GB-seconds are kept exactly, as MB-milliseconds (billed ms × memory MB,
//! an integer); 1 GB-second is 1024 × 1000 MB-ms.

use rusqlite::{Connection, params};

use crate::StoreResult;

/// Applied at open, after the main schema.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS usage_hours (
    function_name TEXT NOT NULL,
    hour_s INTEGER NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    throttles INTEGER NOT NULL DEFAULT 0,
    billed_ms INTEGER NOT NULL DEFAULT 0,
    mb_ms INTEGER NOT NULL DEFAULT 0,
    init_ms REAL NOT NULL DEFAULT 0,
    duration_ms REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (function_name, hour_s)
);
CREATE INDEX IF NOT EXISTS usage_hours_by_hour ON usage_hours (hour_s);
";

/// MB-milliseconds in one GB-second.
pub const MB_MS_PER_GB_SECOND: u64 = 1024 * 1000;

/// A function's usage in one UTC hour: as stored, or as an increment to
/// add to what is stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageHour {
    pub function: String,
    /// Start of the hour, in seconds since the epoch (a multiple of 3600).
    pub hour_s: i64,
    /// Invocations that ran (function errors included, throttles not).
    pub requests: u64,
    /// Invocations that ended in a function error.
    pub errors: u64,
    /// Invocations refused with 429 (they never ran and are not billed).
    pub throttles: u64,
    /// Billed duration (init included, rounded up to the millisecond).
    pub billed_ms: u64,
    /// Billed ms × memory MB: GB-seconds × 1,024,000.
    pub mb_ms: u64,
    /// Init (cold start) time.
    pub init_ms: f64,
    /// Handler time, as REPORT's Duration.
    pub duration_ms: f64,
}

impl UsageHour {
    /// The start of the UTC hour that `epoch_s` falls in.
    pub fn hour_of(epoch_s: i64) -> i64 {
        epoch_s - epoch_s.rem_euclid(3600)
    }

    /// GB-seconds (memory GB × billed seconds).
    pub fn gb_seconds(&self) -> f64 {
        self.mb_ms as f64 / MB_MS_PER_GB_SECOND as f64
    }

    /// Adds another increment of the same function and hour.
    pub fn add(&mut self, o: &UsageHour) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.throttles += o.throttles;
        self.billed_ms += o.billed_ms;
        self.mb_ms += o.mb_ms;
        self.init_ms += o.init_ms;
        self.duration_ms += o.duration_ms;
    }
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Adds each increment to its (function, hour) row, in one transaction.
pub(crate) fn record(conn: &mut Connection, rows: &[UsageHour]) -> StoreResult<()> {
    let tx = conn.transaction()?;
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO usage_hours
                (function_name, hour_s, requests, errors, throttles, billed_ms, mb_ms, init_ms, duration_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (function_name, hour_s) DO UPDATE SET
                requests = requests + excluded.requests,
                errors = errors + excluded.errors,
                throttles = throttles + excluded.throttles,
                billed_ms = billed_ms + excluded.billed_ms,
                mb_ms = mb_ms + excluded.mb_ms,
                init_ms = init_ms + excluded.init_ms,
                duration_ms = duration_ms + excluded.duration_ms",
        )?;
        for r in rows {
            upsert.execute(params![
                r.function,
                r.hour_s,
                int(r.requests),
                int(r.errors),
                int(r.throttles),
                int(r.billed_ms),
                int(r.mb_ms),
                r.init_ms,
                r.duration_ms
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The rows of hours starting at or after `since_s`, optionally of one
/// function, ordered by hour, then function.
pub(crate) fn since(
    conn: &Connection,
    since_s: i64,
    function: Option<&str>,
) -> StoreResult<Vec<UsageHour>> {
    let mut stmt = conn.prepare_cached(
        "SELECT function_name, hour_s, requests, errors, throttles, billed_ms, mb_ms, init_ms, duration_ms
         FROM usage_hours
         WHERE hour_s >= ?1 AND (?2 IS NULL OR function_name = ?2)
         ORDER BY hour_s, function_name",
    )?;
    let rows = stmt.query_map(params![since_s, function], |r| {
        let n = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
        Ok(UsageHour {
            function: r.get(0)?,
            hour_s: r.get(1)?,
            requests: n(2)?,
            errors: n(3)?,
            throttles: n(4)?,
            billed_ms: n(5)?,
            mb_ms: n(6)?,
            init_ms: r.get(7)?,
            duration_ms: r.get(8)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The usage part of [`crate::store_test_suite`].
pub(crate) fn test_suite(store: &dyn crate::Store) {
    let h = |function: &str, hour_s: i64, requests: u64, mb_ms: u64| UsageHour {
        function: function.into(),
        hour_s,
        requests,
        errors: 1,
        throttles: 2,
        billed_ms: 10,
        mb_ms,
        init_ms: 1.5,
        duration_ms: 2.25,
    };
    assert!(store.usage_since(0, None).unwrap().is_empty());
    store
        .record_usage(&[h("f", 3600, 1, 1280), h("g", 3600, 4, 100)])
        .unwrap();
    // A second batch for the same (function, hour) adds up.
    store
        .record_usage(&[h("f", 3600, 2, 1280), h("f", 7200, 5, 7)])
        .unwrap();
    let all = store.usage_since(0, None).unwrap();
    let mut f1 = h("f", 3600, 3, 2560);
    f1.errors = 2;
    f1.throttles = 4;
    f1.billed_ms = 20;
    f1.init_ms = 3.0;
    f1.duration_ms = 4.5;
    assert_eq!(all, vec![f1, h("g", 3600, 4, 100), h("f", 7200, 5, 7)]);
    assert_eq!(all[0].gb_seconds(), 2560.0 / 1_024_000.0);
    let later = store.usage_since(3601, None).unwrap();
    assert_eq!(later.len(), 1, "hours starting before `since` are left out");
    let g = store.usage_since(0, Some("g")).unwrap();
    assert_eq!(g, vec![h("g", 3600, 4, 100)]);
    assert!(store.usage_since(0, Some("none")).unwrap().is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_start_on_the_hour() {
        assert_eq!(UsageHour::hour_of(0), 0);
        assert_eq!(UsageHour::hour_of(3599), 0);
        assert_eq!(UsageHour::hour_of(3600), 3600);
        assert_eq!(UsageHour::hour_of(1_700_000_123), 1_699_999_200);
        assert_eq!(UsageHour::hour_of(-1), -3600);
    }

    #[test]
    fn gb_seconds_are_exact_for_lambda_memory_sizes() {
        // 128 MB for 1 ms is 0.000125 GB-s.
        let u = UsageHour {
            mb_ms: 128,
            ..Default::default()
        };
        assert_eq!(u.gb_seconds(), 0.000125);
    }
}
