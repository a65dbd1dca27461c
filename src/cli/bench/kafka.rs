//! `recflow bench --kafka`: Kafka → top-k on a real broker. Synthetic events are produced to a
//! fresh topic (bincode payloads keyed by user) and the pipeline reads them with its workers and
//! writes its results to another fresh topic.
//!
//! - Without a rate, the events are produced first and each run replays the topic as a bounded
//!   read: sustained events/s.
//! - With a rate, the events are produced at that rate while the pipeline runs unbounded; the
//!   end-to-end latency of a recommendation update is its output message's timestamp minus the
//!   producer timestamp of the user's last event in the tick the update is for, over the updates
//!   for events produced in the middle 80% of the stream (the first tenth is a warm-up; the last
//!   tenth waits for a watermark that only the end of the run moves).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::message::Message;
use thiserror::Error;

use super::BenchArgs;
use crate::cli::stats::{median, peak_memory_mib, quantile};
use crate::cli::timely_config;
use crate::event::{Event, Millis};
use crate::event_time::ceil_to;
use crate::kafka::{self, client_config, KafkaSetupError};
use crate::metrics::Metrics;
use crate::run::{run, RunError, RunOptions};
use crate::sink::{KafkaDestination, SinkError};
use crate::source::SynthSource;
use crate::spec::kafka_address::KafkaAddress;
use crate::spec::{Payload, Pipeline, SourceKind, StartFrom};

/// What to measure.
#[derive(Clone, Debug)]
pub struct KafkaBench {
    /// Bootstrap brokers.
    pub brokers: String,
    /// Partitions of the input topic.
    pub partitions: usize,
    /// Events to produce.
    pub events: u64,
    /// Events per second for the latency run; `None` measures throughput.
    pub rate: Option<u64>,
    /// Runs of the throughput measurement.
    pub runs: usize,
}

/// One measurement.
#[derive(Clone, Copy, Debug, Default)]
pub struct KafkaBenchRun {
    /// Records the pipeline read.
    pub records: u64,
    /// Seconds from start to the end of the run.
    pub seconds: f64,
    /// Median end-to-end latency in ms (latency runs only).
    pub latency_p50_ms: Option<f64>,
    /// 99th-percentile end-to-end latency in ms (latency runs only).
    pub latency_p99_ms: Option<f64>,
    /// Recommendation updates whose latency was measured.
    pub latency_samples: usize,
}

/// A Kafka benchmark that failed.
#[derive(Debug, Error)]
pub enum KafkaBenchError {
    /// Talking to the broker failed.
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    /// A topic could not be written.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The pipeline failed.
    #[error(transparent)]
    Run(#[from] RunError),
}

fn fresh_topic(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("recflow-bench-{tag}-{}-{nanos}", std::process::id())
}

/// Produces `events` to `address`, at `rate` per second if given.
fn produce(address: &KafkaAddress, events: &[Event], partitions: usize, rate: Option<u64>) -> Result<(), SinkError> {
    let mut out = KafkaDestination::open(address, &Default::default(), partitions, Arc::new(Metrics::default()))?;
    let started = Instant::now();
    for (sent, event) in (1..).zip(events) {
        let payload = bincode::serialize(event).map_err(|e| SinkError::Encode(e.to_string()))?;
        out.send_message(Some(event.user.to_string().into_bytes()), Some(payload));
        out.pace(started, sent, rate);
    }
    out.wait_delivered();
    Ok(())
}

/// The pipeline reading `input` and writing to `output`.
fn kafka_pipeline(pipeline: &Pipeline, brokers: &str, input: &str, bounded: bool) -> Pipeline {
    let mut pipeline = pipeline.clone();
    pipeline.source.kind = SourceKind::Kafka;
    let kafka = &mut pipeline.source.kafka;
    kafka.brokers = brokers.to_string();
    kafka.topic = input.to_string();
    kafka.group = fresh_topic("group");
    kafka.start = StartFrom::Earliest;
    kafka.payload = Some(Payload::Bincode);
    kafka.bounded = bounded;
    pipeline
}

/// Runs the benchmark; returns one row per run.
pub fn bench_kafka(
    pipeline: &Pipeline,
    bench: &KafkaBench,
    config: impl Fn() -> timely::Config,
) -> Result<Vec<KafkaBenchRun>, KafkaBenchError> {
    let mut synth = SynthSource::new(&pipeline.source.synth);
    let events: Vec<Event> = (0..bench.events).map(|_| synth.next_event()).collect();
    let input = KafkaAddress { brokers: bench.brokers.clone(), topic: fresh_topic("input") };
    let options = |output: &KafkaAddress, stop: Option<Arc<AtomicBool>>| RunOptions {
        input: None,
        output: Some(output.to_string()),
        dead_letter: Some("/dev/null".into()),
        max_events: None,
        status: false,
        stop,
        checkpoints: None,
        checkpoint_dir: None,
    };
    let Some(rate) = bench.rate else {
        produce(&input, &events, bench.partitions, None)?;
        let mut rows = Vec::new();
        for _ in 0..bench.runs.max(1) {
            let output = KafkaAddress { brokers: bench.brokers.clone(), topic: fresh_topic("output") };
            let started = Instant::now();
            let counters =
                run(kafka_pipeline(pipeline, &bench.brokers, &input.topic, true), options(&output, None), config())?;
            rows.push(KafkaBenchRun {
                records: counters.records_in,
                seconds: started.elapsed().as_secs_f64(),
                ..KafkaBenchRun::default()
            });
        }
        return Ok(rows);
    };
    // The topic must exist before the pipeline starts reading it.
    kafka::ensure_topic(&input, &client_config(&bench.brokers, &Default::default()), bench.partitions)?;
    let output = KafkaAddress { brokers: bench.brokers.clone(), topic: fresh_topic("output") };
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let producer = {
        let (input, events, partitions) = (input.clone(), events.clone(), bench.partitions);
        std::thread::spawn(move || produce(&input, &events, partitions, Some(rate)))
    };
    let stopper = {
        let (stop, output) = (Arc::clone(&stop), output.clone());
        std::thread::spawn(move || {
            let _ = producer.join();
            // Once the input is all out, stop when the results have been still for two seconds.
            let mut last = (0, Instant::now());
            while last.1.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(200));
                let count = kafka::read_to_end(&output).map_or(0, |m| m.len());
                if count != last.0 {
                    last = (count, Instant::now());
                }
            }
            stop.store(true, Ordering::Relaxed);
        })
    };
    let counters =
        run(kafka_pipeline(pipeline, &bench.brokers, &input.topic, false), options(&output, Some(stop)), config())?;
    let _ = stopper.join();
    let seconds = started.elapsed().as_secs_f64();
    // The producer timestamp of each user's last event per tick.
    let tick = pipeline.time.tick.millis();
    let mut sent: HashMap<(String, Millis), i64> = HashMap::new();
    for message in kafka::read_to_end(&input)? {
        let (Some(payload), Some(at)) = (message.payload(), message.timestamp().to_millis()) else { continue };
        if let Ok(event) = bincode::deserialize::<Event>(payload) {
            let slot = sent.entry((event.user.to_string(), ceil_to(event.ts, tick))).or_default();
            *slot = (*slot).max(at);
        }
    }
    // Only the middle 80% of the stream counts. The first tenth is a warm-up: the pipeline starts
    // its consumers while the producer is already sending. The last tenth is the end of the
    // stream: its final ticks complete only when the watermark passes them, which a stream that
    // stops never makes happen until the run is stopped.
    let first = sent.values().copied().min().unwrap_or(0);
    let tenth = (bench.events as f64 / 10.0 / rate as f64 * 1000.0) as i64;
    let measured = first + tenth..first + 9 * tenth;
    let unit = pipeline.source.timestamp_unit.scale();
    let mut latencies: Vec<f64> = Vec::new();
    for message in kafka::read_to_end(&output)? {
        let (Some(payload), Some(at)) = (message.payload(), message.timestamp().to_millis()) else { continue };
        let Ok(record) = serde_json::from_slice::<serde_json::Value>(payload) else { continue };
        if record["type"] != "recs" {
            continue;
        }
        let user = record["user"].as_str().map_or_else(|| record["user"].to_string(), str::to_string);
        let Some(time) = record["time"].as_u64() else { continue };
        if let Some(&produced) = sent.get(&(user, time * unit)).filter(|p| measured.contains(*p)) {
            latencies.push((at - produced) as f64);
        }
    }
    latencies.sort_by(f64::total_cmp);
    Ok(vec![KafkaBenchRun {
        records: counters.records_in,
        seconds,
        latency_p50_ms: quantile(&latencies, 0.5),
        latency_p99_ms: quantile(&latencies, 0.99),
        latency_samples: latencies.len(),
    }])
}

/// Measures Kafka → top-k on `brokers` and prints each run and the median.
pub fn main(pipeline: &Pipeline, args: &BenchArgs, brokers: &str) -> anyhow::Result<()> {
    let bench = KafkaBench {
        brokers: brokers.to_string(),
        partitions: args.partitions.max(1),
        events: args.events,
        rate: args.rate.filter(|r| *r > 0),
        runs: args.runs,
    };
    timely_config(&args.workers)?;
    let config = || timely_config(&args.workers).expect("checked above");
    let rows = bench_kafka(pipeline, &bench, config)?;
    for (run, row) in rows.iter().enumerate() {
        let rate = row.records as f64 / row.seconds;
        match (row.latency_p50_ms, row.latency_p99_ms) {
            (Some(p50), Some(p99)) => println!(
                "run {}: {} records in {:.2}s = {rate:.0} records/s; end-to-end latency p50 {p50:.0} ms, p99 {p99:.0} ms over {} updates",
                run + 1,
                row.records,
                row.seconds,
                row.latency_samples
            ),
            _ => println!("run {}: {} records in {:.2}s = {rate:.0} records/s", run + 1, row.records, row.seconds),
        }
    }
    let rates: Vec<f64> = rows.iter().map(|r| r.records as f64 / r.seconds).collect();
    println!("median of {} runs: {:.0} records/s; peak memory {} MiB", rates.len(), median(rates), peak_memory_mib());
    Ok(())
}
