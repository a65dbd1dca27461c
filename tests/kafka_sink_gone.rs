//! A Kafka output whose broker is gone for longer than the delivery timeout fails the run.
//! On its own (not beside the other broker faults' tests): its short delivery timeout must not
//! expire on a broker that is only slow because the machine is busy.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::kafka::{Broker, CSV_PIPELINE};
use common::{recflow, run_ok, scratch_dir, wait_for_exit};

/// The output broker gone for longer than the delivery timeout: the run stops with a non-zero
/// exit naming the Kafka output and why, instead of counting lost messages as written.
#[test]
fn an_output_broker_that_stays_gone_fails_the_run() {
    let mut broker = Broker::start();
    let dir = scratch_dir("kafka-sink-gone");
    let pipeline = dir.join("pipeline.toml");
    // A message not delivered within ten seconds fails the run.
    let toml = CSV_PIPELINE
        .replace("kind = \"kafka\"", "kind = \"stdin\"")
        .replace("[output]\n", "[output]\nkafka_options = { \"message.timeout.ms\" = \"10000\" }\n");
    std::fs::write(&pipeline, toml).unwrap();
    let events = dir.join("events.csv");
    run_ok(recflow().arg("gen").arg(&pipeline).args(["--events", "20000", "--unit", "s", "--output"]).arg(&events));
    let lines = std::fs::read_to_string(&events).unwrap();
    let (first, second) = lines.split_at(lines.len() / 2);
    let second = &second[second.find('\n').unwrap() + 1..];
    let output = broker.create_topic("recs", 1);
    // To a file: a pipe nobody reads while the run goes on could fill and stall it.
    let log = dir.join("stderr.txt");
    let mut run = recflow()
        .arg("run")
        .arg(&pipeline)
        .args(["-q", "--output", &broker.address(&output)])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut stdin = run.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, first.as_bytes()).unwrap();
    broker.wait_for_output(&output, &mut run);
    // The second half's results come after the broker is gone: they cannot be delivered.
    broker.stop();
    std::io::Write::write_all(&mut stdin, second.as_bytes()).unwrap();
    drop(stdin);
    let status = wait_for_exit(&mut run, Duration::from_secs(180));
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "a run whose output cannot be delivered must fail: {stderr}");
    assert!(
        stderr.contains(&output) && stderr.contains("not delivered within message.timeout.ms"),
        "the message names the output and the cause: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
