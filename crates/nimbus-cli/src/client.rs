//! The client commands: `function`, `invoke` and `logs`. They use the
//! official AWS SDK against nimbus's public API, so they can do nothing an
//! AWS CLI user could not.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aws_sdk_lambda::error::ProvideErrorMetadata;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{
    Environment, FunctionCode, FunctionConfiguration, InvocationType, LogType, Runtime,
};
use base64::Engine as _;

/// How to reach the server; shared by every client command.
#[derive(Debug, clap::Args)]
pub(crate) struct Connection {
    /// nimbus's URL [default: $AWS_ENDPOINT_URL, else http://127.0.0.1:9070].
    #[arg(long, env = "NIMBUS_URL", global = true)]
    endpoint_url: Option<String>,
    /// Data directory whose `credentials` file is used when
    /// AWS_ACCESS_KEY_ID is not set.
    #[arg(long, env = "NIMBUS_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum FunctionCommand {
    /// Create a function from a .zip file or a directory.
    Create(CodeArgs),
    /// List functions.
    List(ListArgs),
    /// Show a function's configuration.
    Get(NameArgs),
    /// Change a function's code and/or configuration.
    Update(CodeArgs),
    /// Delete a function (or, with --qualifier N, one published version).
    Delete(NameArgs),
    /// Publish $LATEST as a new version: a frozen copy of its code and
    /// configuration that later updates do not change.
    Publish(PublishArgs),
    /// List a function's versions and aliases.
    Versions(NameArgs),
    /// Create or change an alias (a name pointing at a version), or delete
    /// it with --delete.
    Alias(AliasArgs),
    /// Show or set reserved and provisioned concurrency.
    #[command(after_help = "Examples:\n  \
        nimbus function concurrency demo                          # show\n  \
        nimbus function concurrency demo --reserved 10            # at most 10 at once\n  \
        nimbus function concurrency demo --reserved 0             # throttle every invocation\n  \
        nimbus function concurrency demo --reserved none          # share the unreserved pool again\n  \
        nimbus function concurrency demo -q live --provisioned 2 --wait\n  \
        nimbus function concurrency demo -q live --provisioned 0  # remove")]
    Concurrency(ConcurrencyArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct NameArgs {
    /// Function name or ARN.
    name: String,
    /// A version number, an alias or $LATEST (get, delete).
    #[arg(long, short)]
    qualifier: Option<String>,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, clap::Args)]
pub(crate) struct PublishArgs {
    /// Function name or ARN.
    name: String,
    /// The version's description [default: the function's].
    #[arg(long)]
    description: Option<String>,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, clap::Args)]
pub(crate) struct AliasArgs {
    /// Function name or ARN.
    name: String,
    /// The alias, e.g. live.
    alias: String,
    /// The version it points at (a number or $LATEST); required to create.
    #[arg(long, required_unless_present = "delete")]
    version: Option<String>,
    /// Also send this share of invocations to another version:
    /// VERSION=WEIGHT, e.g. 3=0.1.
    #[arg(long, value_name = "VERSION=WEIGHT", conflicts_with = "delete")]
    route: Option<String>,
    /// A description of the alias.
    #[arg(long, conflicts_with = "delete")]
    description: Option<String>,
    /// Delete the alias.
    #[arg(long)]
    delete: bool,
    #[command(flatten)]
    conn: Connection,
}

/// `--reserved`: a number, or `none` to remove the reservation.
#[derive(Debug, Clone, Copy)]
enum Reserved {
    Count(i32),
    None,
}

fn parse_reserved(s: &str) -> std::result::Result<Reserved, String> {
    if s == "none" {
        return Ok(Reserved::None);
    }
    s.parse::<i32>()
        .ok()
        .filter(|n| *n >= 0)
        .map(Reserved::Count)
        .ok_or_else(|| format!("expected a number of executions (0 or more) or `none`, not {s}"))
}

#[derive(Debug, clap::Args)]
pub(crate) struct ConcurrencyArgs {
    /// Function name or ARN.
    name: String,
    /// Reserve this many concurrent executions for the function (all its
    /// versions): it can always run that many and never more; 0 throttles
    /// every invocation; `none` removes the reservation.
    #[arg(long, value_name = "N|none", value_parser = parse_reserved)]
    reserved: Option<Reserved>,
    /// Keep this many environments of the version or alias given with
    /// --qualifier initialised and ready (0 removes the configuration).
    #[arg(long, value_name = "N", requires = "qualifier")]
    provisioned: Option<i32>,
    /// The version number or alias --provisioned applies to.
    #[arg(long, short)]
    qualifier: Option<String>,
    /// After --provisioned, wait until the environments are ready.
    #[arg(long, requires = "provisioned")]
    wait: bool,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    conn: Connection,
}

/// Where the code comes from.
#[derive(Debug, clap::Args)]
#[group(required = false, multiple = false)]
struct CodeSource {
    /// A deployment package (.zip).
    #[arg(long, value_name = "FILE")]
    zip: Option<PathBuf>,
    /// A directory to package (zipped with file modes kept, so an
    /// executable `bootstrap` stays executable).
    #[arg(long, value_name = "DIR")]
    code: Option<PathBuf>,
}

/// Settings shared by create and update.
#[derive(Debug, clap::Args)]
struct Settings {
    /// Runtime id, e.g. python3.11, nodejs20.x, provided.al2023.
    #[arg(long)]
    runtime: Option<String>,
    /// Handler, e.g. lambda_function.lambda_handler.
    #[arg(long)]
    handler: Option<String>,
    /// Memory in MB (128-10240).
    #[arg(long)]
    memory: Option<i32>,
    /// Timeout in seconds (1-900).
    #[arg(long)]
    timeout: Option<i32>,
    /// A description of the function (up to 256 characters).
    #[arg(long)]
    description: Option<String>,
    /// Environment variable KEY=VALUE (repeatable; on update, replaces the
    /// whole set).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Execution role ARN [create default: the role nimbus-lambda-basic-execution,
    /// created on first use with basic Lambda permissions].
    #[arg(long)]
    role: Option<String>,
}

/// A function's name with code and settings: the arguments of both
/// `function create` and `function update`.
#[derive(Debug, clap::Args)]
pub(crate) struct CodeArgs {
    /// Function name (for update, an ARN works too).
    name: String,
    #[command(flatten)]
    source: CodeSource,
    #[command(flatten)]
    settings: Settings,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, clap::Args)]
pub(crate) struct InvokeArgs {
    /// Function name or ARN.
    name: String,
    /// Event JSON.
    #[arg(long, default_value = "{}", conflicts_with = "payload_file")]
    payload: String,
    /// Read the event JSON from a file (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    payload_file: Option<PathBuf>,
    /// Queue the event (InvocationType=Event) instead of waiting.
    #[arg(long = "async")]
    asynchronous: bool,
    /// Don't print the log tail to stderr.
    #[arg(long)]
    quiet: bool,
    /// Invoke this version number or alias (default $LATEST).
    #[arg(long, short)]
    qualifier: Option<String>,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, clap::Args)]
pub(crate) struct LogsArgs {
    /// Function name.
    name: String,
    /// Only events newer than this many minutes.
    #[arg(long, default_value_t = 60)]
    since_minutes: i64,
    /// Keep printing new events until interrupted.
    #[arg(long, short)]
    follow: bool,
    #[command(flatten)]
    conn: Connection,
}

struct Clients {
    lambda: aws_sdk_lambda::Client,
    logs: aws_sdk_cloudwatchlogs::Client,
    iam: aws_sdk_iam::Client,
}

/// The role `function create` uses when none is given, created on first
/// use as the console's "Create a new role with basic Lambda permissions":
/// trusted by Lambda, with AWSLambdaBasicExecutionRole attached.
const DEFAULT_ROLE: &str = "nimbus-lambda-basic-execution";

async fn default_role(iam: &aws_sdk_iam::Client) -> Result<String> {
    if let Ok(out) = iam.get_role().role_name(DEFAULT_ROLE).send().await
        && let Some(role) = out.role()
    {
        return Ok(role.arn().to_string());
    }
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let created = iam
        .create_role()
        .role_name(DEFAULT_ROLE)
        .assume_role_policy_document(trust)
        .description("Created by `nimbus function create`: basic Lambda permissions (logs)")
        .send()
        .await
        .map_err(sdk_error)?;
    iam.attach_role_policy()
        .role_name(DEFAULT_ROLE)
        .policy_arn("arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole")
        .send()
        .await
        .map_err(sdk_error)?;
    let arn = created
        .role()
        .map(|r| r.arn().to_string())
        .unwrap_or_default();
    eprintln!("created execution role {arn} (AWSLambdaBasicExecutionRole)");
    Ok(arn)
}

pub(crate) fn credentials(conn: &Connection) -> Result<aws_credential_types::Credentials> {
    if let (Ok(id), Ok(secret)) = (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) {
        let token = std::env::var("AWS_SESSION_TOKEN").ok();
        return Ok(aws_credential_types::Credentials::new(
            id,
            secret,
            token,
            None,
            "environment",
        ));
    }
    let dir = conn
        .data_dir
        .clone()
        .unwrap_or_else(crate::default_data_dir);
    let path = dir.join("credentials");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or start `nimbus serve` once so that {} exists",
            path.display()
        )
    })?;
    let c = crate::serve::parse_credentials(&text)?;
    Ok(aws_credential_types::Credentials::new(
        c.access_key_id,
        c.secret_access_key,
        None,
        None,
        "nimbus",
    ))
}

/// nimbus's URL: `--endpoint-url`/`NIMBUS_URL`, else `AWS_ENDPOINT_URL`,
/// else the default listen address.
pub(crate) fn endpoint(conn: &Connection) -> String {
    conn.endpoint_url
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:9070".into())
}

/// The region requests are signed for.
pub(crate) fn region() -> String {
    std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|_| "us-east-1".into())
}

async fn clients(conn: &Connection) -> Result<Clients> {
    let endpoint = endpoint(conn);
    let region = region();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region))
        .endpoint_url(endpoint)
        .credentials_provider(credentials(conn)?)
        .load()
        .await;
    Ok(Clients {
        lambda: aws_sdk_lambda::Client::new(&config),
        logs: aws_sdk_cloudwatchlogs::Client::new(&config),
        iam: aws_sdk_iam::Client::new(&config),
    })
}

/// One line for an SDK failure: the AWS error code and message when the
/// server answered, the transport error otherwise.
fn sdk_error<E, R>(e: aws_sdk_lambda::error::SdkError<E, R>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match e.as_service_error() {
        Some(se) => anyhow::anyhow!(
            "{}: {}",
            se.code().unwrap_or("Error"),
            se.message().unwrap_or("(no message)")
        ),
        None => anyhow::anyhow!("{}", aws_sdk_lambda::error::DisplayErrorContext(&e)),
    }
}

fn parse_env(pairs: &[String]) -> Result<HashMap<String, String>> {
    pairs
        .iter()
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .with_context(|| format!("--env {p}: expected KEY=VALUE"))?;
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Zips a directory, keeping file modes.
fn zip_dir(dir: &Path) -> Result<Vec<u8>> {
    use std::os::unix::fs::PermissionsExt;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let mut stack = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    for path in files {
        let rel = path
            .strip_prefix(dir)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        let mode = std::fs::metadata(&path)?.permissions().mode();
        let opts = zip::write::SimpleFileOptions::default().unix_permissions(mode & 0o777);
        w.start_file(rel, opts)?;
        w.write_all(&std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?)?;
    }
    Ok(w.finish()?.into_inner())
}

fn package(source: &CodeSource) -> Result<Option<Vec<u8>>> {
    match (&source.zip, &source.code) {
        (Some(z), _) => Ok(Some(
            std::fs::read(z).with_context(|| format!("reading {}", z.display()))?,
        )),
        (None, Some(d)) => Ok(Some(zip_dir(d)?)),
        (None, None) => Ok(None),
    }
}

fn spinner(msg: String) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new_spinner();
    pb.set_message(msg);
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

fn print_config(c: &FunctionConfiguration) {
    let line = |k: &str, v: String| println!("{k:<14} {v}");
    line("FunctionName", c.function_name().unwrap_or_default().into());
    line("FunctionArn", c.function_arn().unwrap_or_default().into());
    line("Version", c.version().unwrap_or_default().into());
    line(
        "Runtime",
        c.runtime()
            .map(|r| r.as_str().to_string())
            .unwrap_or_default(),
    );
    line("Handler", c.handler().unwrap_or_default().into());
    line("Role", c.role().unwrap_or_default().into());
    line(
        "MemorySize",
        format!("{} MB", c.memory_size().unwrap_or_default()),
    );
    line("Timeout", format!("{} s", c.timeout().unwrap_or_default()));
    line("CodeSize", format!("{} bytes", c.code_size()));
    line("CodeSha256", c.code_sha256().unwrap_or_default().into());
    line(
        "State",
        c.state()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
    );
    line("LastModified", c.last_modified().unwrap_or_default().into());
    if !c.description().unwrap_or_default().is_empty() {
        line("Description", c.description().unwrap_or_default().into());
    }
    if let Some(vars) = c.environment().and_then(|e| e.variables()) {
        let mut keys: Vec<_> = vars.keys().collect();
        keys.sort();
        for k in keys {
            line("Environment", format!("{k}={}", vars[k]));
        }
    }
}

pub(crate) async fn function(cmd: FunctionCommand) -> Result<ExitCode> {
    match cmd {
        FunctionCommand::Create(a) => {
            let c = clients(&a.conn).await?;
            let Some(zip) = package(&a.source)? else {
                bail!("give the code with --zip FILE or --code DIR")
            };
            let s = a.settings;
            let role = match s.role {
                Some(r) => r,
                None => default_role(&c.iam).await?,
            };
            let pb = spinner(format!(
                "creating {} ({} KB)",
                a.name,
                zip.len().div_ceil(1024)
            ));
            let mut req = c
                .lambda
                .create_function()
                .function_name(&a.name)
                .role(role)
                .code(FunctionCode::builder().zip_file(Blob::new(zip)).build())
                .set_runtime(s.runtime.as_deref().map(Runtime::from))
                .set_handler(s.handler)
                .set_memory_size(s.memory)
                .set_timeout(s.timeout)
                .set_description(s.description);
            if !s.env.is_empty() {
                req = req.environment(
                    Environment::builder()
                        .set_variables(Some(parse_env(&s.env)?))
                        .build(),
                );
            }
            let out = req.send().await;
            pb.finish_and_clear();
            let out = out.map_err(sdk_error)?;
            println!("created {}", out.function_arn().unwrap_or_default());
        }
        FunctionCommand::List(a) => {
            let c = clients(&a.conn).await?;
            let mut pages = c.lambda.list_functions().into_paginator().send();
            println!(
                "{:<40} {:<16} {:>7} {:>10}  LAST MODIFIED",
                "NAME", "RUNTIME", "MEMORY", "CODE SIZE"
            );
            while let Some(page) = pages.next().await {
                for f in page.map_err(sdk_error)?.functions() {
                    println!(
                        "{:<40} {:<16} {:>4} MB {:>10}  {}",
                        f.function_name().unwrap_or_default(),
                        f.runtime().map(|r| r.as_str()).unwrap_or_default(),
                        f.memory_size().unwrap_or_default(),
                        f.code_size(),
                        f.last_modified().unwrap_or_default()
                    );
                }
            }
        }
        FunctionCommand::Get(a) => {
            let c = clients(&a.conn).await?;
            let out = c
                .lambda
                .get_function()
                .function_name(&a.name)
                .set_qualifier(a.qualifier)
                .send()
                .await
                .map_err(sdk_error)?;
            if let Some(cfg) = out.configuration() {
                print_config(cfg);
            }
            if let Some(n) = out
                .concurrency()
                .and_then(|c| c.reserved_concurrent_executions())
            {
                println!("{:<14} {n}", "Reserved");
            }
        }
        FunctionCommand::Update(a) => {
            let c = clients(&a.conn).await?;
            let s = a.settings;
            let mut did = false;
            if let Some(zip) = package(&a.source)? {
                let pb = spinner(format!("uploading code for {}", a.name));
                let out = c
                    .lambda
                    .update_function_code()
                    .function_name(&a.name)
                    .zip_file(Blob::new(zip))
                    .send()
                    .await;
                pb.finish_and_clear();
                out.map_err(sdk_error)?;
                did = true;
            }
            let any_setting = s.runtime.is_some()
                || s.handler.is_some()
                || s.memory.is_some()
                || s.timeout.is_some()
                || s.description.is_some()
                || s.role.is_some()
                || !s.env.is_empty();
            if any_setting {
                let mut req = c
                    .lambda
                    .update_function_configuration()
                    .function_name(&a.name)
                    .set_runtime(s.runtime.as_deref().map(Runtime::from))
                    .set_handler(s.handler)
                    .set_memory_size(s.memory)
                    .set_timeout(s.timeout)
                    .set_description(s.description)
                    .set_role(s.role);
                if !s.env.is_empty() {
                    req = req.environment(
                        Environment::builder()
                            .set_variables(Some(parse_env(&s.env)?))
                            .build(),
                    );
                }
                req.send().await.map_err(sdk_error)?;
                did = true;
            }
            if !did {
                bail!("nothing to update: give --zip/--code and/or settings such as --memory");
            }
            println!("updated {}", a.name);
        }
        FunctionCommand::Delete(a) => {
            let c = clients(&a.conn).await?;
            c.lambda
                .delete_function()
                .function_name(&a.name)
                .set_qualifier(a.qualifier.clone())
                .send()
                .await
                .map_err(sdk_error)?;
            match a.qualifier {
                Some(q) => println!("deleted {}:{q}", a.name),
                None => println!("deleted {}", a.name),
            }
        }
        FunctionCommand::Publish(a) => {
            let c = clients(&a.conn).await?;
            let out = c
                .lambda
                .publish_version()
                .function_name(&a.name)
                .set_description(a.description)
                .send()
                .await
                .map_err(sdk_error)?;
            println!(
                "published {} version {}",
                a.name,
                out.version().unwrap_or_default()
            );
        }
        FunctionCommand::Versions(a) => versions(a).await?,
        FunctionCommand::Alias(a) => alias(a).await?,
        FunctionCommand::Concurrency(a) => concurrency(a).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn versions(a: NameArgs) -> Result<()> {
    let c = clients(&a.conn).await?;
    println!(
        "{:<10} {:<46} {:>7}  LAST MODIFIED",
        "VERSION", "CODE SHA256", "MEMORY"
    );
    let mut pages = c
        .lambda
        .list_versions_by_function()
        .function_name(&a.name)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for v in page.map_err(sdk_error)?.versions() {
            println!(
                "{:<10} {:<46} {:>4} MB  {}",
                v.version().unwrap_or_default(),
                v.code_sha256().unwrap_or_default(),
                v.memory_size().unwrap_or_default(),
                v.last_modified().unwrap_or_default()
            );
        }
    }
    let mut pages = c
        .lambda
        .list_aliases()
        .function_name(&a.name)
        .into_paginator()
        .send();
    let mut header = false;
    while let Some(page) = pages.next().await {
        for al in page.map_err(sdk_error)?.aliases() {
            if !header {
                println!("\n{:<20} {:<10} ROUTING", "ALIAS", "VERSION");
                header = true;
            }
            let routing = al
                .routing_config()
                .and_then(|r| r.additional_version_weights())
                .map(|w| {
                    w.iter()
                        .map(|(v, weight)| format!("{v}={weight}"))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            println!(
                "{:<20} {:<10} {routing}",
                al.name().unwrap_or_default(),
                al.function_version().unwrap_or_default()
            );
        }
    }
    Ok(())
}

fn parse_route(route: &str) -> Result<HashMap<String, f64>> {
    let (version, weight) = route
        .split_once('=')
        .with_context(|| format!("--route {route}: expected VERSION=WEIGHT"))?;
    let weight: f64 = weight
        .parse()
        .with_context(|| format!("--route {route}: the weight is a number from 0 to 1"))?;
    Ok(HashMap::from([(version.to_string(), weight)]))
}

async fn alias(a: AliasArgs) -> Result<()> {
    use aws_sdk_lambda::types::AliasRoutingConfiguration;
    let c = clients(&a.conn).await?;
    if a.delete {
        c.lambda
            .delete_alias()
            .function_name(&a.name)
            .name(&a.alias)
            .send()
            .await
            .map_err(sdk_error)?;
        println!("deleted alias {}:{}", a.name, a.alias);
        return Ok(());
    }
    let routing = a.route.as_deref().map(parse_route).transpose()?.map(|w| {
        AliasRoutingConfiguration::builder()
            .set_additional_version_weights(Some(w))
            .build()
    });
    let exists = c
        .lambda
        .get_alias()
        .function_name(&a.name)
        .name(&a.alias)
        .send()
        .await
        .is_ok();
    let arn = if exists {
        c.lambda
            .update_alias()
            .function_name(&a.name)
            .name(&a.alias)
            .set_function_version(a.version)
            .set_description(a.description)
            .set_routing_config(routing)
            .send()
            .await
            .map_err(sdk_error)?
            .alias_arn
    } else {
        c.lambda
            .create_alias()
            .function_name(&a.name)
            .name(&a.alias)
            .set_function_version(a.version)
            .set_description(a.description)
            .set_routing_config(routing)
            .send()
            .await
            .map_err(sdk_error)?
            .alias_arn
    };
    println!(
        "{} {}",
        if exists { "updated" } else { "created" },
        arn.unwrap_or_default()
    );
    Ok(())
}

async fn concurrency(a: ConcurrencyArgs) -> Result<()> {
    let c = clients(&a.conn).await?;
    match a.reserved {
        Some(Reserved::Count(n)) => {
            c.lambda
                .put_function_concurrency()
                .function_name(&a.name)
                .reserved_concurrent_executions(n)
                .send()
                .await
                .map_err(sdk_error)?;
        }
        Some(Reserved::None) => {
            c.lambda
                .delete_function_concurrency()
                .function_name(&a.name)
                .send()
                .await
                .map_err(sdk_error)?;
        }
        None => {}
    }
    if let (Some(n), Some(q)) = (a.provisioned, &a.qualifier) {
        if n == 0 {
            c.lambda
                .delete_provisioned_concurrency_config()
                .function_name(&a.name)
                .qualifier(q)
                .send()
                .await
                .map_err(sdk_error)?;
        } else {
            c.lambda
                .put_provisioned_concurrency_config()
                .function_name(&a.name)
                .qualifier(q)
                .provisioned_concurrent_executions(n)
                .send()
                .await
                .map_err(sdk_error)?;
            if a.wait {
                let pb = spinner(format!("initialising {n} environments of {}:{q}", a.name));
                let waited = wait_provisioned(&c.lambda, &a.name, q).await;
                pb.finish_and_clear();
                waited?;
            }
        }
    }
    let reserved = c
        .lambda
        .get_function_concurrency()
        .function_name(&a.name)
        .send()
        .await
        .map_err(sdk_error)?
        .reserved_concurrent_executions();
    match reserved {
        Some(n) => println!("reserved concurrency: {n}"),
        None => println!("reserved concurrency: none (shares the unreserved pool)"),
    }
    let configs = c
        .lambda
        .list_provisioned_concurrency_configs()
        .function_name(&a.name)
        .send()
        .await
        .map_err(sdk_error)?;
    for p in configs.provisioned_concurrency_configs() {
        let q = p
            .function_arn()
            .and_then(|arn| arn.rsplit(':').next())
            .unwrap_or_default();
        let mut line = format!(
            "provisioned {q}: {} requested, {} allocated, {}",
            p.requested_provisioned_concurrent_executions()
                .unwrap_or_default(),
            p.allocated_provisioned_concurrent_executions()
                .unwrap_or_default(),
            p.status().map(|s| s.as_str()).unwrap_or_default()
        );
        if let Some(r) = p.status_reason() {
            line += &format!(" ({r})");
        }
        println!("{line}");
    }
    Ok(())
}

/// Polls a provisioned configuration until it is READY (or FAILED).
async fn wait_provisioned(lambda: &aws_sdk_lambda::Client, name: &str, q: &str) -> Result<()> {
    use aws_sdk_lambda::types::ProvisionedConcurrencyStatusEnum as Status;
    for _ in 0..600 {
        let out = lambda
            .get_provisioned_concurrency_config()
            .function_name(name)
            .qualifier(q)
            .send()
            .await
            .map_err(sdk_error)?;
        match out.status() {
            Some(Status::Ready) => return Ok(()),
            Some(Status::Failed) => bail!(
                "provisioned concurrency failed: {}",
                out.status_reason().unwrap_or("no reason given")
            ),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    bail!("provisioned concurrency of {name}:{q} was not ready within 2 minutes")
}

pub(crate) async fn invoke(a: InvokeArgs) -> Result<ExitCode> {
    let c = clients(&a.conn).await?;
    let payload = match &a.payload_file {
        Some(p) if p.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
            s
        }
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => a.payload.clone(),
    };
    let mut req = c
        .lambda
        .invoke()
        .function_name(&a.name)
        .set_qualifier(a.qualifier.clone())
        .payload(Blob::new(payload.into_bytes()));
    if a.asynchronous {
        req = req.invocation_type(InvocationType::Event);
    } else {
        req = req.log_type(LogType::Tail);
    }
    let out = req.send().await.map_err(sdk_error)?;
    if a.asynchronous {
        println!("accepted (status {})", out.status_code());
        return Ok(ExitCode::SUCCESS);
    }
    if !a.quiet
        && let Some(log) = out.log_result()
    {
        let text = base64::engine::general_purpose::STANDARD
            .decode(log)
            .unwrap_or_default();
        eprint!("{}", String::from_utf8_lossy(&text));
    }
    let body = out
        .payload()
        .map(|b| b.as_ref().to_vec())
        .unwrap_or_default();
    let mut stdout = std::io::stdout();
    stdout.write_all(&body)?;
    stdout.write_all(b"\n")?;
    match out.function_error() {
        Some(kind) => {
            eprintln!("nimbus: function error ({kind})");
            Ok(ExitCode::from(1))
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

pub(crate) async fn logs(a: LogsArgs) -> Result<ExitCode> {
    let c = clients(&a.conn).await?;
    let group = format!("/aws/lambda/{}", a.name);
    let mut start = chrono::Utc::now().timestamp_millis() - a.since_minutes * 60_000;
    let mut seen_last: Option<String> = None;
    loop {
        let mut token: Option<String> = None;
        let mut newest = start;
        let mut last_id = seen_last.clone();
        loop {
            let out = c
                .logs
                .filter_log_events()
                .log_group_name(&group)
                .start_time(start)
                .set_next_token(token.clone())
                .send()
                .await;
            let out = match out {
                Ok(o) => o,
                Err(e) => {
                    let (code, msg) = match e.as_service_error() {
                        Some(se) => (
                            se.code().unwrap_or("Error").to_string(),
                            se.message().unwrap_or("").to_string(),
                        ),
                        None => (
                            "Error".into(),
                            aws_sdk_lambda::error::DisplayErrorContext(&e).to_string(),
                        ),
                    };
                    if code == "ResourceNotFoundException" {
                        bail!(
                            "no logs for {}: the function has not run yet (log group {group} does not exist)",
                            a.name
                        );
                    }
                    bail!("{code}: {msg}");
                }
            };
            for ev in out.events() {
                // On --follow, the window restarts at the newest timestamp;
                // skip what was printed already.
                if let (Some(seen), Some(id)) = (&seen_last, ev.event_id())
                    && id.parse::<i64>().unwrap_or(0) <= seen.parse::<i64>().unwrap_or(0)
                {
                    continue;
                }
                let ts = ev.timestamp().unwrap_or_default();
                let when = chrono::DateTime::from_timestamp_millis(ts).unwrap_or_default();
                println!(
                    "{} {}",
                    when.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                    ev.message().unwrap_or_default()
                );
                newest = newest.max(ts);
                last_id = ev.event_id().map(str::to_string).or(last_id);
            }
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        if !a.follow {
            return Ok(ExitCode::SUCCESS);
        }
        start = newest;
        seen_last = last_id;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
