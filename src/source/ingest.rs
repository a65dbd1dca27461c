//! The ingest operator: pulls arrivals from an [`EventSource`] on the worker that owns it, gives
//! accepted events their dataflow time, turns late events into dead letters, holds the input
//! frontier at the watermark, and pauses when the dataflow falls too far behind.
//!
//! At the end of a finite input it tells every worker where the stream ended ([`StreamEnd`]) and
//! holds its capability just past the time by which every result is final, so the run can stop
//! there instead of computing window expiries far past the end of the data.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use differential_dataflow::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::generic::operator::{source as source_operator, Operator};
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::{Scope, Stream};

use super::{Arrival, EventSource, Poll};
use crate::dataflow::window::Hopping;
use crate::event::{DeadLetter, Event, Millis, RejectReason};
use crate::event_time::{ceil_to, EventClock};
use crate::metrics::Metrics;
use timely::dataflow::operators::probe;

/// Arrivals read per activation of the ingest operator.
const BATCH: usize = 8_192;
/// Events the ingest operator lets run ahead of the dataflow's completed output.
const MAX_IN_FLIGHT: u64 = 262_144;

/// Where a finite stream ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ends {
    /// The time results are final as of: the tick of the largest event time, rounded up to the
    /// similarity refresh cadence so the final results reflect every event. Later recommendation
    /// changes come only from windows expiring past the end of the data and are not reported.
    pub results: Millis,
    /// Once the output frontier reaches this time, every result (including the last hot-items
    /// windows) has been reported and the run can stop.
    pub complete: Millis,
}

/// How the end of the stream is computed from the last event times.
#[derive(Clone, Copy, Debug)]
pub struct EndRule {
    /// The similarity refresh cadence (the tick when there are no recommendations).
    pub alignment: Millis,
    /// The hot-items windows, whose last ones fire after the data ends.
    pub hopping: Option<Hopping>,
}

impl EndRule {
    /// The ends of a stream whose clock is `clock` and whose input frontier is at `frontier`.
    pub fn ends(&self, clock: &EventClock, frontier: Millis) -> Ends {
        let last_tick = clock.max_seen().map_or(0, |m| clock.tick_of(m));
        let results = ceil_to(last_tick.max(frontier), self.alignment);
        let last_fire = match (self.hopping, clock.max_seen()) {
            (Some(hop), Some(max)) => hop.fire_time(hop.pane_end(max) + hop.size - hop.slide),
            _ => 0,
        };
        Ends { results, complete: results.max(last_fire) + 1 }
    }
}

/// The end of a finite stream as this worker knows it; `None` while the input lasts.
#[derive(Clone, Debug, Default)]
pub struct StreamEnd(Rc<Cell<Option<Ends>>>);

impl StreamEnd {
    /// The ends, once the input is exhausted.
    pub fn get(&self) -> Option<Ends> {
        self.0.get()
    }
}

type EventStream<'scope> = Stream<'scope, Millis, Vec<(Event, Millis, isize)>>;
type ControlStream<'scope> = Stream<'scope, Millis, Vec<Result<DeadLetter, Ends>>>;

/// What the ingest operator emits.
#[derive(Serialize, Deserialize, Clone, Debug)]
enum Ingest {
    Event(Event),
    Dead(DeadLetter),
    End(Ends),
}

/// What the ingest operator feeds into the dataflow.
pub struct Ingested<'scope> {
    /// Accepted events, each at its dataflow time.
    pub events: VecCollection<'scope, Millis, Event, isize>,
    /// Records that were rejected or late.
    pub dead_letters: Stream<'scope, Millis, Vec<DeadLetter>>,
}

/// Builds the ingest operator. Only the worker given `Some(reader)` reads; the others release
/// their capability at once. Every worker's `end` learns where the stream ended.
pub fn ingest<'scope>(
    scope: Scope<'scope, Millis>,
    reader: Option<Box<dyn EventSource>>,
    mut clock: EventClock,
    end_rule: EndRule,
    metrics: Arc<Metrics>,
    end: StreamEnd,
    completed: probe::Handle<Millis>,
) -> Ingested<'scope> {
    let stream: Stream<'scope, Millis, Vec<(Ingest, Millis, isize)>> =
        source_operator::<_, timely::container::CapacityContainerBuilder<Vec<_>>, _, _>(
            scope,
            "Ingest",
            move |capability, info| {
                let activator = scope.activator_for(info.address);
                let mut capability = reader.as_ref().map(|_| capability);
                let name = reader.as_ref().map(|r| r.name()).unwrap_or_default();
                let mut source = reader;
                let mut arrivals: Vec<Arrival> = Vec::with_capacity(BATCH);
                // Batches not yet reflected in the output: (latest dataflow time, read at, events).
                let mut in_flight: std::collections::VecDeque<(Millis, Instant, u64)> = Default::default();
                move |output| {
                    let (Some(cap), Some(reader)) = (capability.as_mut(), source.as_mut()) else {
                        return;
                    };
                    // Back-pressure: wait while the dataflow lags behind what it could already complete.
                    while let Some((_, read_at, count)) = in_flight.front().filter(|(t, _, _)| !completed.less_equal(t))
                    {
                        metrics.update_latency.record(read_at.elapsed().as_micros() as u64, *count);
                        in_flight.pop_front();
                    }
                    let pending: u64 = in_flight.iter().map(|(_, _, n)| n).sum();
                    if pending > MAX_IN_FLIGHT && completed.less_than(cap.time()) {
                        activator.activate_after(Duration::from_millis(1));
                        return;
                    }
                    arrivals.clear();
                    let poll = reader.poll(BATCH, &mut arrivals);
                    metrics.records_in.fetch_add(arrivals.len() as u64, Ordering::Relaxed);
                    let mut accepted = 0u64;
                    let mut latest = 0;
                    let read_at = Instant::now();
                    let now = *cap.time();
                    {
                        let mut session = output.session(&*cap);
                        for arrival in arrivals.drain(..) {
                            match arrival {
                                Ok((event, position)) => match clock.admit(event.ts) {
                                    Some(time) => {
                                        accepted += 1;
                                        latest = latest.max(time);
                                        session.give((Ingest::Event(event), time, 1));
                                    }
                                    None => {
                                        metrics.reject(&RejectReason::Late);
                                        let raw = serde_json::to_string(&event).unwrap_or_default();
                                        let origin = format!("{name}:{position}");
                                        session.give((
                                            Ingest::Dead(DeadLetter { reason: RejectReason::Late, origin, raw }),
                                            now,
                                            1,
                                        ));
                                    }
                                },
                                Err(dead) => {
                                    metrics.reject(&dead.reason);
                                    session.give((Ingest::Dead(dead), now, 1));
                                }
                            }
                        }
                        if poll == Poll::Done {
                            session.give((Ingest::End(end_rule.ends(&clock, now)), now, 1));
                        }
                    }
                    metrics.accepted.fetch_add(accepted, Ordering::Relaxed);
                    metrics.watermark.store(clock.watermark(), Ordering::Relaxed);
                    if accepted > 0 {
                        in_flight.push_back((latest, read_at, accepted));
                    }
                    match poll {
                        Poll::Done => {
                            // Hold the input open just past completion; the run stops there.
                            cap.downgrade(&end_rule.ends(&clock, now).complete);
                            source = None;
                        }
                        Poll::Ready => {
                            cap.downgrade(&clock.frontier().max(now));
                            activator.activate();
                        }
                        Poll::Idle => {
                            cap.downgrade(&clock.frontier().max(now));
                            activator.activate_after(Duration::from_millis(1));
                        }
                    }
                }
            },
        );
    let (events, others): (EventStream<'scope>, ControlStream<'scope>) =
        stream.ok_err(|(ingest, time, diff)| match ingest {
            Ingest::Event(event) => Ok((event, time, diff)),
            Ingest::Dead(dead) => Err(Ok(dead)),
            Ingest::End(ends) => Err(Err(ends)),
        });
    let (dead_letters, ends) = others.ok_err(|other: Result<DeadLetter, Ends>| other);
    let ends: Stream<'scope, Millis, Vec<Ends>> = ends;
    ends.broadcast().sink(Pipeline, "StreamEnd", move |(input, _frontier)| {
        input.for_each(|_time, data| {
            if let Some(ends) = data.last() {
                end.0.set(Some(*ends));
            }
        });
    });
    Ingested { events: events.as_collection(), dead_letters }
}
