//! User-item scores and per-user top-k lists.
//!
//! `score(u, j) = Σ pref(u, i) · sim(i, j)` over the user's `top_preferences` most preferred items
//! `i`; excluded pairs never appear. Users with fewer than `k` scored candidates are filled from
//! the windowed popular items (refreshed with the similarity cadence).
//!
//! Ranking: scored items by score desc, then item asc; then fill-ins by popularity (count desc,
//! then item asc), skipping items already listed or excluded.

use differential_dataflow::operators::{CountTotal, ThresholdTotal};
use differential_dataflow::Hashable;
use serde::{Deserialize, Serialize};

use super::preference::Preferences;
use super::{Coll, Time};
use crate::event::{Event, Id};
use crate::event_time::ceil_to;
use crate::results::{RecItem, SCORE_SCALE};
use crate::spec::RecommendSpec;

/// How many popular items the fallback pool holds, per `k`.
pub const POOL_PER_K: usize = 4;
/// Shards the popular pool is replicated over, so that filling spreads across workers.
const POOL_SHARDS: u64 = 64;

/// A candidate for a user's list, in ranking order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Candidate {
    /// A scored item; the score is negated so that ascending order ranks best first.
    Scored(i64, Id),
    /// A popular item at a pool rank.
    Popular(usize, Id),
}

/// The term one preferred item contributes to a candidate's score, in millionths.
pub fn score_term(preference: i64, similarity: i64) -> i64 {
    ((preference as i128 * similarity as i128) / SCORE_SCALE as i128) as i64
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

    let seeds = blended
        .clone()
        .map(|((user, item), preference)| (user, (-preference, item)))
        .reduce_named("TopPreferences", move |_user, ranked, output: &mut Vec<((Id, i64), isize)>| {
            output.extend(ranked.iter().take(top_m).map(|((negated, item), _)| ((item.clone(), -negated), 1)));
        })
        .map(|(user, (item, preference))| (item, (user, preference)));

    let scores = seeds
        .join_map(similar, |_item, (user, preference), (candidate, similarity)| {
            ((user.clone(), candidate.clone()), score_term(*preference, *similarity))
        })
        .explode(|(pair, term)| Some((pair, term as isize)))
        .count_total()
        .filter(|(_, score)| *score > 0)
        .map(|(pair, score)| (pair, score as i64))
        .antijoin(excluded.clone())
        .map(|((user, item), score)| (user, Candidate::Scored(-score, item)));

    let users = blended.map(|((user, _), _)| user).distinct_total();
    let full = scores
        .clone()
        .map(|(user, _)| user)
        .count_total()
        .filter(move |(_, count)| *count as usize >= k)
        .map(|(user, _)| user);
    let needy = users.map(|user| (user, ())).antijoin(full).map(|(user, ())| (user.hashed() % POOL_SHARDS, user));
    let pool = popular_pool(events, spec, tick, k * POOL_PER_K)
        .flat_map(|entry| (0..POOL_SHARDS).map(move |shard| (shard, entry.clone())));
    let fill = needy
        .join_map(pool, |_shard, user, (rank, item)| ((user.clone(), item.clone()), *rank))
        .antijoin(excluded)
        .map(|((user, item), rank)| (user, Candidate::Popular(rank, item)));

    scores.concat(fill).reduce_named("TopK", move |_user, ranked, output: &mut Vec<(Vec<RecItem>, isize)>| {
        let mut list: Vec<RecItem> = Vec::with_capacity(k);
        for (candidate, _) in ranked {
            if list.len() == k {
                break;
            }
            match candidate {
                Candidate::Scored(negated, item) => {
                    list.push(RecItem { item: item.clone(), score: -negated, fallback: false })
                }
                Candidate::Popular(_, item) => {
                    if !list.iter().any(|r| &r.item == item) {
                        list.push(RecItem { item: item.clone(), score: 0, fallback: true });
                    }
                }
            }
        }
        if !list.is_empty() {
            output.push((list, 1));
        }
    })
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
    events
        .join_function(move |event: Event| {
            let end = ceil_to(event.ts.saturating_add(window), tick);
            [(event.item.clone(), 0, 1), (event.item, end, -1)]
        })
        .delay(move |t: &Time| ceil_to(*t, refresh))
        .count_total()
        .map(|(item, count)| ((), (-(count as i64), item)))
        .reduce_named("PopularPool", move |_unit, ranked, output: &mut Vec<((usize, Id), isize)>| {
            output.extend(ranked.iter().take(size).enumerate().map(|(rank, ((_, item), _))| ((rank, item.clone()), 1)));
        })
        .map(|((), entry)| entry)
}
