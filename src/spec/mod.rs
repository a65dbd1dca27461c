//! The pipeline file: serde structs for the TOML a user writes, their defaults, and `validate()`.
//!
//! Unknown keys are rejected, and every error names the file, the key and what to write instead.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

use crate::event::{Action, Millis, Thousandths, THOUSANDTHS_PER_UNIT};
use crate::kafka::address::{reserved_option, KafkaAddress, Role, SCHEME};

/// A span of time written as a number and a unit: `500ms`, `30s`, `5m`, `1h`, `7d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Span(pub Millis);

impl Span {
    /// The span in milliseconds.
    pub fn millis(self) -> Millis {
        self.0
    }

    /// Parses a span, or the keyword `word` (`None`), for settings such as `long_term = "all"`.
    fn parse_or<'de, D: Deserializer<'de>>(deserializer: D, word: &str) -> Result<Option<Span>, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.trim() == word {
            return Ok(None);
        }
        Span::parse(&text).map(Some).map_err(|e| serde::de::Error::custom(format!("{e}, or `{word}`")))
    }

    /// Parses `500ms`, `30s`, `5m`, `1h` or `7d`.
    pub fn parse(text: &str) -> Result<Span, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number.parse().map_err(|_| {
            format!("`{text}` is not a duration; write a whole number and a unit, such as `30s`, `5m`, `1h`")
        })?;
        let scale = match unit.trim() {
            "ms" => 1,
            "s" => 1_000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            other => return Err(format!("`{text}` has unit `{other}`; use one of ms, s, m, h, d (for example `5m`)")),
        };
        match number.checked_mul(scale) {
            Some(ms) if ms <= Span::LONGEST.0 => Ok(Span(ms)),
            _ => Err(format!("`{text}` is too long a duration; the longest is {}, 10,000 years", Span::LONGEST)),
        }
    }

    /// The longest duration (10,000 years): event times (at most the end of the year 9999) plus
    /// a few durations stay far from the end of 64-bit milliseconds.
    pub const LONGEST: Span = Span(3_650_000 * 86_400_000);
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        for (unit, scale) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
            if ms != 0 && ms.is_multiple_of(scale) {
                return write!(f, "{}{unit}", ms / scale);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Span::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A whole pipeline file.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// A name for logs and metrics.
    #[serde(default = "default_name")]
    pub name: String,
    /// Where events come from and how they are decoded.
    #[serde(default)]
    pub source: SourceSpec,
    /// Event-time settings: ticks, watermark, lateness.
    #[serde(default)]
    pub time: TimeSpec,
    /// How much each action counts towards a preference.
    #[serde(default)]
    pub weights: Weights,
    /// Personalised recommendations; absent means the pipeline computes none.
    pub recommend: Option<RecommendSpec>,
    /// Windowed hot-item lists; absent means the pipeline computes none.
    pub hot_items: Option<HotItemsSpec>,
    /// Where results and rejected records go.
    #[serde(default)]
    pub output: OutputSpec,
    /// The HTTP/SSE server inside `recflow run`; absent means no server (unless `--serve`).
    pub serve: Option<ServeSpec>,
}

fn default_name() -> String {
    "recflow".to_string()
}

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

/// The `[time]` table.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TimeSpec {
    /// Granularity of the dataflow's timestamps: results are emitted once per tick of event time.
    pub tick: Span,
    /// How far behind the largest event time seen the watermark trails.
    pub max_out_of_orderness: Span,
    /// How far behind the watermark an event may still arrive and update results.
    pub allowed_lateness: Span,
    /// How far beyond the largest event time seen an event may lie before it must be confirmed
    /// by the records after it (see [`crate::event_time::FutureHold`]).
    pub max_future: FutureBound,
}

impl Default for TimeSpec {
    fn default() -> Self {
        TimeSpec {
            tick: Span(1_000),
            max_out_of_orderness: Span(5_000),
            allowed_lateness: Span(0),
            max_future: FutureBound::Ahead(Span(3_600_000)),
        }
    }
}

impl TimeSpec {
    /// Checks `[time]`: a positive tick that is a whole number of the input's timestamp `unit`,
    /// and a positive `max_future` unless it is off.
    pub(super) fn validate(&self, origin: &str, unit: TimeUnit) -> Result<(), SpecError> {
        let bad = rejecting(origin);
        let tick = self.tick.millis();
        if tick == 0 {
            return bad("time.tick", "must be positive, such as \"1s\"".into());
        }
        if self.max_future.millis() == Some(0) {
            return bad("time.max_future", "must be positive, such as \"1h\", or \"off\"".into());
        }
        if !tick.is_multiple_of(unit.scale()) {
            return bad("time.tick", "must be a whole number of seconds when source.timestamp_unit = \"s\"".into());
        }
        Ok(())
    }
}

/// `time.max_future`: `off`, or how far ahead an event may jump without confirmation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum FutureBound {
    /// Any timestamp moves the watermark at once.
    Off,
    /// Events further than this beyond the largest event time seen wait for confirmation.
    Ahead(Span),
}

impl FutureBound {
    /// The bound in milliseconds, if there is one.
    pub fn millis(&self) -> Option<Millis> {
        match self {
            FutureBound::Off => None,
            FutureBound::Ahead(span) => Some(span.millis()),
        }
    }
}

impl<'de> Deserialize<'de> for FutureBound {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Span::parse_or(deserializer, "off")?.map_or(FutureBound::Off, FutureBound::Ahead))
    }
}

/// The `[weights]` table: how much each action counts.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Weights {
    /// Weight of a view.
    pub view: f64,
    /// Weight of adding to cart.
    pub cart: f64,
    /// Weight of a favourite.
    pub fav: f64,
    /// Weight of a purchase.
    pub buy: f64,
    /// Weight per rating point of a rating (a 4-star rating counts `4 * rate`).
    pub rate: f64,
    /// Ratings count from this point up: a rating `v` weighs `rate * (v - rating_offset)`, and
    /// nothing at or below the offset (0 counts every rating point).
    pub rating_offset: f64,
}

/// The largest action weight (`[weights]`); with [`crate::event::MAX_VALUE`] it bounds what one
/// event can add to a preference.
pub const MAX_WEIGHT: f64 = 1000.0;

/// The largest number of seeds per user (`recommend.top_preferences`); with
/// [`crate::dataflow::preference::MAX_SEED_WEIGHT`] it bounds every score.
pub const MAX_SEEDS: usize = 10_000;

impl Default for Weights {
    fn default() -> Self {
        Weights { view: 1.0, cart: 3.0, fav: 2.0, buy: 5.0, rate: 1.0, rating_offset: 0.0 }
    }
}

impl Weights {
    /// The weight of an action in thousandths, before any rating value is applied.
    pub fn thousandths(&self, action: Action) -> Thousandths {
        let w = match action {
            Action::View => self.view,
            Action::Cart => self.cart,
            Action::Fav => self.fav,
            Action::Buy => self.buy,
            Action::Rate => self.rate,
        };
        to_thousandths(w)
    }

    /// Checks `[weights]`: every action weight between 0 and [`MAX_WEIGHT`], the rating offset
    /// between 0 and the largest value.
    pub(super) fn validate(&self, origin: &str) -> Result<(), SpecError> {
        let bad = rejecting(origin);
        for (key, w) in [
            ("weights.view", self.view),
            ("weights.cart", self.cart),
            ("weights.fav", self.fav),
            ("weights.buy", self.buy),
            ("weights.rate", self.rate),
        ] {
            if !(w.is_finite() && (0.0..=MAX_WEIGHT).contains(&w)) {
                return bad(key, format!("{w} is not a weight; use a number between 0 and {MAX_WEIGHT}"));
            }
        }
        let offset = self.rating_offset;
        if !(offset.is_finite() && (0.0..=crate::event::MAX_VALUE as f64).contains(&offset)) {
            return bad(
                "weights.rating_offset",
                format!("{offset} is not a rating offset; use a number between 0 and {}", crate::event::MAX_VALUE),
            );
        }
        Ok(())
    }
}

/// Rounds a decimal to thousandths.
pub fn to_thousandths(x: f64) -> Thousandths {
    (x * THOUSANDTHS_PER_UNIT as f64).round() as Thousandths
}

/// The short-term window over which recent preferences are summed.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ShortTermWindow {
    /// Events of the last `size` of event time.
    Sliding {
        /// Window length.
        size: Span,
    },
    /// Events of the current fixed window `[k*size, (k+1)*size)` since the epoch.
    Tumbling {
        /// Window length.
        size: Span,
    },
    /// Events of the user's current session: their latest event and every earlier one reached
    /// through gaps shorter than `gap`; the session closes `gap` after its last event.
    Session {
        /// Inactivity that ends a session.
        gap: Span,
    },
}

/// The long-term horizon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Horizon {
    /// Everything ever seen.
    All,
    /// Events younger than this.
    Retention(Span),
}

impl<'de> Deserialize<'de> for Horizon {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Span::parse_or(deserializer, "all")?.map_or(Horizon::All, Horizon::Retention))
    }
}

/// Similarity measure between items.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Measure {
    /// co(i,j) / sqrt(n_i * n_j)
    Cosine,
    /// co(i,j) / (n_i + n_j - co(i,j))
    Jaccard,
}

/// Which items a user never gets recommended.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Exclude {
    /// Items the user has any event with in the long-term horizon.
    Seen,
    /// Items the user bought in the long-term horizon.
    Bought,
    /// No exclusion.
    None,
}

/// Which of a user's items seed their scores.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Seeds {
    /// The `top_preferences` items with the highest blended preference, weighted by it.
    Preference,
    /// The `top_preferences` most recently touched items with a positive preference, the `r`-th
    /// most recent weighted by its preference times `recency_decay^r`.
    Recent,
}

/// Which pairs of a user's items count as co-occurring.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CoOccurrence {
    /// Every pair within the user's current `history` most recently touched items: a pair
    /// leaves when one of its items slides out of the history.
    History,
    /// Pairs accumulate over the long-term horizon: an item the user starts touching pairs with
    /// each of the `history` items they started touching just before it, and the pair counts
    /// while both stay in the horizon.
    Horizon,
}

/// The `[recommend]` table.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RecommendSpec {
    /// Length of each user's list.
    pub k: usize,
    /// The short-term window.
    pub short_term: ShortTermWindow,
    /// The long-term horizon: `"all"` or a retention such as `"30d"`.
    pub long_term: Horizon,
    /// Weight of the short-term preference in the blend.
    pub alpha: f64,
    /// Weight of the long-term preference in the blend.
    pub beta: f64,
    /// How many of a user's items seed their scores (M).
    pub top_preferences: usize,
    /// Which items seed a user's scores: the most preferred or the most recent.
    pub seeds: Seeds,
    /// With `seeds = "recent"`: each older seed's weight relative to the next more recent one.
    pub recency_decay: f64,
    /// Which items are never recommended to a user.
    pub exclude: Exclude,
    /// How many of each user's most recent items count for co-occurrence.
    pub history: usize,
    /// Which pairs of a user's items co-occur: within the current history, or accumulated over
    /// the long-term horizon.
    pub co_occurrence: CoOccurrence,
    /// With horizon co-occurrence: a pair of items entered `d` apart counts `pair_decay^(d-1)`
    /// (1 counts every pair alike).
    pub pair_decay: f64,
    /// The item-to-item similarity.
    pub similarity: SimilaritySpec,
    /// Window of the popularity fallback (item event counts over the last `popular_window`).
    pub popular_window: Span,
    /// How much an item's popularity adds to its score: each item of the popular pool gains
    /// `popularity_prior * W * count / top_count`, `W` being the user's total seed weight (0 adds
    /// nothing; the pool then only fills short lists).
    pub popularity_prior: f64,
    /// Re-ranks each list for variety (maximal marginal relevance): `0` ranks by score alone; `d`
    /// picks, among the `4k` best candidates, the item with the best `(1 - d) * relevance - d *
    /// (similarity to the items already listed)`.
    pub diversity: f64,
    /// Demotes the head: an item of the popular pool loses `long_tail * count / top_count` of its
    /// score before ranking (0 changes nothing; 1 takes the most popular item's whole score).
    pub long_tail: f64,
}

impl Default for RecommendSpec {
    fn default() -> Self {
        RecommendSpec {
            k: 10,
            short_term: ShortTermWindow::Sliding { size: Span(3_600_000) },
            long_term: Horizon::All,
            alpha: 0.7,
            beta: 0.3,
            top_preferences: 20,
            seeds: Seeds::Preference,
            recency_decay: 0.8,
            exclude: Exclude::Seen,
            history: 50,
            co_occurrence: CoOccurrence::History,
            pair_decay: 1.0,
            similarity: SimilaritySpec::default(),
            popular_window: Span(3_600_000),
            popularity_prior: 0.0,
            diversity: 0.0,
            long_tail: 0.0,
        }
    }
}

impl RecommendSpec {
    /// Checks `[recommend]` and `[recommend.similarity]`; `tick` is `time.tick`, already checked
    /// to be positive, which the similarity's refresh must be a multiple of.
    pub(super) fn validate(&self, origin: &str, tick: Span) -> Result<(), SpecError> {
        let bad = rejecting(origin);
        if self.k == 0 {
            return bad("recommend.k", "must be at least 1".into());
        }
        let (key, size) = match self.short_term {
            ShortTermWindow::Sliding { size } | ShortTermWindow::Tumbling { size } => {
                ("recommend.short_term.size", size)
            }
            ShortTermWindow::Session { gap } => ("recommend.short_term.gap", gap),
        };
        if size.millis() == 0 {
            return bad(key, "must be positive, such as \"30m\"".into());
        }
        if self.long_term == Horizon::Retention(Span(0)) {
            return bad(
                "recommend.long_term",
                "a zero retention keeps nothing; use \"all\" or a duration such as \"30d\"".into(),
            );
        }
        for (key, x) in [("recommend.alpha", self.alpha), ("recommend.beta", self.beta)] {
            if !(x.is_finite() && (0.0..=1000.0).contains(&x)) {
                return bad(key, format!("{x} is not a blend weight; use a number between 0 and 1000"));
            }
        }
        if self.alpha == 0.0 && self.beta == 0.0 {
            return bad("recommend.alpha", "alpha and beta are both 0, so every preference is 0; raise one".into());
        }
        if !(1..=MAX_SEEDS).contains(&self.top_preferences) {
            return bad("recommend.top_preferences", format!("must be between 1 and {MAX_SEEDS}"));
        }
        self.validate_pairs(origin)?;
        self.similarity.validate_neighbourhood(origin, tick)?;
        self.validate_ranking(origin)?;
        self.similarity.validate_shape(origin)
    }

    /// Checks how seeds and pairs are weighted (`recency_decay`, `pair_decay`) and the `history`
    /// that pairs are drawn from.
    fn validate_pairs(&self, origin: &str) -> Result<(), SpecError> {
        let bad = rejecting(origin);
        for (key, decay, example, alike) in [
            ("recommend.recency_decay", self.recency_decay, 0.8, "weights all seeds alike"),
            ("recommend.pair_decay", self.pair_decay, 0.95, "counts every pair alike"),
        ] {
            if !(decay > 0.0 && decay <= 1.0) {
                return bad(
                    key,
                    format!("{decay} is not a decay; use a number in (0, 1], such as {example} (1 {alike})"),
                );
            }
        }
        if self.history < 2 && self.co_occurrence == CoOccurrence::History {
            return bad("recommend.history", "co-occurrence within a history needs at least 2 items per user".into());
        }
        if self.pair_decay != 1.0 && self.co_occurrence == CoOccurrence::History {
            return bad(
                "recommend.pair_decay",
                "weights pairs by how far apart they entered, which only co_occurrence = \"horizon\" counts; set that or remove pair_decay".into(),
            );
        }
        if self.history == 0 {
            return bad(
                "recommend.history",
                "an item must pair with at least the one entered before it; use 1 or more".into(),
            );
        }
        Ok(())
    }

    /// Checks what ranks a list beyond similarity: the popularity window and prior, diversity and
    /// the long-tail demotion.
    fn validate_ranking(&self, origin: &str) -> Result<(), SpecError> {
        let bad = rejecting(origin);
        if self.popular_window.millis() == 0 {
            return bad("recommend.popular_window", "must be positive, such as \"1h\"".into());
        }
        if !(self.popularity_prior.is_finite() && (0.0..=1000.0).contains(&self.popularity_prior)) {
            return bad(
                "recommend.popularity_prior",
                format!(
                    "{} is not a prior weight; use a number between 0 and 1000, such as 0.1",
                    self.popularity_prior
                ),
            );
        }
        if !(self.diversity >= 0.0 && self.diversity < 1.0) {
            return bad(
                "recommend.diversity",
                format!(
                    "{} is not a trade-off in [0, 1); 0 ranks by score alone, 0.3 trades some score for variety",
                    self.diversity
                ),
            );
        }
        if !(self.long_tail >= 0.0 && self.long_tail <= 1.0) {
            return bad(
                "recommend.long_tail",
                format!(
                    "{} is not a share in [0, 1]; 0 changes nothing, 0.5 halves the top item's score",
                    self.long_tail
                ),
            );
        }
        Ok(())
    }
}

/// The `[recommend.similarity]` table.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SimilaritySpec {
    /// `cosine` or `jaccard`.
    pub measure: Measure,
    /// Least number of users two items must share.
    pub min_support: u64,
    /// Neighbours kept per item (N).
    pub neighbours: usize,
    /// Event-time cadence at which the similarity arrangement refreshes.
    pub refresh: Span,
    /// The exponent `a` of the asymmetric cosine `c(i, j) / (n_i^a * n_j^(1 - a))` from seed `i`
    /// to neighbour `j`: 0.5 is the cosine; lower damps popular neighbours, higher favours them
    /// (1 is the share of `i`'s users who also touched `j`).
    pub asymmetry: f64,
    /// Shrinks the similarity of pairs with little support: times `c / (c + shrinkage)`, `c` the
    /// pair's co-occurrence in users (0 leaves it as it is).
    pub shrinkage: f64,
    /// Keeps only pairs that co-occur more than chance would have them: Dunning's log-likelihood
    /// ratio of the pair's 2x2 table of users must reach it (3.84, 6.63 and 10.83 are the
    /// chi-square critical values for p = 0.05, 0.01 and 0.001; 0 keeps every pair).
    pub min_llr: f64,
}

impl SimilaritySpec {
    /// Checks `neighbours` and `min_support` (at least 1) and `refresh` (a positive multiple of
    /// `tick`, which is `time.tick`).
    fn validate_neighbourhood(&self, origin: &str, tick: Span) -> Result<(), SpecError> {
        let bad = rejecting(origin);
        if self.neighbours == 0 {
            return bad("recommend.similarity.neighbours", "must be at least 1".into());
        }
        if self.min_support == 0 {
            return bad("recommend.similarity.min_support", "must be at least 1".into());
        }
        if self.refresh.millis() == 0 || !self.refresh.millis().is_multiple_of(tick.millis()) {
            return bad(
                "recommend.similarity.refresh",
                format!("must be a positive multiple of time.tick ({tick}), such as \"60s\""),
            );
        }
        Ok(())
    }

    /// Checks `asymmetry` (in (0, 1], and only with the cosine), `shrinkage` and `min_llr`.
    fn validate_shape(&self, origin: &str) -> Result<(), SpecError> {
        let bad = rejecting(origin);
        let a = self.asymmetry;
        if !(a > 0.0 && a <= 1.0) {
            return bad(
                "recommend.similarity.asymmetry",
                format!("{a} is not an exponent in (0, 1]; use 0.5 for the cosine, lower to damp popular items"),
            );
        }
        if !(self.shrinkage.is_finite() && (0.0..=1_000_000.0).contains(&self.shrinkage)) {
            return bad(
                "recommend.similarity.shrinkage",
                format!(
                    "{} is not a shrinkage; use a number of users between 0 and 1000000, such as 10",
                    self.shrinkage
                ),
            );
        }
        if !(self.min_llr.is_finite() && (0.0..=1_000_000.0).contains(&self.min_llr)) {
            return bad(
                "recommend.similarity.min_llr",
                format!(
                    "{} is not a log-likelihood ratio; use a number between 0 (off) and 1000000, such as 10.83 (p = 0.001)",
                    self.min_llr
                ),
            );
        }
        if a != 0.5 && self.measure != Measure::Cosine {
            return bad(
                "recommend.similarity.asymmetry",
                "shapes the cosine only; set measure = \"cosine\" or remove asymmetry".into(),
            );
        }
        Ok(())
    }
}

impl Default for SimilaritySpec {
    fn default() -> Self {
        SimilaritySpec {
            measure: Measure::Cosine,
            min_support: 2,
            neighbours: 20,
            refresh: Span(60_000),
            asymmetry: 0.5,
            shrinkage: 0.0,
            min_llr: 0.0,
        }
    }
}

/// The `[hot_items]` table.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HotItemsSpec {
    /// Which actions count.
    pub actions: Vec<Action>,
    /// Window length (S).
    pub size: Span,
    /// Distance between window starts (L); windows are tumbling when equal to `size`.
    pub slide: Span,
    /// Items per list.
    pub top_n: usize,
    /// One list per (window, category) instead of per window.
    pub per_category: bool,
}

impl Default for HotItemsSpec {
    fn default() -> Self {
        HotItemsSpec {
            actions: vec![Action::View],
            size: Span(3_600_000),
            slide: Span(300_000),
            top_n: 3,
            per_category: false,
        }
    }
}

impl HotItemsSpec {
    /// Checks `[hot_items]`: some action counted, a slide that is a positive multiple of `tick`
    /// (`time.tick`), a size that is a whole multiple of the slide (at most 10000 slides), and
    /// lists of at least one item.
    pub(super) fn validate(&self, origin: &str, tick: Span) -> Result<(), SpecError> {
        let bad = rejecting(origin);
        if self.actions.is_empty() {
            return bad("hot_items.actions", "lists no action; use e.g. [\"view\"]".into());
        }
        if self.slide.millis() == 0 || !self.slide.millis().is_multiple_of(tick.millis()) {
            return bad(
                "hot_items.slide",
                format!("must be a positive multiple of time.tick ({tick}), such as \"5m\""),
            );
        }
        if self.size.millis() < self.slide.millis() || !self.size.millis().is_multiple_of(self.slide.millis()) {
            return bad(
                "hot_items.size",
                format!("must be a whole multiple of slide ({}); got {}", self.slide, self.size),
            );
        }
        if self.size.millis() / self.slide.millis() > 10_000 {
            return bad("hot_items.size", "more than 10000 slides per window; raise slide".into());
        }
        if self.top_n == 0 {
            return bad("hot_items.top_n", "must be at least 1".into());
        }
        Ok(())
    }
}

/// The `[output]` table.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutputSpec {
    /// Where the changelog goes: a path, or `-` for standard output.
    pub path: String,
    /// Where rejected and late records go: a path, `-` for standard output, `stderr`.
    pub dead_letter: String,
    /// Seconds between status lines on standard error; 0 turns them off.
    pub status_interval_secs: u64,
    /// librdkafka producer properties for `kafka://` outputs, passed through as they are.
    pub kafka_options: BTreeMap<String, String>,
    /// Fail the run (exit non-zero) when more than this share of the records read, in (0, 1],
    /// were rejected or late; none: never.
    pub max_rejected_share: Option<f64>,
}

impl Default for OutputSpec {
    fn default() -> Self {
        OutputSpec {
            path: "-".into(),
            dead_letter: "stderr".into(),
            status_interval_secs: 5,
            kafka_options: BTreeMap::new(),
            max_rejected_share: None,
        }
    }
}

impl OutputSpec {
    /// Checks `[output]`: a path, well-formed `kafka://` destinations, no reserved producer
    /// option, and a rejected share in (0, 1] if there is one.
    pub(super) fn validate(&self, origin: &str) -> Result<(), SpecError> {
        let bad = rejecting(origin);
        if self.path.is_empty() {
            return bad("output.path", "is empty; use a file path or \"-\" for standard output".into());
        }
        for (key, destination) in [("output.path", &self.path), ("output.dead_letter", &self.dead_letter)] {
            if destination.starts_with(SCHEME) {
                if let Err(problem) = KafkaAddress::parse(destination) {
                    return bad(key, problem);
                }
            }
        }
        if let Some(problem) = reserved_option(&self.kafka_options, Role::Producer) {
            return bad("output.kafka_options", problem);
        }
        if let Some(share) = self.max_rejected_share.filter(|share| !(*share > 0.0 && *share <= 1.0)) {
            return bad(
                "output.max_rejected_share",
                format!(
                    "{share} is not a share of the records; use a number in (0, 1], such as 0.05 to fail a run \
                     that rejects more than 5% of its records, or remove the key to never fail for rejections"
                ),
            );
        }
        Ok(())
    }
}

/// How long the server keeps answering after a finite input has ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Linger {
    /// This long (`"0s"`: the process exits with the run).
    For(Span),
    /// Until Ctrl-C or SIGTERM (`"forever"`).
    Forever,
}

impl Serialize for Linger {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Linger::For(span) => span.serialize(serializer),
            Linger::Forever => serializer.serialize_str("forever"),
        }
    }
}

impl Linger {
    /// Parses a duration such as `30s`, or `forever`.
    pub fn parse(text: &str) -> Result<Linger, String> {
        if text.trim() == "forever" {
            return Ok(Linger::Forever);
        }
        Span::parse(text).map(Linger::For).map_err(|e| format!("{e}, or \"forever\" to serve until Ctrl-C"))
    }
}

impl<'de> Deserialize<'de> for Linger {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Linger::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The `[serve]` table: the HTTP/SSE server of `recflow run` (also turned on by `--serve ADDR`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServeSpec {
    /// Address to listen on, `host:port`; port 0 picks a free port (the address is printed).
    pub addr: String,
    /// Bearer token required by mutating endpoints (`POST /v1/events`, `DELETE /v1/users/{user}`);
    /// none: no token needed.
    pub token: Option<String>,
    /// Name of an environment variable holding the bearer token, instead of `token`.
    pub token_env: Option<String>,
    /// Bearer token required by reading endpoints (`/v1/...` queries and subscriptions,
    /// explanations included, `/v1/status`, `/metrics`), which also take `token`; none: reads
    /// are open. `/healthz` and the dashboard page itself are always open.
    pub read_token: Option<String>,
    /// Name of an environment variable holding the read token, instead of `read_token`.
    pub read_token_env: Option<String>,
    /// Largest accepted request body, in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Update batches buffered per subscriber; a subscriber further behind is told it lagged and
    /// is disconnected.
    pub client_buffer: usize,
    /// Wall-clock interval between `progress` events on subscriptions.
    pub progress_interval: Span,
    /// How long to keep serving after a finite input ended: a duration, or `"forever"` (until
    /// Ctrl-C or SIGTERM).
    pub linger: Linger,
    /// Closed hot-items windows kept for `GET /v1/hot-items?window_end=T` (the oldest go first).
    pub hot_windows: usize,
    /// Whether `DELETE /v1/users/{user}` can forget users. Forgetting keeps every accepted event
    /// until the last window holding it closes, which costs memory; `false` turns that off.
    pub forget: bool,
    /// Whether lists keep their explanations for `GET .../recommendations?explain=true`; they cost
    /// some work and memory per list change.
    pub explain: bool,
    /// Whether an address beyond this machine may be served without a token: anyone who can
    /// reach it could then post events and forget users.
    pub allow_unauthenticated: bool,
    /// Subscribers connected at once, at most; more get 503 with `Retry-After`.
    pub max_subscribers: usize,
    /// Posted events waiting for the pipeline, at most; a post beyond gets 503 with `Retry-After`.
    pub max_queued_events: usize,
    /// HTTP connections open at once, at most (subscriptions included); one beyond gets 503 with
    /// `Retry-After` and is closed.
    pub max_connections: usize,
    /// How long a client has to send a request's whole head (request line and headers) once the
    /// server waits for it; also how long an idle keep-alive connection stays open.
    pub header_timeout: Span,
}

/// The address `--serve` and `[serve]` listen on unless told otherwise: loopback only.
pub const DEFAULT_SERVE_ADDR: &str = "127.0.0.1:8080";

impl Default for ServeSpec {
    fn default() -> Self {
        ServeSpec {
            addr: DEFAULT_SERVE_ADDR.into(),
            token: None,
            token_env: None,
            read_token: None,
            read_token_env: None,
            max_body_bytes: 1 << 20,
            client_buffer: 1024,
            progress_interval: Span(1_000),
            linger: Linger::For(Span(0)),
            hot_windows: 1024,
            forget: true,
            explain: true,
            allow_unauthenticated: false,
            max_subscribers: 10_000,
            max_queued_events: 100_000,
            max_connections: 11_000,
            header_timeout: Span(10_000),
        }
    }
}

/// Whether `addr` (`IP:PORT` or `localhost:PORT`) is reachable from this machine only.
pub fn is_loopback(addr: &str) -> bool {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(addr) => addr.ip().is_loopback(),
        Err(_) => addr.rsplit_once(':').is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost")),
    }
}

impl ServeSpec {
    /// Checks `[serve]`: the address, the tokens, the limits and timeouts, a linger of at most a
    /// year.
    pub(super) fn validate(&self, origin: &str) -> Result<(), SpecError> {
        let bad = rejecting(origin);
        if self.addr.parse::<std::net::SocketAddr>().is_err() {
            return bad(
                "serve.addr",
                format!("`{}` is not an address; write IP:PORT, such as \"{DEFAULT_SERVE_ADDR}\"", self.addr),
            );
        }
        self.validate_tokens(origin)?;
        if self.max_body_bytes == 0 {
            return bad("serve.max_body_bytes", "must be at least 1, such as 1048576".into());
        }
        if self.max_queued_events == 0 {
            return bad("serve.max_queued_events", "must be at least 1, such as 100000".into());
        }
        if self.max_subscribers == 0 {
            return bad("serve.max_subscribers", "must be at least 1, such as 10000".into());
        }
        if self.max_connections <= self.max_subscribers {
            return bad(
                "serve.max_connections",
                format!(
                    "{} leaves no connection for queries once serve.max_subscribers ({}) subscribe; \
                     raise it above that, such as {}",
                    self.max_connections,
                    self.max_subscribers,
                    self.max_subscribers + 1000
                ),
            );
        }
        if self.header_timeout.millis() == 0 {
            return bad("serve.header_timeout", "must be positive, such as \"10s\"".into());
        }
        if !(1..=1_000_000).contains(&self.client_buffer) {
            return bad("serve.client_buffer", "must lie between 1 and 1000000, such as 1024".into());
        }
        if self.progress_interval.millis() == 0 {
            return bad("serve.progress_interval", "must be positive, such as \"1s\"".into());
        }
        if self.hot_windows == 0 {
            return bad("serve.hot_windows", "must be at least 1, such as 1024".into());
        }
        if let Linger::For(span) = self.linger {
            if span.millis() > 366 * 86_400_000 {
                return bad("serve.linger", "is longer than a year; write \"forever\" to serve until Ctrl-C".into());
            }
        }
        Ok(())
    }

    /// Checks the tokens: each given once (in the file or through a variable), none empty, and one
    /// required where the address is reachable beyond this machine, unless that is allowed.
    fn validate_tokens(&self, origin: &str) -> Result<(), SpecError> {
        let bad = rejecting(origin);
        for (key, token, token_env, example) in [
            ("serve.token", &self.token, &self.token_env, "RECFLOW_TOKEN"),
            ("serve.read_token", &self.read_token, &self.read_token_env, "RECFLOW_READ_TOKEN"),
        ] {
            match (token, token_env) {
                (Some(_), Some(_)) => {
                    return bad(key, format!("set either {key} or {key}_env, not both"));
                }
                (Some(token), None) if token.trim().is_empty() => {
                    return bad(key, "is empty; remove it to need no token, or set a secret".into());
                }
                (None, Some(name)) if name.trim().is_empty() || name.contains('=') => {
                    return bad(&format!("{key}_env"), format!("name an environment variable, such as \"{example}\""));
                }
                _ => {}
            }
        }
        if !is_loopback(&self.addr) && self.token.is_none() && self.token_env.is_none() && !self.allow_unauthenticated {
            return bad(
                "serve.token",
                format!(
                    "serve.addr {} is reachable beyond this machine, where anyone could post events and forget \
                     users: set serve.token or serve.token_env, listen on 127.0.0.1, or set \
                     serve.allow_unauthenticated = true if that is intended",
                    self.addr
                ),
            );
        }
        Ok(())
    }

    /// The bearer token: `token`, or the value of the variable `token_env` names.
    pub fn resolve_token(&self) -> Result<Option<String>, String> {
        resolve("serve.token_env", &self.token, &self.token_env)
    }

    /// The read token, from `read_token` or the variable `read_token_env` names.
    pub fn resolve_read_token(&self) -> Result<Option<String>, String> {
        resolve("serve.read_token_env", &self.read_token, &self.read_token_env)
    }
}

/// A secret given in the file or through the environment variable `env` names (`key`).
fn resolve(key: &str, given: &Option<String>, env: &Option<String>) -> Result<Option<String>, String> {
    match (given, env) {
        (Some(token), _) => Ok(Some(token.clone())),
        (None, Some(name)) => match std::env::var(name) {
            Ok(token) if !token.trim().is_empty() => Ok(Some(token)),
            _ => Err(format!("{key} names {name}, which is not set or empty")),
        },
        (None, None) => Ok(None),
    }
}

/// A pipeline file that cannot be used, with the file, the key and the fix.
#[derive(Debug, Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("pipeline {path}: cannot read the file: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type.
    #[error("pipeline {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, which names the key.
        message: String,
    },
    /// A value is well-typed but unusable.
    #[error("pipeline {path}: key `{key}`: {problem}")]
    Invalid {
        /// The file.
        path: String,
        /// The dotted key.
        key: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
}

impl Pipeline {
    /// Whether recommendation lists carry their explanations (`serve.explain`): only a server
    /// shows them. Every worker of every process must agree, since it changes what the workers
    /// exchange.
    pub fn explains(&self) -> bool {
        self.serve.as_ref().is_some_and(|spec| spec.explain)
    }

    /// Reads and validates a pipeline file.
    pub fn load(path: &Path) -> Result<Pipeline, SpecError> {
        let pipeline = Pipeline::read(path)?;
        pipeline.validate(&path.display().to_string())?;
        Ok(pipeline)
    }

    /// Reads a pipeline file without validating it, for callers that override settings first
    /// (such as `--input kafka://...`) and then call [`Pipeline::validate`].
    pub fn read(path: &Path) -> Result<Pipeline, SpecError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read { path: shown.clone(), source })?;
        toml::from_str(&text).map_err(|e| SpecError::Parse { path: shown, message: e.to_string() })
    }

    /// Parses and validates pipeline TOML; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Pipeline, SpecError> {
        let pipeline: Pipeline =
            toml::from_str(text).map_err(|e| SpecError::Parse { path: origin.to_string(), message: e.to_string() })?;
        pipeline.validate(origin)?;
        Ok(pipeline)
    }

    /// Rejects settings that parse but make no sense, naming the key and the fix. Each section
    /// checks itself, in the order of the file's sections, and gets what it needs of the others:
    /// the timestamp unit a tick must be a whole number of, the tick a refresh or a slide must be
    /// a multiple of.
    pub fn validate(&self, origin: &str) -> Result<(), SpecError> {
        if self.recommend.is_none() && self.hot_items.is_none() {
            return rejecting(origin)(
                "recommend",
                "the pipeline computes nothing; add a [recommend] table, a [hot_items] table, or both".into(),
            );
        }
        self.source.validate(origin)?;
        self.time.validate(origin, self.source.timestamp_unit)?;
        self.weights.validate(origin)?;
        if let Some(recommend) = &self.recommend {
            recommend.validate(origin, self.time.tick)?;
        }
        if let Some(hot_items) = &self.hot_items {
            hot_items.validate(origin, self.time.tick)?;
        }
        self.output.validate(origin)?;
        if let Some(serve) = &self.serve {
            serve.validate(origin)?;
        }
        Ok(())
    }
}

/// The error of the sections' checks: `rejecting(origin)(key, problem)` says that `key` of the
/// pipeline `origin` is unusable, and `problem` why and what to write instead.
fn rejecting(origin: &str) -> impl Fn(&str, String) -> Result<(), SpecError> + '_ {
    move |key, problem| Err(SpecError::Invalid { path: origin.to_string(), key: key.to_string(), problem })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_parse_and_print() {
        assert_eq!(Span::parse("5m"), Ok(Span(300_000)));
        assert_eq!(Span::parse("1h"), Ok(Span(3_600_000)));
        assert_eq!(Span::parse("250ms"), Ok(Span(250)));
        assert!(Span::parse("5 parsecs").unwrap_err().contains("unit"));
        assert!(Span::parse("m").is_err());
        assert_eq!(Span::parse("3650000d"), Ok(Span::LONGEST));
        assert!(Span::parse("3650001d").unwrap_err().contains("longest is 3650000d"));
        assert!(Span::parse("99999999999999999999d").is_err());
        assert_eq!(Span(300_000).to_string(), "5m");
    }
}
