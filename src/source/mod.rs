//! Where events come from. Each way events arrive is one [`EventSource`]; the ingest operator
//! ([`ingest`]) pulls from it, applies event time, and feeds records and the watermark into the
//! dataflow, and nothing else.

mod file;
mod ingest;
mod input;
mod kafka;
pub mod posted;
pub mod synth;

use std::time::Duration;

use crate::event::{DeadLetter, Event, RejectReason};

pub use self::file::{FileOrStdin, FileSource, LineInput, LineReader, NextLine, StdinLines};
pub use self::ingest::{ingest, Ingested};
pub use self::input::{InputAddress, InputError, InputForms};
pub use self::kafka::KafkaSource;
pub use self::posted::{post_channel, ForgetRequest, PostReceiver, PostRefused, PostSender, PostedRecord, WithPosted};
pub use self::synth::SynthSource;

/// Where a record sits in its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// The independently ordered part of the source it came from: a Kafka partition this worker
    /// reads (numbered from 0 in the order [`EventSource::lanes`] lists them), 0 for a file.
    pub lane: usize,
    /// Its place in the lane: line or sequence number from 1, or Kafka offset.
    pub offset: u64,
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

    /// Requests to forget users that arrived since the last call (only sources that take posted
    /// records have any).
    fn take_forgets(&mut self) -> Vec<ForgetRequest> {
        Vec::new()
    }
}

/// Implements every [`EventSource`] method but `poll` by passing it to the wrapped source in the
/// field `inner`: for sources that wrap another one and change only what it delivers. A wrapper
/// that implements `take_forgets` itself says so: `delegate_to_inner!(take_forgets)`.
macro_rules! delegate_to_inner {
    () => {
        $crate::source::delegate_to_inner!(take_forgets);

        fn take_forgets(&mut self) -> Vec<$crate::source::ForgetRequest> {
            self.inner.take_forgets()
        }
    };
    (take_forgets) => {
        fn name(&self) -> String {
            self.inner.name()
        }

        fn lanes(&self) -> usize {
            self.inner.lanes()
        }

        fn lane_finished(&self, lane: usize) -> bool {
            self.inner.lane_finished(lane)
        }

        fn idle_timeout(&self) -> Option<std::time::Duration> {
            self.inner.idle_timeout()
        }

        fn read_live(&self) -> bool {
            self.inner.read_live()
        }

        fn origin(&self, at: $crate::source::Position) -> String {
            self.inner.origin(at)
        }

        fn reject(
            &self,
            at: $crate::source::Position,
            reason: $crate::event::RejectReason,
            raw: Vec<u8>,
        ) -> $crate::event::DeadLetter {
            self.inner.reject(at, reason, raw)
        }

        fn acknowledge(&mut self, written: &[$crate::source::Position]) {
            self.inner.acknowledge(written)
        }

        fn finish(&mut self) {
            self.inner.finish()
        }
    };
}
pub(crate) use delegate_to_inner;

/// A source that stops after a fixed number of arrivals (`--max-events`).
pub struct Bounded<S> {
    inner: S,
    remaining: u64,
}

impl<S: EventSource> Bounded<S> {
    /// Wraps `inner`, ending it after `limit` arrivals.
    pub fn new(inner: S, limit: u64) -> Self {
        Bounded { inner, remaining: limit }
    }
}

impl<S: EventSource> EventSource for Bounded<S> {
    fn poll(&mut self, max: usize, out: &mut Vec<Arrival>) -> Poll {
        if self.remaining == 0 {
            return Poll::Done;
        }
        let want = max.min(self.remaining.min(usize::MAX as u64) as usize);
        let before = out.len();
        let poll = self.inner.poll(want, out);
        self.remaining -= (out.len() - before) as u64;
        if self.remaining == 0 {
            Poll::Done
        } else {
            poll
        }
    }

    delegate_to_inner!();
}

impl EventSource for Box<dyn EventSource> {
    fn poll(&mut self, max: usize, out: &mut Vec<Arrival>) -> Poll {
        (**self).poll(max, out)
    }

    fn name(&self) -> String {
        (**self).name()
    }

    fn lanes(&self) -> usize {
        (**self).lanes()
    }

    fn lane_finished(&self, lane: usize) -> bool {
        (**self).lane_finished(lane)
    }

    fn idle_timeout(&self) -> Option<Duration> {
        (**self).idle_timeout()
    }

    fn read_live(&self) -> bool {
        (**self).read_live()
    }

    fn origin(&self, at: Position) -> String {
        (**self).origin(at)
    }

    fn reject(&self, at: Position, reason: RejectReason, raw: Vec<u8>) -> DeadLetter {
        (**self).reject(at, reason, raw)
    }

    fn acknowledge(&mut self, written: &[Position]) {
        (**self).acknowledge(written)
    }

    fn finish(&mut self) {
        (**self).finish()
    }

    fn take_forgets(&mut self) -> Vec<ForgetRequest> {
        (**self).take_forgets()
    }
}
