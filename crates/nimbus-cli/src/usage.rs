//! `nimbus usage`: requests, GB-seconds and their cost, per function and in
//! total, from the server's `GET /_nimbus/usage` (nimbus's own API, signed
//! with SigV4 for service `nimbus` like any AWS request).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use nimbus_lambda::Prices;
use serde_json::Value;

use crate::client::{self, Connection};

#[derive(Debug, clap::Args)]
pub(crate) struct UsageArgs {
    /// Only the last HOURS hours (usage is kept per hour, so the first hour
    /// is counted whole) [default: since the start of this UTC month].
    #[arg(long, value_name = "HOURS")]
    since: Option<u64>,
    /// Only this function.
    #[arg(long, value_name = "NAME")]
    function: Option<String>,
    /// Print the server's JSON answer instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Connection,
}

pub(crate) async fn usage(a: UsageArgs) -> Result<ExitCode> {
    let mut query = Vec::new();
    if let Some(h) = a.since {
        let hours = i64::try_from(h).unwrap_or(i64::MAX / 7200);
        let since = chrono::Utc::now().timestamp() - hours.saturating_mul(3600);
        query.push(format!("since={since}"));
    }
    if let Some(f) = &a.function {
        query.push(format!("function={}", nimbus_auth::uri_encode(f, false)));
    }
    let report = signed_get(&a.conn, "/_nimbus/usage", &query.join("&")).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// The price table of `nimbus serve --price-per-million-requests /
/// --price-per-gb-second`: finite and not negative.
pub(crate) fn prices(per_million_requests: f64, per_gb_second: f64) -> Result<Prices> {
    for (flag, v) in [
        ("--price-per-million-requests", per_million_requests),
        ("--price-per-gb-second", per_gb_second),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            bail!("{flag} {v}: expected a price in dollars, 0 or more");
        }
    }
    Ok(Prices {
        per_million_requests,
        per_gb_second,
    })
}

/// At shutdown, gives the usage writer (which ends once the service, the
/// last sender, is dropped) a few seconds to commit what it was sent. An
/// async invocation still holding a sender must not hang the exit, so this
/// polls instead of joining.
pub(crate) async fn wait_for_writer(writer: &std::thread::JoinHandle<()>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !writer.is_finished() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if !writer.is_finished() {
        tracing::warn!("usage writer still busy at exit; the last invocations may be unrecorded");
    }
}

/// A GET of nimbus's own API, SigV4-signed for service `nimbus` with the
/// credentials and endpoint the other client commands use; the JSON body of
/// a 200, or the server's error as `Code: message`.
async fn signed_get(conn: &Connection, path: &str, query: &str) -> Result<Value> {
    signed_request(conn, "GET", path, query, b"").await
}

/// A SigV4-signed request (service `nimbus`) to nimbus's own API; the
/// JSON answer, or the error it gave as one line.
pub(crate) async fn signed_request(
    conn: &Connection,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
) -> Result<Value> {
    let endpoint = client::endpoint(conn);
    let uri: http::Uri = endpoint
        .parse()
        .with_context(|| format!("endpoint {endpoint}"))?;
    if uri.scheme_str() != Some("http") {
        bail!("endpoint {endpoint}: nimbus speaks plain http only");
    }
    let authority = uri
        .authority()
        .with_context(|| format!("endpoint {endpoint} has no host"))?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let creds = client::credentials(conn)?;
    let region = client::region();
    let payload_hash = nimbus_auth::payload_sha256(body);
    let mut headers: Vec<(&str, &str)> = vec![
        ("host", authority.as_str()),
        ("x-amz-content-sha256", &payload_hash),
    ];
    if let Some(token) = creds.session_token() {
        headers.push(("x-amz-security-token", token));
    }
    let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let parts = nimbus_auth::RequestParts {
        method,
        path,
        query,
        headers: &headers,
        payload_hash: &payload_hash,
    };
    let auth = nimbus_auth::sign_request(
        &parts,
        creds.access_key_id(),
        creds.secret_access_key(),
        &region,
        "nimbus",
        &amz_date,
    );
    let target = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    let mut req = http::Request::builder().method(method).uri(target);
    for (k, v) in headers.iter().copied() {
        req = req.header(k, v);
    }
    for (k, v) in &auth {
        req = req.header(k.as_str(), v.as_str());
    }
    if !body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(Full::new(Bytes::copy_from_slice(body)))?;

    let exchange = async {
        let stream = tokio::net::TcpStream::connect((authority.host(), port))
            .await
            .with_context(|| format!("connecting to {endpoint}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let error_type = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, error_type, body))
    };
    let (status, error_type, body) = tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .with_context(|| format!("{endpoint} did not answer within 60 s"))??;
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    if !status.is_success() {
        let message = json
            .as_ref()
            .and_then(|v| v["message"].as_str())
            .map_or_else(
                || String::from_utf8_lossy(&body).into_owned(),
                str::to_string,
            );
        bail!(
            "{}: {message} (HTTP {status})",
            error_type.as_deref().unwrap_or("Error")
        );
    }
    json.with_context(|| format!("{endpoint}{path}: the answer is not JSON"))
}

/// 1234567 as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn dollars(v: &Value) -> String {
    format!("${:.6}", v.as_f64().unwrap_or(0.0))
}

fn when(v: &Value) -> String {
    chrono::DateTime::from_timestamp(v.as_i64().unwrap_or(0), 0)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M UTC")
        .to_string()
}

/// The report as a table, per function then in total, with the free tier
/// on its own lines.
fn table(r: &Value) -> String {
    let n = |v: &Value, k: &str| thousands(v[k].as_u64().unwrap_or(0));
    let empty = Vec::new();
    let functions = r["functions"].as_array().unwrap_or(&empty);
    let width = functions
        .iter()
        .filter_map(|f| f["functionName"].as_str())
        .map(str::len)
        .max()
        .unwrap_or(0)
        .max("FUNCTION".len());
    let mut out = format!(
        "Usage from {} to {}\nPrices: ${} per 1M requests, ${} per GB-second\n\n",
        when(&r["since"]),
        when(&r["until"]),
        r["prices"]["perMillionRequests"],
        r["prices"]["perGbSecond"],
    );
    let row = |name: &str, v: &Value| {
        format!(
            "{name:<width$}  {:>12}  {:>8}  {:>9}  {:>16.6}  {:>14}\n",
            n(v, "requests"),
            n(v, "errors"),
            n(v, "throttles"),
            v["gbSeconds"].as_f64().unwrap_or(0.0),
            dollars(&v["cost"]),
        )
    };
    out += &format!(
        "{:<width$}  {:>12}  {:>8}  {:>9}  {:>16}  {:>14}\n",
        "FUNCTION", "REQUESTS", "ERRORS", "THROTTLES", "GB-SECONDS", "COST"
    );
    for f in functions {
        out += &row(f["functionName"].as_str().unwrap_or("?"), f);
    }
    let total = &r["total"];
    out += &row("TOTAL", total);
    out += &format!(
        "\nFree tier (each month: {} requests and {} GB-seconds):\n  \
         covers {} requests and {:.6} GB-seconds of this usage: -{}\n",
        n(&r["freeTier"], "requestsPerMonth"),
        n(&r["freeTier"], "gbSecondsPerMonth"),
        n(total, "freeTierRequests"),
        total["freeTierGbSeconds"].as_f64().unwrap_or(0.0),
        dollars(&total["freeTierCredit"]),
    );
    out += &format!(
        "Cost before free tier: {}\nCost after free tier:  {}\n",
        dollars(&total["cost"]),
        dollars(&total["costAfterFreeTier"]),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_must_be_dollars() {
        assert_eq!(prices(0.2, 0.0000166667).unwrap().per_million_requests, 0.2);
        assert!(prices(0.0, 0.0).is_ok(), "free is a price");
        assert!(prices(-1.0, 0.1).is_err());
        assert!(prices(0.2, f64::NAN).is_err());
        assert!(prices(f64::INFINITY, 0.1).is_err());
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn the_table_has_a_row_per_function_a_total_and_the_free_tier() {
        let totals = serde_json::json!({
            "requests": 1_500_000, "errors": 2, "throttles": 3, "gbSeconds": 0.375,
            "cost": 0.30000625, "freeTierRequests": 1_000_000, "freeTierGbSeconds": 0.375,
            "freeTierCredit": 0.20000625, "costAfterFreeTier": 0.1,
        });
        let mut f = totals.clone();
        f["functionName"] = "hello-world".into();
        let r = serde_json::json!({
            "since": 1_704_067_200, "until": 1_704_070_800,
            "prices": {"perMillionRequests": 0.2, "perGbSecond": 0.0000166667},
            "freeTier": {"requestsPerMonth": 1_000_000, "gbSecondsPerMonth": 400_000},
            "functions": [f], "total": totals,
        });
        let t = table(&r);
        assert!(
            t.contains("Usage from 2024-01-01 00:00 UTC to 2024-01-01 01:00 UTC"),
            "{t}"
        );
        assert!(
            t.contains("$0.2 per 1M requests, $0.0000166667 per GB-second"),
            "{t}"
        );
        let line = t.lines().find(|l| l.starts_with("hello-world")).unwrap();
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "hello-world",
                "1,500,000",
                "2",
                "3",
                "0.375000",
                "$0.300006"
            ]
        );
        assert!(t.lines().any(|l| l.starts_with("TOTAL ")), "{t}");
        assert!(
            t.contains("1,000,000 requests and 400,000 GB-seconds"),
            "{t}"
        );
        assert!(
            t.contains(
                "covers 1,000,000 requests and 0.375000 GB-seconds of this usage: -$0.200006"
            ),
            "{t}"
        );
        assert!(t.contains("Cost before free tier: $0.300006\n"), "{t}");
        assert!(t.contains("Cost after free tier:  $0.100000\n"), "{t}");
    }
}
