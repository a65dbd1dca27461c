//! The results recflow maintains, as the dataflow hands them to sinks: one current value per key.

use serde::{Deserialize, Serialize};

use crate::event::{Id, Millis};

/// Scale of scores: a score of `1.5` is `1_500_000`.
pub const SCORE_SCALE: i64 = 1_000_000;

/// One entry of a user's recommendation list.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecItem {
    /// The recommended item.
    pub item: Id,
    /// Its score in millionths; 0 for popularity fill-ins.
    pub score: i64,
    /// Whether it comes from the popularity fallback rather than the user's own history.
    pub fallback: bool,
    /// Why it is recommended: the user's preferred items that lead to it, largest share of the
    /// score first. Filled only when explanations are kept (`serve.explain`).
    pub because: Vec<Because>,
}

/// One of a user's preferred items and what it adds to a recommended item's score.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Because {
    /// The preferred item.
    pub item: Id,
    /// The user's short-term preference for it (the `alpha` part), in millionths.
    pub short_term: i64,
    /// The user's long-term preference for it (the `beta` part), in millionths.
    pub long_term: i64,
    /// Its similarity to the recommended item, in millionths.
    pub similarity: i64,
    /// What it adds to the score: `(short_term + long_term) * similarity`, in millionths.
    pub contribution: i64,
}

/// The key of a maintained result.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResultKey {
    /// Hot items of the window ending at `window_end` (and of one category, when per category).
    HotItems {
        /// Window end, exclusive, in milliseconds.
        window_end: Millis,
        /// The category, for per-category lists.
        category: Option<Id>,
    },
    /// A user's recommendations.
    Recs(Id),
}

/// The value of a maintained result.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResultValue {
    /// Hot items with their counts, best first.
    HotItems(Vec<(Id, i64)>),
    /// Recommendations, best first.
    Recs(Vec<RecItem>),
}
