//! `recflow produce`: writes a file's events to a Kafka topic the way an application would, keyed
//! by user so each user's events stay in order within one partition.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::KafkaAddress;
use crate::decode::Decoder;
use crate::metrics::Metrics;
use crate::sink::{KafkaDestination, SinkError};
use crate::spec::SourceSpec;

/// How each line becomes a message payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProduceFormat {
    /// The line exactly as it is (the consuming pipeline's `payload` must match the file).
    Raw,
    /// The decoded event as a JSON object with the default field names, `ts` in the layout's unit.
    Json,
    /// The decoded event in bincode (`payload = "bincode"`).
    Bincode,
}

impl std::str::FromStr for ProduceFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "raw" => Ok(ProduceFormat::Raw),
            "json" => Ok(ProduceFormat::Json),
            "bincode" => Ok(ProduceFormat::Bincode),
            other => Err(format!("`{other}` is not a payload format; use raw, json or bincode")),
        }
    }
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
            Ok(event) => {
                let payload = match options.format {
                    ProduceFormat::Raw => line,
                    ProduceFormat::Json => serde_json::to_vec(&serde_json::json!({
                        "user": event.user, "item": event.item, "category": event.category,
                        "action": event.action.name(),
                        "value": event.value.map(|v| v as f64 / crate::event::MILLI as f64),
                        "ts": event.ts / layout.timestamp_unit.scale(),
                    }))
                    .map_err(|e| ProduceError::Sink(SinkError::Encode(e.to_string())))?,
                    ProduceFormat::Bincode => {
                        bincode::serialize(&event).map_err(|e| ProduceError::Sink(SinkError::Encode(e.to_string())))?
                    }
                };
                (Some(event.user.to_string().into_bytes()), payload)
            }
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
