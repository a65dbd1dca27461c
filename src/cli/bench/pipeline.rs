//! `recflow bench PIPELINE`: the pipeline alone, on the synthetic generator or a file, with its
//! output discarded: records per second and update latency per run, and their medians.

use std::path::PathBuf;

use anyhow::Result;

use super::BenchArgs;
use crate::cli::stats::{median, peak_memory_mib};
use crate::cli::timely_config;
use crate::spec::Pipeline;
use crate::RunOptions;

/// Runs `pipeline` `args.runs` times on `args.events` events and prints each run and the medians.
pub fn main(pipeline: &Pipeline, input: Option<PathBuf>, args: &BenchArgs) -> Result<()> {
    let mut rows = Vec::new();
    for run in 1..=args.runs.max(1) {
        let options = RunOptions {
            input: input.clone(),
            output: Some("/dev/null".into()),
            dead_letter: Some("/dev/null".into()),
            max_events: Some(args.events),
            status: false,
            stop: None,
            checkpoints: None,
            checkpoint_dir: None,
        };
        let started = std::time::Instant::now();
        let counters = crate::run(pipeline.clone(), options, timely_config(&args.workers)?)?;
        let secs = started.elapsed().as_secs_f64();
        let rate = counters.records_in as f64 / secs;
        let (p50, p99) = (counters.latency_p50_ms.unwrap_or(f64::NAN), counters.latency_p99_ms.unwrap_or(f64::NAN));
        println!(
            "run {run}: {} records in {secs:.2}s = {rate:.0} records/s; update latency p50 {p50:.1} ms, p99 {p99:.1} ms; {} output records",
            counters.records_in, counters.output_records
        );
        rows.push((rate, p50, p99));
    }
    println!(
        "median of {} runs: {:.0} records/s, update latency p50 {:.1} ms, p99 {:.1} ms; peak memory {} MiB",
        rows.len(),
        median(rows.iter().map(|r| r.0).collect()),
        median(rows.iter().map(|r| r.1).collect()),
        median(rows.iter().map(|r| r.2).collect()),
        peak_memory_mib(),
    );
    Ok(())
}
