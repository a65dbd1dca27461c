//! `[checkpoint]`: where and how often `recflow run` takes checkpoints (README's
//! "Checkpoints"). `run --checkpoint DIR`, `--checkpoint-interval` and `--checkpoint-keep`
//! override it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{rejecting, Span, SpecError};

/// The `[checkpoint]` table.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    /// The directory checkpoints go to and are restored from.
    pub dir: PathBuf,
    /// The wall-clock time from the end of one checkpoint to the start of the next.
    #[serde(default = "default_interval")]
    pub interval: Span,
    /// How many of the newest checkpoints to keep.
    #[serde(default = "default_keep")]
    pub keep: usize,
}

/// Ten seconds: the cost of a checkpoint stays within a few percent of a run on a large state.
pub const DEFAULT_CHECKPOINT_INTERVAL: Span = Span(10_000);

fn default_interval() -> Span {
    DEFAULT_CHECKPOINT_INTERVAL
}

/// Two: the newest, and the one before in case the newest is damaged.
pub const DEFAULT_CHECKPOINT_KEEP: usize = 2;

fn default_keep() -> usize {
    DEFAULT_CHECKPOINT_KEEP
}

impl CheckpointSpec {
    /// Checks `[checkpoint]`: a directory, and at least one checkpoint kept.
    pub(super) fn validate(&self, origin: &str) -> Result<(), SpecError> {
        let bad = rejecting(origin);
        if self.dir.as_os_str().is_empty() {
            return bad("checkpoint.dir", "is empty; name the directory checkpoints go to".into());
        }
        if self.keep == 0 {
            return bad(
                "checkpoint.keep",
                "is 0; keep at least 1 (2, the default, keeps one to fall back on when the newest is damaged)".into(),
            );
        }
        Ok(())
    }
}
