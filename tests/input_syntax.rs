//! Every command that reads events (`run`, `eval`, `bench`, `produce`) takes `--input` in the
//! same forms, `file:PATH`, `PATH` and `-` (standard input), and refuses unknown schemes and
//! inputs it cannot read with the forms it accepts.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use common::kafka::Broker;
use common::{recflow, scratch_dir, OutputWithin};

const PIPELINE: &str = r#"
[source]
kind = "file"
path = "unused.csv"
[recommend]
k = 3
history = 5
[recommend.similarity]
refresh = "10s"
[hot_items]
size = "2m"
slide = "30s"
[output]
status_interval_secs = 0
"#;

const EVENTS: u64 = 400;

/// A directory with the pipeline and its events.
fn setup(tag: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = scratch_dir(tag);
    let pipeline = dir.join("p.toml");
    std::fs::write(&pipeline, PIPELINE).unwrap();
    let events = dir.join("events.csv");
    let lines: Vec<String> = (0..EVENTS)
        .map(|i| {
            format!(
                "{},{},{},{},{}",
                i % 17,
                i * 7 % 23,
                i % 3,
                ["pv", "buy"][(i % 5 == 0) as usize],
                1_700_000_000 + i
            )
        })
        .collect();
    std::fs::write(&events, lines.join("\n") + "\n").unwrap();
    (dir, pipeline, events)
}

/// Runs `recflow ARGS`, with `stdin` on its standard input if given.
fn recflow_with(args: &[&str], stdin: Option<&Path>) -> Output {
    let mut command = recflow();
    command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    let Some(path) = stdin else { return command.output_within() };
    let mut child = command.stdin(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(&std::fs::read(path).unwrap()).unwrap();
    child.wait_with_output().unwrap()
}

fn succeeded(args: &[&str], stdin: Option<&Path>) -> String {
    let output = recflow_with(args, stdin);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{args:?} failed: {stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The three ways to name the events file: `file:PATH`, `PATH` and `-` (the file on stdin).
fn forms(events: &Path) -> [(String, Option<&Path>); 3] {
    [
        (format!("file:{}", events.display()), None),
        (events.display().to_string(), None),
        ("-".to_string(), Some(events)),
    ]
}

#[test]
fn run_eval_and_bench_read_file_plain_and_stdin_inputs() {
    let (dir, pipeline, events) = setup("input-forms");
    let pipeline = pipeline.display().to_string();
    let mut changelogs = Vec::new();
    let mut metrics = Vec::new();
    for (form, stdin) in forms(&events) {
        changelogs.push(succeeded(&["run", &pipeline, "--input", &form, "-q"], stdin));
        let out = dir.join("eval-out");
        let out = out.to_str().unwrap();
        succeeded(&["eval", &pipeline, "--input", &form, "-q", "--out", out], stdin);
        metrics.push(std::fs::read_to_string(dir.join("eval-out").join("metrics.csv")).unwrap());
        let bench = succeeded(&["bench", &pipeline, "--input", &form, "--events", "1000", "--runs", "1"], stdin);
        assert!(bench.contains(&format!("run 1: {EVENTS} records")), "bench {form}: {bench}");
    }
    assert!(changelogs[0].contains("\"type\":\"recs\""), "the run wrote lists");
    assert!(changelogs.iter().all(|c| *c == changelogs[0]), "run: every form reads the same events");
    assert!(metrics.iter().all(|m| *m == metrics[0]), "eval: every form reads the same events");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn produce_reads_file_plain_and_stdin_inputs() {
    let broker = Broker::start();
    let (dir, _, events) = setup("produce-forms");
    for (form, stdin) in forms(&events) {
        let topic = broker.address(&common::kafka::unique_topic("forms"));
        let output = recflow_with(&["produce", "-q", "--input", &form, "--to", &topic], stdin);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "produce --input {form}: {stderr}");
        assert!(stderr.contains(&format!("{EVENTS} messages delivered")), "{form}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_schemes_and_unread_inputs_name_the_accepted_forms() {
    let (dir, pipeline, _) = setup("input-refused");
    let pipeline = pipeline.display().to_string();
    let to = "kafka://127.0.0.1:9/unused";
    let refused = |args: &[&str], expected: &[&str]| {
        let output = recflow_with(args, None);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} should fail");
        for text in expected {
            assert!(stderr.contains(text), "{args:?}: `{text}` not in {stderr}");
        }
    };
    let files = "this command reads file:PATH, PATH or - (standard input)";
    let with_kafka = "this command reads file:PATH, PATH, - (standard input) or kafka://HOST:PORT/TOPIC";
    let s3 = "--input `s3://bucket/events.csv` has the unknown scheme `s3:`";
    refused(&["run", &pipeline, "--input", "s3://bucket/events.csv"], &[s3, with_kafka]);
    refused(&["eval", &pipeline, "--input", "s3://bucket/events.csv"], &[s3, files]);
    refused(&["bench", &pipeline, "--input", "s3://bucket/events.csv"], &[s3, files]);
    refused(&["produce", "--input", "s3://bucket/events.csv", "--to", to], &[s3, files]);
    let topic = "is a Kafka topic, which this command does not read";
    refused(&["eval", &pipeline, "--input", to], &[topic, files]);
    refused(&["bench", &pipeline, "--input", to], &[topic, files]);
    refused(&["produce", "--input", to, "--to", to], &[topic, files]);
    refused(&["run", &pipeline, "--input", "file:"], &["names no file"]);
    refused(&["bench", &pipeline, "--input", "-"], &["standard input can be read only once"]);
    let _ = std::fs::remove_dir_all(&dir);
}
