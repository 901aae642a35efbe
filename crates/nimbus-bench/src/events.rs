//! `nimbus-bench events`: event delivery latency, from an S3 upload to the
//! start of the handler its bucket notification triggers, through the
//! durable asynchronous queue, beside a floor measured in the same run: a
//! synchronous (RequestResponse) invoke of the same warm function, which
//! any delivery must at least cost.
//!
//! The handler prints `time.time_ns()` as its first act; the harness
//! notes the wall clock just before sending each PutObject and reads the
//! handler's line back from CloudWatch Logs (and reports the time from
//! PutObject's answer too: the upload itself is durable, fsynced, before
//! that answer). Both clocks are this host's
//! CLOCK_REALTIME. Uploads are one at a time, each waiting for the
//! previous delivery, so the figure is latency, not queueing.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use http::{Method, StatusCode};

use crate::bench::{create_function, create_role, invoke_path};
use crate::client::Conn;
use crate::fixtures::zip;
use crate::procs::{Server, TempServer, emit, nimbus_binary};
use crate::report::host;
use crate::stats::Samples;

const BUCKET: &str = "events-bench";
const FUNCTION: &str = "on-upload";

/// The triggered function: its first act is to note the time.
const HANDLER: &str = "import time\n\n\ndef handler(event, context):\n    \
    t = time.time_ns()\n    \
    for r in event.get('Records', []):\n        \
    print('DELIVERED', r['s3']['object']['key'], t)\n";

/// Options of `nimbus-bench events`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct EventsArgs {
    /// Uploads measured (after one that warms the function up).
    #[arg(long, default_value_t = 100)]
    uploads: usize,
    /// Synchronous invokes measured for the floor.
    #[arg(long, default_value_t = 200)]
    invokes: usize,
    /// The nimbus binary [default: `nimbus` next to this executable].
    #[arg(long, value_name = "PATH")]
    nimbus: Option<PathBuf>,
    /// Python runtime id of the triggered function.
    #[arg(long, value_name = "ID", default_value = "python3.11")]
    python_runtime: String,
    /// MemorySize of the triggered function (1769 MB: one full vCPU).
    #[arg(long, value_name = "MB", default_value_t = 1769)]
    memory_size: u32,
    /// Extra argument for `nimbus serve` (repeatable).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    serve_arg: Vec<String>,
    /// Also write the report to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

fn progress(msg: impl std::fmt::Display) {
    eprintln!("[nimbus-bench events] {msg}");
}

pub(crate) fn run(a: EventsArgs) -> Result<()> {
    ensure!(
        a.uploads > 0 && a.invokes > 0,
        "--uploads and --invokes must be positive"
    );
    let nimbus = nimbus_binary(a.nimbus.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let text = rt.block_on(async {
        let server = TempServer::start(&nimbus, "nimbus-bench-events-", &a.serve_arg)?;
        let result = measure(&a, &server.server).await;
        server.finish(result)
    })?;
    emit(&text, a.out.as_deref())
}

fn expect_ok(what: &str, status: StatusCode, body: String) -> Result<()> {
    if !status.is_success() {
        bail!("{what}: HTTP {status}: {body}");
    }
    Ok(())
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// The function, its permission for S3, the bucket and its notification.
async fn wire(a: &EventsArgs, conn: &mut Conn) -> Result<()> {
    create_role(conn).await?;
    // The handler's line is read back from its logs: the role may write them.
    let r = conn
        .iam_action(
            "Action=AttachRolePolicy&RoleName=r&PolicyArn=arn%3Aaws%3Aiam%3A%3Aaws%3Apolicy%2Fservice-role%2FAWSLambdaBasicExecutionRole",
        )
        .await?;
    expect_ok("AttachRolePolicy", r.status, r.text())?;
    let code = zip(&[("lambda_function.py", HANDLER.as_bytes(), 0o644)])?;
    create_function(
        conn,
        FUNCTION,
        &a.python_runtime,
        "lambda_function.handler",
        &code,
        a.memory_size,
    )
    .await?;
    let permission = serde_json::json!({
        "StatementId": "s3",
        "Action": "lambda:InvokeFunction",
        "Principal": "s3.amazonaws.com",
        "SourceArn": format!("arn:aws:s3:::{BUCKET}"),
    });
    let r = conn
        .send(
            Method::POST,
            &format!("/2015-03-31/functions/{FUNCTION}/policy"),
            &[],
            permission.to_string().into(),
        )
        .await?;
    expect_ok("AddPermission", r.status, r.text())?;
    let r = conn
        .s3(Method::PUT, &format!("/{BUCKET}"), Bytes::new())
        .await?;
    expect_ok("CreateBucket", r.status, r.text())?;
    let notification = format!(
        "<NotificationConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <CloudFunctionConfiguration><Id>bench</Id>\
         <CloudFunction>arn:aws:lambda:us-east-1:000000000000:function:{FUNCTION}</CloudFunction>\
         <Event>s3:ObjectCreated:*</Event></CloudFunctionConfiguration>\
         </NotificationConfiguration>"
    );
    let r = conn
        .s3(
            Method::PUT,
            &format!("/{BUCKET}?notification"),
            notification.into(),
        )
        .await?;
    expect_ok("PutBucketNotificationConfiguration", r.status, r.text())
}

/// Waits for the handler's `DELIVERED key <ns>` line; its time.
async fn handler_start(logs: &mut Conn, key: &str) -> Result<i64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let wanted = format!("DELIVERED {key} ");
    loop {
        let body = serde_json::json!({
            "logGroupName": format!("/aws/lambda/{FUNCTION}"),
            "filterPattern": format!("\"{wanted}\""),
        });
        let r = logs.logs_action("FilterLogEvents", body).await?;
        if r.status == StatusCode::OK {
            let v: serde_json::Value = serde_json::from_slice(&r.body)?;
            for e in v["events"].as_array().into_iter().flatten() {
                let msg = e["message"].as_str().unwrap_or_default();
                if let Some(rest) = msg.trim().strip_prefix(&wanted) {
                    return rest.trim().parse().context("the handler's time");
                }
            }
        }
        ensure!(
            Instant::now() < deadline,
            "no delivery of {key} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn measure(a: &EventsArgs, server: &Server) -> Result<String> {
    let addr = server.addr()?;
    let mut conn = Conn::connect(addr).await?;
    let mut logs = Conn::connect(addr).await?;
    wire(a, &mut conn).await?;
    let body = Bytes::from(vec![b'x'; 4096]);

    progress("warming up: one upload (a cold start)");
    let r = conn
        .s3(Method::PUT, &format!("/{BUCKET}/warm"), body.clone())
        .await?;
    expect_ok("PutObject", r.status, r.text())?;
    handler_start(&mut logs, "warm").await?;

    progress(format!("{} uploads, one at a time", a.uploads));
    let mut delivery = Vec::with_capacity(a.uploads);
    let mut after_answer = Vec::with_capacity(a.uploads);
    let mut put = Vec::with_capacity(a.uploads);
    for i in 0..a.uploads {
        let key = format!("k-{i}");
        let sent = now_ns();
        let t = Instant::now();
        let r = conn
            .s3(Method::PUT, &format!("/{BUCKET}/{key}"), body.clone())
            .await?;
        let answered = now_ns();
        put.push(t.elapsed().as_nanos() as u64);
        expect_ok("PutObject", r.status, r.text())?;
        let started = handler_start(&mut logs, &key).await?;
        delivery.push((started - sent) as f64 / 1e6);
        after_answer.push((started - answered) as f64 / 1e6);
    }

    progress(format!("floor: {} synchronous invokes", a.invokes));
    let mut invoke = Vec::with_capacity(a.invokes);
    let event = br#"{"Records": []}"#;
    for _ in 0..a.invokes {
        let t = Instant::now();
        let r = conn
            .send(
                Method::POST,
                &invoke_path(FUNCTION),
                &[],
                Bytes::from_static(event),
            )
            .await?;
        invoke.push(t.elapsed().as_nanos() as u64);
        expect_ok("Invoke", r.status, r.text())?;
    }

    let delivery = Samples::new(delivery);
    let after_answer = Samples::new(after_answer);
    let put = Samples::from_nanos(&put);
    let invoke = Samples::from_nanos(&invoke);
    let ms = |s: &Samples, p: f64| s.pct(p).unwrap_or(f64::NAN);
    let mut t = String::new();
    t.push_str(&format!(
        "## Event delivery (`nimbus-bench events`)\n\nHost: {}\n\n",
        host()
    ));
    t.push_str("| measurement | p50 | p99 |\n|---|---|---|\n");
    t.push_str(&format!(
        "| upload to handler start (S3 notification, async queue) | {:.2} ms | {:.2} ms |\n",
        ms(&delivery, 50.0),
        ms(&delivery, 99.0)
    ));
    t.push_str(&format!(
        "| PutObject answered to handler start | {:.2} ms | {:.2} ms |\n",
        ms(&after_answer, 50.0),
        ms(&after_answer, 99.0)
    ));
    t.push_str(&format!(
        "| PutObject 4 KiB round trip (within the first row) | {:.2} ms | {:.2} ms |\n",
        ms(&put, 50.0),
        ms(&put, 99.0)
    ));
    t.push_str(&format!(
        "| floor: synchronous Invoke round trip, same warm function | {:.2} ms | {:.2} ms |\n",
        ms(&invoke, 50.0),
        ms(&invoke, 99.0)
    ));
    t.push_str(&format!(
        "\ndelivery p50 / floor p50: {:.2}x; {} uploads of 4 KiB one at a time, {} invokes; \
         function {} MB ({}).\n",
        ms(&delivery, 50.0) / ms(&invoke, 50.0),
        delivery.len(),
        invoke.len(),
        a.memory_size,
        a.python_runtime
    ));
    Ok(t)
}
