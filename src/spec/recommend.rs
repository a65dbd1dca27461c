//! `[recommend]`: personalised recommendations, from the preference windows and blend to the
//! co-occurring pairs and the ranking of each list.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{rejecting, SimilaritySpec, Span, SpecError};

/// The largest number of seeds per user (`recommend.top_preferences`); with the dataflow's largest
/// seed weight (`MAX_SEED_WEIGHT` in `dataflow::preference`) it bounds every score.
pub const MAX_SEEDS: usize = 10_000;

/// The short-term window over which recent preferences are summed.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ShortTermWindow {
    /// Events of the last `size` of event time.
    Sliding {
        /// Window length.
        size: Span,
    },
    /// Events of the current fixed window `[k*size, (k+1)*size)` since the epoch.
    Tumbling {
        /// Window length.
        size: Span,
    },
    /// Events of the user's current session: their latest event and every earlier one reached
    /// through gaps shorter than `gap`; the session closes `gap` after its last event.
    Session {
        /// Inactivity that ends a session.
        gap: Span,
    },
}

/// The long-term horizon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Horizon {
    /// Everything ever seen.
    All,
    /// Events younger than this.
    Retention(Span),
}

impl Serialize for Horizon {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let retention = match self {
            Horizon::All => None,
            Horizon::Retention(span) => Some(*span),
        };
        Span::serialize_or(retention, "all", serializer)
    }
}

impl<'de> Deserialize<'de> for Horizon {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Span::parse_or(deserializer, "all")?.map_or(Horizon::All, Horizon::Retention))
    }
}

/// Which items a user never gets recommended.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Exclude {
    /// Items the user has any event with in the long-term horizon.
    Seen,
    /// Items the user bought in the long-term horizon.
    Bought,
    /// No exclusion.
    None,
}

/// Which of a user's items seed their scores.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Seeds {
    /// The `top_preferences` items with the highest blended preference, weighted by it.
    Preference,
    /// The `top_preferences` most recently touched items with a positive preference, the `r`-th
    /// most recent weighted by its preference times `recency_decay^r`.
    Recent,
}

/// Which pairs of a user's items count as co-occurring.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CoOccurrence {
    /// Every pair within the user's current `history` most recently touched items: a pair
    /// leaves when one of its items slides out of the history.
    History,
    /// Pairs accumulate over the long-term horizon: an item the user starts touching pairs with
    /// each of the `history` items they started touching just before it, and the pair counts
    /// while both stay in the horizon.
    Horizon,
}

/// The `[recommend]` table.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RecommendSpec {
    /// Length of each user's list.
    pub k: usize,
    /// The short-term window.
    pub short_term: ShortTermWindow,
    /// The long-term horizon: `"all"` or a retention such as `"30d"`.
    pub long_term: Horizon,
    /// Weight of the short-term preference in the blend.
    pub alpha: f64,
    /// Weight of the long-term preference in the blend.
    pub beta: f64,
    /// How many of a user's items seed their scores (M).
    pub top_preferences: usize,
    /// Which items seed a user's scores: the most preferred or the most recent.
    pub seeds: Seeds,
    /// With `seeds = "recent"`: each older seed's weight relative to the next more recent one.
    pub recency_decay: f64,
    /// Which items are never recommended to a user.
    pub exclude: Exclude,
    /// How many of each user's most recent items count for co-occurrence.
    pub history: usize,
    /// Which pairs of a user's items co-occur: within the current history, or accumulated over
    /// the long-term horizon.
    pub co_occurrence: CoOccurrence,
    /// With horizon co-occurrence: a pair of items entered `d` apart counts `pair_decay^(d-1)`
    /// (1 counts every pair alike).
    pub pair_decay: f64,
    /// The item-to-item similarity.
    pub similarity: SimilaritySpec,
    /// Window of the popularity fallback (item event counts over the last `popular_window`).
    pub popular_window: Span,
    /// How often the popular pool is refreshed: a multiple of `time.tick`, at most
    /// `similarity.refresh`, which is the default. The pool costs what changed in it, so a short
    /// cadence is cheap, and lists are filled from a fresher pool.
    pub popular_refresh: Option<Span>,
    /// How much an item's popularity adds to its score: each item of the popular pool gains
    /// `popularity_prior * W * count / top_count`, `W` being the user's total seed weight (0 adds
    /// nothing; the pool then only fills short lists).
    pub popularity_prior: f64,
    /// Re-ranks each list for variety (maximal marginal relevance): `0` ranks by score alone; `d`
    /// picks, among the `4k` best candidates, the item with the best `(1 - d) * relevance - d *
    /// (similarity to the items already listed)`.
    pub diversity: f64,
    /// Demotes the head: an item of the popular pool loses `long_tail * count / top_count` of its
    /// score before ranking (0 changes nothing; 1 takes the most popular item's whole score).
    pub long_tail: f64,
}

impl Default for RecommendSpec {
    fn default() -> Self {
        RecommendSpec {
            k: 10,
            short_term: ShortTermWindow::Sliding { size: Span(3_600_000) },
            long_term: Horizon::All,
            alpha: 0.7,
            beta: 0.3,
            top_preferences: 20,
            seeds: Seeds::Preference,
            recency_decay: 0.8,
            exclude: Exclude::Seen,
            history: 50,
            co_occurrence: CoOccurrence::History,
            pair_decay: 1.0,
            similarity: SimilaritySpec::default(),
            popular_window: Span(3_600_000),
            popular_refresh: None,
            popularity_prior: 0.0,
            diversity: 0.0,
            long_tail: 0.0,
        }
    }
}

impl RecommendSpec {
    /// Checks `[recommend]` and `[recommend.similarity]`; `tick` is `time.tick`, already checked
    /// to be positive, which the similarity's and the popular pool's refresh must be multiples of.
    pub(super) fn validate(&self, origin: &str, tick: Span) -> Result<(), SpecError> {
        let bad = rejecting(origin);
        if self.k == 0 {
            return bad("recommend.k", "must be at least 1".into());
        }
        let (key, size) = match self.short_term {
            ShortTermWindow::Sliding { size } | ShortTermWindow::Tumbling { size } => {
                ("recommend.short_term.size", size)
            }
            ShortTermWindow::Session { gap } => ("recommend.short_term.gap", gap),
        };
        if size.millis() == 0 {
            return bad(key, "must be positive, such as \"30m\"".into());
        }
        if self.long_term == Horizon::Retention(Span(0)) {
            return bad(
                "recommend.long_term",
                "a zero retention keeps nothing; use \"all\" or a duration such as \"30d\"".into(),
            );
        }
        for (key, x) in [("recommend.alpha", self.alpha), ("recommend.beta", self.beta)] {
            if !(x.is_finite() && (0.0..=1000.0).contains(&x)) {
                return bad(key, format!("{x} is not a blend weight; use a number between 0 and 1000"));
            }
        }
        if self.alpha == 0.0 && self.beta == 0.0 {
            return bad("recommend.alpha", "alpha and beta are both 0, so every preference is 0; raise one".into());
        }
        if !(1..=MAX_SEEDS).contains(&self.top_preferences) {
            return bad("recommend.top_preferences", format!("must be between 1 and {MAX_SEEDS}"));
        }
        self.validate_pairs(origin)?;
        self.similarity.validate_neighbourhood(origin, tick)?;
        self.validate_ranking(origin)?;
        if let Some(refresh) = self.popular_refresh {
            let similarity = self.similarity.refresh;
            if refresh.millis() == 0
                || !refresh.millis().is_multiple_of(tick.millis())
                || refresh.millis() > similarity.millis()
            {
                return bad(
                    "recommend.popular_refresh",
                    format!(
                        "must be a positive multiple of time.tick ({tick}) no longer than similarity.refresh ({similarity}), such as \"{tick}\""
                    ),
                );
            }
        }
        self.similarity.validate_shape(origin)
    }

    /// Checks how seeds and pairs are weighted (`recency_decay`, `pair_decay`) and the `history`
    /// that pairs are drawn from.
    fn validate_pairs(&self, origin: &str) -> Result<(), SpecError> {
        let bad = rejecting(origin);
        for (key, decay, example, alike) in [
            ("recommend.recency_decay", self.recency_decay, 0.8, "weights all seeds alike"),
            ("recommend.pair_decay", self.pair_decay, 0.95, "counts every pair alike"),
        ] {
            if !(decay > 0.0 && decay <= 1.0) {
                return bad(
                    key,
                    format!("{decay} is not a decay; use a number in (0, 1], such as {example} (1 {alike})"),
                );
            }
        }
        if self.history < 2 && self.co_occurrence == CoOccurrence::History {
            return bad("recommend.history", "co-occurrence within a history needs at least 2 items per user".into());
        }
        if self.pair_decay != 1.0 && self.co_occurrence == CoOccurrence::History {
            return bad(
                "recommend.pair_decay",
                "weights pairs by how far apart they entered, which only co_occurrence = \"horizon\" counts; set that or remove pair_decay".into(),
            );
        }
        if self.history == 0 {
            return bad(
                "recommend.history",
                "an item must pair with at least the one entered before it; use 1 or more".into(),
            );
        }
        Ok(())
    }

    /// Checks what ranks a list beyond similarity: the popularity window and prior, diversity and
    /// the long-tail demotion.
    fn validate_ranking(&self, origin: &str) -> Result<(), SpecError> {
        let bad = rejecting(origin);
        if self.popular_window.millis() == 0 {
            return bad("recommend.popular_window", "must be positive, such as \"1h\"".into());
        }
        if !(self.popularity_prior.is_finite() && (0.0..=1000.0).contains(&self.popularity_prior)) {
            return bad(
                "recommend.popularity_prior",
                format!(
                    "{} is not a prior weight; use a number between 0 and 1000, such as 0.1",
                    self.popularity_prior
                ),
            );
        }
        if !(self.diversity >= 0.0 && self.diversity < 1.0) {
            return bad(
                "recommend.diversity",
                format!(
                    "{} is not a trade-off in [0, 1); 0 ranks by score alone, 0.3 trades some score for variety",
                    self.diversity
                ),
            );
        }
        if !(self.long_tail >= 0.0 && self.long_tail <= 1.0) {
            return bad(
                "recommend.long_tail",
                format!(
                    "{} is not a share in [0, 1]; 0 changes nothing, 0.5 halves the top item's score",
                    self.long_tail
                ),
            );
        }
        Ok(())
    }
}
