//! An application writing user-behaviour events to Kafka the way a web service would: one JSON
//! object per event, keyed by user so each user's events stay in order, through an idempotent
//! producer. Only rdkafka and serde_json are used; nothing here depends on recflow. The topic must
//! exist, as in production (`recflow produce` or your admin tooling creates it).
//!
//!     cargo run --example kafka_producer -- 127.0.0.1:9092 events 10000
//!     recflow run pipelines/kafka.toml --input kafka://127.0.0.1:9092/events

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, topic, count] = args.as_slice() else {
        bail!("usage: kafka_producer BROKERS TOPIC COUNT   (for example 127.0.0.1:9092 events 10000)");
    };
    let count: u64 = count.parse().context("COUNT must be a number")?;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .context("creating the producer")?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let actions = ["view", "view", "view", "view", "cart", "fav", "buy"];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for n in 0..count {
        // A small xorshift keeps the example free of dependencies.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let user = state % 500;
        let item = (state >> 20) % 2_000;
        let event = serde_json::json!({
            "user": user,
            "item": item,
            "category": item % 40,
            "action": actions[(state >> 40) as usize % actions.len()],
            "ts": now + n / 100,
        });
        let payload = event.to_string();
        let key = user.to_string();
        let mut record = BaseRecord::to(topic).key(&key).payload(&payload);
        // A full local queue means the broker is behind: serve deliveries and try again.
        while let Err((error, returned)) = producer.send(record) {
            if !matches!(error.rdkafka_error_code(), Some(rdkafka::types::RDKafkaErrorCode::QueueFull)) {
                bail!("cannot produce: {error}");
            }
            producer.poll(Duration::from_millis(10));
            record = returned;
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).context("waiting for the last deliveries")?;
    println!("produced {count} events to {topic}");
    Ok(())
}
