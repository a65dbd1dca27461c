//! The ingest operator: pulls arrivals from an [`EventSource`] on each worker that reads one, gives
//! accepted events their dataflow time, turns late events into dead letters, holds the input
//! frontier at the watermark, and pauses when the dataflow falls too far behind.
//!
//! Each lane of a source (a Kafka partition; a file has one) keeps its own watermark, so the
//! time an event gets depends only on its own lane's history, never on how lanes are spread over
//! workers. The input frontier is the least watermark of the lanes that are still live: a lane
//! that has finished (a bounded read reached its end) or has been idle for the source's idle
//! timeout does not hold it back.
//!
//! A request to forget a user (from [`super::WithPosted`]) leaves as a `forgets` update at the
//! latest dataflow time this worker has given any event, so it covers every event of the user
//! read before it; the requester is told that time.
//!
//! Once the results depending on a batch of records are all written (the `completed` probe has
//! passed them), the source is told, so Kafka can commit those offsets.
//!
//! At the end of a finite input every reading worker tells every worker where its part ended;
//! once all have, each worker knows the stream's end ([`StreamEnd`]) and holds its capability
//! just past the time by which every result is final, so the run can stop there instead of
//! computing window expiries far past the end of the data.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use differential_dataflow::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::generic::operator::{source as source_operator, Operator};
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::{Scope, Stream};

use super::{Arrival, EventSource, Poll, Position};
use crate::event::{DeadLetter, Event, Id, Millis, RejectReason};
use crate::event_time::{beyond_wall_clock, EventClock, FutureHold, Settled};
use crate::metrics::{Metrics, ReaderProgress};
use crate::progress::{EndRule, Ends, StreamEnd};
use timely::dataflow::operators::probe;

/// Arrivals read per activation of the ingest operator.
const BATCH: usize = 8_192;
/// Events the ingest operator lets run ahead of the dataflow's completed output.
const MAX_IN_FLIGHT: u64 = 262_144;

type EventStream<'scope> = Stream<'scope, Millis, Vec<(Event, Millis, isize)>>;
/// What the ingest operator emits besides events: dead letters, the stream's end, progress for
/// the other readers, and users to forget (at their time).
type ControlStream<'scope> = Stream<'scope, Millis, Vec<Result<DeadLetter, Result<Ends, ProgressOrForget>>>>;
type ProgressOrForget = Result<Progress, (Id, Millis, isize)>;
type ForgetStream<'scope> = Stream<'scope, Millis, Vec<(Id, Millis, isize)>>;

/// What the ingest operator emits.
#[derive(Serialize, Deserialize, Clone, Debug)]
enum Ingest {
    Event(Event),
    Dead(DeadLetter),
    Forget(Id),
    End(Ends),
    Progress(Progress),
}

/// What the ingest operator feeds into the dataflow.
pub struct Ingested<'scope> {
    /// Accepted events, each at its dataflow time.
    pub events: VecCollection<'scope, Millis, Event, isize>,
    /// Records that were rejected or late.
    pub dead_letters: Stream<'scope, Millis, Vec<DeadLetter>>,
    /// Users to forget, each at the time its retraction is due.
    pub forgets: VecCollection<'scope, Millis, Id, isize>,
}

/// The watermarks of a source's lanes.
struct Lanes {
    clocks: Vec<EventClock>,
    /// Per lane, the events too far ahead of its clock that wait for confirmation.
    holds: Vec<FutureHold<(Position, Event)>>,
    last_arrival: Vec<Instant>,
}

impl Lanes {
    fn new(count: usize, clock: &EventClock) -> Lanes {
        Lanes {
            clocks: vec![clock.clone(); count],
            holds: (0..count).map(|_| FutureHold::default()).collect(),
            last_arrival: vec![Instant::now(); count],
        }
    }

    /// The least watermark (as a tick) of the live lanes, and the least of the idle ones that
    /// have seen an event. A finished lane counts as neither.
    fn frontiers(&self, source: &dyn EventSource) -> LaneFrontiers {
        let idle_after = source.idle_timeout();
        let mut frontiers = LaneFrontiers::default();
        for (lane, clock) in self.clocks.iter().enumerate() {
            if source.lane_finished(lane) {
                continue;
            }
            let frontier = clock.frontier();
            if idle_after.is_some_and(|after| self.last_arrival[lane].elapsed() >= after) {
                if clock.max_seen().is_some() {
                    frontiers.idle = Some(frontiers.idle.map_or(frontier, |f| f.min(frontier)));
                }
            } else {
                frontiers.live = Some(frontiers.live.map_or(frontier, |f| f.min(frontier)));
            }
        }
        frontiers
    }

    fn max_seen(&self) -> Option<Millis> {
        self.clocks.iter().filter_map(EventClock::max_seen).max()
    }

    fn watermark(&self) -> Millis {
        self.clocks.iter().map(EventClock::watermark).min().unwrap_or(0)
    }
}

/// What the ingest operator gives the dataflow from one batch of arrivals.
struct Given<'a> {
    /// The operator's capability time: where dead letters go, and the least time of an event.
    now: Millis,
    metrics: &'a Metrics,
    reader: &'a dyn EventSource,
    records: Vec<(Ingest, Millis, isize)>,
}

impl Given<'_> {
    fn dead_letter(&mut self, dead: DeadLetter) {
        self.metrics.dead_letter(&dead);
        self.metrics.first_records.note(Some(&dead.reason));
        self.records.push((Ingest::Dead(dead), self.now, 1));
    }

    /// Dead-letters `event` as `future`.
    fn future(&mut self, at: Position, event: &Event) {
        let raw = serde_json::to_vec(event).unwrap_or_default();
        self.dead_letter(self.reader.reject(at, RejectReason::Future, raw));
    }

    /// Dead-letters the records a lane's hold gave up as `future`, and admits the others through
    /// the lane's clock (late ones are dead-lettered as `late`).
    fn settle(&mut self, settled: Settled<(Position, Event)>, clock: &mut EventClock, batch: &mut InFlight) {
        for (at, event) in settled.future {
            self.future(at, &event);
        }
        for (at, event) in settled.admit {
            match clock.admit_at(event.ts, self.now) {
                Some(time) => {
                    batch.accepted += 1;
                    batch.latest = batch.latest.max(time);
                    self.records.push((Ingest::Event(event), time, 1));
                    self.metrics.first_records.note(None);
                }
                None => {
                    let raw = serde_json::to_vec(&event).unwrap_or_default();
                    self.dead_letter(self.reader.reject(at, RejectReason::Late, raw));
                }
            }
        }
    }
}

/// Where a worker's lanes stand.
#[derive(Clone, Copy, Debug, Default)]
struct LaneFrontiers {
    live: Option<Millis>,
    idle: Option<Millis>,
}

/// What a reading worker tells the others about its progress, so a worker whose partitions are
/// all idle, or whose part of a bounded read has ended, follows the others instead of holding the
/// frontier back.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
struct Progress {
    worker: usize,
    /// Its capability's time.
    frontier: Millis,
    /// Whether it has a live lane.
    live: bool,
    /// Whether it still reads.
    reading: bool,
    /// Records it has read.
    records: u64,
}

/// The latest [`Progress`] of every other reading worker.
#[derive(Clone, Default)]
struct Peers(Rc<std::cell::RefCell<std::collections::BTreeMap<usize, Progress>>>);

impl Peers {
    /// The least frontier of the other workers that still read and satisfy `counts`.
    fn least(&self, me: usize, counts: impl Fn(&Progress) -> bool) -> Option<Millis> {
        self.0.borrow().values().filter(|p| p.worker != me && p.reading && counts(p)).map(|p| p.frontier).min()
    }
}

/// A batch of records whose results are not all written yet.
struct InFlight {
    /// The latest dataflow time the batch's records were given.
    latest: Millis,
    read_at: Instant,
    accepted: u64,
    /// The last position read in each lane the batch touched.
    positions: Vec<Position>,
}

/// Where a reading worker is in its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Reading,
    /// Its part ended; waiting to learn the stream's end and for its results to be written.
    Ended {
        global_end_known: bool,
    },
}

/// Builds the ingest operator. Workers given `Some(reader)` read; the others release their
/// capability at once. `readers` is how many workers read in all; every worker's `end` learns
/// where the stream ended once all of them have reached the end of their part. Raising `stop`
/// ends the input as if every source were exhausted: windows close, final results go out,
/// offsets are committed, and the run returns.
#[allow(clippy::too_many_arguments)]
pub fn ingest<'scope>(
    scope: Scope<'scope, Millis>,
    reader: Option<Box<dyn EventSource>>,
    readers: usize,
    clock: EventClock,
    end_rule: EndRule,
    metrics: Arc<Metrics>,
    end: StreamEnd,
    completed: probe::Handle<Millis>,
    stop: Option<Arc<AtomicBool>>,
) -> Ingested<'scope> {
    end.set_drained(reader.is_none());
    let worker = scope.index();
    let reader_end = end.clone();
    let peers = Peers::default();
    let peers_seen = peers.clone();
    let metrics_for_peers = Arc::clone(&metrics);
    let stream: Stream<'scope, Millis, Vec<(Ingest, Millis, isize)>> =
        source_operator::<_, timely::container::CapacityContainerBuilder<Vec<_>>, _, _>(
            scope,
            "Ingest",
            move |capability, info| {
                let activator = scope.activator_for(info.address);
                let mut capability = reader.as_ref().map(|_| capability);
                let mut lanes = Lanes::new(reader.as_ref().map_or(0, |r| r.lanes()), &clock);
                let max_future = clock.max_future();
                let mut source = reader;
                let mut phase = Phase::Reading;
                let mut arrivals: Vec<Arrival> = Vec::with_capacity(BATCH);
                let mut in_flight: VecDeque<InFlight> = VecDeque::new();
                let mut announced: Option<Progress> = None;
                // The latest dataflow time given to an event: where forgets go.
                let mut latest_given: Millis = 0;
                let mut records_read: u64 = 0;
                move |output| {
                    let (Some(cap), Some(reader)) = (capability.as_mut(), source.as_mut()) else {
                        return;
                    };
                    acknowledge_written(&mut in_flight, &completed, reader.as_mut(), &metrics);
                    if let Phase::Ended { global_end_known } = &mut phase {
                        if let (false, Some(ends)) = (*global_end_known, reader_end.get()) {
                            let complete = ends.complete.max(*cap.time());
                            cap.downgrade(&complete);
                            *global_end_known = true;
                        } else if !*global_end_known {
                            // Follow the workers still reading rather than hold them back.
                            if let Some(least) = peers.least(worker, |_| true) {
                                let least = least.max(*cap.time());
                                cap.downgrade(&least);
                            }
                        }
                        if *global_end_known && in_flight.is_empty() {
                            reader.finish();
                            reader_end.set_drained(true);
                            source = None;
                        } else {
                            activator.activate_after(Duration::from_millis(1));
                        }
                        return;
                    }
                    // Back-pressure: wait while the dataflow lags behind what it could already complete.
                    let pending: u64 = in_flight.iter().map(|batch| batch.accepted).sum();
                    if pending > MAX_IN_FLIGHT && completed.less_than(cap.time()) {
                        activator.activate_after(Duration::from_millis(1));
                        return;
                    }
                    arrivals.clear();
                    let stopping = stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed));
                    let mut poll = if stopping { Poll::Done } else { reader.poll(BATCH, &mut arrivals) };
                    if lanes.clocks.is_empty() {
                        // A worker with nothing to read has read everything.
                        poll = Poll::Done;
                    }
                    metrics.records_in.fetch_add(arrivals.len() as u64, Ordering::Relaxed);
                    records_read += arrivals.len() as u64;
                    let now = *cap.time();
                    let mut batch =
                        InFlight { latest: now, read_at: Instant::now(), accepted: 0, positions: Vec::new() };
                    {
                        let mut session = output.session(&*cap);
                        let mut given = Given { now, metrics: &metrics, reader: reader.as_ref(), records: Vec::new() };
                        // A live source's records cannot come from far beyond the wall clock.
                        let wall_bound = if reader.read_live() { max_future } else { None };
                        for (at, record) in arrivals.drain(..) {
                            let (clock, hold) = (&mut lanes.clocks[at.lane], &mut lanes.holds[at.lane]);
                            lanes.last_arrival[at.lane] = batch.read_at;
                            match record {
                                Ok(event) if beyond_wall_clock(event.ts, wall_bound) => given.future(at, &event),
                                Ok(event) => given.settle(hold.arrive(clock, event.ts, (at, event)), clock, &mut batch),
                                Err(dead) => given.dead_letter(dead),
                            }
                            // A held record is not yet written anywhere: its lane's position stays
                            // before it until it is admitted or given up.
                            if hold.is_empty() {
                                advance_position(&mut batch.positions, at);
                            }
                        }
                        if poll == Poll::Done {
                            for hold in &mut lanes.holds {
                                for (at, event) in hold.give_up() {
                                    given.future(at, &event);
                                    advance_position(&mut batch.positions, at);
                                }
                            }
                        }
                        for record in given.records {
                            session.give(record);
                        }
                        latest_given = latest_given.max(batch.latest);
                        for request in reader.take_forgets() {
                            session.give((Ingest::Forget(request.user), latest_given, 1));
                            // A requester that gave up waiting is not an error.
                            let _ = request.reply.send(latest_given);
                        }
                        if poll == Poll::Done {
                            session.give((Ingest::End(end_rule.ends(lanes.max_seen(), now)), now, 1));
                        }
                    }
                    metrics.accepted.fetch_add(batch.accepted, Ordering::Relaxed);
                    metrics.set_watermark(worker, lanes.watermark());
                    if !batch.positions.is_empty() {
                        metrics.in_flight.fetch_add(batch.accepted, Ordering::Relaxed);
                        in_flight.push_back(batch);
                    }
                    let mut progress =
                        Progress { worker, frontier: now, live: false, reading: true, records: records_read };
                    match poll {
                        Poll::Done => {
                            // Hold the input open just past this part's completion until the
                            // stream's end is known; the run stops there.
                            cap.downgrade(&end_rule.ends(lanes.max_seen(), now).complete);
                            phase = Phase::Ended { global_end_known: false };
                            progress.reading = false;
                            activator.activate();
                        }
                        Poll::Ready | Poll::Idle => {
                            let frontiers = lanes.frontiers(reader.as_ref());
                            progress.live = frontiers.live.is_some();
                            // With every lane idle, follow the live workers; if none is live, the
                            // idle lanes' least watermark lets a quiet stream complete as far as
                            // every partition has gone, so that none of their events turns late
                            // when they resume (a broker frozen for a while, say).
                            let target = frontiers.live.or_else(|| peers.least(worker, |p| p.live)).or(frontiers.idle);
                            if let Some(frontier) = target {
                                cap.downgrade(&frontier.max(now));
                            }
                            if poll == Poll::Ready {
                                activator.activate();
                            } else {
                                activator.activate_after(Duration::from_millis(1));
                            }
                        }
                    }
                    progress.frontier = *cap.time();
                    metrics.set_reader_progress(
                        worker,
                        ReaderProgress { frontier: progress.frontier, records: progress.records },
                    );
                    if readers > 1 && announced != Some(progress) {
                        announced = Some(progress);
                        output.session(&*cap).give((Ingest::Progress(progress), progress.frontier, 1));
                    }
                }
            },
        );
    let (events, others): (EventStream<'scope>, ControlStream<'scope>) =
        stream.ok_err(|(ingest, time, diff)| match ingest {
            Ingest::Event(event) => Ok((event, time, diff)),
            Ingest::Dead(dead) => Err(Ok(dead)),
            Ingest::End(ends) => Err(Err(Ok(ends))),
            Ingest::Progress(progress) => Err(Err(Err(Ok(progress)))),
            Ingest::Forget(user) => Err(Err(Err(Err((user, time, diff))))),
        });
    let (dead_letters, control): (_, Stream<'scope, Millis, Vec<Result<Ends, ProgressOrForget>>>) =
        others.ok_err(|other| other);
    let (ends, progress_and_forgets): (
        Stream<'scope, Millis, Vec<Ends>>,
        Stream<'scope, Millis, Vec<ProgressOrForget>>,
    ) = control.ok_err(|c| c);
    let (progress, forgets): (Stream<'scope, Millis, Vec<Progress>>, ForgetStream<'scope>) =
        progress_and_forgets.ok_err(|p| p);
    let peer_metrics = Arc::clone(&metrics_for_peers);
    progress.broadcast().sink(Pipeline, "Ingest: Progress", move |(input, _frontier)| {
        input.for_each(|_time, data| {
            let mut seen = peers_seen.0.borrow_mut();
            for progress in data.drain(..) {
                let report = ReaderProgress { frontier: progress.frontier, records: progress.records };
                peer_metrics.set_reader_progress(progress.worker, report);
                seen.insert(progress.worker, progress);
            }
        });
    });
    let mut heard: Vec<Ends> = Vec::new();
    ends.broadcast().sink(Pipeline, "StreamEnd", move |(input, _frontier)| {
        input.for_each(|_time, data| heard.append(data));
        if readers > 0 && heard.len() == readers && end.get().is_none() {
            end.set(heard.iter().copied().reduce(Ends::merge));
        }
    });
    Ingested { events: events.as_collection(), dead_letters, forgets: forgets.as_collection() }
}

/// Records `at` as the last position of its lane in `positions` (one entry per lane).
fn advance_position(positions: &mut Vec<Position>, at: Position) {
    match positions.iter_mut().find(|p| p.lane == at.lane) {
        Some(p) => p.offset = p.offset.max(at.offset),
        None => positions.push(at),
    }
}

/// Tells the source about every batch whose results are all written, oldest first, and records
/// the batches' update latency.
fn acknowledge_written(
    in_flight: &mut VecDeque<InFlight>,
    completed: &probe::Handle<Millis>,
    source: &mut dyn EventSource,
    metrics: &Metrics,
) {
    let mut written: Vec<Position> = Vec::new();
    while let Some(batch) = in_flight.front().filter(|batch| !completed.less_equal(&batch.latest)) {
        if batch.accepted > 0 {
            metrics.update_latency.record(batch.read_at.elapsed().as_micros() as u64, batch.accepted);
        }
        for at in &batch.positions {
            advance_position(&mut written, *at);
        }
        metrics.in_flight.fetch_sub(batch.accepted, Ordering::Relaxed);
        in_flight.pop_front();
    }
    if !written.is_empty() {
        source.acknowledge(&written);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Span, TimeSpec};

    /// Lanes that are all idle at once.
    struct Quiet;

    impl EventSource for Quiet {
        fn poll(&mut self, _max: usize, _out: &mut Vec<Arrival>) -> Poll {
            Poll::Idle
        }

        fn name(&self) -> String {
            "quiet".into()
        }

        fn lanes(&self) -> usize {
            3
        }

        fn idle_timeout(&self) -> Option<Duration> {
            Some(Duration::ZERO)
        }
    }

    #[test]
    fn with_every_lane_idle_the_frontier_is_the_least_that_has_seen_an_event() {
        let spec = TimeSpec { tick: Span(1_000), max_out_of_orderness: Span(0), ..TimeSpec::default() };
        let mut lanes = Lanes::new(3, &EventClock::new(&spec));
        lanes.clocks[0].admit(10_000);
        lanes.clocks[1].admit(20_000);
        // Lane 2 has seen nothing: it holds nothing back.
        let frontiers = lanes.frontiers(&Quiet);
        assert_eq!(frontiers.live, None);
        // Following the furthest lane would make lane 0's next events late when it resumes (a
        // frozen broker, say).
        assert_eq!(frontiers.idle, Some(10_000));
    }
}
