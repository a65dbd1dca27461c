//! Preference arrangements: per (user, item), action weights summed over the short-term window and
//! over the long-term horizon, blended as `alpha * short + beta * long`; plus the pairs excluded
//! from recommendation and each user's recent history for co-occurrence.
//!
//! Windows are insertions plus retractions scheduled at the event's expiry time, so state holds
//! only what is inside the windows.

use differential_dataflow::operators::{CountTotal, ThresholdTotal};

use super::schedule::ReleaseWhenDue;
use super::window::{horizon_expiry, short_term_expiry};
use super::{Coll, Time};
use crate::event::{Action, Event, Id, Milli, MILLI};
use crate::spec::{Exclude, RecommendSpec, Weights};

/// The weight of one event in thousandths: the action's weight, times the rating for `rate`.
pub fn event_weight(weights: &Weights, event: &Event) -> Milli {
    let base = weights.milli(event.action);
    let weight = match (event.action, event.value) {
        (Action::Rate, Some(value)) => base.saturating_mul(value) / MILLI,
        _ => base,
    };
    weight.max(0)
}

/// Whether an event makes its item excluded for its user under `rule`.
pub fn excludes(rule: Exclude, event: &Event) -> bool {
    match rule {
        Exclude::Seen => true,
        Exclude::Bought => event.action == Action::Buy,
        Exclude::None => false,
    }
}

/// The preference arrangements of a pipeline.
pub struct Preferences<'scope> {
    /// `((user, item), preference)`, preference in millionths, only positive ones.
    pub blended: Coll<'scope, ((Id, Id), i64)>,
    /// `(user, item)` pairs never recommended.
    pub excluded: Coll<'scope, (Id, Id)>,
    /// `(user, item)` for each user's `history` most recently touched items (ties: item asc).
    pub history: Coll<'scope, (Id, Id)>,
}

/// Builds the preference arrangements from accepted events.
pub fn preferences<'scope>(
    events: Coll<'scope, Event>,
    spec: &RecommendSpec,
    weights: &Weights,
    tick: Time,
) -> Preferences<'scope> {
    let (short, horizon) = (spec.short_term, spec.long_term);
    let alpha = crate::spec::to_milli(spec.alpha) as isize;
    let beta = crate::spec::to_milli(spec.beta) as isize;
    let weights = weights.clone();
    let blended = events
        .clone()
        .join_function(move |event: Event| {
            let weight = event_weight(&weights, &event) as isize;
            let short_end = short_term_expiry(short, event.ts, tick);
            let long_end = horizon_expiry(horizon, event.ts, tick);
            let key = (event.user, event.item);
            let mut updates = Vec::with_capacity(3);
            if weight != 0 {
                updates.push((key.clone(), 0, (alpha + beta) * weight));
                updates.push((key.clone(), short_end, -alpha * weight));
                if let Some(end) = long_end {
                    updates.push((key, end, -beta * weight));
                }
            }
            updates
        })
        .release_when_due("Preferences")
        .count_total()
        .filter(|(_, preference)| *preference > 0)
        .map(|(key, preference)| (key, preference as i64));

    let rule = spec.exclude;
    let excluded = events
        .clone()
        .filter(move |event| excludes(rule, event))
        .join_function(move |event: Event| {
            within_horizon((event.user, event.item), horizon_expiry(horizon, event.ts, tick))
        })
        .release_when_due("Excluded")
        .distinct_total();

    let history_len = spec.history;
    let history = events
        .join_function(move |event: Event| {
            within_horizon(((event.user, event.item), event.ts), horizon_expiry(horizon, event.ts, tick))
        })
        .release_when_due("LastTouch")
        .reduce_named("LastTouch", |_pair, times, output: &mut Vec<(u64, isize)>| {
            // Values arrive sorted ascending; the last present one is the latest touch.
            if let Some((ts, _)) = times.last() {
                output.push((**ts, 1));
            }
        })
        .map(|((user, item), ts)| (user, (std::cmp::Reverse(ts), item)))
        .reduce_named("RecentHistory", move |_user, recent, output: &mut Vec<(Id, isize)>| {
            output.extend(recent.iter().take(history_len).map(|((_, item), _)| (item.clone(), 1)));
        });

    Preferences { blended, excluded, history }
}

/// An insertion now and, when the horizon is finite, its retraction at `end`.
fn within_horizon<D: Clone>(data: D, end: Option<Time>) -> Vec<(D, Time, isize)> {
    match end {
        Some(end) => vec![(data.clone(), 0, 1), (data, end, -1)],
        None => vec![(data, 0, 1)],
    }
}
