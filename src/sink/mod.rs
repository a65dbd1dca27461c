//! Where results leave the dataflow. Every sink gathers its input on worker 0, so a single,
//! deterministically ordered stream of records is written, to a [`Destination`]: a JSON-lines
//! file ([`jsonl`]) or a Kafka topic ([`kafka`]).
//!
//! Serving ([`serve`]) is one more destination of the changelog, teed beside the file or topic:
//! it posts into a [`mailbox::Mailbox`] that the HTTP server takes from.
//!
//! A sink holds its output frontier at the earliest time whose records the destination has not
//! acknowledged yet; the run's `completed` probe therefore only passes a time once everything
//! computed up to it has been delivered, which is when sources may record their progress.

pub mod changelog;
mod dead_letter;
pub mod jsonl;
pub mod kafka;
pub mod mailbox;
pub mod serve;

use std::collections::BTreeMap;
use std::sync::Arc;

use thiserror::Error;
use timely::dataflow::operators::{Capability, InputCapability};

use crate::event::Millis;
use crate::fatal::Fatal;
use crate::metrics::Metrics;
use crate::spec::kafka_address::{KafkaAddress, SCHEME};

pub use self::changelog::write_changelog;
pub use self::dead_letter::write_dead_letters;
pub use self::jsonl::{open_destination, open_destination_appending, JsonLines};
pub use self::kafka::KafkaDestination;
pub use self::serve::ServeFeed;

/// A sink that cannot be opened or written.
#[derive(Debug, Error)]
pub enum SinkError {
    /// The destination cannot be opened.
    #[error("cannot open output {destination}: {message}")]
    Open {
        /// The path or address.
        destination: String,
        /// Why.
        message: String,
    },
    /// Writing failed.
    #[error("cannot write: {0}")]
    Write(#[from] std::io::Error),
    /// A record could not be encoded.
    #[error("cannot encode a record: {0}")]
    Encode(String),
    /// Records could not be delivered.
    #[error("{0}")]
    Delivery(String),
}

impl SinkError {
    fn encode(error: impl std::fmt::Display) -> SinkError {
        SinkError::Encode(error.to_string())
    }
}

/// One way records of type `R` leave recflow.
pub trait Destination<R> {
    /// Writes `record`, computed at dataflow time `time`.
    fn write(&mut self, time: Millis, record: &R) -> Result<(), SinkError>;

    /// Pushes buffered records out.
    fn flush(&mut self) -> Result<(), SinkError>;

    /// The earliest time with records the destination has not acknowledged yet; it also serves
    /// acknowledgements. A file acknowledges on write.
    fn unacknowledged(&mut self) -> Option<Millis> {
        None
    }

    /// The sink's input frontier moved: every record at a time before `complete` has been
    /// written and flushed, and no more will come for those times; `None` once the input has
    /// ended for good. Destinations that report progress (serving) override it.
    fn progress(&mut self, _complete: Option<Millis>) {}
}

/// A destination as a sink writes to it: with the name its failure is reported under and the
/// run's [`Fatal`], which stops the run when the destination fails.
pub struct Output<R> {
    /// What the user called it, as in `output out.jsonl` or `dead-letter output stderr`.
    pub name: String,
    /// Where the records go.
    pub destination: Box<dyn Destination<R>>,
    /// The run's fatal fault, reported when the destination fails.
    pub fatal: Fatal,
}

impl<R> Output<R> {
    /// Reports `error` as the run's fatal fault.
    fn fail(&self, error: &SinkError) {
        self.fatal.report(&self.name, error);
    }
}

/// Two destinations fed the same records: the first one's acknowledgements and errors count,
/// the second (serving) only listens.
pub struct Tee<R> {
    first: Box<dyn Destination<R>>,
    second: Box<dyn Destination<R>>,
}

impl<R> Tee<R> {
    /// Writes to `first` and `second`.
    pub fn new(first: Box<dyn Destination<R>>, second: Box<dyn Destination<R>>) -> Tee<R> {
        Tee { first, second }
    }
}

impl<R> Destination<R> for Tee<R> {
    fn write(&mut self, time: Millis, record: &R) -> Result<(), SinkError> {
        self.first.write(time, record)?;
        self.second.write(time, record)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.first.flush()?;
        self.second.flush()
    }

    fn unacknowledged(&mut self) -> Option<Millis> {
        self.first.unacknowledged().into_iter().chain(self.second.unacknowledged()).min()
    }

    fn progress(&mut self, complete: Option<Millis>) {
        self.first.progress(complete);
        self.second.progress(complete);
    }
}

/// Opens `destination`: `kafka://HOST:PORT/TOPIC` (with producer `options`; a missing topic is
/// created with `partitions` partitions), `-` or `stdout`, `stderr`, or a file path.
pub fn open<R>(
    destination: &str,
    options: &BTreeMap<String, String>,
    partitions: usize,
    metrics: &Arc<Metrics>,
) -> Result<Box<dyn Destination<R>>, SinkError>
where
    JsonLines: Destination<R>,
    KafkaDestination: Destination<R>,
{
    open_continuing(destination, options, partitions, metrics, false)
}

/// [`open`], but a file is written on at its end when `append` (a restored run).
pub fn open_continuing<R>(
    destination: &str,
    options: &BTreeMap<String, String>,
    partitions: usize,
    metrics: &Arc<Metrics>,
    append: bool,
) -> Result<Box<dyn Destination<R>>, SinkError>
where
    JsonLines: Destination<R>,
    KafkaDestination: Destination<R>,
{
    if destination.starts_with(SCHEME) {
        let address = KafkaAddress::parse(destination)
            .map_err(|message| SinkError::Open { destination: destination.to_string(), message })?;
        Ok(Box::new(KafkaDestination::open(&address, options, partitions, Arc::clone(metrics))?))
    } else {
        let opened = if append { open_destination_appending(destination) } else { open_destination(destination) };
        let out =
            opened.map_err(|e| SinkError::Open { destination: destination.to_string(), message: e.to_string() })?;
        Ok(Box::new(JsonLines::new(out)))
    }
}

/// The one capability a sink keeps: at the earliest time it has not finished with (records
/// waiting for their time to complete, or written but not acknowledged), so the sink's output
/// frontier, and the run's `completed` probe after it, never pass undelivered results.
#[derive(Default)]
struct Hold(Option<Capability<Millis>>);

impl Hold {
    /// Keeps a capability from an arriving batch if none is held or the batch's time is earlier.
    /// Batches arrive at or after the input frontier, which is past every time already written,
    /// so the held time stays at or before everything not yet written.
    fn keep(&mut self, batch: &InputCapability<Millis>) {
        let earlier = match (self.0.as_ref(), batch.least()) {
            (None, _) => true,
            (Some(held), Some(time)) => time < held.time(),
            (Some(_), None) => false,
        };
        if earlier {
            self.0 = batch.retain_least(0);
        }
    }

    /// Moves the hold to `earliest`, or lets go when nothing is outstanding.
    fn settle(&mut self, earliest: Option<Millis>) {
        match (earliest, self.0.as_mut()) {
            (None, _) => self.0 = None,
            (Some(time), Some(held)) => {
                let time = time.max(*held.time());
                held.downgrade(&time);
            }
            (Some(_), None) => {}
        }
    }
}
