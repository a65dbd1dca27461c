//! Counters shared by the workers of one process, read by the status line and by tests.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::event::RejectReason;

/// Reason codes in the order of [`Metrics::rejected`].
pub const REJECT_CODES: [&str; 6] =
    ["malformed", "missing_field", "unknown_action", "bad_number", "timestamp_out_of_range", "late"];

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Records read from the source, accepted or not.
    pub records_in: AtomicU64,
    /// Events accepted into the dataflow.
    pub accepted: AtomicU64,
    /// Rejected records per reason, indexed as [`REJECT_CODES`].
    pub rejected: [AtomicU64; 6],
    /// The current watermark, in milliseconds.
    pub watermark: AtomicU64,
    /// Upsert records written to the changelog.
    pub output_records: AtomicU64,
    /// Records written to the dead-letter output.
    pub dead_letters_written: AtomicU64,
}

impl Metrics {
    /// Counts one rejected record.
    pub fn reject(&self, reason: &RejectReason) {
        let index = REJECT_CODES.iter().position(|c| *c == reason.code()).unwrap_or(0);
        self.rejected[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Rejected records for a reason code.
    pub fn rejected_for(&self, code: &str) -> u64 {
        REJECT_CODES.iter().position(|c| *c == code).map_or(0, |i| self.rejected[i].load(Ordering::Relaxed))
    }

    /// Rejected records of every reason except lateness.
    pub fn invalid(&self) -> u64 {
        REJECT_CODES.iter().filter(|c| **c != "late").map(|c| self.rejected_for(c)).sum()
    }

    /// A snapshot for reports.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            records_in: self.records_in.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            late: self.rejected_for("late"),
            invalid: self.invalid(),
            watermark: self.watermark.load(Ordering::Relaxed),
            output_records: self.output_records.load(Ordering::Relaxed),
        }
    }
}

/// A point-in-time copy of the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Records read.
    pub records_in: u64,
    /// Events accepted.
    pub accepted: u64,
    /// Late events.
    pub late: u64,
    /// Records rejected for any other reason.
    pub invalid: u64,
    /// Watermark in milliseconds.
    pub watermark: u64,
    /// Changelog records written.
    pub output_records: u64,
}
