//! The test-then-learn loop, one dataflow time at a time: score every event of the time against
//! each model's lists as they were before it, then let the models learn the events.
//!
//! **Before the event.** The dataflow's time is event time in ticks, and all events of a tick
//! enter together. The list an event at time `T` is scored against is the user's list as of the
//! latest completed time strictly before `T`: every change the dataflow made at times `< T`,
//! none made at `T`. Events of the same tick therefore do not see each other, whatever their
//! order in the file. The popularity baselines and the exclusions use the same cut (see
//! [`super::baseline`]).
//!
//! **Which events are scored.** Accepted events are numbered in replay order (time, then event
//! time, then user, item, action). The first `warmup` of them are learned only. After that an
//! event is skipped, not scored, when its item is already excluded for its user under the
//! pipeline's `exclude` rule (a repeat of a seen or bought item): no model that honours the rule
//! can recommend it, so it says nothing about ranking. Every other event is scored against every
//! model. A user without a list of their own is scored against the popular items the pipeline
//! gives such users (its new-user list, as of before the event), as a server answers them; a miss
//! when there are none yet.

use rustc_hash::FxHashMap as HashMap;

use super::baseline::{Exclusions, Popularity, WindowedPopularity};
use super::knn::{ItemKnn, KnnLists};
use super::quality::{Outcome, Summary, Tally};
use super::variants::{Model, Variant};
use crate::event::{Event, Id};
use crate::event_time::Time;
use crate::results::{ResultKey, ResultValue};
use crate::sink::changelog::Changelog;
use crate::spec::{Exclude, Horizon, Pipeline};

/// Where warm-up ends and how the scored part of the stream is cut into slices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Accepted events the replay will see.
    pub total: u64,
    /// The first this many are learned but not scored.
    pub warmup: u64,
    /// Number of slices of equal numbers of accepted events after warm-up.
    pub slices: usize,
}

impl Plan {
    /// A plan for `total` accepted events, `warmup` a fraction in `[0, 1)`.
    pub fn new(total: u64, warmup: f64, slices: usize) -> Plan {
        let warmup = ((total as f64) * warmup).floor() as u64;
        Plan { total, warmup: warmup.min(total), slices: slices.max(1) }
    }

    /// The slice of the accepted event numbered `index` (from 0, past warm-up).
    pub fn slice_of(&self, index: u64) -> usize {
        let span = self.total.saturating_sub(self.warmup).max(1) as u128;
        let after = index.saturating_sub(self.warmup) as u128;
        ((after * self.slices as u128 / span) as usize).min(self.slices - 1)
    }

    /// The slice the accepted event numbered `index` is scored in; `None` in the warm-up.
    pub fn scored_slice(&self, index: u64) -> Option<usize> {
        (index >= self.warmup).then(|| self.slice_of(index))
    }
}

/// How the replayed events were used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Accepted events replayed.
    pub accepted: u64,
    /// Events learned only, during warm-up.
    pub warmup: u64,
    /// Events not scored because their item was already excluded for their user.
    pub skipped: u64,
    /// Events scored against every model.
    pub evaluated: u64,
}

/// The metrics of one model.
#[derive(Clone, Debug, PartialEq)]
pub struct VariantResult {
    /// The model's name.
    pub name: String,
    /// What it is.
    pub description: String,
    /// Whether it is a dataflow (its fallback shares mean something) or a popularity baseline.
    pub dataflow: bool,
    /// Over all scored events.
    pub overall: Summary,
    /// Per slice of the stream, in order.
    pub slices: Vec<Summary>,
}

/// The deterministic outcome of a replay: the same for any number of workers.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// How the events were used.
    pub counts: Counts,
    /// Distinct items in accepted events: the catalogue coverage is measured against.
    pub catalogue: usize,
    /// One entry per model, in the order of the variants.
    pub results: Vec<VariantResult>,
}

/// A model's current state.
enum State {
    /// A dataflow's current lists, `(item, fallback)` best first, kept by a changelog, and its
    /// list for users without one of their own.
    Dataflow { changelog: Changelog, lists: HashMap<Id, Vec<(Id, bool)>>, popular: Vec<(Id, bool)> },
    /// The global popularity baseline (shared state below).
    Global,
    /// The windowed popularity baseline (shared state below).
    Windowed,
    /// An item-kNN baseline (shared state below); `true` for the recency-weighted one.
    Knn(bool),
}

/// The evaluator's state.
pub struct Prequential {
    k: usize,
    plan: Plan,
    names: Vec<(String, String)>,
    models: Vec<State>,
    /// Per model: overall tally and per-slice tallies.
    tallies: Vec<(Tally, Vec<Tally>)>,
    exclusions: Exclusions,
    global: Popularity,
    windowed: WindowedPopularity,
    knn: ItemKnn,
    catalogue: HashMap<Id, u32>,
    counts: Counts,
    /// Events learned so far (the global popularity's total).
    learned: u64,
}

impl Prequential {
    /// An evaluator of `variants` of `pipeline` with lists of `k`, following `plan`, the item-kNN
    /// baselines seeded by `knn_seeds` recent items.
    pub fn new(pipeline: &Pipeline, variants: &[Variant], k: usize, knn_seeds: usize, plan: Plan) -> Prequential {
        let recommend = pipeline.recommend.clone().unwrap_or_default();
        let tick = pipeline.time.tick.millis();
        let models = variants
            .iter()
            .map(|v| match v.model {
                Model::Dataflow(_) => {
                    State::Dataflow { changelog: Changelog::new(None), lists: HashMap::default(), popular: Vec::new() }
                }
                Model::GlobalPopularity => State::Global,
                Model::WindowedPopularity => State::Windowed,
                Model::ItemKnn { recent } => State::Knn(recent),
            })
            .collect();
        Prequential {
            k,
            plan,
            names: variants.iter().map(|v| (v.name.clone(), v.description.clone())).collect(),
            models,
            tallies: variants.iter().map(|_| (Tally::default(), vec![Tally::default(); plan.slices])).collect(),
            exclusions: Exclusions::new(
                if pipeline.recommend.is_some() { recommend.exclude } else { Exclude::None },
                if pipeline.recommend.is_some() { recommend.long_term } else { Horizon::All },
                tick,
            ),
            global: Popularity::default(),
            windowed: WindowedPopularity::new(recommend.popular_window.millis(), tick),
            knn: ItemKnn::new(knn_seeds),
            catalogue: HashMap::default(),
            counts: Counts::default(),
            learned: 0,
        }
    }

    /// Events scored so far plus events learned only: how far the replay has come.
    pub fn replayed(&self) -> u64 {
        self.counts.accepted
    }

    /// Handles dataflow time `time`, once no event or result at it or before can still arrive:
    /// scores `events` (the events that entered at `time`) against the lists as of before `time`,
    /// learns them, then applies `updates`, every model's result updates at `time` as
    /// `(variant, key, value, diff)`.
    pub fn step(&mut self, time: Time, mut events: Vec<Event>, updates: Vec<(usize, ResultKey, ResultValue, isize)>) {
        events.sort_by(|a, b| (a.ts, a).cmp(&(b.ts, b)));
        self.windowed.advance(time);
        let mut list: Vec<(Id, bool)> = Vec::with_capacity(self.k);
        let mut interned: Vec<u32> = Vec::with_capacity(self.k);
        for event in &events {
            let index = self.counts.accepted;
            self.counts.accepted += 1;
            let Some(slice) = self.plan.scored_slice(index) else {
                self.counts.warmup += 1;
                continue;
            };
            if self.exclusions.is_excluded(&event.user, &event.item, time) {
                self.counts.skipped += 1;
                continue;
            }
            self.counts.evaluated += 1;
            let knn = if self.models.iter().any(|m| matches!(m, State::Knn(_))) {
                self.knn.lists(&event.user, self.k, |item| self.exclusions.is_excluded(&event.user, item, time))
            } else {
                KnnLists::default()
            };
            for (model, tallies) in self.models.iter().zip(self.tallies.iter_mut()) {
                list.clear();
                let mut own_list = true;
                let excluded = |item: &Id| self.exclusions.is_excluded(&event.user, item, time);
                match model {
                    State::Knn(recent) => {
                        let items = if *recent { &knn.recent } else { &knn.plain };
                        list.extend(items.iter().map(|i| (i.clone(), false)));
                        // Short lists are filled from global popularity, as the pipeline fills from its pool.
                        let missing = self.k - list.len();
                        if missing > 0 {
                            let fill = self.global.top(missing, |item| excluded(item) || items.contains(item));
                            list.extend(fill.into_iter().map(|i| (i, true)));
                        }
                    }
                    State::Dataflow { lists, popular, .. } => {
                        let own = lists.get(&event.user);
                        own_list = own.is_some();
                        list.extend(own.unwrap_or(popular).iter().cloned());
                    }
                    State::Global => list.extend(self.global.top(self.k, excluded).into_iter().map(|i| (i, false))),
                    State::Windowed => {
                        list.extend(self.windowed.popularity().top(self.k, excluded).into_iter().map(|i| (i, false)))
                    }
                }
                let rank = list.iter().position(|(item, _)| *item == event.item);
                let outcome = Outcome {
                    rank: rank.map(|r| r + 1),
                    empty: list.is_empty() || !own_list,
                    all_fallback: !list.is_empty() && list.iter().all(|(_, fallback)| *fallback),
                    fallback_hit: rank.is_some_and(|r| list[r].1),
                    list_similarity: self.knn.mean_pairwise_cosine(list.iter().map(|(item, _)| item)),
                    novelty: novelty(&self.global, self.learned, &list),
                };
                interned.clear();
                for (item, _) in &list {
                    let next = self.catalogue.len() as u32;
                    interned.push(*self.catalogue.entry(item.clone()).or_insert(next));
                }
                tallies.0.record(time, interned.iter().copied(), outcome);
                tallies.1[slice].record(time, interned.iter().copied(), outcome);
            }
        }
        for event in &events {
            self.exclusions.learn(event);
            self.global.add(&event.item, 1);
            self.learned += 1;
            self.windowed.learn(event, time);
            self.knn.learn(event);
            let next = self.catalogue.len() as u32;
            self.catalogue.entry(event.item.clone()).or_insert(next);
        }
        self.apply(time, updates);
    }

    /// Applies the dataflows' result updates at `time` to their current lists.
    fn apply(&mut self, time: Time, updates: Vec<(usize, ResultKey, ResultValue, isize)>) {
        let mut per_model: Vec<Vec<((ResultKey, ResultValue), isize)>> = vec![Vec::new(); self.models.len()];
        for (variant, key, value, diff) in updates {
            if let Some(updates) = per_model.get_mut(variant) {
                updates.push(((key, value), diff));
            }
        }
        for (model, updates) in self.models.iter_mut().zip(per_model) {
            let State::Dataflow { changelog, lists, popular } = model else { continue };
            if updates.is_empty() {
                continue;
            }
            for (key, value) in changelog.apply(time, updates, None) {
                let list = match value {
                    Some(ResultValue::Recs(items)) => Some(items.into_iter().map(|i| (i.item, i.fallback)).collect()),
                    _ => None,
                };
                match (key, list) {
                    (ResultKey::Recs(user), Some(list)) => {
                        lists.insert(user, list);
                    }
                    (ResultKey::Recs(user), None) => {
                        lists.remove(&user);
                    }
                    (ResultKey::Popular, list) => *popular = list.unwrap_or_default(),
                    (ResultKey::HotItems { .. }, _) => {}
                }
            }
        }
    }

    /// The metrics, once every time has been stepped through.
    pub fn finish(self) -> Evaluation {
        let catalogue = self.catalogue.len();
        let results = self
            .names
            .into_iter()
            .zip(self.models)
            .zip(self.tallies)
            .map(|(((name, description), model), (overall, slices))| VariantResult {
                name,
                description,
                dataflow: matches!(model, State::Dataflow { .. }),
                overall: overall.summary(catalogue),
                slices: slices.iter().map(|s| s.summary(catalogue)).collect(),
            })
            .collect();
        Evaluation { counts: self.counts, catalogue, results }
    }
}

/// The mean self-information `-log2(count / learned)` of a list's items (counts of at least 1),
/// or `None` for an empty list.
fn novelty(popularity: &Popularity, learned: u64, list: &[(Id, bool)]) -> Option<f64> {
    if list.is_empty() {
        return None;
    }
    let total = learned.max(1) as f64;
    let bits: f64 = list.iter().map(|(item, _)| -(popularity.count(item).max(1) as f64 / total).log2()).sum();
    Some(bits / list.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Action;
    use crate::results::RecItem;
    use crate::spec::Pipeline;

    fn view(user: i64, item: i64, secs: u64) -> Event {
        Event {
            user: Id::Num(user),
            item: Id::Num(item),
            category: None,
            action: Action::View,
            value: None,
            ts: secs * 1000,
        }
    }

    fn recs(variant: usize, user: i64, items: &[(i64, bool)], diff: isize) -> (usize, ResultKey, ResultValue, isize) {
        let list = items
            .iter()
            .map(|&(item, fallback)| RecItem { item: Id::Num(item), score: 1, fallback, because: Vec::new() })
            .collect();
        (variant, ResultKey::Recs(Id::Num(user)), ResultValue::Recs(list), diff)
    }

    #[test]
    fn plan_slices_cover_the_scored_events_evenly() {
        let plan = Plan::new(100, 0.2, 4);
        assert_eq!(plan.warmup, 20);
        let slices: Vec<usize> = [20, 39, 40, 99, 150].iter().map(|i| plan.slice_of(*i)).collect();
        assert_eq!(slices, [0, 0, 1, 3, 3]);
    }

    /// Lists fed by hand: the event at a time is scored against the lists before that time.
    #[test]
    fn scores_against_lists_from_before_the_events_time() {
        let pipeline = Pipeline::from_toml("[recommend]\nk = 2\nexclude = \"seen\"", "t").unwrap();
        let variants = super::super::variants::variants(&pipeline, 2, 10, &[]);
        let mut p = Prequential::new(&pipeline, &variants, 2, 10, Plan::new(4, 0.0, 1));
        // t=1s: user 1 views 10 (no lists yet: a miss for every model), and the blend at 1 s
        // gives user 1 the list [20, 30 (fill-in)].
        p.step(1_000, vec![view(1, 10, 1)], vec![recs(0, 1, &[(20, false), (30, true)], 1)]);
        // t=2s: user 1 views 30, rank 2 in the blend's list, a fill-in. The new list at 2 s is not
        // used for the event at 2 s.
        p.step(
            2_000,
            vec![view(1, 30, 2)],
            vec![recs(0, 1, &[(20, false), (30, true)], -1), recs(0, 1, &[(40, false)], 1)],
        );
        // t=3s: user 1 views 10 again (excluded: skipped); user 2 views 10: global popularity
        // [10, 30] is a hit at rank 1; the blend has no list for user 2.
        p.step(3_000, vec![view(1, 10, 3), view(2, 10, 3)], vec![]);
        let e = p.finish();
        assert_eq!(e.counts, Counts { accepted: 4, warmup: 0, skipped: 1, evaluated: 3 });
        assert_eq!(e.catalogue, 3, "items 10, 30 and 20 (shown); 40 was never shown");
        let blend = &e.results[0].overall;
        assert_eq!((blend.events, blend.hits), (3, 1));
        assert!((blend.ndcg - (1.0 / 3f64.log2()) / 3.0).abs() < 1e-12);
        assert_eq!(blend.mrr, 0.5 / 3.0);
        assert_eq!((blend.no_list, blend.fallback, blend.fallback_hits), (2.0 / 3.0, 0.0, 1.0));
        assert_eq!(blend.coverage, 2.0 / 3.0, "20 and 30 shown");
        let global = &e.results[4];
        assert_eq!(global.name, "global-pop");
        // At 2 s global popularity is [10] less the seen 10: empty, a miss; at 3 s user 2 gets
        // [10, 30]: a hit at rank 1.
        assert_eq!((global.overall.hits, global.overall.mrr), (1, 1.0 / 3.0));
    }

    /// A user without a list of their own is scored against the pipeline's new-user list as of
    /// before the event, counted as having no list, with fill-ins only.
    #[test]
    fn a_user_without_a_list_is_scored_against_the_new_user_list() {
        let pipeline = Pipeline::from_toml("[recommend]\nk = 2\nexclude = \"seen\"", "t").unwrap();
        let variants = super::super::variants::variants(&pipeline, 2, 10, &[]);
        let mut p = Prequential::new(&pipeline, &variants, 2, 10, Plan::new(3, 0.0, 1));
        let popular = |items: &[i64], diff| {
            let list = items
                .iter()
                .map(|&item| RecItem { item: Id::Num(item), score: 0, fallback: true, because: Vec::new() })
                .collect();
            (0, ResultKey::Popular, ResultValue::Recs(list), diff)
        };
        // t=1s: user 1 views 10; the blend's new-user list becomes [10, 30] at 1 s.
        p.step(1_000, vec![view(1, 10, 1)], vec![popular(&[10, 30], 1)]);
        // t=2s: user 2 views 30: rank 2 of the new-user list. The list changes to [30] at 2 s...
        p.step(2_000, vec![view(2, 30, 2)], vec![popular(&[10, 30], -1), popular(&[30], 1)]);
        // ...which the event of user 3 at 3 s is scored against: rank 1.
        p.step(3_000, vec![view(3, 30, 3)], vec![]);
        let blend = &p.finish().results[0].overall;
        assert_eq!((blend.events, blend.hits), (3, 2));
        assert_eq!(blend.mrr, (0.5 + 1.0) / 3.0);
        assert_eq!((blend.no_list, blend.fallback, blend.fallback_hits), (1.0, 2.0 / 3.0, 1.0));
    }
}
