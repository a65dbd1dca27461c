//! `recflow run --checkpoint DIR` reading a Kafka topic survives kill -9: a run on two workers,
//! and then a run of two processes, killed at seeded points shortly after checkpoints, and
//! started again with the same commands each time, end with the same changelog, byte for byte,
//! as a run never disturbed; so does a run restored on one worker and then on three, its
//! partitions dealt to the new workers. Every restart resumes each partition at the
//! checkpoint's offsets, not at the consumer group's committed ones.
//!
//! The input is the Kafka test world's (`CSV_PIPELINE`): its jitter stays inside the
//! out-of-orderness, so every event's time is its own tick whichever partition it is in and
//! whenever it is read, and the read is bounded (`--bounded`: each partition ends at its end
//! offset at start, and no partition is ever taken for idle), so the undisturbed run is
//! deterministic on four partitions over two workers.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::kafka::{unique_topic, Broker, CSV_PIPELINE};
use common::restarts::{committed, kill_after, kill_and_restart_until_done, two_processes, Kills};
use common::{recflow, run_ok, scratch_dir};

const PARTITIONS: usize = 4;

/// `recflow run` of the topic at `input`, bounded, on two workers into `output`, with `extra`
/// arguments.
fn run_command(pipeline: &Path, input: &str, output: &Path, extra: &[&str]) -> Command {
    run_on(pipeline, input, output, &[&["-w", "2"], extra].concat())
}

/// `recflow run` of the topic at `input`, bounded, into `output`, with `extra` arguments.
fn run_on(pipeline: &Path, input: &str, output: &Path, extra: &[&str]) -> Command {
    let mut command = recflow();
    command.arg("run").arg(pipeline).args(["--input", input, "--bounded", "-q"]);
    command.arg("--output").arg(output).arg("--dead-letter").arg(output.with_extension("dead.jsonl"));
    command.args(extra).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    command
}

#[test]
fn a_kafka_run_killed_at_random_points_ends_with_the_undisturbed_changelog() {
    let broker = Broker::start();
    let dir = scratch_dir("restart-kafka");
    let pipeline = dir.join("pipeline.toml");
    std::fs::write(&pipeline, CSV_PIPELINE).unwrap();
    let events = dir.join("events.csv");
    run_ok(recflow().arg("gen").arg(&pipeline).args(["--events", "800000", "--unit", "s", "--output"]).arg(&events));
    let topic = broker.create_topic("restart", PARTITIONS);
    let input = broker.address(&topic);
    let partitions = PARTITIONS.to_string();
    let stderr = run_ok(
        recflow()
            .args(["produce", "--partitions", &partitions, "-q", "--format", "raw", "--to", &input, "--input"])
            .arg(&events),
    );
    assert!(stderr.contains("800000 messages delivered"), "{stderr}");

    let undisturbed = dir.join("undisturbed.jsonl");
    let started = Instant::now();
    run_ok(&mut run_command(&pipeline, &input, &undisturbed, &[]));
    eprintln!("undisturbed run in {:.1} s", started.elapsed().as_secs_f64());
    let expected = std::fs::read(&undisturbed).unwrap();
    assert!(expected.len() > 100_000, "the undisturbed run wrote a changelog");

    // The checkpointed runs commit their offsets to a group of their own, for monitoring only.
    let group = unique_topic("restart-group");
    let checkpointed = dir.join("checkpointed.toml");
    let with_group = CSV_PIPELINE.replace("payload = \"csv\"", &format!("payload = \"csv\"\ngroup = \"{group}\""));
    assert_ne!(with_group, CSV_PIPELINE);
    std::fs::write(&checkpointed, with_group).unwrap();
    // A restart reads far ahead (up to the ingest's in-flight bound) before its first checkpoint
    // past the cut, so how many kills fit in one run depends on the machine's pace: runs with
    // fresh checkpoints and other seeds follow until five kills or more are done, each ending
    // with the undisturbed changelog.
    let (mut kills, mut round) = (0, 0);
    let (mut output, mut checkpoints) = (dir.join("restarted.jsonl"), dir.join("checkpoints"));
    while kills < 5 {
        assert!(round < 4, "{round} runs ended after {kills} kills in all: too short to test restarts");
        (output, checkpoints) =
            (dir.join(format!("restarted-{round}.jsonl")), dir.join(format!("checkpoints-{round}")));
        let args = ["--checkpoint", checkpoints.to_str().unwrap(), "--checkpoint-interval", "20ms"];
        let started = Instant::now();
        let killed = kill_and_restart_until_done(
            || vec![run_command(&checkpointed, &input, &output, &args)],
            &checkpoints,
            Kills { seed: 11 + round, at_most: 6, after_progress: true },
        );
        eprintln!("{killed} kills and restarts in {:.1} s", started.elapsed().as_secs_f64());
        let got = std::fs::read(&output).unwrap();
        assert!(expected == got, "after {killed} kills: {} bytes written, {} expected", got.len(), expected.len());
        (kills, round) = (kills + killed, round + 1);
    }
    let args = ["--checkpoint", checkpoints.to_str().unwrap(), "--checkpoint-interval", "20ms"];
    // Started again after finishing, it restores its last checkpoint, taken near or at the end
    // (where readers whose part had ended saved their ends), and writes the same changelog.
    let stderr = run_ok(&mut run_command(&checkpointed, &input, &output, &args));
    assert!(stderr.contains("restoring checkpoint"), "{stderr}");
    assert!(expected == std::fs::read(&output).unwrap(), "a run restored after the end wrote another changelog");
    // The last run committed every partition's end to the group.
    let ends: Vec<Option<i64>> = (0..PARTITIONS as i32).map(|p| Some(broker.high_watermark(&topic, p))).collect();
    assert_eq!(broker.committed(&topic, PARTITIONS as i32, &group), ends);

    // Two processes of one worker each, each reading two of the partitions, killed together.
    let checkpoints = dir.join("checkpoints-2proc");
    let outputs = [dir.join("restarted-2proc.jsonl"), dir.join("process-1.jsonl")];
    let args = ["--checkpoint", checkpoints.to_str().unwrap(), "--checkpoint-interval", "20ms"];
    let processes = || {
        two_processes(&dir, |process, cluster| {
            run_on(&checkpointed, &input, &outputs[process], &[&["-w", "1"], cluster, &args[..]].concat())
        })
    };
    let started = Instant::now();
    let kills =
        kill_and_restart_until_done(processes, &checkpoints, Kills { seed: 13, at_most: 6, after_progress: false });
    eprintln!("two processes: {kills} kills and restarts in {:.1} s", started.elapsed().as_secs_f64());
    let got = std::fs::read(&outputs[0]).unwrap();
    assert!(
        expected == got,
        "two processes, after {kills} kills: {} bytes written, {} expected",
        got.len(),
        expected.len()
    );
    assert!(kills >= 5, "the two-process run ended after {kills} kills: too short to test restarts");

    // Another number of workers: two workers killed after a few checkpoints, then one worker
    // (all four partitions) killed likewise, then three (the partitions dealt 2, 1, 1) to the end.
    let checkpoints = dir.join("checkpoints-rescaled");
    let output = dir.join("restarted-rescaled.jsonl");
    let args = ["--checkpoint", checkpoints.to_str().unwrap(), "--checkpoint-interval", "20ms"];
    for workers in ["2", "1"] {
        let mut run = run_on(&checkpointed, &input, &output, &[&["-w", workers], &args[..]].concat()).spawn().unwrap();
        let target = committed(&checkpoints) + 3;
        let killed = kill_after(std::slice::from_mut(&mut run), &checkpoints, target, Duration::from_millis(30));
        assert!(killed, "the run on {workers} workers ended before it was killed");
    }
    let stderr = run_ok(&mut run_on(&checkpointed, &input, &output, &[&["-w", "3"], &args[..]].concat()));
    assert!(stderr.contains("restoring checkpoint"), "{stderr}");
    let got = std::fs::read(&output).unwrap();
    assert!(expected == got, "restored on 1 worker, then 3: {} bytes written, {} expected", got.len(), expected.len());
    let _ = std::fs::remove_dir_all(&dir);
}
