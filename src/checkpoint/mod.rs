//! Checkpoints of a running pipeline (the design: `docs/design/checkpoints.md`). Built so far:
//! how the workers agree on consistent cuts and save their operators' state there ([`cut`],
//! [`worker_state`]); the store, checkpoints on disk, each whole or absent, with damaged ones
//! detected and passed over ([`store`]); which pipeline changes a checkpoint survives
//! ([`compatible`]); the log that makes what is posted over HTTP durable before it is
//! answered ([`post_log`]); and the ledger of forgotten users a replay forgets again
//! ([`forgotten`]); containers a checkpoint takes without copying ([`shared`]). The run writes and restores checkpoints in `crate::durable`.

pub mod compatible;
pub mod cut;
pub mod forgotten;
mod json_lines;
pub mod post_log;
pub mod rescale;
pub mod shared;
pub mod store;
pub mod worker_state;

pub use self::compatible::{check_compatible, IncompatibleSettings};
pub use self::store::{CheckpointStore, Damage, FileEntry, Manifest, Newest, StoreError};
