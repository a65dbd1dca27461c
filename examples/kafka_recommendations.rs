//! An application keeping every user's current recommendations in memory from recflow's
//! recommendations topic, as a cache in front of a web service would: records are keyed by user,
//! the value is the user's whole list (JSON), a tombstone means the user has none any more. The
//! record keyed `popular` is the list for users without one of their own (the popular items).
//! Only rdkafka and serde_json are used; nothing here depends on recflow.
//!
//!     recflow run pipelines/kafka.toml --output kafka://127.0.0.1:9092/recs
//!     cargo run --example kafka_recommendations -- 127.0.0.1:9092 recs

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, topic] = args.as_slice() else {
        bail!("usage: kafka_recommendations BROKERS TOPIC   (for example 127.0.0.1:9092 recs)");
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "recommendations-cache")
        // A new cache replays the topic; the last record per user is that user's current list.
        .set("auto.offset.reset", "earliest")
        .create()
        .context("creating the consumer")?;
    consumer.subscribe(&[topic]).context("subscribing")?;
    let mut lists: HashMap<String, serde_json::Value> = HashMap::new();
    // What a user without a list of their own is shown.
    let mut popular: Vec<String> = Vec::new();
    loop {
        let Some(message) = consumer.poll(Duration::from_millis(500)) else { continue };
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                eprintln!("kafka: {e} (retrying)");
                continue;
            }
        };
        let user = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
        if user == "popular" {
            popular = match message.payload() {
                Some(payload) => item_names(&serde_json::from_slice(payload).context("a JSON record")?),
                None => Vec::new(),
            };
            println!("users without a list: {}", popular.join(", "));
            continue;
        }
        match message.payload() {
            None => {
                lists.remove(&user);
                let shown = popular.join(", ");
                println!("user {user}: no list of their own, shown {shown} ({} users cached)", lists.len());
            }
            Some(payload) => {
                let record: serde_json::Value = serde_json::from_slice(payload).context("a JSON record")?;
                if record["type"] != "recs" {
                    continue;
                }
                let items = item_names(&record);
                lists.insert(user.clone(), record);
                println!("user {user}: {} ({} users cached)", items.join(", "), lists.len());
            }
        }
    }
}

/// The items of a list record.
fn item_names(record: &serde_json::Value) -> Vec<String> {
    record["items"].as_array().map(|items| items.iter().map(|i| i["item"].to_string()).collect()).unwrap_or_default()
}
