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
