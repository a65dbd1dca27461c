//! What a Kafka results topic holds: recommendation changes keyed by user with the record as JSON,
//! a tombstone when a user's list empties, hot-item windows keyed `hot_items/END[/CATEGORY]`; and
//! `recflow subscribe` reading them back, all or one user's.

mod common;

use common::OutputWithin;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::kafka::Broker;
use common::recflow;
use recflow::metrics::Metrics;
use recflow::results::{ChangeRecord, CountedItem, ScoredItem};
use recflow::sink::Destination;
use recflow::Id;

fn run_ok_stdout(command: &mut std::process::Command) -> String {
    let output = command.output_within();
    assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn results_are_keyed_and_emptied_lists_become_tombstones() {
    let broker = Broker::start();
    let topic = broker.create_topic("recs", 2);
    let mut out: Box<dyn Destination<ChangeRecord>> =
        recflow::sink::open(&broker.address(&topic), &Default::default(), 2, &Arc::new(Metrics::default())).unwrap();
    let scored =
        |item: i64, score: f64| ScoredItem { item: Id::Num(item), score, fallback: false, because: Vec::new() };
    let records = [
        ChangeRecord::Recs { user: Id::Num(42), time: 10, items: vec![scored(7, 0.5), scored(3, 0.25)] },
        ChangeRecord::Recs { user: Id::Text("ann".into()), time: 10, items: vec![scored(9, 1.0)] },
        ChangeRecord::HotItems {
            window_start: 0,
            window_end: 3600,
            category: None,
            items: vec![CountedItem { item: Id::Num(7), count: 12 }],
        },
        ChangeRecord::HotItems {
            window_start: 0,
            window_end: 3600,
            category: Some(Id::Num(5)),
            items: vec![CountedItem { item: Id::Num(7), count: 4 }],
        },
        ChangeRecord::Recs { user: Id::Num(42), time: 20, items: Vec::new() },
    ];
    for (n, record) in records.iter().enumerate() {
        out.write(n as u64, record).unwrap();
    }
    out.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.unacknowledged().is_some() {
        assert!(Instant::now() < deadline, "deliveries not acknowledged within 60 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut messages = broker.read_topic(&topic);
    messages.sort_by_key(|m| (m.key.clone(), m.offset));
    let summary: Vec<(String, Option<serde_json::Value>)> = messages
        .iter()
        .map(|m| (m.key.clone().unwrap(), m.payload.as_ref().map(|p| serde_json::from_slice(p).unwrap())))
        .collect();
    let keys: Vec<&str> = summary.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["42", "42", "ann", "hot_items/3600", "hot_items/3600/5"]);
    assert_eq!(summary[0].1.as_ref().unwrap()["items"][0]["item"], 7);
    assert_eq!(summary[1].1, None, "an emptied list is a tombstone");
    assert_eq!(summary[2].1.as_ref().unwrap()["user"], "ann");
    assert_eq!(summary[4].1.as_ref().unwrap()["category"], 5);

    // `recflow subscribe` reads them back: everything as JSON lines, or one user's readable lines.
    let address = broker.address(&topic);
    let all = std::process::Command::new(env!("CARGO_BIN_EXE_recflow"))
        .args(["subscribe", &address, "--from-beginning", "--bounded", "--json"])
        .output_within();
    assert!(all.status.success());
    let lines: Vec<serde_json::Value> =
        String::from_utf8(all.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5);
    assert!(lines.contains(&serde_json::json!({ "key": "42", "deleted": true })));
    let ann = run_ok_stdout(recflow().args(["subscribe", &address, "--from-beginning", "--bounded", "--user", "ann"]));
    assert_eq!(ann.trim(), "user ann at 10: 9 (1.0)");
    let gone = run_ok_stdout(recflow().args(["subscribe", &address, "--from-beginning", "--bounded", "--user", "42"]));
    assert_eq!(gone.lines().last(), Some("42: no recommendations"));
}
