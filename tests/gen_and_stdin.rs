//! `recflow gen` writes events the file source reads back, and standard input is a source like
//! any file: the same events give the same changelog.

mod common;

use common::OutputWithin;

use std::io::Write;
use std::process::{Command, Stdio};

fn recflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_recflow"))
}

#[test]
fn generated_events_read_from_a_file_and_from_stdin_give_the_same_changelog() {
    let dir = std::env::temp_dir().join(format!("recflow-gen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let events = dir.join("events.csv");
    let status = recflow()
        .args(["gen", "pipelines/demo.toml", "--events", "3000", "--unit", "ms", "--output"])
        .arg(&events)
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&events).unwrap();
    assert_eq!(text.lines().count(), 3000);

    let pipeline = dir.join("pipeline.toml");
    std::fs::write(
        &pipeline,
        "[source]\nkind = \"stdin\"\ntimestamp_unit = \"ms\"\n[recommend]\nk = 5\n[recommend.similarity]\nrefresh = \"10s\"\n\
         [hot_items]\nsize = \"2m\"\nslide = \"1m\"\n[output]\nstatus_interval_secs = 0\n",
    )
    .unwrap();
    let from_file = recflow()
        .arg("run")
        .arg(&pipeline)
        .arg("--input")
        .arg(format!("file:{}", events.display()))
        .arg("-q")
        .output_within();
    assert!(from_file.status.success(), "{}", String::from_utf8_lossy(&from_file.stderr));

    let mut child =
        recflow().arg("run").arg(&pipeline).arg("-q").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let from_stdin = child.wait_with_output().unwrap();
    assert!(from_stdin.status.success());

    let changelog = String::from_utf8(from_file.stdout).unwrap();
    assert!(changelog.contains("\"type\":\"recs\"") && changelog.contains("\"type\":\"hot_items\""));
    assert_eq!(changelog, String::from_utf8(from_stdin.stdout).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Events from a live source (standard input here) cannot come from far beyond the wall clock:
/// three consecutive events stamped ten days from now are dead-lettered as `future`, and none of
/// the events after them is late. Read from a file, a replay, the same three confirm one another
/// as a jump in event time, and the events after them are late.
#[test]
fn live_sources_refuse_timestamps_beyond_the_wall_clock() {
    let dir = std::env::temp_dir().join(format!("recflow-wall-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let ahead = now_ms + 10 * 86_400_000;
    let text: String = (0..300u64)
        .map(|n| {
            let ts = if (150..153).contains(&n) { ahead + n } else { 1_700_000_000_000 + n * 1_000 };
            format!("{},{},{},view,{ts}\n", n % 7, n % 11, n % 3)
        })
        .collect();
    let events = dir.join("events.csv");
    std::fs::write(&events, &text).unwrap();
    let pipeline = dir.join("pipeline.toml");
    std::fs::write(
        &pipeline,
        "[source]\nkind = \"stdin\"\ntimestamp_unit = \"ms\"\n[hot_items]\nsize = \"2m\"\nslide = \"1m\"\n\
         [output]\nstatus_interval_secs = 0\n",
    )
    .unwrap();
    let reasons = |dead_letters: &std::path::Path| -> Vec<String> {
        let text = std::fs::read_to_string(dead_letters).unwrap();
        let letters: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        letters.iter().map(|d| d["reason"].as_str().unwrap().to_string()).collect()
    };

    let live_letters = dir.join("live-dead.jsonl");
    let mut child = recflow()
        .arg("run")
        .arg(&pipeline)
        .args(["-q", "--output", "/dev/null", "--dead-letter"])
        .arg(&live_letters)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let status = common::wait_for_exit(&mut child, std::time::Duration::from_secs(120));
    assert!(status.success());
    assert_eq!(reasons(&live_letters), ["future", "future", "future"]);

    let replay_letters = dir.join("replay-dead.jsonl");
    let replay = recflow()
        .arg("run")
        .arg(&pipeline)
        .arg("--input")
        .arg(format!("file:{}", events.display()))
        .args(["-q", "--output", "/dev/null", "--dead-letter"])
        .arg(&replay_letters)
        .output_within();
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    let replayed = reasons(&replay_letters);
    assert_eq!((replayed.len(), replayed.iter().all(|r| r == "late")), (147, true));
    let _ = std::fs::remove_dir_all(&dir);
}
