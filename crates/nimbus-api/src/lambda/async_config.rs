//! Asynchronous invocation settings: Put/Update/Get/Delete/
//! ListFunctionEventInvokeConfigs (`/2019-09-25/functions/{Name}/event-invoke-config`)
//! and Put/GetFunctionRecursionConfig (`/2024-08-31/functions/{Name}/recursion-config`).

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use nimbus_core::LambdaError;
use nimbus_lambda::{EventInvokeConfig, EventInvokeConfigInput, RecursiveLoop};
use serde::Deserialize;
use serde_json::{Value, json};

use super::functions::{QualifierQuery, blocking, function_ref, max_items, ok_json, parse_json};
use crate::AppState;
use crate::error::{ApiError, request_id};

type Result<T> = std::result::Result<T, ApiError>;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DestinationShape {
    destination: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DestinationConfigShape {
    on_success: Option<DestinationShape>,
    on_failure: Option<DestinationShape>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct EventInvokeConfigRequest {
    maximum_retry_attempts: Option<i64>,
    maximum_event_age_in_seconds: Option<i64>,
    destination_config: Option<DestinationConfigShape>,
}

impl EventInvokeConfigRequest {
    fn input(self) -> EventInvokeConfigInput {
        let d = self.destination_config.unwrap_or_default();
        let dest = |s: Option<DestinationShape>| s.map(|s| s.destination.unwrap_or_default());
        EventInvokeConfigInput {
            maximum_retry_attempts: self.maximum_retry_attempts,
            maximum_event_age_s: self.maximum_event_age_in_seconds,
            on_success: dest(d.on_success),
            on_failure: dest(d.on_failure),
        }
    }
}

fn shape(c: &EventInvokeConfig, state: &AppState) -> Value {
    let dest = |d: &Option<String>| match d {
        Some(arn) => json!({ "Destination": arn }),
        None => json!({}),
    };
    let mut v = json!({
        // REST-JSON timestamps are epoch seconds.
        "LastModified": c.last_modified_ms as f64 / 1000.0,
        "FunctionArn": state.lambda.identity().qualified_arn(&c.function, &c.qualifier),
        "DestinationConfig": {
            "OnSuccess": dest(&c.on_success),
            "OnFailure": dest(&c.on_failure),
        },
    });
    if let Some(n) = c.maximum_retry_attempts {
        v["MaximumRetryAttempts"] = n.into();
    }
    if let Some(n) = c.maximum_event_age_s {
        v["MaximumEventAgeInSeconds"] = n.into();
    }
    v
}

pub(crate) async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<QualifierQuery>,
    body: axum::body::Body,
) -> Result<Response> {
    let f = function_ref(&state, &name, q.qualifier.as_deref())?;
    let req: EventInvokeConfigRequest = parse_json(body, "PutFunctionEventInvokeConfig").await?;
    let input = req.input();
    let c = blocking(&state, move |l| l.put_event_invoke_config(&f, input)).await?;
    Ok(ok_json(StatusCode::OK, shape(&c, &state)))
}

pub(crate) async fn update(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<QualifierQuery>,
    body: axum::body::Body,
) -> Result<Response> {
    let f = function_ref(&state, &name, q.qualifier.as_deref())?;
    let req: EventInvokeConfigRequest = parse_json(body, "UpdateFunctionEventInvokeConfig").await?;
    let input = req.input();
    let c = blocking(&state, move |l| l.update_event_invoke_config(&f, input)).await?;
    Ok(ok_json(StatusCode::OK, shape(&c, &state)))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<QualifierQuery>,
) -> Result<Response> {
    let f = function_ref(&state, &name, q.qualifier.as_deref())?;
    let c = state.lambda.get_event_invoke_config(&f)?;
    Ok(ok_json(StatusCode::OK, shape(&c, &state)))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<QualifierQuery>,
) -> Result<Response> {
    let f = function_ref(&state, &name, q.qualifier.as_deref())?;
    blocking(&state, move |l| l.delete_event_invoke_config(&f)).await?;
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert("x-amzn-requestid", request_id());
    Ok(r)
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(rename = "Marker")]
    marker: Option<String>,
    #[serde(rename = "MaxItems")]
    max_items: Option<String>,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Response> {
    let f = function_ref(&state, &name, None)?;
    let max = max_items(q.max_items.as_deref(), 50, 50)?;
    let (items, next) = state
        .lambda
        .list_event_invoke_configs(&f, q.marker.as_deref(), max)?;
    let items = items.iter().map(|c| shape(c, &state)).collect();
    Ok(ok_json(
        StatusCode::OK,
        super::shapes::page("FunctionEventInvokeConfigs", items, next),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RecursionRequest {
    recursive_loop: Option<String>,
}

pub(crate) async fn put_recursion(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Body,
) -> Result<Response> {
    let f = function_ref(&state, &name, None)?;
    let req: RecursionRequest = parse_json(body, "PutFunctionRecursionConfig").await?;
    let value = req.recursive_loop.ok_or_else(|| {
        LambdaError::Validation(
            "1 validation error detected: Value null at 'recursiveLoop' failed to satisfy constraint: Member must not be null"
                .into(),
        )
    })?;
    let value = RecursiveLoop::parse(&value)?;
    let v = blocking(&state, move |l| l.put_recursion_config(&f, value)).await?;
    Ok(ok_json(
        StatusCode::OK,
        json!({ "RecursiveLoop": v.as_str() }),
    ))
}

pub(crate) async fn get_recursion(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response> {
    let f = function_ref(&state, &name, None)?;
    let v = state.lambda.get_recursion_config(&f)?;
    Ok(ok_json(
        StatusCode::OK,
        json!({ "RecursiveLoop": v.as_str() }),
    ))
}
