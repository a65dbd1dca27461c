//! Windowed hot items (the Flink HotItems job): hopping windows of `size` every `slide`, aligned to
//! the epoch; per window (and optionally per category) the `top_n` items by event count, ties
//! broken by item asc.
//!
//! Three operators, each doing the least work that keeps the answer exact:
//!
//! 1. **Panes** (on the worker holding the event): each event is counted once, in its slide-long pane,
//!    in a local hash map; a pane's counts leave together when the frontier reaches the pane's
//!    end (a late event's count leaves at its own time).
//! 2. **Windows** (items spread over all workers by hash): each pane count is added to the
//!    `size / slide` windows holding the pane. A window is evaluated when it fires (the frontier
//!    passes its end) and again whenever a late event changes it; the worker sends its local
//!    top-N candidates only if they changed.
//! 3. **Top-N** (windows spread over workers by hash): merges the workers' candidates into the
//!    window's top-N and emits a change only if the list changed.
//!
//! All three drop a window's state once no accepted event can change it any more (its purge
//! time); the last reported list is the window's final answer and is never retracted. A
//! forgotten user's events are retracted only from the windows still open
//! ([`super::forget`]).

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};

use differential_dataflow::{AsCollection, Hashable};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::Stream;

use super::ranking::keep_best;
use super::{Coll, Time};
use crate::checkpoint::rescale::{merge_by_time, Owner, Rescale};
use crate::checkpoint::worker_state::{self, Freeze};
use crate::event::{Event, Id, Millis};
use crate::schedule::{Due, DueWork, Inbox};
use crate::spec::HotItemsSpec;
use crate::window::Hopping;

/// A hot-items list's key: the window's end and, for per-category lists, the category.
pub type HotWindow = (Millis, Option<Id>);

/// A pane's count of one item: `((pane_end, category, item), time, count)`.
type PaneCount = ((Millis, Option<Id>, Id), Time, i64);

/// A pane's key: `(pane_end, category, item)`.
type PaneKey = (Millis, Option<Id>, Id);

/// A window's list at a time, as a differential update.
type ListUpdate = ((HotWindow, Vec<(Id, i64)>), Time, isize);

/// What the top-N stage keeps per window: each worker's candidates and the list last reported.
#[derive(Clone, Default, Serialize, Deserialize)]
struct MergedWindow {
    per_worker: BTreeMap<usize, Vec<(Id, i64)>>,
    reported: Vec<(Id, i64)>,
}

/// One worker's top-N candidates of a window: `((window, worker), list)` at a time.
type Candidates = ((HotWindow, usize), Vec<(Id, i64)>);

/// `(window, list)` changes: for each window, its current top-N list.
///
/// ```
/// use differential_dataflow::input::Input;
/// use recflow::dataflow::{hopping, hot_items::hot_items};
/// use recflow::{Action, Event, Id, Pipeline};
/// use timely::dataflow::operators::capture::{Capture, Extract};
///
/// // Views count, in windows of 1 min starting every 30 s; the 2 hottest items of each.
/// let toml = "[hot_items]\nactions = [\"view\"]\nsize = \"1m\"\nslide = \"30s\"\ntop_n = 2";
/// let pipeline = Pipeline::from_toml(toml, "hot.toml").unwrap();
/// let captured = timely::example(move |scope| {
///     let (mut input, events) = scope.new_collection::<Event, isize>();
///     let hot = hot_items(events, pipeline.hot_items.as_ref().unwrap(), hopping(&pipeline).unwrap());
///     let (view, buy) = (Action::View, Action::Buy);
///     let stream = [(8, view, 5), (7, view, 10), (9, buy, 20), (8, view, 40), (9, view, 45), (8, view, 50)];
///     for (item, action, secs) in stream {
///         let ts = secs * 1_000;
///         input.advance_to(ts);
///         input.insert(Event { user: Id::Num(1), item: Id::Num(item), category: None, action, value: None, ts });
///     }
///     hot.inner.capture()
/// });
/// let mut lists: Vec<_> = captured.extract().into_iter().flat_map(|(_, updates)| updates).collect();
/// lists.sort();
/// let top = |items: &[(i64, i64)]| items.iter().map(|&(item, count)| (Id::Num(item), count)).collect::<Vec<_>>();
/// // Windows align to the epoch: the first to hold 5 s is [-30 s, 30 s). Each window's list appears
/// // once, when the window closes: count desc, then item asc. The buy does not count.
/// assert_eq!(lists, [
///     (((30_000, None), top(&[(7, 1), (8, 1)])), 30_000, 1),
///     (((60_000, None), top(&[(8, 3), (7, 1)])), 60_000, 1),
///     (((90_000, None), top(&[(8, 2), (9, 1)])), 90_000, 1),
/// ]);
/// ```
pub fn hot_items<'scope>(
    events: Coll<'scope, Event>,
    spec: &HotItemsSpec,
    hop: Hopping,
) -> Coll<'scope, (HotWindow, Vec<(Id, i64)>)> {
    let panes = count_panes(events, spec, hop);
    let candidates = window_candidates(panes, spec.top_n, hop);
    merge_candidates(candidates, spec.top_n, hop).as_collection()
}

/// Stage 1: per-pane counts, combined locally before any exchange.
fn count_panes<'scope>(
    events: Coll<'scope, Event>,
    spec: &HotItemsSpec,
    hop: Hopping,
) -> Stream<'scope, Time, Vec<PaneCount>> {
    let actions = spec.actions.clone();
    let per_category = spec.per_category;
    events.inner.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<PaneCount>>, _, _, _>(
        Pipeline,
        "HotItems: Panes",
        move |capability, info| {
            let due_work = worker_state::keep(&info.address, DueWork::<HashMap<PaneKey, i64>>::default);
            due_work.borrow_mut().hold_from(&capability);
            move |(input, frontier), output| {
                let mut due_work = due_work.borrow_mut();
                input.for_each(|capability, data| {
                    for (event, time, diff) in data.drain(..) {
                        if !actions.contains(&event.action) {
                            continue;
                        }
                        let pane_end = hop.pane_end(event.ts);
                        let category = if per_category { event.category } else { None };
                        let counts = due_work.at(time.max(pane_end), &capability);
                        *counts.entry((pane_end, category, event.item)).or_default() += diff as i64;
                    }
                });
                while let Some((time, capability, counts)) = due_work.next_due(frontier) {
                    let mut session = output.session(&capability);
                    session.give_iterator(counts.into_iter().filter(|(_, c)| *c != 0).map(|(key, c)| (key, time, c)));
                }
                due_work.settle();
            }
        },
    )
}

/// The counts of one window on one worker, and the candidates it last sent.
#[derive(Clone, Default, Serialize, Deserialize)]
struct WindowCounts {
    counts: HashMap<Id, i64>,
    sent: Vec<(Id, i64)>,
}

/// Work due at one time on a windows worker.
#[derive(Clone, Default, Serialize, Deserialize)]
struct WindowWork {
    counts: Vec<(Millis, Option<Id>, Id, i64)>,
    evaluate: BTreeSet<HotWindow>,
}

/// Stage 2: window counts per item shard, and each worker's top-N candidates per window.
fn window_candidates<'scope>(
    panes: Stream<'scope, Time, Vec<PaneCount>>,
    top_n: usize,
    hop: Hopping,
) -> Stream<'scope, Time, Vec<(Candidates, Time, isize)>> {
    let worker = panes.scope().index();
    panes.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<(Candidates, Time, isize)>>, _, _, _>(
        Exchange::new(|((_, _, item), _, _): &PaneCount| item.hashed()),
        "HotItems: Windows",
        move |capability, info| {
            let state = worker_state::keep(&info.address, WindowsState::default);
            if let Some(to) = worker_state::rescaled() {
                state.borrow_mut().send_fired_again(to.cut, hop);
            }
            state.borrow_mut().due_work.hold_from(&capability);
            move |(input, frontier), output| {
                let WindowsState { due_work, windows } = &mut *state.borrow_mut();
                input.for_each(|capability, data| {
                    for ((pane_end, category, item), time, count) in data.drain(..) {
                        for end in hop.open_window_ends(pane_end, time) {
                            let evaluate_at = time.max(hop.fire_time(end));
                            due_work.at(evaluate_at, &capability).evaluate.insert((end, category.clone()));
                        }
                        due_work.at(time, &capability).counts.push((pane_end, category, item, count));
                    }
                });
                while let Some((time, capability, work)) = due_work.next_due(frontier) {
                    for (pane_end, category, item, count) in work.counts {
                        for end in hop.open_window_ends(pane_end, time) {
                            let window = windows.entry((end, category.clone())).or_default();
                            let entry = window.counts.entry(item.clone()).or_default();
                            *entry += count;
                            if *entry == 0 {
                                window.counts.remove(&item);
                            }
                        }
                    }
                    let mut session = output.session(&capability);
                    for key in work.evaluate {
                        let Some(window) = windows.get_mut(&key) else { continue };
                        let best = top_by_count(window.counts.iter().map(|(i, c)| (i, *c)), top_n);
                        if best != window.sent {
                            let old = std::mem::replace(&mut window.sent, best.clone());
                            session.give((((key.clone(), worker), old), time, -1));
                            session.give((((key, worker), best), time, 1));
                        }
                    }
                }
                due_work.settle();
                forget_purged(windows, frontier, hop);
            }
        },
    )
}

/// What the windows stage keeps on one worker.
#[derive(Default, Serialize, Deserialize)]
struct WindowsState {
    due_work: DueWork<WindowWork>,
    windows: BTreeMap<HotWindow, WindowCounts>,
}

impl Freeze for WindowsState {
    type Frozen = (<DueWork<WindowWork> as Freeze>::Frozen, BTreeMap<HotWindow, WindowCounts>);

    fn freeze(&mut self) -> Self::Frozen {
        (self.due_work.freeze(), self.windows.clone())
    }
}

/// Each item's counts go to the item's worker, and every worker evaluates the windows any
/// worker was due to; what each sent is forgotten, since the top-N stage forgets it too.
impl Rescale for WindowsState {
    fn rescale(old: Vec<Self>, to: Owner) -> Self {
        let mut windows: BTreeMap<HotWindow, WindowCounts> = BTreeMap::new();
        let mut pending = Vec::with_capacity(old.len());
        for state in old {
            pending.push(state.due_work.into_work());
            for (key, counts) in state.windows {
                let owned = counts.counts.into_iter().filter(|(item, _)| to.owns_key(item));
                windows.entry(key).or_default().counts.extend(owned);
            }
        }
        windows.retain(|_, window| !window.counts.is_empty());
        let keep = |_, mut work: WindowWork| {
            work.counts.retain(|(_, _, item, _)| to.owns_key(item));
            Some(work)
        };
        let merge = |into: &mut WindowWork, work: WindowWork| {
            into.counts.extend(work.counts);
            into.evaluate.extend(work.evaluate);
        };
        WindowsState { due_work: DueWork::from_work(merge_by_time(pending, keep, merge)), windows }
    }
}

impl WindowsState {
    /// After a restore on another number of workers: evaluates every window that has fired at
    /// `cut`, so each worker sends its candidates for it anew, under its new index.
    fn send_fired_again(&mut self, cut: Time, hop: Hopping) {
        let fired: Vec<HotWindow> =
            self.windows.keys().filter(|(end, _)| hop.fire_time(*end) <= cut).cloned().collect();
        self.due_work.restored_at(cut).evaluate.extend(fired);
    }
}

/// Each window's merged list goes to the window's worker; the candidates it held, by old
/// worker, are dropped, and each window that has fired gets them again from the new workers.
impl Rescale for TopState {
    fn rescale(old: Vec<Self>, to: Owner) -> Self {
        let windows = old
            .into_iter()
            .flat_map(|state| state.windows)
            .filter(|(window, _)| to.owns_key(window))
            .map(|(window, merged)| (window, MergedWindow { per_worker: BTreeMap::new(), reported: merged.reported }))
            .collect();
        TopState { inbox: Inbox::default(), windows }
    }
}

/// What the top-N stage keeps on one worker.
#[derive(Default, Serialize, Deserialize)]
struct TopState {
    inbox: Inbox<Candidates>,
    windows: BTreeMap<HotWindow, MergedWindow>,
}

impl Freeze for TopState {
    type Frozen = (<Inbox<Candidates> as Freeze>::Frozen, BTreeMap<HotWindow, MergedWindow>);

    fn freeze(&mut self) -> Self::Frozen {
        (self.inbox.freeze(), self.windows.clone())
    }
}

/// Stage 3: the window's top-N from all workers' candidates.
fn merge_candidates<'scope>(
    candidates: Stream<'scope, Time, Vec<(Candidates, Time, isize)>>,
    top_n: usize,
    hop: Hopping,
) -> Stream<'scope, Time, Vec<ListUpdate>> {
    candidates.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<_>>, _, _, _>(
        Exchange::new(|(((window, _), _), _, _): &(Candidates, Time, isize)| window.hashed()),
        "HotItems: TopN",
        move |capability, info| {
            let state = worker_state::keep(&info.address, TopState::default);
            state.borrow_mut().inbox.hold_from(&capability);
            move |(input, frontier), output| {
                let TopState { inbox, windows } = &mut *state.borrow_mut();
                inbox.absorb(input);
                while let Some(Due { time, capability, updates }) = inbox.next_complete(frontier) {
                    let mut touched = BTreeSet::new();
                    for (((window, worker), list), diff) in updates {
                        let per_worker = &mut windows.entry(window.clone()).or_default().per_worker;
                        if diff > 0 {
                            per_worker.insert(worker, list);
                        } else if per_worker.get(&worker) == Some(&list) {
                            per_worker.remove(&worker);
                        }
                        touched.insert(window);
                    }
                    let mut session = output.session(&capability);
                    for window in touched {
                        let Some(merged) = windows.get_mut(&window) else { continue };
                        let best = top_by_count(merged.per_worker.values().flatten().map(|(i, c)| (i, *c)), top_n);
                        if best != merged.reported {
                            let old = std::mem::replace(&mut merged.reported, best.clone());
                            if !old.is_empty() {
                                session.give(((window.clone(), old), time, -1));
                            }
                            session.give(((window, best), time, 1));
                        }
                    }
                }
                forget_purged(windows, frontier, hop);
            }
        },
    )
}

/// Drops the state of windows whose purge time the frontier has passed.
fn forget_purged<V>(
    windows: &mut BTreeMap<HotWindow, V>,
    frontier: &timely::progress::frontier::MutableAntichain<Time>,
    hop: Hopping,
) {
    while let Some(entry) = windows.first_entry() {
        if frontier.less_equal(&hop.purge_time(entry.key().0)) {
            break;
        }
        entry.remove();
    }
}

/// The `n` items with the highest counts, count desc then item asc.
fn top_by_count<'a>(counted: impl Iterator<Item = (&'a Id, i64)>, n: usize) -> Vec<(Id, i64)> {
    let mut best: Vec<(i64, &Id)> = counted.filter(|(_, c)| *c > 0).map(|(item, c)| (-c, item)).collect();
    keep_best(&mut best, n);
    best.into_iter().map(|(negated, item)| (item.clone(), -negated)).collect()
}
