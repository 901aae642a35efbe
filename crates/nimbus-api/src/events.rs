//! The EventBridge rules API, schedule rules on the default bus: JSON 1.1,
//! `X-Amz-Target: AWSEvents.<Operation>`, SigV4 service `events`, errors
//! as `{"__type", "message"}`.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use nimbus_schedule::{RetryPolicy, Rule, ScheduleError, Target};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::request_id;

/// A PutTargets of five targets with 8 KB inputs each, with room to spare.
const MAX_BODY: usize = 512 * 1024;

struct EventsError(&'static str, String);

impl From<ScheduleError> for EventsError {
    fn from(e: ScheduleError) -> Self {
        match e {
            ScheduleError::Validation(m) => EventsError("ValidationException", m),
            ScheduleError::NotFound(m) => EventsError("ResourceNotFoundException", m),
            ScheduleError::Conflict(m) => EventsError("ConcurrentModificationException", m),
            ScheduleError::Internal(m) => {
                tracing::error!("events: {m}");
                EventsError("InternalException", "Internal error".into())
            }
        }
    }
}

fn respond(result: Result<Value, EventsError>) -> Response {
    let (status, body) = match result {
        Ok(v) => (StatusCode::OK, v),
        Err(EventsError(code, message)) => {
            let status = if code == "InternalException" {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::BAD_REQUEST
            };
            (status, json!({"__type": code, "message": message}))
        }
    };
    let mut r = (
        status,
        [(http::header::CONTENT_TYPE, "application/x-amz-json-1.1")],
        body.to_string(),
    )
        .into_response();
    r.headers_mut().insert("x-amzn-requestid", request_id());
    r
}

pub(crate) async fn dispatch(state: AppState, op: &str, body: axum::body::Body) -> Response {
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return respond(Err(EventsError(
            "ValidationException",
            "Request body too large".into(),
        )));
    };
    let input: Value = if bytes.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => return respond(Err(EventsError("SerializationException", e.to_string()))),
        }
    };
    let op = op.to_string();
    let result = tokio::task::spawn_blocking(move || run(&state, &op, &input)).await;
    respond(result.unwrap_or_else(|e| {
        tracing::error!("events handler panicked: {e}");
        Err(EventsError("InternalException", "Internal error".into()))
    }))
}

fn str_of(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

fn required(v: &Value, k: &str) -> Result<String, EventsError> {
    str_of(v, k).ok_or_else(|| {
        EventsError(
            "ValidationException",
            format!(
                "1 validation error detected: Value null at '{}' failed to satisfy constraint: \
                 Member must not be null",
                lower_first(k)
            ),
        )
    })
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_lowercase().to_string() + c.as_str())
        .unwrap_or_default()
}

/// Only the default bus exists.
fn check_bus(v: &Value) -> Result<(), EventsError> {
    match str_of(v, "EventBusName").as_deref() {
        None | Some("default") => Ok(()),
        Some(b) if b.ends_with(":event-bus/default") => Ok(()),
        Some(b) => Err(EventsError(
            "ResourceNotFoundException",
            format!("Event bus {b} does not exist."),
        )),
    }
}

fn limit(v: &Value) -> Result<usize, EventsError> {
    match v.get("Limit") {
        None | Some(Value::Null) => Ok(100),
        Some(l) => l
            .as_u64()
            .filter(|n| (1..=100).contains(n))
            .map(|n| n as usize)
            .ok_or_else(|| {
                EventsError(
                    "ValidationException",
                    "1 validation error detected: Value at 'limit' failed to satisfy \
                     constraint: Member must have value between 1 and 100"
                        .into(),
                )
            }),
    }
}

fn rule_json(state: &AppState, r: &Rule) -> Value {
    let mut v = json!({
        "Name": r.name,
        "Arn": state.schedules.place().rule_arn(&r.name),
        "ScheduleExpression": r.expression,
        "State": if r.enabled { "ENABLED" } else { "DISABLED" },
        "EventBusName": "default",
    });
    if let Some(d) = &r.description {
        v["Description"] = json!(d);
    }
    if let Some(role) = &r.role_arn {
        v["RoleArn"] = json!(role);
    }
    v
}

fn target_json(t: &Target) -> Value {
    let mut v = json!({"Id": t.id, "Arn": t.arn});
    if let Some(i) = &t.input {
        v["Input"] = json!(i);
    }
    if let Some(r) = &t.role_arn {
        v["RoleArn"] = json!(r);
    }
    if let Some(p) = &t.retry_policy {
        v["RetryPolicy"] = json!({
            "MaximumRetryAttempts": p.maximum_retry_attempts,
            "MaximumEventAgeInSeconds": p.maximum_event_age_s,
        });
    }
    if let Some(d) = &t.dead_letter_arn {
        v["DeadLetterConfig"] = json!({"Arn": d});
    }
    v
}

fn failed_entries(failed: Vec<(String, String, String)>) -> Value {
    let entries: Vec<Value> = failed
        .into_iter()
        .map(|(id, code, msg)| json!({"TargetId": id, "ErrorCode": code, "ErrorMessage": msg}))
        .collect();
    json!({"FailedEntryCount": entries.len(), "FailedEntries": entries})
}

fn run(state: &AppState, op: &str, v: &Value) -> Result<Value, EventsError> {
    let svc = &state.schedules;
    check_bus(v)?;
    match op {
        "PutRule" => {
            let name = required(v, "Name")?;
            if v.get("EventPattern").is_some_and(|p| !p.is_null()) {
                return Err(EventsError(
                    "ValidationException",
                    "nimbus supports schedule rules only (ScheduleExpression); EventPattern \
                     rules are not available yet"
                        .into(),
                ));
            }
            let Some(expression) = str_of(v, "ScheduleExpression") else {
                return Err(EventsError(
                    "ValidationException",
                    "Parameter(s) EventPattern or ScheduleExpression must be specified.".into(),
                ));
            };
            let enabled = match str_of(v, "State").as_deref() {
                None | Some("ENABLED" | "ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS") => true,
                Some("DISABLED") => false,
                Some(other) => {
                    return Err(EventsError(
                        "ValidationException",
                        format!(
                            "1 validation error detected: Value '{other}' at 'state' failed to \
                             satisfy constraint: Member must satisfy enum value set: \
                             [ENABLED, DISABLED]"
                        ),
                    ));
                }
            };
            let arn = svc.put_rule(
                &name,
                &expression,
                str_of(v, "Description"),
                enabled,
                str_of(v, "RoleArn"),
            )?;
            Ok(json!({"RuleArn": arn}))
        }
        "DescribeRule" => {
            let r = svc.get_rule(&required(v, "Name")?)?;
            let mut out = rule_json(state, &r);
            out["CreatedBy"] = json!(svc.place().account_id);
            Ok(out)
        }
        "ListRules" => {
            let rules = svc.list_rules(str_of(v, "NamePrefix").as_deref());
            let (page, next) =
                crate::paging::offset_page(rules, str_of(v, "NextToken").as_deref(), limit(v)?)
                    .ok_or_else(|| {
                        EventsError("ValidationException", "Invalid NextToken".into())
                    })?;
            let rules: Vec<Value> = page.iter().map(|r| rule_json(state, r)).collect();
            let mut out = json!({"Rules": rules});
            if let Some(n) = next {
                out["NextToken"] = json!(n);
            }
            Ok(out)
        }
        "DeleteRule" => {
            svc.delete_rule(&required(v, "Name")?)?;
            Ok(json!({}))
        }
        "EnableRule" | "DisableRule" => {
            svc.set_rule_enabled(&required(v, "Name")?, op == "EnableRule")?;
            Ok(json!({}))
        }
        "PutTargets" => {
            let rule = required(v, "Rule")?;
            let list = v
                .get("Targets")
                .and_then(Value::as_array)
                .filter(|l| !l.is_empty() && l.len() <= 10)
                .ok_or_else(|| {
                    EventsError(
                        "ValidationException",
                        "1 validation error detected: Value at 'targets' failed to satisfy \
                         constraint: Member must have length between 1 and 10"
                            .into(),
                    )
                })?;
            let mut targets = Vec::with_capacity(list.len());
            for t in list {
                let retry_policy = t.get("RetryPolicy").filter(|p| !p.is_null()).map(|p| {
                    let d = RetryPolicy::default();
                    RetryPolicy {
                        maximum_retry_attempts: p
                            .get("MaximumRetryAttempts")
                            .and_then(Value::as_u64)
                            .map_or(d.maximum_retry_attempts, |n| n.min(1 << 20) as u32),
                        maximum_event_age_s: p
                            .get("MaximumEventAgeInSeconds")
                            .and_then(Value::as_u64)
                            .map_or(d.maximum_event_age_s, |n| n.min(1 << 30) as u32),
                    }
                });
                targets.push(Target {
                    id: required(t, "Id")?,
                    arn: required(t, "Arn")?,
                    role_arn: str_of(t, "RoleArn"),
                    input: str_of(t, "Input"),
                    retry_policy,
                    dead_letter_arn: t.get("DeadLetterConfig").and_then(|d| str_of(d, "Arn")),
                });
            }
            Ok(failed_entries(svc.put_targets(&rule, targets)?))
        }
        "RemoveTargets" => {
            let rule = required(v, "Rule")?;
            let ids: Vec<String> = v
                .get("Ids")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|i| i.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            Ok(failed_entries(svc.remove_targets(&rule, &ids)?))
        }
        "ListTargetsByRule" => {
            let r = svc.get_rule(&required(v, "Rule")?)?;
            let (page, next) =
                crate::paging::offset_page(r.targets, str_of(v, "NextToken").as_deref(), limit(v)?)
                    .ok_or_else(|| {
                        EventsError("ValidationException", "Invalid NextToken".into())
                    })?;
            let targets: Vec<Value> = page.iter().map(target_json).collect();
            let mut out = json!({"Targets": targets});
            if let Some(n) = next {
                out["NextToken"] = json!(n);
            }
            Ok(out)
        }
        "ListRuleNamesByTarget" => {
            let arn = required(v, "TargetArn")?;
            let names: Vec<String> = svc
                .list_rules(None)
                .into_iter()
                .filter(|r| r.targets.iter().any(|t| t.arn == arn))
                .map(|r| r.name)
                .collect();
            Ok(json!({"RuleNames": names}))
        }
        other => Err(EventsError(
            "UnknownOperationException",
            format!("nimbus does not implement EventBridge's {other}"),
        )),
    }
}
