//! `recflow produce`: writes a file's events to a Kafka topic the way an application would, keyed
//! by user so each user's events stay in order within one partition.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use thiserror::Error;

use super::{load_ignoring_source_kind, parse_file_input};
use crate::decode::Decoder;
use crate::event::{Event, THOUSANDTHS_PER_UNIT};
use crate::metrics::Metrics;
use crate::sink::{KafkaDestination, SinkError};
use crate::spec::kafka_address::KafkaAddress;
use crate::spec::{Format, Payload, SourceSpec};

/// How each line becomes a message payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProduceFormat {
    /// The line exactly as it is.
    Raw,
    /// The decoded event as a JSON object with the layout's `[source.fields]` names, `ts` in the
    /// layout's unit.
    Json,
    /// The decoded event as a CSV line in the layout's `columns`.
    Csv,
    /// The decoded event as a TSV line in the layout's `columns`.
    Tsv,
    /// The decoded event in bincode (`payload = "bincode"`).
    Bincode,
}

impl std::str::FromStr for ProduceFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "raw" => Ok(ProduceFormat::Raw),
            "json" => Ok(ProduceFormat::Json),
            "csv" => Ok(ProduceFormat::Csv),
            "tsv" => Ok(ProduceFormat::Tsv),
            "bincode" => Ok(ProduceFormat::Bincode),
            other => Err(format!("`{other}` is not a payload format; use raw, json, csv, tsv or bincode")),
        }
    }
}

impl ProduceFormat {
    /// What a pipeline whose `[source]` is `layout` decodes from Kafka ([`SourceSpec::payload`]):
    /// the lines as they are when the file is already in that format, else re-encoded.
    pub fn expected_by(layout: &SourceSpec) -> ProduceFormat {
        match (layout.payload(), layout.format) {
            (Payload::Json, Format::Jsonl) | (Payload::Csv, Format::Csv) | (Payload::Tsv, Format::Tsv) => {
                ProduceFormat::Raw
            }
            (Payload::Json, _) => ProduceFormat::Json,
            (Payload::Csv, _) => ProduceFormat::Csv,
            (Payload::Tsv, _) => ProduceFormat::Tsv,
            (Payload::Bincode, _) => ProduceFormat::Bincode,
        }
    }

    /// The name `--format` takes.
    pub fn name(self) -> &'static str {
        match self {
            ProduceFormat::Raw => "raw",
            ProduceFormat::Json => "json",
            ProduceFormat::Csv => "csv",
            ProduceFormat::Tsv => "tsv",
            ProduceFormat::Bincode => "bincode",
        }
    }

    /// The payload for `event`, decoded from `line` with `layout`.
    fn encode(self, event: &Event, line: Vec<u8>, layout: &SourceSpec) -> Result<Vec<u8>, SinkError> {
        let encoding = |e: String| SinkError::Encode(e);
        match self {
            ProduceFormat::Raw => Ok(line),
            ProduceFormat::Json => serde_json::to_vec(&json_object(event, layout)).map_err(|e| encoding(e.to_string())),
            ProduceFormat::Csv => Ok(delimited_line(event, layout, ',').into_bytes()),
            ProduceFormat::Tsv => Ok(delimited_line(event, layout, '\t').into_bytes()),
            ProduceFormat::Bincode => bincode::serialize(event).map_err(|e| encoding(e.to_string())),
        }
    }
}

/// The event as a JSON object with the layout's field names.
fn json_object(event: &Event, layout: &SourceSpec) -> serde_json::Value {
    let fields = &layout.fields;
    let mut object = serde_json::Map::new();
    object.insert(fields.user.clone(), serde_json::json!(event.user));
    object.insert(fields.item.clone(), serde_json::json!(event.item));
    object.insert(fields.category.clone(), serde_json::json!(event.category));
    object.insert(fields.action.clone(), event.action.name().into());
    object.insert(fields.value.clone(), serde_json::json!(event.value.map(|v| v as f64 / THOUSANDTHS_PER_UNIT as f64)));
    object.insert(fields.ts.clone(), (event.ts / layout.timestamp_unit.scale()).into());
    serde_json::Value::Object(object)
}

/// The event as a line of the layout's columns (`_` columns empty), quoted where needed.
fn delimited_line(event: &Event, layout: &SourceSpec, delimiter: char) -> String {
    let quoted = |text: String| {
        if text.contains([delimiter, '"', '\n', '\r']) {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text
        }
    };
    let fields: Vec<String> = layout
        .columns
        .iter()
        .map(|column| match column.as_str() {
            "user" => quoted(event.user.to_string()),
            "item" => quoted(event.item.to_string()),
            "category" => event.category.as_ref().map(|c| quoted(c.to_string())).unwrap_or_default(),
            "action" => event.action.name().to_string(),
            "value" => event.value.map(|v| (v as f64 / THOUSANDTHS_PER_UNIT as f64).to_string()).unwrap_or_default(),
            "ts" => (event.ts / layout.timestamp_unit.scale()).to_string(),
            _ => String::new(),
        })
        .collect();
    fields.join(&delimiter.to_string())
}

/// What to produce.
#[derive(Clone, Debug)]
pub struct ProduceOptions {
    /// The topic; created with `partitions` partitions when missing.
    pub to: KafkaAddress,
    /// Partitions of a topic that has to be created.
    pub partitions: usize,
    /// Messages per second; `None` as fast as possible.
    pub rate: Option<u64>,
    /// Payload encoding.
    pub format: ProduceFormat,
    /// Print progress to standard error about once a second.
    pub progress: bool,
}

/// What was produced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProduceReport {
    /// Messages delivered.
    pub delivered: u64,
    /// Lines that did not decode as events (sent as they are, without a key).
    pub undecodable: u64,
    /// Seconds taken, including waiting for the last deliveries.
    pub seconds: f64,
}

/// Producing failed.
#[derive(Debug, Error)]
pub enum ProduceError {
    /// The input cannot be read.
    #[error("cannot read {path}: {source}")]
    Input {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The topic cannot be written.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// Some messages could not be delivered.
    #[error("{0} messages could not be delivered to {1}")]
    Undelivered(u64, String),
}

/// Produces every line of `input` (`-` for standard input), decoded with the `layout` of a
/// pipeline's `[source]` to find each event's user, the message key.
pub fn produce(input: &Path, layout: &SourceSpec, options: &ProduceOptions) -> Result<ProduceReport, ProduceError> {
    let shown = input.display().to_string();
    let reader: Box<dyn Read> = if shown == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(input).map_err(|source| ProduceError::Input { path: shown.clone(), source })?)
    };
    let decoder = Decoder::new(layout);
    let skip_header = layout.header && decoder.is_delimited();
    let mut out =
        KafkaDestination::open(&options.to, &Default::default(), options.partitions, Arc::new(Metrics::default()))?;
    let started = Instant::now();
    let mut last_progress = started;
    let (mut sent, mut undecodable) = (0u64, 0u64);
    for (index, line) in BufReader::new(reader).split(b'\n').enumerate() {
        let mut line = line.map_err(|source| ProduceError::Input { path: shown.clone(), source })?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if (index == 0 && skip_header) || line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let (key, payload) = match decoder.decode_bytes(&line) {
            Ok(event) => (Some(event.user.to_string().into_bytes()), options.format.encode(&event, line, layout)?),
            Err(_) => {
                undecodable += 1;
                (None, line)
            }
        };
        out.send_message(key, Some(payload));
        sent += 1;
        out.pace(started, sent, options.rate);
        if options.progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "recflow produce: {sent} sent ({:.0}/s), {} awaiting delivery",
                sent as f64 / secs,
                out.outstanding()
            );
        }
    }
    out.wait_delivered();
    let failed = out.given_up();
    if failed > 0 {
        return Err(ProduceError::Undelivered(failed, options.to.to_string()));
    }
    Ok(ProduceReport { delivered: sent, undecodable, seconds: started.elapsed().as_secs_f64() })
}

/// `recflow produce`'s arguments.
#[derive(Args)]
pub struct ProduceArgs {
    /// The events, one per line: `file:PATH`, `PATH` or `-` (standard input).
    #[arg(long)]
    pub input: String,
    /// The topic: kafka://HOST:PORT/TOPIC (created if missing).
    #[arg(long)]
    pub to: String,
    /// A pipeline whose `[source]` describes the file's layout and the payloads it reads from
    /// Kafka (default: the built-in CSV layout user,item,category,action,ts in seconds, JSON
    /// payloads).
    #[arg(long)]
    pub pipeline: Option<PathBuf>,
    /// Payload: `raw` (each line as it is), `json`, `csv`, `tsv` or `bincode` (default: what
    /// the pipeline's source reads from Kafka).
    #[arg(long)]
    pub format: Option<ProduceFormat>,
    /// Events per second (default: as fast as possible).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Partitions of the topic, when it has to be created.
    #[arg(long, default_value_t = 1)]
    pub partitions: usize,
    /// No progress on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Produces the file `args` name to their topic and prints how it went.
pub fn main(args: ProduceArgs) -> anyhow::Result<()> {
    let to = KafkaAddress::parse(&args.to).map_err(anyhow::Error::msg).context("--to")?;
    let layout = match &args.pipeline {
        Some(path) => load_ignoring_source_kind(path)?.source,
        None => SourceSpec::default(),
    };
    let format = args.format.unwrap_or_else(|| ProduceFormat::expected_by(&layout));
    let options =
        ProduceOptions { to, partitions: args.partitions.max(1), rate: args.rate, format, progress: !args.quiet };
    let report = produce(&parse_file_input(&args.input)?, &layout, &options)?;
    let rate = report.delivered as f64 / report.seconds.max(1e-9);
    eprintln!(
        "recflow produce: {} messages delivered in {:.2}s ({rate:.0}/s) as {} payloads; \
         {} lines did not decode and were sent as they are",
        report.delivered,
        report.seconds,
        format.name(),
        report.undecodable
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{SourceKind, SourceSpec};

    fn file(format: Format) -> SourceSpec {
        SourceSpec { kind: SourceKind::File, format, ..SourceSpec::default() }
    }

    #[test]
    fn the_default_format_is_what_the_pipeline_reads_from_kafka() {
        assert_eq!(ProduceFormat::expected_by(&file(Format::Csv)), ProduceFormat::Raw);
        assert_eq!(ProduceFormat::expected_by(&file(Format::Jsonl)), ProduceFormat::Raw);
        assert_eq!(ProduceFormat::expected_by(&SourceSpec::default()), ProduceFormat::Json);
        let mut kafka = SourceSpec { kind: SourceKind::Kafka, ..SourceSpec::default() };
        assert_eq!(ProduceFormat::expected_by(&kafka), ProduceFormat::Json);
        kafka.kafka.payload = Some(Payload::Tsv);
        assert_eq!(ProduceFormat::expected_by(&kafka), ProduceFormat::Tsv);
        let mut csv_file_to_json = file(Format::Csv);
        csv_file_to_json.kafka.payload = Some(Payload::Json);
        assert_eq!(ProduceFormat::expected_by(&csv_file_to_json), ProduceFormat::Json);
    }

    #[test]
    fn re_encoded_events_decode_as_the_pipeline_reads_them() {
        let mut layout = file(Format::Jsonl);
        layout.columns = ["ts", "_", "user", "item", "value", "action"].map(String::from).to_vec();
        layout.fields.user = "uid".into();
        let line = br#"{"uid":"a,\"b\"","item":7,"value":2.5,"action":"buy","ts":1700000000}"#.to_vec();
        let event = Decoder::new(&layout).decode_bytes(&line).unwrap();
        for (format, payload) in [
            (ProduceFormat::Json, Payload::Json),
            (ProduceFormat::Csv, Payload::Csv),
            (ProduceFormat::Tsv, Payload::Tsv),
        ] {
            let encoded = format.encode(&event, line.clone(), &layout).unwrap();
            let decoded = Decoder::for_payload(&layout, payload).decode_bytes(&encoded);
            assert_eq!(decoded, Ok(event.clone()), "{}", String::from_utf8_lossy(&encoded));
        }
    }
}
