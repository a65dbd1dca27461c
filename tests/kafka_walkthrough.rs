//! The README's Kafka walkthrough works as written: events produced with `--pipeline
//! pipelines/ecommerce.toml` are read without a single rejection by `pipelines/kafka.toml` and by
//! `pipelines/hot-items.toml`, and a file pipeline pointed at a topic reads its file's format.
//!
//! The commands are the README's, run in a scratch directory holding copies of the shipped
//! pipelines, with the broker's address in place of the README's `127.0.0.1:9092` (also in the
//! copy of `kafka.toml`, whose outputs name it). Each test starts its own broker, so the README's
//! topic names cannot collide with another test's.

mod common;

use common::OutputWithin;

use std::path::{Path, PathBuf};

use common::kafka::Broker;
use common::{parse_lines, recflow, run_ok, scratch_dir};

/// The README's placeholder for the broker.
const README_BROKER: &str = "127.0.0.1:9092";

/// A broker and a directory laid out as a checkout, with `events.csv` produced to `events` the
/// way the README does it.
struct Walkthrough {
    broker: Broker,
    dir: PathBuf,
}

impl Walkthrough {
    fn start() -> Walkthrough {
        let broker = Broker::start();
        let dir = scratch_dir("walkthrough");
        std::fs::create_dir_all(dir.join("pipelines")).unwrap();
        for name in ["ecommerce.toml", "hot-items.toml", "kafka.toml"] {
            let text = std::fs::read_to_string(Path::new("pipelines").join(name)).unwrap();
            std::fs::write(dir.join("pipelines").join(name), text.replace(README_BROKER, &broker.brokers())).unwrap();
        }
        let walkthrough = Walkthrough { broker, dir };
        walkthrough.run("recflow gen pipelines/ecommerce.toml --events 5000 --unit s --output events.csv");
        let stderr = walkthrough.run(
            "recflow produce --input events.csv --to kafka://127.0.0.1:9092/events --partitions 4 --pipeline pipelines/ecommerce.toml",
        );
        assert!(stderr.contains("5000 messages delivered"), "{stderr}");
        walkthrough
    }

    /// Runs a README command line (the broker's address in place of the placeholder) in the
    /// directory; returns its standard output and standard error.
    fn output(&self, line: &str) -> (String, String) {
        let line = line.replace(README_BROKER, &self.broker.brokers());
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[0], "recflow");
        let output = recflow().args(&words[1..]).current_dir(&self.dir).output_within();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "`{line}` failed: {}\n{stderr}", output.status);
        (String::from_utf8_lossy(&output.stdout).into_owned(), stderr)
    }

    fn run(&self, line: &str) -> String {
        self.output(line).1
    }
}

impl Drop for Walkthrough {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The counts of a run's last status line: `done: N records ...: A accepted, L late, R rejected;
/// O output records`.
#[derive(Debug)]
struct Done {
    accepted: u64,
    late: u64,
    rejected: u64,
    output_records: u64,
}

fn done_line(stderr: &str) -> Done {
    let line =
        stderr.lines().find(|l| l.starts_with("recflow: done:")).unwrap_or_else(|| panic!("no done line: {stderr}"));
    let count = |label: &str| -> u64 {
        let before = &line[..line.find(label).unwrap_or_else(|| panic!("no `{label}` in {line}"))];
        before.split([' ', ':']).rfind(|w| !w.is_empty()).unwrap().parse().unwrap()
    };
    Done {
        accepted: count(" accepted"),
        late: count(" late"),
        rejected: count(" rejected"),
        output_records: count(" output records"),
    }
}

#[test]
fn the_kafka_pipeline_reads_what_produce_wrote_for_ecommerce() {
    let walkthrough = Walkthrough::start();
    let stderr = walkthrough.run("recflow run pipelines/kafka.toml --input kafka://127.0.0.1:9092/events --bounded");
    let done = done_line(&stderr);
    assert_eq!(done.rejected, 0, "{stderr}");
    assert_eq!(done.accepted + done.late, 5000, "{stderr}");
    assert!(done.output_records > 0, "{stderr}");
    let recs = walkthrough.broker.read_topic("recs");
    assert!(recs.iter().any(|m| m.key.as_deref().is_some_and(|k| !k.starts_with("hot_items/"))), "no recommendations");
    assert!(walkthrough.broker.read_topic("recflow-dead-letters").is_empty(), "dead letters were written");
}

#[test]
fn the_hot_items_pipeline_reads_what_produce_wrote_for_ecommerce() {
    let walkthrough = Walkthrough::start();
    let (stdout, stderr) =
        walkthrough.output("recflow run pipelines/hot-items.toml --input kafka://127.0.0.1:9092/events --bounded");
    let done = done_line(&stderr);
    assert_eq!(done.rejected, 0, "{stderr}");
    assert_eq!(done.accepted + done.late, 5000, "{stderr}");
    assert!(done.output_records > 0, "{stderr}");
    let records = parse_lines(&stdout);
    assert!(records.iter().any(|r| r["type"] == "hot_items"), "no hot items on stdout");
}

#[test]
fn a_file_pipeline_reads_its_file_format_from_kafka() {
    let broker = Broker::start();
    let dir = scratch_dir("file-format-from-kafka");
    let pipeline = dir.join("tsv.toml");
    std::fs::write(
        &pipeline,
        r#"
[source]
kind = "file"
path = "not-read.tsv"
format = "tsv"
columns = ["ts", "user", "_", "item", "action"]
[hot_items]
size = "5m"
slide = "1m"
[output]
status_interval_secs = 0
"#,
    )
    .unwrap();
    let events = dir.join("events.tsv");
    let lines: Vec<String> =
        (0..600u64).map(|i| format!("{}\t{}\tx\t{}\tpv", 1_700_000_000 + i, i % 13, i * 7 % 31)).collect();
    std::fs::write(&events, lines.join("\n") + "\n").unwrap();
    let topic = broker.create_topic("tsv", 2);
    let stderr = run_ok(
        recflow()
            .args(["produce", "-q", "--to", &broker.address(&topic), "--pipeline"])
            .arg(&pipeline)
            .arg("--input")
            .arg(&events),
    );
    assert!(stderr.contains("as raw payloads"), "a TSV file goes to a TSV pipeline as it is: {stderr}");
    let (changelog, dead) = (dir.join("changelog.jsonl"), dir.join("dead.jsonl"));
    run_ok(
        recflow()
            .arg("run")
            .arg(&pipeline)
            .args(["--input", &broker.address(&topic), "--bounded", "-q", "--output"])
            .arg(&changelog)
            .arg("--dead-letter")
            .arg(&dead),
    );
    assert_eq!(std::fs::read_to_string(&dead).unwrap(), "", "nothing rejected");
    assert!(!parse_lines(&std::fs::read_to_string(&changelog).unwrap()).is_empty(), "results were written");
    let _ = std::fs::remove_dir_all(&dir);
}
