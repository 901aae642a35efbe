//! Schedule expressions in AWS's dialect: `cron(...)`, `rate(...)` and
//! (EventBridge Scheduler only) `at(...)`, and their next fire time.
//!
//! The cron parser is our own rather than a wrapper around `croner` (the
//! closest crate): AWS's six fields are minutes-first with a Year field,
//! day-of-week 1-7 is SUN-SAT (croner's 0-7 is SUN-SUN), exactly one of the
//! two day fields must be `?`, and AWS validates differently (no seconds,
//! years 1970-2199). Translating all of that into croner's syntax and back
//! into AWS's errors would be as large as this parser, which is a bitset
//! per field and a walk over calendar days. Time zones come from
//! `chrono-tz`; daylight-saving time follows EventBridge Scheduler: a local
//! time skipped by a spring-forward change does not fire, and one repeated
//! by a fall-back change fires once (at its first occurrence).

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;

/// Why an expression was refused (for logs; the API answers with AWS's
/// fixed messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExprError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ExprError> {
    Err(ExprError(msg.into()))
}

/// Which service's rules an expression is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// EventBridge Scheduler: cron, rate and at.
    Scheduler,
    /// EventBridge rules: cron and rate.
    Events,
}

/// A parsed schedule expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expression {
    Cron(Box<Cron>),
    /// A fixed period, in seconds, counted from the schedule's anchor (its
    /// StartDate or creation).
    Rate(i64),
    /// One local date and time.
    At(NaiveDateTime),
}

/// A bitset over 0..256, one per cron field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Bits([u64; 4]);

impl Bits {
    fn set(&mut self, i: u32) {
        self.0[(i / 64) as usize] |= 1 << (i % 64);
    }
    fn has(&self, i: u32) -> bool {
        i < 256 && self.0[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DayOfMonth {
    Any,
    Days(Bits),
    /// `L`: the last day of the month.
    Last,
    /// `LW`: the last weekday (Monday to Friday) of the month.
    LastWeekday,
    /// `15W`: the weekday nearest the 15th, within the month.
    NearestWeekday(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DayOfWeek {
    Any,
    /// Bits 1-7, SUN=1.
    Days(Bits),
    /// `6L`: the last Friday of the month.
    Last(u32),
    /// `2#1`: the first Monday of the month.
    Nth(u32, u32),
}

/// A cron expression: minutes, hours, day of month, month, day of week,
/// year.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: Bits,
    hours: Bits,
    dom: DayOfMonth,
    months: Bits,
    dow: DayOfWeek,
    /// Bits are years since 1970.
    years: Bits,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const YEAR_MIN: u32 = 1970;
const YEAR_MAX: u32 = 2199;

/// A field's range and names.
struct Field {
    what: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

impl Field {
    fn value(&self, s: &str) -> Result<u32, ExprError> {
        let upper = s.to_ascii_uppercase();
        if let Some(i) = self.names.iter().position(|n| *n == upper) {
            return Ok(self.min + i as u32);
        }
        if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return err(format!("{}: '{s}' is not a value", self.what));
        }
        let v: u32 = s
            .parse()
            .map_err(|_| ExprError(format!("{}: '{s}'", self.what)))?;
        if v < self.min || v > self.max {
            return err(format!(
                "{}: {v} is outside {}-{}",
                self.what, self.min, self.max
            ));
        }
        Ok(v)
    }

    /// `*`, `a`, `a-b`, each optionally `/step`, comma-separated.
    fn parse(&self, text: &str) -> Result<Bits, ExprError> {
        let mut bits = Bits::default();
        for item in text.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => {
                    let step: u32 = s
                        .parse()
                        .ok()
                        .filter(|s| *s > 0)
                        .ok_or_else(|| ExprError(format!("{}: bad step '{s}'", self.what)))?;
                    (r, step)
                }
                None => (item, 1),
            };
            let (lo, hi) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b && self.names.is_empty() {
                    return err(format!("{}: range {range} runs backwards", self.what));
                }
                // Months and days of the week wrap around (`NOV-FEB`,
                // `FRI-MON`), as in Quartz.
                (
                    a,
                    if a > b {
                        b + self.max - self.min + 1
                    } else {
                        b
                    },
                )
            } else {
                let a = self.value(range)?;
                // `5/15` means from 5 to the end, every 15.
                (a, if item.contains('/') { self.max } else { a })
            };
            let span = self.max - self.min + 1;
            let mut v = lo;
            while v <= hi {
                let w = if v > self.max { v - span } else { v };
                bits.set(w - self.min + self.offset());
                v += step;
            }
        }
        Ok(bits)
    }

    /// Years are stored from 1970; other fields by value.
    fn offset(&self) -> u32 {
        if self.min == YEAR_MIN { 0 } else { self.min }
    }
}

const MINUTE: Field = Field {
    what: "minutes",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    what: "hours",
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Field = Field {
    what: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    what: "month",
    min: 1,
    max: 12,
    names: &MONTHS,
};
const DOW: Field = Field {
    what: "day-of-week",
    min: 1,
    max: 7,
    names: &DAYS,
};
const YEAR: Field = Field {
    what: "year",
    min: YEAR_MIN,
    max: YEAR_MAX,
    names: &[],
};

fn parse_dom(s: &str) -> Result<DayOfMonth, ExprError> {
    let upper = s.to_ascii_uppercase();
    if s == "?" {
        return Ok(DayOfMonth::Any);
    }
    if upper == "L" {
        return Ok(DayOfMonth::Last);
    }
    if upper == "LW" {
        return Ok(DayOfMonth::LastWeekday);
    }
    if let Some(day) = upper.strip_suffix('W') {
        return Ok(DayOfMonth::NearestWeekday(DOM.value(day)?));
    }
    if upper.contains('L') || upper.contains('W') || s.contains('#') {
        return err(format!("day-of-month: '{s}'"));
    }
    Ok(DayOfMonth::Days(DOM.parse(s)?))
}

fn parse_dow(s: &str) -> Result<DayOfWeek, ExprError> {
    let upper = s.to_ascii_uppercase();
    if s == "?" {
        return Ok(DayOfWeek::Any);
    }
    if let Some((day, n)) = s.split_once('#') {
        let n: u32 = match n {
            "1" | "2" | "3" | "4" | "5" => n.parse().unwrap_or(1),
            _ => return err(format!("day-of-week: '#{n}' must be 1-5")),
        };
        return Ok(DayOfWeek::Nth(DOW.value(day)?, n));
    }
    if let Some(day) = upper.strip_suffix('L') {
        return Ok(DayOfWeek::Last(DOW.value(day)?));
    }
    if upper.contains('L') || upper.contains('W') {
        return err(format!("day-of-week: '{s}'"));
    }
    Ok(DayOfWeek::Days(DOW.parse(s)?))
}

impl Cron {
    /// Parses the inside of `cron(...)`: six fields separated by spaces.
    pub fn parse(body: &str) -> Result<Self, ExprError> {
        let fields: Vec<&str> = body.split_whitespace().collect();
        let [min, hour, dom, month, dow, year] = fields.as_slice() else {
            return err(format!("cron needs 6 fields, got {}", fields.len()));
        };
        for (f, name) in [
            (min, "minutes"),
            (hour, "hours"),
            (month, "month"),
            (year, "year"),
        ] {
            if f.contains('?') {
                return err(format!("{name}: '?' is only for the day fields"));
            }
        }
        let dom = parse_dom(dom)?;
        let dow = parse_dow(dow)?;
        match (&dom, &dow) {
            (DayOfMonth::Any, DayOfWeek::Any) => {
                return err("only one of day-of-month and day-of-week may be '?'");
            }
            (DayOfMonth::Any, _) | (_, DayOfWeek::Any) => {}
            _ => return err("one of day-of-month and day-of-week must be '?'"),
        }
        Ok(Cron {
            minutes: MINUTE.parse(min)?,
            hours: HOUR.parse(hour)?,
            dom,
            months: MONTH.parse(month)?,
            dow,
            years: YEAR.parse(year)?,
        })
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        let last = last_day(date.year(), date.month());
        let d = date.day();
        // SUN=1 .. SAT=7.
        let wd = date.weekday().num_days_from_sunday() + 1;
        match (&self.dom, &self.dow) {
            (DayOfMonth::Days(b), _) => b.has(d),
            (DayOfMonth::Last, _) => d == last,
            (DayOfMonth::LastWeekday, _) => {
                let mut l = last;
                while is_weekend(date.with_day(l)) {
                    l -= 1;
                }
                d == l
            }
            (DayOfMonth::NearestWeekday(n), _) => {
                nearest_weekday(date.year(), date.month(), *n) == Some(d)
            }
            (DayOfMonth::Any, DayOfWeek::Days(b)) => b.has(wd),
            (DayOfMonth::Any, DayOfWeek::Last(w)) => wd == *w && d + 7 > last,
            (DayOfMonth::Any, DayOfWeek::Nth(w, n)) => wd == *w && (d - 1) / 7 + 1 == *n,
            (DayOfMonth::Any, DayOfWeek::Any) => false,
        }
    }

    /// The first local time matching after `after`, in `tz`.
    fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        // Local times more than a DST shift (at most a few hours) before
        // `after`'s own local time cannot come after it.
        let threshold = after
            .with_timezone(&tz)
            .naive_local()
            .checked_sub_signed(Duration::hours(3))?;
        let start = threshold.date();
        let mut year = start.year();
        while year <= YEAR_MAX as i32 {
            if !self.years.has((year - YEAR_MIN as i32).max(0) as u32) || year < YEAR_MIN as i32 {
                year += 1;
                continue;
            }
            for month in 1..=12u32 {
                if !self.months.has(month) || (year == start.year() && month < start.month()) {
                    continue;
                }
                for day in 1..=last_day(year, month) {
                    let Some(date) = NaiveDate::from_ymd_opt(year, month, day) else {
                        continue;
                    };
                    if date < start || !self.day_matches(date) {
                        continue;
                    }
                    for hour in 0..24 {
                        if !self.hours.has(hour)
                            || date.and_hms_opt(hour, 59, 59).is_none_or(|t| t < threshold)
                        {
                            continue;
                        }
                        for minute in 0..60 {
                            if !self.minutes.has(minute) {
                                continue;
                            }
                            let Some(local) = date.and_hms_opt(hour, minute, 0) else {
                                continue;
                            };
                            // Skipped (spring forward): no fire. Repeated
                            // (fall back): the first one only.
                            let Some(t) = tz.from_local_datetime(&local).earliest() else {
                                continue;
                            };
                            let t = t.with_timezone(&Utc);
                            if t > after {
                                return Some(t);
                            }
                        }
                    }
                }
            }
            year += 1;
        }
        None
    }
}

fn is_weekend(d: Option<NaiveDate>) -> bool {
    d.is_some_and(|d| matches!(d.weekday(), Weekday::Sat | Weekday::Sun))
}

fn last_day(year: i32, month: u32) -> u32 {
    let (ny, nm) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    NaiveDate::from_ymd_opt(ny, nm, 1)
        .and_then(|d| d.pred_opt())
        .map_or(28, |d| d.day())
}

/// Quartz's `nW`: the weekday nearest day `n`, not leaving the month; no
/// day when the month is shorter than `n`.
fn nearest_weekday(year: i32, month: u32, n: u32) -> Option<u32> {
    let last = last_day(year, month);
    if n > last {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(year, month, n)?;
    Some(match date.weekday() {
        Weekday::Sat if n == 1 => 3,
        Weekday::Sat => n - 1,
        Weekday::Sun if n == last => n - 2,
        Weekday::Sun => n + 1,
        _ => n,
    })
}

impl Expression {
    /// Parses an expression as `dialect` accepts it.
    pub fn parse(text: &str, dialect: Dialect) -> Result<Self, ExprError> {
        let text = text.trim();
        let inner = |prefix: &str| {
            text.strip_prefix(prefix)
                .and_then(|r| r.strip_suffix(')'))
                .map(str::trim)
        };
        if let Some(body) = inner("cron(") {
            return Ok(Expression::Cron(Box::new(Cron::parse(body)?)));
        }
        if let Some(body) = inner("rate(") {
            return parse_rate(body).map(Expression::Rate);
        }
        if let Some(body) = inner("at(") {
            if dialect == Dialect::Events {
                return err("at() is an EventBridge Scheduler expression");
            }
            return NaiveDateTime::parse_from_str(body, "%Y-%m-%dT%H:%M:%S")
                .map(Expression::At)
                .map_err(|e| ExprError(format!("at(): {e}")));
        }
        err("expected cron(...), rate(...) or at(...)")
    }

    /// The first fire time strictly after `after`. `anchor` is where a
    /// rate counts from; `tz` is the zone cron and at are read in.
    pub fn next_after(
        &self,
        after: DateTime<Utc>,
        anchor: DateTime<Utc>,
        tz: Tz,
    ) -> Option<DateTime<Utc>> {
        match self {
            Expression::Cron(c) => c.next_after(after, tz),
            Expression::Rate(period) => {
                let elapsed = (after - anchor).num_seconds();
                // The first tick is one period after the anchor.
                let k = if elapsed < 0 { 1 } else { elapsed / period + 1 };
                anchor.checked_add_signed(Duration::try_seconds(k.checked_mul(*period)?)?)
            }
            Expression::At(local) => {
                let t = tz
                    .from_local_datetime(local)
                    .earliest()
                    // A time in a spring-forward gap fires when the gap ends.
                    .or_else(|| {
                        let later = local.checked_add_signed(Duration::hours(1))?;
                        tz.from_local_datetime(&later).earliest()
                    })?
                    .with_timezone(&Utc);
                (t > after).then_some(t)
            }
        }
    }

    /// Whether the schedule fires at most once.
    pub fn is_one_time(&self) -> bool {
        matches!(self, Expression::At(_))
    }
}

fn parse_rate(body: &str) -> Result<i64, ExprError> {
    let mut it = body.split_whitespace();
    let (Some(n), Some(unit), None) = (it.next(), it.next(), it.next()) else {
        return err("rate needs a value and a unit");
    };
    if !n.bytes().all(|b| b.is_ascii_digit()) || n.len() > 9 {
        return err(format!("rate: '{n}' is not a positive whole number"));
    }
    let n: i64 = n.parse().map_err(|_| ExprError("rate".into()))?;
    if n == 0 {
        return err("rate: the value must be positive");
    }
    let seconds = match (unit, n == 1) {
        ("minute", true) | ("minutes", false) => 60,
        ("hour", true) | ("hours", false) => 3600,
        ("day", true) | ("days", false) => 86400,
        _ => return err(format!("rate: unit '{unit}' for value {n}")),
    };
    Ok(n * seconds)
}

/// Parses a ScheduleExpressionTimezone (an IANA name); none is UTC.
pub fn parse_timezone(tz: Option<&str>) -> Result<Tz, ExprError> {
    match tz {
        None => Ok(Tz::UTC),
        Some(name) => name
            .parse::<Tz>()
            .map_err(|_| ExprError(format!("unknown time zone '{name}'"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// (expression, time zone, after, the next fire times in UTC)
    const TABLE: &[(&str, &str, &str, &[&str])] = &[
        // every minute, every 5, a range with a step
        (
            "cron(* * * * ? *)",
            "UTC",
            "2026-01-01T00:00:30Z",
            &["2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z"],
        ),
        (
            "cron(0/5 * * * ? *)",
            "UTC",
            "2026-01-01T00:03:00Z",
            &["2026-01-01T00:05:00Z", "2026-01-01T00:10:00Z"],
        ),
        (
            "cron(*/15 * * * ? *)",
            "UTC",
            "2026-01-01T00:50:00Z",
            &["2026-01-01T01:00:00Z", "2026-01-01T01:15:00Z"],
        ),
        (
            "cron(10-20/5 * * * ? *)",
            "UTC",
            "2026-01-01T00:12:00Z",
            &[
                "2026-01-01T00:15:00Z",
                "2026-01-01T00:20:00Z",
                "2026-01-01T01:10:00Z",
            ],
        ),
        (
            "cron(0,30 9 * * ? *)",
            "UTC",
            "2026-01-01T09:00:00Z",
            &["2026-01-01T09:30:00Z", "2026-01-02T09:00:00Z"],
        ),
        // AWS's documented examples
        (
            "cron(0 10 * * ? *)",
            "UTC",
            "2026-03-04T11:00:00Z",
            &["2026-03-05T10:00:00Z"],
        ),
        (
            "cron(15 12 * * ? *)",
            "UTC",
            "2026-03-04T12:15:00Z",
            &["2026-03-05T12:15:00Z"],
        ),
        (
            "cron(0 18 ? * MON-FRI *)",
            "UTC",
            "2026-11-27T18:00:00Z",
            &["2026-11-30T18:00:00Z", "2026-12-01T18:00:00Z"],
        ),
        (
            "cron(0 8 1 * ? *)",
            "UTC",
            "2026-01-01T08:00:00Z",
            &["2026-02-01T08:00:00Z", "2026-03-01T08:00:00Z"],
        ),
        (
            "cron(0/10 * ? * MON-FRI *)",
            "UTC",
            "2026-11-28T12:00:00Z",
            &["2026-11-30T00:00:00Z"],
        ),
        (
            "cron(0/5 8-17 ? * MON-FRI *)",
            "UTC",
            "2026-11-25T17:55:00Z",
            &["2026-11-26T08:00:00Z"],
        ),
        (
            "cron(0 9 ? * 2#1 *)",
            "UTC",
            "2026-11-01T00:00:00Z",
            &["2026-11-02T09:00:00Z", "2026-12-07T09:00:00Z"],
        ),
        // day-of-week numbers: 1 = SUN, 7 = SAT
        (
            "cron(0 12 ? * 1 *)",
            "UTC",
            "2026-11-25T00:00:00Z",
            &["2026-11-29T12:00:00Z"],
        ),
        (
            "cron(0 12 ? * 7 *)",
            "UTC",
            "2026-11-25T00:00:00Z",
            &["2026-11-28T12:00:00Z"],
        ),
        (
            "cron(0 12 ? * FRI-MON *)",
            "UTC",
            "2026-11-25T13:00:00Z",
            &[
                "2026-11-27T12:00:00Z",
                "2026-11-28T12:00:00Z",
                "2026-11-29T12:00:00Z",
                "2026-11-30T12:00:00Z",
                "2026-12-04T12:00:00Z",
            ],
        ),
        (
            "cron(0 12 ? * sun,sat *)",
            "UTC",
            "2026-11-25T00:00:00Z",
            &["2026-11-28T12:00:00Z", "2026-11-29T12:00:00Z"],
        ),
        // month names and ranges
        (
            "cron(0 0 1 JAN,JUL ? *)",
            "UTC",
            "2026-02-01T00:00:00Z",
            &["2026-07-01T00:00:00Z", "2027-01-01T00:00:00Z"],
        ),
        (
            "cron(0 0 1 NOV-FEB ? *)",
            "UTC",
            "2026-03-01T00:00:00Z",
            &["2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"],
        ),
        // L, LW, W, nL, #
        (
            "cron(0 0 L * ? *)",
            "UTC",
            "2026-02-01T00:00:00Z",
            &["2026-02-28T00:00:00Z", "2026-03-31T00:00:00Z"],
        ),
        (
            "cron(0 0 L 2 ? *)",
            "UTC",
            "2027-03-01T00:00:00Z",
            &["2028-02-29T00:00:00Z"],
        ),
        (
            "cron(0 0 LW * ? *)",
            "UTC",
            "2026-05-01T00:00:00Z",
            &["2026-05-29T00:00:00Z", "2026-06-30T00:00:00Z"],
        ),
        (
            "cron(0 0 15W * ? *)",
            "UTC",
            "2026-08-01T00:00:00Z",
            &["2026-08-14T00:00:00Z", "2026-09-15T00:00:00Z"],
        ),
        (
            "cron(0 0 1W * ? *)",
            "UTC",
            "2026-07-31T00:00:00Z",
            &["2026-08-03T00:00:00Z"],
        ),
        (
            "cron(0 0 31W * ? *)",
            "UTC",
            "2026-05-01T00:00:00Z",
            &["2026-05-29T00:00:00Z"],
        ),
        (
            "cron(0 0 ? * 6L *)",
            "UTC",
            "2026-11-01T00:00:00Z",
            &["2026-11-27T00:00:00Z", "2026-12-25T00:00:00Z"],
        ),
        (
            "cron(30 6 ? * MON#3 *)",
            "UTC",
            "2026-11-01T00:00:00Z",
            &["2026-11-16T06:30:00Z"],
        ),
        (
            "cron(0 0 ? * 2#5 *)",
            "UTC",
            "2026-01-01T00:00:00Z",
            &["2026-03-30T00:00:00Z", "2026-06-29T00:00:00Z"],
        ),
        // 31st only in months that have one
        (
            "cron(0 0 31 * ? *)",
            "UTC",
            "2026-01-31T00:00:00Z",
            &["2026-03-31T00:00:00Z", "2026-05-31T00:00:00Z"],
        ),
        // years
        (
            "cron(0 0 1 1 ? 2030)",
            "UTC",
            "2026-01-01T00:00:00Z",
            &["2030-01-01T00:00:00Z"],
        ),
        (
            "cron(0 0 1 1 ? 2027-2028)",
            "UTC",
            "2026-06-01T00:00:00Z",
            &["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"],
        ),
        ("cron(0 0 1 1 ? 2020)", "UTC", "2026-06-01T00:00:00Z", &[]),
        (
            "cron(59 23 31 12 ? 2199)",
            "UTC",
            "2199-12-31T23:58:00Z",
            &["2199-12-31T23:59:00Z"],
        ),
        // time zones: New York is UTC-5 in winter, UTC-4 in summer
        (
            "cron(0 9 * * ? *)",
            "America/New_York",
            "2026-01-15T00:00:00Z",
            &["2026-01-15T14:00:00Z"],
        ),
        (
            "cron(0 9 * * ? *)",
            "America/New_York",
            "2026-07-15T00:00:00Z",
            &["2026-07-15T13:00:00Z"],
        ),
        (
            "cron(0 9 * * ? *)",
            "Asia/Kolkata",
            "2026-01-15T00:00:00Z",
            &["2026-01-15T03:30:00Z"],
        ),
        // DST starts 2026-03-08 02:00 in New York: 02:30 does not exist, skipped
        (
            "cron(30 2 * * ? *)",
            "America/New_York",
            "2026-03-07T08:00:00Z",
            &["2026-03-09T06:30:00Z"],
        ),
        // DST ends 2026-11-01 02:00 in New York: 01:30 happens twice, fires once
        (
            "cron(30 1 * * ? *)",
            "America/New_York",
            "2026-10-31T12:00:00Z",
            &["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"],
        ),
        // hourly across the fall-back hour: 01:00 EDT, then 02:00 EST
        (
            "cron(0 * * * ? *)",
            "America/New_York",
            "2026-11-01T04:30:00Z",
            &["2026-11-01T05:00:00Z", "2026-11-01T07:00:00Z"],
        ),
        // Europe/Berlin springs forward 2026-03-29 02:00 -> 03:00
        (
            "cron(0 2 * * ? *)",
            "Europe/Berlin",
            "2026-03-28T02:00:00Z",
            &["2026-03-30T00:00:00Z"],
        ),
        // rate and at
        (
            "rate(1 minute)",
            "UTC",
            "2026-01-01T00:00:00Z",
            &["2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z"],
        ),
        (
            "rate(5 minutes)",
            "UTC",
            "2026-01-01T00:07:00Z",
            &["2026-01-01T00:10:00Z"],
        ),
        (
            "rate(2 hours)",
            "UTC",
            "2026-01-01T03:00:00Z",
            &["2026-01-01T04:00:00Z", "2026-01-01T06:00:00Z"],
        ),
        (
            "rate(1 day)",
            "UTC",
            "2026-01-01T00:00:00Z",
            &["2026-01-02T00:00:00Z"],
        ),
        (
            "at(2026-12-24T18:00:00)",
            "UTC",
            "2026-01-01T00:00:00Z",
            &["2026-12-24T18:00:00Z"],
        ),
        (
            "at(2026-12-24T18:00:00)",
            "Europe/Paris",
            "2026-01-01T00:00:00Z",
            &["2026-12-24T17:00:00Z"],
        ),
        (
            "at(2020-01-01T00:00:00)",
            "UTC",
            "2026-01-01T00:00:00Z",
            &[],
        ),
    ];

    #[test]
    fn the_dialect_fires_when_aws_does() {
        // Rates count from this anchor.
        let anchor = utc("2026-01-01T00:00:00Z");
        for (expr, tz, after, want) in TABLE {
            let e = Expression::parse(expr, Dialect::Scheduler)
                .unwrap_or_else(|e| panic!("{expr}: {e}"));
            let tz = parse_timezone(Some(tz)).unwrap();
            let mut t = utc(after);
            let mut got = Vec::new();
            for _ in 0..want.len().max(1) {
                match e.next_after(t, anchor, tz) {
                    Some(n) => {
                        got.push(n.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                        t = n;
                    }
                    None => break,
                }
            }
            got.truncate(want.len());
            assert_eq!(got, *want, "{expr} in {tz} after {after}");
        }
    }

    #[test]
    fn invalid_expressions_are_refused() {
        for bad in [
            "cron(* * * * * *)",     // both day fields set
            "cron(* * ? * ? *)",     // both day fields '?'
            "cron(0 12 * * ?)",      // five fields
            "cron(0 12 * * ? * *)",  // seven fields
            "cron(60 * * * ? *)",    // minute out of range
            "cron(0 24 * * ? *)",    // hour out of range
            "cron(0 0 32 * ? *)",    // day out of range
            "cron(0 0 0 * ? *)",     // day 0
            "cron(0 0 ? 13 MON *)",  // month out of range
            "cron(0 0 ? * 8 *)",     // day-of-week out of range
            "cron(0 0 ? * 0 *)",     // 0 is not SUN here
            "cron(0 0 1 * ? 1969)",  // year before 1970
            "cron(0 0 1 * ? 2200)",  // year after 2199
            "cron(0 0 ? * MON#6 *)", // no sixth Monday
            "cron(0 0 ? * FOO *)",   // unknown name
            "cron(0 0 1 FOO ? *)",   // unknown month
            "cron(5-1 * * * ? *)",   // backwards range
            "cron(*/0 * * * ? *)",   // zero step
            "cron(? * * * ? *)",     // '?' in minutes
            "cron(0 0 L-2 * ? *)",   // unsupported
            "cron()",
            "rate(1 minutes)", // plural for 1
            "rate(5 minute)",  // singular for 5
            "rate(0 minutes)",
            "rate(-1 minutes)",
            "rate(1.5 hours)",
            "rate(1 second)",
            "rate(1 week)",
            "rate(minutes)",
            "at(2026-13-01T00:00:00)",
            "at(2026-01-01 00:00:00)",
            "at(2026-01-01T00:00)",
            "every 5 minutes",
            "",
        ] {
            assert!(
                Expression::parse(bad, Dialect::Scheduler).is_err(),
                "{bad:?} should be refused"
            );
        }
        assert!(Expression::parse("at(2026-01-01T00:00:00)", Dialect::Events).is_err());
        // Extremes answer without panicking.
        let far = utc("2100-01-01T00:00:00Z");
        for (text, anchor) in [
            ("rate(999999999 days)", far),
            ("at(+262142-12-31T23:59:59)", far),
            ("cron(0 0 31 2 ? *)", far),
        ] {
            if let Ok(e) = Expression::parse(text, Dialect::Scheduler) {
                let _ = e.next_after(far, anchor, Tz::UTC);
                let _ = e.next_after(
                    far,
                    anchor,
                    parse_timezone(Some("Pacific/Chatham")).unwrap(),
                );
            }
        }
        assert!(parse_timezone(Some("Mars/Olympus")).is_err());
    }
}
