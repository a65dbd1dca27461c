//! The behaviour event, its identifiers and actions, and the record a rejected input becomes.
//!
//! Everything downstream of decoding works on [`Event`]: identifiers keep the form the user gave
//! them ([`Id`]), times are milliseconds since the Unix epoch, and numbers that must order
//! deterministically are fixed point ([`Thousandths`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Event time in milliseconds since the Unix epoch.
pub type Millis = u64;

/// A fixed-point number with three decimals (`1.5` is 1500 thousandths).
pub type Thousandths = i64;

/// Scale of [`Thousandths`] values.
pub const THOUSANDTHS_PER_UNIT: i64 = 1_000;

/// The largest magnitude of an event's `value` (a rating); decoders reject larger values as
/// `bad_number`. With weights at most 1,000 and blend weights at most 1,000 this keeps one
/// event's preference below 2^62 millionths, so no product overflows; sums of preferences are
/// kept in 128 bits by the preference operator.
pub const MAX_VALUE: i64 = 1_000_000;

/// A user or item identifier, kept as the user gave it.
///
/// Integer identifiers compare as numbers, string identifiers as strings, and every integer sorts
/// before every string. This is the tie-break order used wherever recflow ranks items.
///
/// In JSON an identifier is a bare number or string; in binary formats (between timely
/// processes) it is a tagged enum, since those formats cannot tell the two apart by looking.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Id {
    /// An identifier given as an integer, such as `42`.
    Num(i64),
    /// An identifier given as a string, such as `"user1"`.
    Text(String),
}

/// The start of the Kafka keys of hot-items windows (`hot_items/WINDOW_END[/CATEGORY]`): a text
/// id that starts so is quoted in keys, so that no user's key is a window's.
pub const HOT_ITEMS_KEY_PREFIX: &str = "hot_items/";

/// The Kafka key of the list for users without one of their own: a text id spelled so is quoted
/// in keys, so that no user's key is this list's.
pub const POPULAR_KEY: &str = "popular";

/// An id in pending updates belongs where it hashes to: a user's or item's worker.
impl crate::checkpoint::rescale::Placed for Id {
    fn place(&self) -> crate::checkpoint::rescale::Place {
        use differential_dataflow::Hashable;
        crate::checkpoint::rescale::Place::Key(self.hashed())
    }
}

impl Id {
    /// The id as a key no other id shares (served lookups, Kafka keys): a number as its digits,
    /// a text as itself unless it would read back as something else (a number, an empty or
    /// padded text, a quoted one), starts with [`HOT_ITEMS_KEY_PREFIX`] or is [`POPULAR_KEY`];
    /// then it is written as a JSON string. So `42` is `42`, `"42"` is `"42"` (with the quotes), `alice` is `alice`.
    /// [`Id::from_key`] reads it back.
    ///
    /// ```
    /// use recflow::Id;
    /// for id in [Id::Num(42), Id::Text("42".into()), Id::Text("alice".into()), Id::Text("hot_items/7".into())] {
    ///     assert_eq!(Id::from_key(&id.key()), Some(id.clone()));
    /// }
    /// assert_eq!(Id::Text("42".into()).key(), "\"42\"");
    /// assert_eq!(Id::Text("popular".into()).key(), "\"popular\"");
    /// assert_eq!(Id::Text("alice".into()).key(), "alice");
    /// ```
    pub fn key(&self) -> String {
        match self {
            Id::Num(n) => n.to_string(),
            Id::Text(text) => {
                let reads_back = Id::parse(text).is_some_and(|id| id == *self);
                let reserved = text.starts_with(HOT_ITEMS_KEY_PREFIX) || text == POPULAR_KEY;
                if reads_back && !text.starts_with('"') && !reserved {
                    text.clone()
                } else {
                    serde_json::Value::String(text.clone()).to_string()
                }
            }
        }
    }

    /// Reads a key written by [`Id::key`] (or typed by a person: `42` is the number, `"42"` the
    /// text); `None` for an empty or badly quoted one.
    pub fn from_key(key: &str) -> Option<Id> {
        if key.trim_start().starts_with('"') {
            return serde_json::from_str::<String>(key.trim()).ok().map(Id::Text);
        }
        Id::parse(key)
    }

    /// Reads an identifier from a text field: an integer if the whole field is one, else a string.
    pub fn parse(field: &str) -> Option<Id> {
        let field = field.trim();
        if field.is_empty() {
            return None;
        }
        let bytes = field.as_bytes();
        let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
        if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
            if let Ok(n) = field.parse::<i64>() {
                return Some(Id::Num(n));
            }
        }
        Some(Id::Text(field.to_string()))
    }
}

/// The wire forms of [`Id`]: tagged for binary formats, bare for human-readable ones.
mod id_serde {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Id;

    #[derive(Serialize, Deserialize)]
    enum Tagged<'a> {
        Num(i64),
        Text(std::borrow::Cow<'a, str>),
    }

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Bare<'a> {
        Num(i64),
        Text(std::borrow::Cow<'a, str>),
    }

    impl Serialize for Id {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let human = serializer.is_human_readable();
            match (self, human) {
                (Id::Num(n), true) => Bare::Num(*n).serialize(serializer),
                (Id::Text(s), true) => Bare::Text(s.as_str().into()).serialize(serializer),
                (Id::Num(n), false) => Tagged::Num(*n).serialize(serializer),
                (Id::Text(s), false) => Tagged::Text(s.as_str().into()).serialize(serializer),
            }
        }
    }

    impl<'de> Deserialize<'de> for Id {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            if deserializer.is_human_readable() {
                Ok(match Bare::deserialize(deserializer)? {
                    Bare::Num(n) => Id::Num(n),
                    Bare::Text(s) => Id::Text(s.into_owned()),
                })
            } else {
                Ok(match Tagged::deserialize(deserializer)? {
                    Tagged::Num(n) => Id::Num(n),
                    Tagged::Text(s) => Id::Text(s.into_owned()),
                })
            }
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Num(n) => write!(f, "{n}"),
            Id::Text(s) => f.write_str(s),
        }
    }
}

/// What the user did with the item.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Looked at the item (also written `pv` or `click`).
    View,
    /// Put the item in the cart.
    Cart,
    /// Marked the item as a favourite.
    Fav,
    /// Bought the item.
    Buy,
    /// Rated the item; the rating is the event's value.
    Rate,
}

impl Action {
    /// Reads an action name or one of its built-in aliases, ignoring ASCII case.
    pub fn parse(name: &str) -> Option<Action> {
        let name = name.trim();
        let eq = |s: &str| name.eq_ignore_ascii_case(s);
        if eq("view") || eq("pv") || eq("click") {
            Some(Action::View)
        } else if eq("cart") {
            Some(Action::Cart)
        } else if eq("fav") || eq("favorite") || eq("favourite") {
            Some(Action::Fav)
        } else if eq("buy") {
            Some(Action::Buy)
        } else if eq("rate") || eq("rating") {
            Some(Action::Rate)
        } else {
            None
        }
    }

    /// The canonical lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Action::View => "view",
            Action::Cart => "cart",
            Action::Fav => "fav",
            Action::Buy => "buy",
            Action::Rate => "rate",
        }
    }
}

/// One user-behaviour event, validated.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Event {
    /// Who acted.
    pub user: Id,
    /// On what.
    pub item: Id,
    /// The item's category, when the input has one.
    pub category: Option<Id>,
    /// What they did.
    pub action: Action,
    /// The event's value (a rating), when the input has one.
    pub value: Option<Thousandths>,
    /// When, in milliseconds since the Unix epoch.
    pub ts: Millis,
}

/// Why an input record was not accepted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The record is not well formed (bad JSON, wrong number of columns, not UTF-8).
    Malformed(String),
    /// A required field is absent or empty.
    MissingField(String),
    /// The action is not one recflow knows.
    UnknownAction(String),
    /// A numeric field does not hold a number.
    BadNumber(String),
    /// The timestamp lies outside the accepted range.
    TimestampOutOfRange(String),
    /// The event is older than the watermark minus the allowed lateness.
    Late,
    /// The event lies more than `time.max_future` beyond the largest event time seen, and the
    /// records after it did not confirm the jump.
    Future,
}

impl RejectReason {
    /// A short machine-readable name of the reason, for counters and headers.
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::Malformed(_) => "malformed",
            RejectReason::MissingField(_) => "missing_field",
            RejectReason::UnknownAction(_) => "unknown_action",
            RejectReason::BadNumber(_) => "bad_number",
            RejectReason::TimestampOutOfRange(_) => "timestamp_out_of_range",
            RejectReason::Late => "late",
            RejectReason::Future => "future",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::Malformed(why) => write!(f, "malformed: {why}"),
            RejectReason::MissingField(field) => write!(f, "missing field `{field}`"),
            RejectReason::UnknownAction(action) => write!(f, "unknown action `{action}`"),
            RejectReason::BadNumber(why) => write!(f, "bad number: {why}"),
            RejectReason::TimestampOutOfRange(why) => write!(f, "timestamp out of range: {why}"),
            RejectReason::Late => f.write_str("late"),
            RejectReason::Future => f.write_str("future: too far beyond the event time seen so far (time.max_future)"),
        }
    }
}

/// An input record that was not accepted: the reason, where it came from, and its raw bytes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeadLetter {
    /// Why it was rejected.
    pub reason: RejectReason,
    /// Where it came from, such as `file:events.csv:17` (line numbers start at 1) or
    /// `kafka:events/3:1042` (partition 3, offset 1042).
    pub origin: String,
    /// The record exactly as it arrived.
    pub raw: Vec<u8>,
    /// The Kafka partition and offset it was read from, for Kafka sources.
    pub partition_offset: Option<(i32, i64)>,
}

impl DeadLetter {
    /// A dead letter from a source without partitions.
    pub fn new(reason: RejectReason, origin: String, raw: Vec<u8>) -> DeadLetter {
        DeadLetter { reason, origin, raw, partition_offset: None }
    }

    /// The raw record as text, with invalid UTF-8 replaced.
    pub fn raw_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_their_form_and_order_numbers_before_strings() {
        assert_eq!(Id::parse(" 42 "), Some(Id::Num(42)));
        assert_eq!(Id::parse("user1"), Some(Id::Text("user1".into())));
        assert_eq!(Id::parse("-7"), Some(Id::Num(-7)));
        assert_eq!(Id::parse("99999999999999999999"), Some(Id::Text("99999999999999999999".into())));
        assert_eq!(Id::parse(""), None);
        assert!(Id::Num(9) < Id::Num(10));
        assert!(Id::Num(i64::MAX) < Id::Text("0".into()));
        assert_eq!(serde_json::to_string(&Id::Num(5)).unwrap(), "5");
        assert_eq!(serde_json::to_string(&Id::Text("a".into())).unwrap(), "\"a\"");
        for id in [Id::Num(-3), Id::Text("user1".into())] {
            let bytes = bincode::serialize(&id).unwrap();
            assert_eq!(bincode::deserialize::<Id>(&bytes).unwrap(), id);
            assert_eq!(serde_json::from_str::<Id>(&serde_json::to_string(&id).unwrap()).unwrap(), id);
        }
    }

    #[test]
    fn actions_accept_aliases() {
        assert_eq!(Action::parse("PV"), Some(Action::View));
        assert_eq!(Action::parse("click"), Some(Action::View));
        assert_eq!(Action::parse("buy"), Some(Action::Buy));
        assert_eq!(Action::parse("steal"), None);
    }
}
