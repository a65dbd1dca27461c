//! Offsets belong to the pipeline: after a bounded run every partition's offset is committed to
//! the consumer group (for lag tools), and `start = "committed"` picks up exactly where it left.
//! A live run reports each partition's consumer lag: its end offset minus the committed offset.

mod common;

use common::kafka::{unique_topic, Broker};
use common::scratch_dir;
use common::serve::{get, wait_for, Running};
use recflow::cli::produce::{produce, ProduceFormat, ProduceOptions};
use recflow::spec::kafka_address::KafkaAddress;
use recflow::spec::{Format, SourceKind, SourceSpec, StartFrom};
use recflow::{Pipeline, RunOptions};

fn produce_events(broker: &Broker, topic: &str, from: u64, count: u64) {
    let dir = scratch_dir("offsets-input");
    let file = dir.join("events.jsonl");
    let lines: Vec<String> = (from..from + count)
        .map(|i| format!(r#"{{"user":{},"item":{},"action":"view","ts":{}}}"#, i % 11, i % 5, 1_700_000_000 + i))
        .collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let layout = SourceSpec { format: Format::Jsonl, ..SourceSpec::default() };
    let options = ProduceOptions {
        to: KafkaAddress::parse(&broker.address(topic)).unwrap(),
        partitions: 2,
        rate: None,
        format: ProduceFormat::Raw,
        progress: false,
    };
    assert_eq!(produce(&file, &layout, &options).unwrap().delivered, count);
    let _ = std::fs::remove_dir_all(&dir);
}

fn run_bounded(broker: &Broker, topic: &str, group: &str, start: StartFrom) -> u64 {
    let mut pipeline = Pipeline::from_toml("[hot_items]\nsize = \"1m\"\nslide = \"1m\"\n", "test").unwrap();
    pipeline.source.kind = SourceKind::Kafka;
    pipeline.source.kafka.brokers = broker.brokers();
    pipeline.source.kafka.topic = topic.to_string();
    pipeline.source.kafka.group = group.to_string();
    pipeline.source.kafka.start = start;
    pipeline.source.kafka.bounded = true;
    pipeline.validate("test").unwrap();
    let options = RunOptions {
        input: None,
        output: Some("/dev/null".into()),
        dead_letter: Some("/dev/null".into()),
        max_events: None,
        status: false,
        stop: None,
        checkpoints: None,
        checkpoint_dir: None,
    };
    recflow::run(pipeline, options, timely::Config::process(2)).expect("the run succeeds").records_in
}

fn committed(broker: &Broker, topic: &str, group: &str) -> Vec<i64> {
    broker
        .committed(topic, 2, group)
        .iter()
        .enumerate()
        .map(|(partition, offset)| offset.unwrap_or_else(|| panic!("partition {partition} has no committed offset")))
        .collect()
}

#[test]
fn offsets_are_committed_after_the_results_and_resumed_from() {
    let broker = Broker::start();
    let topic = broker.create_topic("events", 2);
    let group = unique_topic("group");
    produce_events(&broker, &topic, 0, 200);

    // No commits yet: `committed` starts at the beginning.
    assert_eq!(run_bounded(&broker, &topic, &group, StartFrom::Committed), 200);
    let ends: Vec<i64> = (0..2).map(|p| broker.high_watermark(&topic, p)).collect();
    assert_eq!(ends.iter().sum::<i64>(), 200);
    assert_eq!(committed(&broker, &topic, &group), ends, "every partition is committed up to its end");

    produce_events(&broker, &topic, 200, 100);
    assert_eq!(run_bounded(&broker, &topic, &group, StartFrom::Committed), 100, "only the new events");
    assert_eq!(committed(&broker, &topic, &group).iter().sum::<i64>(), 300);
    assert_eq!(run_bounded(&broker, &topic, &unique_topic("other"), StartFrom::Earliest), 300);
    assert_eq!(run_bounded(&broker, &topic, &group, StartFrom::Latest), 0);
}

#[test]
fn a_live_run_reports_consumer_lag_from_its_own_commits() {
    let broker = Broker::start();
    let topic = broker.create_topic("lag", 2);
    let group = unique_topic("group");
    let dir = scratch_dir("lag");
    let pipeline = dir.join("lag.toml");
    let toml = format!(
        "[source]\nformat = \"jsonl\"\n[source.kafka]\ngroup = \"{group}\"\n[hot_items]\nsize = \"1m\"\nslide = \"1m\"\n"
    );
    std::fs::write(&pipeline, toml).unwrap();
    produce_events(&broker, &topic, 0, 200);
    let run = Running::start(&pipeline, &["--input", &broker.address(&topic), "--serve", "127.0.0.1:0", "-q"], &[]);
    // The lag the run reports must be the end of each partition minus what the group has
    // committed, counting from the start of the partition while nothing is committed.
    let lag_matches_the_broker = |least_committed: i64| {
        let (_, status) = get(&run.url("/v1/status"));
        let committed = broker.committed(&topic, 2, &group);
        let reported: Vec<Option<i64>> =
            (0..2).map(|p| status["kafka"]["consumer_lag"][p.to_string()].as_i64()).collect();
        let expected: Vec<Option<i64>> =
            (0..2).map(|p| Some(broker.high_watermark(&topic, p) - committed[p as usize].unwrap_or(0))).collect();
        eprintln!("consumer lag {reported:?}, expected {expected:?}");
        reported == expected && committed.iter().map(|c| c.unwrap_or(0)).sum::<i64>() >= least_committed
    };
    wait_for(60, "the lag of everything read, nothing committed yet", || lag_matches_the_broker(0));
    // Later events complete the first ones' results, whose offsets are then committed.
    produce_events(&broker, &topic, 1_000, 300);
    wait_for(60, "the lag past the committed offsets", || lag_matches_the_broker(1));
    run.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
