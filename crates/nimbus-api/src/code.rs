//! Presigned downloads of deployment packages: GetFunction's
//! `Code.Location`, valid for ten minutes as in Lambda.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use sha2::Sha256;

use crate::AppState;

const VALID_FOR_S: i64 = 600;

fn signature(key: &[u8], sha: &str, expires: i64) -> String {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256>>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(format!("{sha}\n{expires}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The URL a client downloads the package from, on the host it called.
pub(crate) fn presigned_location(state: &AppState, headers: &HeaderMap, sha: &str) -> String {
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:9070");
    let expires = chrono::Utc::now().timestamp() + VALID_FOR_S;
    let sig = signature(&state.url_key, sha, expires);
    format!("http://{host}/_nimbus/code/{sha}?Expires={expires}&Signature={sig}")
}

#[derive(Debug, Deserialize)]
pub(crate) struct Presigned {
    #[serde(rename = "Expires")]
    expires: Option<i64>,
    #[serde(rename = "Signature")]
    signature: Option<String>,
}

fn s3_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    (
        status,
        [(http::header::CONTENT_TYPE, "application/xml")],
        body,
    )
        .into_response()
}

pub(crate) async fn download(
    State(state): State<AppState>,
    Path(sha): Path<String>,
    Query(q): Query<Presigned>,
) -> Response {
    let (Some(expires), Some(sig)) = (q.expires, q.signature) else {
        return s3_error(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Request is not signed",
        );
    };
    let expected = signature(&state.url_key, &sha, expires);
    if !constant_time_eq(expected.as_bytes(), sig.as_bytes()) {
        return s3_error(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature does not match",
        );
    }
    if chrono::Utc::now().timestamp() > expires {
        return s3_error(StatusCode::FORBIDDEN, "AccessDenied", "Request has expired");
    }
    let svc = state.lambda.clone();
    let blob = tokio::task::spawn_blocking(move || svc.code_package(&sha)).await;
    match blob {
        Ok(Ok(Some(zip))) => {
            ([(http::header::CONTENT_TYPE, "application/zip")], zip).into_response()
        }
        Ok(Ok(None)) => s3_error(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
        ),
        _ => s3_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "We encountered an internal error.",
        ),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
