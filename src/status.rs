//! The status document of `GET /v1/status`: the process's counters ([`crate::metrics`]) as one
//! JSON object a person or a dashboard can read, with the rates and latencies of the last
//! minutes. Nothing here counts anything itself: every figure is read from [`Metrics`], the
//! figures only the server knows (output frontier, subscribers) are handed in as [`Output`], and
//! [`History`] keeps one [`Sample`] per second of what the counters did.
//!
//! Like `/metrics`, the document covers the process that serves (process 0): in a multi-process
//! run, the records other processes read and reject are not in it.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::metrics::{
    unix_millis, watermark_lag_seconds, DeadLetterSample, LatencyHistogram, Memory, Metrics, REJECT_CODES,
};

/// One second (or so) of what the counters did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sample {
    /// When the interval ended, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Records read per second over the interval.
    pub events_per_s: f64,
    /// Changelog records written per second over the interval.
    pub updates_per_s: f64,
    /// Median update latency of the events whose results came out in the interval, if any did.
    pub latency_p50_ms: Option<f64>,
    /// Their 99th-percentile update latency.
    pub latency_p99_ms: Option<f64>,
}

/// The counters as they were at the end of the latest sample.
#[derive(Debug)]
struct Mark {
    at: Instant,
    records_in: u64,
    output_records: u64,
    latency: Vec<u64>,
}

impl Mark {
    fn of(metrics: &Metrics, at: Instant) -> Mark {
        Mark {
            at,
            records_in: metrics.records_in.load(std::sync::atomic::Ordering::Relaxed),
            output_records: metrics.output_records.load(std::sync::atomic::Ordering::Relaxed),
            latency: metrics.update_latency.counts(),
        }
    }
}

/// The samples of the last [`History::SPAN`], oldest first.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
    last: Option<Mark>,
}

impl History {
    /// How often [`History::record`] is meant to be called.
    pub const INTERVAL: Duration = Duration::from_secs(1);
    /// How many samples are kept: five minutes' worth.
    pub const SPAN: usize = 300;

    /// Takes a sample of what the counters did since the previous call (the first call only marks
    /// where they stand).
    pub fn record(&mut self, metrics: &Metrics, now: Instant, wall: SystemTime) {
        let mark = Mark::of(metrics, now);
        if let Some(last) = &self.last {
            let secs = now.duration_since(last.at).as_secs_f64();
            if secs <= 0.0 {
                return;
            }
            let per_s = |now: u64, then: u64| rounded(now.saturating_sub(then) as f64 / secs, 1);
            let quantile =
                |q| LatencyHistogram::quantile_since(&last.latency, &mark.latency, q).map(|ms| rounded(ms, 3));
            let sample = Sample {
                at_ms: unix_millis(wall),
                events_per_s: per_s(mark.records_in, last.records_in),
                updates_per_s: per_s(mark.output_records, last.output_records),
                latency_p50_ms: quantile(0.5),
                latency_p99_ms: quantile(0.99),
            };
            if self.samples.len() == Self::SPAN {
                self.samples.pop_front();
            }
            self.samples.push_back(sample);
        }
        self.last = Some(mark);
    }

    /// The samples kept, oldest first.
    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter()
    }

    /// The latest sample, if one was taken.
    pub fn latest(&self) -> Option<&Sample> {
        self.samples.back()
    }
}

/// `x` with `digits` decimals, so the document does not show the noise of a division.
fn rounded(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// What the status is of: fixed for a run.
#[derive(Clone, Debug)]
pub struct Subject {
    /// The pipeline's name.
    pub pipeline: String,
    /// The input's timestamp unit in milliseconds.
    pub unit: u64,
    /// Whether events come from Kafka (then the document has consumer lag).
    pub kafka: bool,
    /// When the run started.
    pub started: Instant,
}

/// What only the server knows.
#[derive(Clone, Copy, Debug, Default)]
pub struct Output {
    /// Every change up to this time (input's unit) is served.
    pub as_of: Option<u64>,
    /// Whether a finite input has ended and the results are final.
    pub input_ended: bool,
    /// Users with a served list.
    pub served_users: usize,
    /// Hot-items windows kept for queries.
    pub served_hot_windows: usize,
    /// Open subscriptions.
    pub subscribers: usize,
}

/// Update latency over the whole run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Latency {
    /// Median, in milliseconds.
    pub p50: Option<f64>,
    /// 99th percentile, in milliseconds.
    pub p99: Option<f64>,
}

/// The Kafka source's figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Kafka {
    /// End offset minus committed offset, per partition this process reads.
    pub consumer_lag: BTreeMap<i32, i64>,
    /// Errors Kafka clients reported (they retry by themselves).
    pub client_errors: u64,
}

/// The document `GET /v1/status` answers (see the README's Serving section).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Status {
    /// The pipeline's name.
    pub pipeline: String,
    /// The input's timestamp unit in milliseconds (1000 for seconds): times below are in it.
    pub time_unit_ms: u64,
    /// Seconds since the run started.
    pub uptime_s: f64,
    /// Whether a finite input has ended and the results are final.
    pub input_ended: bool,
    /// Records read per second over the latest sample (about a second); `None` until one is taken.
    pub events_per_s: Option<f64>,
    /// Records read, accepted or not.
    pub records_read: u64,
    /// Events accepted into the dataflow.
    pub accepted: u64,
    /// Events dead-lettered as late.
    pub late: u64,
    /// Records dead-lettered as invalid, per reason code.
    pub rejected: BTreeMap<&'static str, u64>,
    /// The latest dead letters (late or invalid), oldest first.
    pub dead_letters: Vec<DeadLetterSample>,
    /// Accepted events whose results are not all written yet.
    pub in_flight: u64,
    /// The least watermark of the reading workers, in the input's unit; `None` before the first.
    pub watermark: Option<u64>,
    /// Wall clock minus that watermark, in seconds.
    pub watermark_lag_s: Option<f64>,
    /// Output frontier: every change up to this time (input's unit) is served.
    pub as_of: Option<u64>,
    /// Changelog records written.
    pub output_updates: u64,
    /// Update latency (ingestion until the results are out) over the whole run.
    pub update_latency_ms: Latency,
    /// Users with a served list.
    pub served_users: usize,
    /// Hot-items windows kept for queries.
    pub served_hot_windows: usize,
    /// Open subscriptions.
    pub subscribers: usize,
    /// This process's memory.
    pub memory: Memory,
    /// The Kafka source's figures, when events come from Kafka.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka: Option<Kafka>,
    /// One sample per second over the last five minutes, oldest first.
    pub history: Vec<Sample>,
}

impl Status {
    /// The status of `subject` now, from its counters, their history and the server's output.
    pub fn gather(subject: &Subject, metrics: &Metrics, history: &History, output: Output) -> Status {
        let snapshot = metrics.snapshot();
        let least_watermark = metrics.watermarks().values().copied().min();
        let now = SystemTime::now();
        let kafka = subject.kafka.then(|| Kafka {
            consumer_lag: metrics.consumer_lag(),
            client_errors: metrics.kafka_errors.load(std::sync::atomic::Ordering::Relaxed),
        });
        Status {
            pipeline: subject.pipeline.clone(),
            time_unit_ms: subject.unit,
            uptime_s: rounded(subject.started.elapsed().as_secs_f64(), 1),
            input_ended: output.input_ended,
            events_per_s: history.latest().map(|s| s.events_per_s),
            records_read: snapshot.records_in,
            accepted: snapshot.accepted,
            late: snapshot.late,
            rejected: REJECT_CODES.iter().filter(|c| **c != "late").map(|c| (*c, metrics.rejected_for(c))).collect(),
            dead_letters: metrics.recent_dead_letters(),
            in_flight: snapshot.in_flight,
            watermark: least_watermark.map(|ms| ms / subject.unit.max(1)),
            watermark_lag_s: least_watermark.map(|ms| rounded(watermark_lag_seconds(now, ms), 3)),
            as_of: output.as_of,
            output_updates: snapshot.output_records,
            update_latency_ms: Latency {
                p50: snapshot.latency_p50_ms.map(|ms| rounded(ms, 3)),
                p99: snapshot.latency_p99_ms.map(|ms| rounded(ms, 3)),
            },
            served_users: output.served_users,
            served_hot_windows: output.served_hot_windows,
            subscribers: output.subscribers,
            memory: Memory::now(),
            kafka,
            history: history.samples().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{DeadLetter, RejectReason};
    use std::sync::atomic::Ordering;

    #[test]
    fn samples_are_rates_and_latencies_of_their_interval() {
        let metrics = Metrics::default();
        let mut history = History::default();
        let start = Instant::now();
        history.record(&metrics, start, SystemTime::now());
        assert!(history.latest().is_none(), "the first call only marks");
        metrics.records_in.fetch_add(3_000, Ordering::Relaxed);
        metrics.output_records.fetch_add(500, Ordering::Relaxed);
        metrics.update_latency.record(2_000, 10);
        history.record(&metrics, start + Duration::from_secs(2), SystemTime::now());
        let sample = history.latest().unwrap().clone();
        assert_eq!((sample.events_per_s, sample.updates_per_s), (1_500.0, 250.0));
        assert!(sample.latency_p50_ms.is_some_and(|ms| (2.0..2.2).contains(&ms)), "{sample:?}");
        history.record(&metrics, start + Duration::from_secs(3), SystemTime::now());
        let quiet = history.latest().unwrap();
        assert_eq!((quiet.events_per_s, quiet.latency_p50_ms), (0.0, None), "nothing happened in that second");
        for second in 4..4 + History::SPAN as u64 {
            history.record(&metrics, start + Duration::from_secs(second), SystemTime::now());
        }
        assert_eq!(history.samples().count(), History::SPAN, "five minutes kept");
    }

    #[test]
    fn the_document_reads_the_counters() {
        let metrics = Metrics::default();
        metrics.records_in.fetch_add(10, Ordering::Relaxed);
        metrics.accepted.fetch_add(7, Ordering::Relaxed);
        metrics.dead_letter(&DeadLetter::new(RejectReason::Late, "file:e.csv:3".into(), b"1,2".to_vec()));
        metrics.dead_letter(&DeadLetter::new(RejectReason::Malformed("x".into()), "file:e.csv:4".into(), vec![]));
        metrics.set_watermark(0, 7_000);
        metrics.set_watermark(1, 5_000);
        metrics.set_consumer_lag(2, 40);
        let subject = Subject { pipeline: "p".into(), unit: 1_000, kafka: true, started: Instant::now() };
        let output = Output { as_of: Some(4), subscribers: 2, ..Output::default() };
        let status = Status::gather(&subject, &metrics, &History::default(), output);
        assert_eq!((status.records_read, status.accepted, status.late), (10, 7, 1));
        assert_eq!(status.rejected["malformed"], 1);
        assert!(!status.rejected.contains_key("late"), "late is its own figure");
        assert_eq!(status.dead_letters.len(), 2);
        assert_eq!(status.watermark, Some(5), "the least watermark, in the input's unit");
        assert_eq!((status.as_of, status.subscribers, status.events_per_s), (Some(4), 2, None));
        assert_eq!(status.kafka.unwrap().consumer_lag, BTreeMap::from([(2, 40)]));
        let file = Subject { kafka: false, ..subject };
        let json = serde_json::to_value(Status::gather(&file, &metrics, &History::default(), output)).unwrap();
        assert!(json.get("kafka").is_none(), "no Kafka figures without Kafka: {json}");
    }
}
