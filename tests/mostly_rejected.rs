//! A run whose records are nearly all rejected says so once on stderr, with the reason, the share
//! and the fix, and fails when `output.max_rejected_share` says so; a good run stays quiet.

mod common;

use common::OutputWithin;

use std::path::{Path, PathBuf};

use common::{recflow, scratch_dir};

const PIPELINE: &str = r#"
[source]
kind = "file"
path = "events.csv"
[hot_items]
size = "5m"
slide = "1m"
[output]
path = "/dev/null"
dead_letter = "/dev/null"
"#;

fn good_line(i: u64) -> String {
    format!("{},{},1,pv,{}", i % 7, i % 11, 1_700_000_000 + i)
}

/// A pipeline file (with `extra` appended to `[output]`) and an input of `lines`, in a fresh
/// directory.
fn setup(tag: &str, extra: &str, lines: impl Iterator<Item = String>) -> (PathBuf, PathBuf) {
    let dir = scratch_dir(tag);
    std::fs::write(dir.join("p.toml"), format!("{PIPELINE}{extra}\n")).unwrap();
    std::fs::write(dir.join("events.csv"), lines.collect::<Vec<_>>().join("\n") + "\n").unwrap();
    (dir.join("p.toml"), dir)
}

/// Runs the pipeline; returns whether it succeeded and its stderr.
fn run(pipeline: &Path, dir: &Path) -> (bool, String) {
    let output = recflow().arg("run").arg(pipeline).current_dir(dir).output_within();
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

fn warnings(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("recflow: warning:")).collect()
}

/// 19 of every 20 lines are JSON, which the CSV pipeline cannot read.
fn mostly_json(count: u64) -> impl Iterator<Item = String> {
    (0..count).map(|i| if i % 20 == 0 { good_line(i) } else { format!(r#"{{"user":{i},"item":1}}"#) })
}

#[test]
fn mostly_malformed_records_are_reported_once_with_the_fix() {
    let (pipeline, dir) = setup("mostly-malformed", "", mostly_json(5_000));
    let (ok, stderr) = run(&pipeline, &dir);
    assert!(ok, "without max_rejected_share the run succeeds: {stderr}");
    let warnings = warnings(&stderr);
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("950 of the first 1000 records (95%) were rejected as malformed"), "{stderr}");
    assert!(warnings[0].contains("source.format"), "names the fix: {stderr}");
    let done = stderr.lines().find(|l| l.starts_with("recflow: done:")).unwrap();
    assert!(done.ends_with("WARNING: 95% of the first 1000 records rejected as malformed"), "{done}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_short_input_is_judged_when_it_ends() {
    // Timestamps in milliseconds for a pipeline that reads seconds: all out of range.
    let lines = (0..50u64).map(|i| format!("{},{},1,pv,{}", i % 7, i % 11, 1_700_000_000_000 + i));
    let (pipeline, dir) = setup("short-input", "", lines);
    let (ok, stderr) = run(&pipeline, &dir);
    assert!(ok, "{stderr}");
    let warnings = warnings(&stderr);
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("50 of the first 50 records (100%) were rejected as timestamp_out_of_range"));
    assert!(warnings[0].contains("timestamp_unit = \"ms\""), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn max_rejected_share_fails_the_run() {
    let (pipeline, dir) = setup("max-rejected-share", "max_rejected_share = 0.5", mostly_json(2_000));
    let (ok, stderr) = run(&pipeline, &dir);
    assert!(!ok, "the run should fail: {stderr}");
    let error = stderr.lines().find(|l| l.starts_with("Error:")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(error.contains("1900 of 2000 records (95.0%) were rejected or late"), "{error}");
    assert!(error.contains("output.max_rejected_share = 0.5") && error.contains("as malformed"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_good_input_gives_no_warning_and_passes_max_rejected_share() {
    // 1 bad line in 100, under the 5% allowed.
    let lines = (0..3_000u64).map(|i| if i % 100 == 50 { "not,an,event".to_string() } else { good_line(i) });
    let (pipeline, dir) = setup("good-input", "max_rejected_share = 0.05", lines);
    let (ok, stderr) = run(&pipeline, &dir);
    assert!(ok, "{stderr}");
    assert!(warnings(&stderr).is_empty(), "{stderr}");
    assert!(!stderr.contains("WARNING"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn csv_lines_on_a_topic_read_as_json_point_at_the_payload_key() {
    let broker = common::kafka::Broker::start();
    let (pipeline, dir) = setup("payload-mismatch", "[source.kafka]\npayload = \"json\"", (0..300).map(good_line));
    let topic = broker.address(&broker.create_topic("csv-lines", 1));
    common::run_ok(
        recflow().args(["produce", "-q", "--format", "raw", "--to", &topic, "--input", "events.csv"]).current_dir(&dir),
    );
    let output =
        recflow().arg("run").arg(&pipeline).args(["--input", &topic, "--bounded"]).current_dir(&dir).output_within();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let warnings = warnings(&stderr);
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("300 of the first 300 records (100%) were rejected as malformed"), "{stderr}");
    assert!(warnings[0].contains("`[source.kafka] payload`") && warnings[0].contains("--format json"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
