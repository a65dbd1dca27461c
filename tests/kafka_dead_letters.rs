//! Malformed and late Kafka payloads land in the dead-letter topic with their reason, origin,
//! partition and offset; accepted + rejected + late = produced.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::kafka::Broker;
use common::scratch_dir;
use recflow::cli::produce::{produce, ProduceFormat, ProduceOptions};
use recflow::spec::kafka_address::KafkaAddress;
use recflow::spec::{Format, SourceSpec, TimeUnit};
use recflow::{Pipeline, RunOptions};

#[test]
fn bad_and_late_payloads_go_to_the_dead_letter_topic() {
    let broker = Broker::start();
    let input = broker.create_topic("events", 1);
    let dead_topic = broker.create_topic("dead", 1);

    // 300 good events a second apart, with bad and late records in between.
    let mut lines = Vec::new();
    let mut expected_reasons: BTreeMap<usize, &str> = BTreeMap::new();
    let start = 1_700_000_000u64;
    for i in 0..300u64 {
        lines.push(format!(r#"{{"user":{},"item":{},"action":"view","ts":{}}}"#, i % 17, i % 23, start + i));
        match i {
            50 => {
                expected_reasons.insert(lines.len(), "malformed");
                lines.push("{not json".to_string());
            }
            100 => {
                expected_reasons.insert(lines.len(), "unknown_action");
                lines.push(format!(r#"{{"user":1,"item":2,"action":"steal","ts":{}}}"#, start + i));
            }
            150 => {
                expected_reasons.insert(lines.len(), "missing_field");
                lines.push(format!(r#"{{"user":1,"action":"view","ts":{}}}"#, start + i));
            }
            200 | 250 => {
                // A minute behind a stream whose watermark trails by 5 s: late.
                expected_reasons.insert(lines.len(), "late");
                lines.push(format!(r#"{{"user":"late","item":9,"action":"buy","ts":{}}}"#, start + i - 60));
            }
            _ => {}
        }
    }
    let dir = scratch_dir("kafka-dead");
    let file = dir.join("events.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let layout = SourceSpec { format: Format::Jsonl, timestamp_unit: TimeUnit::Seconds, ..SourceSpec::default() };
    let options = ProduceOptions {
        to: KafkaAddress::parse(&broker.address(&input)).unwrap(),
        partitions: 1,
        rate: None,
        format: ProduceFormat::Raw,
        progress: false,
    };
    let report = produce(&file, &layout, &options).unwrap();
    assert_eq!(report.delivered, lines.len() as u64);

    let mut pipeline = Pipeline::from_toml(
        r#"
[source]
kind = "synth"
[time]
tick = "1s"
max_out_of_orderness = "5s"
[hot_items]
size = "1m"
slide = "1m"
"#,
        "test",
    )
    .unwrap();
    pipeline.source.kind = recflow::spec::SourceKind::Kafka;
    pipeline.source.kafka.brokers = broker.brokers();
    pipeline.source.kafka.topic = input.clone();
    pipeline.source.kafka.bounded = true;
    pipeline.validate("test").unwrap();
    let changelog: PathBuf = dir.join("changelog.jsonl");
    let run = RunOptions {
        input: None,
        output: Some(changelog.display().to_string()),
        dead_letter: Some(broker.address(&dead_topic)),
        max_events: None,
        status: false,
        stop: None,
        checkpoints: None,
        checkpoint_dir: None,
    };
    let metrics = recflow::run(pipeline, run, timely::Config::process(2)).expect("the pipeline runs");

    assert_eq!(metrics.records_in, lines.len() as u64);
    assert_eq!(metrics.accepted + metrics.invalid + metrics.late, metrics.records_in);
    assert_eq!((metrics.invalid, metrics.late), (3, 2));

    let produced = broker.read_topic(&input);
    let dead = broker.read_topic(&dead_topic);
    assert_eq!(dead.len(), expected_reasons.len(), "one dead letter per bad or late record");
    let mut found = BTreeMap::new();
    for letter in &dead {
        let offset: usize = letter.headers["offset"].parse().unwrap();
        assert_eq!(letter.headers["partition"], "0");
        assert_eq!(letter.headers["origin"], format!("kafka:{input}/0:{offset}"));
        assert!(!letter.headers["detail"].is_empty());
        let reason = letter.headers["reason"].clone();
        if reason == "late" {
            // A late record is decoded; its event comes back as JSON.
            let event: serde_json::Value = serde_json::from_slice(letter.payload.as_ref().unwrap()).unwrap();
            assert_eq!(event["user"], "late");
        } else {
            assert_eq!(letter.payload, produced[offset].payload, "the raw payload is kept");
        }
        found.insert(offset, reason);
    }
    let expected: BTreeMap<usize, String> = expected_reasons.iter().map(|(k, v)| (*k, v.to_string())).collect();
    assert_eq!(found, expected);
    let _ = std::fs::remove_dir_all(&dir);
}
