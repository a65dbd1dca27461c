//! `recflow bench`: throughput, update latency and peak memory of a pipeline ([`pipeline`]), of
//! Kafka → top-k on a real broker ([`kafka`], `--kafka`), or of its HTTP/SSE server under query
//! load ([`serve`], `--serve`). Each prints its figures; the shared arithmetic is in
//! [`super::stats`].

pub mod kafka;
pub mod pipeline;
pub mod serve;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::{parse_file_input, WorkerArgs};
use crate::pipeline_file;
use crate::spec::{Pipeline, SourceKind, Span};

/// `recflow bench`'s arguments.
#[derive(Args)]
#[command(disable_help_flag = true)]
pub struct BenchArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Input records per run (synthetic unless --input is given).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Read events from `file:PATH`, `PATH` or `-` (standard input, with --runs 1) instead of the
    /// synthetic generator.
    #[arg(long)]
    pub input: Option<String>,
    /// Feed the synthetic generator at this many events per second (0: as fast as possible).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Override the synthetic generator's number of users.
    #[arg(long)]
    pub users: Option<u64>,
    /// Override the synthetic generator's number of items.
    #[arg(long)]
    pub items: Option<u64>,
    /// Override the similarity refresh cadence, such as `5m`.
    #[arg(long)]
    pub refresh: Option<String>,
    /// Measure Kafka → top-k on this broker (`HOST:PORT`): events are produced to a fresh topic
    /// and read back by the pipeline; with --rate, end-to-end latency is measured.
    #[arg(long)]
    pub kafka: Option<String>,
    /// Partitions of the Kafka input topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: usize,
    /// Measure serving: point queries from --clients connections for --seconds while the
    /// synthetic stream flows (at --rate), and --posts posted events until a subscriber sees them.
    #[arg(long)]
    pub serve: bool,
    /// Query connections for --serve.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Seconds of query load for --serve.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Posted events timed to a subscriber for --serve.
    #[arg(long, default_value_t = 20)]
    pub posts: usize,
    /// Users forgotten (DELETE) with --serve, each timed until the forgetting is complete.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub forgets: usize,
    /// Subscriptions held open (and read) during the --serve query load.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub subscribers: usize,
    /// Number of runs; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// timely's worker flags (`-w`, `-n`, `-p`, `-h`).
    #[command(flatten)]
    pub workers: WorkerArgs,
}

/// Runs the benchmark `args` choose and prints its figures.
pub fn main(args: BenchArgs) -> Result<()> {
    let (pipeline, input) = benchmarked(&args)?;
    if let Some(brokers) = &args.kafka {
        return kafka::main(&pipeline, &args, brokers);
    }
    if args.serve {
        return serve::main(&pipeline, &args);
    }
    pipeline::main(&pipeline, input, &args)
}

/// The pipeline as benchmarked: the generator's overrides applied, reading `--input` or the
/// generator, without a server; and the file it reads, if any.
fn benchmarked(args: &BenchArgs) -> Result<(Pipeline, Option<PathBuf>)> {
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
        recommend.similarity.refresh = Span::parse(refresh).map_err(anyhow::Error::msg).context("--refresh")?;
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
    Ok((pipeline, input))
}
