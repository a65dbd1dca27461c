//! The results recflow maintains: as the dataflow hands them to sinks (one current value per
//! key), and as the changelog writes them out and the server serves them ([`ChangeRecord`]).

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
    /// The list for a user without one of their own: the first `k` items of the popular pool.
    Popular,
}

/// The value of a maintained result.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResultValue {
    /// Hot items with their counts, best first.
    HotItems(Vec<(Id, i64)>),
    /// Recommendations, best first.
    Recs(Vec<RecItem>),
}

/// One line of the changelog.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChangeRecord {
    /// A user's list changed.
    Recs {
        /// The user.
        user: Id,
        /// The time the list is valid as of, in the input's timestamp unit.
        time: u64,
        /// The list, best first; empty when the user has none any more.
        items: Vec<ScoredItem>,
    },
    /// A hot-items window's list changed.
    HotItems {
        /// Window start, inclusive, in the input's timestamp unit (negative before the epoch).
        window_start: i64,
        /// Window end, exclusive, in the input's timestamp unit.
        window_end: u64,
        /// The category, for per-category lists.
        #[serde(skip_serializing_if = "Option::is_none")]
        category: Option<Id>,
        /// The list, best first.
        items: Vec<CountedItem>,
    },
    /// The list for users without one of their own changed: the first `k` items of the popular
    /// pool, each a fill-in.
    Popular {
        /// The time the list is valid as of, in the input's timestamp unit.
        time: u64,
        /// The list, best first; empty when the pool is.
        items: Vec<ScoredItem>,
    },
}

/// An item of a recommendation list as written out.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct ScoredItem {
    /// The item.
    pub item: Id,
    /// Its score.
    pub score: f64,
    /// Present and true for popularity fill-ins.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fallback: bool,
    /// Why it is recommended, when explanations are kept; never written to the changelog, only
    /// served (`explain=true`).
    #[serde(skip)]
    pub because: Vec<Because>,
}

/// An item of a hot-items list as written out.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct CountedItem {
    /// The item.
    pub item: Id,
    /// Events in the window.
    pub count: i64,
}
