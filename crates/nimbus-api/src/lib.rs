//! The HTTP edge of nimbus: every AWS wire format lives here and nowhere
//! else.
//!
//! One axum [`Router`] serves, on one port:
//! - the Lambda REST-JSON API (`/2015-03-31/functions...`, account settings,
//!   the legacy `invoke-async`), in the `lambda` module;
//! - the CloudWatch Logs JSON 1.1 API (`POST /` with
//!   `X-Amz-Target: Logs_20140328.*`), in the `logs` module;
//! - EventBridge rules (JSON 1.1, `X-Amz-Target: AWSEvents.*`), module
//!   `events`, and EventBridge Scheduler (REST-JSON, `/schedules...`,
//!   `/schedule-groups...`), module `scheduler`, over
//!   [`nimbus_schedule::Schedules`];
//! - SigV4 authentication of all of the above (module `auth`);
//! - nimbus's own endpoints under `/_nimbus/`: health, presigned
//!   downloads of deployment packages (GetFunction's `Code.Location`), and
//!   metered usage (`/_nimbus/usage`, module `usage`), the event sources
//!   wired to a function (`/_nimbus/triggers`, module `triggers`);
//! - Prometheus metrics on `/metrics` (module `metrics`);
//! - the S3 API of the object store (`nimbus_s3`), for requests whose
//!   credential scope names `s3` or whose Host is a virtual-hosted bucket
//!   (module `s3`), handed to the s3s service before anything else.
//!
//! Requests become typed calls on [`nimbus_lambda::LambdaService`] and the
//! store; results and [`nimbus_core::LambdaError`]s become AWS-shaped
//! responses. Internal error detail is logged, never sent.

mod auth;
mod authz;
mod code;
mod dlq;
mod error;
mod events;
mod iam;
mod lambda;
mod logs;
mod metrics;
mod paging;
mod s3;
mod scheduler;
mod triggers;
mod usage;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use nimbus_lambda::LambdaService;
use nimbus_store::Store;

pub use auth::Keys;
pub use error::ApiError;
pub use s3::s3_gate;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub lambda: Arc<LambdaService>,
    pub store: Arc<dyn Store>,
    /// Key that signs `Code.Location` URLs.
    pub url_key: Arc<[u8]>,
    /// The access keys SigV4 signatures are checked against.
    pub keys: Keys,
    /// IAM and STS.
    pub iam: Arc<nimbus_iam::IamService>,
    /// EventBridge rules and Scheduler schedules.
    pub schedules: Arc<nimbus_schedule::Schedules>,
    /// The object store's S3 API, if served.
    pub s3: Option<Arc<nimbus_s3::S3Api>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    let s3 = state.s3.clone();
    let rest = aws_router(state);
    let Some(s3) = s3 else { return rest };
    // S3 requests bypass the routes and the auth middleware (which reads
    // whole bodies): s3s streams them and checks their signatures.
    Router::new().fallback_service(tower::service_fn(move |req: axum::extract::Request| {
        let (rest, s3) = (rest.clone(), s3.clone());
        async move {
            if s3::is_s3(&req, &s3.settings().domain) {
                return Ok(s3::call(&s3, req).await);
            }
            tower::ServiceExt::oneshot(rest, req).await
        }
    }))
}

/// Everything but S3.
fn aws_router(state: AppState) -> Router {
    Router::new()
        .route("/_nimbus/health", get(|| async { "ok" }))
        .route("/_nimbus/code/{sha}", get(code::download))
        .route("/_nimbus/usage", get(usage::get))
        .route("/_nimbus/dlq", get(dlq::list))
        .route("/_nimbus/dlq/replay", post(dlq::replay))
        .route("/_nimbus/triggers", get(triggers::list))
        .route("/metrics", get(metrics::render))
        .route("/", post(aws_json_dispatch))
        .merge(lambda::routes())
        .merge(scheduler::routes())
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
/// `X-Amz-Target`, and the query-protocol ones (IAM, STS), told apart by
/// the service of the verified credential scope.
async fn aws_json_dispatch(
    state: axum::extract::State<AppState>,
    req: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let target = header("x-amz-target");
    if let Some(("Logs_20140328", op)) = target.split_once('.') {
        return logs::dispatch(state.0, op, body).await;
    }
    if let Some(("AWSEvents", op)) = target.split_once('.') {
        return events::dispatch(state.0, op, body).await;
    }
    if header("content-type").starts_with("application/x-www-form-urlencoded") {
        // The auth middleware has read and put back the whole body already.
        let form = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        let verified = parts.extensions.get::<nimbus_auth::Verified>().cloned();
        return iam::dispatch(state.0, verified, form).await;
    }
    error::unknown_operation().await
}
