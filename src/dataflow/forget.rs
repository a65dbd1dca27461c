//! Forgetting a user (`DELETE /v1/users/{user}`): every event of theirs still inside some window
//! is retracted from the accepted events, so it leaves every arrangement built from them.
//!
//! The operator sits between the ingest operator and everything else. It passes events through
//! unchanged and keeps, per user (spread over workers by hash), the events that can still affect
//! a result: until the last window or horizon holding the event has closed ([`Influence`]). A
//! forget of user `u` at time `T` retracts at `T` every kept event of `u` with a time up to `T`.
//!
//! Retracting at `T` an event that arrived at `t <= T` is all it takes: the operators downstream
//! schedule an event's expiries with `join_function`, which moves each part to the later of its
//! own time and the update's, so a part that already expired is put back and taken out again in
//! the same step, and a part still due to expire has its expiry cancelled. A result is what a
//! run that never saw the user's events would hold from `T` on, except where it was fixed before
//! `T`: a hot-items window that closed before the forget keeps its published answer. The users
//! operator re-scores every user once the similarity table has taken a forget in
//! ([`crate::progress::settled`]), so other users' lists lose what the user's history gave the
//! item similarities and the popular items.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use differential_dataflow::{AsCollection, Hashable};
use timely::dataflow::channels::pact::{Exchange, Pipeline as Local};
use timely::dataflow::operators::generic::operator::Operator;

use super::{hopping, Coll, Time};
use crate::checkpoint::rescale::{owned_entries, Owner, Rescale};
use crate::checkpoint::shared::{MapSnapshot, SharedMap};
use crate::checkpoint::worker_state::{self, Freeze};
use crate::event::{Event, Id};
use crate::event_time::ceil_to;
use crate::schedule::{Due, Inbox};
use crate::spec::{Pipeline, ShortTermWindow};
use crate::window::{horizon_expiry, short_term_expiry, Hopping};

/// How long an accepted event can affect results: the latest close of the windows and horizons
/// that hold it, in dataflow time.
#[derive(Clone, Debug)]
pub struct Influence {
    /// `None` when some part never expires (a long-term horizon of all history).
    reach: Option<Time>,
    /// The short-term window, whose expiry depends on the event's time.
    short_term: Option<ShortTermWindow>,
    long_term: Option<crate::spec::Horizon>,
    /// The hot-items windows.
    hop: Option<Hopping>,
    /// The similarity's refresh cadence: a window expiry reaches the similarity rows only once
    /// they have settled after it.
    refresh: Option<Time>,
    tick: Time,
}

impl Influence {
    /// The influence of events in `pipeline`.
    pub fn of(pipeline: &Pipeline) -> Influence {
        let tick = pipeline.time.tick.millis();
        let lateness = pipeline.time.allowed_lateness.millis();
        // Spans past an event's own time that every part reaches at most, besides the windows
        // computed per event below: the popular window, a session's gap (plus the lateness that
        // can extend it), and the time the similarity table takes to settle.
        let reach = pipeline.recommend.as_ref().map_or(0, |spec| {
            let session = match spec.short_term {
                ShortTermWindow::Session { gap } => gap.millis() + lateness,
                _ => 0,
            };
            let spec_popular = spec.popular_window.millis();
            spec_popular.max(session) + crate::progress::settled(0, spec.similarity.refresh.millis())
        });
        Influence {
            reach: Some(reach + 2 * tick),
            short_term: pipeline.recommend.as_ref().map(|spec| spec.short_term),
            long_term: pipeline.recommend.as_ref().map(|spec| spec.long_term),
            hop: hopping(pipeline),
            refresh: pipeline.recommend.as_ref().map(|spec| spec.similarity.refresh.millis()),
            tick,
        }
    }

    /// The time after which no result depends on `event` any more, if there is one.
    pub fn ends(&self, event: &Event) -> Option<Time> {
        let (ts, tick) = (event.ts, self.tick);
        let mut end = ts.saturating_add(self.reach?);
        let settle = |expiry: Time| self.refresh.map_or(expiry, |refresh| crate::progress::settled(expiry, refresh));
        if let Some(window) = self.short_term {
            end = end.max(settle(short_term_expiry(window, ts, tick).unwrap_or(0)));
        }
        if let Some(horizon) = self.long_term {
            end = end.max(settle(horizon_expiry(horizon, ts, tick)?));
        }
        if let Some(hop) = self.hop {
            let last_window = hop.pane_end(ts) + hop.size - hop.slide;
            end = end.max(hop.purge_time(last_window));
        }
        Some(ceil_to(end, tick) + tick)
    }
}

/// An event kept in case its user is forgotten.
#[derive(Clone, Serialize, Deserialize)]
struct KeptEvent {
    event: Event,
    /// Its dataflow time.
    time: Time,
    diff: isize,
    /// When it stops mattering; `None`: never.
    until: Option<Time>,
}

/// Events one worker keeps for the users it owns.
#[derive(Default, Serialize, Deserialize)]
struct Kept {
    /// Each user's events in arrival order.
    by_user: SharedMap<Id, VecDeque<KeptEvent>>,
    /// When to look at a user's oldest events again, to drop them.
    checks: BTreeMap<Time, Vec<Id>>,
}

impl Kept {
    fn keep(&mut self, event: Event, time: Time, diff: isize, until: Option<Time>) {
        let events = self.by_user.get_or_default(event.user.clone());
        if events.is_empty() {
            if let Some(until) = until {
                self.checks.entry(until).or_default().push(event.user.clone());
            }
        }
        events.push_back(KeptEvent { event, time, diff, until });
    }

    /// Takes the events of `user` up to time `at` out, for retraction.
    fn take(&mut self, user: &Id, at: Time) -> Vec<(Event, isize)> {
        let Some(events) = self.by_user.get_mut(user) else { return Vec::new() };
        let mut taken = Vec::new();
        events.retain(|kept| {
            if kept.time <= at {
                taken.push((kept.event.clone(), kept.diff));
                false
            } else {
                true
            }
        });
        if events.is_empty() {
            self.by_user.remove(user);
        }
        taken
    }

    /// Drops the events that stopped mattering before `now`, oldest arrivals first.
    fn drop_expired(&mut self, now: Time) {
        while let Some(entry) = self.checks.first_entry() {
            if *entry.key() >= now {
                break;
            }
            for user in entry.remove() {
                let Some(events) = self.by_user.get_mut(&user) else { continue };
                while events.front().is_some_and(|kept| kept.until.is_some_and(|until| until < now)) {
                    events.pop_front();
                }
                match events.front().map(|kept| kept.until) {
                    None => {
                        self.by_user.remove(&user);
                    }
                    Some(Some(next)) => self.checks.entry(next).or_default().push(user),
                    Some(None) => {}
                }
            }
        }
    }
}

/// Each user's kept events and checks go to the user's worker.
impl Rescale for ForgetState {
    fn rescale(old: Vec<Self>, to: Owner) -> Self {
        let (kept, pending): (Vec<Kept>, Vec<Inbox<Id>>) = old.into_iter().map(|s| (s.kept, s.pending)).unzip();
        let (by_user, checks): (Vec<_>, Vec<_>) = kept.into_iter().map(|k| (k.by_user, k.checks)).unzip();
        let mut merged_checks: BTreeMap<Time, Vec<Id>> = BTreeMap::new();
        for (time, users) in checks.into_iter().flatten() {
            merged_checks.entry(time).or_default().extend(users.into_iter().filter(|user| to.owns_key(user)));
        }
        merged_checks.retain(|_, users| !users.is_empty());
        ForgetState {
            kept: Kept { by_user: owned_entries(by_user, to), checks: merged_checks },
            pending: Inbox::rescale(pending, to),
        }
    }
}

/// What the forget operator keeps on one worker.
#[derive(Default, Serialize, Deserialize)]
struct ForgetState {
    kept: Kept,
    /// Forget requests waiting for every event up to their time.
    pending: Inbox<Id>,
}

impl Freeze for ForgetState {
    type Frozen = ((MapSnapshot<Id, VecDeque<KeptEvent>>, BTreeMap<Time, Vec<Id>>), <Inbox<Id> as Freeze>::Frozen);

    fn freeze(&mut self) -> Self::Frozen {
        ((self.kept.by_user.share(), self.kept.checks.clone()), self.pending.freeze())
    }
}

/// The accepted events, less those of each user in `forgets` up to the forget's time. The
/// events must already be spread by user ([`super::spread_by_user`]); forgets go to the worker
/// their user hashes to.
///
/// ```
/// use differential_dataflow::input::Input;
/// use recflow::dataflow::forget::{forgettable, Influence};
/// use recflow::{Action, Event, Id, Pipeline};
///
/// let pipeline = Pipeline::from_toml("[hot_items]\nsize = \"1m\"\nslide = \"1m\"", "p.toml").unwrap();
/// let event = |user: i64, ts: u64| Event {
///     user: Id::Num(user), item: Id::Num(7), category: None, action: Action::View, value: None, ts,
/// };
/// timely::example(move |scope| {
///     let (_events, events) = scope.new_collection_from(vec![event(1, 0), event(2, 0)]);
///     let (mut forgets, forget_coll) = scope.new_collection::<Id, isize>();
///     forgets.advance_to(5);
///     forgets.insert(Id::Num(1));
///     forgettable(recflow::dataflow::spread_by_user(events), forget_coll, Influence::of(&pipeline))
///         .inspect(|(event, time, diff)| assert!(*diff > 0 || (event.user == Id::Num(1) && *time == 5)));
/// });
/// ```
pub fn forgettable<'scope>(
    events: Coll<'scope, Event>,
    forgets: Coll<'scope, Id>,
    influence: Influence,
) -> Coll<'scope, Event> {
    events
        .inner
        .binary_frontier::<_, timely::container::CapacityContainerBuilder<Vec<(Event, Time, isize)>>, _, _, _, _>(
            forgets.inner,
            Local,
            Exchange::new(|(user, _, _): &(Id, Time, isize)| user.hashed()),
            "Forget: Events",
            move |capability, info| {
                let state = worker_state::keep(&info.address, ForgetState::default);
                state.borrow_mut().pending.hold_from(&capability);
                move |(events, events_frontier), (requests, requests_frontier), output| {
                    let ForgetState { kept, pending } = &mut *state.borrow_mut();
                    events.for_each(|capability, data| {
                        for (event, time, diff) in data.iter() {
                            kept.keep(event.clone(), *time, *diff, influence.ends(event));
                        }
                        output.session(&capability).give_container(data);
                    });
                    pending.absorb(requests);
                    // A forget at `T` waits until every event up to `T` has arrived.
                    while pending.first_time().is_some_and(|at| !events_frontier.less_equal(&at)) {
                        let Some(Due { time, capability, updates }) = pending.next_complete(requests_frontier) else {
                            break;
                        };
                        let mut session = output.session(&capability);
                        for (user, _) in updates {
                            for (event, diff) in kept.take(&user, time) {
                                session.give((event, time, -diff));
                            }
                        }
                    }
                    pending.settle();
                    if let Some(&now) = events_frontier.frontier().iter().min() {
                        kept.drop_expired(now);
                    }
                }
            },
        )
        .as_collection()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Action;

    fn event(user: i64, ts: u64) -> Event {
        Event { user: Id::Num(user), item: Id::Num(1), category: None, action: Action::View, value: None, ts }
    }

    #[test]
    fn influence_ends_after_the_longest_window() {
        let pipeline = Pipeline::from_toml(
            "[time]\ntick = \"1s\"\n[recommend]\nlong_term = \"2h\"\n[hot_items]\nsize = \"1h\"\nslide = \"5m\"",
            "p.toml",
        )
        .unwrap();
        let end = Influence::of(&pipeline).ends(&event(1, 1_000)).unwrap();
        assert!(end > 7_201_000, "past the 2 h retention: {end}");
        let forever = Pipeline::from_toml("[recommend]\nlong_term = \"all\"", "p.toml").unwrap();
        assert_eq!(Influence::of(&forever).ends(&event(1, 1_000)), None);
    }

    #[test]
    fn kept_events_are_taken_up_to_the_forget_and_dropped_once_expired() {
        let mut kept = Kept::default();
        kept.keep(event(1, 10), 10, 1, Some(100));
        kept.keep(event(1, 20), 20, 1, Some(110));
        kept.keep(event(2, 20), 20, 1, Some(110));
        assert_eq!(kept.take(&Id::Num(1), 15).len(), 1, "only the events up to the forget's time");
        kept.drop_expired(105);
        assert_eq!(kept.by_user.get(&Id::Num(1)).map(VecDeque::len), Some(1), "not expired yet");
        kept.drop_expired(111);
        assert!(kept.by_user.is_empty(), "all expired: {:?}", kept.by_user.keys().collect::<Vec<_>>());
        assert!(kept.checks.is_empty());
    }
}
