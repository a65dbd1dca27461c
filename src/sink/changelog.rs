//! From a collection's updates to an upsert changelog: one record per key whose value changed at
//! each completed time, in time order and, within a time, in key order.
//!
//! Two kinds of change are not reported: a hot-items window that is purged (it was final; its
//! last record stays its answer), and, after a finite input ended, recommendation changes (of
//! users' lists and of the new-user list) caused only by windows expiring past the end of the
//! data.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use differential_dataflow::Hashable;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::{probe, Probe};

use super::{Destination, Hold, Output, SinkError};
use crate::checkpoint::rescale::{first_only, Owner, Place, Placed, Rescale};
use crate::checkpoint::shared::{MapSnapshot, SharedMap};
use crate::checkpoint::worker_state::{self, Freeze};
use crate::event::Millis;
use crate::event_time::{Coll, Time};
use crate::metrics::Metrics;
use crate::progress::StreamEnd;
use crate::results::{ChangeRecord, CountedItem, RecItem, ResultKey, ResultValue, ScoredItem, SCORE_SCALE};
use crate::schedule::{Due, Inbox};
use crate::window::Hopping;

/// A key's new value at a time, or `None` when it has none any more.
pub type Change = (ResultKey, Option<ResultValue>);

/// The accumulated current value of every key, turning completed updates into changes.
#[derive(Serialize, Deserialize)]
pub struct Changelog {
    current: SharedMap<ResultKey, ResultValue>,
    /// Hot-items windows with a value, by window end, so they can be forgotten once purged.
    windows: std::collections::BTreeSet<(Millis, ResultKey)>,
    /// A setting of the pipeline, not state: not saved with a checkpoint.
    #[serde(skip)]
    hopping: Option<Hopping>,
}

/// The values and windows, without the setting.
impl Freeze for Changelog {
    type Frozen = (MapSnapshot<ResultKey, ResultValue>, std::collections::BTreeSet<(Millis, ResultKey)>);

    fn freeze(&mut self) -> Self::Frozen {
        (self.current.share(), self.windows.clone())
    }
}

impl Changelog {
    /// A changelog for results whose windows follow `hopping`.
    pub fn new(hopping: Option<Hopping>) -> Changelog {
        Changelog { current: SharedMap::default(), windows: Default::default(), hopping }
    }

    /// Applies all updates at `time` (the caller guarantees earlier times were applied) and returns
    /// the keys whose value changed, in key order. `end` is the end of a finite input, if it has
    /// ended.
    pub fn apply(
        &mut self,
        time: Millis,
        updates: Vec<((ResultKey, ResultValue), isize)>,
        end: Option<Millis>,
    ) -> Vec<Change> {
        let mut by_key: BTreeMap<ResultKey, Vec<(ResultValue, isize)>> = BTreeMap::new();
        for ((key, value), diff) in updates {
            by_key.entry(key).or_default().push((value, diff));
        }
        let mut changes = Vec::new();
        for (key, mut values) in by_key {
            differential_dataflow::consolidation::consolidate(&mut values);
            if values.is_empty() {
                continue;
            }
            let new_value = values.iter().find(|(_, d)| *d > 0).map(|(v, _)| v.clone());
            if let ResultKey::HotItems { window_end, .. } = &key {
                if self.hopping.is_some_and(|h| time >= h.purge_time(*window_end)) {
                    self.current.remove(&key);
                    continue;
                }
            }
            if matches!(key, ResultKey::Recs(_) | ResultKey::Popular) && end.is_some_and(|end| time > end) {
                continue;
            }
            if let ResultKey::HotItems { window_end, .. } = &key {
                self.windows.insert((*window_end, key.clone()));
            }
            let changed = match &new_value {
                Some(value) => self.current.insert(key.clone(), value.clone()).as_ref() != Some(value),
                None => self.current.remove(&key).is_some(),
            };
            if changed {
                changes.push((key, new_value));
            }
        }
        self.forget_purged(time);
        changes
    }

    /// Forgets hot-items windows that no event can change any more at `time`: their last record
    /// is final.
    fn forget_purged(&mut self, time: Millis) {
        let Some(hopping) = self.hopping else { return };
        while let Some((end, _)) = self.windows.first() {
            if hopping.purge_time(*end) > time {
                break;
            }
            if let Some((_, key)) = self.windows.pop_first() {
                self.current.remove(&key);
            }
        }
    }
}

/// How changes are written as records: times in the input's unit, windows by start and end.
#[derive(Clone, Copy, Debug)]
pub struct RecordFormat {
    /// Milliseconds per unit of the input's timestamps.
    pub unit: u64,
    /// The hot-items window size in milliseconds, 0 without hot items.
    pub window_size: Millis,
}

impl RecordFormat {
    /// The record of `key` taking `value` at `time`.
    pub fn record(&self, (key, value): Change, time: Millis) -> ChangeRecord {
        let unit = self.unit;
        match key {
            ResultKey::Recs(user) => {
                let items = match value {
                    Some(ResultValue::Recs(list)) => list.into_iter().map(scored).collect(),
                    _ => Vec::new(),
                };
                ChangeRecord::Recs { user, time: time / unit, items }
            }
            ResultKey::Popular => {
                let items = match value {
                    Some(ResultValue::Recs(list)) => list.into_iter().map(scored).collect(),
                    _ => Vec::new(),
                };
                ChangeRecord::Popular { time: time / unit, items }
            }
            ResultKey::HotItems { window_end, category } => {
                let items = match value {
                    Some(ResultValue::HotItems(list)) => {
                        list.into_iter().map(|(item, count)| CountedItem { item, count }).collect()
                    }
                    _ => Vec::new(),
                };
                ChangeRecord::HotItems {
                    window_start: (window_end as i64 - self.window_size as i64).div_euclid(unit as i64),
                    window_end: window_end / unit,
                    category,
                    items,
                }
            }
        }
    }
}

fn scored(rec: RecItem) -> ScoredItem {
    ScoredItem {
        item: rec.item,
        score: rec.score as f64 / SCORE_SCALE as f64,
        fallback: rec.fallback,
        because: rec.because,
    }
}

/// Writes the changelog of `results` to `output` on worker 0 and attaches `completed` after
/// it; the sink's frontier waits for the destination to acknowledge what it was given. When the
/// destination fails, the failure is reported as the run's fatal fault and the frontier stays
/// at the earliest result not written.
///
/// Each worker finds the changes of its own keys (routed like the operators that computed them,
/// so results rarely cross workers); worker 0 only puts each time's changes in key order and
/// writes them.
pub fn write_changelog(
    results: Coll<'_, (ResultKey, ResultValue)>,
    output: Option<Output<ChangeRecord>>,
    hopping: Option<Hopping>,
    unit: u64,
    end: StreamEnd,
    metrics: Arc<Metrics>,
    completed: &probe::Handle<Time>,
) {
    let format = RecordFormat { unit, window_size: hopping.map_or(0, |h| h.size) };
    let changes = find_changes(results, Changelog::new(hopping), end);
    write_changes(changes, output, format, metrics).probe_with(completed);
}

type Changes<'scope> = timely::dataflow::Stream<'scope, Time, Vec<(Change, Time)>>;

/// Each key's changes at each completed time, on the worker that owns the key.
fn find_changes<'scope>(
    results: Coll<'scope, (ResultKey, ResultValue)>,
    changelog: Changelog,
    end: StreamEnd,
) -> Changes<'scope> {
    results.inner.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<_>>, _, _, _>(
        Exchange::new(|((key, _), _, _): &((ResultKey, ResultValue), Time, isize)| owner(key)),
        "Sink: Changes",
        move |capability, info| {
            let hopping = changelog.hopping;
            let state = worker_state::keep(&info.address, || ChangesState { inbox: Inbox::default(), changelog });
            state.borrow_mut().changelog.hopping = hopping;
            state.borrow_mut().inbox.hold_from(&capability);
            move |(input, frontier), output| {
                let ChangesState { inbox, changelog } = &mut *state.borrow_mut();
                inbox.absorb(input);
                while let Some(Due { time, capability, updates }) = inbox.next_complete(frontier) {
                    let changes = changelog.apply(time, updates, end.get().map(|ends| ends.results));
                    output.session(&capability).give_iterator(changes.into_iter().map(|change| (change, time)));
                }
            }
        },
    )
}

/// What the change finder keeps on one worker: pending updates and every key's current value.
#[derive(Serialize, Deserialize)]
struct ChangesState {
    inbox: Inbox<(ResultKey, ResultValue)>,
    changelog: Changelog,
}

impl Freeze for ChangesState {
    type Frozen = (<Inbox<(ResultKey, ResultValue)> as Freeze>::Frozen, <Changelog as Freeze>::Frozen);

    fn freeze(&mut self) -> Self::Frozen {
        (self.inbox.freeze(), self.changelog.freeze())
    }
}

/// A result's pending update belongs where its key's changes are found.
impl Placed for (ResultKey, ResultValue) {
    fn place(&self) -> Place {
        Place::Key(owner(&self.0))
    }
}

/// Each key's current value goes where its changes are found.
impl Rescale for ChangesState {
    fn rescale(old: Vec<Self>, to: Owner) -> Self {
        let (inboxes, changelogs): (Vec<_>, Vec<Changelog>) = old.into_iter().map(|s| (s.inbox, s.changelog)).unzip();
        let mut windows = std::collections::BTreeSet::new();
        let mut current = Vec::with_capacity(changelogs.len());
        for changelog in changelogs {
            windows.extend(changelog.windows.into_iter().filter(|(_, key)| to.owns(owner(key))));
            current.push(changelog.current);
        }
        let current = current.into_iter().flatten().filter(|(key, _)| to.owns(owner(key))).collect();
        ChangesState { inbox: Inbox::rescale(inboxes, to), changelog: Changelog { current, windows, hopping: None } }
    }
}

/// Changes waiting in the writer on worker 0 (none at a cut): old worker 0's, on worker 0.
impl Rescale for BTreeMap<Time, Vec<Change>> {
    fn rescale(old: Vec<Self>, to: Owner) -> Self {
        first_only(old, to)
    }
}

/// The worker a result key's changes are found on: a user's lists where the users operator
/// computed them, a window's where its top-N was chosen, the new-user list where the popular
/// pool is.
fn owner(key: &ResultKey) -> u64 {
    match key {
        ResultKey::Recs(user) => user.hashed(),
        ResultKey::Popular => 0,
        ResultKey::HotItems { window_end, category } => (window_end, category).hashed(),
    }
}

/// Writes each completed time's changes, in key order, to `output` on worker 0.
fn write_changes<'scope>(
    changes: Changes<'scope>,
    output: Option<Output<ChangeRecord>>,
    format: RecordFormat,
    metrics: Arc<Metrics>,
) -> timely::dataflow::Stream<'scope, Time, Vec<()>> {
    let mut output = output;
    let mut hold = Hold::default();
    let mut failed = false;
    // The input frontier last reported to the destination, so progress is told once per move.
    let mut reported: Option<Option<Millis>> = None;
    let scope = changes.scope();
    changes.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
        Exchange::new(|_: &(Change, Time)| 0u64),
        "Sink: Changelog",
        move |_capability, info| {
            // Changes of times not yet complete; none are, when a checkpoint is taken.
            let pending = worker_state::keep(&info.address, BTreeMap::<Time, Vec<Change>>::new);
            let activator = scope.activator_for(info.address);
            move |(input, frontier), _output| {
                let pending = &mut *pending.borrow_mut();
                input.for_each(|batch, data| {
                    hold.keep(&batch);
                    for (change, time) in data.drain(..) {
                        pending.entry(time).or_default().push(change);
                    }
                });
                if failed {
                    // The hold stays where the failure left it: nothing later is acknowledged.
                    pending.clear();
                    return;
                }
                let Some(out) = output.as_mut() else {
                    pending.clear();
                    hold.settle(None);
                    return;
                };
                if let Err(e) = write_complete(pending, frontier, out.destination.as_mut(), &format, &metrics) {
                    out.fail(&e);
                    failed = true;
                    pending.clear();
                    return;
                }
                let destination = out.destination.as_mut();
                let complete = frontier.frontier().first().copied();
                if reported != Some(complete) {
                    reported = Some(complete);
                    destination.progress(complete);
                }
                let unacknowledged = destination.unacknowledged();
                if unacknowledged.is_some() {
                    activator.activate_after(std::time::Duration::from_millis(1));
                }
                let waiting = pending.keys().next().copied();
                hold.settle(unacknowledged.into_iter().chain(waiting).min());
            }
        },
    )
}

/// Writes the changes of every time the input `frontier` has passed, in time and key order, and
/// flushes; the first failure stops the writing, leaving the time it failed at unwritten.
fn write_complete(
    pending: &mut BTreeMap<Time, Vec<Change>>,
    frontier: &timely::progress::frontier::MutableAntichain<Time>,
    destination: &mut dyn Destination<ChangeRecord>,
    format: &RecordFormat,
    metrics: &Metrics,
) -> Result<(), SinkError> {
    while let Some(entry) = pending.first_entry() {
        if frontier.less_equal(entry.key()) {
            break;
        }
        let (time, mut changes) = entry.remove_entry();
        // Each key is owned by one worker, so keys are distinct within a time.
        changes.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
        for change in changes {
            destination.write(time, &format.record(change, time))?;
            metrics.output_records.fetch_add(1, Ordering::Relaxed);
        }
    }
    destination.flush()
}
