//! Where events come from. Each way events arrive is one [`EventSource`], which delivers records
//! and reports progress, and nothing else; the ingest operator ([`ingest`]) pulls from it (and
//! from the records posted over HTTP, its control input: [`Posted`]), applies event time, and
//! feeds records and the watermark into the dataflow.

mod file;
mod ingest;
mod input;
mod kafka;
pub mod posted;
pub mod synth;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::event::{DeadLetter, Event, RejectReason};

pub use self::file::{FileOrStdin, FileSource, LineInput, LineReader, NextLine, StdinLines};
pub use self::ingest::{
    ingest, CutSettings, ForgetsAtCut, ForgetsKept, FrozenCut, IngestSettings, Ingested, Input, RestoredReader,
    WorkerCut,
};
pub use self::input::{InputAddress, InputError, InputForms};
pub use self::kafka::KafkaSource;
pub use self::posted::{
    post_channel, ForgetRequest, PostReceiver, PostRefused, PostSender, Posted, PostedPosition, PostedRecord,
};
pub use self::synth::{SynthResume, SynthSource};

/// A source with nothing to read: a worker that reads no source but takes part in checkpoints
/// reads this, and its part of the stream has ended at once.
pub struct NoSource;

impl EventSource for NoSource {
    fn poll(&mut self, _max: usize, _out: &mut Vec<Arrival>) -> Poll {
        Poll::Done
    }

    fn name(&self) -> String {
        "nothing".into()
    }

    fn lanes(&self) -> usize {
        0
    }
}

/// Where a record sits in its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// The independently ordered part of the source it came from: a Kafka partition this worker
    /// reads (numbered from 0 in the order [`EventSource::lanes`] lists them), 0 for a file.
    pub lane: usize,
    /// Its place in the lane: line or sequence number from 1, or Kafka offset.
    pub offset: u64,
}

/// Where a source continues reading after everything it has delivered: what a checkpoint keeps of
/// a source, and what a restored run opens its source at ([`FileSource::open_at`],
/// [`SynthSource::resume`], [`KafkaSource::open_at`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum ResumePoint {
    /// A file: where its next unread line starts.
    File(FileResume),
    /// The generator: its state after the events it produced.
    Synth(SynthResume),
    /// A Kafka topic: each partition's next offset.
    Kafka(KafkaResume),
}

impl ResumePoint {
    /// How many lanes the source read: its Kafka partitions, or 1.
    pub fn lanes(&self) -> usize {
        match self {
            ResumePoint::Kafka(resume) => resume.next_offsets.len(),
            ResumePoint::File(_) | ResumePoint::Synth(_) => 1,
        }
    }
}

/// Where a file source continues: the byte offset of its next unread line, and how many lines it
/// has read before it (so line numbers, and with them positions and dead letters' origins, go on
/// counting where they left off). The default is the top of the file.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FileResume {
    /// The byte offset in the file of the first line not yet read.
    pub next_byte: u64,
    /// The lines read before it: header, blank and rejected lines included.
    pub lines_read: u64,
}

/// Where a Kafka source continues: the next offset to read of each partition, keyed by partition
/// number (not by lane, since which worker reads a partition depends on the worker count). The
/// points of all the workers reading a topic merge into one by joining their maps.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct KafkaResume {
    /// Partition number to the offset of the first message not yet delivered, for every
    /// partition the source reads, even one it has delivered nothing of. A partition a restored
    /// source finds absent (one added to the topic since) starts where `start` says.
    pub next_offsets: BTreeMap<i32, i64>,
}

/// A record from a source: a decoded event, or the reason it could not become one.
pub type Arrival = (Position, Result<Event, DeadLetter>);

/// What a poll of a source found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poll {
    /// It produced what it could; poll again soon.
    Ready,
    /// Nothing is available right now; poll again after a short pause.
    Idle,
    /// The source is exhausted.
    Done,
}

/// One way events arrive, in the order they arrive.
pub trait EventSource {
    /// Appends at most `max` arrivals to `out`.
    fn poll(&mut self, max: usize, out: &mut Vec<Arrival>) -> Poll;

    /// The source's name in dead letters' origins, such as `file:events.csv`.
    fn name(&self) -> String;

    /// How many lanes this source reads; each keeps its own watermark.
    fn lanes(&self) -> usize {
        1
    }

    /// Whether `lane` has delivered everything it will (a bounded Kafka read reached its end).
    fn lane_finished(&self, _lane: usize) -> bool {
        false
    }

    /// After how long without records a lane stops holding the watermark back; `None`: never.
    fn idle_timeout(&self) -> Option<Duration> {
        None
    }

    /// Whether the records happen as they are read (Kafka, standard input), so that none can be
    /// stamped far beyond the wall clock. A file is a replay, and the generator's event time runs
    /// at its own pace (`spacing`), even with a rate.
    fn read_live(&self) -> bool {
        false
    }

    /// A record's origin in dead letters, such as `file:events.csv:17`.
    fn origin(&self, at: Position) -> String {
        format!("{}:{}", self.name(), at.offset)
    }

    /// The dead letter for the record at `at`, rejected for `reason`.
    fn reject(&self, at: Position, reason: RejectReason, raw: Vec<u8>) -> DeadLetter {
        DeadLetter::new(reason, self.origin(at), raw)
    }

    /// Every result depending on the records up to these positions (one per lane) is written;
    /// a source that can replay may remember that (Kafka commits the offsets).
    fn acknowledge(&mut self, _written: &[Position]) {}

    /// The input has ended and every result is written: a last chance to record progress.
    fn finish(&mut self) {}

    /// Where this source would continue reading after every record it has delivered so far, in
    /// every lane it reads; `None` when it cannot be reopened there (standard input).
    fn resume_point(&self) -> Option<ResumePoint> {
        None
    }
}
