//! Asynchronous invocation settings of a function: its event invoke
//! configurations (Put/Update/Get/Delete/ListFunctionEventInvokeConfig,
//! one per qualifier) and its recursive-loop setting
//! (Put/GetFunctionRecursionConfig). Both are documents in the store,
//! mirrored in memory for the queue's workers.

use std::collections::{BTreeMap, HashMap};

use nimbus_core::{FunctionRef, LambdaError, LambdaResult};
use serde::{Deserialize, Serialize};

use crate::LambdaService;

const CONFIG_NS: &str = "lambda.event-invoke-config";
const RECURSION_NS: &str = "lambda.recursion-config";

/// Lambda's default number of retries after a function error.
pub const DEFAULT_MAX_RETRIES: u32 = 2;
/// Lambda's default (and largest) maximum event age: 6 hours.
pub const DEFAULT_MAX_EVENT_AGE_S: u32 = 21_600;

/// One event invoke configuration (of a function's `$LATEST`, version or
/// alias). Persisted as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventInvokeConfig {
    pub function: String,
    /// `$LATEST`, a version number or an alias name.
    pub qualifier: String,
    pub maximum_retry_attempts: Option<u32>,
    pub maximum_event_age_s: Option<u32>,
    pub on_success: Option<String>,
    pub on_failure: Option<String>,
    pub last_modified_ms: i64,
}

impl EventInvokeConfig {
    /// Retries after a function error.
    pub fn max_retries(&self) -> u32 {
        self.maximum_retry_attempts.unwrap_or(DEFAULT_MAX_RETRIES)
    }

    /// How long an event may wait (across throttles and retries).
    pub fn max_age_s(&self) -> u32 {
        self.maximum_event_age_s.unwrap_or(DEFAULT_MAX_EVENT_AGE_S)
    }
}

/// The fields of a Put or Update request; `None` is "not given" (Put
/// clears it, Update leaves it). An empty destination removes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventInvokeConfigInput {
    pub maximum_retry_attempts: Option<i64>,
    pub maximum_event_age_s: Option<i64>,
    pub on_success: Option<String>,
    pub on_failure: Option<String>,
}

/// `RecursiveLoop` of PutFunctionRecursionConfig.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum RecursiveLoop {
    Allow,
    #[default]
    Terminate,
}

impl RecursiveLoop {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "Allow",
            Self::Terminate => "Terminate",
        }
    }

    pub fn parse(s: &str) -> LambdaResult<Self> {
        match s {
            "Allow" => Ok(Self::Allow),
            "Terminate" => Ok(Self::Terminate),
            other => Err(LambdaError::Validation(format!(
                "1 validation error detected: Value '{other}' at 'recursiveLoop' failed to satisfy constraint: \
                 Member must satisfy enum value set: [Terminate, Allow]"
            ))),
        }
    }
}

/// What nimbus does with a destination ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Destination {
    /// Invoke this function asynchronously with the record.
    Function(FunctionRef),
    /// Keep the record in nimbus's dead-letter store under this queue name
    /// (an SQS queue ARN names one: nimbus has no SQS).
    DeadLetterQueue(String),
}

/// The in-memory mirror of the documents.
#[derive(Debug, Default)]
pub(crate) struct AsyncConfigs {
    /// Function name → qualifier → configuration.
    pub(crate) configs: HashMap<String, BTreeMap<String, EventInvokeConfig>>,
    pub(crate) recursion: HashMap<String, RecursiveLoop>,
}

fn key(function: &str, qualifier: &str) -> String {
    format!("{function}:{qualifier}")
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn validation(errors: Vec<String>) -> LambdaResult<()> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(LambdaError::Validation(format!(
            "1 validation error detected: {}",
            errors[0]
        ))),
        n => Err(LambdaError::Validation(format!(
            "{n} validation errors detected: {}",
            errors.join("; ")
        ))),
    }
}

fn check_ranges(input: &EventInvokeConfigInput) -> LambdaResult<()> {
    let mut errors = Vec::new();
    if let Some(v) = input.maximum_retry_attempts {
        if v > 2 {
            errors.push(format!("Value '{v}' at 'maximumRetryAttempts' failed to satisfy constraint: Member must have value less than or equal to 2"));
        } else if v < 0 {
            errors.push(format!("Value '{v}' at 'maximumRetryAttempts' failed to satisfy constraint: Member must have value greater than or equal to 0"));
        }
    }
    if let Some(v) = input.maximum_event_age_s {
        if v > 21_600 {
            errors.push(format!("Value '{v}' at 'maximumEventAgeInSeconds' failed to satisfy constraint: Member must have value less than or equal to 21600"));
        } else if v < 60 {
            errors.push(format!("Value '{v}' at 'maximumEventAgeInSeconds' failed to satisfy constraint: Member must have value greater than or equal to 60"));
        }
    }
    validation(errors)
}

impl LambdaService {
    /// Loads the stored configurations (at open).
    pub(crate) fn load_async_configs(&self) -> LambdaResult<()> {
        let mut c = self
            .queue
            .configs
            .write()
            .unwrap_or_else(|e| e.into_inner());
        for (_, doc) in self
            .store
            .list_docs(CONFIG_NS)
            .map_err(LambdaError::internal)?
        {
            match serde_json::from_str::<EventInvokeConfig>(&doc) {
                Ok(cfg) => {
                    c.configs
                        .entry(cfg.function.clone())
                        .or_default()
                        .insert(cfg.qualifier.clone(), cfg);
                }
                Err(e) => tracing::error!("unreadable event invoke configuration: {e}"),
            }
        }
        for (name, doc) in self
            .store
            .list_docs(RECURSION_NS)
            .map_err(LambdaError::internal)?
        {
            if let Ok(r) = serde_json::from_str::<RecursiveLoop>(&doc) {
                c.recursion.insert(name, r);
            }
        }
        Ok(())
    }

    /// The configuration that applies to events for `f` (default if none).
    pub(crate) fn event_config_for(&self, f: &FunctionRef) -> EventInvokeConfig {
        let qualifier = f.qualifier.clone().unwrap_or_else(|| "$LATEST".into());
        let c = self.queue.configs.read().unwrap_or_else(|e| e.into_inner());
        c.configs
            .get(&f.name)
            .and_then(|m| m.get(&qualifier))
            .cloned()
            .unwrap_or(EventInvokeConfig {
                function: f.name.clone(),
                qualifier,
                maximum_retry_attempts: None,
                maximum_event_age_s: None,
                on_success: None,
                on_failure: None,
                last_modified_ms: 0,
            })
    }

    /// The function's recursive-loop setting.
    pub(crate) fn recursive_loop(&self, function: &str) -> RecursiveLoop {
        let c = self.queue.configs.read().unwrap_or_else(|e| e.into_inner());
        c.recursion.get(function).copied().unwrap_or_default()
    }

    /// What to do with a destination ARN; `None` if nimbus cannot deliver
    /// to it.
    pub(crate) fn destination(&self, arn: &str) -> Option<Destination> {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let [arn_lit, _partition, service, _region, _account, rest] = parts.as_slice() else {
            return None;
        };
        if *arn_lit != "arn" {
            return None;
        }
        match *service {
            "lambda" if rest.starts_with("function:") => {
                let f = self.identity.parse_function_ref(arn, None).ok()?;
                Some(Destination::Function(f))
            }
            "sqs"
                if !rest.is_empty()
                    && rest.len() <= 80
                    && rest
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                Some(Destination::DeadLetterQueue(rest.to_string()))
            }
            _ => None,
        }
    }

    fn check_destination(&self, own: &str, arn: &str) -> LambdaResult<()> {
        match self.destination(arn) {
            Some(Destination::Function(f)) if f.name == own => {
                Err(LambdaError::InvalidParameterValue(
                    "You can't specify the function as a destination for itself.".into(),
                ))
            }
            Some(_) => Ok(()),
            None => Err(LambdaError::InvalidParameterValue(format!(
                "The destination ARN {arn} is invalid: nimbus delivers to Lambda functions \
                 (arn:aws:lambda:REGION:ACCOUNT:function:NAME) and to its own dead-letter store \
                 (arn:aws:sqs:REGION:ACCOUNT:QUEUE)"
            ))),
        }
    }

    /// A `DeadLetterConfig.TargetArn` as stored: `None` for none (or `""`);
    /// an SQS queue ARN (a queue of nimbus's dead-letter store) otherwise.
    pub(crate) fn dead_letter_target(&self, arn: Option<&str>) -> LambdaResult<Option<String>> {
        match arn.filter(|a| !a.is_empty()) {
            None => Ok(None),
            Some(a) => match self.destination(a) {
                Some(Destination::DeadLetterQueue(_)) => Ok(Some(a.to_string())),
                _ => Err(LambdaError::InvalidParameterValue(format!(
                    "The DeadLetterConfig TargetArn {a} is invalid: nimbus keeps dead letters in its own \
                     store, named by an SQS queue ARN (arn:aws:sqs:REGION:ACCOUNT:QUEUE)"
                ))),
            },
        }
    }

    /// The function and qualifier a configuration request names (which
    /// must exist).
    fn config_target(&self, f: &FunctionRef) -> LambdaResult<(String, String)> {
        self.resolve(f)?;
        let qualifier = f.qualifier.clone().unwrap_or_else(|| "$LATEST".into());
        Ok((f.name.clone(), qualifier))
    }

    fn save_config(&self, cfg: EventInvokeConfig) -> LambdaResult<EventInvokeConfig> {
        let doc = serde_json::to_string(&cfg).map_err(LambdaError::internal)?;
        self.store
            .put_doc(CONFIG_NS, &key(&cfg.function, &cfg.qualifier), &doc)
            .map_err(LambdaError::internal)?;
        self.queue
            .configs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .configs
            .entry(cfg.function.clone())
            .or_default()
            .insert(cfg.qualifier.clone(), cfg.clone());
        Ok(cfg)
    }

    fn not_configured(&self, name: &str, qualifier: &str) -> LambdaError {
        LambdaError::ResourceNotFound(format!(
            "The function {} doesn't have an EventInvokeConfig",
            self.identity.qualified_arn(name, qualifier)
        ))
    }

    fn stored_config(&self, name: &str, qualifier: &str) -> Option<EventInvokeConfig> {
        self.queue
            .configs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .configs
            .get(name)
            .and_then(|m| m.get(qualifier))
            .cloned()
    }

    /// PutFunctionEventInvokeConfig: creates or replaces the configuration.
    pub fn put_event_invoke_config(
        &self,
        f: &FunctionRef,
        input: EventInvokeConfigInput,
    ) -> LambdaResult<EventInvokeConfig> {
        check_ranges(&input)?;
        let _w = self.write_guard();
        let (name, qualifier) = self.config_target(f)?;
        let empty = |d: Option<String>| d.filter(|s| !s.is_empty());
        let cfg = EventInvokeConfig {
            function: name.clone(),
            qualifier,
            maximum_retry_attempts: input.maximum_retry_attempts.map(|v| v as u32),
            maximum_event_age_s: input.maximum_event_age_s.map(|v| v as u32),
            on_success: empty(input.on_success),
            on_failure: empty(input.on_failure),
            last_modified_ms: now_ms(),
        };
        for d in cfg.on_success.iter().chain(&cfg.on_failure) {
            self.check_destination(&name, d)?;
        }
        self.save_config(cfg)
    }

    /// UpdateFunctionEventInvokeConfig: changes the settings given.
    pub fn update_event_invoke_config(
        &self,
        f: &FunctionRef,
        input: EventInvokeConfigInput,
    ) -> LambdaResult<EventInvokeConfig> {
        check_ranges(&input)?;
        let _w = self.write_guard();
        let (name, qualifier) = self.config_target(f)?;
        let mut cfg = self
            .stored_config(&name, &qualifier)
            .ok_or_else(|| self.not_configured(&name, &qualifier))?;
        if let Some(v) = input.maximum_retry_attempts {
            cfg.maximum_retry_attempts = Some(v as u32);
        }
        if let Some(v) = input.maximum_event_age_s {
            cfg.maximum_event_age_s = Some(v as u32);
        }
        if let Some(d) = input.on_success {
            cfg.on_success = Some(d).filter(|s| !s.is_empty());
        }
        if let Some(d) = input.on_failure {
            cfg.on_failure = Some(d).filter(|s| !s.is_empty());
        }
        for d in cfg.on_success.iter().chain(&cfg.on_failure) {
            self.check_destination(&name, d)?;
        }
        cfg.last_modified_ms = now_ms();
        self.save_config(cfg)
    }

    /// GetFunctionEventInvokeConfig.
    pub fn get_event_invoke_config(&self, f: &FunctionRef) -> LambdaResult<EventInvokeConfig> {
        let (name, qualifier) = self.config_target(f)?;
        self.stored_config(&name, &qualifier)
            .ok_or_else(|| self.not_configured(&name, &qualifier))
    }

    /// DeleteFunctionEventInvokeConfig.
    pub fn delete_event_invoke_config(&self, f: &FunctionRef) -> LambdaResult<()> {
        let _w = self.write_guard();
        let (name, qualifier) = self.config_target(f)?;
        if self.stored_config(&name, &qualifier).is_none() {
            return Err(self.not_configured(&name, &qualifier));
        }
        self.store
            .delete_doc(CONFIG_NS, &key(&name, &qualifier))
            .map_err(LambdaError::internal)?;
        if let Some(m) = self
            .queue
            .configs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .configs
            .get_mut(&name)
        {
            m.remove(&qualifier);
        }
        Ok(())
    }

    /// ListFunctionEventInvokeConfigs: a page of the function's
    /// configurations (ordered by qualifier) after `marker`, and the next
    /// marker.
    pub fn list_event_invoke_configs(
        &self,
        f: &FunctionRef,
        marker: Option<&str>,
        max_items: usize,
    ) -> LambdaResult<(Vec<EventInvokeConfig>, Option<String>)> {
        if f.qualifier.is_some() {
            return Err(LambdaError::InvalidParameterValue(
                "ListFunctionEventInvokeConfigs does not accept a qualifier".into(),
            ));
        }
        self.resolve(f)?;
        let all: Vec<EventInvokeConfig> = self
            .queue
            .configs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .configs
            .get(&f.name)
            .map(|m| {
                m.values()
                    .filter(|c| marker.is_none_or(|mk| c.qualifier.as_str() > mk))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let next = (all.len() > max_items)
            .then(|| all.get(max_items - 1).map(|c| c.qualifier.clone()))
            .flatten();
        Ok((all.into_iter().take(max_items).collect(), next))
    }

    /// Forgets a deleted function's asynchronous settings.
    pub(crate) fn drop_async_configs(&self, name: &str) {
        let removed = {
            let mut c = self
                .queue
                .configs
                .write()
                .unwrap_or_else(|e| e.into_inner());
            c.recursion.remove(name);
            c.configs.remove(name).unwrap_or_default()
        };
        for q in removed.keys() {
            let _ = self.store.delete_doc(CONFIG_NS, &key(name, q));
        }
        let _ = self.store.delete_doc(RECURSION_NS, name);
    }

    /// PutFunctionRecursionConfig.
    pub fn put_recursion_config(
        &self,
        f: &FunctionRef,
        value: RecursiveLoop,
    ) -> LambdaResult<RecursiveLoop> {
        if f.qualifier.is_some() {
            return Err(LambdaError::InvalidParameterValue(
                "PutFunctionRecursionConfig does not accept a qualifier".into(),
            ));
        }
        let _w = self.write_guard();
        self.live(f)?;
        let doc = serde_json::to_string(&value).map_err(LambdaError::internal)?;
        self.store
            .put_doc(RECURSION_NS, &f.name, &doc)
            .map_err(LambdaError::internal)?;
        self.queue
            .configs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .recursion
            .insert(f.name.clone(), value);
        Ok(value)
    }

    /// GetFunctionRecursionConfig.
    pub fn get_recursion_config(&self, f: &FunctionRef) -> LambdaResult<RecursiveLoop> {
        if f.qualifier.is_some() {
            return Err(LambdaError::InvalidParameterValue(
                "GetFunctionRecursionConfig does not accept a qualifier".into(),
            ));
        }
        self.live(f)?;
        Ok(self.recursive_loop(&f.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked_with_lambdas_messages() {
        let input = |r: Option<i64>, a: Option<i64>| EventInvokeConfigInput {
            maximum_retry_attempts: r,
            maximum_event_age_s: a,
            ..Default::default()
        };
        assert!(check_ranges(&input(Some(0), Some(60))).is_ok());
        assert!(check_ranges(&input(Some(2), Some(21_600))).is_ok());
        let e = check_ranges(&input(Some(3), None)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "1 validation error detected: Value '3' at 'maximumRetryAttempts' failed to satisfy constraint: \
             Member must have value less than or equal to 2"
        );
        let e = check_ranges(&input(Some(-1), Some(59))).unwrap_err();
        assert!(e.to_string().starts_with("2 validation errors detected: "));
        assert!(e.to_string().contains("greater than or equal to 60"));
        assert_eq!(e.code(), "ValidationException");
    }

    #[test]
    fn recursive_loop_values() {
        assert_eq!(RecursiveLoop::parse("Allow").unwrap(), RecursiveLoop::Allow);
        assert_eq!(RecursiveLoop::default().as_str(), "Terminate");
        assert!(RecursiveLoop::parse("allow").is_err());
    }
}
