//! AWS-shaped error responses.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use nimbus_core::LambdaError;

/// An error of the Lambda REST API: status, `x-amzn-ErrorType` and
/// `{"Type", "message"}` (botocore reads the code from the header, the SDKs
/// from either).
#[derive(Debug)]
pub struct ApiError(pub LambdaError);

impl From<LambdaError> for ApiError {
    fn from(e: LambdaError) -> Self {
        Self(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let mut body = serde_json::json!({"Type": e.fault(), "message": e.to_string()});
        if let LambdaError::TooManyRequests { reason, .. } = &e {
            body["Reason"] = (*reason).into();
        }
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (
            status,
            [(http::header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        let h = resp.headers_mut();
        h.insert("x-amzn-errortype", HeaderValue::from_static(e.code()));
        h.insert("x-amzn-requestid", request_id());
        if let LambdaError::TooManyRequests { retry_after_s, .. } = e {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from(retry_after_s));
        }
        resp
    }
}

/// A fresh request id header value.
pub(crate) fn request_id() -> HeaderValue {
    HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
        .unwrap_or(HeaderValue::from_static("0"))
}

/// What nimbus answers for a path or target it does not serve.
pub(crate) async fn unknown_operation() -> Response {
    let mut resp = (
        StatusCode::NOT_FOUND,
        [(http::header::CONTENT_TYPE, "application/json")],
        r#"{"message":"The requested operation is not supported by nimbus"}"#,
    )
        .into_response();
    resp.headers_mut().insert(
        "x-amzn-errortype",
        HeaderValue::from_static("UnknownOperationException"),
    );
    resp
}

/// Reads a whole request body up to `limit` bytes; a larger body is the
/// error `too_large` builds.
pub(crate) async fn read_body(
    body: axum::body::Body,
    limit: usize,
    too_large: impl FnOnce() -> LambdaError,
) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let is_limit = std::error::Error::source(&e)
            .is_some_and(|s| s.to_string().contains("length limit exceeded"))
            || e.to_string().contains("length limit exceeded");
        if is_limit {
            ApiError(too_large())
        } else {
            ApiError(LambdaError::InvalidRequestContent(format!(
                "Could not read the request body: {e}"
            )))
        }
    })
}
