//! `GET /_nimbus/usage?since=<epoch-seconds>&function=<name>`: metered
//! usage and its cost, as JSON, for `nimbus usage`. SigV4-signed like the
//! AWS APIs, with credential scope service `nimbus`.
//!
//! `since` defaults to the start of the current UTC month and rounds down
//! to its hour (usage is rolled up per hour). Errors are Lambda-shaped
//! (`x-amzn-ErrorType`, `{"Type", "message"}`).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use nimbus_core::LambdaError;
use nimbus_lambda::{FREE_TIER_GB_SECONDS, FREE_TIER_REQUESTS, Prices, UsageReport, UsageTotals};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;

#[derive(Debug, Deserialize)]
pub(crate) struct UsageParams {
    since: Option<i64>,
    function: Option<String>,
}

pub(crate) async fn get(
    State(state): State<AppState>,
    params: Result<Query<UsageParams>, QueryRejection>,
) -> Response {
    match usage(state, params).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn usage(
    state: AppState,
    params: Result<Query<UsageParams>, QueryRejection>,
) -> Result<Value, ApiError> {
    let Query(p) = params.map_err(|e| {
        LambdaError::InvalidParameterValue(format!(
            "since must be epoch seconds and function a function name: {e}"
        ))
    })?;
    let function = match p.function.as_deref().filter(|f| !f.is_empty()) {
        Some(f) => Some(state.lambda.identity().parse_function_ref(f, None)?.name),
        None => None,
    };
    let lambda = state.lambda.clone();
    let report = tokio::task::spawn_blocking(move || lambda.usage(p.since, function.as_deref()))
        .await
        .map_err(LambdaError::internal)??;
    Ok(to_json(&report))
}

fn totals(t: &UsageTotals, p: &Prices) -> Value {
    json!({
        "requests": t.requests,
        "errors": t.errors,
        "throttles": t.throttles,
        "billedDurationMs": t.billed_ms,
        "gbSeconds": t.gb_seconds(),
        "initDurationMs": t.init_ms,
        "durationMs": t.duration_ms,
        "cost": t.cost(p),
        "freeTierRequests": t.free_requests,
        "freeTierGbSeconds": t.free_gb_seconds(),
        "freeTierCredit": t.free_tier_credit(p),
        "costAfterFreeTier": t.cost_after_free_tier(p),
    })
}

/// The report as the endpoint answers it; costs are in dollars.
pub(crate) fn to_json(r: &UsageReport) -> Value {
    let p = &r.prices;
    let functions: Vec<Value> = r
        .functions
        .iter()
        .map(|(name, t)| {
            let mut v = totals(t, p);
            v["functionName"] = name.clone().into();
            v
        })
        .collect();
    json!({
        "since": r.since_s,
        "until": r.until_s,
        "prices": {
            "perMillionRequests": p.per_million_requests,
            "perGbSecond": p.per_gb_second,
        },
        "freeTier": {
            "requestsPerMonth": FREE_TIER_REQUESTS,
            "gbSecondsPerMonth": FREE_TIER_GB_SECONDS,
        },
        "functions": functions,
        "total": totals(&r.total, p),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_has_per_function_rows_and_a_total() {
        let t = UsageTotals {
            requests: 2,
            errors: 1,
            throttles: 3,
            billed_ms: 300,
            mb_ms: 300 * 128,
            init_ms: 120.5,
            duration_ms: 10.25,
            free_requests: 2,
            free_mb_ms: 300 * 128,
        };
        let r = UsageReport {
            since_s: 3600,
            until_s: 7200,
            prices: Prices::default(),
            functions: vec![("f".into(), t.clone())],
            total: t,
        };
        let v = to_json(&r);
        assert_eq!(v["since"], 3600);
        assert_eq!(v["freeTier"]["requestsPerMonth"], 1_000_000);
        assert_eq!(v["prices"]["perMillionRequests"], 0.2);
        let f = &v["functions"][0];
        assert_eq!(f["functionName"], "f");
        assert_eq!(f["requests"], 2);
        assert_eq!(f["throttles"], 3);
        assert_eq!(f["gbSeconds"], 0.0375);
        assert_eq!(f["costAfterFreeTier"], 0.0);
        assert_eq!(v["total"]["billedDurationMs"], 300);
        let cost = v["total"]["cost"].as_f64().unwrap();
        assert!((cost - (2.0 * 0.2 / 1e6 + 0.0375 * 0.0000166667)).abs() < 1e-15);
    }
}
