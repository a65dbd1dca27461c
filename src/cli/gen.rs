//! `recflow gen`: the synthetic generator's events, written to a file as CSV or JSON lines, for
//! replays, benchmarks and the producer.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::load_ignoring_source_kind;
use crate::source::SynthSource;
use crate::spec::Format;

/// `recflow gen`'s arguments.
#[derive(Args)]
pub struct GenArgs {
    /// The pipeline whose `[source.synth]` settings to use.
    pub pipeline: PathBuf,
    /// Number of events.
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Output file, or `-` for stdout.
    #[arg(long, default_value = "-")]
    pub output: String,
    /// `csv` (user,item,category,action,ts) or `jsonl`.
    #[arg(long, default_value = "csv")]
    pub format: String,
    /// Timestamp unit: `s` or `ms`.
    #[arg(long, default_value = "ms")]
    pub unit: String,
}

/// Writes `args.events` events of the pipeline's synthetic generator to `args.output`.
pub fn main(args: GenArgs) -> Result<()> {
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
    let mut out = crate::sink::open_destination(&args.output).with_context(|| format!("--output {}", args.output))?;
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
