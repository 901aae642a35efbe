//! nimbus's dead-letter store, for `nimbus dlq`: `GET /_nimbus/dlq?queue=`
//! lists dead letters, `POST /_nimbus/dlq/replay` (`{"ids": [..]}` or
//! `{"all": true, "queue": ".."}`) queues them again. SigV4-signed with
//! credential scope service `nimbus`, like `/_nimbus/usage`.
//!
//! An `arn:aws:sqs:REGION:ACCOUNT:NAME` destination or dead-letter target
//! names the queue NAME here (nimbus has no SQS); failed events without a
//! failure destination are kept in queue `default`.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use nimbus_core::LambdaError;
use nimbus_lambda::DeadLetter;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, read_body};

#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    queue: Option<String>,
}

fn shape(d: &DeadLetter) -> Value {
    json!({
        "id": d.id,
        "queue": d.queue,
        "requestId": d.request_id,
        "functionName": d.function,
        "qualifier": d.qualifier,
        "condition": d.condition,
        "reason": d.reason,
        "createdMs": d.created_ms,
        "payload": String::from_utf8_lossy(&d.payload),
        "record": serde_json::from_str::<Value>(&d.record).unwrap_or(Value::Null),
    })
}

pub(crate) async fn list(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Response {
    let run = async {
        let Query(p) = params.map_err(|e| {
            LambdaError::InvalidParameterValue(format!("queue must be a queue name: {e}"))
        })?;
        let lambda = state.lambda.clone();
        let queue = p.queue.filter(|q| !q.is_empty());
        let letters = tokio::task::spawn_blocking(move || lambda.dead_letters(queue.as_deref()))
            .await
            .map_err(LambdaError::internal)??;
        Ok::<_, ApiError>(json!({
            "deadLetters": letters.iter().map(shape).collect::<Vec<_>>(),
        }))
    };
    match run.await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct ReplayRequest {
    #[serde(default)]
    ids: Vec<i64>,
    #[serde(default)]
    all: bool,
    queue: Option<String>,
}

pub(crate) async fn replay(State(state): State<AppState>, body: axum::body::Body) -> Response {
    let run = async {
        let bytes = read_body(body, 1 << 20, || {
            LambdaError::RequestTooLarge("a replay request must be under 1 MB".into())
        })
        .await?;
        let req: ReplayRequest = serde_json::from_slice(&bytes).map_err(|e| {
            LambdaError::InvalidRequestContent(format!(
                "expected {{\"ids\": [..]}} or {{\"all\": true, \"queue\": \"..\"}}: {e}"
            ))
        })?;
        if req.all != req.ids.is_empty() {
            return Err(ApiError(LambdaError::InvalidParameterValue(
                "give either dead letter ids or all (with an optional queue)".into(),
            )));
        }
        let lambda = state.lambda.clone();
        let replayed = tokio::task::spawn_blocking(move || {
            let ids = if req.all {
                lambda
                    .dead_letters(req.queue.as_deref().filter(|q| !q.is_empty()))?
                    .iter()
                    .map(|d| d.id)
                    .collect()
            } else {
                req.ids
            };
            lambda.replay_dead_letters(&ids)
        })
        .await
        .map_err(LambdaError::internal)??;
        Ok::<_, ApiError>(json!({
            "replayed": replayed
                .iter()
                .map(|(id, request_id)| json!({"id": id, "requestId": request_id}))
                .collect::<Vec<_>>(),
        }))
    };
    match run.await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}
