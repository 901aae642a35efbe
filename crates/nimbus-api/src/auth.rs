//! SigV4 authentication of every AWS-compatible request and of nimbus's own
//! API (`/_nimbus/usage`, credential scope service `nimbus`), as middleware
//! in front of all routes but health, `/metrics` and the HMAC-presigned
//! code downloads (which carry their own signature).
//!
//! The body is read first (SigV4 signs its hash), then put back for the
//! handler. The verified principal travels in the request's extensions.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use nimbus_auth::{AuthError, KeyStore, PathMode, RequestParts, Verified};
use nimbus_core::limits;

use crate::AppState;
use crate::error::request_id;

/// Keys nimbus accepts, for the middleware.
pub type Keys = Arc<dyn KeyStore + Send + Sync>;

/// The largest body any operation takes (CreateFunction's base64 package);
/// handlers apply their own, smaller limits with their own errors.
const MAX_BODY: usize = limits::CODE_REQUEST_MAX + 1024 * 1024;

/// Which protocol family an error must be shaped for.
#[derive(Clone, Copy)]
enum Protocol {
    /// REST-JSON (Lambda): 403, `x-amzn-ErrorType`, `{"message"}`.
    RestJson,
    /// JSON 1.1 (CloudWatch Logs): 400, `{"__type", "message"}`.
    Json,
    /// Query (IAM, STS): 403 and an XML `ErrorResponse`.
    Query,
}

/// The paths served without SigV4: health, Prometheus scrapes, and the
/// code downloads (HMAC-presigned by `code.rs`).
fn is_public(path: &str) -> bool {
    path == "/_nimbus/health" || path == "/metrics" || path.starts_with("/_nimbus/code/")
}

/// The service a request is for, from its path or `X-Amz-Target`, which
/// its credential scope must name.
fn service_of(req: &Request) -> (Option<&'static str>, Protocol) {
    let path = req.uri().path();
    let form = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if form && path == "/" {
        return (None, Protocol::Query);
    }
    if let Some(target) = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
    {
        if target.starts_with("Logs_20140328.") {
            return (Some("logs"), Protocol::Json);
        }
        if target.starts_with("AWSEvents.") {
            return (Some("events"), Protocol::Json);
        }
        return (None, Protocol::Json);
    }
    let lambda_versions = [
        "/2014-11-13/",
        "/2015-03-31/",
        "/2016-08-19/",
        "/2017-03-31/",
        "/2017-10-31/",
        "/2019-09-25/",
        "/2019-09-30/",
        "/2021-10-31/",
        "/2024-08-31/",
    ];
    if lambda_versions.iter().any(|v| path.starts_with(v)) {
        return (Some("lambda"), Protocol::RestJson);
    }
    if path == "/schedules"
        || path.starts_with("/schedules/")
        || path == "/schedule-groups"
        || path.starts_with("/schedule-groups/")
    {
        return (Some("scheduler"), Protocol::RestJson);
    }
    // nimbus's own API (usage): signed like AWS's, scoped to `nimbus`.
    if path.starts_with("/_nimbus/") {
        return (Some("nimbus"), Protocol::RestJson);
    }
    (None, Protocol::RestJson)
}

fn reject(protocol: Protocol, code: &'static str, message: &str) -> Response {
    let (status, body, content_type) = match protocol {
        Protocol::Query => return crate::iam::auth_error(code, message),
        Protocol::RestJson => (
            StatusCode::FORBIDDEN,
            serde_json::json!({"Type": "User", "message": message}),
            "application/json",
        ),
        Protocol::Json => (
            StatusCode::BAD_REQUEST,
            serde_json::json!({"__type": code, "message": message}),
            "application/x-amz-json-1.1",
        ),
    };
    let mut r = (
        status,
        [(http::header::CONTENT_TYPE, content_type)],
        body.to_string(),
    )
        .into_response();
    r.headers_mut()
        .insert("x-amzn-errortype", HeaderValue::from_static(code));
    r.headers_mut().insert("x-amzn-requestid", request_id());
    r
}

fn code_of(e: &AuthError) -> &'static str {
    match e {
        AuthError::Missing => "MissingAuthenticationTokenException",
        AuthError::Incomplete(_) => "IncompleteSignatureException",
        AuthError::UnknownKey | AuthError::BadToken => "UnrecognizedClientException",
        AuthError::Mismatch | AuthError::Expired(_) => "InvalidSignatureException",
    }
}

/// The middleware: verifies, then passes the request on with the body
/// restored and the [`Verified`] principal attached.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let (service, protocol) = service_of(&req);
    let (mut parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        let mut r = reject(
            protocol,
            "RequestEntityTooLargeException",
            "Request must be smaller than the largest request any operation accepts",
        );
        *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
        return r;
    };
    let headers: Vec<(&str, &str)> = parts
        .headers
        .iter()
        .filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str(), v)))
        .collect();
    let content_hash = parts
        .headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok());
    let computed;
    let payload_hash = match content_hash {
        // A literal (UNSIGNED-PAYLOAD, STREAMING-...) is signed as is; a
        // hash must also match the body.
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            computed = nimbus_auth::payload_sha256(&body);
            if !h.eq_ignore_ascii_case(&computed) {
                return reject(
                    protocol,
                    "InvalidSignatureException",
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                );
            }
            h
        }
        Some(h) => h,
        None => {
            computed = nimbus_auth::payload_sha256(&body);
            &computed
        }
    };
    let request = RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &headers,
        payload_hash,
    };
    let verified = match nimbus_auth::verify(
        &request,
        PathMode::Normalized,
        chrono::Utc::now(),
        state.keys.as_ref(),
    ) {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!(path = %parts.uri.path(), "authentication failed: {e}");
            return reject(protocol, code_of(&e), &e.to_string());
        }
    };
    if verified.region != state.lambda.identity().region {
        let msg = format!(
            "Credential should be scoped to a valid region, not '{}'. ",
            verified.region
        );
        return reject(protocol, "InvalidSignatureException", &msg);
    }
    if let Some(expected) = service
        && verified.service != expected
    {
        let msg = format!("Credential should be scoped to correct service: '{expected}'. ");
        return reject(protocol, "InvalidSignatureException", &msg);
    }
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok());
    let id = state.lambda.identity();
    // The root bypasses policies, as AWS's root user does: nothing to map
    // or evaluate on its (the common, hot) path.
    let root = state.iam.is_root(&verified.access_key_id);
    if let Some(op) = (!root)
        .then(|| {
            crate::authz::operation(
                &verified.service,
                &parts.method,
                parts.uri.path(),
                parts.uri.query(),
                target,
                &body,
                id,
            )
        })
        .flatten()
    {
        let context = nimbus_policy::Context::new()
            .with("aws:PrincipalArn", verified.principal.clone())
            .with("aws:PrincipalAccount", id.account_id.clone())
            .with("aws:RequestedRegion", verified.region.clone());
        // A function's resource-based policy (AddPermission) may allow what
        // the caller's own policies do not.
        let resource_policy = op
            .resource
            .strip_prefix(&format!(
                "arn:aws:lambda:{}:{}:function:",
                id.region, id.account_id
            ))
            // A version's or alias's ARN: the policy is the function's.
            .and_then(|rest| rest.split(':').next())
            .and_then(|name| state.lambda.policy_document(name));
        let decision = state
            .iam
            .authorize(
                &verified.access_key_id,
                &op.action,
                &op.resource,
                resource_policy.as_deref(),
                &context,
            )
            .and_then(|()| match &op.passes_role {
                Some(role) => {
                    let passing = context
                        .clone()
                        .with("iam:PassedToService", "lambda.amazonaws.com");
                    state.iam.authorize(
                        &verified.access_key_id,
                        "iam:PassRole",
                        role,
                        None,
                        &passing,
                    )
                }
                None => Ok(()),
            });
        if let Err(message) = decision {
            tracing::debug!(principal = %verified.principal, action = %op.action, "access denied");
            let code = match protocol {
                Protocol::Query => "AccessDenied",
                _ => "AccessDeniedException",
            };
            return reject(protocol, code, &message);
        }
    }
    parts.extensions.insert::<Verified>(verified);
    next.run(Request::from_parts(parts, Body::from(body))).await
}
