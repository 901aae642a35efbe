//! Versions, aliases and concurrency: PublishVersion,
//! ListVersionsByFunction, CreateAlias / GetAlias / UpdateAlias /
//! DeleteAlias / ListAliases, Put/Get/DeleteFunctionConcurrency and
//! Put/Get/Delete/ListProvisionedConcurrencyConfig(s).

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::StatusCode;
use nimbus_core::LambdaError;
use serde::Deserialize;
use serde_json::json;

use super::functions::{blocking, function_ref, max_items, ok_json, parse_json};
use super::shapes;
use crate::AppState;
use crate::error::{ApiError, request_id};

type Result<T> = std::result::Result<T, ApiError>;

#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    #[serde(rename = "Marker")]
    marker: Option<String>,
    #[serde(rename = "MaxItems")]
    max_items: Option<String>,
    #[serde(rename = "FunctionVersion")]
    function_version: Option<String>,
    #[serde(rename = "Qualifier")]
    qualifier: Option<String>,
    /// `List=ALL` makes a GET of `provisioned-concurrency` the list.
    #[serde(rename = "List")]
    list: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct PublishVersionRequest {
    code_sha256: Option<String>,
    description: Option<String>,
    revision_id: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RoutingConfigShape {
    additional_version_weights: Option<BTreeMap<String, f64>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct AliasRequest {
    name: Option<String>,
    function_version: Option<String>,
    description: Option<String>,
    routing_config: Option<RoutingConfigShape>,
    revision_id: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ConcurrencyRequest {
    reserved_concurrent_executions: Option<i64>,
    provisioned_concurrent_executions: Option<i64>,
}

fn no_content() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert("x-amzn-requestid", request_id());
    r
}

fn required<T>(v: Option<T>, field: &str) -> Result<T> {
    v.ok_or_else(|| {
        ApiError(LambdaError::Validation(format!(
            "1 validation error detected: Value null at '{field}' failed to satisfy constraint: \
             Member must not be null"
        )))
    })
}

/// `RoutingConfig.AdditionalVersionWeights`: at most one version; an empty
/// map means no routing.
fn routing(r: RoutingConfigShape) -> Result<Option<(String, f64)>> {
    let weights = r.additional_version_weights.unwrap_or_default();
    if weights.len() > 1 {
        return Err(ApiError(LambdaError::Validation(
            "1 validation error detected: Value at 'routingConfig.additionalVersionWeights' failed to \
             satisfy constraint: Member must have length less than or equal to 1"
                .into(),
        )));
    }
    Ok(weights.into_iter().next())
}

pub(crate) async fn publish(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Body,
) -> Result<Response> {
    let f = function_ref(&state, &name, None)?;
    let req: PublishVersionRequest = parse_json(body, "PublishVersion").await?;
    // The wire's CodeSha256 is base64; the service's digests are hex.
    let sha = req.code_sha256.map(|b64| {
        base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map(hex::encode)
            .unwrap_or(b64)
    });
    let spec = blocking(&state, move |svc| {
        svc.publish_version(
            &f,
            sha.as_deref(),
            req.description,
            req.revision_id.as_deref(),
        )
    })
    .await?;
    Ok(ok_json(
        StatusCode::CREATED,
        shapes::configuration(&spec, state.lambda.identity()),
    ))
}

pub(crate) async fn list_versions(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response> {
    let f = function_ref(&state, &name, None)?;
    let max = max_items(q.max_items.as_deref(), 50, 10_000)?;
    let marker = q.marker.filter(|m| !m.is_empty());
    let (page, next) = state.lambda.list_versions(&f, marker.as_deref(), max)?;
    let id = state.lambda.identity();
    let items = page.iter().map(|s| shapes::configuration(s, id)).collect();
    Ok(ok_json(
        StatusCode::OK,
        shapes::page("Versions", items, next),
    ))
}

pub(crate) async fn create_alias(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Body,
) -> Result<Response> {
    let f = function_ref(&state, &name, None)?;
    let req: AliasRequest = parse_json(body, "CreateAlias").await?;
    let alias_name = required(req.name, "name")?;
    let version = required(req.function_version, "functionVersion")?;
    let routing = req.routing_config.map(routing).transpose()?.flatten();
    let function = f.name.clone();
    let alias = blocking(&state, move |svc| {
        svc.create_alias(&f, &alias_name, &version, req.description, routing)
    })
    .await?;
    Ok(ok_json(
        StatusCode::CREATED,
        shapes::alias(&function, &alias, state.lambda.identity()),
    ))
}

pub(crate) async fn get_alias(
    State(state): State<AppState>,
    Path((name, alias)): Path<(String, String)>,
) -> Result<Response> {
    let f = function_ref(&state, &name, None)?;
    let a = state.lambda.get_alias(&f, &alias)?;
    Ok(ok_json(
        StatusCode::OK,
        shapes::alias(&f.name, &a, state.lambda.identity()),
    ))
}

pub(crate) async fn update_alias(
    State(state): State<AppState>,
    Path((name, alias)): Path<(String, String)>,
    body: axum::body::Body,
) -> Result<Response> {
    let f = function_ref(&state, &name, None)?;
    let req: AliasRequest = parse_json(body, "UpdateAlias").await?;
    let routing = req.routing_config.map(routing).transpose()?;
    let function = f.name.clone();
    let a = blocking(&state, move |svc| {
        svc.update_alias(
            &f,
            &alias,
            req.function_version.as_deref(),
            req.description,
            routing,
            req.revision_id.as_deref(),
        )
    })
    .await?;
    Ok(ok_json(
        StatusCode::OK,
        shapes::alias(&function, &a, state.lambda.identity()),
    ))
}

pub(crate) async fn delete_alias(
    State(state): State<AppState>,
    Path((name, alias)): Path<(String, String)>,
) -> Result<Response> {
    let f = function_ref(&state, &name, None)?;
    blocking(&state, move |svc| svc.delete_alias(&f, &alias)).await?;
    Ok(no_content())
}

pub(crate) async fn list_aliases(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response> {
    let f = function_ref(&state, &name, None)?;
    let max = max_items(q.max_items.as_deref(), 50, 10_000)?;
    let marker = q.marker.filter(|m| !m.is_empty());
    let (page, next) =
        state
            .lambda
            .list_aliases(&f, q.function_version.as_deref(), marker.as_deref(), max)?;
    let id = state.lambda.identity();
    let items = page.iter().map(|a| shapes::alias(&f.name, a, id)).collect();
    Ok(ok_json(
        StatusCode::OK,
        shapes::page("Aliases", items, next),
    ))
}

pub(crate) async fn put_concurrency(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Body,
) -> Result<Response> {
    let f = function_ref(&state, &name, None)?;
    let req: ConcurrencyRequest = parse_json(body, "PutFunctionConcurrency").await?;
    let n = required(
        req.reserved_concurrent_executions,
        "reservedConcurrentExecutions",
    )?;
    let n = blocking(&state, move |svc| svc.put_function_concurrency(&f, n)).await?;
    Ok(ok_json(
        StatusCode::OK,
        json!({"ReservedConcurrentExecutions": n}),
    ))
}

pub(crate) async fn get_concurrency(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response> {
    let f = function_ref(&state, &name, None)?;
    let body = match state.lambda.function_concurrency(&f)? {
        Some(n) => json!({"ReservedConcurrentExecutions": n}),
        None => json!({}),
    };
    Ok(ok_json(StatusCode::OK, body))
}

pub(crate) async fn delete_concurrency(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response> {
    let f = function_ref(&state, &name, None)?;
    blocking(&state, move |svc| svc.delete_function_concurrency(&f)).await?;
    Ok(no_content())
}

pub(crate) async fn put_provisioned(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
    body: axum::body::Body,
) -> Result<Response> {
    let f = function_ref(&state, &name, q.qualifier.as_deref())?;
    let req: ConcurrencyRequest = parse_json(body, "PutProvisionedConcurrencyConfig").await?;
    let n = required(
        req.provisioned_concurrent_executions,
        "provisionedConcurrentExecutions",
    )?;
    let config = blocking(&state, move |svc| svc.put_provisioned_concurrency(&f, n)).await?;
    Ok(ok_json(
        StatusCode::ACCEPTED,
        shapes::provisioned(&config, false),
    ))
}

/// GetProvisionedConcurrencyConfig, or with `List=ALL`
/// ListProvisionedConcurrencyConfigs (one path, told apart by the query).
pub(crate) async fn get_provisioned(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response> {
    if q.list.as_deref() == Some("ALL") {
        let f = function_ref(&state, &name, None)?;
        let max = max_items(q.max_items.as_deref(), 50, 50)?;
        let marker = q.marker.filter(|m| !m.is_empty());
        let (page, next) = state
            .lambda
            .list_provisioned_concurrency(&f, marker.as_deref(), max)?;
        let items = page.iter().map(|p| shapes::provisioned(p, true)).collect();
        return Ok(ok_json(
            StatusCode::OK,
            shapes::page("ProvisionedConcurrencyConfigs", items, next),
        ));
    }
    let f = function_ref(&state, &name, q.qualifier.as_deref())?;
    let config = state.lambda.provisioned_concurrency(&f)?;
    Ok(ok_json(StatusCode::OK, shapes::provisioned(&config, false)))
}

pub(crate) async fn delete_provisioned(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response> {
    let f = function_ref(&state, &name, q.qualifier.as_deref())?;
    blocking(&state, move |svc| svc.delete_provisioned_concurrency(&f)).await?;
    Ok(no_content())
}
