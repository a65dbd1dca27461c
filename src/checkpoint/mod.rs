//! Checkpoints of a running pipeline (the design: `docs/design/checkpoints.md`). So far the
//! store: checkpoints on disk, each whole or absent, with damaged ones detected and passed over
//! ([`store`]); and which pipeline changes a checkpoint survives ([`compatible`]). Nothing writes
//! checkpoints yet.

pub mod compatible;
pub mod store;

pub use self::compatible::{check_compatible, IncompatibleSettings};
pub use self::store::{CheckpointStore, Damage, FileEntry, Manifest, Newest, StoreError};
