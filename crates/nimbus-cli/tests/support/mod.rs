//! A real `nimbus serve` process for tests, and helpers to build packages.
#![allow(unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const HELLO_WORLD: &str = r#"import json

print('Loading function')


def lambda_handler(event, context):
    #print("Received event: " + json.dumps(event, indent=2))
    print("value1 = " + event['key1'])
    print("value2 = " + event['key2'])
    print("value3 = " + event['key3'])
    return event['key1']  # Echo back the first key value
    #raise Exception('Something went wrong')
"#;

/// A trust policy that lets Lambda assume a role.
pub const LAMBDA_TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

const KEY: &str = "AKIDNIMBUSTEST";
const SECRET: &str = "nimbus-test-secret";
/// The root access key and secret every test server starts with.
pub const ROOT_KEYS: (&str, &str) = (KEY, SECRET);

pub struct Server {
    child: Option<Child>,
    pub url: String,
    data: tempfile::TempDir,
    extra: Vec<String>,
}

/// The Python runtime tests use: the host's `python3` version.
pub fn python_runtime() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(f'python3.{sys.version_info[1]}')"])
        .output()
        .expect("python3 is installed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn spawn(data: &std::path::Path, listen: &str, extra: &[String]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nimbus"))
        .args(["serve", "--listen", listen, "--data-dir"])
        .arg(data)
        .args(extra)
        .env("NIMBUS_ACCESS_KEY_ID", KEY)
        .env("NIMBUS_SECRET_ACCESS_KEY", SECRET)
        .env("NIMBUS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn nimbus");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("nimbus exited before it was ready")
            .unwrap();
        if let Some(rest) = line.strip_prefix("nimbus ready on ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, url)
}

impl Server {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts a server with extra `nimbus serve` flags.
    pub async fn start_with(flags: &[&str]) -> Self {
        let data = tempfile::tempdir().unwrap();
        let extra: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        let (child, url) = spawn(data.path(), "127.0.0.1:0", &extra);
        let server = Self {
            child: Some(child),
            url,
            data,
            extra,
        };
        server.create_execution_role().await;
        server
    }

    /// Creates the role the tests' functions run as: trusted by Lambda,
    /// with AWSLambdaBasicExecutionRole, as a user does once.
    async fn create_execution_role(&self) {
        let iam = aws_sdk_iam::Client::new(&self.config().await);
        iam.create_role()
            .role_name("lambda-role")
            .assume_role_policy_document(LAMBDA_TRUST)
            .send()
            .await
            .expect("create the execution role");
        iam.attach_role_policy()
            .role_name("lambda-role")
            .policy_arn("arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole")
            .send()
            .await
            .expect("attach AWSLambdaBasicExecutionRole");
    }

    /// Stops the server with SIGTERM and starts it again on the same data
    /// directory and port.
    pub async fn restart(&mut self) {
        self.stop();
        let addr = self.url.trim_start_matches("http://").to_string();
        let (child, url) = spawn(self.data.path(), &addr, &self.extra);
        self.child = Some(child);
        self.url = url;
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            for _ in 0..100 {
                if child.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&self.url)
            .credentials_provider(aws_credential_types::Credentials::new(
                KEY, SECRET, None, None, "test",
            ))
            .load()
            .await
    }

    /// An S3 client (path-style, the SDK's default checksums on); only
    /// `s3.rs` uses it.
    #[allow(dead_code)]
    pub fn s3(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::from(&block_on(self.config()))
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    pub fn lambda(&self) -> aws_sdk_lambda::Client {
        aws_sdk_lambda::Client::new(&block_on(self.config()))
    }

    /// A Lambda client that does not retry throttled calls, for tests that
    /// expect a 429.
    pub fn lambda_without_retries(&self) -> aws_sdk_lambda::Client {
        let config = aws_sdk_lambda::config::Builder::from(&block_on(self.config()))
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build();
        aws_sdk_lambda::Client::from_conf(config)
    }

    /// The node-wide execution environment figures of `/metrics`.
    pub async fn environments(&self) -> Environments {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.url.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET /metrics HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8(raw).unwrap();
        let value = |sample: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("no {sample} in /metrics: {text}"))
                .parse()
                .unwrap()
        };
        const MB: u64 = 1024 * 1024;
        Environments {
            idle: value("nimbus_environments{state=\"idle\"}"),
            busy: value("nimbus_environments{state=\"busy\"}"),
            reserved_mb: value("nimbus_environment_memory_reserved_bytes") / MB,
            budget_mb: value("nimbus_environment_memory_budget_bytes") / MB,
            evictions: value("nimbus_environment_evictions_total"),
        }
    }

    /// Polls `/metrics` until `done` holds (or panics after `within`),
    /// checking on every look that the memory budget is never exceeded.
    pub async fn wait_for_environments(
        &self,
        within: Duration,
        what: &str,
        done: impl Fn(&Environments) -> bool,
    ) -> Environments {
        let until = std::time::Instant::now() + within;
        loop {
            let e = self.environments().await;
            assert!(e.reserved_mb <= e.budget_mb, "over the budget: {e:?}");
            if done(&e) {
                return e;
            }
            assert!(
                std::time::Instant::now() < until,
                "{what}: not within {within:?}; last seen {e:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn logs(&self) -> aws_sdk_cloudwatchlogs::Client {
        aws_sdk_cloudwatchlogs::Client::new(&block_on(self.config()))
    }

    /// Runs the nimbus CLI against this server.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_nimbus"))
            .args(args)
            .env("NIMBUS_URL", &self.url)
            .env("NIMBUS_DATA_DIR", self.data.path())
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .output()
            .expect("run nimbus cli")
    }
}

/// The SDK config loader is async but does no I/O when everything is given,
/// so tests build clients from sync helpers.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Execution environments and the memory budget, as `/metrics` has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Environments {
    pub idle: u64,
    pub busy: u64,
    pub reserved_mb: u64,
    pub budget_mb: u64,
    pub evictions: u64,
}

impl Environments {
    pub fn live(&self) -> u64 {
        self.idle + self.busy
    }
}

/// A zip of (name, contents, unix mode) entries.
pub fn zip_of(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data, mode) in entries {
        w.start_file(
            *name,
            zip::write::SimpleFileOptions::default().unix_permissions(*mode),
        )
        .unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

pub fn hello_world_zip() -> Vec<u8> {
    zip_of(&[("lambda_function.py", HELLO_WORLD.as_bytes(), 0o644)])
}

/// The AWS error code of a failed SDK call.
pub fn service_code<E, R>(e: &aws_sdk_lambda::error::SdkError<E, R>) -> String
where
    E: aws_sdk_lambda::error::ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
{
    match e.as_service_error() {
        Some(se) => se.code().unwrap_or("<none>").to_string(),
        None => format!("<not a service error: {e:?}>"),
    }
}

/// The decoded `LogType: Tail` of an invocation.
pub fn log_tail(out: &aws_sdk_lambda::operation::invoke::InvokeOutput) -> String {
    use base64::Engine as _;
    let raw = out
        .log_result()
        .expect("the invocation asked for LogType Tail");
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(raw)
            .unwrap(),
    )
    .unwrap()
}
