//! `recflow eval`: the command line of the prequential evaluator ([`crate::eval`]): which
//! pipelines to compare on which replay, and where the table, CSV files and plots go.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::{parse_file_input, timely_config, WorkerArgs};
use crate::pipeline_file;
use crate::spec::SourceKind;

/// `recflow eval`'s arguments.
#[derive(Args)]
#[command(disable_help_flag = true)]
pub struct EvalArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Replay `file:PATH` (or `PATH`, or `-` for stdin) instead of the pipeline's `source.path`.
    #[arg(long)]
    pub input: Option<String>,
    /// List length (default: the pipeline's `recommend.k`).
    #[arg(short = 'k', long = "k")]
    pub k: Option<usize>,
    /// Share of the events, from the start, that are learned but not scored.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Number of slices of the stream for the per-slice metrics and the plot.
    #[arg(long, default_value_t = 20)]
    pub slices: usize,
    /// Seeds of the item-kNN baselines: each user's this many most recent items.
    #[arg(long, default_value_t = 10)]
    pub knn_seeds: usize,
    /// Another pipeline file whose `[weights]` and `[recommend]` to evaluate on the same replay.
    #[arg(long)]
    pub compare: Vec<PathBuf>,
    /// Directory for `metrics.csv`, `latency.csv`, `hr.svg` and `tradeoff.svg`.
    #[arg(long, default_value = "eval-out")]
    pub out: PathBuf,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// timely's worker flags (`-w`, `-n`, `-p`, `-h`).
    #[command(flatten)]
    pub workers: WorkerArgs,
}

/// Replays the input test-then-learn, prints the table and writes the CSV files and plots.
pub fn main(args: EvalArgs) -> Result<()> {
    let pipeline = pipeline_file::load(&args.pipeline)?;
    let input = match (&args.input, &pipeline.source.path) {
        (Some(input), _) => parse_file_input(input)?,
        (None, Some(path)) if pipeline.source.kind == SourceKind::File => path.clone(),
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
    let options = crate::eval::EvalOptions {
        input,
        k: args.k,
        warmup: args.warmup,
        slices: args.slices,
        knn_seeds: args.knn_seeds,
        compare,
        progress: !args.quiet,
    };
    let Some(report) = crate::eval::evaluate(&pipeline, &options, timely_config(&args.workers)?)? else {
        return Ok(());
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("--out {}", args.out.display()))?;
    let (csv, latency, svg) = (args.out.join("metrics.csv"), args.out.join("latency.csv"), args.out.join("hr.svg"));
    crate::eval::report::write_csv(&report, &csv)?;
    crate::eval::report::write_latency_csv(&report, &latency)?;
    crate::eval::plot::write_svg(&report, &svg)?;
    let tradeoff = args.out.join("tradeoff.svg");
    crate::eval::plot::write_tradeoff_svg(&report, &tradeoff)?;
    let _ = write!(std::io::stdout(), "{}", crate::eval::report::table(&report));
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
