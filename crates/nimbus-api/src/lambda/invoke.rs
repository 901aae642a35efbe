//! Invoke and the legacy InvokeAsync.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, StatusCode};
use nimbus_core::{LambdaError, limits};
use nimbus_lambda::{EventOrigin, InvocationType, Invoked};

use super::functions::QualifierQuery;
use crate::AppState;
use crate::error::{ApiError, read_body, request_id};

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn too_large() -> LambdaError {
    LambdaError::RequestTooLarge(format!(
        "Request must be smaller than {} bytes for the InvokeFunction operation",
        limits::SYNC_PAYLOAD_MAX
    ))
}

pub(crate) async fn invoke(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<QualifierQuery>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let f = state
        .lambda
        .identity()
        .parse_function_ref(&name, q.qualifier.as_deref())?;
    let kind = match header(&headers, "x-amz-invocation-type") {
        None | Some("RequestResponse") => InvocationType::RequestResponse,
        Some("Event") => InvocationType::Event,
        Some("DryRun") => InvocationType::DryRun,
        Some(other) => {
            return Err(ApiError(LambdaError::Validation(format!(
                "1 validation error detected: Value '{other}' at 'invocationType' failed to satisfy constraint: \
                 Member must satisfy enum value set: [Event, RequestResponse, DryRun]"
            ))));
        }
    };
    let tail = match header(&headers, "x-amz-log-type") {
        None | Some("None") => false,
        Some("Tail") => true,
        Some(other) => {
            return Err(ApiError(LambdaError::Validation(format!(
                "1 validation error detected: Value '{other}' at 'logType' failed to satisfy constraint: \
                 Member must satisfy enum value set: [None, Tail]"
            ))));
        }
    };
    let client_context = match header(&headers, "x-amz-client-context") {
        None => None,
        Some(b64) => Some(decode_client_context(b64)?),
    };
    let payload = read_body(body, limits::SYNC_PAYLOAD_MAX, too_large).await?;
    if kind == InvocationType::Event {
        // Queued durably; boto3 inside a function sends the function's
        // trace header, whose Lineage counts the chain for loop detection.
        let origin = EventOrigin {
            trace_header: header(&headers, "x-amzn-trace-id").map(str::to_string),
            ..Default::default()
        };
        let id = state.lambda.invoke_event(&f, payload, origin).await?;
        let mut r = StatusCode::ACCEPTED.into_response();
        if let Ok(v) = HeaderValue::from_str(&id) {
            r.headers_mut().insert("x-amzn-requestid", v);
        }
        return Ok(r);
    }
    let result = state
        .lambda
        .invoke(&f, kind, payload, client_context)
        .await?;
    let mut resp = match result.invoked {
        Invoked::Validated => StatusCode::NO_CONTENT.into_response(),
        Invoked::Accepted => StatusCode::ACCEPTED.into_response(),
        Invoked::Completed(out) => {
            let mut r = (StatusCode::OK, out.payload).into_response();
            let h = r.headers_mut();
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Ok(v) = HeaderValue::from_str(&out.request_id) {
                h.insert("x-amzn-requestid", v);
            }
            if let Some(fe) = out.function_error {
                h.insert("x-amz-function-error", HeaderValue::from_static(fe));
            }
            if tail {
                let b64 = base64::engine::general_purpose::STANDARD.encode(out.log_tail.as_bytes());
                if let Ok(v) = HeaderValue::from_str(&b64) {
                    h.insert("x-amz-log-result", v);
                }
            }
            r
        }
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&result.executed_version) {
        h.insert("x-amz-executed-version", v);
    }
    if !h.contains_key("x-amzn-requestid") {
        h.insert("x-amzn-requestid", request_id());
    }
    Ok(resp)
}

fn decode_client_context(b64: &str) -> Result<String, ApiError> {
    let invalid = || {
        ApiError(LambdaError::InvalidRequestContent(
            "Client context must be a valid Base64-encoded JSON object.".into(),
        ))
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| invalid())?;
    if raw.len() > 3583 {
        return Err(ApiError(LambdaError::InvalidRequestContent(
            "Client context must be smaller than 3583 bytes".into(),
        )));
    }
    let text = String::from_utf8(raw).map_err(|_| invalid())?;
    serde_json::from_str::<serde_json::Value>(&text).map_err(|_| invalid())?;
    Ok(text)
}

/// InvokeAsync (deprecated in AWS, still used by old scripts): an `Event`
/// invocation answering `{"Status": 202}`.
pub(crate) async fn invoke_async(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let f = state.lambda.identity().parse_function_ref(&name, None)?;
    let payload = read_body(body, limits::ASYNC_PAYLOAD_MAX, too_large).await?;
    let origin = EventOrigin {
        trace_header: header(&headers, "x-amzn-trace-id").map(str::to_string),
        ..Default::default()
    };
    state.lambda.invoke_event(&f, payload, origin).await?;
    let mut r = (
        StatusCode::ACCEPTED,
        [(http::header::CONTENT_TYPE, "application/json")],
        r#"{"Status":202}"#,
    )
        .into_response();
    r.headers_mut().insert("x-amzn-requestid", request_id());
    Ok(r)
}
