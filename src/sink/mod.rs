//! Where results leave the dataflow. One file per way out; every sink gathers its input on worker
//! 0 so that a single, deterministically ordered stream of records is written.

pub mod changelog;
mod dead_letter;
mod jsonl;

pub use self::dead_letter::write_dead_letters;
pub use self::jsonl::{open_destination, write_changelog};
