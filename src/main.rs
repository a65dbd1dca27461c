//! The `recflow` command line: parse, load the pipeline, build the timely configuration, run.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{ArgAction, Args, Parser, Subcommand};

use recflow::source::SynthSource;
use recflow::spec::{Format, Pipeline};
use recflow::RunOptions;

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
}

/// timely's standard worker flags.
#[derive(Args, Clone, Debug)]
#[command(disable_help_flag = true)]
struct WorkerArgs {
    /// Worker threads per process.
    #[arg(short = 'w', long = "workers", default_value_t = 1)]
    workers: usize,
    /// Number of processes.
    #[arg(short = 'n', long = "processes", default_value_t = 1)]
    processes: usize,
    /// This process's index, 0-based.
    #[arg(short = 'p', long = "process", default_value_t = 0)]
    process: usize,
    /// File with one `host:port` line per process (default: localhost:2101, 2102, ...).
    #[arg(short = 'h', long = "hostfile")]
    hostfile: Option<PathBuf>,
    /// Print help.
    #[arg(long = "help", action = ArgAction::Help)]
    help: Option<bool>,
}

#[derive(Args)]
#[command(disable_help_flag = true)]
struct RunArgs {
    /// The pipeline file.
    pipeline: PathBuf,
    /// Read events from `file:PATH`, `PATH`, or `-` (stdin) instead of the pipeline's source.
    #[arg(long)]
    input: Option<String>,
    /// Write the changelog to PATH, or `-` for stdout.
    #[arg(long)]
    output: Option<String>,
    /// Write rejected and late records to PATH (`-` stdout, `stderr`).
    #[arg(long = "dead-letter")]
    dead_letter: Option<String>,
    /// Stop after N input records.
    #[arg(long = "max-events")]
    max_events: Option<u64>,
    /// No status line on stderr.
    #[arg(long, short = 'q')]
    quiet: bool,
    #[command(flatten)]
    workers: WorkerArgs,
}

#[derive(Args)]
struct GenArgs {
    /// The pipeline whose `[source.synth]` settings to use.
    pipeline: PathBuf,
    /// Number of events.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Output file, or `-` for stdout.
    #[arg(long, default_value = "-")]
    output: String,
    /// `csv` (user,item,category,action,ts) or `jsonl`.
    #[arg(long, default_value = "csv")]
    format: String,
    /// Timestamp unit: `s` or `ms`.
    #[arg(long, default_value = "ms")]
    unit: String,
}

fn timely_config(args: &WorkerArgs) -> Result<timely::Config> {
    if args.workers == 0 || args.processes == 0 {
        bail!("-w (workers) and -n (processes) must be at least 1");
    }
    if args.process >= args.processes {
        bail!("-p {} is not a process index below -n {}", args.process, args.processes);
    }
    let communication = if args.processes > 1 {
        let addresses = match &args.hostfile {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("-h {}: cannot read the host file", path.display()))?;
                let lines: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).take(args.processes).map(String::from).collect();
                if lines.len() < args.processes {
                    bail!("-h {}: has {} addresses but -n is {}; write one host:port per line", path.display(), lines.len(), args.processes);
                }
                lines
            }
            None => (0..args.processes).map(|i| format!("localhost:{}", 2101 + i)).collect(),
        };
        timely::CommunicationConfig::Cluster { threads: args.workers, process: args.process, addresses, report: false, zerocopy: false }
    } else if args.workers > 1 {
        timely::CommunicationConfig::Process(args.workers)
    } else {
        timely::CommunicationConfig::Thread
    };
    Ok(timely::Config { communication, worker: timely::WorkerConfig::default() })
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let pipeline = Pipeline::load(&args.pipeline)?;
            let config = timely_config(&args.workers)?;
            let input = args.input.map(|i| PathBuf::from(i.strip_prefix("file:").unwrap_or(&i)));
            let options = RunOptions {
                input,
                output: args.output,
                dead_letter: args.dead_letter,
                max_events: args.max_events,
                status: !args.quiet,
            };
            recflow::run(pipeline, options, config)?;
        }
        Command::Validate { pipeline } => {
            let spec = Pipeline::load(&pipeline)?;
            println!("{}: ok", pipeline.display());
            println!("{}", toml::to_string_pretty(&spec).context("printing the resolved pipeline")?);
        }
        Command::Gen(args) => generate(args)?,
    }
    Ok(())
}

fn generate(args: GenArgs) -> Result<()> {
    let pipeline = Pipeline::load(&args.pipeline)?;
    let format = match args.format.as_str() {
        "csv" => Format::Csv,
        "jsonl" => Format::Jsonl,
        other => bail!("--format {other}: use csv or jsonl"),
    };
    let divisor = match args.unit.as_str() {
        "ms" => 1,
        "s" => 1000,
        other => bail!("--unit {other}: use s or ms"),
    };
    let mut out = recflow::sink::open_destination(&args.output).with_context(|| format!("--output {}", args.output))?;
    let mut synth = SynthSource::new(&pipeline.source.synth);
    for _ in 0..args.events {
        let e = synth.next_event();
        let category = e.category.as_ref().map(ToString::to_string).unwrap_or_default();
        match format {
            Format::Jsonl => {
                let line = serde_json::json!({
                    "user": e.user, "item": e.item, "category": e.category,
                    "action": e.action.name(), "ts": e.ts / divisor,
                });
                writeln!(out, "{line}")?;
            }
            _ => writeln!(out, "{},{},{},{},{}", e.user, e.item, category, e.action.name(), e.ts / divisor)?,
        }
    }
    out.flush()?;
    Ok(())
}
