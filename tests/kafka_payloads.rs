//! The three payload encodings of a Kafka source give the same results: JSON objects, CSV lines
//! and recflow's bincode events (as `recflow produce --format json|raw|bincode` writes them).

mod common;

use common::kafka::Broker;
use common::{recflow, run_ok, scratch_dir};

#[test]
fn json_csv_and_bincode_payloads_agree() {
    let broker = Broker::start();
    let dir = scratch_dir("kafka-payloads");
    let events = dir.join("events.csv");
    let lines: Vec<String> = (0..2_000u64)
        .map(|i| {
            let action = ["pv", "cart", "fav", "buy"][(i % 7 % 4) as usize];
            format!("{},{},{},{action},{}", i % 37, i * 7 % 101, i % 5, 1_700_000_000 + i / 2)
        })
        .collect();
    std::fs::write(&events, lines.join("\n") + "\n").unwrap();
    let mut changelogs = Vec::new();
    for (format, payload) in [("json", "json"), ("raw", "csv"), ("bincode", "bincode")] {
        let topic = broker.create_topic(payload, 2);
        run_ok(
            recflow()
                .args(["produce", "-q", "--partitions", "2", "--format", format, "--to", &broker.address(&topic)])
                .arg("--input")
                .arg(&events),
        );
        let pipeline = dir.join(format!("{payload}.toml"));
        std::fs::write(
            &pipeline,
            format!(
                r#"
[source]
kind = "kafka"
[source.kafka]
payload = "{payload}"
[recommend]
k = 3
[hot_items]
size = "5m"
slide = "1m"
[output]
status_interval_secs = 0
"#
            ),
        )
        .unwrap();
        let changelog = dir.join(format!("{payload}.jsonl"));
        let dead = dir.join(format!("{payload}-dead.jsonl"));
        run_ok(
            recflow()
                .arg("run")
                .arg(&pipeline)
                .args(["--input", &broker.address(&topic), "--bounded", "-w", "2", "-q", "--output"])
                .arg(&changelog)
                .arg("--dead-letter")
                .arg(&dead),
        );
        assert_eq!(std::fs::read_to_string(&dead).unwrap(), "", "{payload}: nothing rejected");
        changelogs.push(std::fs::read_to_string(&changelog).unwrap());
    }
    assert!(changelogs[0].lines().count() > 50, "the runs produced results");
    assert_eq!(changelogs[0], changelogs[1], "JSON and CSV payloads differ");
    assert_eq!(changelogs[0], changelogs[2], "JSON and bincode payloads differ");
    let _ = std::fs::remove_dir_all(&dir);
}
