//! Prequential evaluation ("test-then-learn", Vinagre, Jorge and Gama 2014): replay a file in
//! event-time order through the pipeline's own dataflow and, for every event `(u, i)`, ask
//! whether `i` was in `u`'s list just before the dataflow learned the event.
//!
//! One replay feeds every model at once: the configured pipeline, the same pipeline with only its
//! short-term or only its long-term preference, any compared pipeline files (all real dataflows
//! built by [`crate::dataflow::build`] on the same ingested events), and two popularity
//! baselines and two item-kNN baselines kept by the evaluator ([`variants`]). The rooms:
//!
//! - [`variants`]: what is compared;
//! - [`replay`]: the timely side: ingest, the dataflows, and the operator that scores events;
//! - [`prequential`]: scoring each time's events against the lists from before it, then learning;
//! - [`baseline`]: the popularity baselines and exclusions the evaluator keeps itself;
//! - [`knn`]: the item-kNN baselines, exact over everything learned so far;
//! - [`quality`]: HR@k, NDCG@k, MRR, coverage, fallback shares, diversity, novelty and exposure;
//! - [`report`] and [`plot`]: the table, the CSV and the SVG chart.
//!
//! The metrics are a function of the input and the pipeline only: the same for any number of
//! workers. Update latency, measured on the side, is not.

pub mod baseline;
pub mod knn;
pub mod plot;
pub mod prequential;
pub mod quality;
pub mod replay;
pub mod report;
pub mod variants;

use std::path::PathBuf;

use thiserror::Error;

use crate::spec::Pipeline;

pub use self::prequential::{Counts, Evaluation, VariantResult};

/// How to evaluate a pipeline, beyond its file.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// The events to replay: a file (`-` for standard input), read whole and replayed in
    /// event-time order.
    pub input: PathBuf,
    /// List length; the pipeline's `recommend.k` when `None`.
    pub k: Option<usize>,
    /// Share of the accepted events, from the start, that are learned but not scored.
    pub warmup: f64,
    /// Number of slices the scored stream is cut into for the per-slice metrics.
    pub slices: usize,
    /// Seeds of the item-kNN baselines: each user's this many most recent items.
    pub knn_seeds: usize,
    /// Other pipelines, `(name, pipeline)`, whose `[weights]` and `[recommend]` are evaluated too.
    pub compare: Vec<(String, Pipeline)>,
    /// Show a progress bar on standard error (only where it is a terminal).
    pub progress: bool,
}

/// Update latency percentiles in milliseconds: per event, from its arrival at the scoring
/// operator (right after ingest) until every model's results at its time are complete and the
/// time is handed to the evaluator. The replay feeds events as fast as back-pressure allows, so this includes queueing
/// behind earlier times. Depends on the machine; not part of the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50_ms: Option<f64>,
    /// 90th percentile.
    pub p90_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
}

/// Everything an evaluation found.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The pipeline's name.
    pub pipeline: String,
    /// The input, as given.
    pub input: String,
    /// List length.
    pub k: usize,
    /// Milliseconds per unit of the input's timestamps (for times in the CSV).
    pub unit: u64,
    /// Records read from the input.
    pub records: u64,
    /// Records that could not be decoded into an event (never replayed; `recflow run` writes
    /// them as dead letters with their reasons).
    pub rejected: u64,
    /// The metrics: the same for any number of workers.
    pub evaluation: Evaluation,
    /// Update latency while replaying as fast as possible.
    pub latency: Latency,
    /// Update latency per slice (events of a time count in the slice of the time's first event).
    pub slice_latency: Vec<Latency>,
    /// Wall-clock seconds of the replay (every model together). Depends on the machine.
    pub elapsed_secs: f64,
}

/// An evaluation that cannot run.
#[derive(Debug, Error)]
pub enum EvalError {
    /// The pipeline computes no recommendations.
    #[error("pipeline {pipeline}: has no [recommend] table, so there are no lists to evaluate; add one")]
    NoRecommendations {
        /// The pipeline (or compared pipeline) name.
        pipeline: String,
    },
    /// An option is out of range.
    #[error("pipeline {pipeline}: {option}: {problem}")]
    BadOption {
        /// The pipeline name.
        pipeline: String,
        /// The option, as written on the command line.
        option: String,
        /// What is wrong and what to write instead.
        problem: String,
    },
    /// The input cannot be read.
    #[error("pipeline {pipeline}: cannot read input {path}: {source}")]
    Input {
        /// The pipeline name.
        pipeline: String,
        /// The input path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Timely could not start its workers, or a worker failed.
    #[error("pipeline {pipeline}: cannot run the workers: {message}")]
    Workers {
        /// The pipeline name.
        pipeline: String,
        /// Timely's message.
        message: String,
    },
    /// A model's pipeline is not valid once combined with the evaluated pipeline's `[source]`
    /// and `[time]` (for example a compared refresh that is not a multiple of the tick).
    #[error("model {model}: {problem}")]
    Model {
        /// The model's name.
        model: String,
        /// What is wrong with it (shown in the message, so not chained as a source).
        problem: crate::spec::SpecError,
    },
    /// An output file cannot be written.
    #[error("cannot write {path}: {message}")]
    Output {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

/// Replays `options.input` through `pipeline` and every variant on the workers `config`
/// describes. Returns the report on the process that read the input (process 0) and `None` on
/// the others.
pub fn evaluate(
    pipeline: &Pipeline,
    options: &EvalOptions,
    config: timely::Config,
) -> Result<Option<Report>, EvalError> {
    let name = &pipeline.name;
    let bad = |option: &str, problem: &str| {
        Err(EvalError::BadOption { pipeline: name.clone(), option: option.into(), problem: problem.into() })
    };
    let Some(recommend) = &pipeline.recommend else {
        return Err(EvalError::NoRecommendations { pipeline: name.clone() });
    };
    if let Some((other, _)) = options.compare.iter().find(|(_, p)| p.recommend.is_none()) {
        return Err(EvalError::NoRecommendations { pipeline: other.clone() });
    }
    let k = options.k.unwrap_or(recommend.k);
    if k == 0 {
        return bad("-k", "must be at least 1");
    }
    if !(0.0..1.0).contains(&options.warmup) {
        return bad("--warmup", "must be a fraction in [0, 1), such as 0.1");
    }
    if options.slices == 0 {
        return bad("--slices", "must be at least 1");
    }
    if options.knn_seeds == 0 {
        return bad("--knn-seeds", "must be at least 1");
    }
    let variants = variants::variants(pipeline, k, options.knn_seeds, &options.compare);
    for variant in &variants {
        if let variants::Model::Dataflow(spec) = &variant.model {
            let origin = format!("{name} with the [weights] and [recommend] of {}", variant.name);
            spec.validate(&origin).map_err(|problem| EvalError::Model { model: variant.name.clone(), problem })?;
        }
    }
    replay::replay(pipeline, &variants, k, options, config)
}
