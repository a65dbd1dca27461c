//! CSV and TSV records under a configurable column layout (Taobao `user,item,category,behavior,ts`,
//! MovieLens `user item rating ts`, ...). Double-quoted fields may hold the delimiter.

use std::borrow::Cow;

use super::{parse_timestamp_text, parse_value_text, required_id, Rules};
use crate::event::{Event, Id, RejectReason};

/// Positions of the event fields among a record's columns.
#[derive(Clone, Debug, Default)]
pub struct ColumnLayout {
    width: usize,
    user: usize,
    item: usize,
    category: Option<usize>,
    action: Option<usize>,
    value: Option<usize>,
    ts: usize,
}

impl ColumnLayout {
    /// The layout of `columns` (validated by the pipeline spec: `user`, `item`, `ts` are present).
    pub fn new(columns: &[String]) -> ColumnLayout {
        let find = |name: &str| columns.iter().position(|c| c == name);
        ColumnLayout {
            width: columns.len(),
            user: find("user").unwrap_or(0),
            item: find("item").unwrap_or(0),
            category: find("category"),
            action: find("action"),
            value: find("value"),
            ts: find("ts").unwrap_or(0),
        }
    }
}

pub(super) fn decode(
    record: &str,
    delimiter: char,
    layout: &ColumnLayout,
    rules: &Rules,
) -> Result<Event, RejectReason> {
    let record = record.strip_suffix('\r').unwrap_or(record);
    let mut fields: [Cow<'_, str>; 16] = Default::default();
    let count = split(record, delimiter, &mut fields)?;
    if count != layout.width {
        return Err(RejectReason::Malformed(format!("expected {} columns, found {count}", layout.width)));
    }
    let user = required_id(&fields[layout.user], "user")?;
    let item = required_id(&fields[layout.item], "item")?;
    let category = layout.category.and_then(|i| Id::parse(&fields[i]));
    let action = rules.action(layout.action.map(|i| fields[i].as_ref()))?;
    let value = match layout.value {
        Some(i) => parse_value_text(&fields[i])?,
        None => None,
    };
    let ts = rules.timestamp(parse_timestamp_text(&fields[layout.ts])?)?;
    Ok(Event { user, item, category, action, value, ts })
}

/// Splits a record into at most 16 fields; returns how many there were (more than 16 counts on).
fn split<'a>(record: &'a str, delimiter: char, fields: &mut [Cow<'a, str>; 16]) -> Result<usize, RejectReason> {
    let mut count = 0;
    let mut store = |field: Cow<'a, str>| {
        if count < fields.len() {
            fields[count] = field;
        }
        count += 1;
    };
    if !record.contains('"') {
        record.split(delimiter).for_each(|f| store(Cow::Borrowed(f)));
        return Ok(count);
    }
    let mut rest = record;
    loop {
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut text = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => {
                        if quoted[i + 1..].starts_with('"') {
                            text.push('"');
                            chars.next();
                        } else {
                            break i + 1;
                        }
                    }
                    Some((_, c)) => text.push(c),
                    None => return Err(RejectReason::Malformed("unterminated quoted field".into())),
                }
            };
            store(Cow::Owned(text));
            let after = &quoted[end..];
            if after.is_empty() {
                return Ok(count);
            }
            match after.strip_prefix(delimiter) {
                Some(next) => rest = next,
                None => return Err(RejectReason::Malformed("text after a closing quote".into())),
            }
        } else {
            match rest.find(delimiter) {
                Some(i) => {
                    store(Cow::Borrowed(&rest[..i]));
                    rest = &rest[i + delimiter.len_utf8()..];
                }
                None => {
                    store(Cow::Borrowed(rest));
                    return Ok(count);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_hold_delimiters_and_quotes() {
        let mut fields: [Cow<'_, str>; 16] = Default::default();
        let n = split(r#"a,"b,c","say ""hi""",d"#, ',', &mut fields).unwrap();
        assert_eq!(n, 4);
        assert_eq!(fields[1], "b,c");
        assert_eq!(fields[2], "say \"hi\"");
        assert!(split(r#"a,"b"#, ',', &mut fields).is_err());
    }
}
