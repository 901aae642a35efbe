//! Dates as the Date condition operators take them: the W3C profile of
//! ISO 8601 (`2020-01-01`, `2020-01-01T12:00:00Z`, `2020-01-01T12:00:00.5+02:00`,
//! ...) or epoch seconds, as nanoseconds since the epoch.

use std::time::{SystemTime, UNIX_EPOCH};

const NANOS: i128 = 1_000_000_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (month and day may
/// run over, as in Feb 31 = Mar 3).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Nanoseconds since the epoch of `t`.
pub(crate) fn nanos_of(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`, as IAM puts `aws:CurrentTime` in the context.
pub(crate) fn format_iso(nanos: i128) -> String {
    let secs = nanos.div_euclid(NANOS) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Epoch seconds (`nanos` truncated), as IAM puts `aws:EpochTime`.
pub(crate) fn format_epoch(nanos: i128) -> String {
    nanos.div_euclid(NANOS).to_string()
}

/// A date value: ISO 8601 when it holds a `T` or a `-`, else epoch seconds
/// (0 to `i64::MAX`). `None` when it is neither.
pub(crate) fn parse_date(s: &str) -> Option<i128> {
    if s.bytes().any(|b| b == b'T' || b == b't' || b == b'-') {
        parse_iso(s.as_bytes())
    } else if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i64 = s.parse().ok()?;
        Some(i128::from(secs) * NANOS)
    } else {
        None
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// Between `min` and `max` digits.
    fn digits(&mut self, min: usize, max: usize) -> Option<i64> {
        let start = self.i;
        while self.i - start < max && self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        if self.i - start < min {
            return None;
        }
        std::str::from_utf8(&self.b[start..self.i])
            .ok()?
            .parse()
            .ok()
    }
}

fn parse_iso(b: &[u8]) -> Option<i128> {
    let mut c = Cursor { b, i: 0 };
    let negative = c.eat(b'-');
    let mut year = c.digits(1, 9)?;
    if negative {
        year = -year;
    }
    if !(-292_275_054..=292_278_993).contains(&year) {
        return None;
    }
    let (mut month, mut day) = (1, 1);
    if c.eat(b'-') {
        month = c.digits(1, 2).filter(|m| (1..=12).contains(m))?;
        if c.eat(b'-') {
            day = c.digits(1, 2).filter(|d| (1..=31).contains(d))?;
        }
    }
    let (mut h, mut min, mut sec, mut frac, mut offset) = (0i64, 0i64, 0i64, 0i128, 0i64);
    if c.eat(b'T') || c.eat(b't') {
        if let Some(hours) = c.digits(1, 2) {
            h = Some(hours).filter(|h| (0..=23).contains(h))?;
            if c.eat(b':') {
                min = c.digits(1, 2).filter(|m| (0..=59).contains(m))?;
                if c.eat(b':') {
                    sec = c.digits(1, 2).filter(|s| (0..=59).contains(s))?;
                    if c.eat(b'.') {
                        let start = c.i;
                        let f = c.digits(1, 9)?;
                        let width = c.i - start;
                        frac = i128::from(f) * 10i128.pow(9 - width as u32);
                    }
                }
            }
        }
        if c.eat(b'Z') || c.eat(b'z') {
        } else if let Some(sign) = c.peek().filter(|s| *s == b'+' || *s == b'-') {
            c.i += 1;
            let oh = c.digits(2, 2).filter(|h| (0..=23).contains(h))?;
            let om = if c.eat(b':') {
                c.digits(2, 2).filter(|m| (0..=59).contains(m))?
            } else {
                0
            };
            offset = (oh * 60 + om) * 60;
            if sign == b'-' {
                offset = -offset;
            }
        }
    }
    if c.i != b.len() {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + h * 3600 + min * 60 + sec - offset;
    Some(i128::from(secs) * NANOS + frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates_and_epoch_seconds() {
        assert_eq!(parse_date("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_date("0"), Some(0));
        assert_eq!(parse_date("1700000000"), Some(1_700_000_000 * NANOS));
        assert_eq!(
            parse_date("2023-11-14T22:13:20Z"),
            Some(1_700_000_000 * NANOS)
        );
        assert_eq!(
            parse_date("2023-11-15T00:13:20+02:00"),
            Some(1_700_000_000 * NANOS)
        );
        assert_eq!(
            parse_date("2023-11-14T17:13:20-05:00"),
            Some(1_700_000_000 * NANOS)
        );
        assert_eq!(
            parse_date("2023-11-14T22:13:20.5Z"),
            Some(1_700_000_000 * NANOS + NANOS / 2)
        );
        assert_eq!(parse_date("2023-11-14"), parse_date("2023-11-14T00:00:00Z"));
        assert_eq!(parse_date("2023-01"), parse_date("2023-01-01T00:00:00Z"));
        assert_eq!(
            parse_date("2023"),
            Some(2023 * NANOS),
            "digits alone are epoch seconds"
        );
        assert!(parse_date("2016-12-13t2:00:00.593194+23").is_some());
        assert_eq!(parse_date("sdfdsf"), None);
        assert_eq!(parse_date("234-13"), None);
        assert_eq!(parse_date("2016-12-13t2:00:00.593194+1"), None);
        assert_eq!(parse_date("2016-12-13t2:00:00.1999999999+10:59"), None);
        assert_eq!(parse_date("9223372036854775808"), None);
        assert_eq!(parse_date(""), None);
    }

    #[test]
    fn formats_round_trip() {
        let t = 1_700_000_000 * NANOS + 123;
        assert_eq!(format_iso(t), "2023-11-14T22:13:20Z");
        assert_eq!(format_epoch(t), "1700000000");
        assert_eq!(parse_date(&format_iso(t)), Some(1_700_000_000 * NANOS));
        assert_eq!(format_iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_iso(-NANOS), "1969-12-31T23:59:59Z");
    }
}
