//! The popular pool: the items with most events over the last `popular_window`, ranked by count
//! desc then item asc, refreshed every `popular_refresh` (by default on the similarity cadence).
//! Users with too few scored candidates are filled from it ([`super::recommend`]), and its first
//! `k` items are the list for users without one of their own ([`new_user_list`]).
//!
//! Two operators. **Counts** (on the worker the events are on) adds up each refresh's count
//! changes per item locally, so one record per item and refresh crosses to the **Pool**
//! operator, which keeps every item's count in an ordered set on one worker and, at each refresh,
//! emits only the ranks whose item changed. A refresh costs what changed in it, not a sort of all
//! items.

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};

use differential_dataflow::AsCollection;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::operator::Operator;

use super::{Coll, Time};
use crate::checkpoint::rescale::{first_only, Owner, Rescale};
use crate::checkpoint::worker_state::{self, Freeze};
use crate::event::{Event, Id};
use crate::event_time::ceil_to;
use crate::progress::StreamEnd;
use crate::results::RecItem;
use crate::schedule::{Due, DueWork, Inbox};
use crate::spec::RecommendSpec;

/// The popular pool's layout.
#[derive(Clone, Copy, Debug)]
pub struct PoolSpec {
    /// How far back events count.
    pub window: Time,
    /// How often the pool is refreshed.
    pub refresh: Time,
    /// The dataflow tick.
    pub tick: Time,
    /// Items in the pool.
    pub size: usize,
}

impl PoolSpec {
    /// The pool of a pipeline's recommendations: `spec.popular_window`, refreshed with the
    /// similarity, [`POOL_PER_K`](super::recommend::POOL_PER_K) items per list entry.
    pub fn of(spec: &RecommendSpec, tick: Time) -> PoolSpec {
        PoolSpec {
            window: spec.popular_window.millis(),
            refresh: spec.popular_refresh.unwrap_or(spec.similarity.refresh).millis(),
            tick,
            size: spec.k * super::recommend::POOL_PER_K,
        }
    }
}

/// `(rank, item, count)` for the `spec.size` items with most events in the last `spec.window`,
/// ranked by count desc then item asc, as of each multiple of `spec.refresh`.
///
/// ```
/// use differential_dataflow::input::Input;
/// use recflow::dataflow::popular::{popular_pool, PoolSpec};
/// use recflow::progress::StreamEnd;
/// use recflow::{Action, Event, Id};
///
/// let view = |item: i64| Event {
///     user: Id::Num(1), item: Id::Num(item), category: None, action: Action::View, value: None, ts: 0,
/// };
/// timely::example(move |scope| {
///     let (_input, events) = scope.new_collection_from(vec![view(4), view(9), view(9)]);
///     let spec = PoolSpec { window: 60_000, refresh: 1_000, tick: 1_000, size: 1 };
///     // Item 9 leads, with 2 events, from time 0 until its events leave the window at 60 s.
///     popular_pool(events, spec, StreamEnd::default()).inspect(|((rank, item, count), time, diff)| {
///         assert_eq!((*rank, item, *count), (0, &Id::Num(9), 2));
///         assert!((*time, *diff) == (0, 1) || (*time, *diff) == (60_000, -1));
///     });
/// });
/// ```
pub fn popular_pool<'scope>(
    events: Coll<'scope, Event>,
    spec: PoolSpec,
    end: StreamEnd,
) -> Coll<'scope, (usize, Id, i64)> {
    let PoolSpec { window, refresh, tick, .. } = spec;
    let windowed = events.join_function(move |event: Event| {
        let end = ceil_to(event.ts.saturating_add(window), tick);
        [(event.item.clone(), 0, 1), (event.item, end, -1)]
    });
    let changes = super::retime(windowed, "PopularRefresh", move |_, t| ceil_to(t, refresh), end);
    let counts = changes.inner.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<_>>, _, _, _>(
        Pipeline,
        "PopularPool: Counts",
        move |capability, info| {
            let due_work = worker_state::keep(&info.address, DueWork::<HashMap<Id, i64>>::default);
            due_work.borrow_mut().hold_from(&capability);
            move |(input, frontier), output| {
                let mut due_work = due_work.borrow_mut();
                input.for_each(|capability, data| {
                    for (item, time, diff) in data.drain(..) {
                        *due_work.at(time, &capability).entry(item).or_default() += diff as i64;
                    }
                });
                while let Some((time, capability, counts)) = due_work.next_due(frontier) {
                    let mut counts: Vec<(Id, i64)> = counts.into_iter().filter(|(_, c)| *c != 0).collect();
                    // Sorted, so the pool sees the same sequence whatever the hash map's order.
                    counts.sort_unstable();
                    output
                        .session(&capability)
                        .give_iterator(counts.into_iter().map(|(item, c)| (item, time, c as isize)));
                }
                due_work.settle();
            }
        },
    );
    counts
        .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<_>>, _, _, _>(
            Exchange::new(|_: &(Id, Time, isize)| 0),
            "PopularPool: Pool",
            move |capability, info| {
                let state = worker_state::keep(&info.address, PoolState::default);
                state.borrow_mut().inbox.hold_from(&capability);
                move |(input, frontier), output| {
                    let PoolState { inbox, count_of, ranked, emitted } = &mut *state.borrow_mut();
                    inbox.absorb(input);
                    while let Some(Due { time, capability, updates }) = inbox.next_complete(frontier) {
                        for (item, diff) in updates {
                            let before = count_of.get(&item).copied().unwrap_or(0);
                            let after = before + diff as i64;
                            if before > 0 {
                                ranked.remove(&(-before, item.clone()));
                            }
                            if after > 0 {
                                ranked.insert((-after, item.clone()));
                            }
                            if after == 0 {
                                count_of.remove(&item);
                            } else {
                                count_of.insert(item, after);
                            }
                        }
                        let pool: Vec<(Id, i64)> =
                            ranked.iter().take(spec.size).map(|(count, item)| (item.clone(), -count)).collect();
                        if pool != *emitted {
                            let mut session = output.session(&capability);
                            let old = std::mem::replace(emitted, pool);
                            let changed = |list: &[(Id, i64)], other: &[(Id, i64)]| -> BTreeMap<usize, (Id, i64)> {
                                list.iter()
                                    .enumerate()
                                    .filter(|(rank, entry)| other.get(*rank) != Some(*entry))
                                    .map(|(rank, entry)| (rank, entry.clone()))
                                    .collect()
                            };
                            for (rank, (item, count)) in changed(&old, emitted) {
                                session.give(((rank, item, count), time, -1));
                            }
                            for (rank, (item, count)) in changed(emitted, &old) {
                                session.give(((rank, item, count), time, 1));
                            }
                        }
                    }
                }
            },
        )
        .as_collection()
}

/// The list for users without one of their own, as it changes: the first `k` items of `pool`,
/// best first, each a fill-in (score 0, `fallback`). An empty pool has no list.
pub fn new_user_list<'scope>(pool: Coll<'scope, (usize, Id, i64)>, k: usize) -> Coll<'scope, Vec<RecItem>> {
    pool.filter(move |(rank, _, _)| *rank < k)
        .inner
        .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<_>>, _, _, _>(
            Exchange::new(|_: &((usize, Id, i64), Time, isize)| 0),
            "PopularPool: NewUserList",
            move |capability, info| {
                let state = worker_state::keep(&info.address, NewUserListState::default);
                state.borrow_mut().inbox.hold_from(&capability);
                move |(input, frontier), output| {
                    let NewUserListState { inbox, top, emitted } = &mut *state.borrow_mut();
                    inbox.absorb(input);
                    while let Some(Due { time, capability, updates }) = inbox.next_complete(frontier) {
                        for ((rank, item, _count), diff) in updates {
                            let entry = top.entry((rank, item)).or_default();
                            *entry += diff;
                            if *entry == 0 {
                                top.retain(|_, d| *d != 0);
                            }
                        }
                        let list: Vec<RecItem> = top
                            .keys()
                            .map(|(_, item)| RecItem {
                                item: item.clone(),
                                score: 0,
                                fallback: true,
                                because: Vec::new(),
                            })
                            .collect();
                        if list != *emitted {
                            let mut session = output.session(&capability);
                            let old = std::mem::replace(emitted, list);
                            if !old.is_empty() {
                                session.give((old, time, -1));
                            }
                            if !emitted.is_empty() {
                                session.give((emitted.clone(), time, 1));
                            }
                        }
                    }
                }
            },
        )
        .as_collection()
}

impl Rescale for NewUserListState {
    fn rescale(old: Vec<Self>, to: Owner) -> Self {
        first_only(old, to)
    }
}

impl Rescale for PoolState {
    fn rescale(old: Vec<Self>, to: Owner) -> Self {
        first_only(old, to)
    }
}

/// What the new-user list operator keeps (on worker 0).
#[derive(Default, Serialize, Deserialize)]
struct NewUserListState {
    inbox: Inbox<(usize, Id, i64)>,
    /// The pool's first `k` entries, `(rank, item)` with their multiplicity.
    top: BTreeMap<(usize, Id), isize>,
    /// The list last emitted.
    emitted: Vec<RecItem>,
}

/// What the pool operator keeps (on worker 0).
#[derive(Default, Serialize, Deserialize)]
struct PoolState {
    inbox: Inbox<Id>,
    count_of: HashMap<Id, i64>,
    /// Items by count desc, then item asc.
    ranked: BTreeSet<(i64, Id)>,
    /// The pool last emitted.
    emitted: Vec<(Id, i64)>,
}

impl Freeze for NewUserListState {
    type Frozen = (<Inbox<(usize, Id, i64)> as Freeze>::Frozen, BTreeMap<(usize, Id), isize>, Vec<RecItem>);

    fn freeze(&mut self) -> Self::Frozen {
        (self.inbox.freeze(), self.top.clone(), self.emitted.clone())
    }
}

impl Freeze for PoolState {
    type Frozen = (<Inbox<Id> as Freeze>::Frozen, HashMap<Id, i64>, BTreeSet<(i64, Id)>, Vec<(Id, i64)>);

    fn freeze(&mut self) -> Self::Frozen {
        (self.inbox.freeze(), self.count_of.clone(), self.ranked.clone(), self.emitted.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Action;
    use differential_dataflow::input::Input;
    use std::sync::{Arc, Mutex};

    #[test]
    fn the_pool_ranks_by_count_then_item_and_forgets_old_events() {
        let event = |item: i64, ts: u64| Event {
            user: Id::Num(1),
            item: Id::Num(item),
            category: None,
            action: Action::View,
            value: None,
            ts,
        };
        type Seen = BTreeMap<(Time, (usize, Id, i64)), isize>;
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let sink = Arc::clone(&seen);
        timely::example(move |scope| {
            let (mut input, events) = scope.new_collection::<Event, isize>();
            let spec = PoolSpec { window: 10_000, refresh: 2_000, tick: 1_000, size: 2 };
            popular_pool(events, spec, StreamEnd::default()).inspect(move |(entry, time, diff)| {
                *sink.lock().unwrap().entry((*time, entry.clone())).or_default() += diff;
            });
            for (item, ts) in [(5, 0), (3, 0), (3, 500), (7, 1_000), (7, 1_000), (5, 1_500)] {
                input.insert(event(item, ts));
            }
            input.advance_to(30_000);
        });
        let pool_at = |at: Time| -> Vec<(usize, Id, i64)> {
            let mut acc: BTreeMap<(usize, Id, i64), isize> = BTreeMap::new();
            for ((time, entry), diff) in seen.lock().unwrap().iter() {
                if *time <= at {
                    *acc.entry(entry.clone()).or_default() += diff;
                }
            }
            acc.into_iter().filter(|(_, d)| *d != 0).map(|(e, _)| e).collect()
        };
        // All six events count at the first refresh (2 s): 3, 5, 7 twice each; ties by item.
        assert_eq!(pool_at(2_000), [(0, Id::Num(3), 2), (1, Id::Num(5), 2)]);
        // At 10 s the events at 0 s have left the window: 7 (twice), then 3 and 5 (once; 3 < 5).
        assert_eq!(pool_at(10_000), [(0, Id::Num(7), 2), (1, Id::Num(3), 1)]);
        assert!(pool_at(12_000).is_empty(), "every event has left the window");
    }
}
