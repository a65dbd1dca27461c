//! JSON-lines records: one object per line, field names configurable.

use serde_json::{Map, Value};

use super::{parse_timestamp_text, value_milli, Rules};
use crate::event::{Event, Id, RejectReason};
use crate::spec::JsonFields;

pub(super) fn decode(record: &str, fields: &JsonFields, rules: &Rules) -> Result<Event, RejectReason> {
    let object: Map<String, Value> =
        serde_json::from_str(record).map_err(|e| RejectReason::Malformed(format!("not a JSON object: {e}")))?;
    let user = id(&object, &fields.user, "user")?.ok_or_else(|| RejectReason::MissingField("user".into()))?;
    let item = id(&object, &fields.item, "item")?.ok_or_else(|| RejectReason::MissingField("item".into()))?;
    let category = id(&object, &fields.category, "category")?;
    let action = match object.get(&fields.action) {
        None | Some(Value::Null) => rules.action(None)?,
        Some(Value::String(s)) => rules.action(Some(s))?,
        Some(other) => rules.action(Some(&other.to_string()))?,
    };
    let value = match object.get(&fields.value) {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(value_milli(n.as_f64().unwrap_or(f64::NAN))?),
        Some(Value::String(s)) => super::parse_value_text(s)?,
        Some(other) => return Err(RejectReason::BadNumber(format!("value {other} is not a number"))),
    };
    let raw_ts = match object.get(&fields.ts) {
        None | Some(Value::Null) => return Err(RejectReason::MissingField("ts".into())),
        Some(Value::Number(n)) => {
            n.as_u64().ok_or_else(|| RejectReason::BadNumber(format!("ts {n} is not a non-negative integer")))?
        }
        Some(Value::String(s)) => parse_timestamp_text(s)?,
        Some(other) => return Err(RejectReason::BadNumber(format!("ts {other} is not a number"))),
    };
    let ts = rules.timestamp(raw_ts)?;
    Ok(Event { user, item, category, action, value, ts })
}

fn id(object: &Map<String, Value>, field: &str, name: &str) -> Result<Option<Id>, RejectReason> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(|n| Some(Id::Num(n)))
            .ok_or_else(|| RejectReason::BadNumber(format!("{name} {n} is not an integer id"))),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(Id::Text(s.clone()))),
        Some(other) => Err(RejectReason::Malformed(format!("{name} {other} is neither a number nor a string"))),
    }
}
