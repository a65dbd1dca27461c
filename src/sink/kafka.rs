//! Results and dead letters to Kafka topics. One idempotent producer per topic on worker 0, so
//! each key's records reach their partition in the order they were computed.
//!
//! - Changelog: recommendation changes keyed by user (the value is the changelog record as JSON;
//!   a tombstone when the list becomes empty), hot-item windows keyed by `hot_items/WINDOW_END`
//!   or `hot_items/WINDOW_END/CATEGORY`, the list for users without one of their own keyed by
//!   `popular` (a tombstone when the popular pool is empty).
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
use crate::event::{DeadLetter, Millis, HOT_ITEMS_KEY_PREFIX, POPULAR_KEY};
use crate::kafka::partition::partition_of;
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
    /// Where recflow places it; `None` leaves it to librdkafka's partitioner.
    partition: Option<i32>,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Option<OwnedHeaders>,
    attempt: u32,
}

/// What the producer's delivery callback reports: the message's time and, delivered, its
/// partition and offset or, failed, the message to send again.
struct Delivery {
    time: Millis,
    attempt: u32,
    placed: Option<(i32, i64)>,
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
    type DeliveryOpaque = Box<(Millis, u32, Option<i32>)>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let (time, attempt, partition) = *opaque;
        let placed = result.as_ref().ok().map(|message| (message.partition(), message.offset()));
        let failure = match result {
            Ok(_) => None,
            Err((error, message)) => Some((
                error.clone(),
                Outgoing {
                    time,
                    partition,
                    key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().map(<[u8]>::to_vec),
                    headers: message.headers().map(|h| h.detach()),
                    attempt,
                },
            )),
        };
        self.reports.lock().unwrap_or_else(|e| e.into_inner()).push(Delivery { time, attempt, placed, failure });
    }
}

/// Where a Kafka output stands, partition by partition: the offset the next record of the run's
/// sequence goes to. Shared with the checkpoint writer, which records it at each cut, when every
/// record before the cut has been acknowledged and none after it written.
#[derive(Clone, Debug, Default)]
pub struct WrittenOffsets(Arc<Mutex<BTreeMap<i32, i64>>>);

impl WrittenOffsets {
    /// Every partition's next offset.
    pub fn get(&self) -> BTreeMap<i32, i64> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<i32, i64>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A record's key and value as the topic holds them.
type KeyAndValue = (Option<Vec<u8>>, Option<Vec<u8>>);

/// What exactly-once output keeps: the written offsets, and the records a run before this one
/// wrote after the restored checkpoint, which this run computes again and does not write twice.
struct Exactly {
    offsets: WrittenOffsets,
    /// Per partition, the key and value of each record already in the topic after the
    /// checkpoint's offset, in offset order.
    written: BTreeMap<i32, VecDeque<KeyAndValue>>,
    /// Each partition's end offset when the run started.
    ends: BTreeMap<i32, i64>,
}

/// How a run continues a Kafka output exactly (a checkpointed run): from where the restored
/// checkpoint's cut left each partition, or, without one, from the topic's end.
pub struct Continue<'a> {
    /// Each partition's next offset at the restored checkpoint's cut; `None` for a fresh run.
    pub from: Option<&'a BTreeMap<i32, i64>>,
    /// The checkpoint, for messages.
    pub checkpoint: u64,
}

/// Writes records to one Kafka topic.
pub struct KafkaDestination {
    producer: BaseProducer<DeliveryContext>,
    address: KafkaAddress,
    /// The topic's partition count, which records are placed by.
    partitions: i32,
    /// Deliveries of one message before it is given up.
    max_attempts: u32,
    exactly: Option<Exactly>,
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
        Self::open_with(address, options, partitions, metrics, false)
    }

    /// [`open`](Self::open) for a run whose output must hold every record exactly once across
    /// restarts: the producer guarantees no gaps (a message it cannot deliver stops the run
    /// rather than be sent again out of order), every partition's next offset is tracked for the
    /// checkpoints ([`WrittenOffsets`]), and, continuing from a checkpoint, the records a run
    /// before this one already wrote after the checkpoint's cut are read back and not written
    /// again: this run computes exactly the same ones, in the same order, into the same
    /// partitions. Should a record differ (the input was not replayed identically), the
    /// partition is written on from there with a warning.
    pub fn open_exactly(
        address: &KafkaAddress,
        options: &BTreeMap<String, String>,
        partitions: usize,
        metrics: Arc<Metrics>,
        resume: Continue<'_>,
    ) -> Result<(KafkaDestination, WrittenOffsets), SinkError> {
        let mut destination = Self::open_with(address, options, partitions, metrics, true)?;
        let exactly = destination.already_written(resume)?;
        let offsets = exactly.offsets.clone();
        destination.exactly = Some(exactly);
        Ok((destination, offsets))
    }

    fn open_with(
        address: &KafkaAddress,
        options: &BTreeMap<String, String>,
        partitions: usize,
        metrics: Arc<Metrics>,
        exactly: bool,
    ) -> Result<KafkaDestination, SinkError> {
        let open_error = |message: String| SinkError::Open { destination: address.to_string(), message };
        if options.contains_key("partitioner") {
            return Err(open_error(
                "recflow places each record itself (the Java client's murmur2 of its key), so `partitioner` has no \
                 effect: remove it from [output] kafka_options"
                    .into(),
            ));
        }
        let mut config = client_config(&address.brokers, options);
        let partitions = crate::kafka::ensure_topic(address, &config, partitions).map_err(|e| open_error(e.message))?;
        config.set("enable.idempotence", "true");
        if exactly {
            config.set("enable.gapless.guarantee", "true");
        }
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
            partitions: partitions as i32,
            max_attempts: if exactly { 1 } else { MAX_ATTEMPTS },
            exactly: None,
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
        self.send(Outgoing { time: 0, partition: None, key, payload, headers: None, attempt: 0 });
    }

    /// The records already in the topic after `resume`'s offsets, and where each partition
    /// stands.
    fn already_written(&self, resume: Continue<'_>) -> Result<Exactly, SinkError> {
        let topic = &self.address.topic;
        let open_error = |message: String| SinkError::Open { destination: self.address.to_string(), message };
        let mut ends = BTreeMap::new();
        for partition in 0..self.partitions {
            let (_, high) = self
                .producer
                .client()
                .fetch_watermarks(topic, partition, crate::kafka::REQUEST_TIMEOUT)
                .map_err(|e| open_error(format!("cannot read partition {partition}'s end offset: {e}")))?;
            ends.insert(partition, high);
        }
        let Some(from) = resume.from else {
            return Ok(Exactly {
                offsets: WrittenOffsets(Arc::new(Mutex::new(ends.clone()))),
                written: BTreeMap::new(),
                ends,
            });
        };
        let checkpoint = resume.checkpoint;
        if from.keys().any(|p| *p >= self.partitions) || from.len() != ends.len() {
            return Err(open_error(format!(
                "the topic has {} partitions, and had {} at checkpoint {checkpoint}: records would go to other \
                 partitions than before; restore onto a topic with as many partitions, or use --fresh",
                self.partitions,
                from.len()
            )));
        }
        for (partition, offset) in from {
            if ends[partition] < *offset {
                return Err(open_error(format!(
                    "partition {partition} ends at offset {}, before offset {offset} it had reached at checkpoint \
                     {checkpoint}: records it held were deleted; use --fresh to start over",
                    ends[partition]
                )));
            }
        }
        let starts = from.iter().map(|(p, o)| (*p, rdkafka::Offset::Offset(*o))).collect();
        let messages = crate::kafka::read_from(&self.address, &starts).map_err(|e| open_error(e.message))?;
        let mut written: BTreeMap<i32, VecDeque<_>> = BTreeMap::new();
        for message in messages {
            let record = (message.key().map(<[u8]>::to_vec), message.payload().map(<[u8]>::to_vec));
            written.entry(message.partition()).or_default().push_back(record);
        }
        let count: usize = written.values().map(VecDeque::len).sum();
        if count > 0 {
            eprintln!(
                "recflow: {}: {count} records were written after checkpoint {checkpoint} before the restart; \
                 they are not written again",
                self.address
            );
        }
        Ok(Exactly { offsets: WrittenOffsets(Arc::new(Mutex::new(from.clone()))), written, ends })
    }

    /// Whether `message` is the next record a run before this one already wrote to its partition
    /// (after the restored checkpoint): then it is not written again, and the partition's offset
    /// moves past it. A record that differs from the written one ends the skipping there.
    fn written_before(&mut self, message: &Outgoing) -> bool {
        let (Some(exactly), Some(partition)) = (self.exactly.as_mut(), message.partition) else { return false };
        let Some(written) = exactly.written.get_mut(&partition) else { return false };
        let Some((key, payload)) = written.pop_front() else { return false };
        let mut offsets = exactly.offsets.lock();
        if key == message.key && payload == message.payload {
            *offsets.entry(partition).or_default() += 1;
            return true;
        }
        let offset = offsets.get(&partition).copied().unwrap_or_default();
        eprintln!(
            "recflow: warning: {}: partition {partition}'s record at offset {offset} differs from the one computed \
             again after the restart (the input was not replayed identically); the partition holds the records \
             written before the restart from there, followed by the ones computed now",
            self.address
        );
        exactly.written.remove(&partition);
        offsets.insert(partition, exactly.ends[&partition]);
        false
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
        if self.written_before(&message) {
            return;
        }
        *self.unacknowledged.entry(message.time).or_default() += 1;
        self.backlog.push_back(message);
        self.send_backlog();
    }

    /// Hands waiting messages to the producer until its queue is full.
    fn send_backlog(&mut self) {
        while let Some(message) = self.backlog.pop_front() {
            let opaque = Box::new((message.time, message.attempt, message.partition));
            let mut record = BaseRecord::with_opaque_to(&self.address.topic, opaque);
            if let Some(partition) = message.partition {
                record = record.partition(partition);
            }
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
        let give_up = timed_out || message.attempt + 1 >= self.max_attempts;
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
                false if self.max_attempts == 1 => format!(
                    "a message was not delivered: {error}; sending it again could put it after later ones, which \
                     exactly-once output cannot allow: restart the run to continue from its last checkpoint"
                ),
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
                None => {
                    if let (Some(exactly), Some((partition, offset))) = (&self.exactly, report.placed) {
                        let mut offsets = exactly.offsets.lock();
                        let next = offsets.entry(partition).or_default();
                        *next = (*next).max(offset + 1);
                    }
                    self.acknowledge(report.time)
                }
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
            ChangeRecord::Popular { items, .. } => (POPULAR_KEY.to_string(), items.is_empty()),
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
        let partition = Some(partition_of(key.as_deref(), payload.as_deref(), self.partitions));
        self.send(Outgoing { time, partition, key, payload, headers, attempt: 0 });
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
