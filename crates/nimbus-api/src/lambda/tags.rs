//! TagResource, UntagResource and ListTags (`/2017-03-31/tags/{ARN}`).

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::functions::{blocking, ok_json, parse_json};
use crate::AppState;
use crate::error::{ApiError, request_id};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TagRequest {
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

fn no_content() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert("x-amzn-requestid", request_id());
    r
}

pub(crate) async fn tag(
    State(state): State<AppState>,
    Path(arn): Path<String>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let req: TagRequest = parse_json(body, "TagResource").await?;
    blocking(&state, move |svc| svc.tag_resource(&arn, req.tags)).await?;
    Ok(no_content())
}

pub(crate) async fn untag(
    State(state): State<AppState>,
    Path(arn): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    // `tagKeys` repeats, once per key.
    let keys: Vec<String> = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == "tagKeys").then(|| {
                percent_encoding::percent_decode_str(&v.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            })
        })
        .collect();
    blocking(&state, move |svc| svc.untag_resource(&arn, &keys)).await?;
    Ok(no_content())
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Path(arn): Path<String>,
) -> Result<Response, ApiError> {
    let tags = state.lambda.list_tags(&arn)?;
    Ok(ok_json(StatusCode::OK, json!({"Tags": tags})))
}
