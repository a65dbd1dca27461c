//! Results and dead letters to Kafka topics. One idempotent producer per topic on worker 0, so
//! each key's records reach their partition in the order they were computed.
//!
//! - Changelog: recommendation changes keyed by user (the value is the changelog record as JSON;
//!   a tombstone when the list becomes empty), hot-item windows keyed by `hot_items/WINDOW_END`
//!   or `hot_items/WINDOW_END/CATEGORY`.
//! - Dead letters: the raw payload, with `reason`, `detail`, `origin` and, for Kafka sources,
//!   `partition` and `offset` headers.
//!
//! Every message is tracked until the broker acknowledges it; the sink holds its output frontier
//! at the earliest unacknowledged time, so offsets are committed only after delivery. A message
//! whose delivery fails is reported and sent again, up to [`MAX_ATTEMPTS`] times; one given up
//! after that, or a fatal producer error, fails the destination: it is never counted as
//! delivered, and the next flush returns the failure.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use super::{Destination, SinkError};
use crate::event::{DeadLetter, Millis, HOT_ITEMS_KEY_PREFIX};
use crate::kafka::{client_config, ReportLimiter};
use crate::metrics::Metrics;
use crate::results::ChangeRecord;
use crate::spec::kafka_address::KafkaAddress;

/// Deliveries of one message before it is given up, loudly.
pub const MAX_ATTEMPTS: u32 = 10;
/// librdkafka's `message.timeout.ms` unless the pipeline sets it: how long a message may take to
/// be delivered, librdkafka's own retries included. A message that times out is given up at
/// once (sending it again would only multiply the wait), so an output broker gone this long
/// fails the run: in two minutes, not librdkafka's default five times ten attempts.
const DELIVERY_TIMEOUT_MS: &str = "120000";
/// How long shutdown waits for outstanding deliveries.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// A message on its way: owned, so it can be sent again.
struct Outgoing {
    time: Millis,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Option<OwnedHeaders>,
    attempt: u32,
}

/// What the producer's delivery callback reports: the message's time and, on failure, the
/// message to send again.
struct Delivery {
    time: Millis,
    attempt: u32,
    failure: Option<(KafkaError, Outgoing)>,
}

/// Collects delivery reports for the sink to process on its own thread, and the producer's
/// fatal error if it has one.
#[derive(Default)]
struct DeliveryContext {
    reports: Mutex<Vec<Delivery>>,
    fatal: Mutex<Option<String>>,
}

impl ClientContext for DeliveryContext {
    fn log(&self, _level: RDKafkaLogLevel, _fac: &str, _log_message: &str) {
        // Delivery failures are what matter, and the sink reports those.
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Other errors are transient (librdkafka retries them); a fatal one ends the producer.
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            let mut fatal = self.fatal.lock().unwrap_or_else(|e| e.into_inner());
            fatal.get_or_insert_with(|| format!("fatal producer error: {reason}"));
        }
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<(Millis, u32)>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let (time, attempt) = *opaque;
        let failure = match result {
            Ok(_) => None,
            Err((error, message)) => Some((
                error.clone(),
                Outgoing {
                    time,
                    key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().map(<[u8]>::to_vec),
                    headers: message.headers().map(|h| h.detach()),
                    attempt,
                },
            )),
        };
        self.reports.lock().unwrap_or_else(|e| e.into_inner()).push(Delivery { time, attempt, failure });
    }
}

/// Writes records to one Kafka topic.
pub struct KafkaDestination {
    producer: BaseProducer<DeliveryContext>,
    address: KafkaAddress,
    /// Messages not yet acknowledged, per time.
    unacknowledged: BTreeMap<Millis, usize>,
    /// Messages waiting for room in the producer's queue, in order.
    backlog: VecDeque<Outgoing>,
    metrics: Arc<Metrics>,
    reports: ReportLimiter,
    failed: u64,
    /// Why the destination failed: the first message given up.
    failure: Option<String>,
}

impl KafkaDestination {
    /// A producer for `address` with the pass-through `options`; the topic is created with one
    /// partition per `partitions` if it does not exist.
    pub fn open(
        address: &KafkaAddress,
        options: &BTreeMap<String, String>,
        partitions: usize,
        metrics: Arc<Metrics>,
    ) -> Result<KafkaDestination, SinkError> {
        let mut config = client_config(&address.brokers, options);
        crate::kafka::ensure_topic(address, &config, partitions)
            .map_err(|e| SinkError::Open { destination: address.to_string(), message: e.message })?;
        config.set("enable.idempotence", "true");
        let defaults = [("linger.ms", "5"), ("compression.type", "lz4"), ("message.timeout.ms", DELIVERY_TIMEOUT_MS)];
        for (key, default) in defaults {
            if !options.contains_key(key) {
                config.set(key, default);
            }
        }
        let producer = config.create_with_context(DeliveryContext::default()).map_err(|e| SinkError::Open {
            destination: address.to_string(),
            message: format!("cannot create a producer: {e}"),
        })?;
        Ok(KafkaDestination {
            producer,
            address: address.clone(),
            unacknowledged: BTreeMap::new(),
            backlog: VecDeque::new(),
            metrics,
            reports: ReportLimiter::default(),
            failed: 0,
            failure: None,
        })
    }

    /// Sends one message with `key` and `payload` (a tombstone when `None`), at time 0.
    pub fn send_message(&mut self, key: Option<Vec<u8>>, payload: Option<Vec<u8>>) {
        self.send(Outgoing { time: 0, key, payload, headers: None, attempt: 0 });
    }

    /// Serves deliveries; returns how many messages are not acknowledged yet.
    pub fn outstanding(&mut self) -> usize {
        self.serve();
        self.unacknowledged.values().sum()
    }

    /// Paces a producer of `rate` messages per second (as fast as possible when `None`): after
    /// `sent` messages since `started`, serves deliveries until the next one is due.
    pub fn pace(&mut self, started: Instant, sent: u64, rate: Option<u64>) {
        match rate.filter(|r| *r > 0) {
            Some(rate) => {
                let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
                while Instant::now() < due {
                    self.serve();
                    std::thread::sleep(due.saturating_duration_since(Instant::now()).min(Duration::from_micros(500)));
                }
            }
            None if sent.is_multiple_of(1024) => self.serve(),
            None => {}
        }
    }

    /// Waits until every message sent so far is acknowledged or given up (given-up messages stay
    /// unacknowledged).
    pub fn wait_delivered(&mut self) {
        while self.outstanding() as u64 > self.failed {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Messages given up after [`MAX_ATTEMPTS`] failed deliveries.
    pub fn given_up(&self) -> u64 {
        self.failed
    }

    fn send(&mut self, message: Outgoing) {
        *self.unacknowledged.entry(message.time).or_default() += 1;
        self.backlog.push_back(message);
        self.send_backlog();
    }

    /// Hands waiting messages to the producer until its queue is full.
    fn send_backlog(&mut self) {
        while let Some(message) = self.backlog.pop_front() {
            let mut record = BaseRecord::with_opaque_to(&self.address.topic, Box::new((message.time, message.attempt)));
            if let Some(key) = &message.key {
                record = record.key(key);
            }
            if let Some(payload) = &message.payload {
                record = record.payload(payload);
            }
            if let Some(headers) = &message.headers {
                record = record.headers(headers.clone());
            }
            match self.producer.send(record) {
                Ok(()) => {}
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    self.backlog.push_front(message);
                    break;
                }
                Err((error, _)) => self.failed_delivery(error, message),
            }
        }
    }

    fn failed_delivery(&mut self, error: KafkaError, mut message: Outgoing) {
        let timed_out = matches!(error, KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut));
        let give_up = timed_out || message.attempt + 1 >= MAX_ATTEMPTS;
        // The first message given up is always told; the rest are counted at shutdown.
        if self.reports.due() || (give_up && self.failure.is_none()) {
            let action = if give_up { "giving it up after repeated failures" } else { "sending it again" };
            eprintln!("recflow: {}: a message was not delivered: {error}; {action}", self.address);
        }
        if give_up {
            // Never acknowledged: the sink's frontier stays before it.
            self.failed += 1;
            self.failure.get_or_insert_with(|| match timed_out {
                true => format!("a message was not delivered within message.timeout.ms: {error}"),
                false => format!("a message was not delivered after {MAX_ATTEMPTS} attempts: {error}"),
            });
        } else {
            self.metrics.delivery_retries.fetch_add(1, Ordering::Relaxed);
            message.attempt += 1;
            self.backlog.push_back(message);
        }
    }

    fn acknowledge(&mut self, time: Millis) {
        if let Some(count) = self.unacknowledged.get_mut(&time) {
            *count -= 1;
            if *count == 0 {
                self.unacknowledged.remove(&time);
            }
        }
    }

    /// Serves delivery reports and resends what failed.
    fn serve(&mut self) {
        self.producer.poll(Duration::ZERO);
        let reports = std::mem::take(&mut *self.producer.context().reports.lock().unwrap_or_else(|e| e.into_inner()));
        for report in reports {
            match report.failure {
                None => self.acknowledge(report.time),
                Some((error, message)) => {
                    debug_assert_eq!(message.attempt, report.attempt);
                    self.failed_delivery(error, message)
                }
            }
        }
        self.send_backlog();
    }
}

/// A message's key, value (`None`: a tombstone) and headers.
pub type KafkaMessage = (Option<Vec<u8>>, Option<Vec<u8>>, Option<OwnedHeaders>);

/// How a record becomes a Kafka message.
pub trait ToMessage {
    /// The record as a message.
    fn to_message(&self) -> Result<KafkaMessage, SinkError>;
}

impl ToMessage for ChangeRecord {
    fn to_message(&self) -> Result<KafkaMessage, SinkError> {
        let (key, empty) = match self {
            ChangeRecord::Recs { user, items, .. } => (user.key(), items.is_empty()),
            ChangeRecord::HotItems { window_end, category: None, .. } => {
                (format!("{HOT_ITEMS_KEY_PREFIX}{window_end}"), false)
            }
            ChangeRecord::HotItems { window_end, category: Some(category), .. } => {
                (format!("{HOT_ITEMS_KEY_PREFIX}{window_end}/{}", category.key()), false)
            }
        };
        let payload = if empty { None } else { Some(serde_json::to_vec(self).map_err(SinkError::encode)?) };
        Ok((Some(key.into_bytes()), payload, None))
    }
}

impl ToMessage for DeadLetter {
    fn to_message(&self) -> Result<KafkaMessage, SinkError> {
        let detail = self.reason.to_string();
        let mut headers = OwnedHeaders::new()
            .insert(Header { key: "reason", value: Some(self.reason.code()) })
            .insert(Header { key: "detail", value: Some(detail.as_str()) })
            .insert(Header { key: "origin", value: Some(self.origin.as_str()) });
        if let Some((partition, offset)) = self.partition_offset {
            headers = headers
                .insert(Header { key: "partition", value: Some(&partition.to_string()) })
                .insert(Header { key: "offset", value: Some(&offset.to_string()) });
        }
        Ok((None, Some(self.raw.clone()), Some(headers)))
    }
}

impl<R: ToMessage> Destination<R> for KafkaDestination {
    fn write(&mut self, time: Millis, record: &R) -> Result<(), SinkError> {
        let (key, payload, headers) = record.to_message()?;
        self.send(Outgoing { time, key, payload, headers, attempt: 0 });
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.serve();
        let fatal = self.producer.context().fatal.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match fatal.or_else(|| self.failure.clone()) {
            // The output's name, which the failure is reported under, already says where.
            Some(cause) => Err(SinkError::Delivery(cause)),
            None => Ok(()),
        }
    }

    fn unacknowledged(&mut self) -> Option<Millis> {
        self.serve();
        self.unacknowledged.keys().next().copied()
    }
}

impl Drop for KafkaDestination {
    fn drop(&mut self) {
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        while !self.unacknowledged.is_empty() && self.failure.is_none() && Instant::now() < deadline {
            self.serve();
            let _ = self.producer.flush(Duration::from_millis(100));
        }
        let left: usize = self.unacknowledged.values().sum();
        if left > 0 || self.failed > 0 {
            eprintln!(
                "recflow: {}: {left} messages still undelivered at shutdown, {} given up",
                self.address, self.failed
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Id;
    use crate::results::{CountedItem, ScoredItem};

    fn key(record: ChangeRecord) -> String {
        String::from_utf8(record.to_message().unwrap().0.unwrap()).unwrap()
    }

    fn recs(user: Id) -> ChangeRecord {
        let item = ScoredItem { item: Id::Num(1), score: 1.0, fallback: false, because: Vec::new() };
        ChangeRecord::Recs { user, time: 1, items: vec![item] }
    }

    fn hot(window_end: u64, category: Option<Id>) -> ChangeRecord {
        let items = vec![CountedItem { item: Id::Num(1), count: 1 }];
        ChangeRecord::HotItems { window_start: 0, window_end, category, items }
    }

    /// Distinct users, and a user and a window, never share a Kafka key.
    #[test]
    fn distinct_ids_get_distinct_keys() {
        let keys = [
            key(recs(Id::Num(42))),
            key(recs(Id::Text("42".into()))),
            key(recs(Id::Text("alice".into()))),
            key(recs(Id::Text("hot_items/1700000100".into()))),
            key(hot(1_700_000_100, None)),
            key(hot(1_700_000_100, Some(Id::Num(3)))),
            key(hot(1_700_000_100, Some(Id::Text("3".into())))),
        ];
        let distinct: std::collections::BTreeSet<&String> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "{keys:?}");
        assert_eq!(keys[0], "42", "a number is its digits");
        assert_eq!(keys[2], "alice", "a plain text id is itself");
        assert_eq!(keys[4], "hot_items/1700000100");
    }
}
