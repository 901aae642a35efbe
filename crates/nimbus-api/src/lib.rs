//! The HTTP edge of nimbus: every AWS wire format lives here and nowhere
//! else.
//!
//! One axum [`Router`] serves, on one port:
//! - the Lambda REST-JSON API (`/2015-03-31/functions...`, account settings,
//!   the legacy `invoke-async`), in the `lambda` module;
//! - the CloudWatch Logs JSON 1.1 API (`POST /` with
//!   `X-Amz-Target: Logs_20140328.*`), in the `logs` module;
//! - SigV4 authentication of all of the above (module `auth`);
//! - nimbus's own endpoints under `/_nimbus/`: health, and presigned
//!   downloads of deployment packages (GetFunction's `Code.Location`).
//!
//! Requests become typed calls on [`nimbus_lambda::LambdaService`] and the
//! store; results and [`nimbus_core::LambdaError`]s become AWS-shaped
//! responses. Internal error detail is logged, never sent.

mod auth;
mod code;
mod error;
mod lambda;
mod logs;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use nimbus_lambda::LambdaService;
use nimbus_store::Store;

pub use auth::Keys;
pub use error::ApiError;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub lambda: Arc<LambdaService>,
    pub store: Arc<dyn Store>,
    /// Key that signs `Code.Location` URLs.
    pub url_key: Arc<[u8]>,
    /// The access keys SigV4 signatures are checked against.
    pub keys: Keys,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/_nimbus/health", get(|| async { "ok" }))
        .route("/_nimbus/code/{sha}", get(code::download))
        .route("/", post(aws_json_dispatch))
        .merge(lambda::routes())
        .fallback(error::unknown_operation)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        // Bodies are read by the handlers with their own, AWS-shaped limits.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// `POST /` carries the JSON-protocol services, told apart by
/// `X-Amz-Target`.
async fn aws_json_dispatch(
    state: axum::extract::State<AppState>,
    headers: http::HeaderMap,
    body: axum::body::Body,
) -> axum::response::Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    match target.split_once('.') {
        Some(("Logs_20140328", op)) => logs::dispatch(state.0, op, body).await,
        _ => error::unknown_operation().await,
    }
}
