//! What a restore does when a Kafka output topic is not as the checkpoint left it: records
//! deleted since (the topic ends before the offset the checkpoint recorded), another partition
//! count, or records after the checkpoint's offset that the restored run does not compute again.
//! The first two are refused before anything is written; the third is written on, with a
//! warning naming the partition and offset.
//!
//! Each fault is made by committing a copy of a real checkpoint, with its recorded offsets
//! changed, as the newest one: the broker cannot delete records or shrink a topic, and the
//! copy's operator state and source positions are those of a real cut.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::kafka::{Broker, Received};
use common::{recflow, run_ok, scratch_dir, SMALL_WORLD};
use recflow::checkpoint::store::{CheckpointStore, Manifest};
use serde_json::{json, Value};

/// A checkpoint of `store` from the middle of the run, with every output partition's recorded
/// offset above 0.
fn middle_checkpoint(store: &CheckpointStore) -> Manifest {
    let written_everywhere = |manifest: &Manifest| {
        let offsets = &manifest.meta["kafka_outputs"][0]["next_offsets"];
        offsets.as_object().is_some_and(|o| o.len() == 3 && o.values().all(|v| v.as_i64() > Some(0)))
    };
    let mut whole: Vec<Manifest> = store.list().unwrap().into_iter().map(Result::unwrap).collect();
    whole.retain(written_everywhere);
    assert!(whole.len() >= 3, "checkpoints with records in every partition: {}", whole.len());
    whole.swap_remove(whole.len() / 2)
}

/// Commits `manifest` with its recorded offsets changed by `change`, as the newest checkpoint.
fn commit_changed(store: &CheckpointStore, manifest: &Manifest, change: impl FnOnce(&mut Value)) {
    let mut meta = manifest.meta.clone();
    change(&mut meta["kafka_outputs"][0]["next_offsets"]);
    let id = store.last_id().unwrap() + 1;
    store.commit(&Manifest { id, meta, ..manifest.clone() }).unwrap();
}

/// The messages of one partition.
fn partition(messages: &[Received], partition: i32) -> Vec<(Option<String>, Option<Vec<u8>>)> {
    messages.iter().filter(|m| m.partition == partition).map(|m| (m.key.clone(), m.payload.clone())).collect()
}

#[test]
fn a_restore_refuses_a_changed_output_topic_and_warns_of_records_it_does_not_compute_again() {
    let broker = Broker::start();
    let dir = scratch_dir("restart-kafka-out-faults");
    // The generator, paced so that the run takes several checkpoints.
    let pipeline = dir.join("small.toml");
    std::fs::write(&pipeline, SMALL_WORLD.replace("[source.synth]\n", "[source.synth]\nrate = 5000\n")).unwrap();
    let topic = broker.create_topic("faults-changes", 3);
    let checkpoints = dir.join("checkpoints");
    let run = |checkpoints: &Path| {
        let mut command = recflow();
        command.arg("run").arg(&pipeline).args(["--max-events", "30000", "-q", "-w", "2"]);
        command.args(["--output", &broker.address(&topic), "--dead-letter", "stderr", "--checkpoint"]).arg(checkpoints);
        command.args(["--checkpoint-interval", "20ms", "--checkpoint-keep", "100"]);
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        command
    };
    run_ok(&mut run(&checkpoints));
    let undisturbed = broker.read_topic(&topic);
    let store = CheckpointStore::open(&checkpoints, 1000).unwrap();
    let middle = middle_checkpoint(&store);
    let ends: Vec<i64> = (0..3).map(|p| broker.high_watermark(&topic, p)).collect();
    let refused = |expected: &str| {
        let output = run(&checkpoints).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains(expected), "{stderr}");
        assert_eq!(broker.read_topic(&topic).len(), undisturbed.len(), "nothing written: {stderr}");
    };

    // Records deleted since the checkpoint: partition 1 ends before the offset it had reached.
    commit_changed(&store, &middle, |offsets| offsets["1"] = json!(ends[1] + 5));
    refused(&format!("partition 1 ends at offset {}, before offset {}", ends[1], ends[1] + 5));

    // Another partition count: the checkpoint wrote to a partition the topic does not have.
    commit_changed(&store, &middle, |offsets| offsets["3"] = json!(1));
    refused("the topic has 3 partitions, and had 4 at checkpoint");

    // The record before the checkpoint's offset in partition 2 is taken for one written after it:
    // the first record computed again differs, so the restore warns and writes every record it
    // computes from there on; the other partitions get nothing twice.
    let at = middle.meta["kafka_outputs"][0]["next_offsets"]["2"].as_i64().unwrap();
    commit_changed(&store, &middle, |offsets| offsets["2"] = json!(at - 1));
    let stderr = run_ok(&mut run(&checkpoints));
    let warning = format!("partition 2's record at offset {} differs from the one computed again", at - 1);
    assert!(stderr.contains(&warning), "{stderr}");
    let restored = broker.read_topic(&topic);
    for p in [0, 1] {
        assert!(partition(&restored, p) == partition(&undisturbed, p), "partition {p} holds each record once");
    }
    let before = partition(&undisturbed, 2);
    let again = before[at as usize..].to_vec();
    assert!(!again.is_empty(), "the checkpoint is before the last record of partition 2");
    assert!(partition(&restored, 2) == [before, again].concat(), "partition 2: its records, then those after {at}");
    let _ = std::fs::remove_dir_all(&dir);
}
