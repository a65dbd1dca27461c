//! Shared test harness: run a pipeline in-process on given input lines and read its outputs back.
#![allow(dead_code)]

pub mod kafka;
pub mod reference;
pub mod restarts;
pub mod serve;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use recflow::metrics::Snapshot;
use recflow::{Pipeline, RunOptions};
use serde_json::Value;

/// A fresh, unique scratch directory.
pub fn scratch_dir(tag: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let dir = std::env::temp_dir().join(format!("recflow-test-{tag}-{}-{n}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What a run wrote.
pub struct RunOutput {
    /// Changelog records, in order.
    pub records: Vec<Value>,
    /// Dead-letter records, in order.
    pub dead_letters: Vec<Value>,
    /// The process's counters.
    pub metrics: Snapshot,
    /// The changelog's raw text.
    pub changelog_text: String,
}

/// Runs `pipeline` over `lines` (as a file) on `workers` threads.
pub fn run_lines(pipeline: &Pipeline, lines: &[String], workers: usize) -> RunOutput {
    let dir = scratch_dir("run");
    let input = dir.join("input.txt");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let output = dir.join("changelog.jsonl");
    let dead = dir.join("dead.jsonl");
    let options = RunOptions {
        input: Some(input),
        output: Some(output.display().to_string()),
        dead_letter: Some(dead.display().to_string()),
        max_events: None,
        status: false,
        stop: None,
        checkpoints: None,
        checkpoint_dir: None,
    };
    let config = if workers == 1 { timely::Config::thread() } else { timely::Config::process(workers) };
    let metrics = recflow::run(pipeline.clone(), options, config).expect("pipeline runs");
    let changelog_text = std::fs::read_to_string(&output).unwrap();
    let records = parse_lines(&changelog_text);
    let dead_letters = parse_lines(&std::fs::read_to_string(&dead).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
    RunOutput { records, dead_letters, metrics, changelog_text }
}

/// Parses JSON lines.
pub fn parse_lines(text: &str) -> Vec<Value> {
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).expect("valid JSON line")).collect()
}

/// A recommendation list as (item, score in millionths, fallback).
pub type List = Vec<(Value, i64, bool)>;

/// Reads a recs record's list.
pub fn recs_list(record: &Value) -> List {
    record["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            let score = (entry["score"].as_f64().unwrap() * 1e6).round() as i64;
            (entry["item"].clone(), score, entry.get("fallback").and_then(Value::as_bool).unwrap_or(false))
        })
        .collect()
}

/// The last hot-items list per (window_end, category), as (item, count).
pub fn final_hot_items(records: &[Value]) -> BTreeMap<(u64, String), Vec<(Value, i64)>> {
    let mut last = BTreeMap::new();
    for record in records.iter().filter(|r| r["type"] == "hot_items") {
        let key =
            (record["window_end"].as_u64().unwrap(), record.get("category").map(Value::to_string).unwrap_or_default());
        let list = record["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["item"].clone(), e["count"].as_i64().unwrap()))
            .collect();
        last.insert(key, list);
    }
    last
}

/// The last value of every key of a changelog: `recs/USER` or `hot/WINDOW_END/CATEGORY`, mapped
/// to its item list (empty for a list that disappeared).
pub fn final_by_key(records: &[Value]) -> BTreeMap<String, Value> {
    records.iter().map(|r| (result_key(r), r["items"].clone())).collect()
}

/// The key [`final_by_key`] files a changelog record under.
pub fn result_key(record: &Value) -> String {
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    match record["type"].as_str() {
        Some("recs") => format!("recs/{}", text(&record["user"])),
        _ => format!("hot/{}/{}", record["window_end"], record.get("category").map(text).unwrap_or_default()),
    }
}

/// The `recflow` binary built with the tests.
pub fn recflow() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_recflow"))
}

/// The longest any one command of the tests may run: a hung pipeline fails its test instead of
/// stalling the whole suite.
pub const COMMAND_LIMIT: std::time::Duration = std::time::Duration::from_secs(180);

/// [`std::process::Command::output`] with a deadline.
pub trait OutputWithin {
    /// Runs the command to completion like `output()` (stdin closed), but kills it and fails the
    /// test when it runs longer than [`COMMAND_LIMIT`].
    fn output_within(&mut self) -> std::process::Output;
}

impl OutputWithin for std::process::Command {
    fn output_within(&mut self) -> std::process::Output {
        output_within(self)
    }
}

fn output_within(command: &mut std::process::Command) -> std::process::Output {
    use std::io::Read;
    use std::process::Stdio;
    let mut child =
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("the command starts");
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + COMMAND_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
            panic!("{command:?} did not finish within {COMMAND_LIMIT:?}; its stderr:\n{stderr}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    std::process::Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

/// Runs a `recflow` command to completion and asserts it succeeded; returns its stderr.
pub fn run_ok(command: &mut std::process::Command) -> String {
    let output = command.output_within();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{command:?} failed: {}\n{stderr}", output.status);
    stderr
}

/// `n` free localhost ports, for timely's host file.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// Waits until `child` exits and returns its status; kills it and fails the test after `limit`.
pub fn wait_for_exit(child: &mut std::process::Child, limit: std::time::Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the process did not finish within {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A small synthetic world with recommendations and hot items, for runs that only need some
/// results of every kind quickly.
pub const SMALL_WORLD: &str = r#"
[source]
kind = "synth"
[source.synth]
users = 300
items = 400
categories = 20
clusters = 5
[recommend]
k = 5
history = 10
[recommend.similarity]
refresh = "10s"
[hot_items]
size = "2m"
slide = "30s"
[output]
status_interval_secs = 0
"#;
