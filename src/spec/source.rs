//! `[source]`: where events come from and how they are decoded, with `[source.fields]`,
//! `[source.kafka]` and `[source.synth]`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::kafka_address::{reserved_option, Role};
use super::{rejecting, Span, SpecError};
use crate::event::Action;

/// Which way events arrive.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// The built-in synthetic generator.
    #[default]
    Synth,
    /// A file of CSV, TSV or JSON lines.
    File,
    /// Standard input.
    Stdin,
    /// A Kafka topic (`[source.kafka]`).
    Kafka,
}

/// How records are written.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Comma-separated values.
    #[default]
    Csv,
    /// Tab-separated values.
    Tsv,
    /// One JSON object per line.
    Jsonl,
}

/// The unit of timestamps in the input.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TimeUnit {
    /// Seconds since the Unix epoch.
    #[default]
    #[serde(rename = "s")]
    Seconds,
    /// Milliseconds since the Unix epoch.
    #[serde(rename = "ms")]
    Millis,
}

impl TimeUnit {
    /// Milliseconds per unit.
    pub fn scale(self) -> u64 {
        match self {
            TimeUnit::Seconds => 1_000,
            TimeUnit::Millis => 1,
        }
    }
}

/// The `[source]` table.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SourceSpec {
    /// `synth`, `file` or `stdin`.
    pub kind: SourceKind,
    /// The file to read when `kind = "file"`.
    pub path: Option<PathBuf>,
    /// `csv`, `tsv` or `jsonl`.
    pub format: Format,
    /// Unit of the input's timestamps: `s` or `ms`.
    pub timestamp_unit: TimeUnit,
    /// Column names in order for CSV/TSV; `_` skips a column.
    pub columns: Vec<String>,
    /// Whether the first CSV/TSV line is a header to skip.
    pub header: bool,
    /// JSON field names for each event field.
    pub fields: JsonFields,
    /// Extra action names, mapped to the built-in actions (`{ "1" = "view" }`).
    pub action_aliases: BTreeMap<String, Action>,
    /// The action of records whose input has no action column (MovieLens: `rate`).
    pub default_action: Option<Action>,
    /// Earliest accepted timestamp, in the input's unit.
    pub min_timestamp: u64,
    /// Latest accepted timestamp, in the input's unit; by default 9999-12-31 in that unit.
    pub max_timestamp: Option<u64>,
    /// Settings of the synthetic generator.
    pub synth: SynthSpec,
    /// Settings of the Kafka source, used when `kind = "kafka"`.
    pub kafka: KafkaSourceSpec,
}

impl Default for SourceSpec {
    fn default() -> Self {
        SourceSpec {
            kind: SourceKind::Synth,
            path: None,
            format: Format::Csv,
            timestamp_unit: TimeUnit::Seconds,
            columns: ["user", "item", "category", "action", "ts"].map(String::from).to_vec(),
            header: false,
            fields: JsonFields::default(),
            action_aliases: BTreeMap::new(),
            default_action: None,
            min_timestamp: 0,
            max_timestamp: None,
            synth: SynthSpec::default(),
            kafka: KafkaSourceSpec::default(),
        }
    }
}

impl SourceSpec {
    /// The latest accepted timestamp in the input's unit: `max_timestamp`, or 9999-12-31.
    pub fn latest_timestamp(&self) -> u64 {
        const END_OF_9999_IN_SECONDS: u64 = 253_402_300_799;
        self.max_timestamp.unwrap_or(END_OF_9999_IN_SECONDS * 1_000 / self.timestamp_unit.scale())
    }

    /// How this source's Kafka messages are encoded: `[source.kafka] payload` when it is set;
    /// otherwise, for a source that describes a file (or standard input), that file's format, so
    /// the pipeline reads from a topic what it reads from its file; otherwise JSON.
    pub fn payload(&self) -> Payload {
        match (self.kafka.payload, self.kind) {
            (Some(payload), _) => payload,
            (None, SourceKind::File | SourceKind::Stdin) => Payload::of_format(self.format),
            (None, SourceKind::Synth | SourceKind::Kafka) => Payload::Json,
        }
    }

    /// Reads `topic` on `brokers` instead of what the pipeline names (`--input kafka://...`),
    /// keeping the payload format the source expects.
    pub fn read_topic(&mut self, brokers: String, topic: String) {
        self.kafka.payload = Some(self.payload());
        self.kind = SourceKind::Kafka;
        self.kafka.brokers = brokers;
        self.kafka.topic = topic;
    }

    /// Checks `[source]`: the path of a file source, the CSV/TSV columns, `[source.kafka]` of a
    /// Kafka source, the timestamp bounds and `[source.synth]`.
    pub(super) fn validate(&self, origin: &str) -> Result<(), SpecError> {
        let bad = rejecting(origin);
        if self.kind == SourceKind::File && self.path.is_none() {
            return bad(
                "source.path",
                "kind = \"file\" needs a path; set path = \"events.csv\" or pass --input file:PATH".into(),
            );
        }
        if self.format != Format::Jsonl {
            self.validate_columns(origin)?;
        }
        if self.kind == SourceKind::Kafka {
            self.kafka.validate(origin)?;
        }
        if self.min_timestamp > self.latest_timestamp() {
            return bad("source.min_timestamp", "is greater than source.max_timestamp; swap them".into());
        }
        if self.latest_timestamp().checked_mul(self.timestamp_unit.scale()).is_none() {
            return bad("source.max_timestamp", "is too large for the timestamp unit".into());
        }
        self.synth.validate(origin)
    }

    /// Checks the CSV/TSV `columns`: known names, each at most once, the required ones present, and
    /// a `default_action` when there is no `action` column.
    fn validate_columns(&self, origin: &str) -> Result<(), SpecError> {
        let bad = rejecting(origin);
        let known = ["user", "item", "category", "action", "value", "ts", "_"];
        for column in &self.columns {
            if !known.contains(&column.as_str()) {
                return bad("source.columns", format!("unknown column `{column}`; use names from {known:?}"));
            }
        }
        for required in ["user", "item", "ts"] {
            if !self.columns.iter().any(|c| c == required) {
                return bad("source.columns", format!("no `{required}` column; list it at its position, e.g. [\"user\", \"item\", \"action\", \"ts\"]"));
            }
        }
        if !self.columns.iter().any(|c| c == "action") && self.default_action.is_none() {
            return bad(
                "source.default_action",
                "there is no `action` column, so set default_action (e.g. \"rate\" for MovieLens)".into(),
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for column in self.columns.iter().filter(|c| *c != "_") {
            if !seen.insert(column) {
                return bad("source.columns", format!("column `{column}` appears twice"));
            }
        }
        Ok(())
    }
}

/// Where a Kafka consumer starts reading each partition.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// The oldest retained message.
    #[default]
    Earliest,
    /// Only messages produced after the start.
    Latest,
    /// The consumer group's committed offset (earliest where the group has none).
    Committed,
}

/// How each Kafka message's payload is encoded.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Payload {
    /// A JSON object with the `[source.fields]` names.
    #[default]
    Json,
    /// A CSV line in the `columns` layout.
    Csv,
    /// A TSV line in the `columns` layout.
    Tsv,
    /// recflow's event struct in bincode, as `recflow produce --format bincode` writes it.
    Bincode,
}

impl Payload {
    /// The payload that carries records written in `format`.
    pub fn of_format(format: Format) -> Payload {
        match format {
            Format::Csv => Payload::Csv,
            Format::Tsv => Payload::Tsv,
            Format::Jsonl => Payload::Json,
        }
    }
}

/// The `[source.kafka]` table.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSourceSpec {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The topic to read.
    pub topic: String,
    /// The consumer group offsets are committed to (for `start = "committed"` and lag tools).
    pub group: String,
    /// `earliest`, `latest` or `committed`.
    pub start: StartFrom,
    /// `json`, `csv`, `tsv` or `bincode`; unset, see [`SourceSpec::payload`].
    pub payload: Option<Payload>,
    /// A partition without messages for this long stops holding the watermark back.
    pub idle_timeout: Span,
    /// Read each partition up to its end offset at start, then close all windows and exit.
    pub bounded: bool,
    /// librdkafka consumer properties passed through as they are (`"fetch.wait.max.ms" = "50"`).
    pub options: BTreeMap<String, String>,
}

impl Default for KafkaSourceSpec {
    fn default() -> Self {
        KafkaSourceSpec {
            brokers: String::new(),
            topic: String::new(),
            group: "recflow".into(),
            start: StartFrom::Earliest,
            payload: None,
            idle_timeout: Span(10_000),
            bounded: false,
            options: BTreeMap::new(),
        }
    }
}

impl KafkaSourceSpec {
    /// Checks `[source.kafka]` of a Kafka source: brokers, topic and group named, a positive idle
    /// timeout, no reserved consumer option.
    fn validate(&self, origin: &str) -> Result<(), SpecError> {
        let bad = rejecting(origin);
        if self.brokers.trim().is_empty() {
            return bad(
                "source.kafka.brokers",
                "kind = \"kafka\" needs brokers, such as \"127.0.0.1:9092\", or pass --input kafka://HOST:PORT/TOPIC"
                    .into(),
            );
        }
        if self.topic.trim().is_empty() {
            return bad(
                "source.kafka.topic",
                "kind = \"kafka\" needs a topic, or pass --input kafka://HOST:PORT/TOPIC".into(),
            );
        }
        if self.group.trim().is_empty() {
            return bad("source.kafka.group", "is empty; name the consumer group, such as \"recflow\"".into());
        }
        if self.idle_timeout.millis() == 0 {
            return bad("source.kafka.idle_timeout", "must be positive, such as \"10s\"".into());
        }
        if let Some(problem) = reserved_option(&self.options, Role::Consumer) {
            return bad("source.kafka.options", problem);
        }
        Ok(())
    }
}

/// JSON field names (`[source.fields]`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JsonFields {
    /// Field holding the user id.
    pub user: String,
    /// Field holding the item id.
    pub item: String,
    /// Field holding the category id (optional in records).
    pub category: String,
    /// Field holding the action.
    pub action: String,
    /// Field holding the value (optional in records).
    pub value: String,
    /// Field holding the timestamp.
    pub ts: String,
}

impl Default for JsonFields {
    fn default() -> Self {
        JsonFields {
            user: "user".into(),
            item: "item".into(),
            category: "category".into(),
            action: "action".into(),
            value: "value".into(),
            ts: "ts".into(),
        }
    }
}

/// The synthetic generator (`[source.synth]`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SynthSpec {
    /// Seed: the same seed gives the same events.
    pub seed: u64,
    /// Number of users.
    pub users: u64,
    /// Number of items.
    pub items: u64,
    /// Number of categories; items are spread evenly over them.
    pub categories: u64,
    /// Number of taste clusters; each user prefers the categories of one cluster.
    pub clusters: u64,
    /// Zipf exponent of item popularity within a category.
    pub zipf: f64,
    /// Share of a user's events that follow their cluster's taste (the rest are random).
    pub taste: f64,
    /// Mean number of events in a session.
    pub session_events: u64,
    /// Events per second of wall-clock time; 0 produces as fast as possible.
    pub rate: u64,
    /// Event-time distance between consecutive events.
    pub spacing: Span,
    /// Largest event-time jitter; events arrive out of order by up to this much.
    pub jitter: Span,
    /// Event time of the first event, in milliseconds since the Unix epoch.
    pub start_ms: u64,
}

impl Default for SynthSpec {
    fn default() -> Self {
        SynthSpec {
            seed: 42,
            users: 10_000,
            items: 5_000,
            categories: 50,
            clusters: 10,
            zipf: 1.0,
            taste: 0.8,
            session_events: 8,
            rate: 0,
            spacing: Span(100),
            jitter: Span(2_000),
            start_ms: 1_700_000_000_000,
        }
    }
}

impl SynthSpec {
    /// Checks `[source.synth]`: at least one of everything, no more categories than items, a
    /// usable Zipf exponent and taste share, sessions of at least one event.
    fn validate(&self, origin: &str) -> Result<(), SpecError> {
        let bad = rejecting(origin);
        if self.users == 0 || self.items == 0 || self.categories == 0 || self.clusters == 0 {
            return bad("source.synth", "users, items, categories and clusters must all be at least 1".into());
        }
        if self.categories > self.items {
            return bad(
                "source.synth.categories",
                "more categories than items; lower categories or raise items".into(),
            );
        }
        if !(self.zipf.is_finite() && self.zipf >= 0.0) {
            return bad("source.synth.zipf", "must be a number >= 0 (1.0 is classic Zipf)".into());
        }
        if !(0.0..=1.0).contains(&self.taste) {
            return bad("source.synth.taste", "must lie between 0 and 1".into());
        }
        if self.session_events == 0 {
            return bad("source.synth.session_events", "must be at least 1".into());
        }
        Ok(())
    }
}
