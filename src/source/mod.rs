//! Where events come from. Each way events arrive is one [`EventSource`]; the ingest operator
//! ([`ingest`]) pulls from it, applies event time, and feeds records and the watermark into the
//! dataflow, and nothing else.

mod file;
mod ingest;
pub mod synth;

use crate::event::{DeadLetter, Event};

pub use self::file::{FileSource, LineReader};
pub use self::ingest::{ingest, EndRule, Ends, Ingested, StreamEnd};
pub use self::synth::SynthSource;

/// A decoded arrival: an event with its position in the source (line or sequence number, from 1),
/// or the record that could not become one.
pub type Arrival = Result<(Event, u64), DeadLetter>;

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
}

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

    fn name(&self) -> String {
        self.inner.name()
    }
}

impl EventSource for Box<dyn EventSource> {
    fn poll(&mut self, max: usize, out: &mut Vec<Arrival>) -> Poll {
        (**self).poll(max, out)
    }

    fn name(&self) -> String {
        (**self).name()
    }
}
