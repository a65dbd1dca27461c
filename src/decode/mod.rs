//! Turning one input record (a line of text) into a validated [`Event`] or the reason it is not one.
//!
//! Transports hand records to a [`Decoder`]; they do not know which format a record is in.

mod csv;
mod json;

use std::collections::BTreeMap;

use bincode::Options;

use crate::event::{Action, Event, Id, Millis, RejectReason, Thousandths, MAX_VALUE, THOUSANDTHS_PER_UNIT};
use crate::spec::{Format, Payload, SourceSpec, TimeUnit};

pub use self::csv::ColumnLayout;

/// Decodes records of one source's format and validates them into events.
#[derive(Clone, Debug)]
pub struct Decoder {
    syntax: Syntax,
    layout: ColumnLayout,
    fields: crate::spec::JsonFields,
    rules: Rules,
}

/// How a record is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Syntax {
    /// Fields separated by this character, in the column layout.
    Delimited(char),
    /// A JSON object.
    Json,
    /// recflow's [`Event`] in bincode (Kafka payloads only).
    Bincode,
}

/// Validation shared by all formats: actions, timestamp unit and range.
#[derive(Clone, Debug)]
struct Rules {
    aliases: BTreeMap<String, Action>,
    default_action: Option<Action>,
    unit: TimeUnit,
    min_ts: u64,
    max_ts: u64,
}

impl Decoder {
    /// A decoder for the source described by `spec`.
    pub fn new(spec: &SourceSpec) -> Decoder {
        let syntax = match spec.format {
            Format::Csv => Syntax::Delimited(','),
            Format::Tsv => Syntax::Delimited('\t'),
            Format::Jsonl => Syntax::Json,
        };
        Decoder::with_syntax(spec, syntax)
    }

    /// A decoder for Kafka message payloads of the source described by `spec`.
    pub fn for_payload(spec: &SourceSpec, payload: Payload) -> Decoder {
        let syntax = match payload {
            Payload::Json => Syntax::Json,
            Payload::Csv => Syntax::Delimited(','),
            Payload::Tsv => Syntax::Delimited('\t'),
            Payload::Bincode => Syntax::Bincode,
        };
        Decoder::with_syntax(spec, syntax)
    }

    fn with_syntax(spec: &SourceSpec, syntax: Syntax) -> Decoder {
        Decoder {
            syntax,
            layout: ColumnLayout::new(&spec.columns),
            fields: spec.fields.clone(),
            rules: Rules {
                aliases: spec.action_aliases.iter().map(|(k, v)| (k.to_ascii_lowercase(), *v)).collect(),
                default_action: spec.default_action,
                unit: spec.timestamp_unit,
                min_ts: spec.min_timestamp,
                max_ts: spec.latest_timestamp(),
            },
        }
    }

    /// Whether the first line of a CSV/TSV input is a header rather than a record.
    pub fn is_delimited(&self) -> bool {
        matches!(self.syntax, Syntax::Delimited(_))
    }

    /// Decodes and validates one text record, without its line terminator.
    pub fn decode(&self, record: &str) -> Result<Event, RejectReason> {
        match self.syntax {
            Syntax::Delimited(separator) => csv::decode(record, separator, &self.layout, &self.rules),
            Syntax::Json => json::decode(record, &self.fields, &self.rules),
            Syntax::Bincode => self.decode_bytes(record.as_bytes()),
        }
    }

    /// Decodes and validates one record given as bytes (a Kafka payload).
    pub fn decode_bytes(&self, record: &[u8]) -> Result<Event, RejectReason> {
        match self.syntax {
            Syntax::Bincode => {
                // The limit keeps a corrupt length prefix from asking for a huge allocation.
                let event: Event = bincode::DefaultOptions::new()
                    .with_fixint_encoding()
                    .with_limit(record.len() as u64)
                    .deserialize(record)
                    .map_err(|e| RejectReason::Malformed(format!("not a bincode event: {e}")))?;
                let scale = self.rules.unit.scale();
                self.rules.timestamp(event.ts / scale)?;
                bounded_value_milli(event.value)?;
                Ok(event)
            }
            _ => match std::str::from_utf8(record) {
                Ok(text) => self.decode(text),
                Err(e) => Err(RejectReason::Malformed(format!("not UTF-8: {e}"))),
            },
        }
    }
}

impl Rules {
    fn action(&self, name: Option<&str>) -> Result<Action, RejectReason> {
        match name.map(str::trim) {
            None | Some("") => self.default_action.ok_or_else(|| RejectReason::MissingField("action".into())),
            Some(name) => Action::parse(name)
                .or_else(|| self.aliases.get(&name.to_ascii_lowercase()).copied())
                .ok_or_else(|| RejectReason::UnknownAction(name.to_string())),
        }
    }

    fn timestamp(&self, raw: u64) -> Result<Millis, RejectReason> {
        if raw < self.min_ts || raw > self.max_ts {
            let unit = match self.unit {
                TimeUnit::Seconds => "s",
                TimeUnit::Millis => "ms",
            };
            return Err(RejectReason::TimestampOutOfRange(format!(
                "{raw}{unit} is outside [{}, {}]",
                self.min_ts, self.max_ts
            )));
        }
        Ok(raw * self.unit.scale())
    }
}

fn required_id(field: &str, name: &str) -> Result<Id, RejectReason> {
    Id::parse(field).ok_or_else(|| RejectReason::MissingField(name.to_string()))
}

fn parse_timestamp_text(text: &str) -> Result<u64, RejectReason> {
    let text = text.trim();
    if text.is_empty() {
        return Err(RejectReason::MissingField("ts".into()));
    }
    text.parse::<u64>().map_err(|_| RejectReason::BadNumber(format!("ts `{text}` is not a non-negative integer")))
}

fn parse_value_text(text: &str) -> Result<Option<Thousandths>, RejectReason> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<f64>() {
        Ok(v) => value_milli(v).map(Some),
        Err(_) => Err(RejectReason::BadNumber(format!("value `{text}` is not a number"))),
    }
}

fn value_milli(v: f64) -> Result<Thousandths, RejectReason> {
    if v.is_finite() && v.abs() <= MAX_VALUE as f64 {
        Ok((v * THOUSANDTHS_PER_UNIT as f64).round() as Thousandths)
    } else {
        Err(value_out_of_bounds(v))
    }
}

/// A value decoded in thousandths (from a binary payload) within `±MAX_VALUE`.
fn bounded_value_milli(value: Option<Thousandths>) -> Result<Option<Thousandths>, RejectReason> {
    match value {
        Some(v) if v.unsigned_abs() > (MAX_VALUE * THOUSANDTHS_PER_UNIT) as u64 => {
            Err(value_out_of_bounds(v as f64 / THOUSANDTHS_PER_UNIT as f64))
        }
        _ => Ok(value),
    }
}

fn value_out_of_bounds(v: f64) -> RejectReason {
    RejectReason::BadNumber(format!("value {v} is outside the bound on values, ±{MAX_VALUE}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SourceSpec;

    fn taobao() -> Decoder {
        Decoder::new(&SourceSpec::default())
    }

    #[test]
    fn decodes_taobao_csv() {
        let e = taobao().decode("1,2268318,2520377,pv,1511544070").unwrap();
        assert_eq!(e.user, Id::Num(1));
        assert_eq!(e.item, Id::Num(2268318));
        assert_eq!(e.category, Some(Id::Num(2520377)));
        assert_eq!(e.action, Action::View);
        assert_eq!(e.ts, 1_511_544_070_000);
    }

    #[test]
    fn rejects_with_reasons() {
        let d = taobao();
        assert!(matches!(d.decode("1,2,3,pv"), Err(RejectReason::Malformed(_))));
        assert!(matches!(d.decode("1,2,3,steal,5"), Err(RejectReason::UnknownAction(_))));
        assert!(matches!(d.decode("1,2,3,pv,abc"), Err(RejectReason::BadNumber(_))));
        assert!(matches!(d.decode(",2,3,pv,5"), Err(RejectReason::MissingField(f)) if f == "user"));
        assert!(matches!(d.decode("1,2,3,pv,999999999999999"), Err(RejectReason::TimestampOutOfRange(_))));
    }

    #[test]
    fn values_beyond_the_bound_are_bad_numbers_naming_it() {
        let spec = SourceSpec {
            columns: ["user", "item", "action", "value", "ts"].map(String::from).to_vec(),
            ..SourceSpec::default()
        };
        let d = Decoder::new(&spec);
        assert_eq!(d.decode("1,2,rate,-1000000,5").unwrap().value, Some(-MAX_VALUE * THOUSANDTHS_PER_UNIT));
        for text in ["1000000.001", "-2e6", "1e300", "inf", "NaN"] {
            let Err(RejectReason::BadNumber(why)) = d.decode(&format!("1,2,rate,{text},5")) else {
                panic!("value {text} is accepted")
            };
            assert!(why.contains("±1000000"), "{why}");
        }
        let json = Decoder::new(&SourceSpec { format: Format::Jsonl, ..SourceSpec::default() });
        let line = r#"{"user":1,"item":2,"action":"rate","value":1e7,"ts":5}"#;
        assert!(matches!(json.decode(line), Err(RejectReason::BadNumber(_))));
        let bincode = Decoder::for_payload(&SourceSpec::default(), Payload::Bincode);
        let event = |value| Event {
            user: Id::Num(1),
            item: Id::Num(2),
            category: None,
            action: Action::Rate,
            value,
            ts: 5_000,
        };
        let encode = |e: &Event| bincode::DefaultOptions::new().with_fixint_encoding().serialize(e).unwrap();
        assert!(bincode.decode_bytes(&encode(&event(Some(MAX_VALUE * THOUSANDTHS_PER_UNIT)))).is_ok());
        let too_large = bincode.decode_bytes(&encode(&event(Some(i64::MAX))));
        assert!(matches!(too_large, Err(RejectReason::BadNumber(_))), "{too_large:?}");
    }

    #[test]
    fn the_default_range_covers_millisecond_timestamps() {
        let spec = SourceSpec { timestamp_unit: TimeUnit::Millis, ..SourceSpec::default() };
        assert_eq!(Decoder::new(&spec).decode("1,2,3,pv,1700000000000").unwrap().ts, 1_700_000_000_000);
    }

    #[test]
    fn decodes_movielens_tsv() {
        let spec = SourceSpec {
            format: Format::Tsv,
            columns: ["user", "item", "value", "ts"].map(String::from).to_vec(),
            default_action: Some(Action::Rate),
            ..SourceSpec::default()
        };
        let e = Decoder::new(&spec).decode("196\t242\t3\t881250949").unwrap();
        assert_eq!((e.action, e.value, e.category), (Action::Rate, Some(3000), None));
    }

    #[test]
    fn decodes_json_lines_keeping_string_ids() {
        let spec = SourceSpec { format: Format::Jsonl, ..SourceSpec::default() };
        let d = Decoder::new(&spec);
        let e = d.decode(r#"{"user":"user1","item":42,"action":"buy","ts":1700000000}"#).unwrap();
        assert_eq!(e.user, Id::Text("user1".into()));
        assert_eq!(e.item, Id::Num(42));
        assert!(matches!(d.decode("{not json"), Err(RejectReason::Malformed(_))));
        assert!(
            matches!(d.decode(r#"{"user":1,"action":"pv","ts":1}"#), Err(RejectReason::MissingField(f)) if f == "item")
        );
    }
}
