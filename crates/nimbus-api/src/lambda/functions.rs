//! Function lifecycle: Create, Get, GetConfiguration, List, UpdateCode,
//! UpdateConfiguration, Delete, and GetAccountSettings.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::{HeaderMap, StatusCode};
use nimbus_core::function::FunctionSettings;
use nimbus_core::{FunctionRef, LambdaError, limits};
use nimbus_lambda::{CreateFunction, LambdaService};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::shapes::{
    self, CreateFunctionRequest, FunctionCodeShape, UpdateCodeRequest, UpdateConfigurationRequest,
};
use crate::error::{ApiError, read_body, request_id};
use crate::{AppState, code};

type Result<T> = std::result::Result<T, ApiError>;

#[derive(Debug, Deserialize)]
pub(crate) struct QualifierQuery {
    #[serde(rename = "Qualifier")]
    pub(crate) qualifier: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(rename = "Marker")]
    marker: Option<String>,
    #[serde(rename = "MaxItems")]
    max_items: Option<String>,
    #[serde(rename = "FunctionVersion")]
    function_version: Option<String>,
}

/// Runs a control-plane call (SQLite writes, zip unpacking) off the async
/// workers.
pub(super) async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&LambdaService) -> nimbus_core::LambdaResult<T> + Send + 'static,
) -> Result<T> {
    let svc: Arc<LambdaService> = state.lambda.clone();
    tokio::task::spawn_blocking(move || f(&svc))
        .await
        .map_err(LambdaError::internal)?
        .map_err(ApiError)
}

pub(super) fn ok_json(status: StatusCode, v: serde_json::Value) -> Response {
    let mut r = (status, Json(v)).into_response();
    r.headers_mut().insert("x-amzn-requestid", request_id());
    r
}

pub(super) async fn parse_json<T: DeserializeOwned>(
    body: axum::body::Body,
    operation: &'static str,
) -> Result<T> {
    let limit = limits::CODE_REQUEST_MAX;
    let bytes = read_body(body, limit, || {
        LambdaError::RequestEntityTooLarge(format!(
            "Request must be smaller than {limit} bytes for the {operation} operation"
        ))
    })
    .await?;
    let bytes = if bytes.is_empty() {
        bytes::Bytes::from_static(b"{}")
    } else {
        bytes
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError(LambdaError::InvalidRequestContent(format!(
            "Could not parse request body into json: {e}"
        )))
    })
}

fn decode_zip(
    code: Option<String>,
    s3: Option<String>,
    image: Option<String>,
) -> Result<Option<Vec<u8>>> {
    if s3.is_some() {
        return Err(ApiError(LambdaError::InvalidParameterValue(
            "Code from S3 (S3Bucket/S3Key) is not supported by nimbus yet; upload the package as ZipFile".into(),
        )));
    }
    if image.is_some() {
        return Err(ApiError(LambdaError::InvalidParameterValue(
            "Container image functions (ImageUri) are not supported by nimbus yet; use a .zip package".into(),
        )));
    }
    code.map(|b64| {
        base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|_| {
            ApiError(LambdaError::InvalidParameterValue(
                "Could not unzip uploaded file. Please check your file, then try to upload again.".into(),
            ))
        })
    })
    .transpose()
}

pub(super) fn function_ref(
    state: &AppState,
    name: &str,
    qualifier: Option<&str>,
) -> Result<FunctionRef> {
    Ok(state
        .lambda
        .identity()
        .parse_function_ref(name, qualifier)?)
}

pub(crate) async fn create(
    State(state): State<AppState>,
    body: axum::body::Body,
) -> Result<Response> {
    let req: CreateFunctionRequest = parse_json(body, "CreateFunction").await?;
    let FunctionCodeShape {
        zip_file,
        s3_bucket,
        image_uri,
    } = req.code.unwrap_or_default();
    let zip = decode_zip(zip_file, s3_bucket, image_uri)?;
    let cmd = CreateFunction {
        name: req.function_name.unwrap_or_default(),
        settings: FunctionSettings {
            runtime: req.runtime,
            role: req.role,
            handler: req.handler,
            description: req.description,
            timeout_s: req.timeout,
            memory_mb: req.memory_size,
            ephemeral_storage_mb: req.ephemeral_storage.and_then(|e| e.size),
            environment: req.environment.and_then(|e| e.variables),
            dead_letter_target: req
                .dead_letter_config
                .map(|d| d.target_arn.unwrap_or_default()),
        },
        zip,
        package_type: req.package_type,
        architectures: req.architectures,
        tags: req.tags.unwrap_or_default(),
        publish: req.publish.unwrap_or(false),
    };
    let spec = blocking(&state, move |svc| svc.create_function(cmd)).await?;
    Ok(ok_json(
        StatusCode::CREATED,
        shapes::configuration(&spec, state.lambda.identity()),
    ))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<QualifierQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let f = function_ref(&state, &name, q.qualifier.as_deref())?;
    let view = state.lambda.get_function(&f)?;
    let location = code::presigned_location(&state, &headers, &view.spec.code_sha256);
    let mut body = json!({
        "Configuration": view_configuration(&state, &view),
        "Code": {"RepositoryType": "S3", "Location": location},
    });
    if !view.tags.is_empty() {
        body["Tags"] = json!(view.tags);
    }
    if let Some(n) = view.reserved_concurrency {
        body["Concurrency"] = json!({"ReservedConcurrentExecutions": n});
    }
    Ok(ok_json(StatusCode::OK, body))
}

pub(crate) async fn get_configuration(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<QualifierQuery>,
) -> Result<Response> {
    let f = function_ref(&state, &name, q.qualifier.as_deref())?;
    let view = state.lambda.get_function(&f)?;
    Ok(ok_json(StatusCode::OK, view_configuration(&state, &view)))
}

/// The configuration of the version a qualifier named; named by an alias,
/// its `FunctionArn` is the alias's.
fn view_configuration(state: &AppState, view: &nimbus_lambda::FunctionView) -> serde_json::Value {
    let id = state.lambda.identity();
    let mut v = shapes::configuration(&view.spec, id);
    if let Some(alias) = &view.alias {
        v["FunctionArn"] = id.qualified_arn(&view.spec.name, alias).into();
    }
    v
}

/// `MaxItems` of a listing: 1 to `max` (`default` when absent).
pub(super) fn max_items(raw: Option<&str>, default: usize, max: usize) -> Result<usize> {
    match raw {
        None => Ok(default),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError(LambdaError::Validation(format!(
                "1 validation error detected: Value '{s}' at 'maxItems' failed to satisfy constraint: \
                 Member must have value between 1 and {max}"
            )))),
        },
    }
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Response> {
    let max = max_items(q.max_items.as_deref(), 50, 10_000)?;
    let all_versions = match q.function_version.as_deref() {
        None => false,
        Some("ALL") => true,
        Some(other) => {
            return Err(ApiError(LambdaError::Validation(format!(
                "1 validation error detected: Value '{other}' at 'functionVersion' failed to satisfy \
                 constraint: Member must satisfy enum value set: [ALL]"
            ))));
        }
    };
    let marker = q.marker.filter(|m| !m.is_empty());
    let (page, next) = state
        .lambda
        .list_functions(marker.as_deref(), max, all_versions)?;
    let id = state.lambda.identity();
    let items = page.iter().map(|s| shapes::configuration(s, id)).collect();
    Ok(ok_json(
        StatusCode::OK,
        shapes::page("Functions", items, next),
    ))
}

pub(crate) async fn update_code(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Body,
) -> Result<Response> {
    let f = function_ref(&state, &name, None)?;
    let req: UpdateCodeRequest = parse_json(body, "UpdateFunctionCode").await?;
    let zip = decode_zip(req.zip_file, req.s3_bucket, req.image_uri)?;
    let dry_run = req.dry_run.unwrap_or(false);
    let publish = req.publish.unwrap_or(false);
    let (rev, arch) = (req.revision_id, req.architectures);
    let spec = blocking(&state, move |svc| {
        svc.update_function_code(&f, zip, rev.as_deref(), dry_run, publish, arch)
    })
    .await?;
    Ok(ok_json(
        StatusCode::OK,
        shapes::configuration(&spec, state.lambda.identity()),
    ))
}

pub(crate) async fn update_configuration(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Body,
) -> Result<Response> {
    let f = function_ref(&state, &name, None)?;
    let req: UpdateConfigurationRequest = parse_json(body, "UpdateFunctionConfiguration").await?;
    let (settings, rev) = req.settings();
    let spec = blocking(&state, move |svc| {
        svc.update_function_configuration(&f, settings, rev.as_deref())
    })
    .await?;
    Ok(ok_json(
        StatusCode::OK,
        shapes::configuration(&spec, state.lambda.identity()),
    ))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<QualifierQuery>,
) -> Result<Response> {
    let f = function_ref(&state, &name, q.qualifier.as_deref())?;
    blocking(&state, move |svc| svc.delete_function(&f)).await?;
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert("x-amzn-requestid", request_id());
    Ok(r)
}

pub(crate) async fn account_settings(State(state): State<AppState>) -> Result<Response> {
    let a = state.lambda.account_settings();
    Ok(ok_json(
        StatusCode::OK,
        json!({
            "AccountLimit": {
                "TotalCodeSize": limits::TOTAL_CODE_MAX,
                "CodeSizeUnzipped": limits::CODE_UNZIPPED_MAX,
                "CodeSizeZipped": limits::CODE_ZIPPED_MAX,
                "ConcurrentExecutions": a.concurrent_executions,
                "UnreservedConcurrentExecutions": a.unreserved_concurrent_executions,
            },
            "AccountUsage": {"TotalCodeSize": a.total_code_size, "FunctionCount": a.function_count},
        }),
    ))
}
