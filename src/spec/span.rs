//! Durations as a pipeline file writes them: `500ms`, `30s`, `5m`, `1h`, `7d`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::event::Millis;

/// A span of time written as a number and a unit: `500ms`, `30s`, `5m`, `1h`, `7d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(pub Millis);

impl Span {
    /// The span in milliseconds.
    pub fn millis(self) -> Millis {
        self.0
    }

    /// Parses a span, or the keyword `word` (`None`), for settings such as `long_term = "all"`.
    pub(super) fn parse_or<'de, D: Deserializer<'de>>(deserializer: D, word: &str) -> Result<Option<Span>, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.trim() == word {
            return Ok(None);
        }
        Span::parse(&text).map(Some).map_err(|e| serde::de::Error::custom(format!("{e}, or `{word}`")))
    }

    /// Serialises a span, or the keyword `word` for `None`: what [`Span::parse_or`] reads back.
    pub(super) fn serialize_or<S: Serializer>(
        span: Option<Span>,
        word: &str,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match span {
            Some(span) => span.serialize(serializer),
            None => serializer.serialize_str(word),
        }
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

/// A span serialises as a pipeline file writes it (`"5m"`), so a serialised pipeline reads back.
impl Serialize for Span {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Span::parse(&text).map_err(serde::de::Error::custom)
    }
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
