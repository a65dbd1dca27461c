//! Events from a Kafka topic. Every worker of every process reads its own partitions (partition
//! `p` goes to global worker `p mod W`), each partition being one lane with its own watermark.
//! Polls never block. Offsets are owned by the pipeline: nothing is committed automatically; the
//! ingest operator acknowledges records once every result depending on them is written, and only
//! then are their offsets committed to the consumer group.
//!
//! A bounded read (`--bounded`) looks up each partition's end offset at start and finishes a
//! partition once it has read up to there.
//!
//! Each partition starts at an offset resolved when the source opens (`earliest` is the
//! partition's first offset then, `latest` its end then), never at a symbolic one the consumer
//! resolves later: so the source always knows each partition's next offset, even before it has
//! read anything there, and a resume point ([`KafkaResume`]) names every partition it reads.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use rustc_hash::FxHashMap as HashMap;

use super::{Arrival, EventSource, KafkaResume, Poll, Position, ResumePoint};
use crate::decode::Decoder;
use crate::event::{DeadLetter, RejectReason};
use crate::kafka::{client_config, KafkaSetupError, ReportLimiter, REQUEST_TIMEOUT};
use crate::metrics::Metrics;
use crate::spec::kafka_address::KafkaAddress;
use crate::spec::{KafkaSourceSpec, SourceSpec, StartFrom};

/// How often acknowledged offsets are committed while the stream runs.
const COMMIT_INTERVAL: Duration = Duration::from_millis(500);

/// Receives librdkafka's statistics and keeps the consumer lag per partition (end offset minus
/// committed offset) in the metrics. The lag is computed here rather than taken from the
/// statistics: librdkafka's own figure needs committed offsets it learns from the group, which
/// it does not learn for partitions assigned by hand (and then reports the lag as unknown).
struct SourceContext {
    topic: String,
    metrics: Arc<Metrics>,
    /// Per partition, where its consumer lag is counted from: the offset this run last committed
    /// or, before its first commit, the offset it started reading at.
    lag_base: Mutex<HashMap<i32, i64>>,
}

impl SourceContext {
    fn lag(&self, partition: i32, stats: &rdkafka::statistics::Partition) -> i64 {
        // The last stable offset is the end for the default `isolation.level = read_committed`.
        let end = if stats.ls_offset >= 0 { stats.ls_offset } else { stats.hi_offset };
        match self.lag_base.lock().unwrap_or_else(|e| e.into_inner()).get(&partition).copied() {
            Some(base) if end >= 0 => (end - base).max(0),
            _ => -1,
        }
    }
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: Statistics) {
        if let Some(topic) = statistics.topics.get(&self.topic) {
            for (partition, stats) in &topic.partitions {
                if *partition >= 0 && stats.desired {
                    self.metrics.set_consumer_lag(*partition, self.lag(*partition, stats));
                }
            }
        }
    }

    fn log(&self, _level: RDKafkaLogLevel, _fac: &str, _log_message: &str) {
        // Connection trouble surfaces as poll errors, which the source reports at a bounded rate.
    }

    fn error(&self, _error: KafkaError, _reason: &str) {}
}

impl ConsumerContext for SourceContext {}

/// Reads this worker's partitions of one topic.
pub struct KafkaSource {
    consumer: BaseConsumer<SourceContext>,
    address: KafkaAddress,
    decoder: Decoder,
    /// The partition of each lane.
    partitions: Vec<i32>,
    lane_of: HashMap<i32, usize>,
    /// For bounded reads: each lane's end offset, fixed at start.
    end_offsets: Option<Vec<i64>>,
    finished: Vec<bool>,
    idle_timeout: Duration,
    /// Each lane's acknowledged next offset not yet committed.
    to_commit: Vec<Option<i64>>,
    /// Each lane's offset after the last message delivered or, before the first, its start.
    next_offsets: Vec<i64>,
    last_commit: Instant,
    reports: ReportLimiter,
    metrics: Arc<Metrics>,
}

impl KafkaSource {
    /// The number of partitions of the topic `spec` names; fails when the broker cannot be
    /// reached or the topic is missing. Looked up once per process, before the workers open.
    pub fn partitions(spec: &KafkaSourceSpec) -> Result<usize, KafkaSetupError> {
        let address = KafkaAddress { brokers: spec.brokers.clone(), topic: spec.topic.clone() };
        crate::kafka::partition_count(&address, &client_config(&spec.brokers, &spec.options))?.ok_or_else(|| {
            KafkaSetupError::new(
                &address,
                "the topic does not exist; create it (`recflow produce` does) or check the address",
            )
        })
    }

    /// Connects to the topic `spec` names, which has `count` partitions, and assigns this worker
    /// its partitions: those `p` with `p mod workers == worker`. Each partition `resume` names
    /// starts at its offset there, the others where `[source.kafka] start` says (an empty
    /// `resume` for a fresh start). Fails when `resume` names a partition the topic does not
    /// have.
    pub fn open_at(
        source: &SourceSpec,
        spec: &KafkaSourceSpec,
        count: usize,
        worker: usize,
        workers: usize,
        metrics: Arc<Metrics>,
        resume: &KafkaResume,
    ) -> Result<KafkaSource, KafkaSetupError> {
        let address = KafkaAddress { brokers: spec.brokers.clone(), topic: spec.topic.clone() };
        if let Some(missing) = resume.next_offsets.keys().find(|p| !(0..count as i32).contains(p)) {
            return Err(KafkaSetupError::new(
                &address,
                format!("the resume point names partition {missing}, but the topic has {count} partitions"),
            ));
        }
        let mut config = client_config(&spec.brokers, &spec.options);
        config
            .set("group.id", &spec.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", if spec.start == StartFrom::Latest { "latest" } else { "earliest" });
        // Results wait for the slowest partition's next fetch, so fetches should not idle long at
        // the broker (librdkafka's default is 500 ms).
        for (key, default) in [("statistics.interval.ms", "1000"), ("fetch.wait.max.ms", "10")] {
            if !spec.options.contains_key(key) {
                config.set(key, default);
            }
        }
        let context =
            SourceContext { topic: spec.topic.clone(), metrics: Arc::clone(&metrics), lag_base: Mutex::default() };
        let consumer: BaseConsumer<SourceContext> = config
            .create_with_context(context)
            .map_err(|e| KafkaSetupError::new(&address, format!("cannot create a consumer: {e}")))?;
        let partitions: Vec<i32> = (0..count as i32).filter(|p| *p as usize % workers == worker).collect();
        let bounds = start_offsets(&consumer, spec, &address, &partitions, resume)?;
        let mut assignment = TopicPartitionList::new();
        for (&partition, bound) in partitions.iter().zip(&bounds) {
            assignment
                .add_partition_offset(&spec.topic, partition, Offset::Offset(bound.start))
                .map_err(|e| KafkaSetupError::new(&address, format!("cannot set the start offset: {e}")))?;
        }
        consumer
            .context()
            .lag_base
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(partitions.iter().zip(&bounds).map(|(&partition, bound)| (partition, bound.start)));
        let end_offsets = spec.bounded.then(|| bounds.iter().map(|bound| bound.high).collect::<Vec<i64>>());
        let finished = bounds.iter().map(|bound| spec.bounded && bound.start.max(bound.low) >= bound.high).collect();
        consumer
            .assign(&assignment)
            .map_err(|e| KafkaSetupError::new(&address, format!("cannot assign partitions: {e}")))?;
        let lane_of = partitions.iter().enumerate().map(|(lane, p)| (*p, lane)).collect();
        let lanes = partitions.len();
        let source = KafkaSource {
            consumer,
            address,
            decoder: Decoder::for_payload(source, source.payload()),
            partitions,
            lane_of,
            end_offsets,
            finished,
            idle_timeout: Duration::from_millis(spec.idle_timeout.millis()),
            to_commit: vec![None; lanes],
            next_offsets: bounds.iter().map(|bound| bound.start).collect(),
            last_commit: Instant::now(),
            reports: ReportLimiter::default(),
            metrics,
        };
        source.pause_finished();
        Ok(source)
    }

    /// Stops fetching the partitions whose bounded read is complete.
    fn pause_finished(&self) {
        let mut done = TopicPartitionList::new();
        for (lane, &partition) in self.partitions.iter().enumerate() {
            if self.finished[lane] {
                done.add_partition(&self.address.topic, partition);
            }
        }
        if done.count() > 0 {
            let _ = self.consumer.pause(&done);
        }
    }

    fn report(&mut self, error: &KafkaError) {
        self.metrics.kafka_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.reports.due() {
            eprintln!("recflow: {}: {error} (librdkafka keeps retrying)", self.address);
        }
    }

    fn commit(&mut self, mode: CommitMode) {
        let mut offsets = TopicPartitionList::new();
        for (lane, next) in self.to_commit.iter_mut().enumerate() {
            if let Some(next) = next.take() {
                let _ = offsets.add_partition_offset(&self.address.topic, self.partitions[lane], Offset::Offset(next));
            }
        }
        if offsets.count() == 0 {
            return;
        }
        match self.consumer.commit(&offsets, mode) {
            Ok(()) => {
                let mut bases = self.consumer.context().lag_base.lock().unwrap_or_else(|e| e.into_inner());
                for committed in offsets.elements() {
                    if let Offset::Offset(n) = committed.offset() {
                        bases.insert(committed.partition(), n);
                    }
                }
            }
            Err(e) => self.report(&e),
        }
        self.last_commit = Instant::now();
    }

    fn all_finished(&self) -> bool {
        self.end_offsets.is_some() && self.finished.iter().all(|f| *f)
    }
}

impl EventSource for KafkaSource {
    fn poll(&mut self, max: usize, out: &mut Vec<Arrival>) -> Poll {
        if self.all_finished() {
            return Poll::Done;
        }
        let mut produced = 0;
        let mut newly_finished = false;
        while produced < max {
            let message = match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    self.report(&e);
                    break;
                }
            };
            let Some(&lane) = self.lane_of.get(&message.partition()) else { continue };
            let offset = message.offset();
            if let Some(ends) = &self.end_offsets {
                if offset >= ends[lane] {
                    continue;
                }
                if offset + 1 >= ends[lane] {
                    self.finished[lane] = true;
                    newly_finished = true;
                }
            }
            produced += 1;
            self.next_offsets[lane] = offset + 1;
            let at = Position { lane, offset: offset as u64 };
            let record = match message.payload() {
                Some(payload) => {
                    self.decoder.decode_bytes(payload).map_err(|reason| self.reject(at, reason, payload.to_vec()))
                }
                None => Err(self.reject(at, RejectReason::Malformed("the message has no payload".into()), Vec::new())),
            };
            out.push((at, record));
        }
        if newly_finished {
            self.pause_finished();
        }
        if self.last_commit.elapsed() >= COMMIT_INTERVAL {
            self.commit(CommitMode::Async);
        }
        if produced > 0 {
            Poll::Ready
        } else if self.all_finished() {
            Poll::Done
        } else {
            Poll::Idle
        }
    }

    fn name(&self) -> String {
        format!("kafka:{}", self.address.topic)
    }

    fn lanes(&self) -> usize {
        self.partitions.len()
    }

    fn lane_finished(&self, lane: usize) -> bool {
        self.finished[lane]
    }

    fn read_live(&self) -> bool {
        true
    }

    fn idle_timeout(&self) -> Option<Duration> {
        // A bounded read knows where each partition ends, so only finished partitions stop
        // counting; a slow partition is never mistaken for an idle one.
        self.end_offsets.is_none().then_some(self.idle_timeout)
    }

    fn origin(&self, at: Position) -> String {
        format!("kafka:{}/{}:{}", self.address.topic, self.partitions[at.lane], at.offset)
    }

    fn reject(&self, at: Position, reason: RejectReason, raw: Vec<u8>) -> DeadLetter {
        DeadLetter {
            reason,
            origin: self.origin(at),
            raw,
            partition_offset: Some((self.partitions[at.lane], at.offset as i64)),
        }
    }

    fn acknowledge(&mut self, written: &[Position]) {
        for at in written {
            let next = at.offset as i64 + 1;
            let slot = &mut self.to_commit[at.lane];
            *slot = Some(slot.map_or(next, |n| n.max(next)));
        }
    }

    fn finish(&mut self) {
        // Every record delivered has its results written now, also those a run restored from a
        // checkpoint never acknowledged itself (it may read nothing at all when the checkpoint
        // was taken at the end), so the group's offsets end where the read did.
        for (slot, &next) in self.to_commit.iter_mut().zip(&self.next_offsets) {
            *slot = Some(slot.map_or(next, |n| n.max(next)));
        }
        self.commit(CommitMode::Sync);
    }

    fn resume_point(&self) -> Option<ResumePoint> {
        let next_offsets = self.partitions.iter().copied().zip(self.next_offsets.iter().copied()).collect();
        Some(ResumePoint::Kafka(KafkaResume { next_offsets }))
    }
}

/// Where a partition starts, with its first and end offsets as they were then.
struct PartitionBounds {
    start: i64,
    low: i64,
    high: i64,
}

/// Where each of `partitions` starts: its offset in `resume` if it has one; otherwise, by
/// `spec.start`, its first offset, its end offset, or the consumer group's committed offset
/// (its first where the group has none).
fn start_offsets(
    consumer: &BaseConsumer<SourceContext>,
    spec: &KafkaSourceSpec,
    address: &KafkaAddress,
    partitions: &[i32],
    resume: &KafkaResume,
) -> Result<Vec<PartitionBounds>, KafkaSetupError> {
    let needs_committed = partitions.iter().any(|p| !resume.next_offsets.contains_key(p));
    let committed = match spec.start {
        StartFrom::Committed if needs_committed => {
            let mut asked = TopicPartitionList::new();
            for &partition in partitions {
                asked.add_partition(&spec.topic, partition);
            }
            Some(
                consumer
                    .committed_offsets(asked, REQUEST_TIMEOUT)
                    .map_err(|e| KafkaSetupError::new(address, format!("cannot read committed offsets: {e}")))?,
            )
        }
        _ => None,
    };
    let committed_offset = |partition: i32| match committed.as_ref()?.find_partition(&spec.topic, partition)?.offset() {
        Offset::Offset(n) => Some(n),
        _ => None,
    };
    partitions
        .iter()
        .map(|&partition| {
            let (low, high) = consumer.fetch_watermarks(&spec.topic, partition, REQUEST_TIMEOUT).map_err(|e| {
                KafkaSetupError::new(address, format!("cannot read the offsets of partition {partition}: {e}"))
            })?;
            let start = match (resume.next_offsets.get(&partition), spec.start) {
                (Some(&next), _) => next,
                (None, StartFrom::Latest) => high,
                (None, StartFrom::Committed) => committed_offset(partition).unwrap_or(low),
                (None, StartFrom::Earliest) => low,
            };
            Ok(PartitionBounds { start, low, high })
        })
        .collect()
}
