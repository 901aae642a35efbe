//! `nimbus-bench auth`: the per-request cost of authentication and policy
//! evaluation, measured in-process on one thread (no server, no I/O):
//!
//! - SigV4 verification (`nimbus_auth::verify`) of a Lambda Invoke request
//!   signed once with `nimbus_auth::sign_request`;
//! - IAM policy evaluation (`nimbus_policy::evaluate`) of a realistic
//!   10-statement policy, on the allow path, the implicit-deny path (every
//!   statement looked at) and the explicit-deny path;
//! - a request context as the API builds one per request;
//! - parsing that policy (done when a policy is stored, not per request).
//!
//! Each operation runs in a tight loop timed with `Instant`, for about
//! `--seconds` per round, five rounds; the report gives the median and the
//! fastest round in ns per operation.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use chrono::{DateTime, NaiveDateTime, Utc};
use nimbus_auth::{Credential, KeyStore, PathMode, RequestParts, payload_sha256, verify};
use nimbus_policy::{Context, Decision, Policy, Principal, Request, evaluate};

const ACCOUNT: &str = "111122223333";
const ROUNDS: usize = 5;

/// The identity policy of a typical function's role: logs, its data, its
/// queue, the functions it calls, secrets, two guard-rail denies.
const POLICY: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {"Sid": "CreateLogGroup", "Effect": "Allow", "Action": "logs:CreateLogGroup",
     "Resource": "arn:aws:logs:us-east-1:111122223333:*"},
    {"Sid": "WriteLogs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
     "Resource": "arn:aws:logs:us-east-1:111122223333:log-group:/aws/lambda/*:*"},
    {"Sid": "ReadOwnData", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
     "Resource": "arn:aws:s3:::app-data/home/${aws:username}/*"},
    {"Sid": "Orders", "Effect": "Allow",
     "Action": ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem"],
     "Resource": ["arn:aws:dynamodb:us-east-1:111122223333:table/orders",
                  "arn:aws:dynamodb:us-east-1:111122223333:table/orders/index/*"],
     "Condition": {"ForAllValues:StringEquals": {"dynamodb:Attributes": ["id", "status", "total"]}}},
    {"Sid": "Queue", "Effect": "Allow", "Action": "sqs:SendMessage",
     "Resource": "arn:aws:sqs:us-east-1:111122223333:orders-*"},
    {"Sid": "CallFunctions", "Effect": "Allow", "Action": ["lambda:InvokeFunction", "lambda:GetFunction"],
     "Resource": "arn:aws:lambda:us-east-1:111122223333:function:orders-*",
     "Condition": {"StringEquals": {"aws:RequestedRegion": "us-east-1"},
                   "IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "192.168.0.0/16"]}}},
    {"Sid": "Decrypt", "Effect": "Allow", "Action": "kms:Decrypt",
     "Resource": "arn:aws:kms:us-east-1:111122223333:key/*",
     "Condition": {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}},
    {"Sid": "Parameters", "Effect": "Allow", "Action": ["ssm:GetParameter", "ssm:GetParameters"],
     "Resource": "arn:aws:ssm:us-east-1:111122223333:parameter/orders/*"},
    {"Sid": "NoDeletes", "Effect": "Deny", "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"],
     "Resource": "*"},
    {"Sid": "TlsOnly", "Effect": "Deny", "Action": "*", "Resource": "*",
     "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
  ]
}"#;

struct Keys;

impl KeyStore for Keys {
    fn lookup(&self, access_key_id: &str) -> Option<Credential> {
        (access_key_id == "AKIDBENCHMARK0000000").then(|| Credential {
            secret_access_key: "bench/secret/key/0000000000000000000000".into(),
            session_token: None,
            principal: format!("arn:aws:iam::{ACCOUNT}:user/bench"),
        })
    }
}

/// Runs `op` in a loop for about `per_round` five times; ns per call,
/// (median, fastest).
fn measure(per_round: Duration, mut op: impl FnMut()) -> (f64, f64, u64) {
    // Calibrate: how many calls fill a tenth of a round.
    let mut n: u64 = 1;
    loop {
        let t = Instant::now();
        for _ in 0..n {
            op();
        }
        if t.elapsed() >= per_round / 10 || n >= 1 << 40 {
            break;
        }
        n *= 2;
    }
    let iterations = n * 10;
    let mut per_op: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iterations {
                op();
            }
            t.elapsed().as_nanos() as f64 / iterations as f64
        })
        .collect();
    per_op.sort_by(f64::total_cmp);
    (per_op[ROUNDS / 2], per_op[0], iterations)
}

/// The benchmark; prints a Markdown table.
pub(crate) fn run(seconds: f64) -> anyhow::Result<()> {
    ensure!(seconds > 0.0, "--seconds must be positive");
    let per_round = Duration::from_secs_f64(seconds);
    let mut rows: Vec<(&str, (f64, f64, u64))> = Vec::new();

    // (a) SigV4: a Lambda Invoke as the AWS SDKs send it.
    let amz_date = "20250601T120000Z";
    let now: DateTime<Utc> = NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ")?.and_utc();
    let body = br#"{"order_id": "o-12345", "action": "ship", "items": [1, 2, 3]}"#;
    let hash = payload_sha256(body);
    let unsigned = [
        ("host", "127.0.0.1:9070"),
        ("content-type", "application/json"),
        ("x-amz-invocation-type", "RequestResponse"),
        ("user-agent", "aws-sdk-rust/1.3 os/linux lang/rust/1.85"),
    ];
    let parts = RequestParts {
        method: "POST",
        path: "/2015-03-31/functions/orders-api/invocations",
        query: "",
        headers: &unsigned,
        payload_hash: &hash,
    };
    let added = nimbus_auth::sign_request(
        &parts,
        "AKIDBENCHMARK0000000",
        "bench/secret/key/0000000000000000000000",
        "us-east-1",
        "lambda",
        amz_date,
    );
    let mut headers: Vec<(&str, &str)> = unsigned.to_vec();
    headers.extend(added.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let signed = RequestParts {
        headers: &headers,
        ..parts
    };
    let ok = verify(&signed, PathMode::Normalized, now, &Keys).context("the signed request")?;
    ensure!(ok.service == "lambda", "verified as {}", ok.service);
    eprintln!("measuring SigV4 verify ...");
    rows.push((
        "SigV4 verify (Lambda Invoke, header auth)",
        measure(per_round, || {
            let r = verify(
                black_box(&signed),
                PathMode::Normalized,
                black_box(now),
                &Keys,
            );
            black_box(r.is_ok());
        }),
    ));

    // (b) Policy evaluation.
    let policy = Policy::parse_identity(POLICY).context("the benchmark policy")?;
    let who = Principal::from_arn(&format!(
        "arn:aws:sts::{ACCOUNT}:assumed-role/orders-role/orders-api"
    ));
    let ctx = Context::new()
        .with("aws:SourceIp", "10.1.2.3")
        .with("aws:SecureTransport", "true")
        .with("aws:RequestedRegion", "us-east-1");
    let function = format!("arn:aws:lambda:us-east-1:{ACCOUNT}:function:orders-billing");
    let cases = [
        (
            "evaluate, Allow (statement 6 of 10, 2 conditions)",
            "lambda:InvokeFunction",
            function.as_str(),
            Decision::Allow,
        ),
        (
            "evaluate, implicit deny (no statement applies)",
            "iam:CreateUser",
            "*",
            Decision::ImplicitDeny,
        ),
        (
            "evaluate, explicit deny (a Deny applies)",
            "s3:DeleteObject",
            "arn:aws:s3:::app-data/home/x/y",
            Decision::ExplicitDeny,
        ),
    ];
    for (label, action, resource, want) in cases {
        let req = Request {
            principal: &who,
            action,
            resource,
            context: &ctx,
        };
        let got = evaluate(&[&policy], None, &req);
        ensure!(got == want, "{label}: {got:?}, expected {want:?}");
        eprintln!("measuring {label} ...");
        rows.push((
            label,
            measure(per_round, || {
                black_box(evaluate(black_box(&[&policy]), None, black_box(&req)));
            }),
        ));
    }
    eprintln!("measuring the request context ...");
    rows.push((
        "request context (Context::new + 3 keys)",
        measure(per_round, || {
            let ctx = Context::new()
                .with("aws:SourceIp", black_box("10.1.2.3"))
                .with("aws:SecureTransport", "true")
                .with("aws:RequestedRegion", "us-east-1");
            black_box(ctx);
        }),
    ));
    eprintln!("measuring policy parsing ...");
    rows.push((
        "Policy::parse_identity of the 10-statement policy (once per stored policy)",
        measure(per_round, || {
            black_box(Policy::parse_identity(black_box(POLICY)).is_ok());
        }),
    ));

    println!("nimbus-bench auth: single thread, {ROUNDS} rounds of ~{seconds} s per operation\n");
    println!("| operation | ns/op (median) | ns/op (fastest round) | calls per round |");
    println!("|---|---:|---:|---:|");
    for (label, (median, min, n)) in rows {
        println!("| {label} | {median:.0} | {min:.0} | {n} |");
    }
    Ok(())
}
