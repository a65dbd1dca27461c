//! `recflow run`: the pipeline file, with the command line's overrides (input, serving), run
//! on timely workers until its input ends or a signal stops it.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::{timely_config, WorkerArgs};
use crate::pipeline_file;
use crate::run::CheckpointDir;
use crate::source::{InputAddress, InputForms};
use crate::spec::{Linger, Pipeline, SourceKind, Span, DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_CHECKPOINT_KEEP};
use crate::RunOptions;

/// `recflow run`'s arguments.
#[derive(Args)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Read events from `file:PATH`, `PATH`, `-` (stdin) or `kafka://HOST:PORT/TOPIC` instead of
    /// the pipeline's source.
    #[arg(long)]
    pub input: Option<String>,
    /// Write the changelog to PATH, `-` for stdout, or `kafka://HOST:PORT/TOPIC`.
    #[arg(long)]
    pub output: Option<String>,
    /// Write rejected and late records to PATH (`-` stdout, `stderr`, `kafka://HOST:PORT/TOPIC`).
    #[arg(long = "dead-letter")]
    pub dead_letter: Option<String>,
    /// Stop after N input records (per reading worker, for Kafka).
    #[arg(long = "max-events")]
    pub max_events: Option<u64>,
    /// Kafka: read each partition up to its end offset at start, then close all windows and exit.
    #[arg(long)]
    pub bounded: bool,
    /// No status line on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Serve results over HTTP/SSE on ADDR (default 127.0.0.1:8080; port 0 picks a free one),
    /// with the `[serve]` settings of the pipeline or their defaults.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = crate::spec::DEFAULT_SERVE_ADDR)]
    pub serve: Option<String>,
    /// Keep serving this long after a finite input ended: a duration such as `30s`, or `forever`
    /// (until Ctrl-C); overrides `serve.linger`.
    #[arg(long = "serve-linger", value_name = "DURATION")]
    pub serve_linger: Option<String>,
    /// Take checkpoints into DIR (overrides `checkpoint.dir`) and, when it holds one, restore
    /// the newest first: the run goes on where the checkpoint's run stood, its file outputs
    /// continue where they were at the checkpoint, and Kafka outputs hold every record once (not
    /// with standard input, which cannot resume).
    #[arg(long, value_name = "DIR")]
    pub checkpoint: Option<PathBuf>,
    /// Wall-clock time between checkpoints, such as `10s` (overrides `checkpoint.interval`).
    #[arg(long = "checkpoint-interval", value_name = "DURATION")]
    pub checkpoint_interval: Option<String>,
    /// How many of the newest checkpoints to keep (overrides `checkpoint.keep`).
    #[arg(long = "checkpoint-keep", value_name = "N")]
    pub checkpoint_keep: Option<usize>,
    /// Ignore the checkpoints in the checkpoint directory and start over.
    #[arg(long)]
    pub fresh: bool,
    /// timely's worker flags (`-w`, `-n`, `-p`, `-h`).
    #[command(flatten)]
    pub workers: WorkerArgs,
}

/// Runs the pipeline `args` name, with their overrides applied and checked.
pub fn main(args: RunArgs) -> Result<()> {
    let mut pipeline = pipeline_file::read(&args.pipeline)?;
    let config = timely_config(&args.workers)?;
    let input = replace_source(&mut pipeline, args.input.as_deref())?;
    let checkpoint_dir = checkpoint_dir(&args, &pipeline)?;
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
        serve.linger = Linger::parse(linger).map_err(anyhow::Error::msg).context("--serve-linger")?;
    }
    pipeline.validate(&args.pipeline.display().to_string())?;
    let options = RunOptions {
        input,
        output: args.output,
        dead_letter: args.dead_letter,
        max_events: args.max_events,
        status: !args.quiet,
        stop: Some(stop_on_signals()?),
        checkpoints: None,
        checkpoint_dir,
    };
    crate::run(pipeline, options, config)?;
    Ok(())
}

/// The checkpoint settings of `run --checkpoint` and the pipeline's `[checkpoint]` table (the run
/// refuses what it cannot checkpoint yet).
fn checkpoint_dir(args: &RunArgs, pipeline: &Pipeline) -> Result<Option<CheckpointDir>> {
    let spec = pipeline.checkpoint.as_ref();
    let Some(dir) = args.checkpoint.clone().or_else(|| spec.map(|spec| spec.dir.clone())) else {
        if args.fresh || args.checkpoint_interval.is_some() || args.checkpoint_keep.is_some() {
            bail!("--fresh, --checkpoint-interval and --checkpoint-keep need --checkpoint DIR or a [checkpoint] table");
        }
        return Ok(None);
    };
    let interval = match &args.checkpoint_interval {
        Some(text) => {
            Span::parse(text).map_err(anyhow::Error::msg).context("--checkpoint-interval (a duration such as 10s)")?
        }
        None => spec.map_or(DEFAULT_CHECKPOINT_INTERVAL, |spec| spec.interval),
    };
    let keep = args.checkpoint_keep.or(spec.map(|spec| spec.keep)).unwrap_or(DEFAULT_CHECKPOINT_KEEP);
    if keep == 0 {
        bail!("--checkpoint-keep must be at least 1");
    }
    Ok(Some(CheckpointDir {
        dir,
        interval: std::time::Duration::from_millis(interval.millis()),
        keep,
        fresh: args.fresh,
    }))
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
