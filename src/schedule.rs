//! Scheduled updates: windows are insertions plus retractions at future times (an event leaves
//! its window when the window ends). Handed straight to an arrangement, future-dated updates sit
//! in its batcher, which re-merges them on every frontier advance; with long windows that cost
//! grows with the window's contents on every tick.
//!
//! [`ReleaseWhenDue`] keeps future-dated updates in a time-ordered queue instead and releases each
//! one only when the input frontier reaches its time, so arrangements only see updates that are
//! about to be sealed. The collection is unchanged: the same updates at the same times.

use std::collections::BTreeMap;

use differential_dataflow::{AsCollection, VecCollection};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use timely::communication::Pull;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::channels::Message;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::generic::InputHandleCore;
use timely::dataflow::operators::Capability;

use crate::checkpoint::cut::Holding;
use crate::checkpoint::rescale::{merge_by_time, Owner, Placed, Rescale};
use crate::checkpoint::shared::{Shared, Snapshot};
use crate::checkpoint::worker_state::{self, Freeze};
use crate::event_time::Time;
use crate::progress::StreamEnd;

/// A time's updates of one collection, each with its difference.
type Updates<D> = Vec<(D, isize)>;

/// Defers future-dated updates of a collection until they are due.
pub trait ReleaseWhenDue<'scope, D> {
    /// The same collection, with updates whose time lies beyond the input frontier held back
    /// until the frontier reaches that time.
    ///
    /// Once a finite stream has ended (`end`), updates later than the time its results are final
    /// as of are dropped: they could only change results past the end of the data, which are
    /// not reported, and computing them would cost a window's worth of work at shutdown.
    ///
    /// ```
    /// use differential_dataflow::input::Input;
    /// use recflow::schedule::ReleaseWhenDue;
    /// use recflow::progress::StreamEnd;
    ///
    /// timely::example(|scope| {
    ///     let (_input, numbers) = scope.new_collection_from(vec![1u64, 2, 3]);
    ///     // Each number is present from time 0 until time 10 * number.
    ///     let windowed = numbers
    ///         .join_function(|n| [(n, 0, 1isize), (n, 10 * n, -1)])
    ///         .release_when_due("Expire", StreamEnd::default());
    ///     windowed.inspect(|(n, t, r)| assert!(*r == 1 || *t == 10 * n));
    /// });
    /// ```
    fn release_when_due(self, name: &str, end: StreamEnd) -> Self;
}

impl<'scope, D: Clone + Serialize + DeserializeOwned + Send + Sync + 'static> ReleaseWhenDue<'scope, D>
    for VecCollection<'scope, Time, D, isize>
{
    fn release_when_due(self, name: &str, end: StreamEnd) -> Self {
        self.inner
            .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<(D, Time, isize)>>, _, _, _>(
                Pipeline,
                &format!("ReleaseWhenDue: {name}"),
                move |capability, info| {
                    let due_work = worker_state::keep(&info.address, DueWork::<Updates<D>>::default);
                    due_work.borrow_mut().hold_from(&capability);
                    move |(input, frontier), output| {
                        let mut due_work = due_work.borrow_mut();
                        input.for_each(|cap, data| {
                            let Some(&now) = cap.least() else { return };
                            let mut session = output.session(&cap);
                            for (datum, time, diff) in data.drain(..) {
                                if time <= now {
                                    session.give((datum, time, diff));
                                } else {
                                    due_work.at(time, &cap).push((datum, diff));
                                }
                            }
                        });
                        if let Some(ends) = end.get() {
                            due_work.forget_after(ends.results);
                        }
                        while let Some((time, due, updates)) = due_work.next_due(frontier) {
                            output.session(&due).give_iterator(updates.into_iter().map(|(d, r)| (d, time, r)));
                        }
                        due_work.settle();
                    }
                },
            )
            .as_collection()
    }
}

/// Work keyed by the time it is due, holding one capability at the earliest such time.
///
/// Due work is handed out with a copy of that one capability, whatever its own time: records
/// carry their times in their data, and a message's time need only not be later. So a run through
/// many due times sends all its messages at one time, and progress tracking sees one time per run
/// instead of one per due time.
///
/// While a checkpoint is under way ([`Holding`]), work is due only once the frontier has
/// *passed* its time, so that nothing is sent that the checkpoint's saved state would miss; the
/// results are the same, since a time's work is still out before the frontier passes it.
pub struct DueWork<W> {
    /// Each time's work shared on its own, so a checkpoint copies none of it.
    work: BTreeMap<Time, Shared<W>>,
    held: Option<Capability<Time>>,
    holding: Holding,
}

impl<W> Default for DueWork<W> {
    fn default() -> Self {
        DueWork { work: BTreeMap::new(), held: None, holding: worker_state::holding() }
    }
}

impl<W: Default + Clone> DueWork<W> {
    /// The work due at `time`, which must not precede the time of `capability`.
    pub fn at(&mut self, time: Time, capability: &timely::dataflow::operators::InputCapability<Time>) -> &mut W {
        if self.held.as_ref().is_none_or(|h| *h.time() > time) {
            self.held = Some(capability.delayed(&time, 0));
        }
        self.work.entry(time).or_default().get_mut()
    }

    /// The earliest work the frontier has reached: its time, a capability at or before that
    /// time, and the work.
    pub fn next_due(
        &mut self,
        frontier: &timely::progress::frontier::MutableAntichain<Time>,
    ) -> Option<(Time, Capability<Time>, W)> {
        let entry = self.work.first_entry()?;
        let time = *entry.key();
        let due = if self.holding.get() { !frontier.less_equal(&time) } else { !frontier.less_than(&time) };
        if !due {
            return None;
        }
        let capability = self.held.clone()?;
        Some((time, capability, entry.remove().into_inner()))
    }

    /// Holds a capability for the work present, derived from `capability` (the operator's
    /// initial one): for work restored from a checkpoint, which comes back without one.
    pub fn hold_from(&mut self, capability: &Capability<Time>) {
        self.held = self.work.keys().next().map(|first| capability.delayed(first));
    }

    /// The work not yet due, by time.
    pub fn pending(&self) -> impl Iterator<Item = (Time, &W)> {
        self.work.iter().map(|(time, work)| (*time, &**work))
    }

    /// Drops all work due after `time`.
    pub fn forget_after(&mut self, time: Time) {
        self.work.retain(|due, _| *due <= time);
    }

    /// Releases the capability down to the earliest remaining work.
    pub fn settle(&mut self) {
        settle(&mut self.held, self.work.keys().next());
    }
}

/// A checkpoint saves the work alone; a restored one holds its capability again through
/// [`DueWork::hold_from`].
impl<W: Serialize> Serialize for DueWork<W> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.work.serialize(serializer)
    }
}

/// A checkpoint shares the work, without the capability.
impl<W: Default + Clone + Serialize + Send + Sync + 'static> Freeze for DueWork<W> {
    type Frozen = BTreeMap<Time, Snapshot<W>>;

    fn freeze(&mut self) -> Self::Frozen {
        self.work.iter_mut().map(|(time, work)| (*time, work.share())).collect()
    }
}

impl<'de, W: Deserialize<'de>> Deserialize<'de> for DueWork<W> {
    fn deserialize<E: serde::Deserializer<'de>>(deserializer: E) -> Result<Self, E::Error> {
        Ok(DueWork { work: BTreeMap::deserialize(deserializer)?, held: None, holding: worker_state::holding() })
    }
}

/// Work that two workers had pending at one time, combined on one.
pub trait MergeWork {
    /// Adds `other`'s work to this one's.
    fn merge(&mut self, other: Self);
}

impl<D> MergeWork for Vec<D> {
    fn merge(&mut self, other: Self) {
        self.extend(other);
    }
}

impl<K: Eq + std::hash::Hash> MergeWork for rustc_hash::FxHashMap<K, i64> {
    fn merge(&mut self, other: Self) {
        crate::checkpoint::rescale::sum_counts(self, other);
    }
}

/// Due work that may be done on any worker (its results are exchanged by the next operator):
/// all of it on worker 0, each time's work of every old worker combined.
impl<W: MergeWork + Clone> Rescale for DueWork<W> {
    fn rescale(old: Vec<Self>, to: Owner) -> Self {
        let work = merge_by_time(old.into_iter().map(DueWork::into_work).collect(), |_, work| Some(work), W::merge);
        DueWork::from_work(if to.is_first() { work } else { BTreeMap::new() })
    }
}

impl<W> DueWork<W> {
    /// The work at `time` of a state restored on another number of workers, before
    /// [`DueWork::hold_from`] holds a capability for it.
    pub fn restored_at(&mut self, time: Time) -> &mut W
    where
        W: Default + Clone,
    {
        self.work.entry(time).or_default().get_mut()
    }

    /// Every old worker's work, by time, for a state that splits it itself.
    pub fn into_work(self) -> BTreeMap<Time, W>
    where
        W: Clone,
    {
        self.work.into_iter().map(|(time, work)| (time, work.into_inner())).collect()
    }

    /// Due work rebuilt from `work`, holding no capability yet ([`DueWork::hold_from`]).
    pub fn from_work(work: BTreeMap<Time, W>) -> DueWork<W> {
        let work = work.into_iter().map(|(time, work)| (time, Shared::new(work))).collect();
        DueWork { work, held: None, holding: worker_state::holding() }
    }
}

/// Each pending update where it belongs ([`Placed`]).
impl<D: Placed> Rescale for Inbox<D> {
    fn rescale(old: Vec<Self>, to: Owner) -> Self {
        let keep = |worker: usize, updates: Vec<(D, isize)>| {
            let kept: Vec<(D, isize)> = updates.into_iter().filter(|(d, _)| to.keeps(d.place(), worker)).collect();
            (!kept.is_empty()).then_some(kept)
        };
        let pending = merge_by_time(old.into_iter().map(|inbox| inbox.pending).collect(), keep, Vec::extend);
        Inbox { pending, held: None }
    }
}

/// Downgrades `held` to `next`, or drops it when nothing is left.
fn settle(held: &mut Option<Capability<Time>>, next: Option<&Time>) {
    match (next, held.as_mut()) {
        (Some(next), Some(held)) => held.downgrade(next),
        (None, _) => *held = None,
        (Some(_), None) => {}
    }
}

/// One completed time's updates, with a capability to emit results at that time.
pub struct Due<D> {
    /// The time.
    pub time: Time,
    /// A capability at or before `time`: results carry `time` in their data.
    pub capability: Capability<Time>,
    /// The updates at `time`, in arrival order.
    pub updates: Vec<(D, isize)>,
}

/// Updates held by time until the input frontier passes that time, for operators that must apply
/// each time's updates together and in time order.
///
/// Like [`DueWork`], it holds one capability, at the earliest pending time, and hands out
/// copies of it: all the times completed in one run go out as messages at one time.
pub struct Inbox<D> {
    pending: BTreeMap<Time, Vec<(D, isize)>>,
    held: Option<Capability<Time>>,
}

impl<D> Default for Inbox<D> {
    fn default() -> Self {
        Inbox { pending: BTreeMap::new(), held: None }
    }
}

impl<D> Inbox<D> {
    /// Schedules `datum` for `time`, which must not precede `capability`'s time: for operators
    /// that wake themselves up later.
    pub fn schedule(&mut self, capability: &Capability<Time>, datum: D, time: Time) {
        if self.held.as_ref().is_none_or(|held| *held.time() > time) {
            self.held = Some(capability.delayed(&time));
        }
        self.pending.entry(time).or_default().push((datum, 1));
    }

    /// Holds every update waiting on `input`.
    pub fn absorb<P>(&mut self, input: &mut InputHandleCore<Time, Vec<(D, Time, isize)>, P>)
    where
        P: Pull<Message<Time, Vec<(D, Time, isize)>>>,
    {
        input.for_each(|capability, data| {
            let Some(earliest) = data.iter().map(|(_, time, _)| *time).min() else { return };
            if self.held.as_ref().is_none_or(|held| *held.time() > earliest) {
                self.held = Some(capability.delayed(&earliest, 0));
            }
            // Records of a batch mostly share a time: look its updates up once per run of it.
            let mut current: Option<(Time, &mut Vec<(D, isize)>)> = None;
            for (datum, time, diff) in data.drain(..) {
                let updates = match current {
                    Some((at, updates)) if at == time => updates,
                    _ => self.pending.entry(time).or_default(),
                };
                updates.push((datum, diff));
                current = Some((time, updates));
            }
        });
    }

    /// Holds a capability for the pending updates, derived from `capability` (the operator's
    /// initial one): for an inbox restored from a checkpoint, which comes back without one.
    pub fn hold_from(&mut self, capability: &Capability<Time>) {
        self.held = self.pending.keys().next().map(|first| capability.delayed(first));
    }

    /// The earliest time with updates held.
    pub fn first_time(&self) -> Option<Time> {
        self.pending.keys().next().copied()
    }

    /// The earliest time's updates, once the frontier has passed that time. When none is
    /// complete, the capability is released down to the earliest pending time; an operator that
    /// stops asking before then calls [`Inbox::settle`] instead.
    pub fn next_complete(&mut self, frontier: &timely::progress::frontier::MutableAntichain<Time>) -> Option<Due<D>> {
        let complete = self.pending.first_key_value().is_some_and(|(time, _)| !frontier.less_equal(time));
        if !complete {
            self.settle();
            return None;
        }
        let (time, updates) = self.pending.pop_first()?;
        let capability = self.held.clone()?;
        Some(Due { time, capability, updates })
    }

    /// Releases the capability down to the earliest pending time, or drops it when nothing is
    /// pending: without this, a held capability would stop the frontier for ever.
    pub fn settle(&mut self) {
        settle(&mut self.held, self.pending.keys().next());
    }
}

/// A checkpoint saves the pending updates alone; a restored inbox holds its capability again
/// through [`Inbox::hold_from`].
impl<D: Serialize> Serialize for Inbox<D> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.pending.serialize(serializer)
    }
}

/// A checkpoint takes a copy of the pending updates, without the capability.
impl<D: Clone + Serialize + Send + 'static> Freeze for Inbox<D> {
    type Frozen = BTreeMap<Time, Vec<(D, isize)>>;

    fn freeze(&mut self) -> Self::Frozen {
        self.pending.clone()
    }
}

impl<'de, D: Deserialize<'de>> Deserialize<'de> for Inbox<D> {
    fn deserialize<E: serde::Deserializer<'de>>(deserializer: E) -> Result<Self, E::Error> {
        Ok(Inbox { pending: BTreeMap::deserialize(deserializer)?, held: None })
    }
}

#[cfg(test)]
mod tests {
    use timely::dataflow::operators::{Input, Probe};

    use super::*;
    use crate::checkpoint::rescale::Place;

    /// An update placed by hand: `(place, label)`.
    #[derive(Clone, Debug, PartialEq)]
    struct Tagged(Place, &'static str);

    impl Placed for Tagged {
        fn place(&self) -> Place {
            self.0
        }
    }

    /// On another number of workers, each pending update goes where it belongs: a keyed one to
    /// its key's worker, one copy of what every worker holds to each worker, and what may sit
    /// anywhere to worker 0; one time's updates of several old workers are merged.
    #[test]
    fn pending_updates_are_dealt_to_the_workers_they_belong_to() {
        let inbox = |updates: Vec<(Time, Tagged)>| {
            let mut inbox = Inbox::default();
            for (time, tagged) in updates {
                inbox.pending.entry(time).or_insert_with(Vec::new).push((tagged, 1));
            }
            inbox
        };
        let old = || {
            vec![
                inbox(vec![(5, Tagged(Place::Key(4), "key 4")), (5, Tagged(Place::Everywhere, "copy of 0"))]),
                inbox(vec![(5, Tagged(Place::Key(3), "key 3")), (7, Tagged(Place::Everywhere, "copy of 1"))]),
                inbox(vec![(7, Tagged(Place::Anywhere, "loose"))]),
            ]
        };
        let labels = |inbox: Inbox<Tagged>| -> Vec<(Time, &'static str)> {
            inbox
                .pending
                .into_iter()
                .flat_map(|(time, updates)| updates.into_iter().map(move |(t, _)| (time, t.1)))
                .collect()
        };
        let to = |worker| Owner { worker, workers: 2, cut: 5 };
        assert_eq!(labels(Inbox::rescale(old(), to(0))), [(5, "key 4"), (5, "copy of 0"), (7, "loose")]);
        assert_eq!(labels(Inbox::rescale(old(), to(1))), [(5, "copy of 0"), (5, "key 3")]);
    }

    /// Work any worker may do lands on worker 0, one time's counts of every old worker summed.
    #[test]
    fn loose_due_work_is_merged_onto_worker_0() {
        let work = |entries: &[(Time, i64, i64)]| {
            let mut work: BTreeMap<Time, rustc_hash::FxHashMap<i64, i64>> = BTreeMap::new();
            for &(time, key, count) in entries {
                work.entry(time).or_default().insert(key, count);
            }
            DueWork::from_work(work)
        };
        let old = || vec![work(&[(5, 1, 2), (6, 2, 1)]), work(&[(5, 1, 3), (5, 2, -1), (6, 2, -1)])];
        let merged = DueWork::rescale(old(), Owner { worker: 0, workers: 3, cut: 5 }).into_work();
        let expected: BTreeMap<Time, rustc_hash::FxHashMap<i64, i64>> =
            [(5, [(1, 5), (2, -1)].into_iter().collect()), (6, Default::default())].into_iter().collect();
        assert_eq!(merged, expected);
        assert!(DueWork::rescale(old(), Owner { worker: 2, workers: 3, cut: 5 }).into_work().is_empty());
    }

    /// An operator that takes only the complete times its caller wants, the way the forget
    /// operator waits for its other input, must still release the capability once nothing is
    /// pending: a capability held for ever would stop every later result.
    #[test]
    fn an_inbox_drained_without_asking_until_none_releases_its_capability() {
        timely::execute_directly(|worker| {
            let (mut input, probe) = worker.dataflow::<Time, _, _>(|scope| {
                let (input, stream) = scope.new_input::<Vec<(u64, Time, isize)>>();
                let mut inbox: Inbox<u64> = Inbox::default();
                let probe = stream
                    .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<(u64, Time, isize)>>, _, _, _>(
                        Pipeline,
                        "TakeOne",
                        |_, _| {
                            move |(input, frontier), output| {
                                inbox.absorb(input);
                                if inbox.first_time().is_some_and(|at| !frontier.less_equal(&at)) {
                                    let due = inbox.next_complete(frontier).expect("complete");
                                    output
                                        .session(&due.capability)
                                        .give_iterator(due.updates.into_iter().map(|(d, r)| (d, due.time, r)));
                                }
                                inbox.settle();
                            }
                        },
                    )
                    .probe()
                    .0;
                (input, probe)
            });
            let mut reaches = |time: Time| {
                for _ in 0..1_000 {
                    worker.step();
                }
                !probe.less_than(&time)
            };
            input.send((7, 5, 1));
            input.advance_to(10);
            assert!(reaches(10), "the frontier passes the taken time");
            input.advance_to(20);
            assert!(reaches(20), "nothing pending holds the frontier back");
        });
    }
}
