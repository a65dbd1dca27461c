//! User-item scores and per-user top-k lists.
//!
//! `score(u, j) = Σ pref(u, i) · sim(i, j)` over the user's `top_preferences` most preferred items
//! `i`; excluded pairs never appear. Users with fewer than `k` scored candidates are filled from
//! the windowed popular items (a pool of `4k`, refreshed with the similarity cadence).
//!
//! Ranking: scored items by score desc, then item asc; then fill-ins by popularity (count desc,
//! then item asc), skipping items already listed or excluded.
//!
//! **When a list is recomputed.** A user's list is recomputed whenever the user's inputs change:
//! their top preferences (every event of theirs, and every window expiry that changes them) or
//! their excluded items. It is computed with the similarity and popularity as of that moment; a
//! similarity refresh alone does not re-score users. Re-scoring every user whose seed items moved
//! on each refresh would redo the whole `users × M × N` product every refresh; scoring at the
//! user's own changes keeps the work proportional to the events.
//!
//! The similarity rows and the popular pool are small (`items × N` and `4k`), so every worker
//! keeps a full copy; users are spread over workers by hash.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;

use differential_dataflow::operators::CountTotal;
use differential_dataflow::{AsCollection, Hashable};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Concat, Exchange};

use super::preference::Preferences;
use super::schedule::{Due, Inbox};
use super::{Coll, Time};
use crate::event::{Event, Id};
use crate::event_time::ceil_to;
use crate::results::{RecItem, SCORE_SCALE};
use crate::spec::RecommendSpec;

/// How many popular items the fallback pool holds, per `k`.
pub const POOL_PER_K: usize = 4;

/// The term one preferred item contributes to a candidate's score, in millionths.
pub fn score_term(preference: i64, similarity: i64) -> i64 {
    ((preference as i128 * similarity as i128) / SCORE_SCALE as i128) as i64
}

/// One input of the scoring operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum ScoringInput {
    /// `(user, item, preference)`: one of the user's top preferred items.
    Seed(Id, Id, i64),
    /// `(user, item)`: an item never recommended to the user.
    Excluded(Id, Id),
    /// `(item, neighbour, similarity)`: a row of the similarity table (on every worker).
    Similar(Id, Id, i64),
    /// `(rank, item)`: an entry of the popular pool (on every worker).
    Popular(usize, Id),
}

/// `(user, list)`: each user's current top-k.
pub fn recommendations<'scope>(
    events: Coll<'scope, Event>,
    preferences: Preferences<'scope>,
    similar: Coll<'scope, (Id, (Id, i64))>,
    spec: &RecommendSpec,
    tick: Time,
) -> Coll<'scope, (Id, Vec<RecItem>)> {
    let Preferences { blended, excluded, .. } = preferences;
    let k = spec.k;
    let top_m = spec.top_preferences;

    let seeds = blended.map(|((user, item), preference)| (user, (-preference, item))).reduce_named(
        "TopPreferences",
        move |_user, ranked, output: &mut Vec<((Id, i64), isize)>| {
            output.extend(ranked.iter().take(top_m).map(|((negated, item), _)| ((item.clone(), -negated), 1)));
        },
    );
    let pool = popular_pool(events, spec, tick, k * POOL_PER_K);

    let per_user = seeds
        .map(|(user, (item, preference))| ScoringInput::Seed(user, item, preference))
        .concat(excluded.map(|(user, item)| ScoringInput::Excluded(user, item)))
        .inner
        .exchange(|(input, _, _): &(ScoringInput, Time, isize)| match input {
            ScoringInput::Seed(user, ..) | ScoringInput::Excluded(user, _) => user.hashed(),
            _ => 0,
        });
    let shared = similar
        .map(|(item, (neighbour, similarity))| ScoringInput::Similar(item, neighbour, similarity))
        .concat(pool.map(|(rank, item)| ScoringInput::Popular(rank, item)))
        .inner
        .broadcast();
    score_users(per_user.concat(shared), k).as_collection()
}

/// What the scoring operator keeps per user.
#[derive(Default)]
struct UserState {
    seeds: BTreeMap<(Id, i64), isize>,
    excluded: BTreeMap<Id, isize>,
    reported: Vec<RecItem>,
}

/// Applies `diff` to a multiset entry, removing it when it reaches zero.
fn bump<K: Ord>(map: &mut BTreeMap<K, isize>, key: K, diff: isize) {
    let entry = map.entry(key);
    match entry {
        std::collections::btree_map::Entry::Occupied(mut o) => {
            *o.get_mut() += diff;
            if *o.get() == 0 {
                o.remove();
            }
        }
        std::collections::btree_map::Entry::Vacant(v) => {
            v.insert(diff);
        }
    }
}

type ScoringUpdates<'scope> = timely::dataflow::Stream<'scope, Time, Vec<(ScoringInput, Time, isize)>>;
type ListUpdates<'scope> = timely::dataflow::Stream<'scope, Time, Vec<((Id, Vec<RecItem>), Time, isize)>>;

/// The scoring operator: applies each completed time's updates in time order and re-scores the
/// users whose seeds or exclusions changed at that time.
fn score_users(updates: ScoringUpdates<'_>, k: usize) -> ListUpdates<'_> {
    let mut inbox: Inbox<ScoringInput> = Inbox::default();
    let mut similar: HashMap<Id, BTreeMap<(Id, i64), isize>> = HashMap::default();
    let mut pool: BTreeMap<(usize, Id), isize> = BTreeMap::new();
    let mut users: HashMap<Id, UserState> = HashMap::default();
    updates.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<_>>, _, _, _>(
        Pipeline,
        "ScoreUsers",
        move |_capability, _info| {
            move |(input, frontier), output| {
                input.for_each(|capability, data| {
                    for (update, time, diff) in data.drain(..) {
                        inbox.push(&capability, update, time, diff);
                    }
                });
                while let Some(Due { time, capability, updates: mut batch }) = inbox.next_complete(frontier) {
                    differential_dataflow::consolidation::consolidate(&mut batch);
                    let mut touched: Vec<Id> = Vec::new();
                    for (update, diff) in batch {
                        match update {
                            ScoringInput::Similar(item, neighbour, similarity) => {
                                let row = similar.entry(item.clone()).or_default();
                                bump(row, (neighbour, similarity), diff);
                                if row.is_empty() {
                                    similar.remove(&item);
                                }
                            }
                            ScoringInput::Popular(rank, item) => bump(&mut pool, (rank, item), diff),
                            ScoringInput::Seed(user, item, preference) => {
                                bump(&mut users.entry(user.clone()).or_default().seeds, (item, preference), diff);
                                touched.push(user);
                            }
                            ScoringInput::Excluded(user, item) => {
                                bump(&mut users.entry(user.clone()).or_default().excluded, item, diff);
                                touched.push(user);
                            }
                        }
                    }
                    touched.sort();
                    touched.dedup();
                    let mut session = output.session(&capability);
                    for user in touched {
                        let Some(state) = users.get_mut(&user) else { continue };
                        let list = rank_for_user(state, &similar, &pool, k);
                        if list != state.reported {
                            let old = std::mem::replace(&mut state.reported, list.clone());
                            if !old.is_empty() {
                                session.give(((user.clone(), old), time, -1));
                            }
                            if !list.is_empty() {
                                session.give(((user.clone(), list), time, 1));
                            }
                        }
                        if state.seeds.is_empty() && state.excluded.is_empty() && state.reported.is_empty() {
                            users.remove(&user);
                        }
                    }
                }
            }
        },
    )
}

/// A user's top-k from their seeds, the similarity table and the popular pool.
fn rank_for_user(
    state: &UserState,
    similar: &HashMap<Id, BTreeMap<(Id, i64), isize>>,
    pool: &BTreeMap<(usize, Id), isize>,
    k: usize,
) -> Vec<RecItem> {
    if state.seeds.is_empty() {
        return Vec::new();
    }
    let mut scores: HashMap<&Id, i64> = HashMap::default();
    for (item, preference) in state.seeds.keys() {
        for (neighbour, similarity) in similar.get(item).into_iter().flat_map(|row| row.keys()) {
            *scores.entry(neighbour).or_default() += score_term(*preference, *similarity);
        }
    }
    let mut ranked: Vec<(i64, &Id)> = scores
        .into_iter()
        .filter(|(item, score)| *score > 0 && !state.excluded.contains_key(*item))
        .map(|(item, score)| (-score, item))
        .collect();
    ranked.sort_unstable();
    let mut list: Vec<RecItem> = ranked
        .into_iter()
        .take(k)
        .map(|(negated, item)| RecItem { item: item.clone(), score: -negated, fallback: false })
        .collect();
    if list.len() < k {
        for (_, item) in pool.keys() {
            if list.len() == k {
                break;
            }
            if !state.excluded.contains_key(item) && !list.iter().any(|r| &r.item == item) {
                list.push(RecItem { item: item.clone(), score: 0, fallback: true });
            }
        }
    }
    list
}

/// `(rank, item)` for the `size` items with most events in the last `popular_window`, ranked by
/// count desc then item asc, refreshed every similarity `refresh`.
fn popular_pool<'scope>(
    events: Coll<'scope, Event>,
    spec: &RecommendSpec,
    tick: Time,
    size: usize,
) -> Coll<'scope, (usize, Id)> {
    let window = spec.popular_window.millis();
    let refresh = spec.similarity.refresh.millis();
    let windowed = events.join_function(move |event: Event| {
        let end = ceil_to(event.ts.saturating_add(window), tick);
        [(event.item.clone(), 0, 1), (event.item, end, -1)]
    });
    super::retime(windowed, "PopularRefresh", move |t| ceil_to(t, refresh))
        .count_total()
        .map(|(item, count)| ((), (-(count as i64), item)))
        .reduce_named("PopularPool", move |_unit, ranked, output: &mut Vec<((usize, Id), isize)>| {
            output.extend(ranked.iter().take(size).enumerate().map(|(rank, ((_, item), _))| ((rank, item.clone()), 1)));
        })
        .map(|((), entry)| entry)
}
