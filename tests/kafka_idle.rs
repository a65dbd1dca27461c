//! An unbounded Kafka run where one partition never gets an event and one worker has no partition
//! at all: after the idle timeout neither holds the watermark back, so windows over the busy
//! partition close and their results come out while the stream keeps running.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::kafka::Broker;
use common::{parse_lines, recflow, scratch_dir};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

#[test]
fn idle_partitions_and_partitionless_workers_do_not_hold_results_back() {
    let broker = Broker::start();
    let input = broker.create_topic("events", 2);
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", broker.brokers()).create().unwrap();
    // Five minutes of events, one a second, all on partition 0.
    let start = 1_700_000_000u64;
    for i in 0..300u64 {
        let payload = format!(r#"{{"user":{},"item":{},"action":"view","ts":{}}}"#, i % 7, i % 3, start + i);
        producer.send(BaseRecord::<(), _>::to(&input).partition(0).payload(&payload)).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let dir = scratch_dir("kafka-idle");
    let pipeline = dir.join("pipeline.toml");
    std::fs::write(
        &pipeline,
        r#"
[source]
kind = "kafka"
[source.kafka]
idle_timeout = "1s"
[time]
tick = "1s"
max_out_of_orderness = "0s"
[hot_items]
size = "1m"
slide = "1m"
[output]
status_interval_secs = 0
"#,
    )
    .unwrap();
    let changelog = dir.join("changelog.jsonl");
    // Three workers, two partitions: worker 1 reads the empty partition, worker 2 reads none.
    let mut run = recflow()
        .arg("run")
        .arg(&pipeline)
        .args(["--input", &broker.address(&input), "-w", "3", "-q", "--output"])
        .arg(&changelog)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let first_window_end = start - start % 60 + 60;
    let deadline = Instant::now() + Duration::from_secs(60);
    let found = loop {
        let records = parse_lines(&std::fs::read_to_string(&changelog).unwrap_or_default());
        if records.iter().any(|r| r["type"] == "hot_items" && r["window_end"] == first_window_end) {
            break true;
        }
        if Instant::now() > deadline || run.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let still_running = run.try_wait().unwrap().is_none();
    let _ = run.kill();
    let _ = run.wait();
    assert!(still_running, "an unbounded Kafka run keeps running");
    assert!(found, "the first window's hot items never came out: an idle partition held the watermark back");
    let _ = std::fs::remove_dir_all(&dir);
}
