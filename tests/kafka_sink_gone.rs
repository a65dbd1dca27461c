//! A Kafka output whose broker is gone for longer than the delivery timeout fails the run, and
//! the run commits no input offset whose results were not delivered.
//! On its own (not beside the other broker faults' tests): its short delivery timeout must not
//! expire on a broker that is only slow because the machine is busy.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::kafka::{unique_topic, Broker, CSV_PIPELINE};
use common::serve::wait_for;
use common::{parse_lines, recflow, run_ok, scratch_dir, wait_for_exit};
use serde_json::Value;

/// Writes `lines` to `topic`, in order (one partition).
fn produce(broker: &Broker, topic: &str, lines: &[&str], dir: &std::path::Path) {
    let file = dir.join(format!("batch-{}.csv", unique_topic("lines")));
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    run_ok(recflow().args(["produce", "-q", "--format", "raw", "--to", &broker.address(topic), "--input"]).arg(&file));
}

/// The output broker gone for longer than the delivery timeout: the run stops with a non-zero
/// exit naming the Kafka output and why, instead of counting lost messages as written; and the
/// input offsets it committed cover only events whose results were all delivered.
#[test]
fn an_output_broker_that_stays_gone_fails_the_run_without_committing_past_it() {
    let input_broker = Broker::start();
    let mut output_broker = Broker::start();
    let dir = scratch_dir("kafka-sink-gone");
    let pipeline = dir.join("pipeline.toml");
    let group = unique_topic("group");
    // A message not delivered within ten seconds fails the run.
    let toml = CSV_PIPELINE
        .replace("payload = \"csv\"\n", &format!("payload = \"csv\"\ngroup = \"{group}\"\n"))
        .replace("[output]\n", "[output]\nkafka_options = { \"message.timeout.ms\" = \"10000\" }\n");
    std::fs::write(&pipeline, toml).unwrap();
    let events = dir.join("events.csv");
    run_ok(recflow().arg("gen").arg(&pipeline).args(["--events", "20000", "--unit", "s", "--output"]).arg(&events));
    // What an undisturbed run writes: every result, with its time.
    let reference = dir.join("reference.jsonl");
    run_ok(recflow().arg("run").arg(&pipeline).arg("--input").arg(&events).arg("-q").arg("--output").arg(&reference));
    let reference: Vec<Value> = parse_lines(&std::fs::read_to_string(&reference).unwrap());

    let text = std::fs::read_to_string(&events).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (first, second) = lines.split_at(lines.len() / 2);
    let input = input_broker.create_topic("events", 1);
    let output = output_broker.create_topic("recs", 1);
    produce(&input_broker, &input, first, &dir);
    // To a file: a pipe nobody reads while the run goes on could fill and stall it.
    let log = dir.join("stderr.txt");
    let mut run = recflow()
        .arg("run")
        .arg(&pipeline)
        .args(["-q", "--input", &input_broker.address(&input), "--output", &output_broker.address(&output)])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    output_broker.wait_for_output(&output, &mut run);
    let committed = || input_broker.committed(&input, 1, &group)[0];
    wait_for(120, "a first commit of input offsets", || committed().is_some());
    // The second half's results come after the output broker is gone: they cannot be delivered.
    output_broker.stop();
    produce(&input_broker, &input, second, &dir);
    let status = wait_for_exit(&mut run, Duration::from_secs(180));
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "a run whose output cannot be delivered must fail: {stderr}");
    assert!(
        stderr.contains(&output) && stderr.contains("not delivered within message.timeout.ms"),
        "the message names the output and the cause: {stderr}"
    );

    // Every result up to the time of the last committed event was delivered.
    let committed = committed().expect("a commit was seen") as usize;
    assert!(committed > 0 && committed < lines.len(), "committed {committed} of {} events", lines.len());
    let last_committed_ts: u64 = lines[committed - 1].rsplit(',').next().unwrap().parse().unwrap();
    output_broker.restart();
    let delivered: Vec<Value> = output_broker
        .read_topic(&output)
        .iter()
        .filter_map(|m| m.payload.as_ref().map(|p| serde_json::from_slice(p).unwrap()))
        .filter(|record: &Value| record["type"] == "recs")
        .collect();
    let due: Vec<&Value> =
        reference.iter().filter(|r| r["type"] == "recs" && r["time"].as_u64().unwrap() <= last_committed_ts).collect();
    assert!(!due.is_empty());
    let missing: Vec<&&Value> = due.iter().filter(|r| !delivered.contains(r)).collect();
    assert!(
        missing.is_empty(),
        "offsets up to {committed} (time {last_committed_ts}) were committed, but {} of their {} results \
         were never delivered, such as {}",
        missing.len(),
        due.len(),
        missing[0]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
