//! What the evaluator itself keeps from the replayed events: the two popularity baselines (all
//! events so far; events of the last `popular_window`) and each user's excluded items under the
//! pipeline's `exclude` rule.
//!
//! Everything here follows the dataflow's conventions so that the baselines and the pipeline are
//! measured alike: an event learned at dataflow time `t` counts from `t` on; a windowed count or
//! an exclusion mark that the dataflow retracts at time `E` (its expiry, rounded up to a tick)
//! still counts for an event at time `T` exactly when `E >= T`, that is, as of the last time
//! before `T`. Rankings are by count descending, then item ascending, like the pipeline's popular
//! pool.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap as HashMap;

use crate::dataflow::preference::excludes;
use crate::event::{Event, Id, Millis};
use crate::event_time::ceil_to;
use crate::event_time::Time;
use crate::spec::{Exclude, Horizon};
use crate::window::horizon_expiry;

/// Items ranked by event count.
#[derive(Debug, Default)]
pub struct Popularity {
    counts: HashMap<Id, i64>,
    ranked: BTreeSet<(Reverse<i64>, Id)>,
}

impl Popularity {
    /// Adds `delta` events to `item`.
    pub fn add(&mut self, item: &Id, delta: i64) {
        let count = self.counts.entry(item.clone()).or_insert(0);
        if *count != 0 {
            self.ranked.remove(&(Reverse(*count), item.clone()));
        }
        *count += delta;
        if *count != 0 {
            self.ranked.insert((Reverse(*count), item.clone()));
        } else {
            self.counts.remove(item);
        }
    }

    /// The events counted for `item`.
    pub fn count(&self, item: &Id) -> i64 {
        self.counts.get(item).copied().unwrap_or(0)
    }

    /// The `k` most counted items (count desc, item asc) for which `skip` is false.
    ///
    /// ```
    /// use recflow::eval::baseline::Popularity;
    /// use recflow::Id;
    /// let mut popular = Popularity::default();
    /// for item in [3, 1, 3, 2, 2] {
    ///     popular.add(&Id::Num(item), 1);
    /// }
    /// let top = popular.top(2, |item| *item == Id::Num(2));
    /// assert_eq!(top, [Id::Num(3), Id::Num(1)]);
    /// ```
    pub fn top(&self, k: usize, mut skip: impl FnMut(&Id) -> bool) -> Vec<Id> {
        self.ranked.iter().map(|(_, item)| item).filter(|item| !skip(item)).take(k).cloned().collect()
    }
}

/// Item counts over the events of the last `window` of event time.
#[derive(Debug)]
pub struct WindowedPopularity {
    popularity: Popularity,
    /// Items to take out, by the time their event leaves the window.
    expiries: BTreeMap<Time, Vec<Id>>,
    window: Millis,
    tick: Millis,
}

impl WindowedPopularity {
    /// Counts over `window`, at the dataflow's `tick`.
    pub fn new(window: Millis, tick: Millis) -> WindowedPopularity {
        WindowedPopularity { popularity: Popularity::default(), expiries: BTreeMap::new(), window, tick }
    }

    /// Learns an event that entered the dataflow at `time`. It leaves the window at
    /// `ceil(ts + window)` to a tick, as in the pipeline's popular pool.
    pub fn learn(&mut self, event: &Event, time: Time) {
        let expiry = ceil_to(event.ts.saturating_add(self.window), self.tick);
        if expiry > time {
            self.popularity.add(&event.item, 1);
            self.expiries.entry(expiry).or_default().push(event.item.clone());
        }
    }

    /// Forgets events that left the window before `now`: what remains is the window as of the
    /// last time before `now`.
    pub fn advance(&mut self, now: Time) {
        while let Some(entry) = self.expiries.first_entry() {
            if *entry.key() >= now {
                break;
            }
            for item in entry.remove() {
                self.popularity.add(&item, -1);
            }
        }
    }

    /// The current counts.
    pub fn popularity(&self) -> &Popularity {
        &self.popularity
    }
}

/// Each user's excluded items, as the pipeline's `exclude` rule and long-term horizon make them.
#[derive(Debug)]
pub struct Exclusions {
    rule: Exclude,
    horizon: Horizon,
    tick: Millis,
    /// Per user, per item, the latest event time that excluded it.
    marks: HashMap<Id, HashMap<Id, Millis>>,
}

impl Exclusions {
    /// Exclusions under `rule`, held for `horizon`.
    pub fn new(rule: Exclude, horizon: Horizon, tick: Millis) -> Exclusions {
        Exclusions { rule, horizon, tick, marks: HashMap::default() }
    }

    /// Learns an event.
    pub fn learn(&mut self, event: &Event) {
        if !excludes(self.rule, event) {
            return;
        }
        let latest = self.marks.entry(event.user.clone()).or_default().entry(event.item.clone()).or_insert(event.ts);
        *latest = (*latest).max(event.ts);
    }

    /// Whether `item` is excluded for `user` as of the last time before `now`, given every event
    /// learned so far entered before `now`.
    pub fn is_excluded(&self, user: &Id, item: &Id, now: Time) -> bool {
        let Some(ts) = self.marks.get(user).and_then(|items| items.get(item)) else { return false };
        horizon_expiry(self.horizon, *ts, self.tick).is_none_or(|expiry| expiry >= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Action;
    use crate::spec::Span;

    fn event(user: i64, item: i64, action: Action, ts: Millis) -> Event {
        Event { user: Id::Num(user), item: Id::Num(item), category: None, action, value: None, ts }
    }

    #[test]
    fn popularity_ranks_by_count_then_item() {
        let mut p = Popularity::default();
        for item in [5, 4, 5, 9, 9, 1] {
            p.add(&Id::Num(item), 1);
        }
        assert_eq!(p.top(3, |_| false), [Id::Num(5), Id::Num(9), Id::Num(1)]);
        p.add(&Id::Num(5), -2);
        assert_eq!(p.top(10, |_| false), [Id::Num(9), Id::Num(1), Id::Num(4)]);
    }

    #[test]
    fn window_counts_events_until_their_expiry() {
        let mut w = WindowedPopularity::new(10_000, 1_000);
        w.learn(&event(1, 7, Action::View, 500), 1_000); // leaves at ceil(10.5 s) = 11 s
        w.learn(&event(1, 8, Action::View, 2_000), 2_000); // leaves at 12 s
        w.advance(11_000);
        assert_eq!(w.popularity().top(5, |_| false), [Id::Num(7), Id::Num(8)], "as of 10 s both count");
        w.advance(12_000);
        assert_eq!(w.popularity().top(5, |_| false), [Id::Num(8)], "as of 11 s item 7 has left");
        // A late event already outside the window at its time never counts.
        w.learn(&event(2, 9, Action::View, 1_000), 12_000);
        assert_eq!(w.popularity().top(5, |_| false), [Id::Num(8)]);
    }

    #[test]
    fn exclusions_follow_rule_and_horizon() {
        let mut seen = Exclusions::new(Exclude::Seen, Horizon::Retention(Span(10_000)), 1_000);
        seen.learn(&event(1, 7, Action::View, 1_500)); // mark retracted at 12 s
        assert!(seen.is_excluded(&Id::Num(1), &Id::Num(7), 12_000));
        assert!(!seen.is_excluded(&Id::Num(1), &Id::Num(7), 13_000));
        assert!(!seen.is_excluded(&Id::Num(2), &Id::Num(7), 5_000));
        let mut bought = Exclusions::new(Exclude::Bought, Horizon::All, 1_000);
        bought.learn(&event(1, 7, Action::View, 1_000));
        bought.learn(&event(1, 8, Action::Buy, 1_000));
        assert!(!bought.is_excluded(&Id::Num(1), &Id::Num(7), 99_000));
        assert!(bought.is_excluded(&Id::Num(1), &Id::Num(8), 99_000));
    }
}
