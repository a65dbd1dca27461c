//! Checkpoints of a running pipeline (the design: `docs/design/checkpoints.md`). So far the
//! store alone: checkpoints on disk, each whole or absent, with damaged ones detected and passed
//! over ([`store`]). Nothing writes checkpoints yet.

pub mod cut;
pub mod store;
pub mod worker_state;

pub use self::store::{CheckpointStore, Damage, FileEntry, Manifest, Newest, StoreError};
