//! The item-kNN baselines the evaluator keeps itself, exactly and independently of the dataflow:
//! a simple, honest model every evaluation measures the pipeline against.
//!
//! - **Co-occurrence** is over everything learned so far: `c(i, j)` counts the users who touched
//!   both `i` and `j`, `n_i` the users who touched `i`, and `sim(i, j) = c(i, j) / sqrt(n_i n_j)`
//!   (cosine). Nothing expires and no row is cut to a number of neighbours.
//! - **Seeds** are the user's `seeds` most recently touched distinct items (latest touch first).
//! - **Scores**: `score(u, j) = Σ w_r · sim(s_r, j)` over the seeds `s_0, s_1, ...` (most recent
//!   first), with `w_r = 1` for `item-knn` and `w_r = RECENCY_DECAY^r` for `item-knn-recent`.
//!   A list is the `k` best positive scores (score desc in billionths, item asc), excluded items
//!   skipped; the evaluator fills a shorter list from global popularity, as the pipeline fills
//!   its lists from its popular pool.
//!
//! The baselines learn every accepted event (whatever its action, weight or rating) with the
//! same cut as the popularity baselines: an event at dataflow time `T` is scored against what
//! was learned at times before `T`.

use rustc_hash::FxHashMap as HashMap;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use crate::event::{Event, Id};

/// The weight of each older seed relative to the next more recent one in `item-knn-recent`.
pub const RECENCY_DECAY: f64 = 0.8;

/// What one user has touched: the order of latest touches.
#[derive(Debug, Default)]
struct Touched {
    /// Item (interned) to the sequence number of its latest touch.
    latest: HashMap<u32, u64>,
    /// Sequence number of each item's latest touch to the item: the touch order.
    order: BTreeMap<u64, u32>,
}

/// Co-occurrence over all learned events, and every user's touch order.
#[derive(Debug)]
pub struct ItemKnn {
    seeds: usize,
    /// Interned item numbers and their ids.
    index: HashMap<Id, u32>,
    ids: Vec<Id>,
    /// Per item, the users who touched it.
    users_of: Vec<u32>,
    /// Per item, its co-occurrence counts with other items.
    rows: Vec<Row>,
    users: HashMap<Id, Touched>,
    /// Touches learned: the next sequence number.
    touches: u64,
    /// Scratch space for scoring: per item, each variant's partial score (zero between lists).
    plain: Vec<f64>,
    recent: Vec<f64>,
    candidates: Vec<u32>,
}

/// One item's co-occurrence counts: a map while few items co-occur with it, an array indexed by
/// item once many do (iterating an array is several times faster than a map).
#[derive(Debug)]
enum Row {
    Sparse(HashMap<u32, u32>),
    Dense(Vec<u32>),
}

impl Row {
    /// Adds one co-occurrence with `other`, in a catalogue of `catalogue` items so far.
    fn add(&mut self, other: u32, catalogue: usize) {
        match self {
            Row::Sparse(counts) => {
                *counts.entry(other).or_default() += 1;
                if counts.len() >= 64 && counts.len() * 8 >= catalogue {
                    let mut dense = vec![0; catalogue];
                    for (&item, &count) in counts.iter() {
                        dense[item as usize] = count;
                    }
                    *self = Row::Dense(dense);
                }
            }
            Row::Dense(counts) => {
                if counts.len() <= other as usize {
                    counts.resize(catalogue.max(other as usize + 1), 0);
                }
                counts[other as usize] += 1;
            }
        }
    }
}

/// A user's lists from both baselines.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KnnLists {
    /// `item-knn`: seeds weighted equally.
    pub plain: Vec<Id>,
    /// `item-knn-recent`: older seeds weighted down.
    pub recent: Vec<Id>,
}

impl ItemKnn {
    /// Baselines seeding each user's scores with their `seeds` most recent items.
    pub fn new(seeds: usize) -> ItemKnn {
        ItemKnn {
            seeds,
            index: HashMap::default(),
            ids: Vec::new(),
            users_of: Vec::new(),
            rows: Vec::new(),
            users: HashMap::default(),
            touches: 0,
            plain: Vec::new(),
            recent: Vec::new(),
            candidates: Vec::new(),
        }
    }

    fn intern(&mut self, item: &Id) -> u32 {
        if let Some(&number) = self.index.get(item) {
            return number;
        }
        let number = self.ids.len() as u32;
        self.index.insert(item.clone(), number);
        self.ids.push(item.clone());
        self.users_of.push(0);
        self.rows.push(Row::Sparse(HashMap::default()));
        self.plain.push(0.0);
        self.recent.push(0.0);
        number
    }

    /// Learns an event: a touch of its item by its user. A user's first touch of an item pairs it
    /// with every item they touched before.
    pub fn learn(&mut self, event: &Event) {
        let item = self.intern(&event.item);
        let sequence = self.touches;
        self.touches += 1;
        let touched = self.users.entry(event.user.clone()).or_default();
        match touched.latest.insert(item, sequence) {
            Some(previous) => {
                touched.order.remove(&previous);
            }
            None => {
                let catalogue = self.ids.len();
                for &other in touched.latest.keys().filter(|&&other| other != item) {
                    self.rows[item as usize].add(other, catalogue);
                    self.rows[other as usize].add(item, catalogue);
                }
                self.users_of[item as usize] += 1;
            }
        }
        touched.order.insert(sequence, item);
    }

    /// The cosine of two items over everything learned so far, `c(a, b) / sqrt(n_a n_b)`; 0 for
    /// an item never learned.
    pub fn cosine(&self, a: &Id, b: &Id) -> f64 {
        let (Some(&a), Some(&b)) = (self.index.get(a), self.index.get(b)) else { return 0.0 };
        let both = match &self.rows[a as usize] {
            Row::Sparse(counts) => counts.get(&b).copied().unwrap_or(0),
            Row::Dense(counts) => counts.get(b as usize).copied().unwrap_or(0),
        };
        if both == 0 {
            return 0.0;
        }
        f64::from(both) / (f64::from(self.users_of[a as usize]) * f64::from(self.users_of[b as usize])).sqrt()
    }

    /// The mean cosine over the pairs of `items`, or `None` for fewer than two items.
    pub fn mean_pairwise_cosine<'a>(&self, items: impl Iterator<Item = &'a Id> + Clone) -> Option<f64> {
        let (mut sum, mut pairs) = (0.0, 0u32);
        for (at, a) in items.clone().enumerate() {
            for b in items.clone().skip(at + 1) {
                sum += self.cosine(a, b);
                pairs += 1;
            }
        }
        (pairs > 0).then(|| sum / f64::from(pairs))
    }

    /// Both baselines' top-`k` for `user` from what was learned so far, skipping items for which
    /// `skip` is true.
    pub fn lists(&mut self, user: &Id, k: usize, mut skip: impl FnMut(&Id) -> bool) -> KnnLists {
        let Some(touched) = self.users.get(user) else { return KnnLists::default() };
        let seeds: Vec<u32> = touched.order.values().rev().take(self.seeds).copied().collect();
        self.add_seed_rows(&seeds);
        let mut plain: Vec<(i64, u32)> = Vec::with_capacity(self.candidates.len());
        let mut recent: Vec<(i64, u32)> = Vec::with_capacity(self.candidates.len());
        for &candidate in &self.candidates {
            let at = candidate as usize;
            let (sum, weighted) = (std::mem::take(&mut self.plain[at]), std::mem::take(&mut self.recent[at]));
            let norm = f64::from(self.users_of[at]).sqrt();
            plain.push((fixed(sum / norm), candidate));
            recent.push((fixed(weighted / norm), candidate));
        }
        KnnLists {
            plain: best(&mut plain, k, &self.ids, &mut skip),
            recent: best(&mut recent, k, &self.ids, &mut skip),
        }
    }

    /// Adds every seed's row into the partial scores, most recent seed first, and lists the items
    /// that got a score in `candidates`.
    ///
    /// An array row is added whole, zeros included (adding `0.0` leaves a sum as it is), in a
    /// loop without branches; the candidates are then found by one pass over the catalogue, which
    /// is at most 8 times as long as that row's co-occurring items. A map row adds its entries
    /// and notes their items as it goes.
    fn add_seed_rows(&mut self, seeds: &[u32]) {
        self.candidates.clear();
        let mut any_array = false;
        let mut weight = 1.0;
        for &seed in seeds {
            let norm = f64::from(self.users_of[seed as usize]).sqrt();
            match &self.rows[seed as usize] {
                Row::Sparse(counts) => {
                    for (&candidate, &both) in counts {
                        let at = candidate as usize;
                        if self.plain[at] == 0.0 {
                            self.candidates.push(candidate);
                        }
                        let term = f64::from(both) / norm;
                        self.plain[at] += term;
                        self.recent[at] += weight * term;
                    }
                }
                Row::Dense(counts) => {
                    any_array = true;
                    for ((&both, plain), recent) in counts.iter().zip(&mut self.plain).zip(&mut self.recent) {
                        let term = f64::from(both) / norm;
                        *plain += term;
                        *recent += weight * term;
                    }
                }
            }
            weight *= RECENCY_DECAY;
        }
        if any_array {
            self.candidates.clear();
            let scored = self.plain.iter().enumerate().filter(|(_, sum)| **sum != 0.0);
            self.candidates.extend(scored.map(|(candidate, _)| candidate as u32));
        }
    }
}

/// A score in billionths: scores that are equal but for rounding in the last bits of a float
/// (summed in another order) tie, and the tie goes to the smaller item.
fn fixed(score: f64) -> i64 {
    crate::dataflow::ranking::round_to_i64(score * SCORE_UNITS)
}

/// Units of a score in [`fixed`].
const SCORE_UNITS: f64 = 1e9;

/// Moves every entry whose score is at least the `n`-th highest to the front, and returns how
/// many that is (at least `n`; more when scores tie there). One pass keeps the `n` highest scores
/// seen in a heap, where most entries cost a single comparison with its least; a second pass
/// partitions. Entries are compared by score alone, so ties are left for the caller's order.
fn move_best_to_front(scored: &mut [(i64, u32)], n: usize) -> usize {
    let mut highest: BinaryHeap<Reverse<i64>> = BinaryHeap::with_capacity(n);
    for &(score, _) in scored.iter() {
        if highest.len() < n {
            highest.push(Reverse(score));
        } else if let Some(mut least) = highest.peek_mut().filter(|least| score > least.0) {
            *least = Reverse(score);
        }
    }
    let Some(&Reverse(threshold)) = highest.peek() else { return 0 };
    let mut front = 0;
    for at in 0..scored.len() {
        if scored[at].0 >= threshold {
            scored.swap(front, at);
            front += 1;
        }
    }
    front
}

/// The `k` best of `scored` (score desc, item asc) that `skip` lets through, checking `skip` only
/// on the best few: sorts a growing prefix rather than everything.
fn best(scored: &mut [(i64, u32)], k: usize, ids: &[Id], skip: &mut impl FnMut(&Id) -> bool) -> Vec<Id> {
    let order = |a: &(i64, u32), b: &(i64, u32)| b.0.cmp(&a.0).then_with(|| ids[a.1 as usize].cmp(&ids[b.1 as usize]));
    let mut list = Vec::with_capacity(k);
    let mut rest = scored;
    let mut take = 4 * k.max(1);
    while list.len() < k && !rest.is_empty() {
        let front = if rest.len() > take { move_best_to_front(rest, take) } else { rest.len() };
        let (head, tail) = rest.split_at_mut(front);
        head.sort_unstable_by(order);
        for (score, candidate) in head.iter() {
            if list.len() == k || *score <= 0 {
                return list;
            }
            let id = &ids[*candidate as usize];
            if !skip(id) {
                list.push(id.clone());
            }
        }
        rest = tail;
        take *= 2;
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Action;

    fn view(user: i64, item: i64) -> Event {
        Event { user: Id::Num(user), item: Id::Num(item), category: None, action: Action::View, value: None, ts: 0 }
    }

    fn ids(items: &[i64]) -> Vec<Id> {
        items.iter().map(|i| Id::Num(*i)).collect()
    }

    /// A fixture small enough to work out by hand.
    ///
    /// Users 1: {10, 20, 30}, 2: {10, 20}, 3: {20, 40}, 4: {30, 40}, then user 5 touches 40 and
    /// then 10 (seeds, most recent first: 10, 40). So n = 10:3, 20:3, 30:2, 40:3 and c(10,20) = 2,
    /// c(10,30) = c(10,40) = c(20,30) = c(20,40) = c(30,40) = 1. For user 5:
    /// - 20: sim(10,20) = 2/3, sim(40,20) = 1/3: plain 1.0, recent 2/3 + 0.8/3 = 0.933;
    /// - 30: sim(10,30) = sim(40,30) = 1/sqrt(6) = 0.408: plain 0.816, recent 0.735;
    /// - 10 (through seed 40) and 40 (through seed 10): 1/3 each: plain 0.333 both, recent 10 is
    ///   0.267 and 40 is 0.333.
    #[test]
    fn scores_match_the_hand_computed_fixture() {
        let mut knn = ItemKnn::new(10);
        for (user, item) in [(1, 10), (1, 20), (1, 30), (2, 10), (2, 20), (3, 20), (3, 40), (4, 30), (4, 40)] {
            knn.learn(&view(user, item));
        }
        knn.learn(&view(5, 40));
        knn.learn(&view(5, 10));
        let seen = [Id::Num(10), Id::Num(40)];
        let lists = knn.lists(&Id::Num(5), 10, |item| seen.contains(item));
        assert_eq!(lists, KnnLists { plain: ids(&[20, 30]), recent: ids(&[20, 30]) });
        // Without exclusions user 5's own items compete: a tie in the plain list (item asc), the
        // more recent seed's neighbour first in the recent one.
        let lists = knn.lists(&Id::Num(5), 10, |_| false);
        assert_eq!(lists, KnnLists { plain: ids(&[20, 30, 10, 40]), recent: ids(&[20, 30, 40, 10]) });
        assert_eq!(knn.lists(&Id::Num(5), 3, |_| false).recent, ids(&[20, 30, 40]), "cut at k");
        // User 1's seeds are 30, 20, 10; the only unseen item, 40, scores 1/sqrt(6) + 1/3.
        let seen = ids(&[10, 20, 30]);
        assert_eq!(knn.lists(&Id::Num(1), 10, |item| seen.contains(item)).plain, ids(&[40]));
        assert_eq!(knn.lists(&Id::Num(9), 10, |_| false), KnnLists::default(), "an unknown user has no list");
    }

    /// Only the most recent seeds count, and recency decides between equal co-occurrences.
    #[test]
    fn seeds_are_the_most_recent_distinct_items() {
        let mut knn = ItemKnn::new(1);
        // Item 1 goes with 100, item 2 with 200, equally often.
        for user in 10..13 {
            knn.learn(&view(user, 1));
            knn.learn(&view(user, 100));
            knn.learn(&view(user + 10, 2));
            knn.learn(&view(user + 10, 200));
        }
        knn.learn(&view(1, 1));
        knn.learn(&view(1, 2));
        assert_eq!(knn.lists(&Id::Num(1), 5, |_| false).plain, ids(&[200, 1]), "seed 2 only");
        // Touching 1 again makes it the most recent item: the seed is 1 now.
        knn.learn(&view(1, 1));
        assert_eq!(knn.lists(&Id::Num(1), 5, |_| false).plain, ids(&[100, 2]));
        // With two seeds the plain list ties 100 and 200 (item asc); the recent one prefers 100.
        knn.seeds = 2;
        let lists = knn.lists(&Id::Num(1), 2, |item| *item == Id::Num(1) || *item == Id::Num(2));
        assert_eq!(lists.plain, ids(&[100, 200]));
        assert_eq!(lists.recent, ids(&[100, 200]));
        knn.learn(&view(1, 2));
        let lists = knn.lists(&Id::Num(1), 2, |item| *item == Id::Num(1) || *item == Id::Num(2));
        assert_eq!(lists.plain, ids(&[100, 200]), "a tie: item asc");
        assert_eq!(lists.recent, ids(&[200, 100]), "2 is the most recent seed now");
    }

    /// From-scratch lists: co-occurrence, user counts and seeds recomputed from all events.
    fn reference(events: &[(i64, i64)], user: i64, seeds: usize, k: usize, recent: bool) -> Vec<Id> {
        use std::collections::{BTreeMap, BTreeSet};
        let mut items_of: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
        for (u, i) in events {
            items_of.entry(*u).or_default().insert(*i);
        }
        let users_of = |item: i64| items_of.values().filter(|items| items.contains(&item)).count() as f64;
        let both = |a: i64, b: i64| items_of.values().filter(|items| items.contains(&a) && items.contains(&b)).count();
        let mut order: Vec<i64> = Vec::new();
        for (_, i) in events.iter().filter(|(u, _)| *u == user).rev() {
            if !order.contains(i) {
                order.push(*i);
            }
        }
        let mut scores: BTreeMap<i64, f64> = BTreeMap::new();
        for (r, seed) in order.iter().take(seeds).enumerate() {
            let weight = if recent { RECENCY_DECAY.powi(r as i32) } else { 1.0 };
            for candidate in items_of.values().flatten().collect::<BTreeSet<_>>() {
                let c = both(*seed, *candidate);
                if c > 0 && candidate != seed {
                    let sim = c as f64 / (users_of(*seed) * users_of(*candidate)).sqrt();
                    *scores.entry(*candidate).or_default() += weight * sim;
                }
            }
        }
        let mut ranked: Vec<(i64, i64)> =
            scores.into_iter().map(|(i, s)| (fixed(s), i)).filter(|(s, _)| *s > 0).collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        ranked.into_iter().take(k).map(|(_, i)| Id::Num(i)).collect()
    }

    /// A xorshift generator from `seed`: each call gives a number below its argument.
    fn below(mut state: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        }
    }

    /// With many tied scores and items skipped, the best `k` are those of a full sort, at every
    /// `k` (which moves the prefix `best` sorts first).
    #[test]
    fn best_matches_a_full_sort() {
        let mut next = below(0x9e37_79b9_7f4a_7c15);
        let ids: Vec<Id> = (0..300).map(|i| Id::Num((i * 7919) % 1009)).collect();
        for round in 0..40 {
            let len = 1 + next(300) as usize;
            let scored: Vec<(i64, u32)> = (0..len).map(|at| (next(12) as i64 - 2, at as u32)).collect();
            let skipped: Vec<bool> = (0..300).map(|_| next(4) == 0).collect();
            let mut sorted = scored.clone();
            sorted.sort_by(|a, b| b.0.cmp(&a.0).then(ids[a.1 as usize].cmp(&ids[b.1 as usize])));
            for k in [1, 3, 10, 40] {
                let expected: Vec<Id> = sorted
                    .iter()
                    .filter(|(score, item)| *score > 0 && !skipped[*item as usize])
                    .take(k)
                    .map(|(_, item)| ids[*item as usize].clone())
                    .collect();
                let at = |id: &Id| ids.iter().position(|other| other == id).expect("a listed id");
                let mut skip = |id: &Id| skipped[at(id)];
                assert_eq!(best(&mut scored.clone(), k, &ids, &mut skip), expected, "round {round}, k {k}");
            }
        }
    }

    /// On random streams, over a catalogue small enough for rows to turn into arrays, the lists
    /// equal the from-scratch answer (scores in billionths, ties by item).
    #[test]
    fn lists_match_a_from_scratch_reference_on_random_streams() {
        let mut below = below(0x2545_f491_4f6c_dd1d);
        let mut next = |n: u64| below(n) as i64;
        for round in 0..3 {
            let (users, items) = (12 + round * 5, 80 + round * 40);
            let mut knn = ItemKnn::new(4);
            let mut events = Vec::new();
            for step in 0..600 {
                let user = next(users as u64);
                // Popular items often, so some rows become dense.
                let item = if next(3) == 0 { next(8) } else { next(items as u64) };
                knn.learn(&view(user, item));
                events.push((user, item));
                if step % 7 == 0 {
                    let probe = next(users as u64);
                    let lists = knn.lists(&Id::Num(probe), 5, |_| false);
                    assert_eq!(lists.plain, reference(&events, probe, 4, 5, false), "round {round} step {step}");
                    assert_eq!(lists.recent, reference(&events, probe, 4, 5, true), "round {round} step {step}");
                }
            }
            assert!(knn.rows.iter().any(|row| matches!(row, Row::Dense(_))), "some rows are arrays");
            assert!(knn.rows.iter().any(|row| matches!(row, Row::Sparse(_))), "some rows are maps");
        }
    }
}
