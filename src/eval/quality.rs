//! Ranking metrics of a prequential replay, for one relevant item per event: hit rate, NDCG and
//! reciprocal rank at k, catalogue coverage, and how often the answer came from the popularity
//! fallback; and what the lists are like beyond accuracy: intra-list diversity, novelty and the
//! exposure Gini. Tallied per slice of the stream and summarised as shares and means.
//!
//! - **Intra-list diversity** of a list is `1 - mean cosine` over its pairs of items, the cosine
//!   being the evaluator's own co-occurrence cosine over everything learned so far (the item-kNN
//!   baselines', the same yardstick for every model); averaged over lists of two or more items.
//! - **Novelty** of a list is the mean of `-log2(share)` over its items, `share` being the item's
//!   share of all events learned so far (an item with none counts as one); averaged over lists.
//!   Higher means less popular items.
//! - **Exposure Gini** is the Gini coefficient of how often each catalogue item was shown, over
//!   every list an event was scored against: 0 when every item is shown equally often, near 1
//!   when a few items take every slot.
//!
//! Each evaluated event has exactly one relevant item, the one the user went on to touch, so
//! HR@k equals recall@k, NDCG@k is `1 / log2(rank + 1)` for a hit at `rank` (1-based) and 0 for
//! a miss (the ideal DCG is 1), and the reciprocal rank is `1 / rank` (0 for a miss, so MRR is
//! MRR@k).

/// `1 / log2(rank + 1)` for a hit at `rank` (1-based), 0 for a miss.
///
/// ```
/// use recflow::eval::quality::ndcg;
/// assert_eq!(ndcg(Some(1)), 1.0);
/// assert_eq!(ndcg(Some(3)), 0.5);
/// assert_eq!(ndcg(None), 0.0);
/// ```
pub fn ndcg(rank: Option<usize>) -> f64 {
    rank.map_or(0.0, |r| 1.0 / ((r + 1) as f64).log2())
}

/// `1 / rank` for a hit at `rank` (1-based), 0 for a miss.
pub fn reciprocal_rank(rank: Option<usize>) -> f64 {
    rank.map_or(0.0, |r| 1.0 / r as f64)
}

/// A growable set of small integers (interned item numbers), for coverage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ItemSet {
    words: Vec<u64>,
    len: usize,
}

impl ItemSet {
    /// Adds `item`; says whether it was new.
    pub fn insert(&mut self, item: u32) -> bool {
        let (word, bit) = (item as usize / 64, item % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let new = self.words[word] & (1 << bit) == 0;
        self.words[word] |= 1 << bit;
        self.len += usize::from(new);
        new
    }

    /// Number of items in the set.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// What one list did for one event.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outcome {
    /// The 1-based rank of the event's item in the list, if it was there.
    pub rank: Option<usize>,
    /// The user had no list at all.
    pub empty: bool,
    /// Every item of the list was a popularity fill-in.
    pub all_fallback: bool,
    /// The hit item was a popularity fill-in.
    pub fallback_hit: bool,
    /// The list's mean pairwise cosine (lists of two or more items).
    pub list_similarity: Option<f64>,
    /// The list's mean self-information in bits (non-empty lists).
    pub novelty: Option<f64>,
}

/// Running totals for one model over one stretch of the stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    /// Evaluated events.
    pub events: u64,
    /// Events whose item was in the list.
    pub hits: u64,
    /// Sum of NDCG@k over the events.
    pub ndcg_sum: f64,
    /// Sum of reciprocal ranks over the events.
    pub rr_sum: f64,
    /// Events for which the user had no list.
    pub empty: u64,
    /// Events whose list held only popularity fill-ins.
    pub all_fallback: u64,
    /// Hits on popularity fill-ins.
    pub fallback_hits: u64,
    /// Items shown in at least one list used for an evaluated event.
    pub shown: ItemSet,
    /// How often each item was shown.
    pub exposures: rustc_hash::FxHashMap<u32, u64>,
    /// Sum of list similarities, and how many lists had one.
    pub similarity_sum: (f64, u64),
    /// Sum of list novelties, and how many lists had one.
    pub novelty_sum: (f64, u64),
    /// Dataflow time of the first and last evaluated event.
    pub times: Option<(u64, u64)>,
}

impl Tally {
    /// Counts one event at dataflow `time` whose list showed `items` (interned) with `outcome`.
    pub fn record(&mut self, time: u64, items: impl IntoIterator<Item = u32>, outcome: Outcome) {
        self.events += 1;
        self.hits += u64::from(outcome.rank.is_some());
        self.ndcg_sum += ndcg(outcome.rank);
        self.rr_sum += reciprocal_rank(outcome.rank);
        self.empty += u64::from(outcome.empty);
        self.all_fallback += u64::from(outcome.all_fallback);
        self.fallback_hits += u64::from(outcome.fallback_hit);
        for item in items {
            self.shown.insert(item);
            *self.exposures.entry(item).or_default() += 1;
        }
        let add = |(sum, lists): &mut (f64, u64), value: Option<f64>| {
            if let Some(value) = value {
                *sum += value;
                *lists += 1;
            }
        };
        add(&mut self.similarity_sum, outcome.list_similarity);
        add(&mut self.novelty_sum, outcome.novelty);
        self.times = Some(self.times.map_or((time, time), |(first, _)| (first, time)));
    }

    /// The shares, with coverage over a catalogue of `catalogue` items.
    pub fn summary(&self, catalogue: usize) -> Summary {
        let share = |x: u64, of: u64| if of == 0 { 0.0 } else { x as f64 / of as f64 };
        Summary {
            events: self.events,
            hits: self.hits,
            hr: share(self.hits, self.events),
            ndcg: if self.events == 0 { 0.0 } else { self.ndcg_sum / self.events as f64 },
            mrr: if self.events == 0 { 0.0 } else { self.rr_sum / self.events as f64 },
            coverage: share(self.shown.len() as u64, catalogue as u64),
            no_list: share(self.empty, self.events),
            fallback: share(self.all_fallback, self.events),
            fallback_hits: share(self.fallback_hits, self.hits),
            diversity: mean(self.similarity_sum).map(|similarity| 1.0 - similarity),
            novelty: mean(self.novelty_sum),
            gini: gini(&self.exposures.values().copied().collect::<Vec<_>>(), catalogue),
            from_time: self.times.map(|t| t.0),
            to_time: self.times.map(|t| t.1),
        }
    }
}

/// The metrics of one model over one stretch of the stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// Evaluated events.
    pub events: u64,
    /// Hits.
    pub hits: u64,
    /// HR@k: share of events whose item was in the list (recall@k with one relevant item).
    pub hr: f64,
    /// Mean NDCG@k.
    pub ndcg: f64,
    /// Mean reciprocal rank (MRR@k).
    pub mrr: f64,
    /// Share of the catalogue (every item of an accepted event) shown in at least one list.
    pub coverage: f64,
    /// Share of events for which the user had no list (always counted as a miss).
    pub no_list: f64,
    /// Share of events whose list held only popularity fill-ins.
    pub fallback: f64,
    /// Share of hits that were popularity fill-ins.
    pub fallback_hits: f64,
    /// Mean intra-list diversity, if any list had two items.
    pub diversity: Option<f64>,
    /// Mean novelty in bits, if any list had an item.
    pub novelty: Option<f64>,
    /// Gini coefficient of item exposures over the catalogue.
    pub gini: f64,
    /// Dataflow time (ms) of the first evaluated event.
    pub from_time: Option<u64>,
    /// Dataflow time (ms) of the last evaluated event.
    pub to_time: Option<u64>,
}

/// The mean of a `(sum, count)`, if the count is not 0.
fn mean((sum, count): (f64, u64)) -> Option<f64> {
    (count > 0).then(|| sum / count as f64)
}

/// The Gini coefficient of `exposures` (per item shown, in any order) over a catalogue of
/// `catalogue` items (the items missing from `exposures` were never shown): `Σ (2i - n - 1) x_i /
/// (n Σ x)` over the counts sorted ascending, `i` from 1. 0 when nothing was shown.
///
/// ```
/// use recflow::eval::quality::gini;
/// assert_eq!(gini(&[5, 5, 5, 5], 4), 0.0);
/// assert_eq!(gini(&[8], 4), 0.75, "one item of four takes every slot");
/// ```
pub fn gini(exposures: &[u64], catalogue: usize) -> f64 {
    let n = catalogue.max(exposures.len());
    let total: u64 = exposures.iter().sum();
    if n == 0 || total == 0 {
        return 0.0;
    }
    let mut sorted = exposures.to_vec();
    sorted.sort_unstable();
    let unshown = n - sorted.len();
    let weighted: f64 =
        sorted.iter().enumerate().map(|(at, &x)| (2.0 * (unshown + at + 1) as f64 - n as f64 - 1.0) * x as f64).sum();
    weighted / (n as f64 * total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_relevant_item_metrics() {
        assert_eq!(ndcg(Some(1)), 1.0);
        assert!((ndcg(Some(2)) - 0.630_929_753_571_457_4).abs() < 1e-12);
        assert_eq!(ndcg(Some(7)), 1.0 / 3.0);
        assert_eq!(reciprocal_rank(Some(4)), 0.25);
        assert_eq!(reciprocal_rank(None), 0.0);
    }

    #[test]
    fn tally_shares() {
        let mut tally = Tally::default();
        let plain = Outcome {
            rank: None,
            empty: false,
            all_fallback: false,
            fallback_hit: false,
            list_similarity: None,
            novelty: None,
        };
        let hit = |rank, similarity, novelty| Outcome {
            rank: Some(rank),
            list_similarity: Some(similarity),
            novelty: Some(novelty),
            ..plain
        };
        tally.record(1_000, [0, 1], hit(1, 0.25, 2.0));
        tally.record(2_000, [1, 2], hit(2, 0.75, 4.0));
        tally.record(2_000, [], Outcome { empty: true, ..plain });
        let fill_in = Outcome { rank: Some(1), all_fallback: true, fallback_hit: true, novelty: Some(3.0), ..plain };
        tally.record(3_000, [3], fill_in);
        let s = tally.summary(8);
        assert_eq!((s.events, s.hits), (4, 3));
        assert_eq!(s.hr, 0.75);
        assert!((s.ndcg - (1.0 + 1.0 / 3f64.log2() + 0.0 + 1.0) / 4.0).abs() < 1e-12);
        assert_eq!(s.mrr, (1.0 + 0.5 + 1.0) / 4.0);
        assert_eq!(s.coverage, 0.5, "items 0..=3 of 8");
        assert_eq!((s.no_list, s.fallback, s.fallback_hits), (0.25, 0.25, 1.0 / 3.0));
        assert_eq!((s.from_time, s.to_time), (Some(1_000), Some(3_000)));
        assert_eq!(s.diversity, Some(0.5), "1 - mean(0.25, 0.75) over the two lists of two");
        assert_eq!(s.novelty, Some(3.0), "mean over the three non-empty lists");
        // Exposures 1, 2, 1, 1 and four unshown items of eight: sorted 0,0,0,0,1,1,1,2.
        let expected =
            ((2.0 * 5.0 - 9.0) + (2.0 * 6.0 - 9.0) + (2.0 * 7.0 - 9.0) + 2.0 * (2.0 * 8.0 - 9.0)) / (8.0 * 5.0);
        assert!((s.gini - expected).abs() < 1e-12, "{} != {expected}", s.gini);
        assert_eq!(Tally::default().summary(5).diversity, None);
        assert_eq!(Tally::default().summary(0).hr, 0.0);
    }

    #[test]
    fn item_set_counts_distinct_items() {
        let mut set = ItemSet::default();
        assert!(set.insert(200));
        assert!(!set.insert(200));
        assert!(set.insert(3));
        assert_eq!(set.len(), 2);
    }
}
