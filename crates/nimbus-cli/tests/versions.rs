//! Versions, aliases, reserved and provisioned concurrency, driven by the
//! official AWS SDK for Rust against a real `nimbus serve`.

// Shared with tests.rs, which uses the helpers this file does not.
#[allow(dead_code)]
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_lambda::operation::invoke::{InvokeError, InvokeOutput};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{
    AliasRoutingConfiguration, FunctionCode, LogType, ProvisionedConcurrencyStatusEnum as Status,
    Runtime,
};
use support::{Server, log_tail, service_code, zip_of};

const ROLE: &str = "arn:aws:iam::000000000000:role/lambda-role";

/// A function that says which code, version and environment ran it.
fn app(tag: &str) -> Vec<u8> {
    let source = format!(
        r#"import os, time
print("init", os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"])

def handler(event, context):
    time.sleep(event.get("sleep", 0))
    return {{"code": "{tag}", "version": os.environ["AWS_LAMBDA_FUNCTION_VERSION"],
            "init": os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"],
            "arn": context.invoked_function_arn, "stream": context.log_stream_name,
            "memory": context.memory_limit_in_mb}}
"#
    );
    zip_of(&[("app.py", source.as_bytes(), 0o644)])
}

async fn create(lambda: &aws_sdk_lambda::Client, name: &str, code: Vec<u8>, publish: bool) {
    lambda
        .create_function()
        .function_name(name)
        .runtime(Runtime::from(support::python_runtime().as_str()))
        .role(ROLE)
        .handler("app.handler")
        .timeout(15)
        .code(FunctionCode::builder().zip_file(Blob::new(code)).build())
        .publish(publish)
        .send()
        .await
        .expect("create_function");
}

fn body(out: &InvokeOutput) -> serde_json::Value {
    serde_json::from_slice(out.payload().unwrap().as_ref()).unwrap()
}

async fn invoke(
    lambda: &aws_sdk_lambda::Client,
    name: &str,
    qualifier: Option<&str>,
) -> (InvokeOutput, serde_json::Value) {
    let out = lambda
        .invoke()
        .function_name(name)
        .set_qualifier(qualifier.map(str::to_string))
        .log_type(LogType::Tail)
        .send()
        .await
        .expect("invoke");
    assert_eq!(out.function_error(), None, "{:?}", out.payload());
    let b = body(&out);
    (out, b)
}

/// Starts `n` invocations that each sleep `secs` at once; returns the
/// results.
async fn at_once(
    lambda: &aws_sdk_lambda::Client,
    name: &str,
    qualifier: Option<&str>,
    n: usize,
    secs: u32,
) -> Vec<Result<InvokeOutput, aws_sdk_lambda::error::SdkError<InvokeError>>> {
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let lambda = lambda.clone();
            let (name, qualifier) = (name.to_string(), qualifier.map(str::to_string));
            tokio::spawn(async move {
                lambda
                    .invoke()
                    .function_name(name)
                    .set_qualifier(qualifier)
                    .log_type(LogType::Tail)
                    .payload(Blob::new(format!(r#"{{"sleep": {secs}}}"#)))
                    .send()
                    .await
            })
        })
        .collect();
    let mut out = Vec::new();
    for c in calls {
        out.push(c.await.unwrap());
    }
    out
}

/// The throttle reasons among results (`None` for a success).
fn throttles(
    results: &[Result<InvokeOutput, aws_sdk_lambda::error::SdkError<InvokeError>>],
) -> Vec<Option<String>> {
    results
        .iter()
        .map(|r| match r {
            Ok(_) => None,
            Err(e) => match e.as_service_error() {
                Some(InvokeError::TooManyRequestsException(t)) => Some(
                    t.reason()
                        .map(|r| r.as_str().to_string())
                        .unwrap_or_default(),
                ),
                _ => panic!("not a throttle: {e:?}"),
            },
        })
        .collect()
}

async fn unreserved(lambda: &aws_sdk_lambda::Client) -> i32 {
    lambda
        .get_account_settings()
        .send()
        .await
        .unwrap()
        .account_limit()
        .unwrap()
        .unreserved_concurrent_executions()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_are_frozen_and_aliases_route_to_them() {
    let server = Server::start().await;
    let lambda = server.lambda();
    create(&lambda, "ver", app("one"), true).await;
    let v1 = lambda
        .get_function_configuration()
        .function_name("ver")
        .qualifier("1")
        .send()
        .await
        .unwrap();
    assert_eq!(v1.version(), Some("1"), "Publish on create made version 1");
    assert_eq!(
        v1.function_arn(),
        Some("arn:aws:lambda:us-east-1:000000000000:function:ver:1")
    );

    // $LATEST moves on; version 1 keeps its code and configuration.
    lambda
        .update_function_code()
        .function_name("ver")
        .zip_file(Blob::new(app("two")))
        .send()
        .await
        .unwrap();
    lambda
        .update_function_configuration()
        .function_name("ver")
        .memory_size(256)
        .send()
        .await
        .unwrap();
    let (out, latest) = invoke(&lambda, "ver", None).await;
    assert_eq!(out.executed_version(), Some("$LATEST"));
    assert_eq!(latest["code"], "two");
    assert_eq!(latest["memory"], "256");
    assert_eq!(latest["version"], "$LATEST");
    let (out, old) = invoke(&lambda, "ver", Some("1")).await;
    assert_eq!(out.executed_version(), Some("1"));
    assert_eq!(old["code"], "one", "version 1 runs its own code");
    assert_eq!(old["memory"], "128", "and its own configuration");
    assert_eq!(old["version"], "1");
    assert_eq!(
        old["arn"],
        "arn:aws:lambda:us-east-1:000000000000:function:ver:1"
    );
    assert!(
        old["stream"].as_str().unwrap().contains("/[1]"),
        "{}",
        old["stream"]
    );
    let log = log_tail(&out);
    assert!(
        log.lines()
            .any(|l| l.starts_with("START RequestId: ") && l.ends_with(" Version: 1")),
        "{log}"
    );

    let v2 = lambda
        .publish_version()
        .function_name("ver")
        .description("second")
        .send()
        .await
        .unwrap();
    assert_eq!(v2.version(), Some("2"));
    assert_eq!(v2.description(), Some("second"));
    assert_eq!(v2.memory_size(), Some(256));
    let again = lambda
        .publish_version()
        .function_name("ver")
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.version(),
        Some("2"),
        "nothing changed: no new version"
    );
    let stale = lambda
        .publish_version()
        .function_name("ver")
        .revision_id("not-the-revision")
        .send()
        .await
        .unwrap_err();
    assert_eq!(service_code(&stale), "PreconditionFailedException");
    let versions: Vec<String> = lambda
        .list_versions_by_function()
        .function_name("ver")
        .send()
        .await
        .unwrap()
        .versions()
        .iter()
        .map(|v| v.version().unwrap().to_string())
        .collect();
    assert_eq!(versions, ["$LATEST", "1", "2"]);
    let paged = lambda
        .list_versions_by_function()
        .function_name("ver")
        .max_items(2)
        .send()
        .await
        .unwrap();
    assert_eq!(paged.versions().len(), 2);
    assert_eq!(paged.next_marker(), Some("1"));

    // Aliases.
    let alias = lambda
        .create_alias()
        .function_name("ver")
        .name("live")
        .function_version("1")
        .description("production")
        .send()
        .await
        .unwrap();
    assert_eq!(
        alias.alias_arn(),
        Some("arn:aws:lambda:us-east-1:000000000000:function:ver:live")
    );
    let dup = lambda
        .create_alias()
        .function_name("ver")
        .name("live")
        .function_version("2")
        .send()
        .await
        .unwrap_err();
    assert_eq!(service_code(&dup), "ResourceConflictException");
    let (out, via_alias) = invoke(&lambda, "ver:live", None).await;
    assert_eq!(out.executed_version(), Some("1"));
    assert_eq!(via_alias["code"], "one");
    assert_eq!(
        via_alias["arn"],
        "arn:aws:lambda:us-east-1:000000000000:function:ver:live"
    );
    let cfg = lambda
        .get_function_configuration()
        .function_name("ver")
        .qualifier("live")
        .send()
        .await
        .unwrap();
    assert_eq!(cfg.version(), Some("1"));
    assert_eq!(
        cfg.function_arn(),
        Some("arn:aws:lambda:us-east-1:000000000000:function:ver:live")
    );
    lambda
        .update_alias()
        .function_name("ver")
        .name("live")
        .function_version("2")
        .send()
        .await
        .unwrap();
    let (out, moved) = invoke(&lambda, "ver", Some("live")).await;
    assert_eq!(out.executed_version(), Some("2"));
    assert_eq!(moved["code"], "two");

    // Weighted routing sends a share to the additional version.
    lambda
        .update_alias()
        .function_name("ver")
        .name("live")
        .function_version("1")
        .routing_config(
            AliasRoutingConfiguration::builder()
                .additional_version_weights("2", 0.5)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let got = lambda
        .get_alias()
        .function_name("ver")
        .name("live")
        .send()
        .await
        .unwrap();
    let weights = got.routing_config().unwrap().additional_version_weights();
    assert_eq!(weights.unwrap().get("2"), Some(&0.5));
    let mut ran = BTreeSet::new();
    for _ in 0..40 {
        let (out, _) = invoke(&lambda, "ver", Some("live")).await;
        ran.insert(out.executed_version().unwrap().to_string());
    }
    assert_eq!(
        ran,
        BTreeSet::from(["1".to_string(), "2".to_string()]),
        "both versions served the alias"
    );
    let latest_weighted = lambda
        .create_alias()
        .function_name("ver")
        .name("canary")
        .function_version("$LATEST")
        .routing_config(
            AliasRoutingConfiguration::builder()
                .additional_version_weights("1", 0.1)
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        service_code(&latest_weighted),
        "InvalidParameterValueException"
    );

    // Deleting versions.
    let in_use = lambda
        .delete_function()
        .function_name("ver")
        .qualifier("2")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        service_code(&in_use),
        "ResourceConflictException",
        "an alias routes to version 2"
    );
    let latest = lambda
        .delete_function()
        .function_name("ver")
        .qualifier("$LATEST")
        .send()
        .await
        .unwrap_err();
    assert_eq!(service_code(&latest), "InvalidParameterValueException");
    lambda
        .delete_alias()
        .function_name("ver")
        .name("live")
        .send()
        .await
        .unwrap();
    lambda
        .delete_function()
        .function_name("ver")
        .qualifier("2")
        .send()
        .await
        .unwrap();
    let gone = lambda
        .invoke()
        .function_name("ver")
        .qualifier("2")
        .send()
        .await
        .unwrap_err();
    assert_eq!(service_code(&gone), "ResourceNotFoundException");
    lambda
        .update_function_configuration()
        .function_name("ver")
        .memory_size(512)
        .send()
        .await
        .unwrap();
    let v3 = lambda
        .publish_version()
        .function_name("ver")
        .send()
        .await
        .unwrap();
    assert_eq!(v3.version(), Some("3"), "version numbers are not reused");
    let (_, old) = invoke(&lambda, "ver", Some("1")).await;
    assert_eq!(old["code"], "one", "version 1 kept its package");
}

#[tokio::test(flavor = "multi_thread")]
async fn reserved_concurrency_throttles_with_its_reason_and_shrinks_the_unreserved_pool() {
    // 20 in all; 2 (a tenth) always stay unreserved.
    let server = Server::start_with(&["--concurrency", "20"]).await;
    let lambda = server.lambda();
    create(&lambda, "reserved", app("r"), false).await;
    create(&lambda, "shared", app("s"), false).await;
    let settings = lambda.get_account_settings().send().await.unwrap();
    let limit = settings.account_limit().unwrap();
    assert_eq!(limit.concurrent_executions(), 20);
    assert_eq!(limit.unreserved_concurrent_executions(), Some(20));

    lambda
        .put_function_concurrency()
        .function_name("reserved")
        .reserved_concurrent_executions(0)
        .send()
        .await
        .unwrap();
    let throttled = lambda
        .invoke()
        .function_name("reserved")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        throttles(&[Err(throttled)]),
        [Some(
            "ReservedFunctionConcurrentInvocationLimitExceeded".to_string()
        )]
    );

    lambda
        .put_function_concurrency()
        .function_name("reserved")
        .reserved_concurrent_executions(2)
        .send()
        .await
        .unwrap();
    let got = lambda
        .get_function_concurrency()
        .function_name("reserved")
        .send()
        .await
        .unwrap();
    assert_eq!(got.reserved_concurrent_executions(), Some(2));
    let f = lambda
        .get_function()
        .function_name("reserved")
        .send()
        .await
        .unwrap();
    assert_eq!(
        f.concurrency().unwrap().reserved_concurrent_executions(),
        Some(2)
    );
    assert_eq!(unreserved(&lambda).await, 18);
    let results = at_once(&lambda, "reserved", None, 3, 3).await;
    let mut reasons = throttles(&results);
    reasons.sort();
    assert_eq!(
        reasons,
        [
            None,
            None,
            Some("ReservedFunctionConcurrentInvocationLimitExceeded".to_string())
        ],
        "exactly the third is throttled"
    );

    let too_much = lambda
        .put_function_concurrency()
        .function_name("reserved")
        .reserved_concurrent_executions(19)
        .send()
        .await
        .unwrap_err();
    assert_eq!(service_code(&too_much), "InvalidParameterValueException");
    lambda
        .put_function_concurrency()
        .function_name("reserved")
        .reserved_concurrent_executions(18)
        .send()
        .await
        .unwrap();
    assert_eq!(unreserved(&lambda).await, 2);
    let results = at_once(&lambda, "shared", None, 3, 3).await;
    let mut reasons = throttles(&results);
    reasons.sort();
    assert_eq!(
        reasons,
        [
            None,
            None,
            Some("ConcurrentInvocationLimitExceeded".to_string())
        ],
        "functions without a reservation share what is left"
    );

    lambda
        .delete_function_concurrency()
        .function_name("reserved")
        .send()
        .await
        .unwrap();
    let got = lambda
        .get_function_concurrency()
        .function_name("reserved")
        .send()
        .await
        .unwrap();
    assert_eq!(got.reserved_concurrent_executions(), None);
    assert_eq!(unreserved(&lambda).await, 20);
    let results = at_once(&lambda, "shared", None, 3, 1).await;
    assert_eq!(throttles(&results), [None, None, None]);
}

async fn wait_ready(lambda: &aws_sdk_lambda::Client, name: &str, q: &str) -> Status {
    for _ in 0..200 {
        let c = lambda
            .get_provisioned_concurrency_config()
            .function_name(name)
            .qualifier(q)
            .send()
            .await
            .unwrap();
        match c.status() {
            Some(Status::InProgress) => tokio::time::sleep(Duration::from_millis(100)).await,
            Some(s) => return s.clone(),
            None => panic!("no status"),
        }
    }
    panic!("provisioned concurrency of {name}:{q} never left IN_PROGRESS");
}

#[tokio::test(flavor = "multi_thread")]
async fn provisioned_concurrency_keeps_environments_ready_across_restarts() {
    let mut server = Server::start().await;
    let lambda = server.lambda();
    create(&lambda, "prov", app("p"), true).await;
    lambda
        .create_alias()
        .function_name("prov")
        .name("live")
        .function_version("1")
        .send()
        .await
        .unwrap();
    let put = |q: &str, n: i32| {
        lambda
            .put_provisioned_concurrency_config()
            .function_name("prov")
            .qualifier(q)
            .provisioned_concurrent_executions(n)
            .send()
    };
    let latest = put("$LATEST", 1).await.unwrap_err();
    assert_eq!(service_code(&latest), "InvalidParameterValueException");
    let missing = put("9", 1).await.unwrap_err();
    assert_eq!(service_code(&missing), "ResourceNotFoundException");
    let none = lambda
        .get_provisioned_concurrency_config()
        .function_name("prov")
        .qualifier("1")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        service_code(&none),
        "ProvisionedConcurrencyConfigNotFoundException"
    );

    let started = put("live", 2).await.unwrap();
    assert_eq!(
        started.requested_provisioned_concurrent_executions(),
        Some(2)
    );
    assert!(started.last_modified().is_some());
    assert_eq!(wait_ready(&lambda, "prov", "live").await, Status::Ready);
    let ready = lambda
        .get_provisioned_concurrency_config()
        .function_name("prov")
        .qualifier("live")
        .send()
        .await
        .unwrap();
    assert_eq!(ready.allocated_provisioned_concurrent_executions(), Some(2));
    assert_eq!(ready.available_provisioned_concurrent_executions(), Some(2));
    assert_eq!(unreserved(&lambda).await, 62, "64 minus the 2 provisioned");
    let conflict = put("1", 1).await.unwrap_err();
    assert_eq!(
        service_code(&conflict),
        "ResourceConflictException",
        "the alias already provisions version 1"
    );
    let listed = lambda
        .list_provisioned_concurrency_configs()
        .function_name("prov")
        .send()
        .await
        .unwrap();
    let arns: Vec<&str> = listed
        .provisioned_concurrency_configs()
        .iter()
        .map(|c| c.function_arn().unwrap())
        .collect();
    assert_eq!(
        arns,
        ["arn:aws:lambda:us-east-1:000000000000:function:prov:live"]
    );

    // The environments initialised before any invocation: their init
    // output is in the log already.
    let logs = server.logs();
    let mut inits = 0;
    for _ in 0..100 {
        let events = logs
            .filter_log_events()
            .log_group_name("/aws/lambda/prov")
            .filter_pattern("\"init provisioned-concurrency\"")
            .send()
            .await;
        inits = events.map_or(0, |e| {
            e.events()
                .iter()
                .filter(|e| {
                    e.message()
                        .is_some_and(|m| m.contains("init provisioned-concurrency"))
                        && e.log_stream_name().is_some_and(|s| s.contains("/[1]"))
                })
                .count()
        });
        if inits == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(inits, 2, "two environments initialised ahead");

    let (out, b) = invoke(&lambda, "prov", Some("live")).await;
    assert_eq!(b["init"], "provisioned-concurrency");
    let log = log_tail(&out);
    assert!(!log.contains("Init Duration"), "{log}");
    assert!(
        !log.contains("init provisioned"),
        "init was logged ahead: {log}"
    );

    // Two at once use both; a third spills over to an on-demand cold start.
    let results = at_once(&lambda, "prov", Some("live"), 3, 2).await;
    let mut kinds: Vec<(String, bool)> = results
        .iter()
        .map(|r| {
            let out = r.as_ref().expect("no throttle");
            let b = body(out);
            (
                b["init"].as_str().unwrap().to_string(),
                log_tail(out).contains("Init Duration"),
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("on-demand".to_string(), true),
            ("provisioned-concurrency".to_string(), false),
            ("provisioned-concurrency".to_string(), false),
        ]
    );

    // Provisioned concurrency counts toward a reservation.
    let below = lambda
        .put_function_concurrency()
        .function_name("prov")
        .reserved_concurrent_executions(1)
        .send()
        .await
        .unwrap_err();
    assert_eq!(service_code(&below), "InvalidParameterValueException");
    lambda
        .put_function_concurrency()
        .function_name("prov")
        .reserved_concurrent_executions(3)
        .send()
        .await
        .unwrap();
    assert_eq!(unreserved(&lambda).await, 61);
    let above = put("live", 4).await.unwrap_err();
    assert_eq!(service_code(&above), "InvalidParameterValueException");
    lambda
        .delete_function_concurrency()
        .function_name("prov")
        .send()
        .await
        .unwrap();

    // Configurations survive a restart and are initialised again.
    server.restart().await;
    let lambda = server.lambda();
    assert_eq!(wait_ready(&lambda, "prov", "live").await, Status::Ready);
    let (out, b) = invoke(&lambda, "prov", Some("live")).await;
    assert_eq!(b["init"], "provisioned-concurrency");
    assert!(!log_tail(&out).contains("Init Duration"));

    lambda
        .delete_provisioned_concurrency_config()
        .function_name("prov")
        .qualifier("live")
        .send()
        .await
        .unwrap();
    let none = lambda
        .get_provisioned_concurrency_config()
        .function_name("prov")
        .qualifier("live")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        service_code(&none),
        "ProvisionedConcurrencyConfigNotFoundException"
    );
    assert_eq!(unreserved(&lambda).await, 64);

    // An init failure makes the configuration FAILED, with the reason.
    let broken = zip_of(&[(
        "app.py",
        b"raise RuntimeError('no database')\ndef handler(e, c):\n    return 1\n",
        0o644,
    )]);
    create(&lambda, "broken", broken, true).await;
    lambda
        .put_provisioned_concurrency_config()
        .function_name("broken")
        .qualifier("1")
        .provisioned_concurrent_executions(1)
        .send()
        .await
        .unwrap();
    assert_eq!(wait_ready(&lambda, "broken", "1").await, Status::Failed);
    let failed = lambda
        .get_provisioned_concurrency_config()
        .function_name("broken")
        .qualifier("1")
        .send()
        .await
        .unwrap();
    let reason = failed.status_reason().unwrap_or_default();
    assert!(reason.contains("no database"), "{reason}");
}
