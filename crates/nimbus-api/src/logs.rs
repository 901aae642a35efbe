//! The CloudWatch Logs API subset that `aws logs` and the SDKs use to read
//! function logs and write their own: JSON 1.1, `X-Amz-Target:
//! Logs_20140328.<Operation>`, errors as `{"__type", "message"}`.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use nimbus_store::{LogAppend, LogEvent, LogQuery, Store};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::request_id;

mod retention;

/// Largest request body: a PutLogEvents batch is at most 1 MB.
const MAX_BODY: usize = 1024 * 1024 + 64 * 1024;

struct LogsError {
    code: &'static str,
    message: String,
    status: StatusCode,
}

impl LogsError {
    fn user(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            status: StatusCode::BAD_REQUEST,
        }
    }
    fn no_group() -> Self {
        Self::user(
            "ResourceNotFoundException",
            "The specified log group does not exist.",
        )
    }
}

fn respond(result: Result<Value, LogsError>) -> Response {
    let (status, body) = match result {
        Ok(v) => (StatusCode::OK, v),
        Err(e) => (e.status, json!({"__type": e.code, "message": e.message})),
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
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return respond(Err(LogsError::user(
                "InvalidParameterException",
                "Request body too large",
            )));
        }
    };
    let input: Value = if bytes.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                return respond(Err(LogsError::user(
                    "SerializationException",
                    e.to_string(),
                )));
            }
        }
    };
    let op = op.to_string();
    let store = state.store.clone();
    let region_account = {
        let id = state.lambda.identity();
        format!("{}:{}", id.region, id.account_id)
    };
    let result =
        tokio::task::spawn_blocking(move || run(&*store, &op, input, &region_account)).await;
    respond(result.unwrap_or_else(|e| {
        tracing::error!("logs handler panicked: {e}");
        Err(LogsError {
            code: "ServiceUnavailableException",
            message: "internal error".into(),
            status: StatusCode::INTERNAL_SERVER_ERROR,
        })
    }))
}

fn parse<T: for<'de> Deserialize<'de>>(v: Value) -> Result<T, LogsError> {
    serde_json::from_value(v)
        .map_err(|e| LogsError::user("InvalidParameterException", e.to_string()))
}

fn db<T>(r: nimbus_store::StoreResult<T>) -> Result<T, LogsError> {
    r.map_err(|e| {
        tracing::error!("logs store: {e}");
        LogsError {
            code: "ServiceUnavailableException",
            message: "internal error".into(),
            status: StatusCode::INTERNAL_SERVER_ERROR,
        }
    })
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupArgs {
    log_group_name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StreamArgs {
    log_group_name: String,
    log_stream_name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutArgs {
    log_group_name: String,
    log_stream_name: String,
    log_events: Vec<InputEvent>,
}

#[derive(Deserialize)]
struct InputEvent {
    timestamp: i64,
    message: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct DescribeGroupsArgs {
    log_group_name_prefix: Option<String>,
    limit: Option<usize>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeStreamsArgs {
    log_group_name: String,
    log_stream_name_prefix: Option<String>,
    order_by: Option<String>,
    descending: Option<bool>,
    limit: Option<usize>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetEventsArgs {
    log_group_name: String,
    log_stream_name: String,
    start_time: Option<i64>,
    end_time: Option<i64>,
    next_token: Option<String>,
    limit: Option<usize>,
    start_from_head: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FilterArgs {
    log_group_name: String,
    log_stream_names: Option<Vec<String>>,
    log_stream_name_prefix: Option<String>,
    start_time: Option<i64>,
    end_time: Option<i64>,
    filter_pattern: Option<String>,
    next_token: Option<String>,
    limit: Option<usize>,
}

fn group_arn(ra: &str, group: &str) -> String {
    format!("arn:aws:logs:{ra}:log-group:{group}")
}

/// Offset paging with CloudWatch Logs' error for a bad token.
fn page<T>(
    items: Vec<T>,
    token: Option<&str>,
    limit: usize,
) -> Result<(Vec<T>, Option<String>), LogsError> {
    crate::paging::offset_page(items, token, limit)
        .ok_or_else(|| LogsError::user("InvalidParameterException", "Invalid nextToken"))
}

/// A filter pattern as the plain-text subset: space-separated terms that
/// must all appear; a quoted pattern is one term. Richer JSON and space-
/// delimited patterns are not supported and say so.
fn filter_term(pattern: Option<&str>) -> Result<Option<String>, LogsError> {
    let Some(p) = pattern.map(str::trim).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    if p.starts_with('{') || p.starts_with('[') {
        return Err(LogsError::user(
            "InvalidParameterException",
            "nimbus supports plain-text filter patterns only (JSON and space-delimited patterns are not supported)",
        ));
    }
    Ok(Some(p.trim_matches('"').to_string()))
}

/// Fails unless the group and the stream exist.
fn require_stream(store: &dyn Store, group: &str, stream: &str) -> Result<(), LogsError> {
    let streams =
        db(store.list_log_streams(group, Some(stream)))?.ok_or_else(LogsError::no_group)?;
    if streams.iter().any(|s| s.name == stream) {
        Ok(())
    } else {
        Err(LogsError::user(
            "ResourceNotFoundException",
            "The specified log stream does not exist.",
        ))
    }
}

/// The answer to a Create call: `{}`, or that the thing already exists.
fn created(new: bool, what: &str) -> Result<Value, LogsError> {
    if new {
        Ok(json!({}))
    } else {
        Err(LogsError::user(
            "ResourceAlreadyExistsException",
            format!("The specified {what} already exists"),
        ))
    }
}

fn run(store: &dyn Store, op: &str, input: Value, ra: &str) -> Result<Value, LogsError> {
    match op {
        "CreateLogGroup" => {
            let a: GroupArgs = parse(input)?;
            created(
                db(store.create_log_group(&a.log_group_name, now_ms()))?,
                "log group",
            )
        }
        "DeleteLogGroup" => {
            let a: GroupArgs = parse(input)?;
            if db(store.delete_log_group(&a.log_group_name))? {
                Ok(json!({}))
            } else {
                Err(LogsError::no_group())
            }
        }
        "CreateLogStream" => {
            let a: StreamArgs = parse(input)?;
            if db(store.list_log_streams(&a.log_group_name, None))?.is_none() {
                return Err(LogsError::no_group());
            }
            let new = db(store.create_log_stream(&a.log_group_name, &a.log_stream_name, now_ms()))?;
            created(new, "log stream")
        }
        "PutLogEvents" => {
            let a: PutArgs = parse(input)?;
            require_stream(store, &a.log_group_name, &a.log_stream_name)?;
            let ingest = now_ms();
            let events: Vec<LogEvent> = a
                .log_events
                .into_iter()
                .map(|e| LogEvent {
                    timestamp_ms: e.timestamp,
                    ingestion_ms: ingest,
                    message: e.message,
                })
                .collect();
            db(store.append_log_events(&[LogAppend {
                group: a.log_group_name,
                stream: a.log_stream_name,
                events,
            }]))?;
            Ok(json!({"nextSequenceToken": ingest.to_string()}))
        }
        "DescribeLogGroups" => {
            let a: DescribeGroupsArgs = parse(input)?;
            let groups = db(store.list_log_groups(a.log_group_name_prefix.as_deref()))?;
            let (groups, next) = page(
                groups,
                a.next_token.as_deref(),
                a.limit.unwrap_or(50).clamp(1, 50),
            )?;
            let list: Vec<Value> = groups
                .iter()
                .map(|g| {
                    let mut v = json!({
                        "logGroupName": g.name,
                        "creationTime": g.created_ms,
                        "metricFilterCount": 0,
                        "arn": format!("{}:*", group_arn(ra, &g.name)),
                        "logGroupArn": group_arn(ra, &g.name),
                        "storedBytes": g.stored_bytes,
                    });
                    // Only set when the group does not keep events forever.
                    if let Some(days) = g.retention_days {
                        v["retentionInDays"] = days.into();
                    }
                    v
                })
                .collect();
            let mut out = json!({"logGroups": list});
            if let Some(n) = next {
                out["nextToken"] = n.into();
            }
            Ok(out)
        }
        "DescribeLogStreams" => {
            let a: DescribeStreamsArgs = parse(input)?;
            let mut streams =
                db(store.list_log_streams(&a.log_group_name, a.log_stream_name_prefix.as_deref()))?
                    .ok_or_else(LogsError::no_group)?;
            if a.order_by.as_deref() == Some("LastEventTime") {
                streams.sort_by_key(|s| s.last_event_ms.unwrap_or(s.created_ms));
            }
            if a.descending.unwrap_or(false) {
                streams.reverse();
            }
            let (streams, next) = page(
                streams,
                a.next_token.as_deref(),
                a.limit.unwrap_or(50).clamp(1, 50),
            )?;
            let list: Vec<Value> = streams
                .iter()
                .map(|s| {
                    let mut v = json!({
                        "logStreamName": s.name,
                        "creationTime": s.created_ms,
                        "arn": format!("{}:log-stream:{}", group_arn(ra, &a.log_group_name), s.name),
                        "storedBytes": s.stored_bytes,
                    });
                    if let Some(t) = s.first_event_ms {
                        v["firstEventTimestamp"] = t.into();
                    }
                    if let Some(t) = s.last_event_ms {
                        v["lastEventTimestamp"] = t.into();
                    }
                    if let Some(t) = s.last_ingestion_ms {
                        v["lastIngestionTime"] = t.into();
                    }
                    v
                })
                .collect();
            let mut out = json!({"logStreams": list});
            if let Some(n) = next {
                out["nextToken"] = n.into();
            }
            Ok(out)
        }
        "GetLogEvents" => get_log_events(store, parse(input)?),
        "PutRetentionPolicy" => retention::put(store, parse(input)?),
        "DeleteRetentionPolicy" => retention::delete(store, parse(input)?),
        "FilterLogEvents" => filter_log_events(store, parse(input)?),
        other => Err(LogsError::user(
            "UnknownOperationException",
            format!("Logs operation {other} is not supported by nimbus"),
        )),
    }
}

fn get_log_events(store: &dyn Store, a: GetEventsArgs) -> Result<Value, LogsError> {
    require_stream(store, &a.log_group_name, &a.log_stream_name)?;
    let limit = a.limit.unwrap_or(10_000).clamp(1, 10_000);
    // Tokens are `f/<seq>` (read forward after seq) and `b/<seq>` (read
    // backward before seq).
    let (forward, after) = match a.next_token.as_deref() {
        Some(t) => {
            let (dir, seq) = t
                .split_once('/')
                .ok_or_else(|| LogsError::user("InvalidParameterException", "Invalid nextToken"))?;
            let seq: i64 = seq
                .parse()
                .map_err(|_| LogsError::user("InvalidParameterException", "Invalid nextToken"))?;
            (dir == "f", Some(seq))
        }
        None => (a.start_from_head.unwrap_or(false), None),
    };
    let mut events = db(store.query_log_events(&LogQuery {
        group: a.log_group_name,
        streams: vec![a.log_stream_name],
        start_ms: a.start_time,
        end_ms: a.end_time.map(|e| e - 1),
        contains: None,
        after_seq: after,
        newest_first: !forward,
        limit,
    }))?;
    if !forward {
        events.reverse();
    }
    let fwd = events.last().map(|e| e.seq).or(after).unwrap_or(0);
    let bwd = events.first().map(|e| e.seq).or(after).unwrap_or(0);
    let list: Vec<Value> = events
        .iter()
        .map(|e| json!({"timestamp": e.event.timestamp_ms, "message": e.event.message, "ingestionTime": e.event.ingestion_ms}))
        .collect();
    Ok(
        json!({"events": list, "nextForwardToken": format!("f/{fwd}"), "nextBackwardToken": format!("b/{bwd}")}),
    )
}

fn filter_log_events(store: &dyn Store, a: FilterArgs) -> Result<Value, LogsError> {
    let all_streams =
        db(store.list_log_streams(&a.log_group_name, a.log_stream_name_prefix.as_deref()))?
            .ok_or_else(LogsError::no_group)?;
    let streams: Vec<String> = match (&a.log_stream_names, &a.log_stream_name_prefix) {
        (Some(names), _) => names.clone(),
        (None, Some(_)) => all_streams.iter().map(|s| s.name.clone()).collect(),
        (None, None) => Vec::new(),
    };
    if a.log_stream_name_prefix.is_some() && streams.is_empty() {
        return Ok(json!({"events": [], "searchedLogStreams": []}));
    }
    let limit = a.limit.unwrap_or(10_000).clamp(1, 10_000);
    let after = match a.next_token.as_deref() {
        None => None,
        Some(t) => Some(
            t.parse::<i64>()
                .map_err(|_| LogsError::user("InvalidParameterException", "Invalid nextToken"))?,
        ),
    };
    let events = db(store.query_log_events(&LogQuery {
        group: a.log_group_name,
        streams,
        start_ms: a.start_time,
        end_ms: a.end_time,
        contains: filter_term(a.filter_pattern.as_deref())?,
        after_seq: after,
        newest_first: false,
        limit: limit + 1,
    }))?;
    let more = events.len() > limit;
    let events = &events[..events.len().min(limit)];
    let list: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "logStreamName": e.stream,
                "timestamp": e.event.timestamp_ms,
                "message": e.event.message,
                "ingestionTime": e.event.ingestion_ms,
                "eventId": e.seq.to_string(),
            })
        })
        .collect();
    let searched: Vec<Value> = all_streams
        .iter()
        .map(|s| json!({"logStreamName": s.name, "searchedCompletely": !more}))
        .collect();
    let mut out = json!({"events": list, "searchedLogStreams": searched});
    if more && let Some(last) = events.last() {
        out["nextToken"] = last.seq.to_string().into();
    }
    Ok(out)
}
