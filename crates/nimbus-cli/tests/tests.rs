//! End-to-end tests of the `nimbus` binary driven by the official AWS SDK
//! for Rust (`aws-sdk-lambda`, `aws-sdk-cloudwatchlogs`) and by nimbus's own
//! CLI: a real server process on a free port with a fresh data directory.

mod support;

use std::time::Duration;

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{FunctionCode, LogType, Runtime, State};
use support::{Server, hello_world_zip, log_tail, service_code, zip_of};

const ROLE: &str = "arn:aws:iam::000000000000:role/lambda-role";

/// A CreateFunction call for a Python function, ready to send or adjust.
fn python_function(
    lambda: &aws_sdk_lambda::Client,
    name: &str,
    handler: &str,
    zip: Vec<u8>,
) -> aws_sdk_lambda::operation::create_function::builders::CreateFunctionFluentBuilder {
    lambda
        .create_function()
        .function_name(name)
        .runtime(Runtime::from(support::python_runtime().as_str()))
        .role(ROLE)
        .handler(handler)
        .code(FunctionCode::builder().zip_file(Blob::new(zip)).build())
}

async fn create_hello(server: &Server, name: &str) {
    python_function(
        &server.lambda(),
        name,
        "lambda_function.lambda_handler",
        hello_world_zip(),
    )
    .send()
    .await
    .expect("create_function");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_course_flow_hello_world_succeeds_then_fails_like_lambda() {
    let server = Server::start().await;
    let lambda = server.lambda();
    let created = python_function(
        &lambda,
        "demo-function",
        "lambda_function.lambda_handler",
        hello_world_zip(),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(
        created.function_arn(),
        Some("arn:aws:lambda:us-east-1:000000000000:function:demo-function")
    );
    assert_eq!(created.state(), Some(&State::Active));
    assert_eq!(created.memory_size(), Some(128));
    assert_eq!(created.timeout(), Some(3));

    let ok = lambda
        .invoke()
        .function_name("demo-function")
        .payload(Blob::new(
            r#"{"key1": "value1", "key2": "value2", "key3": "value3"}"#,
        ))
        .log_type(LogType::Tail)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status_code(), 200);
    assert_eq!(ok.function_error(), None);
    assert_eq!(ok.payload().unwrap().as_ref(), br#""value1""#);
    assert_eq!(ok.executed_version(), Some("$LATEST"));
    let log = log_tail(&ok);
    let lines: Vec<&str> = log.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with("START RequestId: "))
        .expect("START line");
    assert!(
        lines[..start].contains(&"Loading function"),
        "module import output precedes START: {log}"
    );
    assert!(lines[start].ends_with("Version: $LATEST"));
    assert_eq!(
        &lines[start + 1..start + 4],
        ["value1 = value1", "value2 = value2", "value3 = value3"]
    );
    assert!(lines[start + 4].starts_with("END RequestId: "));
    let report = lines[start + 5];
    for field in [
        "Duration: ",
        "Billed Duration: ",
        "Memory Size: 128 MB",
        "Max Memory Used: ",
        "Init Duration: ",
    ] {
        assert!(report.contains(field), "REPORT lacks {field}: {report}");
    }
    let used: u64 = report
        .split("Max Memory Used: ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(used > 1, "memory is measured: {report}");

    let failed = lambda
        .invoke()
        .function_name("demo-function")
        .payload(Blob::new(r#"{"key2": "value2", "key3": "value3"}"#))
        .log_type(LogType::Tail)
        .send()
        .await
        .unwrap();
    assert_eq!(
        failed.status_code(),
        200,
        "a function error keeps status 200"
    );
    assert_eq!(failed.function_error(), Some("Unhandled"));
    let body: serde_json::Value =
        serde_json::from_slice(failed.payload().unwrap().as_ref()).unwrap();
    assert_eq!(body["errorMessage"], "'key1'");
    assert_eq!(body["errorType"], "KeyError");
    assert_eq!(body["requestId"].as_str().map(str::len), Some(36));
    let trace = body["stackTrace"].as_array().unwrap();
    assert_eq!(trace.len(), 1, "only the handler's frame: {trace:?}");
    let frame = trace[0].as_str().unwrap();
    assert!(
        frame.contains("lambda_function.py\", line 8, in lambda_handler"),
        "{frame}"
    );
    assert!(
        frame.contains(r#"print("value1 = " + event['key1'])"#),
        "{frame}"
    );
    let log = log_tail(&failed);
    assert!(log.contains("[ERROR] KeyError: 'key1'"), "{log}");
    assert!(
        !log.contains("Init Duration"),
        "a warm invoke reports no Init Duration: {log}"
    );
    assert!(
        !log.contains("Loading function"),
        "the module is imported once per environment: {log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn control_plane_round_trips_and_errors_carry_aws_codes() {
    let server = Server::start().await;
    let lambda = server.lambda();
    create_hello(&server, "alpha").await;
    create_hello(&server, "beta").await;

    let dup = python_function(
        &lambda,
        "alpha",
        "lambda_function.lambda_handler",
        hello_world_zip(),
    )
    .send()
    .await
    .unwrap_err();
    assert_eq!(service_code(&dup), "ResourceConflictException");

    let page1 = lambda.list_functions().max_items(1).send().await.unwrap();
    assert_eq!(page1.functions().len(), 1);
    assert_eq!(page1.functions()[0].function_name(), Some("alpha"));
    let page2 = lambda
        .list_functions()
        .max_items(1)
        .marker(page1.next_marker().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(page2.functions()[0].function_name(), Some("beta"));
    assert!(page2.next_marker().is_none());

    let updated = lambda
        .update_function_configuration()
        .function_name("arn:aws:lambda:us-east-1:000000000000:function:alpha")
        .memory_size(512)
        .timeout(10)
        .description("changed")
        .send()
        .await
        .unwrap();
    assert_eq!(updated.memory_size(), Some(512));
    let got = lambda
        .get_function_configuration()
        .function_name("000000000000:function:alpha")
        .send()
        .await
        .unwrap();
    assert_eq!(got.timeout(), Some(10));
    assert_eq!(got.description(), Some("changed"));
    assert_eq!(got.revision_id(), updated.revision_id());

    let stale = lambda
        .update_function_configuration()
        .function_name("alpha")
        .memory_size(256)
        .revision_id("not-the-current-revision")
        .send()
        .await
        .unwrap_err();
    assert_eq!(service_code(&stale), "PreconditionFailedException");

    let too_big = lambda
        .update_function_configuration()
        .function_name("alpha")
        .memory_size(10_241)
        .send()
        .await
        .unwrap_err();
    assert_eq!(service_code(&too_big), "ValidationException");
    let bad_runtime = lambda
        .update_function_configuration()
        .function_name("alpha")
        .runtime(Runtime::from("python3.99"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(service_code(&bad_runtime), "InvalidParameterValueException");

    let traversal = lambda
        .update_function_code()
        .function_name("alpha")
        .zip_file(Blob::new(zip_of(&[("../escape.py", b"x = 1\n", 0o644)])))
        .send()
        .await
        .unwrap_err();
    assert_eq!(service_code(&traversal), "InvalidParameterValueException");

    let settings = lambda.get_account_settings().send().await.unwrap();
    assert_eq!(settings.account_usage().unwrap().function_count(), 2);
    assert_eq!(
        settings.account_limit().unwrap().code_size_zipped(),
        52_428_800
    );

    lambda
        .delete_function()
        .function_name("alpha")
        .send()
        .await
        .unwrap();
    let gone = lambda
        .get_function()
        .function_name("alpha")
        .send()
        .await
        .unwrap_err();
    assert_eq!(service_code(&gone), "ResourceNotFoundException");
    let gone = lambda
        .invoke()
        .function_name("alpha")
        .send()
        .await
        .unwrap_err();
    assert_eq!(service_code(&gone), "ResourceNotFoundException");

    let big = vec![b' '; 6 * 1024 * 1024 + 1];
    let too_large = lambda
        .invoke()
        .function_name("beta")
        .payload(Blob::new(big))
        .send()
        .await
        .unwrap_err();
    assert_eq!(service_code(&too_large), "RequestTooLargeException");
    let not_json = lambda
        .invoke()
        .function_name("beta")
        .payload(Blob::new("{not json"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(service_code(&not_json), "InvalidRequestContentException");
}

#[tokio::test(flavor = "multi_thread")]
async fn timeouts_end_the_environment_and_the_next_invoke_starts_fresh() {
    let server = Server::start().await;
    let lambda = server.lambda();
    let code = zip_of(&[(
        "app.py",
        b"import time\ndef handler(event, context):\n    time.sleep(event.get('sleep', 0))\n    return context.log_stream_name\n",
        0o644,
    )]);
    python_function(&lambda, "sleepy", "app.handler", code)
        .timeout(1)
        .send()
        .await
        .unwrap();
    let invoke = |payload: &'static str| {
        lambda
            .invoke()
            .function_name("sleepy")
            .payload(Blob::new(payload))
            .log_type(LogType::Tail)
            .send()
    };
    let first = invoke("{}").await.unwrap();
    // An environment is known by its log stream (jailed runtimes all see
    // themselves as the same pid).
    let env1: String = serde_json::from_slice(first.payload().unwrap().as_ref()).unwrap();
    let warm = invoke("{}").await.unwrap();
    let env_warm: String = serde_json::from_slice(warm.payload().unwrap().as_ref()).unwrap();
    assert_eq!(env1, env_warm, "a warm environment is reused");

    let started = std::time::Instant::now();
    let timed_out = invoke(r#"{"sleep": 5}"#).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the timeout is enforced"
    );
    assert_eq!(timed_out.function_error(), Some("Unhandled"));
    let body: serde_json::Value =
        serde_json::from_slice(timed_out.payload().unwrap().as_ref()).unwrap();
    assert_eq!(body["errorType"], "Sandbox.Timedout");
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .ends_with("Task timed out after 1.00 seconds"),
        "{body}"
    );
    let log = log_tail(&timed_out);
    assert!(log.contains("Task timed out after 1.00 seconds"), "{log}");
    assert!(log.contains("Status: timeout"), "{log}");

    let after = invoke("{}").await.unwrap();
    assert_eq!(after.function_error(), None);
    let env2: String = serde_json::from_slice(after.payload().unwrap().as_ref()).unwrap();
    assert_ne!(env1, env2, "the timed-out environment was destroyed");
    let log = log_tail(&after);
    assert!(
        log.contains("Init Duration"),
        "a fresh environment reports its init: {log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn functions_and_their_logs_survive_a_restart() {
    let mut server = Server::start().await;
    create_hello(&server, "keeper").await;
    let r = server
        .lambda()
        .invoke()
        .function_name("keeper")
        .payload(Blob::new(r#"{"key1":"a","key2":"b","key3":"c"}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(r.payload().unwrap().as_ref(), br#""a""#);
    server.restart().await;
    let r = server
        .lambda()
        .invoke()
        .function_name("keeper")
        .payload(Blob::new(r#"{"key1":"b","key2":"b","key3":"c"}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(r.payload().unwrap().as_ref(), br#""b""#);
    let logs = server.logs();
    let mut found = Vec::new();
    for _ in 0..50 {
        let out = logs
            .filter_log_events()
            .log_group_name("/aws/lambda/keeper")
            .send()
            .await
            .unwrap();
        found = out
            .events()
            .iter()
            .filter_map(|e| e.message().map(str::to_string))
            .collect();
        if found.iter().filter(|m| m.starts_with("REPORT")).count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        found.iter().filter(|m| m.starts_with("REPORT")).count(),
        2,
        "both invocations' logs are kept across the restart: {found:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_nimbus_cli_creates_invokes_and_reads_logs() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lambda_function.py"), support::HELLO_WORLD).unwrap();
    let run = |args: &[&str]| server.cli(args);
    let out = run(&[
        "function",
        "create",
        "cli-fn",
        "--code",
        dir.path().to_str().unwrap(),
        "--runtime",
        &support::python_runtime(),
        "--handler",
        "lambda_function.lambda_handler",
        "--env",
        "STAGE=test",
    ]);
    assert!(out.status.success(), "{out:?}");
    let out = run(&[
        "invoke",
        "cli-fn",
        "--payload",
        r#"{"key1":"v1","key2":"v2","key3":"v3"}"#,
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#""v1""#);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("REPORT RequestId"),
        "log tail on stderr"
    );
    let out = run(&["invoke", "cli-fn", "--payload", "{}"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a function error exits 1: {out:?}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("KeyError"));
    let out = run(&["function", "get", "cli-fn"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Environment    STAGE=test"),
        "{out:?}"
    );
    let out = run(&["function", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("cli-fn"));
    let mut logs = String::new();
    for _ in 0..50 {
        logs = String::from_utf8_lossy(&run(&["logs", "cli-fn"]).stdout).into_owned();
        if logs.matches("REPORT RequestId").count() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        logs.contains("value1 = v1") && logs.contains("[ERROR] KeyError"),
        "{logs}"
    );
    let out = run(&["function", "delete", "cli-fn"]);
    assert!(out.status.success());
    let out = run(&["invoke", "cli-fn"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ResourceNotFoundException"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_account_concurrency_limit_throttles_and_idle_environments_scale_to_zero() {
    let server = Server::start_with(&["--concurrency", "1", "--keep-alive", "1"]).await;
    let lambda = server.lambda();
    let code = zip_of(&[(
        "app.py",
        b"import time\ndef handler(event, context):\n    time.sleep(event.get('sleep', 0))\n    return 'done'\n",
        0o644,
    )]);
    python_function(&lambda, "single", "app.handler", code)
        .timeout(10)
        .send()
        .await
        .unwrap();
    let slow = {
        let lambda = lambda.clone();
        tokio::spawn(async move {
            lambda
                .invoke()
                .function_name("single")
                .payload(Blob::new(r#"{"sleep": 3}"#))
                .send()
                .await
        })
    };
    // Until the slow invocation holds the only slot, quick ones may still
    // get through; once it does, the next is throttled.
    let mut throttled = None;
    for _ in 0..25 {
        match lambda.invoke().function_name("single").send().await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => {
                throttled = Some(e);
                break;
            }
        }
    }
    let throttled = throttled.expect("an invocation beyond the limit is throttled");
    assert_eq!(service_code(&throttled), "TooManyRequestsException");
    match throttled.as_service_error() {
        Some(aws_sdk_lambda::operation::invoke::InvokeError::TooManyRequestsException(t)) => {
            assert_eq!(
                t.reason().map(|r| r.as_str()),
                Some("ConcurrentInvocationLimitExceeded")
            );
        }
        other => panic!("expected a throttle, got {other:?}"),
    }
    let finished = slow.await.unwrap().unwrap();
    assert_eq!(
        finished.payload().unwrap().as_ref(),
        br#""done""#,
        "the running invocation is unaffected"
    );

    // Warm now; after the keep-alive (1 s) the environment is reaped and the
    // next invoke is a cold start again.
    let warm = lambda
        .invoke()
        .function_name("single")
        .log_type(LogType::Tail)
        .send()
        .await
        .unwrap();
    let log = log_tail(&warm);
    assert!(!log.contains("Init Duration"), "reused while warm: {log}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let cold = lambda
        .invoke()
        .function_name("single")
        .log_type(LogType::Tail)
        .send()
        .await
        .unwrap();
    let log = log_tail(&cold);
    assert!(
        log.contains("Init Duration"),
        "idle environment was stopped: {log}"
    );
}

/// Sends one raw HTTP request to the server and returns status, error type
/// header and body.
async fn raw_request(
    url: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    stream.write_all(req.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
    let error_type = text
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("x-amzn-errortype")
                .then(|| value.to_string())
        })
        .unwrap_or_default();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, error_type.trim().to_string(), body)
}

/// Headers of a POST signed with `(key, secret)` for `region` at `amz_date`.
fn signed_headers(
    url: &str,
    path: &str,
    body: &[u8],
    (key, secret): (&str, &str),
    region: &str,
    amz_date: &str,
) -> Vec<(String, String)> {
    let method = "POST";
    let host = url.trim_start_matches("http://").to_string();
    let hash = nimbus_auth::payload_sha256(body);
    let base = [("host", host.as_str())];
    let parts = nimbus_auth::RequestParts {
        method,
        path,
        query: "",
        headers: &base,
        payload_hash: &hash,
    };
    let mut headers = vec![("host".to_string(), host.clone())];
    headers.extend(nimbus_auth::sign_request(
        &parts, key, secret, region, "lambda", amz_date,
    ));
    headers
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_is_authenticated_with_sigv4() {
    let server = Server::start().await;
    create_hello(&server, "guarded").await;
    let path = "/2015-03-31/functions/guarded/invocations";
    let body = br#"{"key1":"a","key2":"b","key3":"c"}"#;
    let now = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let (key, secret) = support::ROOT_KEYS;

    let good = signed_headers(&server.url, path, body, (key, secret), "us-east-1", &now);
    let (status, _, out) = raw_request(&server.url, "POST", path, &good, body).await;
    assert_eq!(
        (status, out.as_str()),
        (200, r#""a""#),
        "a correctly signed request runs"
    );

    let host = vec![(
        "host".to_string(),
        server.url.trim_start_matches("http://").to_string(),
    )];
    let (status, code, _) = raw_request(&server.url, "POST", path, &host, body).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "MissingAuthenticationTokenException")
    );

    let wrong_secret = signed_headers(
        &server.url,
        path,
        body,
        (key, "not-the-secret"),
        "us-east-1",
        &now,
    );
    let (status, code, _) = raw_request(&server.url, "POST", path, &wrong_secret, body).await;
    assert_eq!((status, code.as_str()), (403, "InvalidSignatureException"));

    let unknown = signed_headers(
        &server.url,
        path,
        body,
        ("AKIDUNKNOWN", secret),
        "us-east-1",
        &now,
    );
    let (status, code, _) = raw_request(&server.url, "POST", path, &unknown, body).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "UnrecognizedClientException")
    );

    let (status, code, _) = raw_request(
        &server.url,
        "POST",
        path,
        &good,
        br#"{"key1":"tampered!!!!!!!!!!!!!!!!"}"#,
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (403, "InvalidSignatureException"),
        "a changed body breaks the signature"
    );

    let old = (chrono::Utc::now() - chrono::Duration::minutes(20))
        .format("%Y%m%dT%H%M%SZ")
        .to_string();
    let stale = signed_headers(&server.url, path, body, (key, secret), "us-east-1", &old);
    let (status, code, msg) = raw_request(&server.url, "POST", path, &stale, body).await;
    assert_eq!((status, code.as_str()), (403, "InvalidSignatureException"));
    assert!(msg.contains("Signature expired"), "{msg}");

    let elsewhere = signed_headers(&server.url, path, body, (key, secret), "eu-west-1", &now);
    let (status, code, _) = raw_request(&server.url, "POST", path, &elsewhere, body).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "InvalidSignatureException"),
        "credentials scoped to another region"
    );

    // The SDK with a wrong secret gets the same, and the server goes on serving.
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&server.url)
        .credentials_provider(aws_credential_types::Credentials::new(
            key, "wrong", None, None, "test",
        ))
        .load()
        .await;
    let bad = aws_sdk_lambda::Client::new(&config)
        .list_functions()
        .send()
        .await
        .unwrap_err();
    assert_eq!(service_code(&bad), "InvalidSignatureException");
    assert_eq!(
        server
            .lambda()
            .list_functions()
            .send()
            .await
            .unwrap()
            .functions()
            .len(),
        1
    );
}

/// A handler that sleeps `event.sleep` seconds, or exits at once with
/// `event.crash`.
const SLEEPER: &[u8] = b"import os, time\ndef handler(event, context):\n    if event.get('crash'):\n        os._exit(3)\n    time.sleep(event.get('sleep', 0))\n    return 'ok'\n";

async fn create_sleeper(server: &Server, name: &str, memory_mb: i32, timeout_s: i32) {
    python_function(
        &server.lambda(),
        name,
        "app.handler",
        zip_of(&[("app.py", SLEEPER, 0o644)]),
    )
    .memory_size(memory_mb)
    .timeout(timeout_s)
    .send()
    .await
    .unwrap();
}

/// Invokes `name` with `payload`; returns the payload and whether the log
/// tail has Init Duration (a cold start).
async fn invoke_tail(lambda: &aws_sdk_lambda::Client, name: &str, payload: &str) -> (String, bool) {
    let out = lambda
        .invoke()
        .function_name(name)
        .payload(Blob::new(payload.to_string()))
        .log_type(LogType::Tail)
        .send()
        .await
        .unwrap();
    let body = String::from_utf8_lossy(out.payload().unwrap().as_ref()).into_owned();
    (body, log_tail(&out).contains("Init Duration"))
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_environments_scale_to_zero_and_give_back_their_memory() {
    let server = Server::start_with(&["--keep-alive", "1"]).await;
    create_sleeper(&server, "idler", 256, 30).await;
    let lambda = server.lambda();
    // Two invocations at once need two environments.
    let running: Vec<_> = (0..2)
        .map(|_| {
            let lambda = lambda.clone();
            tokio::spawn(async move { invoke_tail(&lambda, "idler", r#"{"sleep": 3}"#).await })
        })
        .collect();
    server
        .wait_for_environments(Duration::from_secs(30), "two busy environments", |e| {
            e.busy == 2 && e.reserved_mb == 512
        })
        .await;
    for r in running {
        assert_eq!(r.await.unwrap(), (r#""ok""#.to_string(), true));
    }
    // Idle for longer than the keep-alive (1 s), both are stopped and their
    // memory is given back once their processes are gone.
    let zero = server
        .wait_for_environments(Duration::from_secs(30), "scale to zero", |e| {
            e.live() == 0 && e.reserved_mb == 0
        })
        .await;
    assert_eq!(zero.evictions, 0, "reaped, not evicted: {zero:?}");
    let (_, cold) = invoke_tail(&lambda, "idler", "{}").await;
    assert!(
        cold,
        "after scaling to zero the next invoke is a cold start"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_memory_budget_evicts_least_recently_used_idle_environments_and_throttles_when_all_are_busy()
 {
    // Room for two 128 MB environments; nothing expires on its own.
    let server = Server::start_with(&["--memory-budget", "256", "--keep-alive", "600"]).await;
    for name in ["fa", "fb", "fc"] {
        create_sleeper(&server, name, 128, 30).await;
    }
    let lambda = server.lambda();
    assert!(invoke_tail(&lambda, "fa", "{}").await.1);
    assert!(invoke_tail(&lambda, "fb", "{}").await.1);
    let full = server.environments().await;
    assert_eq!(
        (
            full.idle,
            full.busy,
            full.reserved_mb,
            full.budget_mb,
            full.evictions
        ),
        (2, 0, 256, 256, 0)
    );

    // fc does not fit: fa, used longest ago, makes room.
    assert!(invoke_tail(&lambda, "fc", "{}").await.1);
    let e = server.environments().await;
    assert_eq!((e.live(), e.reserved_mb, e.evictions), (2, 256, 1), "{e:?}");
    assert!(!invoke_tail(&lambda, "fb", "{}").await.1, "fb stayed warm");
    // Now fc is the least recently used.
    assert!(invoke_tail(&lambda, "fa", "{}").await.1, "fa was evicted");
    assert!(!invoke_tail(&lambda, "fb", "{}").await.1, "fb still warm");
    assert!(
        invoke_tail(&lambda, "fc", "{}").await.1,
        "fc was evicted for fa"
    );
    let e = server.environments().await;
    assert_eq!((e.live(), e.reserved_mb, e.evictions), (2, 256, 3), "{e:?}");

    // fb and fc busy hold the whole budget: a new environment for fa is
    // refused, and nothing is evicted or over-committed.
    let running: Vec<_> = ["fb", "fc"]
        .into_iter()
        .map(|name| {
            let lambda = lambda.clone();
            tokio::spawn(async move { invoke_tail(&lambda, name, r#"{"sleep": 5}"#).await })
        })
        .collect();
    server
        .wait_for_environments(Duration::from_secs(30), "fb and fc busy", |e| {
            e.busy == 2 && e.idle == 0
        })
        .await;
    let refused = server
        .lambda_without_retries()
        .invoke()
        .function_name("fa")
        .send()
        .await
        .unwrap_err();
    match refused.as_service_error() {
        Some(aws_sdk_lambda::operation::invoke::InvokeError::TooManyRequestsException(t)) => {
            assert_eq!(
                t.reason().map(|r| r.as_str()),
                Some("ConcurrentInvocationLimitExceeded")
            );
            assert!(
                t.message().unwrap_or_default().contains("memory budget"),
                "{t:?}"
            );
        }
        other => panic!("expected a throttle, got {other:?}"),
    }
    let e = server.environments().await;
    assert_eq!((e.busy, e.reserved_mb, e.evictions), (2, 256, 3), "{e:?}");
    for r in running {
        assert_eq!(r.await.unwrap(), (r#""ok""#.to_string(), false));
    }
    // Once they are idle again, fa fits by evicting one of them.
    assert!(invoke_tail(&lambda, "fa", "{}").await.1);
    let e = server.environments().await;
    assert_eq!((e.live(), e.reserved_mb, e.evictions), (2, 256, 4), "{e:?}");

    // A function larger than the whole budget is refused outright.
    create_sleeper(&server, "huge", 512, 30).await;
    let refused = server
        .lambda_without_retries()
        .invoke()
        .function_name("huge")
        .send()
        .await
        .unwrap_err();
    assert_eq!(service_code(&refused), "TooManyRequestsException");
    let e = server.environments().await;
    assert_eq!(
        (e.live(), e.evictions),
        (2, 4),
        "nothing evicted in vain: {e:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn environments_that_time_out_crash_or_retire_give_back_their_memory() {
    let server = Server::start_with(&["--keep-alive", "600"]).await;
    create_sleeper(&server, "fragile", 128, 1).await;
    let lambda = server.lambda();
    let gone = |what: &'static str| {
        let server = &server;
        async move {
            server
                .wait_for_environments(Duration::from_secs(30), what, |e| {
                    e.live() == 0 && e.reserved_mb == 0
                })
                .await
        }
    };

    let (body, _) = invoke_tail(&lambda, "fragile", r#"{"sleep": 5}"#).await;
    assert!(body.contains("Sandbox.Timedout"), "{body}");
    gone("the timed-out environment").await;

    let (body, _) = invoke_tail(&lambda, "fragile", r#"{"crash": true}"#).await;
    assert!(body.contains("Runtime.ExitError"), "{body}");
    gone("the crashed environment").await;

    let (_, cold) = invoke_tail(&lambda, "fragile", "{}").await;
    assert!(cold);
    let e = server.environments().await;
    assert_eq!((e.idle, e.reserved_mb), (1, 128), "{e:?}");
    lambda
        .update_function_configuration()
        .function_name("fragile")
        .description("retires the pool")
        .send()
        .await
        .unwrap();
    gone("the retired environment").await;
}
