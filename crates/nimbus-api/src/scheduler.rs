//! The EventBridge Scheduler API (REST-JSON, SigV4 service `scheduler`):
//! schedules under `/schedules/{Name}` and the `default` group under
//! `/schedule-groups`, as botocore's `scheduler` model shapes them.
//! Errors: status, `x-amzn-ErrorType` and `{"Message"}`.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode};
use nimbus_schedule::{RetryPolicy, Schedule, ScheduleError, Target};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::request_id;

/// Largest request: a schedule with a 256 KB Input, with room to spare.
const MAX_BODY: usize = 512 * 1024;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/schedules", get(list_schedules))
        .route(
            "/schedules/{name}",
            get(get_schedule)
                .post(create_schedule)
                .put(update_schedule)
                .delete(delete_schedule),
        )
        .route("/schedule-groups", get(list_groups))
        .route(
            "/schedule-groups/{name}",
            get(get_group)
                .post(group_unsupported)
                .delete(group_unsupported),
        )
}

struct SchedError(&'static str, StatusCode, String);

impl SchedError {
    fn validation(msg: impl Into<String>) -> Self {
        SchedError("ValidationException", StatusCode::BAD_REQUEST, msg.into())
    }
}

impl From<ScheduleError> for SchedError {
    fn from(e: ScheduleError) -> Self {
        match e {
            ScheduleError::Validation(m) => SchedError::validation(m),
            ScheduleError::NotFound(m) => {
                SchedError("ResourceNotFoundException", StatusCode::NOT_FOUND, m)
            }
            ScheduleError::Conflict(m) => SchedError("ConflictException", StatusCode::CONFLICT, m),
            ScheduleError::Internal(m) => {
                tracing::error!("scheduler: {m}");
                SchedError(
                    "InternalServerException",
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal error".into(),
                )
            }
        }
    }
}

impl IntoResponse for SchedError {
    fn into_response(self) -> Response {
        let mut r = (
            self.1,
            [(http::header::CONTENT_TYPE, "application/json")],
            json!({"Message": self.2}).to_string(),
        )
            .into_response();
        r.headers_mut()
            .insert("x-amzn-errortype", HeaderValue::from_static(self.0));
        r.headers_mut().insert("x-amzn-requestid", request_id());
        r
    }
}

fn ok(v: Value) -> Response {
    let mut r = (
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response();
    r.headers_mut().insert("x-amzn-requestid", request_id());
    r
}

/// Runs a schedule operation (SQLite writes) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ScheduleError> + Send + 'static,
) -> Result<T, SchedError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ScheduleError::Internal(e.to_string()))?
        .map_err(SchedError::from)
}

/// A timestamp as botocore sends it in a REST-JSON body: epoch seconds
/// (possibly fractional), or an ISO-8601 string from other clients.
fn timestamp(v: &Value, field: &str) -> Result<Option<i64>, SchedError> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_f64()
            .map(|s| Some((s * 1000.0) as i64))
            .ok_or_else(|| SchedError::validation(format!("Invalid {field}"))),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|d| Some(d.timestamp_millis()))
            .map_err(|_| SchedError::validation(format!("Invalid {field}: {s}"))),
        _ => Err(SchedError::validation(format!("Invalid {field}"))),
    }
}

fn epoch_s(ms: i64) -> Value {
    json!(ms as f64 / 1000.0)
}

fn missing(field: &str) -> SchedError {
    SchedError::validation(format!(
        "1 validation error detected: Value null at '{field}' failed to satisfy constraint: \
         Member must not be null"
    ))
}

fn str_of(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

/// The request body of CreateSchedule / UpdateSchedule as a [`Schedule`].
fn schedule_of(name: String, body: &[u8], state: &AppState) -> Result<Schedule, SchedError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| SchedError::validation(format!("Invalid request body: {e}")))?;
    let expression =
        str_of(&v, "ScheduleExpression").ok_or_else(|| missing("scheduleExpression"))?;
    let window = v
        .get("FlexibleTimeWindow")
        .ok_or_else(|| missing("flexibleTimeWindow"))?;
    let flexible_window_min = match window.get("Mode").and_then(Value::as_str) {
        Some("OFF") => None,
        Some("FLEXIBLE") => Some(
            window
                .get("MaximumWindowInMinutes")
                .and_then(Value::as_u64)
                .map(|m| m.min(u64::from(u32::MAX)) as u32)
                .ok_or_else(|| {
                    SchedError::validation(
                        "MaximumWindowInMinutes is required when Mode is FLEXIBLE.",
                    )
                })?,
        ),
        _ => return Err(missing("flexibleTimeWindow.mode")),
    };
    let t = v.get("Target").ok_or_else(|| missing("target"))?;
    let arn = str_of(t, "Arn").ok_or_else(|| missing("target.arn"))?;
    let role_arn = str_of(t, "RoleArn").ok_or_else(|| missing("target.roleArn"))?;
    check_role(state, &role_arn)?;
    let retry_policy = match t.get("RetryPolicy") {
        None | Some(Value::Null) => None,
        Some(p) => {
            let d = RetryPolicy::default();
            Some(RetryPolicy {
                maximum_retry_attempts: p
                    .get("MaximumRetryAttempts")
                    .and_then(Value::as_u64)
                    .map_or(d.maximum_retry_attempts, |n| n.min(1 << 20) as u32),
                maximum_event_age_s: p
                    .get("MaximumEventAgeInSeconds")
                    .and_then(Value::as_u64)
                    .map_or(d.maximum_event_age_s, |n| n.min(1 << 30) as u32),
            })
        }
    };
    let enabled = match v.get("State").and_then(Value::as_str) {
        None | Some("ENABLED") => true,
        Some("DISABLED") => false,
        Some(other) => {
            return Err(SchedError::validation(format!(
                "1 validation error detected: Value '{other}' at 'state' failed to satisfy \
                 constraint: Member must satisfy enum value set: [ENABLED, DISABLED]"
            )));
        }
    };
    let delete_after_completion = match v.get("ActionAfterCompletion").and_then(Value::as_str) {
        None | Some("NONE") => false,
        Some("DELETE") => true,
        Some(other) => {
            return Err(SchedError::validation(format!(
                "1 validation error detected: Value '{other}' at 'actionAfterCompletion' failed \
                 to satisfy constraint: Member must satisfy enum value set: [NONE, DELETE]"
            )));
        }
    };
    if expression.is_empty() || expression.len() > 256 {
        return Err(SchedError::validation(format!(
            "Invalid Schedule Expression {expression}."
        )));
    }
    Ok(Schedule {
        group: str_of(&v, "GroupName").unwrap_or_else(|| nimbus_schedule::DEFAULT_GROUP.into()),
        name,
        description: str_of(&v, "Description"),
        expression,
        timezone: str_of(&v, "ScheduleExpressionTimezone"),
        start_date_ms: timestamp(v.get("StartDate").unwrap_or(&Value::Null), "StartDate")?,
        end_date_ms: timestamp(v.get("EndDate").unwrap_or(&Value::Null), "EndDate")?,
        enabled,
        flexible_window_min,
        target: Target {
            id: String::new(),
            arn,
            role_arn: Some(role_arn),
            input: str_of(t, "Input"),
            retry_policy,
            dead_letter_arn: t.get("DeadLetterConfig").and_then(|d| str_of(d, "Arn")),
        },
        delete_after_completion,
        kms_key_arn: str_of(&v, "KmsKeyArn"),
        created_ms: 0,
        modified_ms: 0,
        anchor_ms: 0,
    })
}

/// The role Scheduler would assume: it must exist and trust
/// `scheduler.amazonaws.com` (nimbus checks no more: invoking the target
/// is governed by the function's resource policy, not the role's).
fn check_role(state: &AppState, role_arn: &str) -> Result<(), SchedError> {
    let refuse = || {
        SchedError::validation(
            "The execution role you provide must allow AWS EventBridge Scheduler to assume the role.",
        )
    };
    let role = state.iam.role_by_arn(role_arn).ok_or_else(refuse)?;
    if state.iam.trust_allows(
        &role,
        &nimbus_iam::TrustedParty::Service("scheduler.amazonaws.com"),
    ) {
        Ok(())
    } else {
        Err(refuse())
    }
}

async fn read(body: axum::body::Body) -> Result<bytes::Bytes, SchedError> {
    axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| SchedError::validation("Request body too large"))
}

async fn create_schedule(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Body,
) -> Result<Response, SchedError> {
    let s = schedule_of(name, &read(body).await?, &state)?;
    let svc = state.schedules.clone();
    let arn = blocking(move || svc.create_schedule(s)).await?;
    Ok(ok(json!({"ScheduleArn": arn})))
}

async fn update_schedule(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Body,
) -> Result<Response, SchedError> {
    let s = schedule_of(name, &read(body).await?, &state)?;
    let svc = state.schedules.clone();
    let arn = blocking(move || svc.update_schedule(s)).await?;
    Ok(ok(json!({"ScheduleArn": arn})))
}

fn render(state: &AppState, s: &Schedule) -> Value {
    let mut target = json!({
        "Arn": s.target.arn,
        "RoleArn": s.target.role_arn,
        "RetryPolicy": {
            "MaximumRetryAttempts": s.target.retry().maximum_retry_attempts,
            "MaximumEventAgeInSeconds": s.target.retry().maximum_event_age_s,
        },
    });
    if let Some(i) = &s.target.input {
        target["Input"] = json!(i);
    }
    if let Some(d) = &s.target.dead_letter_arn {
        target["DeadLetterConfig"] = json!({"Arn": d});
    }
    let mut out = json!({
        "Arn": state.schedules.place().schedule_arn(&s.group, &s.name),
        "Name": s.name,
        "GroupName": s.group,
        "ScheduleExpression": s.expression,
        "State": if s.enabled { "ENABLED" } else { "DISABLED" },
        "CreationDate": epoch_s(s.created_ms),
        "LastModificationDate": epoch_s(s.modified_ms),
        "ActionAfterCompletion": if s.delete_after_completion { "DELETE" } else { "NONE" },
        "FlexibleTimeWindow": match s.flexible_window_min {
            Some(m) => json!({"Mode": "FLEXIBLE", "MaximumWindowInMinutes": m}),
            None => json!({"Mode": "OFF"}),
        },
        "Target": target,
    });
    let fields = [
        ("Description", s.description.clone().map(Value::from)),
        (
            "ScheduleExpressionTimezone",
            s.timezone.clone().map(Value::from),
        ),
        ("StartDate", s.start_date_ms.map(epoch_s)),
        ("EndDate", s.end_date_ms.map(epoch_s)),
        ("KmsKeyArn", s.kms_key_arn.clone().map(Value::from)),
    ];
    for (k, v) in fields {
        if let Some(v) = v {
            out[k] = v;
        }
    }
    out
}

async fn get_schedule(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, SchedError> {
    let s = state
        .schedules
        .get_schedule(q.get("groupName").map(String::as_str), &name)?;
    Ok(ok(render(&state, &s)))
}

async fn delete_schedule(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, SchedError> {
    let svc = state.schedules.clone();
    let group = q.get("groupName").cloned();
    blocking(move || svc.delete_schedule(group.as_deref(), &name)).await?;
    Ok(ok(json!({})))
}

fn max_results(q: &HashMap<String, String>) -> Result<usize, SchedError> {
    match q.get("MaxResults") {
        None => Ok(100),
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| {
                SchedError::validation(format!(
                    "1 validation error detected: Value '{m}' at 'maxResults' failed to satisfy \
                     constraint: Member must have value between 1 and 100"
                ))
            }),
    }
}

async fn list_schedules(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, SchedError> {
    let enabled = match q.get("State").map(String::as_str) {
        None => None,
        Some("ENABLED") => Some(true),
        Some("DISABLED") => Some(false),
        Some(other) => {
            return Err(SchedError::validation(format!(
                "1 validation error detected: Value '{other}' at 'state' failed to satisfy \
                 constraint: Member must satisfy enum value set: [ENABLED, DISABLED]"
            )));
        }
    };
    let all = state.schedules.list_schedules(
        q.get("ScheduleGroup").map(String::as_str),
        q.get("NamePrefix").map(String::as_str),
        enabled,
    )?;
    let (page, next) = crate::paging::offset_page(
        all,
        q.get("NextToken").map(String::as_str),
        max_results(&q)?,
    )
    .ok_or_else(|| SchedError::validation("Invalid NextToken"))?;
    let place = state.schedules.place();
    let items: Vec<Value> = page
        .iter()
        .map(|s| {
            json!({
                "Arn": place.schedule_arn(&s.group, &s.name),
                "Name": s.name,
                "GroupName": s.group,
                "State": if s.enabled { "ENABLED" } else { "DISABLED" },
                "CreationDate": epoch_s(s.created_ms),
                "LastModificationDate": epoch_s(s.modified_ms),
                "Target": {"Arn": s.target.arn},
            })
        })
        .collect();
    let mut out = json!({"Schedules": items});
    if let Some(n) = next {
        out["NextToken"] = json!(n);
    }
    Ok(ok(out))
}

fn group_json(state: &AppState, name: &str) -> Value {
    let created = epoch_s(state.schedules.group_created_ms());
    json!({
        "Arn": state.schedules.place().group_arn(name),
        "Name": name,
        "State": "ACTIVE",
        "CreationDate": created,
        "LastModificationDate": created,
    })
}

async fn list_groups(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, SchedError> {
    let groups: Vec<Value> = state
        .schedules
        .groups()
        .iter()
        .filter(|g| {
            q.get("NamePrefix")
                .is_none_or(|p| g.starts_with(p.as_str()))
        })
        .map(|g| group_json(&state, g))
        .collect();
    max_results(&q)?;
    Ok(ok(json!({"ScheduleGroups": groups})))
}

async fn get_group(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, SchedError> {
    if !state.schedules.groups().contains(&name) {
        return Err(SchedError(
            "ResourceNotFoundException",
            StatusCode::NOT_FOUND,
            format!("Schedule group {name} does not exist."),
        ));
    }
    Ok(ok(group_json(&state, &name)))
}

async fn group_unsupported(Path(name): Path<String>) -> SchedError {
    SchedError::validation(format!(
        "nimbus has only the default schedule group; {name} cannot be created or deleted"
    ))
}
