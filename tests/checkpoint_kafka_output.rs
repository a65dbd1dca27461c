//! `recflow run --checkpoint DIR` writing Kafka topics survives kill -9: the changelog and
//! dead-letter topics of a run on two workers killed at seeded points shortly after checkpoints,
//! and started again with the same command each time, hold, partition by partition and offset by
//! offset, exactly the records of a run never disturbed: none lost, none twice. Each restart reads
//! back what the killed run wrote after its last checkpoint and does not write it again.
//!
//! A test binary of its own: reading the topics back from the test broker takes most of its
//! time, and it must not share the two cores with the other Kafka restart test, whose kill
//! counts depend on the pace of its runs.

mod common;

use std::process::Stdio;
use std::time::Instant;

use common::kafka::{Broker, Received};
use common::restarts::{kill_and_restart_until_done, Kills};
use common::{recflow, run_ok, scratch_dir, SMALL_WORLD};

/// A record as a consumer sees it: partition, offset, key, value and headers.
type Seen = (i32, i64, Option<String>, Option<Vec<u8>>, Vec<(String, String)>);

/// What a consumer sees of a topic.
fn records(received: Vec<Received>) -> Vec<Seen> {
    let record = |m: Received| (m.partition, m.offset, m.key, m.payload, m.headers.into_iter().collect());
    received.into_iter().map(record).collect()
}

#[test]
fn kafka_outputs_of_a_run_killed_at_random_points_hold_each_record_exactly_once() {
    let broker = Broker::start();
    let dir = scratch_dir("restart-kafka-out");
    let pipeline = dir.join("small.toml");
    std::fs::write(&pipeline, SMALL_WORLD).unwrap();
    let events = dir.join("events.csv");
    run_ok(recflow().arg("gen").arg(&pipeline).args(["--events", "200000", "--unit", "s", "--output"]).arg(&events));
    // Every 997th line damaged: dead letters read by both workers at the same times. Few, since
    // the test broker reads every record's headers by scanning all headers it holds (Tansu
    // 0.6.0's SQLite schema has no index for them): with a dead letter every 97 lines, reading
    // the changes back took minutes and outlasted the reader's timeout.
    let text = std::fs::read_to_string(&events).unwrap();
    let damaged: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(n, line)| if n > 0 && n % 997 == 0 { format!("{line},surplus") } else { line.to_string() })
        .collect();
    std::fs::write(&events, damaged.join("\n") + "\n").unwrap();
    let run = |changes: &str, dead: &str, extra: &[&str]| {
        let mut command = recflow();
        command.arg("run").arg(&pipeline).arg("--input").arg(&events);
        command.args(["--output", &broker.address(changes), "--dead-letter", &broker.address(dead), "-q", "-w", "2"]);
        command.args(extra).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        command
    };
    let topics =
        |tag: &str| (broker.create_topic(&format!("{tag}-changes"), 3), broker.create_topic(&format!("{tag}-dead"), 2));

    let (changes, dead) = topics("undisturbed");
    let started = Instant::now();
    run_ok(&mut run(&changes, &dead, &[]));
    let (expected_changes, expected_dead) = (records(broker.read_topic(&changes)), records(broker.read_topic(&dead)));
    eprintln!("undisturbed run in {:.1} s: {} changes", started.elapsed().as_secs_f64(), expected_changes.len());
    assert!(expected_changes.len() > 10_000, "the undisturbed run wrote a changelog");
    assert!(expected_dead.len() >= 150, "the undisturbed run wrote dead letters");
    assert!((0..3).all(|p| expected_changes.iter().any(|r| r.0 == p)), "the changes fill every partition");

    let (changes, dead) = topics("restarted");
    let checkpoints = dir.join("checkpoints");
    let args = ["--checkpoint", checkpoints.to_str().unwrap(), "--checkpoint-interval", "20ms"];
    let started = Instant::now();
    let kills = kill_and_restart_until_done(
        || vec![run(&changes, &dead, &args)],
        &checkpoints,
        Kills { seed: 5, at_most: usize::MAX, after_progress: false },
    );
    eprintln!("{kills} kills and restarts in {:.1} s", started.elapsed().as_secs_f64());
    let got_changes = records(broker.read_topic(&changes));
    assert!(
        got_changes == expected_changes,
        "after {kills} kills: {} changes on the topic, {} expected; first difference at {:?}",
        got_changes.len(),
        expected_changes.len(),
        got_changes.iter().zip(&expected_changes).position(|(a, b)| a != b)
    );
    assert!(records(broker.read_topic(&dead)) == expected_dead, "after {kills} kills: other dead letters");
    assert!(kills >= 5, "the run ended after {kills} kills: too short to test restarts");
    let _ = std::fs::remove_dir_all(&dir);
}
