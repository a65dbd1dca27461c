//! Preference contributions: what each event adds to its user's state, and when each part
//! leaves its window.
//!
//! An event of user `u` on item `i` at dataflow time `t` contributes `alpha * w + beta * w` to
//! `pref(u, i)`, its timestamp to `i`'s recent touches, and (under the exclusion rule) one mark
//! excluding `i`. The short-term part is retracted when the event leaves the short-term window,
//! the long-term part, touch and mark when it leaves the long-term horizon. Retractions are
//! scheduled at those times and wait in [`ReleaseWhenDue`] until due, so state only ever holds
//! what is inside the windows.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};

use super::{Coll, Time};
use crate::event::{Action, Event, Id, Thousandths, THOUSANDTHS_PER_UNIT};
use crate::progress::StreamEnd;
use crate::schedule::ReleaseWhenDue;
use crate::spec::{Exclude, RecommendSpec, Weights};
use crate::window::{horizon_expiry, short_term_expiry};

/// The weight of one event in thousandths: the action's weight, times the rating above
/// `rating_offset` for `rate`; never negative.
///
/// ```
/// use recflow::dataflow::preference::event_weight;
/// use recflow::spec::Weights;
/// use recflow::{Action, Event, Id};
///
/// let rating = |stars: i64| Event {
///     user: Id::Num(1), item: Id::Num(2), category: None, action: Action::Rate, value: Some(stars * 1000), ts: 0,
/// };
/// let centred = Weights { rating_offset: 2.5, ..Weights::default() };
/// assert_eq!(event_weight(&centred, &rating(4)), 1_500);
/// assert_eq!(event_weight(&centred, &rating(1)), 0, "a 1-star rating is no positive signal");
/// ```
pub fn event_weight(weights: &Weights, event: &Event) -> Thousandths {
    let base = weights.thousandths(event.action);
    let weight = match (event.action, event.value) {
        (Action::Rate, Some(value)) => {
            base.saturating_mul(value.saturating_sub(crate::spec::to_thousandths(weights.rating_offset)))
                / THOUSANDTHS_PER_UNIT
        }
        _ => base,
    };
    weight.max(0)
}

/// The largest weight a preference carries into scoring, in millionths (a preference of 10^8):
/// a larger preference still ranks above smaller ones but seeds with this weight. Each event
/// adds less than 2^62 millionths to a preference (its value, weights and blend weights are
/// bounded: [`crate::event::MAX_VALUE`], [`crate::spec::MAX_WEIGHT`]), preferences are summed in
/// 128 bits, and with at most [`crate::spec::MAX_SEEDS`] seeds no score reaches 10^18.
pub const MAX_SEED_WEIGHT: i64 = 100_000_000_000_000;

/// A preference as the weight it seeds scores with: at most [`MAX_SEED_WEIGHT`].
pub fn seed_weight(preference: i128) -> i64 {
    preference.clamp(0, MAX_SEED_WEIGHT as i128) as i64
}

/// A 128-bit sum as 64 bits, saturating (for explanations of preferences beyond 64 bits).
pub fn saturating_i64(sum: i128) -> i64 {
    sum.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// One user's touches in the long-term horizon: the event times of each item's touches, as a
/// multiset (the same time may repeat).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Touches(HashMap<Id, BTreeMap<u64, i64>>);

impl Touches {
    /// Counts a touch of `item` at `ts` in (`diff` 1) or out (`diff` -1).
    pub fn add(&mut self, item: &Id, ts: u64, diff: i64) {
        let times = self.0.entry(item.clone()).or_default();
        let count = times.entry(ts).or_default();
        *count += diff;
        if *count == 0 {
            times.remove(&ts);
            if times.is_empty() {
                self.0.remove(item);
            }
        }
    }

    /// The latest touch of `item`, if it has one.
    pub fn latest(&self, item: &Id) -> Option<u64> {
        self.0.get(item).and_then(|times| times.keys().next_back().copied())
    }

    /// Every touched item with its latest touch.
    pub fn latest_all(&self) -> impl Iterator<Item = (&Id, u64)> {
        self.0.iter().filter_map(|(item, times)| Some((item, *times.keys().next_back()?)))
    }

    /// Whether nothing is touched.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `len` fixed-point factors `unit * decay^r` for `r = 0, 1, ...`, with `decay` in thousandths
/// and each step rounded down: the weights of seeds by recency and of pairs by distance.
///
/// ```
/// assert_eq!(recflow::dataflow::preference::decay_factors(1_000, 900, 4), [1_000, 900, 810, 729]);
/// ```
pub fn decay_factors(unit: i64, decay: Thousandths, len: usize) -> Vec<i64> {
    std::iter::successors(Some(unit), |f| Some(f * decay / THOUSANDTHS_PER_UNIT)).take(len).collect()
}

/// Whether an event makes its item excluded for its user under `rule`.
pub fn excludes(rule: Exclude, event: &Event) -> bool {
    match rule {
        Exclude::Seen => true,
        Exclude::Bought => event.action == Action::Buy,
        Exclude::None => false,
    }
}

/// One part of an event's effect on its user's state; the update's difference says whether it
/// is added (+1) or retracted (-1).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Contribution {
    /// The item.
    pub item: Id,
    /// Preference in millionths (the long-term part, plus the short-term part for sliding and
    /// tumbling windows).
    pub preference: i64,
    /// The short-term part of `preference`, in millionths.
    pub short: i64,
    /// For session windows, the short-term part in millionths: the users operator keeps the
    /// event (its time is `touch`) while it can belong to the user's current session.
    pub session: Option<i64>,
    /// Exclusion marks (0 or 1).
    pub excluded: i64,
    /// The event time, as a touch of the item, if this part carries it.
    pub touch: Option<u64>,
}

/// `(user, contribution)` updates of every accepted event, retractions released when due.
///
/// ```
/// use differential_dataflow::input::Input;
/// use recflow::dataflow::preference::{contributions, Contribution};
/// use recflow::progress::StreamEnd;
/// use recflow::spec::{Horizon, RecommendSpec, ShortTermWindow, Span, Weights};
/// use recflow::{Action, Event, Id};
/// use timely::dataflow::operators::capture::{Capture, Extract};
///
/// // Blend 0.7 short-term (1 min) + 0.3 long-term (1 h); a cart weighs 3; seen items are excluded.
/// let spec = RecommendSpec {
///     short_term: ShortTermWindow::Sliding { size: Span(60_000) },
///     long_term: Horizon::Retention(Span(3_600_000)),
///     ..RecommendSpec::default()
/// };
/// let captured = timely::example(move |scope| {
///     let cart = Event {
///         user: Id::Num(1), item: Id::Num(7), category: None, action: Action::Cart, value: None, ts: 0,
///     };
///     let (_input, events) = scope.new_collection_from([cart]);
///     contributions(events, &spec, &Weights::default(), 1_000, StreamEnd::default()).inner.capture()
/// });
/// let mut updates: Vec<_> = captured.extract().into_iter().flat_map(|(_, updates)| updates).collect();
/// updates.sort_by_key(|(_, time, _)| *time);
/// let part = |preference, short, excluded, touch| (Id::Num(1), Contribution {
///     item: Id::Num(7), preference, short, session: None, excluded, touch,
/// });
/// assert_eq!(updates, [
///     // At once: 3 * (0.7 + 0.3) = 3.0 (in millionths), 2.1 of it short-term; 7 is seen and touched.
///     (part(3_000_000, 2_100_000, 1, Some(0)), 0, 1),
///     // After 1 min the short-term part leaves: 0.9 remains.
///     (part(2_100_000, 2_100_000, 0, None), 60_000, -1),
///     // After 1 h the rest leaves, with the exclusion and the touch.
///     (part(900_000, 0, 1, Some(0)), 3_600_000, -1),
/// ]);
/// ```
pub fn contributions<'scope>(
    events: Coll<'scope, Event>,
    spec: &RecommendSpec,
    weights: &Weights,
    tick: Time,
    end: StreamEnd,
) -> Coll<'scope, (Id, Contribution)> {
    let (short, horizon, rule) = (spec.short_term, spec.long_term, spec.exclude);
    let alpha = crate::spec::to_thousandths(spec.alpha);
    let beta = crate::spec::to_thousandths(spec.beta);
    let weights = weights.clone();
    events
        .join_function(move |event: Event| {
            let weight = event_weight(&weights, &event);
            let excluded = i64::from(excludes(rule, &event));
            let short_end = short_term_expiry(short, event.ts, tick);
            let long_end = horizon_expiry(horizon, event.ts, tick);
            let part = |preference, short, session, excluded, touch| Contribution {
                item: event.item.clone(),
                preference,
                short,
                session,
                excluded,
                touch,
            };
            let mut updates = Vec::with_capacity(3);
            match short_end {
                Some(short_end) => {
                    updates.push((
                        (
                            event.user.clone(),
                            part((alpha + beta) * weight, alpha * weight, None, excluded, Some(event.ts)),
                        ),
                        0,
                        1,
                    ));
                    if alpha * weight != 0 {
                        updates.push((
                            (event.user.clone(), part(alpha * weight, alpha * weight, None, 0, None)),
                            short_end,
                            -1,
                        ));
                    }
                }
                None => {
                    updates.push((
                        (event.user.clone(), part(beta * weight, 0, Some(alpha * weight), excluded, Some(event.ts))),
                        0,
                        1,
                    ));
                }
            }
            if let Some(end) = long_end {
                updates.push(((event.user.clone(), part(beta * weight, 0, None, excluded, Some(event.ts))), end, -1));
            }
            updates
        })
        .release_when_due("Contributions", end)
}
