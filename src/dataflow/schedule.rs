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
use timely::communication::Pull;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::channels::Message;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::generic::InputHandleCore;
use timely::dataflow::operators::Capability;

use super::Time;
use crate::source::StreamEnd;

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
    /// use recflow::dataflow::schedule::ReleaseWhenDue;
    /// use recflow::source::StreamEnd;
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

impl<'scope, D: Clone + 'static> ReleaseWhenDue<'scope, D> for VecCollection<'scope, Time, D, isize> {
    fn release_when_due(self, name: &str, end: StreamEnd) -> Self {
        let mut scheduler: Scheduler<Vec<(D, isize)>> = Scheduler::default();
        self.inner
            .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<(D, Time, isize)>>, _, _, _>(
                Pipeline,
                &format!("ReleaseWhenDue: {name}"),
                move |_capability, _info| {
                    move |(input, frontier), output| {
                        input.for_each(|cap, data| {
                            let Some(&now) = cap.least() else { return };
                            let mut session = output.session(&cap);
                            for (datum, time, diff) in data.drain(..) {
                                if time <= now {
                                    session.give((datum, time, diff));
                                } else {
                                    scheduler.at(time, &cap).push((datum, diff));
                                }
                            }
                        });
                        if let Some(ends) = end.get() {
                            scheduler.forget_after(ends.results);
                        }
                        while let Some((due, updates)) = scheduler.next_due(frontier) {
                            let time = *due.time();
                            output.session(&due).give_iterator(updates.into_iter().map(|(d, r)| (d, time, r)));
                        }
                        scheduler.settle();
                    }
                },
            )
            .as_collection()
    }
}

/// Work keyed by the time it is due, holding one capability at the earliest such time.
pub struct Scheduler<W> {
    work: BTreeMap<Time, W>,
    held: Option<Capability<Time>>,
}

impl<W> Default for Scheduler<W> {
    fn default() -> Self {
        Scheduler { work: BTreeMap::new(), held: None }
    }
}

impl<W: Default> Scheduler<W> {
    /// The work due at `time`, which must not precede the time of `capability`.
    pub fn at(&mut self, time: Time, capability: &timely::dataflow::operators::InputCapability<Time>) -> &mut W {
        if self.held.as_ref().is_none_or(|h| *h.time() > time) {
            self.held = Some(capability.delayed(&time, 0));
        }
        self.work.entry(time).or_default()
    }

    /// The earliest work the frontier has reached, with a capability for its time.
    pub fn next_due(
        &mut self,
        frontier: &timely::progress::frontier::MutableAntichain<Time>,
    ) -> Option<(Capability<Time>, W)> {
        let entry = self.work.first_entry()?;
        let time = *entry.key();
        if frontier.less_than(&time) {
            return None;
        }
        let capability = self.held.as_ref()?.delayed(&time);
        Some((capability, entry.remove()))
    }

    /// Drops all work due after `time`.
    pub fn forget_after(&mut self, time: Time) {
        self.work.retain(|due, _| *due <= time);
    }

    /// Releases the capability down to the earliest remaining work.
    pub fn settle(&mut self) {
        match self.work.keys().next() {
            Some(next) => {
                if let Some(h) = self.held.as_mut() {
                    h.downgrade(next);
                }
            }
            None => self.held = None,
        }
    }
}

/// One completed time's updates, with a capability to emit results at that time.
pub struct Due<D> {
    /// The time.
    pub time: Time,
    /// A capability for `time`.
    pub capability: Capability<Time>,
    /// The updates at `time`, in arrival order.
    pub updates: Vec<(D, isize)>,
}

/// Updates held by time until the input frontier passes that time, for operators that must apply
/// each time's updates together and in time order.
pub struct Inbox<D> {
    pending: BTreeMap<Time, Due<D>>,
}

impl<D> Default for Inbox<D> {
    fn default() -> Self {
        Inbox { pending: BTreeMap::new() }
    }
}

impl<D> Inbox<D> {
    /// Schedules `datum` for `time`, which must not precede `capability`'s time: for operators
    /// that wake themselves up later.
    pub fn schedule(&mut self, capability: &Capability<Time>, datum: D, time: Time) {
        let due = self.pending.entry(time).or_insert_with(|| Due {
            time,
            capability: capability.delayed(&time),
            updates: Vec::new(),
        });
        due.updates.push((datum, 1));
    }

    /// Holds every update waiting on `input`.
    pub fn absorb<P>(&mut self, input: &mut InputHandleCore<Time, Vec<(D, Time, isize)>, P>)
    where
        P: Pull<Message<Time, Vec<(D, Time, isize)>>>,
    {
        input.for_each(|capability, data| {
            // Records of a batch mostly share a time: look its updates up once per run of it.
            let mut current: Option<&mut Due<D>> = None;
            for (datum, time, diff) in data.drain(..) {
                let due = match current {
                    Some(due) if due.time == time => due,
                    _ => self.pending.entry(time).or_insert_with(|| Due {
                        time,
                        capability: capability.delayed(&time, 0),
                        updates: Vec::new(),
                    }),
                };
                due.updates.push((datum, diff));
                current = Some(due);
            }
        });
    }

    /// The earliest time with updates held.
    pub fn first_time(&self) -> Option<Time> {
        self.pending.keys().next().copied()
    }

    /// The earliest time's updates, once the frontier has passed that time.
    pub fn next_complete(&mut self, frontier: &timely::progress::frontier::MutableAntichain<Time>) -> Option<Due<D>> {
        let entry = self.pending.first_entry()?;
        if frontier.less_equal(entry.key()) {
            return None;
        }
        Some(entry.remove())
    }
}
