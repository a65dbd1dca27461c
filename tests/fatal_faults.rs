//! An output that cannot be written, or an input that cannot be read, stops the run: a non-zero
//! exit and a message naming the output or input and the cause, never a "successful" run with
//! results missing.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{recflow, scratch_dir, wait_for_exit, OutputWithin};

/// A small synthetic stream as a CSV file, and the pipeline that reads it; `bad_every` > 0 puts
/// an undecodable line after every that many events, for the dead-letter output.
fn events(tag: &str, bad_every: usize) -> (PathBuf, PathBuf) {
    let dir = scratch_dir(tag);
    let pipeline = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/ecommerce.toml");
    let csv = dir.join("events.csv");
    let generated = recflow()
        .arg("gen")
        .arg(&pipeline)
        .args(["--events", "5000", "--unit", "s", "--output"])
        .arg(&csv)
        .output_within();
    assert!(generated.status.success(), "{}", String::from_utf8_lossy(&generated.stderr));
    if bad_every > 0 {
        let text = std::fs::read_to_string(&csv).unwrap();
        let mut mixed = String::new();
        for (at, line) in text.lines().enumerate() {
            mixed.push_str(line);
            mixed.push('\n');
            if at % bad_every == 0 {
                mixed.push_str("not,a,valid,event\n");
            }
        }
        std::fs::write(&csv, mixed).unwrap();
    }
    (pipeline, csv)
}

/// Runs the pipeline over `csv` with the given output options; returns whether it succeeded
/// and its standard error.
fn run(pipeline: &Path, csv: &Path, workers: &str, outputs: &[&str]) -> (bool, String) {
    let output = recflow()
        .arg("run")
        .arg(pipeline)
        .arg("--input")
        .arg(format!("file:{}", csv.display()))
        .args(["-q", "-w", workers])
        .args(outputs)
        .output_within();
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn a_full_disk_under_the_changelog_fails_the_run_on_one_and_two_workers() {
    let (pipeline, csv) = events("full-changelog", 0);
    for workers in ["1", "2"] {
        let dead = csv.with_extension(format!("dead-{workers}.jsonl"));
        let (ok, stderr) =
            run(&pipeline, &csv, workers, &["--output", "/dev/full", "--dead-letter", dead.to_str().unwrap()]);
        assert!(!ok, "-w {workers}: the run must fail when its changelog cannot be written: {stderr}");
        assert!(
            stderr.contains("output /dev/full") && stderr.contains("No space left on device"),
            "-w {workers}: the message names the output and the cause: {stderr}"
        );
    }
}

#[test]
fn a_full_disk_under_the_dead_letters_fails_the_run() {
    let (pipeline, csv) = events("full-dead-letters", 50);
    let changelog = csv.with_extension("changelog.jsonl");
    let (ok, stderr) =
        run(&pipeline, &csv, "1", &["--output", changelog.to_str().unwrap(), "--dead-letter", "/dev/full"]);
    assert!(!ok, "the run must fail when its dead letters cannot be written: {stderr}");
    assert!(
        stderr.contains("dead-letter output /dev/full") && stderr.contains("No space left on device"),
        "the message names the dead-letter output and the cause: {stderr}"
    );
}

#[test]
fn a_closed_standard_output_fails_the_run() {
    let (pipeline, csv) = events("closed-stdout", 0);
    let mut child = recflow()
        .arg("run")
        .arg(&pipeline)
        .arg("--input")
        .arg(format!("file:{}", csv.display()))
        .args(["-q", "--output", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one record, then close the pipe, as `recflow run ... | head -1` does.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.starts_with('{'), "a changelog record: {first}");
    drop(stdout);
    let status = wait_for_exit(&mut child, Duration::from_secs(120));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "the run must fail when its standard output is closed: {stderr}");
    assert!(stderr.contains("output -") && stderr.contains("Broken pipe"), "{stderr}");
}

#[test]
fn an_input_that_cannot_be_read_fails_run_and_eval() {
    // A directory opens like a file but every read fails (EISDIR): a read error, not an end.
    let dir = scratch_dir("unreadable-input");
    let pipeline = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/ecommerce.toml");
    for command in ["run", "eval"] {
        let output = recflow()
            .arg(command)
            .arg(&pipeline)
            .arg("--input")
            .arg(format!("file:{}", dir.display()))
            .arg("-q")
            .current_dir(&dir)
            .output_within();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{command}: a read error must fail the run: {stderr}");
        assert!(stderr.contains("cannot read line 1") && stderr.contains("Is a directory"), "{command}: {stderr}");
    }
}

#[test]
fn a_panicking_worker_ends_the_process_whichever_worker_it_is() {
    let (pipeline, csv) = events("worker-panic", 0);
    for worker in ["0", "1"] {
        let changelog = csv.with_extension(format!("changelog-{worker}.jsonl"));
        let output = recflow()
            .arg("run")
            .arg(&pipeline)
            .arg("--input")
            .arg(format!("file:{}", csv.display()))
            .args(["-q", "-w", "2", "--output", changelog.to_str().unwrap()])
            .env(recflow::fatal::INJECT_PANIC_WORKER, worker)
            .output_within();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "worker {worker}'s panic must fail the run: {stderr}");
        assert!(
            stderr.contains(&format!("worker {worker}: panicked: injected panic on worker {worker}")),
            "the message says which worker panicked and why: {stderr}"
        );
    }
}

/// An output that fails to open stops every worker, not only the one that opens it: the others
/// would otherwise wait for its dataflow for ever. A producer property recflow refuses fails
/// worker 0 at once, before it connects to anything.
#[test]
fn an_output_that_cannot_be_opened_stops_every_worker() {
    let (pipeline, csv) = events("output-refused", 0);
    let with_option = csv.with_file_name("partitioner.toml");
    let text = std::fs::read_to_string(&pipeline).unwrap();
    std::fs::write(&with_option, format!("{text}\n[output.kafka_options]\npartitioner = \"random\"\n")).unwrap();
    let mut child = recflow()
        .arg("run")
        .arg(&with_option)
        .arg("--input")
        .arg(format!("file:{}", csv.display()))
        .args(["-q", "-w", "2", "--output", "kafka://127.0.0.1:1/recs", "--dead-letter", "/dev/null"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for_exit(&mut child, Duration::from_secs(30));
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert!(!status.success() && stderr.contains("`partitioner` has no effect"), "{status}: {stderr}");
    assert_eq!(stderr.matches("partitioner").count(), 1, "the cause is told once: {stderr}");
}
