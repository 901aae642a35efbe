//! Bucket notifications to Lambda: the configuration (validated as S3
//! validates it), the event records S3 delivers, and their delivery through
//! a [`NotificationSink`] from an outbox committed with the object.

use std::sync::Arc;

use s3s::dto::{
    Event, FilterRule, FilterRuleName, LambdaFunctionConfiguration, NotificationConfiguration,
    NotificationConfigurationFilter, S3KeyFilter,
};
use s3s::{S3Error, S3ErrorCode, S3Result};
use serde::{Deserialize, Serialize};

use crate::store::ObjectStore;

/// One `LambdaFunctionConfiguration` of a bucket, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The configuration's `Id` (generated when the request had none).
    pub id: String,
    pub function_arn: String,
    /// As given: `s3:ObjectCreated:*`, `s3:ObjectRemoved:Delete`, ...
    pub events: Vec<String>,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
}

impl Target {
    /// Whether an event named `event_name` (`ObjectCreated:Put`) on `key`
    /// is for this target.
    pub fn matches(&self, event_name: &str, key: &str) -> bool {
        let wanted = self.events.iter().any(|e| event_covers(e, event_name));
        wanted
            && self.prefix.as_deref().is_none_or(|p| key.starts_with(p))
            && self.suffix.as_deref().is_none_or(|s| key.ends_with(s))
    }
}

/// The event types nimbus emits, and the patterns a configuration may use.
const EVENTS: &[&str] = &[
    "s3:ObjectCreated:*",
    "s3:ObjectCreated:Put",
    "s3:ObjectCreated:Post",
    "s3:ObjectCreated:Copy",
    "s3:ObjectCreated:CompleteMultipartUpload",
    "s3:ObjectRemoved:*",
    "s3:ObjectRemoved:Delete",
    "s3:ObjectRemoved:DeleteMarkerCreated",
];

fn event_covers(pattern: &str, event_name: &str) -> bool {
    let Some(p) = pattern.strip_prefix("s3:") else {
        return false;
    };
    match p.strip_suffix('*') {
        Some(family) => event_name.starts_with(family),
        None => p == event_name,
    }
}

/// Whether two event patterns can both match one event.
fn events_overlap(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim_end_matches('*'), b.trim_end_matches('*'));
    a.starts_with(b) || b.starts_with(a)
}

fn invalid(message: &str) -> S3Error {
    S3Error::with_message(S3ErrorCode::InvalidArgument, message.to_string())
}

/// Checks a PutBucketNotificationConfiguration body as S3 does (but the
/// destinations, which need the [`NotificationSink`]) and turns it into
/// targets.
pub(crate) fn parse_configuration(conf: &NotificationConfiguration) -> S3Result<Vec<Target>> {
    if conf
        .queue_configurations
        .as_ref()
        .is_some_and(|q| !q.is_empty())
        || conf
            .topic_configurations
            .as_ref()
            .is_some_and(|t| !t.is_empty())
    {
        return Err(invalid(
            "Unable to validate the following destination configurations",
        ));
    }
    let mut targets: Vec<Target> = Vec::new();
    for c in conf.lambda_function_configurations.iter().flatten() {
        if c.events.is_empty() {
            return Err(invalid("The event is not supported for notifications"));
        }
        let mut events = Vec::new();
        for e in &c.events {
            let e: &str = e.as_ref();
            if !EVENTS.contains(&e) {
                return Err(invalid("The event is not supported for notifications"));
            }
            events.push(e.to_string());
        }
        let (mut prefix, mut suffix) = (None, None);
        let rules = c
            .filter
            .as_ref()
            .and_then(|f| f.key.as_ref())
            .and_then(|k| k.filter_rules.as_ref());
        for rule in rules.into_iter().flatten() {
            let name = rule.name.as_ref().map(|n| n.as_str().to_ascii_lowercase());
            let value = rule.value.clone().unwrap_or_default();
            let slot = match name.as_deref() {
                Some("prefix") => &mut prefix,
                Some("suffix") => &mut suffix,
                _ => {
                    return Err(invalid("FilterRule name must be either prefix or suffix"));
                }
            };
            if slot.is_some() {
                let which = name.as_deref().unwrap_or_default();
                return Err(invalid(&format!(
                    "Cannot specify more than one {which} rule in a filter."
                )));
            }
            if value.len() > 1024 {
                return Err(invalid("The value of a filter rule is too long"));
            }
            *slot = Some(value);
        }
        let id =
            c.id.clone()
                .filter(|i| !i.is_empty())
                .unwrap_or_else(generated_id);
        if targets.iter().any(|t| t.id == id) {
            return Err(invalid("Configuration Id must be unique"));
        }
        targets.push(Target {
            id,
            function_arn: c.lambda_function_arn.clone(),
            events,
            prefix,
            suffix,
        });
    }
    // S3 refuses two configurations that one event could both match.
    for (i, a) in targets.iter().enumerate() {
        for b in &targets[i + 1..] {
            let share_event = a
                .events
                .iter()
                .any(|x| b.events.iter().any(|y| events_overlap(x, y)));
            let p = |t: &Target| t.prefix.clone().unwrap_or_default();
            let s = |t: &Target| t.suffix.clone().unwrap_or_default();
            let prefixes = p(a).starts_with(&p(b)) || p(b).starts_with(&p(a));
            let suffixes = s(a).ends_with(&s(b)) || s(b).ends_with(&s(a));
            if share_event && prefixes && suffixes {
                return Err(invalid(
                    "Configurations overlap. Configurations on the same bucket cannot share a common event type.",
                ));
            }
        }
    }
    Ok(targets)
}

fn generated_id() -> String {
    // S3 generates an opaque id, e.g. `NzQ3ZDhhMzktNjBlNy00...`.
    let raw = uuid::Uuid::new_v4().to_string();
    raw.replace('-', "")
}

/// The stored targets as GetBucketNotificationConfiguration returns them.
pub(crate) fn to_configuration(targets: &[Target]) -> NotificationConfiguration {
    let lambdas: Vec<LambdaFunctionConfiguration> = targets
        .iter()
        .map(|t| {
            let mut rules = Vec::new();
            if let Some(p) = &t.prefix {
                rules.push(FilterRule {
                    name: Some(FilterRuleName::from_static(FilterRuleName::PREFIX)),
                    value: Some(p.clone()),
                });
            }
            if let Some(s) = &t.suffix {
                rules.push(FilterRule {
                    name: Some(FilterRuleName::from_static(FilterRuleName::SUFFIX)),
                    value: Some(s.clone()),
                });
            }
            LambdaFunctionConfiguration {
                events: t.events.iter().cloned().map(Event::from).collect(),
                filter: (!rules.is_empty()).then_some(NotificationConfigurationFilter {
                    key: Some(S3KeyFilter {
                        filter_rules: Some(rules),
                    }),
                }),
                id: Some(t.id.clone()),
                lambda_function_arn: t.function_arn.clone(),
            }
        })
        .collect();
    NotificationConfiguration {
        lambda_function_configurations: (!lambdas.is_empty()).then_some(lambdas),
        ..Default::default()
    }
}

/// What an event record says about the request that caused it.
#[derive(Debug, Clone)]
pub(crate) struct EventInfo {
    /// `ObjectCreated:Put`, `ObjectRemoved:Delete`, ...
    pub(crate) event_name: String,
    pub(crate) region: String,
    pub(crate) account_id: String,
    /// The caller, as `userIdentity.principalId`.
    pub(crate) principal_id: String,
    pub(crate) source_ip: String,
    pub(crate) request_id: String,
    pub(crate) host_id: String,
    pub(crate) time_ms: i64,
    /// The request's `X-Amzn-Trace-Id`.
    pub(crate) trace_header: Option<String>,
}

/// An event committed to the outbox, not yet handed to the sink.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) id: i64,
    pub(crate) function_arn: String,
    pub(crate) bucket: String,
    pub(crate) payload: String,
    pub(crate) trace_header: Option<String>,
}

/// A key as S3 event records carry it: form-URL-encoded (a space is `+`,
/// `/` stays), as Java's `URLEncoder` does.
pub fn event_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' | b'/' => {
                out.push(b as char);
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// One S3 event notification (`{"Records": [...]}`), as Lambda receives it.
pub(crate) fn event_json(
    e: &EventInfo,
    target: &Target,
    bucket: &str,
    key: &str,
    object: Option<(u64, &str)>,
    sequencer: u64,
) -> String {
    let time = chrono::DateTime::from_timestamp_millis(e.time_ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    let mut obj = serde_json::json!({ "key": event_key(key) });
    if let Some((size, etag)) = object {
        obj["size"] = size.into();
        obj["eTag"] = etag.into();
    }
    obj["sequencer"] = format!("{sequencer:018X}").into();
    serde_json::json!({
        "Records": [{
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": e.region,
            "eventTime": time,
            "eventName": e.event_name,
            "userIdentity": { "principalId": e.principal_id },
            "requestParameters": { "sourceIPAddress": e.source_ip },
            "responseElements": {
                "x-amz-request-id": e.request_id,
                "x-amz-id-2": e.host_id,
            },
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": target.id,
                "bucket": {
                    "name": bucket,
                    "ownerIdentity": { "principalId": e.account_id },
                    "arn": format!("arn:aws:s3:::{bucket}"),
                },
                "object": obj,
            }
        }]
    })
    .to_string()
}

/// One event to hand over for an asynchronous invocation.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The configured `LambdaFunctionArn`.
    pub function_arn: String,
    /// The event JSON (`{"Records": [...]}`).
    pub payload: String,
    /// `arn:aws:s3:::bucket`, the invocation's source ARN.
    pub bucket_arn: String,
    /// The account owning the bucket (`AWS:SourceAccount`).
    pub source_account: String,
    /// The `X-Amzn-Trace-Id` of the request that caused the event.
    pub trace_header: Option<String>,
}

/// Why a delivery did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    /// It never can (the function is gone, the policy no longer allows
    /// S3): the event is dropped, as S3 drops it.
    #[error("undeliverable: {0}")]
    Permanent(String),
    /// It may later (throttled, shutting down): the event stays queued.
    #[error("delivery failed: {0}")]
    Transient(String),
}

/// Where bucket notifications go: implemented over Lambda by the binary,
/// so this crate does not depend on the Lambda service.
#[async_trait::async_trait]
pub trait NotificationSink: Send + Sync + 'static {
    /// Whether `function_arn` exists and its resource-based policy lets
    /// `s3.amazonaws.com` invoke it for `bucket_arn` in `account`
    /// (PutBucketNotificationConfiguration's destination check).
    async fn can_deliver(&self, function_arn: &str, bucket_arn: &str, account: &str) -> bool;

    /// Queues an asynchronous invocation; `Ok` once it is accepted
    /// (durably, if the sink is durable). Called at least once per event.
    async fn deliver(&self, delivery: Delivery) -> Result<(), DeliveryError>;
}

/// Hands `pending` events to `sink`, removing each from the outbox once
/// accepted; a transient failure is retried a few times, then left for
/// the next start.
pub(crate) async fn deliver_all(
    store: Arc<ObjectStore>,
    sink: Arc<dyn NotificationSink>,
    account_id: String,
    pending: Vec<Pending>,
) {
    for p in pending {
        let delivery = Delivery {
            function_arn: p.function_arn.clone(),
            payload: p.payload.clone(),
            bucket_arn: format!("arn:aws:s3:::{}", p.bucket),
            source_account: account_id.clone(),
            trace_header: p.trace_header.clone(),
        };
        let mut done = false;
        for attempt in 0..5u32 {
            match sink.deliver(delivery.clone()).await {
                Ok(()) => {
                    done = true;
                    break;
                }
                Err(DeliveryError::Permanent(e)) => {
                    tracing::warn!(function = %p.function_arn, "dropping an S3 event: {e}");
                    done = true;
                    break;
                }
                Err(DeliveryError::Transient(e)) => {
                    tracing::debug!(function = %p.function_arn, attempt, "S3 event delivery: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
                }
            }
        }
        if done {
            let store = store.clone();
            let id = p.id;
            let _ = tokio::task::spawn_blocking(move || store.delivered(id)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_form_encoded_like_s3_events() {
        assert_eq!(event_key("my photo.jpg"), "my+photo.jpg");
        assert_eq!(event_key("dir/a+b=c.png"), "dir/a%2Bb%3Dc.png");
        assert_eq!(event_key("é"), "%C3%A9");
    }

    #[test]
    fn patterns_cover_events() {
        let t = Target {
            id: "x".into(),
            function_arn: "arn".into(),
            events: vec!["s3:ObjectCreated:*".into()],
            prefix: Some("uploads/".into()),
            suffix: Some(".jpg".into()),
        };
        assert!(t.matches("ObjectCreated:Put", "uploads/a.jpg"));
        assert!(t.matches("ObjectCreated:CompleteMultipartUpload", "uploads/a.jpg"));
        assert!(!t.matches("ObjectRemoved:Delete", "uploads/a.jpg"));
        assert!(!t.matches("ObjectCreated:Put", "other/a.jpg"));
        assert!(!t.matches("ObjectCreated:Put", "uploads/a.png"));
    }
}
