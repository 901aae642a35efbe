//! Schedule expressions (`cron()`, `rate()`, `at()`) as clients send them
//! to PutRule and CreateSchedule: what parses has its next fire times
//! computed in a few time zones. Checks that nothing panics and that fire
//! times strictly increase.

#![no_main]

use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use nimbus_schedule::{Dialect, Expression, parse_timezone};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Expression::parse(text, Dialect::Events);
    let Ok(e) = Expression::parse(text, Dialect::Scheduler) else {
        return;
    };
    let start: DateTime<Utc> = DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default();
    for zone in [None, Some("America/New_York"), Some("Australia/Lord_Howe")] {
        let Ok(tz) = parse_timezone(zone) else { continue };
        let mut t = start;
        for _ in 0..4 {
            match e.next_after(t, start, tz) {
                Some(n) => {
                    assert!(n > t, "{text}: {n} is not after {t}");
                    t = n;
                }
                None => break,
            }
        }
    }
});
