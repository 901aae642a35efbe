//! AddPermission, GetPolicy and RemovePermission: a function's
//! resource-based policy.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use nimbus_core::LambdaError;
use nimbus_core::function::Permission;
use serde::Deserialize;
use serde_json::json;

use super::functions::{QualifierQuery, blocking, ok_json, parse_json};
use crate::AppState;
use crate::error::{ApiError, request_id};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AddPermissionRequest {
    statement_id: Option<String>,
    action: Option<String>,
    principal: Option<String>,
    source_arn: Option<String>,
    source_account: Option<String>,
    revision_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RevisionQuery {
    #[serde(rename = "Qualifier")]
    qualifier: Option<String>,
    #[serde(rename = "RevisionId")]
    revision_id: Option<String>,
}

fn required(v: Option<String>, field: &str) -> Result<String, ApiError> {
    v.ok_or_else(|| {
        ApiError(LambdaError::Validation(format!(
            "1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"
        )))
    })
}

pub(crate) async fn add(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<QualifierQuery>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let f = state
        .lambda
        .identity()
        .parse_function_ref(&name, q.qualifier.as_deref())?;
    let req: AddPermissionRequest = parse_json(body, "AddPermission").await?;
    let permission = Permission {
        sid: required(req.statement_id, "statementId")?,
        action: required(req.action, "action")?,
        principal: required(req.principal, "principal")?,
        source_arn: req.source_arn,
        source_account: req.source_account,
    };
    let rev = req.revision_id;
    let statement = blocking(&state, move |svc| {
        svc.add_permission(&f, permission, rev.as_deref())
    })
    .await?;
    Ok(ok_json(
        StatusCode::CREATED,
        json!({"Statement": statement}),
    ))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<QualifierQuery>,
) -> Result<Response, ApiError> {
    let f = state
        .lambda
        .identity()
        .parse_function_ref(&name, q.qualifier.as_deref())?;
    let (policy, revision) = state.lambda.function_policy(&f)?;
    Ok(ok_json(
        StatusCode::OK,
        json!({"Policy": policy, "RevisionId": revision}),
    ))
}

pub(crate) async fn remove(
    State(state): State<AppState>,
    Path((name, sid)): Path<(String, String)>,
    Query(q): Query<RevisionQuery>,
) -> Result<Response, ApiError> {
    let f = state
        .lambda
        .identity()
        .parse_function_ref(&name, q.qualifier.as_deref())?;
    let rev = q.revision_id;
    blocking(&state, move |svc| {
        svc.remove_permission(&f, &sid, rev.as_deref())
    })
    .await?;
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert("x-amzn-requestid", request_id());
    Ok(r)
}
