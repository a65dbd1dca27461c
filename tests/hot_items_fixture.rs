//! Hot items on a hand-worked fixture: hopping windows aligned to the epoch, `pv` only, ties by
//! item id, late events dead-lettered, each window reported once with its final answer.

mod common;

use common::run_lines;
use recflow::Pipeline;
use serde_json::json;

const HOT_ITEMS: &str = r#"
[source]
kind = "file"
path = "unused.csv"
[time]
max_out_of_orderness = "5s"
[hot_items]
actions = ["view"]
size = "10m"
slide = "5m"
top_n = 2
[output]
status_interval_secs = 0
"#;

fn fixture() -> Vec<String> {
    [
        "1,100,1,pv,3600",
        "2,100,1,pv,3610",
        "3,200,1,pv,3620",
        "4,300,1,buy,3630",
        "1,200,1,pv,3910",
        "2,200,1,pv,3920",
        "3,300,1,pv,3930",
        "4,300,1,pv,3940",
        "5,100,1,pv,4205",
        "1,200,1,pv,3602",
        "6,300,1,pv,4203",
        "x,y",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn hand_worked_windows() {
    let pipeline = Pipeline::from_toml(HOT_ITEMS, "hot-items fixture").unwrap();
    for workers in [1, 3] {
        let out = run_lines(&pipeline, &fixture(), workers);
        let expected = vec![
            json!({"type":"hot_items","window_start":3300,"window_end":3900,"items":[{"item":100,"count":2},{"item":200,"count":1}]}),
            json!({"type":"hot_items","window_start":3600,"window_end":4200,"items":[{"item":200,"count":3},{"item":100,"count":2}]}),
            json!({"type":"hot_items","window_start":3900,"window_end":4500,"items":[{"item":300,"count":3},{"item":200,"count":2}]}),
            json!({"type":"hot_items","window_start":4200,"window_end":4800,"items":[{"item":100,"count":1},{"item":300,"count":1}]}),
        ];
        assert_eq!(out.records, expected, "{workers} workers");
        let reasons: Vec<&str> = out.dead_letters.iter().map(|d| d["reason"].as_str().unwrap()).collect();
        assert_eq!(reasons, ["late", "malformed"]);
        assert_eq!(out.dead_letters[1]["raw"], "x,y");
        // The late event is reported with its line; its raw form is the decoded event.
        assert!(out.dead_letters[0]["origin"].as_str().unwrap().ends_with(":10"), "{}", out.dead_letters[0]);
        assert!(out.dead_letters[0]["raw"].as_str().unwrap().contains("3602000"));
        assert_eq!((out.metrics.accepted, out.metrics.late, out.metrics.invalid), (10, 1, 1));
    }
}

#[test]
fn late_event_within_lateness_updates_a_reported_window() {
    let pipeline =
        Pipeline::from_toml(&HOT_ITEMS.replace("[hot_items]", "allowed_lateness = \"20m\"\n[hot_items]"), "late")
            .unwrap();
    let lines: Vec<String> = [
        "1,100,1,pv,3600",
        "2,200,1,pv,3610",
        "3,200,1,pv,4300",
        "4,100,1,pv,3620",
        "6,300,1,pv,4310",
        "5,100,1,pv,3630",
    ]
    .map(String::from)
    .to_vec();
    let out = run_lines(&pipeline, &lines, 1);
    let first_window: Vec<_> = out.records.iter().filter(|r| r["window_end"] == 4200).collect();
    // Reported when the watermark passed 4200 (items 200 then 100 by id on a 1-1 tie), then
    // updated twice by the two events that arrived behind the watermark.
    assert_eq!(first_window.len(), 3, "{first_window:?}");
    assert_eq!(first_window[0]["items"], json!([{"item":100,"count":1},{"item":200,"count":1}]));
    assert_eq!(first_window[2]["items"], json!([{"item":100,"count":3},{"item":200,"count":1}]));
    assert_eq!(out.metrics.late, 0);
}
