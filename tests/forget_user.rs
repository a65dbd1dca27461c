//! Forgetting a user (`DELETE /v1/users/{user}`): afterwards every result equals that of a run
//! that never saw the user's events — their own list is gone, and other users' lists and the hot
//! items no longer carry what the user's history gave the similarities and counts.

mod common;

use std::collections::BTreeMap;
use std::io::Write;

use common::serve::{agent, get, reply, wait_for, Running};
use common::{final_by_key, parse_lines, recflow, run_ok, scratch_dir};
use serde_json::Value;

/// The pipeline: events on standard input, a short short-term window (`SHORT_TERM`, so some of
/// the forgotten user's short-term parts have expired by the time they are forgotten), a
/// retention horizon, hot items, and a server.
const PIPELINE: &str = r#"
[source]
kind = "stdin"
timestamp_unit = "ms"
[recommend]
k = 5
history = 10
short_term = SHORT_TERM
long_term = "2m"
[recommend.similarity]
refresh = "10s"
min_support = 1
[hot_items]
size = "2m"
slide = "1m"
[output]
status_interval_secs = 0
[serve]
addr = "127.0.0.1:0"
linger = "forever"
"#;

const FORGOTTEN: &str = "forget-me";

/// Events of the world, and the same with a user's events mixed into its last minute of event
/// time (each at the time of the line before it, so no watermark moves differently).
fn inputs(dir: &std::path::Path) -> (Vec<String>, Vec<String>) {
    let world = dir.join("world.toml");
    std::fs::write(&world, common::SMALL_WORLD).unwrap();
    let events = dir.join("events.csv");
    run_ok(recflow().arg("gen").arg(&world).args(["--events", "3000", "--unit", "ms", "--output"]).arg(&events));
    let without: Vec<String> = std::fs::read_to_string(&events).unwrap().lines().map(str::to_string).collect();
    let ts = |line: &str| line.rsplit(',').next().unwrap().parse::<u64>().unwrap();
    let max_ts = without.iter().map(|l| ts(l)).max().unwrap();
    // The hot-items windows holding the last minute are all still open when the user is forgotten.
    let last_minute = max_ts / 60_000 * 60_000;
    let mut with = Vec::new();
    let mut added = 0;
    for (n, line) in without.iter().enumerate() {
        with.push(line.clone());
        if n % 10 == 0 && ts(line) >= last_minute + 1_000 && ts(line) < max_ts {
            let fields: Vec<&str> = line.split(',').collect();
            let action = if added % 3 == 0 { "buy" } else { "view" };
            with.push(format!("{FORGOTTEN},{},{},{action},{}", fields[1], fields[2], ts(line)));
            added += 1;
        }
    }
    assert!(added >= 10, "the forgotten user has enough events to matter: {added}");
    (with, without)
}

/// What `/metrics` says of a counter.
fn counter(run: &Running, name: &str) -> Option<u64> {
    let (_, text) = reply(agent().get(&run.url("/metrics")).call());
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok()).map(|v| v as u64)
}

/// Runs the pipeline on `lines` fed through standard input with `workers`, forgets `user` once
/// every line is read, then ends the input; returns the final value of every key.
fn run_and_forget(
    dir: &std::path::Path,
    short_term: &str,
    lines: &[String],
    user: &str,
    workers: &str,
) -> BTreeMap<String, Value> {
    let pipeline = dir.join("pipeline.toml");
    std::fs::write(&pipeline, PIPELINE.replace("SHORT_TERM", short_term)).unwrap();
    let changelog = dir.join(format!("changelog-{user}-{}-w{workers}.jsonl", lines.len()));
    let mut run =
        Running::start_reading_stdin(&pipeline, &["-q", "-w", workers, "--output", changelog.to_str().unwrap()]);
    let mut stdin = run.stdin().take().unwrap();
    stdin.write_all((lines.join("\n") + "\n").as_bytes()).unwrap();
    stdin.flush().unwrap();
    wait_for(120, "every line is read", || counter(&run, "recflow_events_in_total") == Some(lines.len() as u64));

    let (status, body) = reply(agent().delete(&run.url(&format!("/v1/users/{user}"))).call());
    assert_eq!(status, 202, "not complete until the watermark passes the next refresh: {body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["complete"], false, "{answer}");
    let complete_at = answer["complete_at"].as_u64().unwrap();
    assert!(complete_at >= answer["retracted_at"].as_u64().unwrap(), "{answer}");
    assert_eq!(counter(&run, "recflow_forget_requests_total"), Some(1));

    drop(stdin);
    wait_for(120, "the input ends", || get(&run.url("/healthz")).1["input_ended"] == true);
    let (status, body) = reply(agent().delete(&run.url(&format!("/v1/users/{user}"))).call());
    assert_eq!(status, 409, "nothing is read any more: {body}");
    assert!(get(&run.url("/healthz")).1["as_of"].as_u64().unwrap() >= complete_at);
    let (status, answer) = get(&run.url(&format!("/v1/users/{user}/recommendations")));
    assert_eq!((status, &answer["popular"]), (200, &Value::Bool(true)), "the user has no list of their own: {answer}");
    run.stop();
    final_by_key(&parse_lines(&std::fs::read_to_string(&changelog).unwrap()))
}

/// Checks that forgetting the user added to the input gives the results of the input without
/// them, with the short-term window `short_term`.
fn forgetting_equals_never_seeing(short_term: &str) {
    let dir = scratch_dir("forget");
    let (with, without) = inputs(&dir);
    // The reference never sees the user; forgetting a user without events re-scores like a forget.
    let never_seen = run_and_forget(&dir, short_term, &without, "nobody-at-all", "1");
    let kept = run_and_forget(&dir, short_term, &with, "nobody-at-all", "1");
    let forgotten = run_and_forget(&dir, short_term, &with, FORGOTTEN, "2");

    let others = |results: &BTreeMap<String, Value>| -> BTreeMap<String, Value> {
        results
            .iter()
            .filter(|(key, _)| *key != &format!("recs/{FORGOTTEN}"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let differing = |a: &BTreeMap<String, Value>, b: &BTreeMap<String, Value>| {
        a.keys()
            .chain(b.keys())
            .filter(|key| a.get(*key) != b.get(*key))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert!(kept[&format!("recs/{FORGOTTEN}")].as_array().is_some_and(|items| !items.is_empty()));
    let influenced = differing(&others(&kept), &never_seen);
    assert!(
        influenced.iter().any(|key| key.starts_with("recs/")) && influenced.iter().any(|key| key.starts_with("hot/")),
        "the user's events change other users' lists and the hot items: {influenced:?}"
    );
    assert_eq!(forgotten[&format!("recs/{FORGOTTEN}")], Value::Array(Vec::new()), "the user's list is retracted");
    let left = differing(&others(&forgotten), &never_seen);
    assert!(
        left.is_empty(),
        "after forgetting, these results still differ from a run that never saw the user: {left:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_forgotten_user_leaves_every_result_as_if_never_seen() {
    forgetting_equals_never_seeing(r#"{ kind = "sliding", size = "10s" }"#);
}

#[test]
fn forgetting_works_with_session_windows() {
    forgetting_equals_never_seeing(r#"{ kind = "session", gap = "5s" }"#);
}
