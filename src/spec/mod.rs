//! The pipeline file: serde structs for the TOML a user writes, their defaults, and `validate()`.
//!
//! Unknown keys are rejected, and every error names the file, the key and what to write instead.
//! Each section has a file of its own with its structs, defaults and checks; [`Pipeline`] gathers
//! them, parses the TOML and has each section check itself.

mod checkpoint;
mod hot_items;
pub mod kafka_address;
mod output;
mod recommend;
mod serve;
mod similarity;
mod source;
mod span;
mod time;
mod weights;

pub use checkpoint::{CheckpointSpec, DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_CHECKPOINT_KEEP};
pub use hot_items::HotItemsSpec;
pub use output::OutputSpec;
pub use recommend::{CoOccurrence, Exclude, Horizon, RecommendSpec, Seeds, ShortTermWindow, MAX_SEEDS};
pub use serve::{is_loopback, Linger, ServeSpec, DEFAULT_SERVE_ADDR};
pub use similarity::{Measure, SimilaritySpec};
pub use source::{
    Format, JsonFields, KafkaSourceSpec, Payload, SourceKind, SourceSpec, StartFrom, SynthSpec, TimeUnit,
};
pub use span::Span;
pub use time::{FutureBound, TimeSpec};
pub use weights::{to_thousandths, Weights, MAX_WEIGHT};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A whole pipeline file.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// A name for logs and metrics.
    #[serde(default = "default_name")]
    pub name: String,
    /// Where events come from and how they are decoded.
    #[serde(default)]
    pub source: SourceSpec,
    /// Event-time settings: ticks, watermark, lateness.
    #[serde(default)]
    pub time: TimeSpec,
    /// How much each action counts towards a preference.
    #[serde(default)]
    pub weights: Weights,
    /// Personalised recommendations; absent means the pipeline computes none.
    pub recommend: Option<RecommendSpec>,
    /// Windowed hot-item lists; absent means the pipeline computes none.
    pub hot_items: Option<HotItemsSpec>,
    /// Where results and rejected records go.
    #[serde(default)]
    pub output: OutputSpec,
    /// The HTTP/SSE server inside `recflow run`; absent means no server (unless `--serve`).
    pub serve: Option<ServeSpec>,
    /// Checkpoints of `recflow run`; absent means none (unless `--checkpoint`).
    pub checkpoint: Option<CheckpointSpec>,
}

fn default_name() -> String {
    "recflow".to_string()
}

/// A pipeline file that cannot be used, with the file, the key and the fix.
#[derive(Debug, Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("pipeline {path}: cannot read the file: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type.
    #[error("pipeline {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, which names the key.
        message: String,
    },
    /// A value is well-typed but unusable.
    #[error("pipeline {path}: key `{key}`: {problem}")]
    Invalid {
        /// The file.
        path: String,
        /// The dotted key.
        key: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
}

impl Pipeline {
    /// Whether recommendation lists carry their explanations (`serve.explain`): only a server
    /// shows them. Every worker of every process must agree, since it changes what the workers
    /// exchange.
    pub fn explains(&self) -> bool {
        self.serve.as_ref().is_some_and(|spec| spec.explain)
    }

    /// Parses and validates pipeline TOML; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Pipeline, SpecError> {
        let pipeline = Pipeline::parse(text, origin)?;
        pipeline.validate(origin)?;
        Ok(pipeline)
    }

    /// Parses pipeline TOML without validating it, for callers that override settings first and
    /// then call [`Pipeline::validate`]; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Pipeline, SpecError> {
        toml::from_str(text).map_err(|e| SpecError::Parse { path: origin.to_string(), message: e.to_string() })
    }

    /// Rejects settings that parse but make no sense, naming the key and the fix. Each section
    /// checks itself, in the order of the file's sections, and gets what it needs of the others:
    /// the timestamp unit a tick must be a whole number of, the tick a refresh or a slide must be
    /// a multiple of.
    pub fn validate(&self, origin: &str) -> Result<(), SpecError> {
        if self.recommend.is_none() && self.hot_items.is_none() {
            return rejecting(origin)(
                "recommend",
                "the pipeline computes nothing; add a [recommend] table, a [hot_items] table, or both".into(),
            );
        }
        self.source.validate(origin)?;
        self.time.validate(origin, self.source.timestamp_unit)?;
        self.weights.validate(origin)?;
        if let Some(recommend) = &self.recommend {
            recommend.validate(origin, self.time.tick)?;
        }
        if let Some(hot_items) = &self.hot_items {
            hot_items.validate(origin, self.time.tick)?;
        }
        self.output.validate(origin)?;
        if let Some(serve) = &self.serve {
            serve.validate(origin)?;
        }
        if let Some(checkpoint) = &self.checkpoint {
            checkpoint.validate(origin)?;
        }
        Ok(())
    }
}

/// The error of the sections' checks: `rejecting(origin)(key, problem)` says that `key` of the
/// pipeline `origin` is unusable, and `problem` why and what to write instead.
fn rejecting(origin: &str) -> impl Fn(&str, String) -> Result<(), SpecError> + '_ {
    move |key, problem| Err(SpecError::Invalid { path: origin.to_string(), key: key.to_string(), problem })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint keeps a copy of the pipeline it was taken with, so a serialised pipeline must
    /// read back as the same pipeline, in JSON and in TOML.
    #[test]
    fn every_shipped_pipeline_reads_back_from_its_serialised_form() {
        let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
        let mut read = 0;
        for entry in std::fs::read_dir(&shipped).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|extension| extension != "toml") {
                continue;
            }
            let origin = path.display().to_string();
            let mut pipeline = Pipeline::from_toml(&std::fs::read_to_string(&path).unwrap(), &origin).unwrap();
            pipeline.serve.get_or_insert_with(ServeSpec::default);
            let json = serde_json::to_value(&pipeline).unwrap();
            assert_eq!(serde_json::from_value::<Pipeline>(json).unwrap(), pipeline, "{origin} through JSON");
            let toml = toml::to_string(&pipeline).unwrap();
            assert_eq!(Pipeline::from_toml(&toml, &origin).unwrap(), pipeline, "{origin} through TOML:\n{toml}");
            read += 1;
        }
        assert!(read >= 5, "only {read} pipelines in {}", shipped.display());
    }
}
