//! Faults on a real broker (Tansu): the broker frozen for seconds (SIGSTOP/SIGCONT), the broker
//! killed and restarted on the same storage, and recflow itself killed and started again from
//! the earliest offsets. Each time the pipeline carries on and ends with the same value for every
//! key as an undisturbed file-input run.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::kafka::{final_from_topic, Broker, CSV_PIPELINE};
use common::{final_by_key, parse_lines, recflow, run_ok, scratch_dir, wait_for_exit};
use serde_json::Value;

/// A broker with the events on a 4-partition topic, and the file run's final values.
struct Setup {
    broker: Broker,
    dir: PathBuf,
    pipeline: PathBuf,
    input: String,
    expected: BTreeMap<String, Value>,
}

fn setup(tag: &str) -> Setup {
    let broker = Broker::start();
    let dir = scratch_dir(tag);
    let pipeline = dir.join("pipeline.toml");
    std::fs::write(&pipeline, CSV_PIPELINE).unwrap();
    let events = dir.join("events.csv");
    run_ok(recflow().arg("gen").arg(&pipeline).args(["--events", "100000", "--unit", "s", "--output"]).arg(&events));
    let input = broker.create_topic("events", 4);
    run_ok(
        recflow().args(["produce", "-q", "--format", "raw", "--to", &broker.address(&input), "--input"]).arg(&events),
    );
    let changelog = dir.join("file.jsonl");
    run_ok(recflow().arg("run").arg(&pipeline).arg("--input").arg(&events).arg("-q").arg("--output").arg(&changelog));
    let expected = final_by_key(&parse_lines(&std::fs::read_to_string(&changelog).unwrap()));
    Setup { broker, dir, pipeline, input, expected }
}

/// Starts a bounded Kafka-to-Kafka run in the background.
fn start_run(setup: &Setup, output: &str) -> Child {
    recflow()
        .arg("run")
        .arg(&setup.pipeline)
        .args(["--input", &setup.broker.address(&setup.input), "--bounded", "-w", "2", "-q"])
        .args(["--output", &setup.broker.address(output)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for_success(mut run: Child, broker: &Broker) {
    let status = wait_for_exit(&mut run, Duration::from_secs(300));
    let mut stderr = String::new();
    std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "the run failed: {status}\n{stderr}\nbroker log:\n{}", broker.log());
}

fn assert_same_final_values(setup: &Setup, output: &str) {
    let got = final_from_topic(&setup.broker.read_topic(output));
    assert_eq!(got.len(), setup.expected.len(), "the same keys");
    assert!(got == setup.expected, "final values differ from the undisturbed file run");
}

fn cleanup(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_frozen_broker_delays_but_does_not_change_results() {
    let setup = setup("kafka-pause");
    let output = setup.broker.create_topic("recs", 1);
    let mut run = start_run(&setup, &output);
    setup.broker.wait_for_output(&output, &mut run);
    setup.broker.pause();
    // The broker stays frozen for several seconds while the run waits on it.
    std::thread::sleep(Duration::from_secs(4));
    assert!(run.try_wait().unwrap().is_none(), "the run cannot finish while the broker is frozen");
    setup.broker.resume();
    wait_for_success(run, &setup.broker);
    assert_same_final_values(&setup, &output);
    cleanup(&setup.dir);
}

#[test]
fn a_restarted_broker_is_reconnected_to() {
    let mut setup = setup("kafka-restart");
    let output = setup.broker.create_topic("recs", 1);
    let mut run = start_run(&setup, &output);
    setup.broker.wait_for_output(&output, &mut run);
    assert!(run.try_wait().unwrap().is_none(), "the broker restarts mid-stream");
    setup.broker.restart();
    wait_for_success(run, &setup.broker);
    assert_same_final_values(&setup, &output);
    cleanup(&setup.dir);
}

#[test]
fn a_killed_pipeline_started_again_from_the_earliest_offsets_rebuilds_the_results() {
    let setup = setup("kafka-rerun");
    let output = setup.broker.create_topic("recs", 1);
    let mut run = start_run(&setup, &output);
    setup.broker.wait_for_output(&output, &mut run);
    run.kill().unwrap();
    run.wait().unwrap();
    // `start = "earliest"` is the default: the second run reads everything again.
    let again = start_run(&setup, &output);
    wait_for_success(again, &setup.broker);
    assert_same_final_values(&setup, &output);
    cleanup(&setup.dir);
}
