//! Loud when almost everything is rejected. When one reason takes nearly all of the first records
//! read, the run says so once, with the likely cause and the fix, rather than quietly writing
//! nothing but dead letters; `output.max_rejected_share` turns a mostly rejected run into a
//! failing one.

use crate::metrics::{FirstRecords, Metrics, REJECT_CODES};
use crate::spec::{Format, Payload, Pipeline, SourceKind, TimeUnit};

/// The share of the first records one reason must take to raise the alarm.
pub const ALARM_SHARE: f64 = 0.9;

/// The fewest records an input that ends before [`FirstRecords::SIZE`] must have had to be
/// judged at all.
pub const FEWEST_RECORDS: u64 = 20;

/// One reason took most of the first records read.
#[derive(Clone, Debug, PartialEq)]
pub struct RejectionAlarm {
    /// The reason code, as dead letters name it.
    pub reason: &'static str,
    /// Records rejected for it.
    pub rejected: u64,
    /// Records judged.
    pub judged: u64,
    /// The likely cause, and what to change.
    pub advice: String,
}

impl RejectionAlarm {
    /// The alarm for the first records read, once they are all known (or the input ended after
    /// at least [`FEWEST_RECORDS`]): `None` until then, or when no reason took [`ALARM_SHARE`]
    /// of them.
    pub fn first_records(first: &FirstRecords, input_ended: bool, pipeline: &Pipeline) -> Option<RejectionAlarm> {
        let (judged, rejected) = first.counts();
        if judged < FirstRecords::SIZE && !(input_ended && judged >= FEWEST_RECORDS) {
            return None;
        }
        let (index, &count) = rejected.iter().enumerate().max_by_key(|(_, count)| **count)?;
        (count as f64 >= ALARM_SHARE * judged as f64).then(|| RejectionAlarm {
            reason: REJECT_CODES[index],
            rejected: count,
            judged,
            advice: advice(REJECT_CODES[index], pipeline),
        })
    }

    /// The share rejected, in percent.
    pub fn percent(&self) -> f64 {
        percent(self.rejected, self.judged)
    }

    /// The alarm in a few words, for the status line.
    pub fn short(&self) -> String {
        format!("{:.0}% of the first {} records rejected as {}", self.percent(), self.judged, self.reason)
    }
}

impl std::fmt::Display for RejectionAlarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of the first {} records ({:.0}%) were rejected as {}: {}",
            self.rejected,
            self.judged,
            self.percent(),
            self.reason,
            self.advice
        )
    }
}

/// Why a whole run failed `output.max_rejected_share`: more than `limit` of the records read were
/// rejected or late. Names the most frequent reason, its likely cause and the fix.
pub fn excess_rejections(metrics: &Metrics, limit: f64, pipeline: &Pipeline) -> Option<String> {
    let read = metrics.records_in.load(std::sync::atomic::Ordering::Relaxed);
    let rejected = metrics.dead_lettered();
    if read == 0 || rejected as f64 <= limit * read as f64 {
        return None;
    }
    let reason = REJECT_CODES.iter().max_by_key(|code| metrics.rejected_for(code))?;
    Some(format!(
        "{rejected} of {read} records ({:.1}%) were rejected or late, more than output.max_rejected_share = {limit} \
         allows; {} of them as {reason}: {}",
        percent(rejected, read),
        metrics.rejected_for(reason),
        advice(reason, pipeline)
    ))
}

fn percent(part: u64, whole: u64) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

/// The likely cause of many rejections for `reason` in `pipeline`, and the fix.
fn advice(reason: &str, pipeline: &Pipeline) -> String {
    let source = &pipeline.source;
    let from_kafka = source.kind == SourceKind::Kafka;
    match reason {
        "malformed" | "missing_field" if from_kafka => payload_advice(source.payload()),
        "malformed" | "missing_field" => format!(
            "the records probably do not match [source]: check `source.format` (\"{}\"), `source.columns` ({}), \
             `source.header`, and for JSON lines `[source.fields]`",
            format_name(source.format),
            source.columns.join(",")
        ),
        "unknown_action" => "the actions are not named view/pv, cart, fav, buy or rate: map your names with \
                             `source.action_aliases` (such as { \"click\" = \"view\" })"
            .to_string(),
        "bad_number" => "a number (ts or value) holds something else: check the order of `source.columns` (or the \
                         `[source.fields]` names for JSON)"
            .to_string(),
        "timestamp_out_of_range" => {
            let (unit, other) = match source.timestamp_unit {
                TimeUnit::Seconds => ("s", "ms"),
                TimeUnit::Millis => ("ms", "s"),
            };
            format!(
                "the timestamps are probably not in `source.timestamp_unit` = \"{unit}\": set timestamp_unit = \
                 \"{other}\" if they are, or widen `source.min_timestamp`/`source.max_timestamp`"
            )
        }
        "late" => format!(
            "events arrive further out of order than `time.max_out_of_orderness` ({}) plus `time.allowed_lateness` \
             ({}) allow: raise them, or sort the input by time",
            pipeline.time.max_out_of_orderness, pipeline.time.allowed_lateness
        ),
        "future" => "events jump further ahead of the event time seen so far than `time.max_future` allows, and \
                     the records after them do not follow: check the timestamps (and `source.timestamp_unit`), or \
                     raise `time.max_future` (or set it to \"off\") if event time really jumps alone"
            .to_string(),
        _ => "see the dead letters for details".to_string(),
    }
}

fn payload_advice(payload: Payload) -> String {
    let (name, shape) = match payload {
        Payload::Json => ("json", "JSON objects with the `[source.fields]` names"),
        Payload::Csv => ("csv", "CSV lines in the `source.columns` layout"),
        Payload::Tsv => ("tsv", "TSV lines in the `source.columns` layout"),
        Payload::Bincode => ("bincode", "recflow's bincode events"),
    };
    format!(
        "the messages are probably not in the format this pipeline decodes, {shape} (payload = \"{name}\"): set \
         `[source.kafka] payload` to the topic's format (json, csv, tsv or bincode), or produce the events with \
         `recflow produce --pipeline` naming this pipeline, or with `--format {name}`"
    )
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Csv => "csv",
        Format::Tsv => "tsv",
        Format::Jsonl => "jsonl",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::RejectReason;

    fn pipeline(kind: &str) -> Pipeline {
        Pipeline::from_toml(&format!("[source]\nkind = \"{kind}\"\n[hot_items]"), "p.toml").unwrap()
    }

    fn first(accepted: u64, reason: RejectReason, rejected: u64) -> FirstRecords {
        let first = FirstRecords::default();
        (0..accepted).for_each(|_| first.note(None));
        (0..rejected).for_each(|_| first.note(Some(&reason)));
        first
    }

    #[test]
    fn the_alarm_waits_for_the_first_records_and_names_the_fix() {
        let synth = pipeline("synth");
        let malformed = || RejectReason::Malformed("x".into());
        assert_eq!(RejectionAlarm::first_records(&first(0, malformed(), 999), false, &synth), None);
        let alarm = RejectionAlarm::first_records(&first(99, malformed(), 2000), false, &synth).unwrap();
        assert_eq!((alarm.reason, alarm.rejected, alarm.judged), ("malformed", 901, 1000));
        assert!(alarm.to_string().contains("source.format"), "{alarm}");
        assert_eq!(RejectionAlarm::first_records(&first(101, malformed(), 899), false, &synth), None);
        assert_eq!(RejectionAlarm::first_records(&first(0, malformed(), 19), true, &synth), None);
        let short = RejectionAlarm::first_records(&first(1, malformed(), 19), true, &synth).unwrap();
        assert_eq!(short.short(), "95% of the first 20 records rejected as malformed");
    }

    #[test]
    fn the_advice_fits_the_reason_and_the_source() {
        let mut kafka = pipeline("synth");
        kafka.source.read_topic("h:1".into(), "t".into());
        let alarm =
            RejectionAlarm::first_records(&first(0, RejectReason::MissingField("user".into()), 30), true, &kafka);
        assert!(alarm.unwrap().advice.contains("[source.kafka] payload"));
        let late = RejectionAlarm::first_records(&first(0, RejectReason::Late, 30), true, &kafka).unwrap();
        assert!(late.advice.contains("max_out_of_orderness") && late.advice.contains("allowed_lateness"));
        let range = first(0, RejectReason::TimestampOutOfRange("x".into()), 30);
        let alarm = RejectionAlarm::first_records(&range, true, &kafka).unwrap();
        assert!(alarm.advice.contains("timestamp_unit = \"ms\""), "{}", alarm.advice);
    }
}
