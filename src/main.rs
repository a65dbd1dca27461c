//! The `recflow` command line: parse it and hand each subcommand to its file in [`recflow::cli`].

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use recflow::cli::subscribe::SubscribeArgs;
use recflow::cli::{self, bench::BenchArgs, eval::EvalArgs, gen::GenArgs, produce::ProduceArgs, run::RunArgs};

#[derive(Parser)]
#[command(name = "recflow", version, about = "Real-time recommendations as an incremental dataflow")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline until its input ends (or forever, for an unbounded source).
    Run(RunArgs),
    /// Check a pipeline file and print the settings it resolves to.
    Validate {
        /// The pipeline file.
        pipeline: PathBuf,
    },
    /// Write the synthetic generator's events to a file.
    Gen(GenArgs),
    /// Measure a pipeline: throughput, update latency percentiles and peak memory.
    Bench(BenchArgs),
    /// Write a file's events to a Kafka topic, keyed by user.
    Produce(ProduceArgs),
    /// Print the changes on a recommendations or hot-items topic as they happen.
    Subscribe(SubscribeArgs),
    /// Replay a file test-then-learn and measure the recommendations: HR@k, NDCG, MRR, coverage.
    Eval(EvalArgs),
    /// List the checkpoints `run --checkpoint DIR` took, newest first.
    Checkpoints {
        /// The checkpoint directory.
        dir: PathBuf,
    },
}

/// jemalloc instead of the system allocator: with two workers, glibc's malloc spent about a
/// quarter of the run in its arena locks and chunk bookkeeping, and the personalised benchmark ran
/// at half the speed (`perf`, `recflow bench pipelines/bench.toml -w 2`). mimalloc was as fast only
/// with purging turned off, which needs an unsafe call.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Runs the command. An error is printed as its message followed by its causes, on one line,
/// and the exit status is 1; never with a backtrace, even under `RUST_BACKTRACE` (which is for
/// panics): a configuration mistake deserves a sentence, not a stack.
fn main() -> std::process::ExitCode {
    match dispatch(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {}", one_line(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error's message followed by those of its causes that it does not already quote.
fn one_line(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1).map(|cause| cause.to_string()) {
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => cli::run::main(args),
        Command::Validate { pipeline } => cli::validate::main(&pipeline),
        Command::Gen(args) => cli::gen::main(args),
        Command::Produce(args) => cli::produce::main(args),
        Command::Subscribe(args) => cli::subscribe::main(args),
        Command::Bench(args) => cli::bench::main(args),
        Command::Eval(args) => cli::eval::main(args),
        Command::Checkpoints { dir } => cli::checkpoints::main(&dir),
    }
}
