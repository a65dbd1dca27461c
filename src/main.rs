//! The `recflow` command line: parse, load the pipeline, build the timely configuration, run.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{ArgAction, Args, Parser, Subcommand};

use recflow::kafka::produce::{ProduceFormat, ProduceOptions};
use recflow::kafka::{self, subscribe::SubscribeOptions};
use recflow::pipeline_file;
use recflow::source::{InputAddress, InputForms, SynthSource};
use recflow::spec::kafka_address::KafkaAddress;
use recflow::spec::{Format, Pipeline, SourceKind, SourceSpec};
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
    /// Write a file's events to a Kafka topic, keyed by user.
    Produce(ProduceArgs),
    /// Print the changes on a recommendations or hot-items topic as they happen.
    Subscribe(SubscribeArgs),
    /// Replay a file test-then-learn and measure the recommendations: HR@k, NDCG, MRR, coverage.
    Eval(EvalArgs),
}

#[derive(Args)]
struct ProduceArgs {
    /// The events, one per line: `file:PATH`, `PATH` or `-` (standard input).
    #[arg(long)]
    input: String,
    /// The topic: kafka://HOST:PORT/TOPIC (created if missing).
    #[arg(long)]
    to: String,
    /// A pipeline whose `[source]` describes the file's layout and the payloads it reads from
    /// Kafka (default: the built-in CSV layout user,item,category,action,ts in seconds, JSON
    /// payloads).
    #[arg(long)]
    pipeline: Option<PathBuf>,
    /// Payload: `raw` (each line as it is), `json`, `csv`, `tsv` or `bincode` (default: what
    /// the pipeline's source reads from Kafka).
    #[arg(long)]
    format: Option<ProduceFormat>,
    /// Events per second (default: as fast as possible).
    #[arg(long)]
    rate: Option<u64>,
    /// Partitions of the topic, when it has to be created.
    #[arg(long, default_value_t = 1)]
    partitions: usize,
    /// No progress on stderr.
    #[arg(long, short = 'q')]
    quiet: bool,
}

#[derive(Args)]
struct SubscribeArgs {
    /// The topic: kafka://HOST:PORT/TOPIC.
    topic: String,
    /// Only this user's changes.
    #[arg(long)]
    user: Option<String>,
    /// Start with the oldest retained change, not only new ones.
    #[arg(long = "from-beginning")]
    from_beginning: bool,
    /// Stop at the end the topic had when the command started.
    #[arg(long)]
    bounded: bool,
    /// Print JSON lines instead of readable lines.
    #[arg(long)]
    json: bool,
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
    /// Seeds of the item-kNN baselines: each user's this many most recent items.
    #[arg(long, default_value_t = 10)]
    knn_seeds: usize,
    /// Another pipeline file whose `[weights]` and `[recommend]` to evaluate on the same replay.
    #[arg(long)]
    compare: Vec<PathBuf>,
    /// Directory for `metrics.csv`, `latency.csv`, `hr.svg` and `tradeoff.svg`.
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
    /// Read events from `file:PATH`, `PATH` or `-` (standard input, with --runs 1) instead of the
    /// synthetic generator.
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
    /// Measure Kafka → top-k on this broker (`HOST:PORT`): events are produced to a fresh topic
    /// and read back by the pipeline; with --rate, end-to-end latency is measured.
    #[arg(long)]
    kafka: Option<String>,
    /// Partitions of the Kafka input topic.
    #[arg(long, default_value_t = 4)]
    partitions: usize,
    /// Measure serving: point queries from --clients connections for --seconds while the
    /// synthetic stream flows (at --rate), and --posts posted events until a subscriber sees them.
    #[arg(long)]
    serve: bool,
    /// Query connections for --serve.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Seconds of query load for --serve.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Posted events timed to a subscriber for --serve.
    #[arg(long, default_value_t = 20)]
    posts: usize,
    /// Users forgotten (DELETE) with --serve, each timed until the forgetting is complete.
    #[arg(long, default_value_t = 10, value_name = "N")]
    forgets: usize,
    /// Subscriptions held open (and read) during the --serve query load.
    #[arg(long, default_value_t = 0, value_name = "N")]
    subscribers: usize,
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
    /// Read events from `file:PATH`, `PATH`, `-` (stdin) or `kafka://HOST:PORT/TOPIC` instead of
    /// the pipeline's source.
    #[arg(long)]
    input: Option<String>,
    /// Write the changelog to PATH, `-` for stdout, or `kafka://HOST:PORT/TOPIC`.
    #[arg(long)]
    output: Option<String>,
    /// Write rejected and late records to PATH (`-` stdout, `stderr`, `kafka://HOST:PORT/TOPIC`).
    #[arg(long = "dead-letter")]
    dead_letter: Option<String>,
    /// Stop after N input records (per reading worker, for Kafka).
    #[arg(long = "max-events")]
    max_events: Option<u64>,
    /// Kafka: read each partition up to its end offset at start, then close all windows and exit.
    #[arg(long)]
    bounded: bool,
    /// No status line on stderr.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Serve results over HTTP/SSE on ADDR (default 127.0.0.1:8080; port 0 picks a free one),
    /// with the `[serve]` settings of the pipeline or their defaults.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = recflow::spec::DEFAULT_SERVE_ADDR)]
    serve: Option<String>,
    /// Keep serving this long after a finite input ended: a duration such as `30s`, or `forever`
    /// (until Ctrl-C); overrides `serve.linger`.
    #[arg(long = "serve-linger", value_name = "DURATION")]
    serve_linger: Option<String>,
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
        Command::Run(args) => {
            let mut pipeline = pipeline_file::read(&args.pipeline)?;
            let config = timely_config(&args.workers)?;
            let input = replace_source(&mut pipeline, args.input.as_deref())?;
            if args.bounded {
                if pipeline.source.kind != SourceKind::Kafka {
                    bail!("--bounded applies to Kafka sources; files and --max-events are bounded already");
                }
                pipeline.source.kafka.bounded = true;
            }
            if let Some(addr) = args.serve {
                pipeline.serve.get_or_insert_with(Default::default).addr = addr;
            }
            if let Some(linger) = &args.serve_linger {
                let Some(serve) = pipeline.serve.as_mut() else {
                    bail!("--serve-linger needs --serve or a [serve] table");
                };
                serve.linger =
                    recflow::spec::Linger::parse(linger).map_err(anyhow::Error::msg).context("--serve-linger")?;
            }
            pipeline.validate(&args.pipeline.display().to_string())?;
            let options = RunOptions {
                input,
                output: args.output,
                dead_letter: args.dead_letter,
                max_events: args.max_events,
                status: !args.quiet,
                stop: Some(stop_on_signals()?),
            };
            recflow::run(pipeline, options, config)?;
        }
        Command::Validate { pipeline } => {
            let spec = pipeline_file::load(&pipeline)?;
            let resolved = toml::to_string_pretty(&spec).context("printing the resolved pipeline")?;
            // A closed pipe (`| head`) is not an error worth reporting.
            let _ = writeln!(std::io::stdout(), "{}: ok\n{resolved}", pipeline.display());
        }
        Command::Gen(args) => generate(args)?,
        Command::Produce(args) => {
            let to = KafkaAddress::parse(&args.to).map_err(anyhow::Error::msg).context("--to")?;
            let layout = match &args.pipeline {
                Some(path) => load_ignoring_source_kind(path)?.source,
                None => SourceSpec::default(),
            };
            let format = args.format.unwrap_or_else(|| ProduceFormat::expected_by(&layout));
            let options = ProduceOptions {
                to,
                partitions: args.partitions.max(1),
                rate: args.rate,
                format,
                progress: !args.quiet,
            };
            let report = kafka::produce::produce(&parse_file_input(&args.input)?, &layout, &options)?;
            eprintln!(
                "recflow produce: {} messages delivered in {:.2}s ({:.0}/s) as {} payloads; {} lines did not decode and were sent as they are",
                report.delivered,
                report.seconds,
                report.delivered as f64 / report.seconds.max(1e-9),
                format.name(),
                report.undecodable
            );
        }
        Command::Subscribe(args) => {
            let from = KafkaAddress::parse(&args.topic).map_err(anyhow::Error::msg).context("TOPIC")?;
            let options = SubscribeOptions {
                from,
                key: args.user,
                from_beginning: args.from_beginning,
                bounded: args.bounded,
                json: args.json,
            };
            kafka::subscribe::subscribe(&options, &mut std::io::stdout().lock())?;
        }
        Command::Bench(args) => bench(args)?,
        Command::Eval(args) => eval(args)?,
    }
    Ok(())
}

/// Points the pipeline at `run --input` (a file, standard input or a Kafka topic), if given;
/// returns the path a file source opens (`-` for standard input), `None` for the pipeline's own
/// source or a topic.
fn replace_source(pipeline: &mut Pipeline, input: Option<&str>) -> Result<Option<PathBuf>> {
    let Some(text) = input else { return Ok(None) };
    let source = &mut pipeline.source;
    Ok(match InputAddress::parse(text, InputForms::FilesOrKafka).map_err(|e| anyhow::anyhow!("--input {e}"))? {
        InputAddress::Kafka(address) => {
            source.read_topic(address.brokers, address.topic);
            None
        }
        InputAddress::Stdin => {
            source.kind = SourceKind::Stdin;
            Some(PathBuf::from("-"))
        }
        InputAddress::File(path) => {
            source.kind = SourceKind::File;
            source.path = Some(path.clone());
            Some(path)
        }
    })
}

/// Parses an `--input` that names a file or standard input; returns the path a file source
/// opens (`-` for standard input).
fn parse_file_input(text: &str) -> Result<PathBuf> {
    let input = InputAddress::parse(text, InputForms::Files).map_err(|e| anyhow::anyhow!("--input {e}"))?;
    input.path().context("--input names no file")
}

/// A flag raised by the first Ctrl-C (SIGINT) or SIGTERM, which ends the input so the run writes
/// its final results, commits offsets and exits; a second signal exits at once.
fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))
            .context("installing the signal handler")?;
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("installing the signal handler")?;
    }
    Ok(stop)
}

/// Loads a pipeline for its synthetic-generator settings or record layout only, so that a
/// pipeline reading Kafka without brokers configured (they come from `--input`), or a file
/// pipeline without a path, still loads. Its source keeps its kind.
fn load_ignoring_source_kind(path: &std::path::Path) -> Result<Pipeline> {
    let pipeline = pipeline_file::read(path)?;
    let mut checked = pipeline.clone();
    checked.source.kind = SourceKind::Synth;
    checked.validate(&path.display().to_string())?;
    Ok(pipeline)
}

fn eval(args: EvalArgs) -> Result<()> {
    let pipeline = pipeline_file::load(&args.pipeline)?;
    let input = match (&args.input, &pipeline.source.path) {
        (Some(input), _) => parse_file_input(input)?,
        (None, Some(path)) if pipeline.source.kind == recflow::spec::SourceKind::File => path.clone(),
        _ => bail!("{}: has no source.path; pass --input file:PATH", args.pipeline.display()),
    };
    let mut compare = Vec::new();
    for path in &args.compare {
        let other = pipeline_file::load(path)?;
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
        knn_seeds: args.knn_seeds,
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
    let tradeoff = args.out.join("tradeoff.svg");
    recflow::eval::plot::write_tradeoff_svg(&report, &tradeoff)?;
    let _ = write!(std::io::stdout(), "{}", recflow::eval::report::table(&report));
    let _ = writeln!(
        std::io::stdout(),
        "\nwrote {}, {}, {} and {}",
        csv.display(),
        latency.display(),
        svg.display(),
        tradeoff.display()
    );
    Ok(())
}

fn generate(args: GenArgs) -> Result<()> {
    let pipeline = load_ignoring_source_kind(&args.pipeline)?;
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
    let mut pipeline = pipeline_file::read(&args.pipeline)?;
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
    let input = args.input.as_deref().map(parse_file_input).transpose()?;
    if input.as_ref().is_some_and(|path| path.as_os_str() == "-") && args.runs > 1 {
        bail!("--input -: standard input can be read only once; pass --runs 1, or a file for {} runs", args.runs);
    }
    pipeline.source.kind = if input.is_some() { SourceKind::File } else { SourceKind::Synth };
    pipeline.source.path = input.clone();
    // A benchmark measures the pipeline, not a server a [serve] table would start on every run.
    pipeline.serve = None;
    pipeline.validate(&args.pipeline.display().to_string())?;
    if let Some(brokers) = &args.kafka {
        return bench_kafka(&pipeline, &args, brokers);
    }
    if args.serve {
        let bench = recflow::serve::bench::ServeBench {
            clients: args.clients,
            duration: std::time::Duration::from_secs(args.seconds),
            posts: args.posts,
            forgets: args.forgets,
            subscribers: args.subscribers,
        };
        let figures = recflow::serve::bench::bench_serve(&pipeline, &bench, timely_config(&args.workers)?)?;
        println!(
            "{} point queries in {}s from {} connections = {:.0} queries/s ({} with a list); latency p50 {:.2} ms, p99 {:.2} ms",
            figures.queries,
            args.seconds,
            args.clients,
            figures.queries_per_second,
            figures.found,
            figures.query_ms.0,
            figures.query_ms.1
        );
        if args.subscribers > 0 {
            println!(
                "{} subscriptions held open during the queries; {} still open at the end",
                args.subscribers, figures.subscribers_attached
            );
        }
        println!(
            "posted event to subscriber: p50 {:.1} ms, p99 {:.1} ms over {} posts",
            figures.post_to_subscriber_ms.0, figures.post_to_subscriber_ms.1, args.posts,
        );
        println!(
            "forget a user until complete: p50 {:.1} ms, p99 {:.1} ms over {} users; peak memory {} MiB",
            figures.forget_ms.0,
            figures.forget_ms.1,
            args.forgets,
            peak_rss_mib().map_or("unknown".to_string(), |m| m.to_string())
        );
        return Ok(());
    }
    let mut rows = Vec::new();
    for run in 1..=args.runs.max(1) {
        let options = RunOptions {
            input: input.clone(),
            output: Some("/dev/null".into()),
            dead_letter: Some("/dev/null".into()),
            max_events: Some(args.events),
            status: false,
            stop: None,
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

fn bench_kafka(pipeline: &Pipeline, args: &BenchArgs, brokers: &str) -> Result<()> {
    let bench = kafka::bench::KafkaBench {
        brokers: brokers.to_string(),
        partitions: args.partitions.max(1),
        events: args.events,
        rate: args.rate.filter(|r| *r > 0),
        runs: args.runs,
    };
    timely_config(&args.workers)?;
    let config = || timely_config(&args.workers).expect("checked above");
    let rows = kafka::bench::bench_kafka(pipeline, &bench, config)?;
    for (run, row) in rows.iter().enumerate() {
        let rate = row.records as f64 / row.seconds;
        match (row.latency_p50_ms, row.latency_p99_ms) {
            (Some(p50), Some(p99)) => println!(
                "run {}: {} records in {:.2}s = {rate:.0} records/s; end-to-end latency p50 {p50:.0} ms, p99 {p99:.0} ms over {} updates",
                run + 1,
                row.records,
                row.seconds,
                row.latency_samples
            ),
            _ => println!("run {}: {} records in {:.2}s = {rate:.0} records/s", run + 1, row.records, row.seconds),
        }
    }
    let mut rates: Vec<f64> = rows.iter().map(|r| r.records as f64 / r.seconds).collect();
    rates.sort_by(f64::total_cmp);
    println!(
        "median of {} runs: {:.0} records/s; peak memory {} MiB",
        rates.len(),
        rates[rates.len() / 2],
        peak_rss_mib().map_or("unknown".to_string(), |m| m.to_string())
    );
    Ok(())
}

/// The process's peak resident memory (VmHWM), in MiB.
fn peak_rss_mib() -> Option<u64> {
    recflow::metrics::Memory::now().peak_resident_bytes.map(|b| b >> 20)
}
