//! The request context: condition keys and their values.

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
    current_time: [String; 1],
    epoch_time: [String; 1],
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
        let nanos = time::nanos_of(time);
        Context {
            entries: Vec::new(),
            current_time: [time::format_iso(nanos)],
            epoch_time: [time::format_epoch(nanos)],
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
            "aws:currenttime" => Some(&self.current_time),
            "aws:epochtime" => Some(&self.epoch_time),
            _ => None,
        }
    }
}
