//! User-item scores and per-user top-k lists.
//!
//! `score(u, j) = Σ pref(u, i) · sim(i, j)` over the user's `top_preferences` most preferred items
//! `i`; excluded pairs never appear. Users with fewer than `k` scored candidates are filled from
//! the windowed popular items (refreshed with the similarity cadence).
//!
//! Ranking: scored items by score desc, then item asc; then fill-ins by popularity (count desc,
//! then item asc), skipping items already listed or excluded.

use differential_dataflow::operators::CountTotal;
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

/// What the per-user scoring reduce sees about a user, in the order it needs it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Evidence {
    /// An item the user must not be recommended.
    Excluded(Id),
    /// One of the user's top preferred items (marks the user as known).
    Seed(Id),
    /// A term `pref(u, i) * sim(i, j)` of candidate `j`'s score.
    Term(Id, i64),
}

/// A user's scored list, and whether it already has `k` items.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Scored {
    complete: bool,
    items: Vec<(Id, i64)>,
}

/// What the fill reduce merges for a user who has fewer than `k` scored items.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Partial {
    /// The scored items.
    Scored(Vec<(Id, i64)>),
    /// A popular, not excluded item at a pool rank.
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

    let seeds = blended.map(|((user, item), preference)| (user, (-preference, item))).reduce_named(
        "TopPreferences",
        move |_user, ranked, output: &mut Vec<((Id, i64), isize)>| {
            output.extend(ranked.iter().take(top_m).map(|((negated, item), _)| ((item.clone(), -negated), 1)));
        },
    );
    let terms = seeds.clone().map(|(user, (item, preference))| (item, (user, preference))).join_map(
        similar,
        |_item, (user, preference), (candidate, similarity)| {
            (user.clone(), Evidence::Term(candidate.clone(), score_term(*preference, *similarity)))
        },
    );
    let evidence = terms
        .concat(seeds.map(|(user, (item, _))| (user, Evidence::Seed(item))))
        .concat(excluded.clone().map(|(user, item)| (user, Evidence::Excluded(item))));

    let scored = evidence.reduce_named("ScoreUser", move |_user, evidence, output: &mut Vec<(Scored, isize)>| {
        let excluded: Vec<&Id> = evidence
            .iter()
            .filter_map(|(e, _)| match e {
                Evidence::Excluded(item) => Some(item),
                _ => None,
            })
            .collect();
        if !evidence.iter().any(|(e, _)| matches!(e, Evidence::Seed(_))) {
            return;
        }
        // Terms arrive sorted by candidate, so each candidate's terms are adjacent.
        let mut scores: Vec<(i64, &Id)> = Vec::new();
        let mut current: Option<(&Id, i64)> = None;
        for (e, count) in evidence {
            if let Evidence::Term(candidate, term) = e {
                let term = term * *count as i64;
                match &mut current {
                    Some((c, sum)) if *c == candidate => *sum += term,
                    _ => {
                        if let Some((c, sum)) = current.take() {
                            scores.push((-sum, c));
                        }
                        current = Some((candidate, term));
                    }
                }
            }
        }
        if let Some((c, sum)) = current {
            scores.push((-sum, c));
        }
        scores.retain(|(negated, item)| *negated < 0 && excluded.binary_search(item).is_err());
        scores.sort();
        scores.truncate(k);
        let items: Vec<(Id, i64)> = scores.into_iter().map(|(negated, item)| (item.clone(), -negated)).collect();
        output.push((Scored { complete: items.len() == k, items }, 1));
    });

    let complete = scored.clone().filter(|(_, s)| s.complete).map(|(user, s)| (user, as_recs(s.items)));
    let needy = scored.filter(|(_, s)| !s.complete);
    let pool = popular_pool(events, spec, tick, k * POOL_PER_K)
        .flat_map(|entry| (0..POOL_SHARDS).map(move |shard| (shard, entry.clone())));
    let fill = needy
        .clone()
        .map(|(user, _)| (user.hashed() % POOL_SHARDS, user))
        .join_map(pool, |_shard, user, (rank, item)| ((user.clone(), item.clone()), *rank))
        .antijoin(excluded)
        .map(|((user, item), rank)| (user, Partial::Popular(rank, item)));
    let filled = needy.map(|(user, s)| (user, Partial::Scored(s.items))).concat(fill).reduce_named(
        "FillFromPopular",
        move |_user, parts, output: &mut Vec<(Vec<RecItem>, isize)>| {
            let mut list: Vec<RecItem> = Vec::with_capacity(k);
            for (part, _) in parts {
                match part {
                    Partial::Scored(items) => list.extend(as_recs(items.clone())),
                    Partial::Popular(_, item) => {
                        if list.len() < k && !list.iter().any(|r| &r.item == item) {
                            list.push(RecItem { item: item.clone(), score: 0, fallback: true });
                        }
                    }
                }
            }
            if !list.is_empty() {
                output.push((list, 1));
            }
        },
    );
    complete.concat(filled)
}

fn as_recs(items: Vec<(Id, i64)>) -> Vec<RecItem> {
    items.into_iter().map(|(item, score)| RecItem { item, score, fallback: false }).collect()
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
