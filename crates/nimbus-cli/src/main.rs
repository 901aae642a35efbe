//! `nimbus`: AWS Lambda (and soon ECR and ECS) as one self-hosted binary.
//!
//! `nimbus serve` runs the server; every other command is a client of its
//! public, AWS-compatible HTTP API, exactly as the AWS CLI would be.

mod client;
mod dlq;
mod s3;
mod serve;
mod trigger;
mod usage;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// nimbus: your own AWS Lambda, in one binary that the real AWS CLI and SDKs
/// talk to unchanged.
#[derive(Debug, Parser)]
#[command(
    name = "nimbus",
    version,
    after_help = "Quick start:\n  nimbus serve                                   # in one terminal\n  \
                  nimbus function create hello --code ./hello --runtime python3.11 --handler lambda_function.lambda_handler\n  \
                  nimbus invoke hello --payload '{\"key1\": \"value1\"}'\n  nimbus logs hello\n\n\
                  The AWS CLI and SDKs work too: aws --endpoint-url http://127.0.0.1:9070 lambda list-functions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the nimbus server (all APIs, the Runtime API, on one port).
    Serve(serve::ServeArgs),
    /// Create, list, inspect, change and delete functions; publish versions,
    /// manage aliases and concurrency.
    #[command(subcommand)]
    Function(client::FunctionCommand),
    /// Invoke a function and print its result (exit status 1 on a function
    /// error).
    Invoke(client::InvokeArgs),
    /// Print a function's logs (log group /aws/lambda/NAME).
    Logs(client::LogsArgs),
    /// Print requests, GB-seconds and their cost per function and in total,
    /// with the monthly free tier shown separately.
    Usage(usage::UsageArgs),
    /// List and replay asynchronous invocations that failed for good
    /// (nimbus's dead-letter store).
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Show the event sources wired to a function (S3 notifications,
    /// EventBridge rules, Scheduler schedules).
    #[command(subcommand)]
    Trigger(trigger::TriggerCommand),
}

/// Where nimbus keeps its data unless told otherwise: `$NIMBUS_DATA_DIR`,
/// else `$XDG_DATA_HOME/nimbus`, else `~/.local/share/nimbus`.
pub(crate) fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("nimbus");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/share/nimbus")
}

/// The hidden argument that makes this binary the jail helper
/// (`nimbus_sandbox::jail`), which the server starts for every jailed
/// execution environment.
const JAIL_HELPER_ARG: &str = "__jail";

fn main() -> ExitCode {
    // Before anything else: the helper must stay single-threaded.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == JAIL_HELPER_ARG)
    {
        nimbus_sandbox::jail::main();
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nimbus: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Function(cmd) => client::function(cmd).await,
            Command::Invoke(args) => client::invoke(args).await,
            Command::Logs(args) => client::logs(args).await,
            Command::Usage(args) => usage::usage(args).await,
            Command::Dlq(cmd) => dlq::dlq(cmd).await,
            Command::Trigger(cmd) => trigger::trigger(cmd).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line for the user: the chain of causes, outermost first.
            let chain: Vec<String> = e.chain().map(ToString::to_string).collect();
            eprintln!("nimbus: {}", chain.join(": "));
            ExitCode::from(2)
        }
    }
}
