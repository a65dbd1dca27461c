//! Bad input is counted, reported with its reason and raw text, and routed to the dead-letter
//! output; it never stops the pipeline and is never silently dropped.

mod common;

use common::run_lines;
use recflow::Pipeline;

const JSONL: &str = r#"
[source]
kind = "file"
path = "unused.jsonl"
format = "jsonl"
[time]
max_out_of_orderness = "5s"
[hot_items]
actions = ["view", "buy"]
size = "1m"
slide = "1m"
top_n = 5
[output]
status_interval_secs = 0
"#;

#[test]
fn every_bad_record_is_a_dead_letter_with_its_reason() {
    let pipeline = Pipeline::from_toml(JSONL, "bad input").unwrap();
    let lines: Vec<String> = [
        r#"{"user":"alice","item":1,"action":"view","ts":1700000000}"#,
        r#"{"user":"alice","item":1,"action":"teleport","ts":1700000001}"#,
        r#"{"user":"bob","action":"view","ts":1700000002}"#,
        r#"{"user":"bob","item":2,"action":"view","ts":"soon"}"#,
        r#"{"user":"bob","item":2,"action":"view","ts":99999999999999}"#,
        r#"{"user":"bob","item":2,"action":"view","ts":-5}"#,
        r#"{"user":"bob","item":2,"action":"buy","value":"lots","ts":1700000003}"#,
        r#"not json at all"#,
        r#"[1,2,3]"#,
        r#"{"user":{"nested":true},"item":2,"action":"view","ts":1700000004}"#,
        r#"{"user":"carol","item":"x","action":"BUY","ts":1700000100}"#,
        r#"{"user":"dave","item":1,"action":"view","ts":1699999000}"#,
    ]
    .map(String::from)
    .to_vec();
    let out = run_lines(&pipeline, &lines, 2);
    let reasons: Vec<&str> = out.dead_letters.iter().map(|d| d["reason"].as_str().unwrap()).collect();
    assert_eq!(
        reasons,
        [
            "unknown_action",
            "missing_field",
            "bad_number",
            "timestamp_out_of_range",
            "bad_number",
            "bad_number",
            "malformed",
            "malformed",
            "malformed",
            "late"
        ]
    );
    // Every dead letter keeps where it came from and its raw text.
    assert!(out.dead_letters[0]["origin"].as_str().unwrap().ends_with(":2"));
    assert_eq!(out.dead_letters[6]["raw"], "not json at all");
    assert!(out.dead_letters[1]["detail"].as_str().unwrap().contains("item"));
    assert_eq!(out.metrics.records_in, 12);
    assert_eq!((out.metrics.accepted, out.metrics.invalid, out.metrics.late), (2, 9, 1));
    // The good events still produced results.
    let hot = common::final_hot_items(&out.records);
    assert_eq!(hot.len(), 2);
}

#[test]
fn invalid_utf8_and_wrong_column_counts_do_not_stop_the_pipeline() {
    let toml = r#"
[source]
kind = "file"
path = "x"
[hot_items]
[output]
status_interval_secs = 0
"#;
    let pipeline = Pipeline::from_toml(toml, "utf8").unwrap();
    let dir = common::scratch_dir("utf8");
    let input = dir.join("in.csv");
    let mut bytes = b"1,2,3,pv,1700000000\n".to_vec();
    bytes.extend_from_slice(b"1,\xff\xfe,3,pv,1700000001\n1,2,3\n1,2,3,pv,1700000002,extra\n\n1,3,3,pv,1700000003\n");
    std::fs::write(&input, bytes).unwrap();
    let output = dir.join("out.jsonl");
    let dead = dir.join("dead.jsonl");
    let options = recflow::RunOptions {
        input: Some(input),
        output: Some(output.display().to_string()),
        dead_letter: Some(dead.display().to_string()),
        max_events: None,
        status: false,
        stop: None,
        checkpoints: None,
        checkpoint_dir: None,
    };
    let metrics = recflow::run(pipeline, options, timely::Config::thread()).unwrap();
    let dead = common::parse_lines(&std::fs::read_to_string(&dead).unwrap());
    let reasons: Vec<&str> = dead.iter().map(|d| d["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["malformed", "malformed", "malformed"]);
    assert!(dead[0]["detail"].as_str().unwrap().contains("UTF-8"));
    assert_eq!((metrics.records_in, metrics.accepted), (5, 2), "the blank line is not a record");
}

/// One record stamped in the year 9999 in the middle of 20,000 does not make the 9,999 after it
/// late: it is the one dead letter, as `future`, and the watermark never moves there.
#[test]
fn a_far_future_timestamp_is_a_dead_letter_and_the_rest_is_on_time() {
    let pipeline = Pipeline::from_toml(JSONL, "poison").unwrap();
    let lines: Vec<String> = (0..20_000u64)
        .map(|n| {
            let ts = if n == 10_000 { 253_402_300_000 } else { 1_700_000_000 + n / 10 };
            format!(r#"{{"user":{},"item":{},"action":"view","ts":{ts}}}"#, n % 50, n % 97)
        })
        .collect();
    let out = run_lines(&pipeline, &lines, 2);
    let reasons: Vec<&str> = out.dead_letters.iter().map(|d| d["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["future"]);
    assert!(
        out.dead_letters[0]["raw"].as_str().is_some_and(|raw| raw.contains("253402300000")),
        "{:?}",
        out.dead_letters
    );
    assert_eq!((out.metrics.accepted, out.metrics.late), (19_999, 0));
}
