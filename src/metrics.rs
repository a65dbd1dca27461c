//! Counters shared by the workers of one process, read by the status line, `/metrics`,
//! `/v1/status` ([`crate::status`]) and tests.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::event::{DeadLetter, RejectReason};

/// Reason codes in the order of [`Metrics::rejected`].
pub const REJECT_CODES: [&str; 7] =
    ["malformed", "missing_field", "unknown_action", "bad_number", "timestamp_out_of_range", "late", "future"];

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Records read from the source, accepted or not.
    pub records_in: AtomicU64,
    /// Events accepted into the dataflow.
    pub accepted: AtomicU64,
    /// Rejected records per reason, indexed as [`REJECT_CODES`].
    pub rejected: [AtomicU64; 7],
    /// Each reading worker's watermark, in milliseconds.
    watermarks: Mutex<BTreeMap<usize, u64>>,
    /// Every reading worker's progress, of every process when several workers read (they tell
    /// each other), else of this process.
    readers: Mutex<BTreeMap<usize, ReaderProgress>>,
    /// Kafka consumer lag per partition read by this process (end offset minus committed offset).
    consumer_lag: Mutex<BTreeMap<i32, i64>>,
    /// Errors Kafka clients reported (connection trouble and the like; they retry by themselves).
    pub kafka_errors: AtomicU64,
    /// Kafka messages whose delivery failed and that were sent again.
    pub delivery_retries: AtomicU64,
    /// Upsert records written to the changelog.
    pub output_records: AtomicU64,
    /// Accepted events whose results are not all written yet (the source stops reading while
    /// this is above its bound and the dataflow lags).
    pub in_flight: AtomicU64,
    /// Update latency: from an event's ingestion until the output frontier passes its time.
    pub update_latency: LatencyHistogram,
    /// How the first records read turned out, for the rejection alarm.
    pub first_records: FirstRecords,
    /// The latest dead letters, newest last, at most [`DeadLetterSample::KEPT`].
    recent_dead_letters: Mutex<VecDeque<DeadLetterSample>>,
    /// The run's fatal fault, once one happened: the process is stopping (`/healthz` says so).
    pub fatal: crate::fatal::Fatal,
    /// The last checkpoint this process committed, when it takes checkpoints.
    last_checkpoint: Mutex<Option<CheckpointFigures>>,
    /// How long the workers of this process stopped for the last checkpoint they took.
    last_pause: Mutex<Option<CheckpointPause>>,
}

/// How long a checkpoint stopped the workers: the longest of any worker of this process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointPause {
    /// The checkpoint's number.
    pub id: u64,
    /// From a worker's stop to its resume, in microseconds: the time it read nothing (while the
    /// dataflow worked off what was read before the cut, and while it took its state).
    pub paused_us: u64,
    /// Of that, the time it spent taking its operators' state, in microseconds: the time it did
    /// no work at all (the state is serialised afterwards, on another thread).
    pub taking_us: u64,
}

/// What the status line and `/metrics` show of the last checkpoint committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointFigures {
    /// Its number.
    pub id: u64,
    /// When it was committed, in milliseconds since the Unix epoch.
    pub completed_ms: u64,
    /// The bytes of its data files.
    pub bytes: u64,
    /// From its first part reaching the writer to its manifest being written, in milliseconds.
    pub write_ms: u64,
}

/// A dead letter as `/v1/status` shows it: enough to see what is wrong, never the whole record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeadLetterSample {
    /// The reason code, as in [`REJECT_CODES`].
    pub reason: &'static str,
    /// The reason in words.
    pub detail: String,
    /// Where the record came from (`file:events.csv:17`, `kafka:events/3:1042`, ...).
    pub origin: String,
    /// The raw record as text, cut to at most [`DeadLetterSample::RAW_CHARS`] characters.
    pub raw: String,
    /// Wall-clock time it was rejected, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

impl DeadLetterSample {
    /// How many of the latest dead letters are kept.
    pub const KEPT: usize = 5;
    /// How much of a raw record is kept.
    pub const RAW_CHARS: usize = 200;

    fn of(dead: &DeadLetter) -> DeadLetterSample {
        let raw = dead.raw_text();
        let mut kept: String = raw.chars().take(Self::RAW_CHARS).collect();
        if kept.len() < raw.len() {
            kept.push('…');
        }
        DeadLetterSample {
            reason: dead.reason.code(),
            detail: dead.reason.to_string(),
            origin: dead.origin.clone(),
            raw: kept,
            at_ms: unix_millis(SystemTime::now()),
        }
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// How far event time trails the wall clock: `now` minus a watermark of `watermark_ms`, in
/// seconds (negative when event time runs ahead; meaningless for replayed or synthetic times).
pub fn watermark_lag_seconds(now: SystemTime, watermark_ms: u64) -> f64 {
    (unix_millis(now) as f64 - watermark_ms as f64) / 1000.0
}

/// This process's resident memory, where the platform tells (Linux's `/proc/self/status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Memory {
    /// Resident now (`VmRSS`), in bytes.
    pub resident_bytes: Option<u64>,
    /// The most ever resident (`VmHWM`), in bytes.
    pub peak_resident_bytes: Option<u64>,
}

impl Memory {
    /// Reads the figures now; both are `None` where the platform does not tell.
    pub fn now() -> Memory {
        let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return Memory::default() };
        let kib = |key: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(key))?;
            line[key.len()..].split_whitespace().next()?.parse::<u64>().ok().map(|k| k * 1024)
        };
        Memory { resident_bytes: kib("VmRSS:"), peak_resident_bytes: kib("VmHWM:") }
    }
}

/// How the first [`FirstRecords::SIZE`] records read by this process turned out.
#[derive(Debug, Default)]
pub struct FirstRecords {
    /// Records that took a place among the first, possibly more than [`FirstRecords::SIZE`].
    claimed: AtomicU64,
    /// Per outcome: accepted, then rejected per reason in the order of [`REJECT_CODES`].
    outcomes: [AtomicU64; 1 + REJECT_CODES.len()],
}

impl FirstRecords {
    /// How many records count as the first.
    pub const SIZE: u64 = 1_000;

    /// Notes the outcome of one record, rejected for `reason` or accepted (`None`), if it is
    /// among the first.
    pub fn note(&self, reason: Option<&RejectReason>) {
        if self.claimed.load(Ordering::Relaxed) >= Self::SIZE
            || self.claimed.fetch_add(1, Ordering::Relaxed) >= Self::SIZE
        {
            return;
        }
        let outcome = reason.map_or(0, |reason| 1 + reject_index(reason));
        self.outcomes[outcome].fetch_add(1, Ordering::Relaxed);
    }

    /// The records noted so far, and how many of them were rejected per reason, in the order of
    /// [`REJECT_CODES`].
    pub fn counts(&self) -> (u64, [u64; REJECT_CODES.len()]) {
        let outcomes = self.outcomes.each_ref().map(|count| count.load(Ordering::Relaxed));
        let mut rejected = [0; REJECT_CODES.len()];
        rejected.copy_from_slice(&outcomes[1..]);
        (outcomes.iter().sum(), rejected)
    }
}

fn reject_index(reason: &RejectReason) -> usize {
    REJECT_CODES.iter().position(|c| *c == reason.code()).unwrap_or(0)
}

/// How far a reading worker has got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaderProgress {
    /// Its input frontier (the dataflow time its watermark allows), in milliseconds.
    pub frontier: u64,
    /// Records it has read.
    pub records: u64,
}

/// Sub-buckets per power of two: bucket bounds are about 9% apart.
const SUB_BUCKETS: usize = 8;

/// A lock-free latency histogram with log-spaced buckets (about 9% resolution), bounded in size.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: Vec<AtomicU64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram { buckets: (0..64 * SUB_BUCKETS).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl LatencyHistogram {
    fn bucket(micros: u64) -> usize {
        let x = (micros.max(1)) as f64;
        ((x.log2() * SUB_BUCKETS as f64) as usize).min(64 * SUB_BUCKETS - 1)
    }

    fn upper_bound(bucket: usize) -> f64 {
        2f64.powf((bucket + 1) as f64 / SUB_BUCKETS as f64)
    }

    /// Records `count` observations of `micros` microseconds.
    pub fn record(&self, micros: u64, count: u64) {
        self.buckets[Self::bucket(micros)].fetch_add(count, Ordering::Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `q`-quantile (0..=1) in milliseconds (a bucket's upper bound), if anything was recorded.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        Self::quantile_of(&self.counts(), q)
    }

    /// The observations per bucket so far; [`LatencyHistogram::quantile_since`] takes it to give
    /// the quantiles of what was recorded after it.
    pub fn counts(&self) -> Vec<u64> {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect()
    }

    /// The `q`-quantile in milliseconds of the observations recorded between two
    /// [`LatencyHistogram::counts`], `earlier` and `later`, if any were.
    pub fn quantile_since(earlier: &[u64], later: &[u64], q: f64) -> Option<f64> {
        let between: Vec<u64> =
            later.iter().enumerate().map(|(i, n)| n.saturating_sub(earlier.get(i).copied().unwrap_or(0))).collect();
        Self::quantile_of(&between, q)
    }

    fn quantile_of(counts: &[u64], q: f64) -> Option<f64> {
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(Self::upper_bound(i) / 1000.0);
            }
        }
        None
    }
}

impl Metrics {
    /// Counts one rejected record.
    pub fn reject(&self, reason: &RejectReason) {
        self.rejected[reject_index(reason)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one dead letter (rejected or late) and keeps it among the latest samples.
    pub fn dead_letter(&self, dead: &DeadLetter) {
        self.reject(&dead.reason);
        let mut recent = self.recent_dead_letters.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == DeadLetterSample::KEPT {
            recent.pop_front();
        }
        recent.push_back(DeadLetterSample::of(dead));
    }

    /// The latest dead letters this process's readers saw, oldest first.
    pub fn recent_dead_letters(&self) -> Vec<DeadLetterSample> {
        self.recent_dead_letters.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }

    /// Rejected records of every reason, lateness included.
    pub fn dead_lettered(&self) -> u64 {
        self.rejected.iter().map(|count| count.load(Ordering::Relaxed)).sum()
    }

    /// Rejected records for a reason code.
    pub fn rejected_for(&self, code: &str) -> u64 {
        REJECT_CODES.iter().position(|c| *c == code).map_or(0, |i| self.rejected[i].load(Ordering::Relaxed))
    }

    /// Rejected records of every reason except lateness.
    pub fn invalid(&self) -> u64 {
        REJECT_CODES.iter().filter(|c| **c != "late").map(|c| self.rejected_for(c)).sum()
    }

    /// Records the watermark of a reading worker.
    pub fn set_watermark(&self, worker: usize, watermark: u64) {
        self.watermarks.lock().unwrap_or_else(|e| e.into_inner()).insert(worker, watermark);
    }

    /// Each reading worker's watermark, by worker index.
    pub fn watermarks(&self) -> BTreeMap<usize, u64> {
        self.watermarks.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records how far reading worker `worker` has got (keeps the furthest report).
    pub fn set_reader_progress(&self, worker: usize, progress: ReaderProgress) {
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        let entry = readers.entry(worker).or_default();
        entry.frontier = entry.frontier.max(progress.frontier);
        entry.records = entry.records.max(progress.records);
    }

    /// Every reading worker's progress known to this process, by worker index.
    pub fn reader_progress(&self) -> BTreeMap<usize, ReaderProgress> {
        self.readers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The least watermark of this process's reading workers.
    pub fn watermark(&self) -> u64 {
        self.watermarks.lock().unwrap_or_else(|e| e.into_inner()).values().copied().min().unwrap_or(0)
    }

    /// Records a partition's consumer lag.
    pub fn set_consumer_lag(&self, partition: i32, lag: i64) {
        self.consumer_lag.lock().unwrap_or_else(|e| e.into_inner()).insert(partition, lag);
    }

    /// Consumer lag per partition, for partitions this process reads.
    pub fn consumer_lag(&self) -> BTreeMap<i32, i64> {
        self.consumer_lag.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A snapshot for reports.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            records_in: self.records_in.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            late: self.rejected_for("late"),
            invalid: self.invalid(),
            watermark: self.watermark(),
            output_records: self.output_records.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            latency_p50_ms: self.update_latency.quantile_ms(0.5),
            latency_p99_ms: self.update_latency.quantile_ms(0.99),
        }
    }
}

/// A point-in-time copy of the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
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
    /// Accepted events whose results are not all written yet.
    pub in_flight: u64,
    /// Median update latency in milliseconds (ingestion until the output frontier passes the event).
    pub latency_p50_ms: Option<f64>,
    /// 99th-percentile update latency in milliseconds.
    pub latency_p99_ms: Option<f64>,
}

/// Metrics in the Prometheus text format, one family at a time.
#[derive(Default)]
pub struct PrometheusText(String);

impl PrometheusText {
    /// A metric family: its help and type lines, then one line per `(labels, value)` sample
    /// (`labels` such as `{worker="0"}`, or empty).
    pub fn family(&mut self, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
        use std::fmt::Write as _;
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(self.0, "{name}{labels} {value}");
        }
    }

    /// A metric family of one sample without labels.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help, &[(String::new(), value)]);
    }

    /// The text.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// One sample per entry of `by_key`, labelled `{label="KEY"}`.
fn labelled<K: std::fmt::Display, V>(
    label: &str,
    by_key: &BTreeMap<K, V>,
    value: impl Fn(&V) -> f64,
) -> Vec<(String, f64)> {
    by_key.iter().map(|(key, v)| (format!("{{{label}=\"{key}\"}}"), value(v))).collect()
}

impl Metrics {
    /// Records the last checkpoint committed.
    pub fn set_last_checkpoint(&self, figures: CheckpointFigures) {
        *self.last_checkpoint.lock().unwrap_or_else(|e| e.into_inner()) = Some(figures);
    }

    /// The last checkpoint committed, if any.
    pub fn last_checkpoint(&self) -> Option<CheckpointFigures> {
        *self.last_checkpoint.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records how long one worker stopped for checkpoint `pause.id`: the figures kept are the
    /// longest of the process's workers for the newest checkpoint.
    pub fn record_checkpoint_pause(&self, pause: CheckpointPause) {
        let mut last = self.last_pause.lock().unwrap_or_else(|e| e.into_inner());
        *last = Some(match *last {
            Some(kept) if kept.id > pause.id => kept,
            Some(kept) if kept.id == pause.id => CheckpointPause {
                id: pause.id,
                paused_us: kept.paused_us.max(pause.paused_us),
                taking_us: kept.taking_us.max(pause.taking_us),
            },
            _ => pause,
        });
    }

    /// How long the workers stopped for the last checkpoint they took, if any.
    pub fn last_checkpoint_pause(&self) -> Option<CheckpointPause> {
        *self.last_pause.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes this process's counters and gauges to `out`.
    pub fn write_prometheus(&self, out: &mut PrometheusText) {
        let snapshot = self.snapshot();
        out.single(
            "recflow_events_in_total",
            "counter",
            "Records read from the sources, accepted or not.",
            snapshot.records_in as f64,
        );
        out.single(
            "recflow_events_accepted_total",
            "counter",
            "Events accepted into the dataflow.",
            snapshot.accepted as f64,
        );
        let rejected: Vec<(String, f64)> = REJECT_CODES
            .iter()
            .filter(|code| **code != "late")
            .map(|code| (format!("{{reason=\"{code}\"}}"), self.rejected_for(code) as f64))
            .collect();
        out.family("recflow_events_rejected_total", "counter", "Records rejected as invalid, by reason.", &rejected);
        out.single(
            "recflow_events_late_total",
            "counter",
            "Events that arrived after the allowed lateness.",
            snapshot.late as f64,
        );
        let marks = self.watermarks();
        let watermarks = labelled("worker", &marks, |ms| *ms as f64);
        out.family("recflow_watermark_ms", "gauge", "Each reading worker's watermark (event time, ms).", &watermarks);
        let now = std::time::SystemTime::now();
        let lag = labelled("worker", &marks, |ms| watermark_lag_seconds(now, *ms));
        out.family("recflow_watermark_lag_seconds", "gauge", "Wall clock minus each reading worker's watermark.", &lag);
        let readers = self.reader_progress();
        let frontiers = labelled("worker", &readers, |p| p.frontier as f64);
        out.family(
            "recflow_worker_input_frontier_ms",
            "gauge",
            "Each reading worker's input frontier (event time, ms), of every process when several workers read.",
            &frontiers,
        );
        let read = labelled("worker", &readers, |p| p.records as f64);
        out.family(
            "recflow_worker_records_read_total",
            "counter",
            "Records each reading worker has read, of every process when several workers read.",
            &read,
        );
        out.single(
            "recflow_events_in_flight",
            "gauge",
            "Accepted events whose results are not all written yet.",
            snapshot.in_flight as f64,
        );
        out.single(
            "recflow_output_updates_total",
            "counter",
            "Changelog records written.",
            snapshot.output_records as f64,
        );
        let latency: Vec<(String, f64)> = [0.5, 0.99]
            .iter()
            .filter_map(|q| self.update_latency.quantile_ms(*q).map(|ms| (format!("{{quantile=\"{q}\"}}"), ms)))
            .collect();
        out.family(
            "recflow_update_latency_ms",
            "summary",
            "From an event's ingestion until its results are out.",
            &latency,
        );
        out.single(
            "recflow_kafka_client_errors_total",
            "counter",
            "Errors Kafka clients reported (they retry by themselves).",
            self.kafka_errors.load(Ordering::Relaxed) as f64,
        );
        out.single(
            "recflow_kafka_delivery_retries_total",
            "counter",
            "Kafka messages whose delivery failed and that were sent again.",
            self.delivery_retries.load(Ordering::Relaxed) as f64,
        );
        let consumer_lag = labelled("partition", &self.consumer_lag(), |lag| *lag as f64);
        out.family(
            "recflow_kafka_consumer_lag",
            "gauge",
            "End offset minus committed offset, per partition this process reads.",
            &consumer_lag,
        );
        if let Some(checkpoint) = self.last_checkpoint() {
            write_checkpoint(out, &checkpoint, std::time::SystemTime::now());
        }
        if let Some(pause) = self.last_checkpoint_pause() {
            write_checkpoint_pause(out, &pause);
        }
    }
}

/// How long the last checkpoint taken stopped the workers.
fn write_checkpoint_pause(out: &mut PrometheusText, pause: &CheckpointPause) {
    out.single(
        "recflow_checkpoint_last_pause_seconds",
        "gauge",
        "The longest any reader of this process read nothing for the last checkpoint taken, from its stop to its resume.",
        pause.paused_us as f64 / 1e6,
    );
    out.single(
        "recflow_checkpoint_last_take_seconds",
        "gauge",
        "The longest any worker of this process spent taking its operators' state for the last checkpoint taken.",
        pause.taking_us as f64 / 1e6,
    );
}

/// The last checkpoint's figures, as of `now`.
fn write_checkpoint(out: &mut PrometheusText, checkpoint: &CheckpointFigures, now: std::time::SystemTime) {
    let completed_s = checkpoint.completed_ms as f64 / 1e3;
    let now_s = now.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    out.single(
        "recflow_checkpoint_last_id",
        "gauge",
        "The number of the last checkpoint committed.",
        checkpoint.id as f64,
    );
    out.single(
        "recflow_checkpoint_last_completed_timestamp_seconds",
        "gauge",
        "When the last checkpoint was committed (Unix time).",
        completed_s,
    );
    out.single(
        "recflow_checkpoint_last_age_seconds",
        "gauge",
        "Seconds since the last checkpoint was committed.",
        (now_s - completed_s).max(0.0),
    );
    out.single(
        "recflow_checkpoint_last_bytes",
        "gauge",
        "The size of the last checkpoint's data files.",
        checkpoint.bytes as f64,
    );
    out.single(
        "recflow_checkpoint_last_write_seconds",
        "gauge",
        "From the last checkpoint's first part reaching the writer to its manifest being written.",
        checkpoint.write_ms as f64 / 1e3,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The last checkpoint's figures appear once one is committed, its age as of the moment
    /// the text is written.
    #[test]
    fn prometheus_shows_the_last_checkpoint_once_there_is_one() {
        let metrics = Metrics::default();
        let mut out = PrometheusText::default();
        metrics.write_prometheus(&mut out);
        assert!(!out.0.contains("recflow_checkpoint"), "no checkpoint yet: {}", out.0);
        let figures = CheckpointFigures { id: 7, completed_ms: 1_000_000, bytes: 2_500, write_ms: 1_500 };
        let mut out = PrometheusText::default();
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_030);
        write_checkpoint(&mut out, &figures, now);
        for line in [
            "recflow_checkpoint_last_id 7",
            "recflow_checkpoint_last_completed_timestamp_seconds 1000",
            "recflow_checkpoint_last_age_seconds 30",
            "recflow_checkpoint_last_bytes 2500",
            "recflow_checkpoint_last_write_seconds 1.5",
        ] {
            assert!(out.0.lines().any(|l| l == line), "missing {line:?} in\n{}", out.0);
        }
        metrics.set_last_checkpoint(figures);
        let mut out = PrometheusText::default();
        metrics.write_prometheus(&mut out);
        assert!(out.0.contains("recflow_checkpoint_last_id 7"), "{}", out.0);
    }

    /// The pause kept is the longest of the workers' for the newest checkpoint: an older
    /// checkpoint's late report does not replace it.
    #[test]
    fn the_checkpoint_pause_kept_is_the_longest_for_the_newest_checkpoint() {
        let metrics = Metrics::default();
        let pause = |id, paused_us, taking_us| CheckpointPause { id, paused_us, taking_us };
        metrics.record_checkpoint_pause(pause(3, 900, 100));
        metrics.record_checkpoint_pause(pause(3, 400, 300));
        assert_eq!(metrics.last_checkpoint_pause(), Some(pause(3, 900, 300)));
        metrics.record_checkpoint_pause(pause(2, 5_000, 5_000));
        assert_eq!(metrics.last_checkpoint_pause(), Some(pause(3, 900, 300)));
        metrics.record_checkpoint_pause(pause(4, 200, 50));
        assert_eq!(metrics.last_checkpoint_pause(), Some(pause(4, 200, 50)));
        let mut out = PrometheusText::default();
        metrics.write_prometheus(&mut out);
        for line in ["recflow_checkpoint_last_pause_seconds 0.0002", "recflow_checkpoint_last_take_seconds 0.00005"] {
            assert!(out.0.lines().any(|l| l == line), "missing {line:?} in\n{}", out.0);
        }
    }

    /// Per-worker and per-partition families carry one labelled sample each, in key order.
    #[test]
    fn prometheus_families_label_each_worker_and_partition() {
        let metrics = Metrics::default();
        metrics.set_watermark(1, 7_000);
        metrics.set_watermark(0, 5_000);
        metrics.set_reader_progress(0, ReaderProgress { frontier: 4_000, records: 12 });
        metrics.set_consumer_lag(3, 42);
        let mut out = PrometheusText::default();
        metrics.write_prometheus(&mut out);
        let text = out.into_string();
        for line in [
            "recflow_watermark_ms{worker=\"0\"} 5000\nrecflow_watermark_ms{worker=\"1\"} 7000\n",
            "recflow_worker_input_frontier_ms{worker=\"0\"} 4000\n",
            "recflow_worker_records_read_total{worker=\"0\"} 12\n",
            "recflow_kafka_consumer_lag{partition=\"3\"} 42\n",
            "# TYPE recflow_watermark_lag_seconds gauge\nrecflow_watermark_lag_seconds{worker=\"0\"} ",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }

    #[test]
    fn latency_quantiles_are_within_a_bucket() {
        let h = LatencyHistogram::default();
        h.record(1_000, 98);
        h.record(50_000, 2);
        let p50 = h.quantile_ms(0.5).unwrap();
        let p99 = h.quantile_ms(0.99).unwrap();
        assert!((1.0..1.1).contains(&p50), "{p50}");
        assert!((50.0..55.0).contains(&p99), "{p99}");
        assert_eq!(h.count(), 100);
    }

    #[test]
    fn latency_quantiles_of_an_interval_leave_out_what_came_before() {
        let h = LatencyHistogram::default();
        h.record(50_000, 100);
        let earlier = h.counts();
        assert_eq!(LatencyHistogram::quantile_since(&earlier, &h.counts(), 0.5), None, "nothing since");
        h.record(1_000, 10);
        let p99 = LatencyHistogram::quantile_since(&earlier, &h.counts(), 0.99).unwrap();
        assert!((1.0..1.1).contains(&p99), "only the later observations count: {p99}");
    }

    #[test]
    fn the_latest_dead_letters_are_kept_cut_short() {
        let metrics = Metrics::default();
        for line in 1..=7 {
            let raw = "x".repeat(DeadLetterSample::RAW_CHARS + line).into_bytes();
            metrics.dead_letter(&DeadLetter::new(RejectReason::Late, format!("file:e.csv:{line}"), raw));
        }
        let recent = metrics.recent_dead_letters();
        let origins: Vec<&str> = recent.iter().map(|d| d.origin.as_str()).collect();
        assert_eq!(origins, ["file:e.csv:3", "file:e.csv:4", "file:e.csv:5", "file:e.csv:6", "file:e.csv:7"]);
        assert_eq!(recent[0].raw.chars().count(), DeadLetterSample::RAW_CHARS + 1, "cut, with an ellipsis");
        assert_eq!(metrics.rejected_for("late"), 7, "every one counted");
    }
}
