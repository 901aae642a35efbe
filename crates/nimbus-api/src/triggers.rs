//! `GET /_nimbus/triggers?function=NAME`: every event source wired to a
//! function (S3 bucket notifications, EventBridge rules, Scheduler
//! schedules), for `nimbus trigger list`. SigV4-signed with credential
//! scope service `nimbus`, like `/_nimbus/usage`.
//!
//! A trigger on a version or alias of the function (`...:function:f:prod`)
//! is listed with the qualified target it names.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use nimbus_core::LambdaError;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;

#[derive(Debug, Deserialize)]
pub(crate) struct Params {
    function: Option<String>,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    params: Result<Query<Params>, QueryRejection>,
) -> Response {
    match triggers(state, params).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn triggers(
    state: AppState,
    params: Result<Query<Params>, QueryRejection>,
) -> Result<Value, ApiError> {
    let Query(p) = params.map_err(|e| LambdaError::InvalidParameterValue(e.to_string()))?;
    let name = p.function.filter(|f| !f.is_empty()).ok_or_else(|| {
        LambdaError::InvalidParameterValue("function: a function name or ARN is required".into())
    })?;
    let f = state.lambda.identity().parse_function_ref(&name, None)?;
    // The function must exist: a typo should not look like "no triggers".
    let lambda = state.lambda.clone();
    let unqualified = nimbus_core::FunctionRef {
        name: f.name.clone(),
        qualifier: None,
    };
    tokio::task::spawn_blocking(move || lambda.get_function(&unqualified))
        .await
        .map_err(LambdaError::internal)??;
    let arn = state.lambda.identity().function_arn(&f.name);
    let mut out = Vec::new();
    if let Some(s3) = &state.s3 {
        let configs = s3
            .notifications_for_function(&arn)
            .await
            .map_err(LambdaError::internal)?;
        for (bucket, t) in configs {
            out.push(json!({
                "service": "s3",
                "source": format!("arn:aws:s3:::{bucket}"),
                "name": t.id,
                "detail": s3_detail(&t.events, t.prefix.as_deref(), t.suffix.as_deref()),
                "enabled": true,
                "target": t.function_arn,
            }));
        }
    }
    for t in state.schedules.triggers_for(&arn) {
        let service = match t.kind {
            nimbus_schedule::TriggerKind::Rule => "events",
            nimbus_schedule::TriggerKind::Schedule => "scheduler",
        };
        out.push(json!({
            "service": service,
            "source": t.arn,
            "name": t.name,
            "detail": t.expression,
            "enabled": t.enabled,
            "target": t.target_arn,
        }));
    }
    Ok(json!({ "functionArn": arn, "triggers": out }))
}

/// `s3:ObjectCreated:* prefix=images/ suffix=.jpg`.
fn s3_detail(events: &[String], prefix: Option<&str>, suffix: Option<&str>) -> String {
    let mut d = events.join(",");
    if let Some(p) = prefix {
        d.push_str(&format!(" prefix={p}"));
    }
    if let Some(s) = suffix {
        d.push_str(&format!(" suffix={s}"));
    }
    d
}
