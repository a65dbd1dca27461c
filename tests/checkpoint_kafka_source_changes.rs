//! What a restore does when a Kafka-source checkpoint cannot be dealt to another number of
//! workers, and when the topic gained partitions since: a checkpoint of a run limited by
//! `--max-events` (which counts per worker) is refused on another worker count, so is one whose
//! topic's partitions changed since; on the same worker count, partitions added since are read
//! from `[source.kafka] start`, with a warning, and a checkpoint that read partitions the topic
//! no longer has is refused, naming them. A refused run writes nothing and leaves the
//! checkpoints as they were.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::kafka::{Broker, CSV_PIPELINE};
use common::{recflow, run_ok, scratch_dir};
use recflow::checkpoint::store::CheckpointStore;

/// Produces the events of `events` to `input`, spread over `partitions` partitions.
fn produce(events: &Path, input: &str, partitions: usize) {
    let partitions = partitions.to_string();
    let stderr = run_ok(
        recflow()
            .args(["produce", "--partitions", &partitions, "-q", "--format", "raw", "--to", input, "--input"])
            .arg(events),
    );
    assert!(stderr.contains("messages delivered"), "{stderr}");
}

#[test]
fn a_kafka_checkpoint_of_another_topic_layout_or_limited_run_is_refused_where_it_cannot_be_dealt() {
    let broker = Broker::start();
    let dir = scratch_dir("restart-kafka-source-changes");
    let pipeline = dir.join("pipeline.toml");
    std::fs::write(&pipeline, CSV_PIPELINE).unwrap();
    let events = dir.join("events.csv");
    run_ok(recflow().arg("gen").arg(&pipeline).args(["--events", "60000", "--unit", "s", "--output"]).arg(&events));
    let topic = broker.create_topic("source-changes", 4);
    let input = broker.address(&topic);
    produce(&events, &input, 4);

    let (checkpoints, output) = (dir.join("checkpoints"), dir.join("changelog.jsonl"));
    let run = |workers: &str| -> Command {
        let mut command = recflow();
        command.arg("run").arg(&pipeline).args(["--input", &input, "--bounded", "-q", "-w", workers]);
        command.args(["--max-events", "20000", "--checkpoint-interval", "20ms", "--checkpoint-keep", "100"]);
        command.arg("--output").arg(&output).arg("--dead-letter").arg(dir.join("dead.jsonl"));
        command.arg("--checkpoint").arg(&checkpoints);
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        command
    };
    run_ok(&mut run("2"));
    let store = CheckpointStore::open(&checkpoints, 1000).unwrap();
    let taken = store.list().unwrap().len();
    assert!(taken >= 1, "the run took no checkpoint");
    let written = std::fs::read(&output).unwrap();
    let refused = |workers: &str, why: &str| {
        let result = run(workers).output().unwrap();
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success(), "restored on {workers} workers: {stderr}");
        let expected = format!("it was taken on 2 workers and this run has {workers}; {why}");
        assert!(stderr.contains(&expected), "expected {expected:?} in {stderr}");
        assert!(stderr.contains("--fresh"), "{stderr}");
        assert_eq!(std::fs::read(&output).unwrap(), written, "a refused run changed the changelog");
        assert_eq!(store.list().unwrap().len(), taken, "a refused run changed the checkpoints");
    };

    refused("1", "--max-events counts per worker");
    refused("3", "--max-events counts per worker");

    // The topic made again with six partitions, each holding more records than the old four
    // did up to the checkpoint's offsets.
    broker.create_topic_again(&topic, 6);
    produce(&events, &input, 6);
    produce(&events, &input, 6);
    refused("1", "the topic's partitions changed since, so they cannot be dealt out anew");

    // On the same worker count the two new partitions are read from the start, with a warning.
    let stderr = run_ok(&mut run("2"));
    assert!(stderr.contains("restoring checkpoint"), "{stderr}");
    assert!(stderr.contains(&format!("topic {topic} has partitions 4, 5 that checkpoint")), "{stderr}");
    assert!(stderr.contains("are read from [source.kafka] start (earliest)"), "{stderr}");

    // Made again with two partitions: the newest checkpoint read partitions the topic no longer
    // has, so it is refused on any worker count, naming them.
    let written = std::fs::read(&output).unwrap();
    let taken = store.list().unwrap().len();
    broker.create_topic_again(&topic, 2);
    produce(&events, &input, 2);
    let result = run("2").output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success(), "{stderr}");
    // Partitions 4 and 5 are named too when the newest checkpoint came after the run had read
    // from them, which depends on the machine's pace.
    let named = |partitions: &str| format!("read partitions {partitions} of topic {topic}, which now has 2 partitions");
    assert!(stderr.contains(&named("2, 3, 4, 5")) || stderr.contains(&named("2, 3")), "{stderr}");
    assert_eq!(std::fs::read(&output).unwrap(), written, "a refused run changed the changelog");
    assert_eq!(store.list().unwrap().len(), taken, "a refused run changed the checkpoints");
    let _ = std::fs::remove_dir_all(&dir);
}
