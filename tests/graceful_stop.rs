//! Ctrl-C or SIGTERM on an unbounded run ends the input: windows close, the final results are
//! written in full, and the process exits successfully.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{parse_lines, recflow, scratch_dir};

#[test]
fn sigterm_ends_an_unbounded_run_cleanly() {
    let dir = scratch_dir("stop");
    let changelog = dir.join("changelog.jsonl");
    let pipeline = concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/demo.toml");
    let mut run = recflow()
        .args(["run", pipeline, "-q", "--output"])
        .arg(&changelog)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&changelog).map_or(0, |m| m.len()) == 0 {
        assert!(run.try_wait().unwrap().is_none(), "the demo runs until stopped");
        assert!(Instant::now() < deadline, "no output within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = std::process::Command::new("kill").args(["-TERM", &run.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the run did not stop within 60 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "a stopped run exits successfully: {status}");
    let records = parse_lines(&std::fs::read_to_string(&changelog).unwrap());
    assert!(records.iter().any(|r| r["type"] == "recs"), "recommendations were written");
    let _ = std::fs::remove_dir_all(&dir);
}
