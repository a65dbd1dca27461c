//! Embedding recflow as a library: define a pipeline in code, run it on a bounded synthetic
//! stream with two workers, and read the final recommendations of one user from the changelog.
//!
//!     cargo run --release --example embed

use std::collections::BTreeMap;

use recflow::{Pipeline, RunOptions};

fn main() -> anyhow::Result<()> {
    let pipeline = Pipeline::from_toml(
        r#"
        [source]
        kind = "synth"
        [source.synth]
        users = 500
        items = 1000
        [recommend]
        k = 5
        [output]
        status_interval_secs = 0
        "#,
        "embedded pipeline",
    )?;
    let changelog = std::env::temp_dir().join(format!("recflow-embed-{}.jsonl", std::process::id()));
    let options = RunOptions {
        output: Some(changelog.display().to_string()),
        max_events: Some(20_000),
        status: false,
        ..RunOptions::default()
    };
    let counters = recflow::run(pipeline, options, timely::Config::process(2))?;
    println!("{} events accepted, {} changelog records", counters.accepted, counters.output_records);

    // The last record per user is that user's final list.
    let mut last: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for line in std::fs::read_to_string(&changelog)?.lines() {
        let record: serde_json::Value = serde_json::from_str(line)?;
        if record["type"] == "recs" {
            last.insert(record["user"].to_string(), record);
        }
    }
    if let Some((user, record)) = last.iter().next() {
        println!("user {user}: {}", record["items"]);
    }
    std::fs::remove_file(&changelog)?;
    Ok(())
}
