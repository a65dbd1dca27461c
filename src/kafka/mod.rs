//! What recflow's Kafka source, sinks and tools share: client configuration with pass-through
//! librdkafka options, and creating topics. `kafka://HOST:PORT/TOPIC` addresses and the options
//! recflow reserves are part of the pipeline's settings ([`crate::spec::kafka_address`]).
//!
//! The client layer alone: the source lives in [`crate::source`], the sinks in [`crate::sink`],
//! and the Kafka commands (`recflow produce`, `subscribe`, `bench --kafka`) in `crate::cli`.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use thiserror::Error;

use crate::spec::kafka_address::KafkaAddress;

pub mod partition;

/// How long metadata and admin requests may take before recflow gives up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the same kind of client error is reported.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// Lets recurring client errors (a broker that is down, failing deliveries) be reported at most
/// once per [`REPORT_INTERVAL`]; librdkafka keeps retrying in between.
#[derive(Debug, Default)]
pub struct ReportLimiter(Option<std::time::Instant>);

impl ReportLimiter {
    /// Whether a report is due now; if so, the next one waits another interval.
    pub fn due(&mut self) -> bool {
        let due = self.0.is_none_or(|at| at.elapsed() >= REPORT_INTERVAL);
        if due {
            self.0 = Some(std::time::Instant::now());
        }
        due
    }
}

/// A client configuration for `brokers` with the user's pass-through `options` applied.
pub fn client_config(brokers: &str, options: &BTreeMap<String, String>) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    // librdkafka logs connection trouble itself; recflow reports what it affects.
    config.set("log_level", "3");
    for (key, value) in options {
        config.set(key, value);
    }
    config
}

/// A Kafka operation that failed, naming the address.
#[derive(Debug, Error)]
#[error("{address}: {message}")]
pub struct KafkaSetupError {
    /// The topic concerned.
    pub address: String,
    /// What went wrong and what to do.
    pub message: String,
}

impl KafkaSetupError {
    /// An error about `address`.
    pub fn new(address: &KafkaAddress, message: impl Into<String>) -> KafkaSetupError {
        KafkaSetupError { address: address.to_string(), message: message.into() }
    }
}

/// The number of partitions of the address's topic, or `None` when it does not exist.
pub fn partition_count(address: &KafkaAddress, config: &ClientConfig) -> Result<Option<usize>, KafkaSetupError> {
    let consumer: BaseConsumer =
        config.create().map_err(|e| KafkaSetupError::new(address, format!("cannot create a client: {e}")))?;
    let metadata = consumer.fetch_metadata(Some(&address.topic), REQUEST_TIMEOUT).map_err(|e| {
        KafkaSetupError::new(address, format!("cannot read the topic's metadata (is the broker running?): {e}"))
    })?;
    let Some(topic) = metadata.topics().iter().find(|t| t.name() == address.topic) else {
        return Ok(None);
    };
    match topic.error() {
        None if !topic.partitions().is_empty() => Ok(Some(topic.partitions().len())),
        None => Ok(None),
        Some(code) if RDKafkaErrorCode::from(code) == RDKafkaErrorCode::UnknownTopicOrPartition => Ok(None),
        Some(code) => Err(KafkaSetupError::new(
            address,
            format!("the broker reports {:?} for the topic", RDKafkaErrorCode::from(code)),
        )),
    }
}

/// Creates the address's topic with `partitions` partitions unless it exists; returns its
/// partition count.
pub fn ensure_topic(
    address: &KafkaAddress,
    config: &ClientConfig,
    partitions: usize,
) -> Result<usize, KafkaSetupError> {
    if let Some(count) = partition_count(address, config)? {
        return Ok(count);
    }
    let admin: AdminClient<DefaultClientContext> =
        config.create().map_err(|e| KafkaSetupError::new(address, format!("cannot create an admin client: {e}")))?;
    let topic = NewTopic::new(&address.topic, partitions as i32, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
    let results = futures_executor::block_on(admin.create_topics([&topic], &options))
        .map_err(|e| KafkaSetupError::new(address, format!("cannot create the topic: {e}")))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(KafkaSetupError::new(address, format!("cannot create the topic: {code:?}")));
            }
        }
    }
    // Wait until the metadata shows the new topic.
    let deadline = std::time::Instant::now() + REQUEST_TIMEOUT;
    loop {
        if let Some(count) = partition_count(address, config)? {
            return Ok(count);
        }
        if std::time::Instant::now() > deadline {
            return Err(KafkaSetupError::new(address, "the topic was created but does not appear in the metadata"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every message of `address` up to the end offsets its partitions have now, each partition in
/// offset order.
pub fn read_to_end(address: &KafkaAddress) -> Result<Vec<OwnedMessage>, KafkaSetupError> {
    let config = client_config(&address.brokers, &Default::default());
    let partitions = partition_count(address, &config)?.unwrap_or(0);
    read_from(address, &(0..partitions as i32).map(|p| (p, Offset::Beginning)).collect())
}

/// Every message of `address`'s partitions in `starts`, from each one's start up to the end
/// offset it has now, each partition in offset order. Only committed messages are read.
pub fn read_from(address: &KafkaAddress, starts: &BTreeMap<i32, Offset>) -> Result<Vec<OwnedMessage>, KafkaSetupError> {
    let mut config = client_config(&address.brokers, &Default::default());
    config
        .set("group.id", "recflow-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    let consumer: BaseConsumer = config.create().map_err(|e| KafkaSetupError::new(address, e.to_string()))?;
    let mut assignment = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for (&partition, &start) in starts {
        let (low, high) = consumer
            .fetch_watermarks(&address.topic, partition, REQUEST_TIMEOUT)
            .map_err(|e| KafkaSetupError::new(address, e.to_string()))?;
        let first = match start {
            Offset::Offset(offset) => offset.max(low),
            _ => low,
        };
        if high > first {
            ends.insert(partition, high);
            let _ = assignment.add_partition_offset(&address.topic, partition, Offset::Offset(first));
        }
    }
    if ends.is_empty() {
        return Ok(Vec::new());
    }
    consumer.assign(&assignment).map_err(|e| KafkaSetupError::new(address, e.to_string()))?;
    let mut messages = Vec::new();
    let mut last_message = std::time::Instant::now();
    while !ends.is_empty() {
        if last_message.elapsed() > REQUEST_TIMEOUT {
            let positions = consumer.position().map(|p| p.to_topic_map()).unwrap_or_default();
            let stuck: Vec<String> = ends
                .iter()
                .map(|(partition, end)| {
                    let at = positions.get(&(address.topic.clone(), *partition));
                    format!("partition {partition} at {at:?} of end {end}")
                })
                .collect();
            return Err(KafkaSetupError::new(
                address,
                format!("no message arrived for a while ({}); is the broker running?", stuck.join(", ")),
            ));
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                last_message = std::time::Instant::now();
                if let Some(&end) = ends.get(&message.partition()) {
                    if message.offset() + 1 >= end {
                        ends.remove(&message.partition());
                    }
                    messages.push(message.detach());
                }
            }
            Some(Err(e)) => return Err(KafkaSetupError::new(address, e.to_string())),
            None => {}
        }
    }
    Ok(messages)
}
