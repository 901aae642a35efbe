//! The request context: condition keys and their values.

use std::sync::OnceLock;
use std::time::SystemTime;

use crate::time;

/// Condition context of a request: condition keys (case-insensitive:
/// `aws:SourceArn` is `aws:sourcearn`) and their string values. A key may
/// have several values (`aws:TagKeys`); a key with no values counts as
/// absent. `aws:CurrentTime` and `aws:EpochTime` default to the time the
/// context was made (see [`Context::at`]) unless set.
///
/// Keys that describe the principal (`aws:PrincipalArn`,
/// `aws:PrincipalAccount`, `aws:username`, `aws:PrincipalType`,
/// `aws:PrincipalServiceName`) come from the request's
/// [`Principal`](crate::Principal) unless set here.
///
/// ```
/// use nimbus_policy::Context;
/// let ctx = Context::new()
///     .with("aws:SourceIp", "10.0.0.1")
///     .with_values("aws:TagKeys", ["team", "cost-center"]);
/// assert_eq!(ctx.get("AWS:SOURCEIP"), Some(&["10.0.0.1".to_string()][..]));
/// ```
#[derive(Debug, Clone)]
pub struct Context {
    /// Lower-case key, values.
    entries: Vec<(String, Vec<String>)>,
    /// The context's time, in nanoseconds since the epoch.
    now: i128,
    /// `aws:CurrentTime` and `aws:EpochTime` for `now`, formatted when first
    /// asked for (most requests never are).
    current_time: OnceLock<[String; 1]>,
    epoch_time: OnceLock<[String; 1]>,
}

impl Default for Context {
    fn default() -> Self {
        Self::new()
    }
}

impl Context {
    /// An empty context at the current time.
    pub fn new() -> Self {
        Self::at(SystemTime::now())
    }

    /// An empty context whose `aws:CurrentTime` and `aws:EpochTime`
    /// default to `time`.
    pub fn at(time: SystemTime) -> Self {
        Context {
            entries: Vec::new(),
            now: time::nanos_of(time),
            current_time: OnceLock::new(),
            epoch_time: OnceLock::new(),
        }
    }

    /// Sets `key` to the single value `value` (replacing what it had).
    pub fn with(self, key: &str, value: impl Into<String>) -> Self {
        self.with_values(key, [value.into()])
    }

    /// Sets `key` to `values` (replacing what it had); a multivalued key
    /// for `ForAllValues:` / `ForAnyValue:` conditions.
    pub fn with_values<I>(mut self, key: &str, values: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let key = key.to_lowercase();
        let values: Vec<String> = values.into_iter().map(Into::into).collect();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = values,
            None => self.entries.push((key, values)),
        }
        self
    }

    /// The values of `key` (any case), with the time defaults.
    pub fn get(&self, key: &str) -> Option<&[String]> {
        self.get_lower(&key.to_lowercase())
    }

    /// As [`Context::get`], for a key already in lower case.
    pub(crate) fn get_lower(&self, key: &str) -> Option<&[String]> {
        if let Some((_, v)) = self.entries.iter().find(|(k, _)| k == key) {
            return Some(v);
        }
        match key {
            "aws:currenttime" => Some(
                self.current_time
                    .get_or_init(|| [time::format_iso(self.now)]),
            ),
            "aws:epochtime" => Some(
                self.epoch_time
                    .get_or_init(|| [time::format_epoch(self.now)]),
            ),
            _ => None,
        }
    }
}
