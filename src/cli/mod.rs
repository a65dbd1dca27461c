//! The `recflow` subcommands, one file each: tools that use the library and that nothing in the
//! library imports. `main.rs` parses the command line and hands each subcommand its arguments
//! here. Like `main`, these report errors with `anyhow`: they are where an error meets the user.
//!
//! [`stats`] holds the figures the benchmarks share (percentiles, medians, peak memory).

pub mod bench;
pub mod checkpoints;
pub mod eval;
pub mod gen;
pub mod produce;
pub mod run;
pub mod stats;
pub mod subscribe;
pub mod validate;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{ArgAction, Args};

use crate::pipeline_file;
use crate::source::{InputAddress, InputForms};
use crate::spec::{Pipeline, SourceKind};

/// timely's standard worker flags.
#[derive(Args, Clone, Debug)]
#[command(disable_help_flag = true)]
pub struct WorkerArgs {
    /// Worker threads per process.
    #[arg(short = 'w', long = "workers", default_value_t = 1)]
    pub workers: usize,
    /// Number of processes.
    #[arg(short = 'n', long = "processes", default_value_t = 1)]
    pub processes: usize,
    /// This process's index, 0-based.
    #[arg(short = 'p', long = "process", default_value_t = 0)]
    pub process: usize,
    /// File with one `host:port` line per process (default: localhost:2101, 2102, ...).
    #[arg(short = 'h', long = "hostfile")]
    pub hostfile: Option<PathBuf>,
    /// Print help.
    #[arg(long = "help", action = ArgAction::Help)]
    pub help: Option<bool>,
}

/// The timely configuration of the standard worker flags: one thread, several threads of one
/// process, or a cluster of processes whose addresses come from `-h` or default to
/// `localhost:2101`, `2102`, ...
pub fn timely_config(args: &WorkerArgs) -> Result<timely::Config> {
    if args.workers == 0 || args.processes == 0 {
        bail!("-w (workers) and -n (processes) must be at least 1");
    }
    if args.process >= args.processes {
        bail!("-p {} is not a process index below -n {}", args.process, args.processes);
    }
    let communication = if args.processes > 1 {
        let addresses = match &args.hostfile {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("-h {}: cannot read the host file", path.display()))?;
                let lines: Vec<String> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .take(args.processes)
                    .map(String::from)
                    .collect();
                if lines.len() < args.processes {
                    bail!(
                        "-h {}: has {} addresses but -n is {}; write one host:port per line",
                        path.display(),
                        lines.len(),
                        args.processes
                    );
                }
                lines
            }
            None => (0..args.processes).map(|i| format!("localhost:{}", 2101 + i)).collect(),
        };
        timely::CommunicationConfig::Cluster {
            threads: args.workers,
            process: args.process,
            addresses,
            report: false,
            zerocopy: false,
        }
    } else if args.workers > 1 {
        timely::CommunicationConfig::Process(args.workers)
    } else {
        timely::CommunicationConfig::Thread
    };
    Ok(timely::Config { communication, worker: timely::WorkerConfig::default() })
}

/// Parses an `--input` that names a file or standard input; returns the path a file source
/// opens (`-` for standard input).
pub fn parse_file_input(text: &str) -> Result<PathBuf> {
    let input = InputAddress::parse(text, InputForms::Files).map_err(|e| anyhow::anyhow!("--input {e}"))?;
    input.path().context("--input names no file")
}

/// Loads a pipeline for its synthetic-generator settings or record layout only, so that a
/// pipeline reading Kafka without brokers configured (they come from `--input`), or a file
/// pipeline without a path, still loads. Its source keeps its kind.
pub fn load_ignoring_source_kind(path: &Path) -> Result<Pipeline> {
    let pipeline = pipeline_file::read(path)?;
    let mut checked = pipeline.clone();
    checked.source.kind = SourceKind::Synth;
    checked.validate(&path.display().to_string())?;
    Ok(pipeline)
}
