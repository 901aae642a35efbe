//! `nimbus-bench`: measures nimbus's warm invoke latency and throughput,
//! cold starts and memory in one run, each beside a floor measured in the
//! same run on the same machine, and prints a Markdown report.
//!
//! ```text
//! cargo build --release -p nimbus-cli -p rust-echo -p nimbus-bench
//! cargo run --release -p nimbus-bench -- [--quick] [--duration SECS] [--out FILE]
//! ```
//!
//! See BENCHMARKS.md at the repository root for what is measured and the
//! latest figures.

mod authbench;
mod bench;
mod client;
mod echo;
mod events;
mod fixtures;
mod load;
mod procs;
mod report;
mod s3bench;
mod scale;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Benchmarks a nimbus server (started by this harness on a temporary data
/// directory, loopback only) against floors measured in the same run: a
/// plain hyper echo server, `python3 -c pass` and `node -e 0`.
#[derive(Debug, Parser)]
#[command(name = "nimbus-bench")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    options: Options,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The hyper echo server used as the HTTP floor (started by the harness
    /// itself as a separate process).
    #[command(hide = true)]
    EchoServer,
    /// Only the load generator, against a running server (for profiling):
    /// prints p50/p99 and throughput.
    #[command(hide = true)]
    Load {
        /// A loopback URL, e.g. http://127.0.0.1:9070/2015-03-31/functions/f/invocations
        url: String,
        #[arg(long, default_value_t = 1)]
        clients: usize,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
    },
    /// Many functions under a memory budget that holds few of their
    /// environments: deploys them, invokes them in random order, reports
    /// errors, throughput, cold/warm latency, memory and evictions.
    Scale(scale::ScaleArgs),
    /// PutObject/GetObject throughput of the object store, 4 KiB and 64
    /// MiB objects, beside a file-system floor measured in the same run.
    S3(s3bench::S3Args),
    /// Event delivery latency: from an S3 upload to the start of the
    /// handler its bucket notification triggers, beside a synchronous
    /// invoke of the same function.
    Events(events::EventsArgs),
    /// Per-request cost of SigV4 verification and IAM policy evaluation,
    /// in-process on one thread (no server): prints ns per operation.
    Auth {
        /// Seconds per measurement round (5 rounds per operation).
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
    },
}

/// What to run and for how long.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Options {
    /// The nimbus binary [default: `nimbus` next to this executable, i.e.
    /// target/release/nimbus].
    #[arg(long, value_name = "PATH")]
    pub(crate) nimbus: Option<PathBuf>,
    /// The rust-echo fixture deployed as the provided.al2023 function
    /// [default: `bootstrap` next to this executable].
    #[arg(long, value_name = "PATH")]
    pub(crate) bootstrap: Option<PathBuf>,
    /// Seconds of load per warm measurement point (target x clients),
    /// split into interleaved rounds [default: 8; 2 with --quick].
    #[arg(long, value_name = "SECS")]
    pub(crate) duration: Option<f64>,
    /// A short run (about 40 s) for a quick look; figures are noisier.
    #[arg(long)]
    pub(crate) quick: bool,
    /// Cold starts measured per runtime [default: 20; 6 with --quick].
    #[arg(long, value_name = "N")]
    pub(crate) cold_samples: Option<usize>,
    /// Python interpreter for the `python3 -c pass` floor [default: the one
    /// nimbus runs Python environments with, read from /proc].
    #[arg(long, value_name = "PATH")]
    pub(crate) python: Option<PathBuf>,
    /// Node interpreter for the `node -e 0` floor [default: the one nimbus
    /// runs Node environments with].
    #[arg(long, value_name = "PATH")]
    pub(crate) node: Option<PathBuf>,
    /// Python runtime id of the Python functions [default: the version of
    /// the host's `python3`, e.g. python3.11].
    #[arg(long, value_name = "ID")]
    pub(crate) python_runtime: Option<String>,
    /// Node runtime id of the Node function [default: from `node
    /// --version`, e.g. nodejs20.x].
    #[arg(long, value_name = "ID")]
    pub(crate) node_runtime: Option<String>,
    /// Extra argument for `nimbus serve` (repeatable), e.g.
    /// `--serve-arg=--runtime=python3.11=/usr/bin/python3.11` to benchmark
    /// another interpreter.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub(crate) serve_arg: Vec<String>,
    /// MemorySize of the benchmark's functions [default: 1769, one full
    /// vCPU: jailed, a function gets CPU in proportion to its memory, as on
    /// Lambda, and at 128 MB (7% of a CPU) the quota, not the platform,
    /// would be what the warm figures measure].
    #[arg(long, value_name = "MB", default_value_t = 1769)]
    pub(crate) memory_size: u32,
    /// Also write the report to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::EchoServer) => echo::serve(),
        Some(Command::Load {
            url,
            clients,
            duration,
        }) => load::standalone(&url, clients, duration),
        Some(Command::Auth { seconds }) => authbench::run(seconds),
        Some(Command::Scale(args)) => scale::run(args),
        Some(Command::S3(args)) => s3bench::run(args),
        Some(Command::Events(args)) => events::run(args),
        None => bench::run(cli.options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nimbus-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
