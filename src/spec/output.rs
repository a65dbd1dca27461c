//! `[output]`: where results and rejected records go.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::kafka_address::{reserved_option, KafkaAddress, Role, SCHEME};
use super::{rejecting, SpecError};

/// The `[output]` table.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutputSpec {
    /// Where the changelog goes: a path, or `-` for standard output.
    pub path: String,
    /// Where rejected and late records go: a path, `-` for standard output, `stderr`.
    pub dead_letter: String,
    /// Seconds between status lines on standard error; 0 turns them off.
    pub status_interval_secs: u64,
    /// librdkafka producer properties for `kafka://` outputs, passed through as they are.
    pub kafka_options: BTreeMap<String, String>,
    /// Fail the run (exit non-zero) when more than this share of the records read, in (0, 1],
    /// were rejected or late; none: never.
    pub max_rejected_share: Option<f64>,
}

impl Default for OutputSpec {
    fn default() -> Self {
        OutputSpec {
            path: "-".into(),
            dead_letter: "stderr".into(),
            status_interval_secs: 5,
            kafka_options: BTreeMap::new(),
            max_rejected_share: None,
        }
    }
}

impl OutputSpec {
    /// Checks `[output]`: a path, well-formed `kafka://` destinations, no reserved producer
    /// option, and a rejected share in (0, 1] if there is one.
    pub(super) fn validate(&self, origin: &str) -> Result<(), SpecError> {
        let bad = rejecting(origin);
        if self.path.is_empty() {
            return bad("output.path", "is empty; use a file path or \"-\" for standard output".into());
        }
        for (key, destination) in [("output.path", &self.path), ("output.dead_letter", &self.dead_letter)] {
            if destination.starts_with(SCHEME) {
                if let Err(problem) = KafkaAddress::parse(destination) {
                    return bad(key, problem);
                }
            }
        }
        if let Some(problem) = reserved_option(&self.kafka_options, Role::Producer) {
            return bad("output.kafka_options", problem);
        }
        if let Some(share) = self.max_rejected_share.filter(|share| !(*share > 0.0 && *share <= 1.0)) {
            return bad(
                "output.max_rejected_share",
                format!(
                    "{share} is not a share of the records; use a number in (0, 1], such as 0.05 to fail a run \
                     that rejects more than 5% of its records, or remove the key to never fail for rejections"
                ),
            );
        }
        Ok(())
    }
}
