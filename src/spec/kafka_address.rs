//! Kafka addresses and the pass-through options recflow reserves: what a pipeline's settings need
//! to be checked, without the Kafka client itself.

use std::collections::BTreeMap;

/// The scheme of Kafka addresses.
pub const SCHEME: &str = "kafka://";

/// A topic on a cluster: `kafka://HOST:PORT[,HOST:PORT...]/TOPIC`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaAddress {
    /// Bootstrap brokers, comma separated.
    pub brokers: String,
    /// The topic.
    pub topic: String,
}

impl KafkaAddress {
    /// Parses `kafka://HOST:PORT[,HOST:PORT...]/TOPIC`; the error says what to write instead.
    pub fn parse(text: &str) -> Result<KafkaAddress, String> {
        let usage = "write kafka://HOST:PORT/TOPIC, such as kafka://127.0.0.1:9092/events";
        let rest =
            text.strip_prefix(SCHEME).ok_or_else(|| format!("`{text}` does not start with {SCHEME}; {usage}"))?;
        let (brokers, topic) = rest.split_once('/').ok_or_else(|| format!("`{text}` names no topic; {usage}"))?;
        if brokers.is_empty() || brokers.split(',').any(|b| !b.contains(':')) {
            return Err(format!("`{text}` has no HOST:PORT before the topic; {usage}"));
        }
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if topic.is_empty() || topic.len() > 249 || !topic.chars().all(valid) {
            return Err(format!(
                "`{topic}` is not a Kafka topic name (1 to 249 of a-z, A-Z, 0-9, `.`, `_`, `-`); {usage}"
            ));
        }
        Ok(KafkaAddress { brokers: brokers.to_string(), topic: topic.to_string() })
    }
}

impl std::fmt::Display for KafkaAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.brokers, self.topic)
    }
}

/// Which kind of client a set of pass-through options configures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The source's consumers.
    Consumer,
    /// The sinks' producers.
    Producer,
}

/// A pass-through option recflow sets itself and a user must not override, with the reason.
pub fn reserved_option(options: &BTreeMap<String, String>, role: Role) -> Option<String> {
    let reserved: &[(&str, &str)] = match role {
        Role::Consumer => &[
            ("bootstrap.servers", "set source.kafka.brokers or the kafka:// address instead"),
            ("group.id", "set source.kafka.group instead"),
            ("enable.auto.commit", "recflow commits offsets itself, once results are written"),
            ("enable.auto.offset.store", "recflow commits offsets itself, once results are written"),
        ],
        Role::Producer => &[
            ("bootstrap.servers", "the kafka:// address names the brokers"),
            ("enable.idempotence", "recflow's producers are always idempotent"),
        ],
    };
    options.keys().find_map(|key| {
        reserved.iter().find(|(name, _)| name == key).map(|(name, why)| format!("`{name}` cannot be set here: {why}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_explain_mistakes() {
        let a = KafkaAddress::parse("kafka://127.0.0.1:9092,h2:9093/recs.v1").unwrap();
        assert_eq!((a.brokers.as_str(), a.topic.as_str()), ("127.0.0.1:9092,h2:9093", "recs.v1"));
        assert_eq!(a.to_string(), "kafka://127.0.0.1:9092,h2:9093/recs.v1");
        assert!(KafkaAddress::parse("kafka://127.0.0.1:9092").unwrap_err().contains("names no topic"));
        assert!(KafkaAddress::parse("kafka://localhost/t").unwrap_err().contains("HOST:PORT"));
        assert!(KafkaAddress::parse("kafka://h:1/bad topic").unwrap_err().contains("not a Kafka topic name"));
    }

    #[test]
    fn reserved_options_are_refused() {
        let mut options = BTreeMap::new();
        options.insert("fetch.wait.max.ms".to_string(), "50".to_string());
        assert_eq!(reserved_option(&options, Role::Consumer), None);
        options.insert("enable.auto.commit".to_string(), "true".to_string());
        assert!(reserved_option(&options, Role::Consumer).unwrap().contains("commits offsets itself"));
    }
}
