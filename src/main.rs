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
    /// Measure a pipeline: throughput, update latency percentiles and peak memory.
    Bench(BenchArgs),
    /// Replay a file test-then-learn and measure the recommendations: HR@k, NDCG, MRR, coverage.
    Eval(EvalArgs),
}

#[derive(Args)]
#[command(disable_help_flag = true)]
struct EvalArgs {
    /// The pipeline file.
    pipeline: PathBuf,
    /// Replay `file:PATH` (or `PATH`, or `-` for stdin) instead of the pipeline's `source.path`.
    #[arg(long)]
    input: Option<String>,
    /// List length (default: the pipeline's `recommend.k`).
    #[arg(short = 'k', long = "k")]
    k: Option<usize>,
    /// Share of the events, from the start, that are learned but not scored.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Number of slices of the stream for the per-slice metrics and the plot.
    #[arg(long, default_value_t = 20)]
    slices: usize,
    /// Another pipeline file whose `[weights]` and `[recommend]` to evaluate on the same replay.
    #[arg(long)]
    compare: Vec<PathBuf>,
    /// Directory for `metrics.csv`, `latency.csv` and `hr.svg`.
    #[arg(long, default_value = "eval-out")]
    out: PathBuf,
    /// No progress bar.
    #[arg(long, short = 'q')]
    quiet: bool,
    #[command(flatten)]
    workers: WorkerArgs,
}

#[derive(Args)]
#[command(disable_help_flag = true)]
struct BenchArgs {
    /// The pipeline file.
    pipeline: PathBuf,
    /// Input records per run (synthetic unless --input is given).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Read events from `file:PATH` instead of the synthetic generator.
    #[arg(long)]
    input: Option<String>,
    /// Feed the synthetic generator at this many events per second (0: as fast as possible).
    #[arg(long)]
    rate: Option<u64>,
    /// Override the synthetic generator's number of users.
    #[arg(long)]
    users: Option<u64>,
    /// Override the synthetic generator's number of items.
    #[arg(long)]
    items: Option<u64>,
    /// Override the similarity refresh cadence, such as `5m`.
    #[arg(long)]
    refresh: Option<String>,
    /// Number of runs; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[command(flatten)]
    workers: WorkerArgs,
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
            let resolved = toml::to_string_pretty(&spec).context("printing the resolved pipeline")?;
            // A closed pipe (`| head`) is not an error worth reporting.
            let _ = writeln!(std::io::stdout(), "{}: ok\n{resolved}", pipeline.display());
        }
        Command::Gen(args) => generate(args)?,
        Command::Bench(args) => bench(args)?,
        Command::Eval(args) => eval(args)?,
    }
    Ok(())
}

fn eval(args: EvalArgs) -> Result<()> {
    let pipeline = Pipeline::load(&args.pipeline)?;
    let input = match (&args.input, &pipeline.source.path) {
        (Some(input), _) => PathBuf::from(input.strip_prefix("file:").unwrap_or(input)),
        (None, Some(path)) if pipeline.source.kind == recflow::spec::SourceKind::File => path.clone(),
        _ => bail!("{}: has no source.path; pass --input file:PATH", args.pipeline.display()),
    };
    let mut compare = Vec::new();
    for path in &args.compare {
        let other = Pipeline::load(path)?;
        if other.source != pipeline.source || other.time != pipeline.time {
            eprintln!(
                "recflow: --compare {}: replayed with the [source] and [time] of {} (its own are not used)",
                path.display(),
                args.pipeline.display()
            );
        }
        let name = path.file_stem().map_or_else(|| other.name.clone(), |s| s.to_string_lossy().into_owned());
        compare.push((name, other));
    }
    let options = recflow::eval::EvalOptions {
        input,
        k: args.k,
        warmup: args.warmup,
        slices: args.slices,
        compare,
        progress: !args.quiet,
    };
    let Some(report) = recflow::eval::evaluate(&pipeline, &options, timely_config(&args.workers)?)? else {
        return Ok(());
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("--out {}", args.out.display()))?;
    let (csv, latency, svg) = (args.out.join("metrics.csv"), args.out.join("latency.csv"), args.out.join("hr.svg"));
    recflow::eval::report::write_csv(&report, &csv)?;
    recflow::eval::report::write_latency_csv(&report, &latency)?;
    recflow::eval::plot::write_svg(&report, &svg)?;
    let _ = write!(std::io::stdout(), "{}", recflow::eval::report::table(&report));
    let _ = writeln!(std::io::stdout(), "\nwrote {}, {} and {}", csv.display(), latency.display(), svg.display());
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

fn bench(args: BenchArgs) -> Result<()> {
    let mut pipeline = Pipeline::load(&args.pipeline)?;
    let synth = &mut pipeline.source.synth;
    if let Some(rate) = args.rate {
        synth.rate = rate;
    }
    if let Some(users) = args.users {
        synth.users = users;
    }
    if let Some(items) = args.items {
        synth.items = items;
    }
    if let (Some(refresh), Some(recommend)) = (&args.refresh, pipeline.recommend.as_mut()) {
        recommend.similarity.refresh =
            recflow::spec::Span::parse(refresh).map_err(anyhow::Error::msg).context("--refresh")?;
    }
    pipeline.validate(&args.pipeline.display().to_string())?;
    let input = match &args.input {
        Some(i) => Some(PathBuf::from(i.strip_prefix("file:").unwrap_or(i))),
        None => {
            pipeline.source.kind = recflow::spec::SourceKind::Synth;
            None
        }
    };
    let mut rows = Vec::new();
    for run in 1..=args.runs.max(1) {
        let options = RunOptions {
            input: input.clone(),
            output: Some("/dev/null".into()),
            dead_letter: Some("/dev/null".into()),
            max_events: Some(args.events),
            status: false,
        };
        let started = std::time::Instant::now();
        let counters = recflow::run(pipeline.clone(), options, timely_config(&args.workers)?)?;
        let secs = started.elapsed().as_secs_f64();
        let rate = counters.records_in as f64 / secs;
        let (p50, p99) = (counters.latency_p50_ms.unwrap_or(f64::NAN), counters.latency_p99_ms.unwrap_or(f64::NAN));
        println!(
            "run {run}: {} records in {secs:.2}s = {rate:.0} records/s; update latency p50 {p50:.1} ms, p99 {p99:.1} ms; {} output records",
            counters.records_in, counters.output_records
        );
        rows.push((rate, p50, p99));
    }
    let median = |mut xs: Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    println!(
        "median of {} runs: {:.0} records/s, update latency p50 {:.1} ms, p99 {:.1} ms; peak memory {} MiB",
        rows.len(),
        median(rows.iter().map(|r| r.0).collect()),
        median(rows.iter().map(|r| r.1).collect()),
        median(rows.iter().map(|r| r.2).collect()),
        peak_rss_mib().map_or("unknown".to_string(), |m| m.to_string()),
    );
    Ok(())
}

/// The process's peak resident memory (VmHWM), in MiB.
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}
