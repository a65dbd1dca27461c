//! Item-to-item similarity from co-occurrence in users' recent histories, maintained
//! incrementally and refreshed on a coarser event-time cadence (every `refresh`), keeping the
//! `neighbours` most similar items per item (ties: item asc) with at least `min_support` users.

use differential_dataflow::operators::CountTotal;

use super::Coll;
use crate::event::Id;
use crate::event_time::ceil_to;
use crate::results::SCORE_SCALE;
use crate::spec::{Measure, SimilaritySpec};

/// Similarity of two items in millionths from their co-occurrence and item user counts.
pub fn similarity(measure: Measure, both: i64, users_i: i64, users_j: i64) -> i64 {
    let value = match measure {
        Measure::Cosine => both as f64 / ((users_i as f64) * (users_j as f64)).sqrt(),
        Measure::Jaccard => both as f64 / (users_i + users_j - both) as f64,
    };
    (value * SCORE_SCALE as f64).round() as i64
}

/// `(item, (neighbour, similarity))` rows from `(user, item)` histories.
pub fn item_similarity<'scope>(
    history: Coll<'scope, (Id, Id)>,
    spec: &SimilaritySpec,
) -> Coll<'scope, (Id, (Id, i64))> {
    let refresh = spec.refresh.millis();
    let history = super::retime(history, "HistoryRefresh", move |t| ceil_to(t, refresh));
    let by_user = history.clone().arrange_by_key_named("Arrange: HistoryByUser");
    let item_users = history
        .map(|(_user, item)| item)
        .count_total()
        .map(|(item, users)| (item, users as i64))
        .arrange_by_key_named("Arrange: ItemUsers");
    let min_support = spec.min_support as isize;
    let measure = spec.measure;
    let neighbours = spec.neighbours;
    by_user
        .clone()
        .join_core(by_user, |_user, i: &Id, j: &Id| (i != j).then(|| (i.clone(), j.clone())))
        .count_total()
        .filter(move |(_, both)| *both >= min_support)
        .map(|((i, j), both)| (i, (j, both as i64)))
        .join_core(item_users.clone(), |i, (j, both), users_i| Some((j.clone(), (i.clone(), *both, *users_i))))
        .join_core(item_users, move |j, (i, both, users_i), users_j| {
            Some((i.clone(), (-similarity(measure, *both, *users_i, *users_j), j.clone())))
        })
        .reduce_named("TopNeighbours", move |_item, ranked, output: &mut Vec<((Id, i64), isize)>| {
            output.extend(ranked.iter().take(neighbours).map(|((negated, j), _)| ((j.clone(), -negated), 1)));
        })
}
