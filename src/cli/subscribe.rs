//! `recflow subscribe`: follows a recommendations or hot-items topic and prints each change,
//! readably or as JSON lines.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use crate::kafka::{client_config, partition_count, KafkaSetupError, ReportLimiter, REQUEST_TIMEOUT};
use crate::spec::kafka_address::KafkaAddress;

/// What to follow.
#[derive(Clone, Debug)]
pub struct SubscribeOptions {
    /// The topic.
    pub from: KafkaAddress,
    /// Only this key (a user id, or a hot-items window key).
    pub key: Option<String>,
    /// Start at the oldest retained change instead of new ones only.
    pub from_beginning: bool,
    /// Stop at the end offsets the topic had at start.
    pub bounded: bool,
    /// Print JSON lines (tombstones as `{"key":K,"deleted":true}`) instead of readable lines.
    pub json: bool,
}

/// Prints the changes on `options.from` to `out` until the topic's end (when bounded) or forever.
/// Returns the number of changes printed.
pub fn subscribe(options: &SubscribeOptions, out: &mut dyn Write) -> Result<u64, KafkaSetupError> {
    let address = &options.from;
    let mut config = client_config(&address.brokers, &BTreeMap::new());
    // Committed records only (librdkafka's default too): what a transaction aborted never shows.
    config
        .set("group.id", "recflow-subscribe")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    let partitions = partition_count(address, &config)?
        .ok_or_else(|| KafkaSetupError::new(address, "the topic does not exist (yet); check the address"))?;
    let consumer: BaseConsumer =
        config.create().map_err(|e| KafkaSetupError::new(address, format!("cannot create a consumer: {e}")))?;
    let mut assignment = TopicPartitionList::new();
    let mut remaining: BTreeMap<i32, i64> = BTreeMap::new();
    for partition in 0..partitions as i32 {
        let start = if options.from_beginning { Offset::Beginning } else { Offset::End };
        assignment
            .add_partition_offset(&address.topic, partition, start)
            .map_err(|e| KafkaSetupError::new(address, e.to_string()))?;
        if options.bounded {
            let (low, high) = consumer
                .fetch_watermarks(&address.topic, partition, REQUEST_TIMEOUT)
                .map_err(|e| KafkaSetupError::new(address, format!("cannot read partition {partition}'s end: {e}")))?;
            let first = if options.from_beginning { low } else { high };
            if first < high {
                remaining.insert(partition, high);
            }
        }
    }
    consumer.assign(&assignment).map_err(|e| KafkaSetupError::new(address, format!("cannot assign: {e}")))?;
    let mut printed = 0;
    let mut reports = ReportLimiter::default();
    while !(options.bounded && remaining.is_empty()) {
        let message = match consumer.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Ok(message)) => message,
            Some(Err(e)) => {
                if reports.due() {
                    eprintln!("recflow subscribe: {address}: {e} (retrying)");
                }
                continue;
            }
        };
        if let Some(end) = remaining.get(&message.partition()).copied() {
            if message.offset() + 1 >= end {
                remaining.remove(&message.partition());
            }
            if message.offset() >= end {
                continue;
            }
        }
        let key = message.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
        if options.key.as_ref().is_some_and(|wanted| *wanted != key) {
            continue;
        }
        let line = match (message.payload(), options.json) {
            (None, true) => serde_json::json!({ "key": key, "deleted": true }).to_string(),
            (None, false) => format!("{key}: no recommendations"),
            (Some(payload), true) => String::from_utf8_lossy(payload).into_owned(),
            (Some(payload), false) => readable(&key, payload),
        };
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            break;
        }
        printed += 1;
    }
    Ok(printed)
}

/// A change record as one readable line.
fn readable(key: &str, payload: &[u8]) -> String {
    let Ok(record) = serde_json::from_slice::<Value>(payload) else {
        return format!("{key}: {}", String::from_utf8_lossy(payload));
    };
    let items = record["items"].as_array().cloned().unwrap_or_default();
    let list = |field: &str| {
        items
            .iter()
            .map(|i| {
                let fallback = if i["fallback"].as_bool() == Some(true) { " popular" } else { "" };
                format!("{} ({}{fallback})", plain(&i["item"]), i[field])
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    match record["type"].as_str() {
        Some("recs") => format!("user {} at {}: {}", plain(&record["user"]), record["time"], list("score")),
        Some("popular") => format!("users without a list at {}: {}", record["time"], list("score")),
        Some("hot_items") => {
            let category = record.get("category").map(|c| format!(" category {}", plain(c))).unwrap_or_default();
            format!("hot items [{}, {}){category}: {}", record["window_start"], record["window_end"], list("count"))
        }
        _ => format!("{key}: {record}"),
    }
}

/// An id as the user wrote it: strings without quotes.
fn plain(id: &Value) -> String {
    id.as_str().map_or_else(|| id.to_string(), str::to_string)
}

/// `recflow subscribe`'s arguments.
#[derive(Args)]
pub struct SubscribeArgs {
    /// The topic: kafka://HOST:PORT/TOPIC.
    pub topic: String,
    /// Only this user's changes.
    #[arg(long)]
    pub user: Option<String>,
    /// Start with the oldest retained change, not only new ones.
    #[arg(long = "from-beginning")]
    pub from_beginning: bool,
    /// Stop at the end the topic had when the command started.
    #[arg(long)]
    pub bounded: bool,
    /// Print JSON lines instead of readable lines.
    #[arg(long)]
    pub json: bool,
}

/// Prints the changes on the topic `args` name.
pub fn main(args: SubscribeArgs) -> anyhow::Result<()> {
    let from = KafkaAddress::parse(&args.topic).map_err(anyhow::Error::msg).context("TOPIC")?;
    let options = SubscribeOptions {
        from,
        key: args.user,
        from_beginning: args.from_beginning,
        bounded: args.bounded,
        json: args.json,
    };
    subscribe(&options, &mut std::io::stdout().lock())?;
    Ok(())
}
