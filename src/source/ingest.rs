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
//! A request to forget a user (posted over HTTP, taken through [`Posted`]) leaves as a `forgets`
//! update at the latest dataflow time this worker has given any event, so it covers every event
//! of the user read before it; the requester is told that time.
//!
//! Once the results depending on a batch of records are all written (the `completed` probe has
//! passed them), the source is told, so Kafka can commit those offsets.
//!
//! At the end of a finite input every reading worker tells every worker where its part ended;
//! once all have, each worker knows the stream's end ([`StreamEnd`]) and holds its capability
//! just past the time by which every result is final, so the run can stop there instead of
//! computing window expiries far past the end of the data.
//!
//! With checkpoints, every worker runs one (a worker that reads nothing reads [`super::NoSource`]),
//! and the ingest operators carry the checkpoint protocol on their progress broadcast
//! ([`crate::checkpoint::cut`]): they stop reading, cross one cut time, and each saves its
//! worker's state ([`WorkerCut`]) once nothing read before the cut is still on its way. A
//! restored worker starts from its saved lanes, counters and capability.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use differential_dataflow::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::{source as source_operator, Operator};
use timely::dataflow::operators::vec::{Broadcast, Map, Partition};
use timely::dataflow::operators::{probe, Capability};
use timely::dataflow::{Scope, Stream};

use super::{Arrival, EventSource, ForgetRequest, Poll, Position, Posted, PostedPosition, ResumePoint};
use crate::checkpoint::cut::{CutNews, CutProtocol, CutStep};
use crate::checkpoint::forgotten::{ForgetLedger, Forgotten};
use crate::checkpoint::worker_state::{FrozenOperators, SavedOperator, WorkerState};
use crate::event::{DeadLetter, Event, Id, Millis, RejectReason};
use crate::event_time::{beyond_wall_clock, EventClock, FutureHold, Settled};
use crate::metrics::{CheckpointPause, Metrics, ReaderProgress};
use crate::progress::{EndRule, Ends, StreamEnd};

/// Arrivals read per activation of the ingest operator.
const BATCH: usize = 8_192;
/// Events the ingest operator lets run ahead of the dataflow's completed output.
const MAX_IN_FLIGHT: u64 = 262_144;

/// What the ingest operator emits, in one stream split by kind: events for the dataflow, and the
/// control records beside them.
#[derive(Serialize, Deserialize, Clone, Debug)]
enum Ingest {
    /// An accepted event, at its dataflow time.
    Event(Event),
    /// A record rejected or late.
    Dead(DeadLetter),
    /// A user to forget, at the latest time given to an event.
    Forget(Id),
    /// Where a reading worker's part of the stream ended.
    End(Ends),
    /// How a reading worker stands, for the others.
    Progress(Progress),
}

/// The kinds of [`Ingest`] record, each leaving on its own stream.
const KINDS: u64 = 5;

impl Ingest {
    /// The record's kind, below [`KINDS`]: the stream it leaves on.
    fn kind(&self) -> u64 {
        match self {
            Ingest::Event(_) => 0,
            Ingest::Dead(_) => 1,
            Ingest::Forget(_) => 2,
            Ingest::Progress(_) => 3,
            Ingest::End(_) => 4,
        }
    }

    fn into_event(self) -> Option<Event> {
        if let Ingest::Event(event) = self {
            Some(event)
        } else {
            None
        }
    }

    fn into_dead(self) -> Option<DeadLetter> {
        if let Ingest::Dead(dead) = self {
            Some(dead)
        } else {
            None
        }
    }

    fn into_forget(self) -> Option<Id> {
        if let Ingest::Forget(user) = self {
            Some(user)
        } else {
            None
        }
    }

    fn into_progress(self) -> Option<Progress> {
        if let Ingest::Progress(progress) = self {
            Some(progress)
        } else {
            None
        }
    }

    fn into_end(self) -> Option<Ends> {
        if let Ingest::End(ends) = self {
            Some(ends)
        } else {
            None
        }
    }
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
#[derive(Serialize, Deserialize, Clone)]
struct Lanes {
    clocks: Vec<EventClock>,
    /// Per lane, the events too far ahead of its clock that wait for confirmation.
    holds: Vec<FutureHold<(Position, Event)>>,
    #[serde(skip)]
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
    /// Where it stands in the checkpoint protocol.
    cut: CutNews,
}

impl From<Progress> for ReaderProgress {
    fn from(progress: Progress) -> ReaderProgress {
        ReaderProgress { frontier: progress.frontier, records: progress.records }
    }
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

/// What a reading worker reads: its source and, on the worker that takes them, the records
/// posted over HTTP.
pub struct Input {
    /// The source.
    pub source: Box<dyn EventSource>,
    /// Posted events and requests to forget users, taken after each poll of the source.
    pub posted: Option<Posted>,
    /// Read at most this many of the source's records (`--max-events`), then end.
    pub max_records: Option<u64>,
    /// With checkpoints, on the worker that takes forgets: the ledger of forgotten users.
    pub forgotten: Option<ForgetsKept>,
}

/// The ledger of forgotten users as the ingest operator keeps it: each forget it takes is
/// recorded there, and the forgets of the ledger this run must take again (a restored or
/// starting-over run) go out at the times they retracted at.
pub struct ForgetsKept {
    /// The ledger.
    pub ledger: Arc<ForgetLedger>,
    /// Forgets to take again, in the order taken (so by time).
    pub again: VecDeque<Forgotten>,
    /// How many forgets the ledger holds.
    pub recorded: u64,
}

impl ForgetsKept {
    /// Records a forget taken now: before it is answered, so an answered forget survives a crash.
    fn record(&mut self, taken: &Forgotten) -> std::io::Result<()> {
        self.ledger.record(taken)?;
        self.recorded += 1;
        Ok(())
    }

    /// Where the ledger stands, for a checkpoint.
    fn at_cut(&self) -> ForgetsAtCut {
        ForgetsAtCut { recorded: self.recorded, again: self.again.iter().cloned().collect() }
    }
}

/// What a checkpoint keeps of the forget ledger: how many forgets it held, and those of them the
/// run had still to take again. A restore takes these again, and the ledger's later ones.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ForgetsAtCut {
    /// How many forgets the ledger held.
    pub recorded: u64,
    /// Those the run had still to take again.
    pub again: Vec<Forgotten>,
}

impl Input {
    /// `source` alone, read to its end.
    pub fn new(source: Box<dyn EventSource>) -> Input {
        Input { source, posted: None, max_records: None, forgotten: None }
    }

    /// Appends the source's next arrivals to `out`, then what was posted, and the requests to
    /// forget a user to `forgets`.
    fn poll(&mut self, out: &mut Vec<Arrival>, forgets: &mut Vec<ForgetRequest>) -> Poll {
        let poll = self.poll_source(out);
        let Some(posted) = &mut self.posted else { return poll };
        posted.follow(out);
        if !posted.has_seen_an_event() && poll != Poll::Done && !self.source.read_live() {
            // A post without `ts` gets the latest event time seen, or the wall clock before the
            // first: beside a replayed source (a file, the generator), posts wait for its first
            // event instead, since the wall clock can lie years past the replay's times and
            // would make every later event late.
            return poll;
        }
        let taken = posted.take(self.source.as_ref(), out, forgets);
        match poll {
            Poll::Done => {
                posted.close();
                Poll::Done
            }
            Poll::Idle if taken > 0 => Poll::Ready,
            other => other,
        }
    }

    /// Appends the source's next arrivals to `out`, at most what is left of `max_records`; the
    /// source is done once none is left.
    fn poll_source(&mut self, out: &mut Vec<Arrival>) -> Poll {
        let Some(left) = self.max_records else { return self.source.poll(BATCH, out) };
        if left == 0 {
            return Poll::Done;
        }
        let before = out.len();
        let poll = self.source.poll(BATCH.min(left.min(usize::MAX as u64) as usize), out);
        let left = left - (out.len() - before) as u64;
        self.max_records = Some(left);
        if left == 0 {
            Poll::Done
        } else {
            poll
        }
    }
}

/// How the ingest operator runs, the same on every worker.
pub struct IngestSettings {
    /// How many workers read in all.
    pub readers: usize,
    /// The event-time rules every lane's clock starts from.
    pub clock: EventClock,
    /// Where the results of a finite stream are final.
    pub end_rule: EndRule,
    /// The run's counters.
    pub metrics: Arc<Metrics>,
    /// Learns where the stream ended once every reader has reached the end of its part.
    pub end: StreamEnd,
    /// Passes a time once every result up to it is written: batches before it are acknowledged,
    /// and reading waits while too much lies beyond it.
    pub completed: probe::Handle<Millis>,
    /// Raised to end the input as if every source were exhausted.
    pub stop: Option<Arc<AtomicBool>>,
    /// Checkpoints, when the run takes them: then every worker has an input (one that reads
    /// nothing, where it reads no source) and `readers` counts them all.
    pub checkpoints: Option<CutSettings>,
}

/// How a worker takes part in checkpoints ([`crate::checkpoint::cut`]).
pub struct CutSettings {
    /// How long worker 0 waits after one checkpoint before starting the next.
    pub interval: Duration,
    /// This worker's registered operator state ([`crate::checkpoint::worker_state::install`]).
    pub state: Rc<RefCell<WorkerState>>,
    /// Takes what this worker saved at each checkpoint.
    pub save: Box<dyn FnMut(Result<FrozenCut, bincode::Error>)>,
    /// The state to start from, saved at a checkpoint; the source must be opened at the
    /// checkpoint's resume point ([`WorkerCut::source`]).
    pub restore: Option<RestoredReader>,
}

/// What one worker saved at a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerCut {
    /// The checkpoint.
    pub checkpoint: u64,
    /// The worker.
    pub worker: usize,
    /// The cut every reader crossed: what was read before it went out at earlier times.
    pub cut: Millis,
    /// Where every frontier stood while the state was saved.
    pub frontier: Millis,
    /// How many records this worker had read.
    pub records_read: u64,
    /// Where its source continues: where to open it on restore (`None`: it cannot resume).
    pub source: Option<ResumePoint>,
    /// How many records it had left to read (`--max-events`), if it was limited.
    pub max_records_left: Option<u64>,
    /// Where the records posted over HTTP stood (on the worker that takes them; nothing taken on
    /// the others): a restore posts the logged ones after those taken again.
    pub posted: PostedPosition,
    /// Where the ledger of forgotten users stood (on the worker that takes forgets).
    pub forgets: ForgetsAtCut,
    /// The ingest operator's state: its lanes' clocks, its capability and counters.
    #[serde(with = "serde_bytes")]
    pub reader: Vec<u8>,
    /// Every registered operator's state.
    pub operators: Vec<SavedOperator>,
}

/// A worker's part of a checkpoint as it was taken at the cut, its operators' state still to be
/// serialised: the worker hands it on and reads on while another thread serialises it.
pub struct FrozenCut {
    /// Everything but the operators' state.
    cut: WorkerCut,
    operators: FrozenOperators,
}

impl FrozenCut {
    /// The worker whose part this is.
    pub fn worker(&self) -> usize {
        self.cut.worker
    }

    /// The part, with its operators' state serialised.
    pub fn serialise(self) -> Result<WorkerCut, bincode::Error> {
        Ok(WorkerCut { operators: self.operators.serialise()?, ..self.cut })
    }
}

/// The ingest operator's state at a checkpoint.
#[derive(Serialize, Deserialize)]
struct ReaderState {
    capability: Millis,
    lanes: Lanes,
    latest_given: Millis,
    records_read: u64,
    /// Where its part of the stream ended, once it has: a restored reader tells the others
    /// these ends again rather than work them out anew from a capability that has moved on.
    ended: Option<Ends>,
}

/// A worker's ingest state as a checkpoint saved it ([`WorkerCut::reader`]).
pub struct RestoredReader(ReaderState);

impl RestoredReader {
    /// Reads back what [`WorkerCut::reader`] holds.
    pub fn from_bytes(bytes: &[u8]) -> Result<RestoredReader, bincode::Error> {
        bincode::deserialize(bytes).map(RestoredReader)
    }

    /// A reader that reads nothing (a worker other than the first, when a file or the generator
    /// is read), restored on another number of workers from the reader of old worker 0, whose
    /// bytes `first` holds: at its capability, with no lanes, its part not ended (it ends as soon
    /// as it runs, as it would have at the start).
    pub fn reading_nothing(first: &[u8]) -> Result<RestoredReader, bincode::Error> {
        let first: ReaderState = bincode::deserialize(first)?;
        Ok(RestoredReader(ReaderState {
            capability: first.capability,
            lanes: Lanes { clocks: Vec::new(), holds: Vec::new(), last_arrival: Vec::new() },
            latest_given: 0,
            records_read: 0,
            ended: None,
        }))
    }

    /// The reader of worker `worker` of `workers` restoring `old`, every worker's part of a
    /// checkpoint of a Kafka source taken on another number of workers: it reads the partitions
    /// `p` with `p % workers == worker`, and takes each partition's lane (its clock and the
    /// records it holds back) from the old worker that read it. Its capability is the least of
    /// the old readers'; its part has ended if the parts of every old reader it takes lanes from
    /// had, at the latest of their ends.
    pub fn dealt(old: &[WorkerCut], worker: usize, workers: usize) -> Result<RestoredReader, bincode::Error> {
        let states: Vec<ReaderState> =
            old.iter().map(|part| bincode::deserialize(&part.reader)).collect::<Result<_, _>>()?;
        // Each old worker's partitions in lane order: its resume point lists them ascending.
        let partitions_of = |part: &WorkerCut| -> Vec<i32> {
            match &part.source {
                Some(ResumePoint::Kafka(resume)) => resume.next_offsets.keys().copied().collect(),
                _ => Vec::new(),
            }
        };
        let mut lanes_of: Vec<(i32, usize, usize)> = Vec::new();
        for (at, part) in old.iter().enumerate() {
            lanes_of.extend(partitions_of(part).into_iter().enumerate().map(|(lane, p)| (p, at, lane)));
        }
        lanes_of.sort_unstable();
        lanes_of.retain(|(p, _, _)| *p as usize % workers == worker);
        let mut lanes = Lanes { clocks: Vec::new(), holds: Vec::new(), last_arrival: Vec::new() };
        let mut ended: Option<Option<Ends>> = None;
        for (new_lane, &(_, at, lane)) in lanes_of.iter().enumerate() {
            let state = &states[at];
            lanes.clocks.push(state.lanes.clocks[lane].clone());
            let held = state.lanes.holds[lane].clone();
            lanes.holds.push(held.map(|(position, event)| (Position { lane: new_lane, ..position }, event)));
            let so_far = ended.unwrap_or(Some(Ends { results: 0, complete: 0 }));
            ended = Some(so_far.zip(state.ended).map(|(a, b)| a.merge(b)));
        }
        // Counters of the old worker with the same number (forgets go to worker 0's time).
        let same = states.get(worker);
        Ok(RestoredReader(ReaderState {
            capability: states.iter().map(|state| state.capability).min().unwrap_or_default(),
            lanes,
            latest_given: same.map_or(0, |state| state.latest_given),
            records_read: same.map_or(0, |state| state.records_read),
            ended: ended.flatten(),
        }))
    }
}

/// A worker's side of the checkpoint protocol, with what it needs to save.
struct Checkpointing {
    protocol: CutProtocol,
    settings: CutSettings,
    last_finished: Instant,
    /// When this worker stopped for the checkpoint under way, and how long it took to take its
    /// operators' state.
    stopped: Option<(Instant, Duration)>,
}

/// What the ingest operator does next.
enum Next {
    /// Runs again at once: there is more to read.
    Now,
    /// Runs again after a short pause.
    Soon,
    /// The reader is done: its part ended and every result is written.
    Finished,
}

/// A reading worker's state, stepped by the ingest operator: acknowledge what is written,
/// then either read a batch and advance, or, once its part ended, follow its peers.
struct Reader {
    input: Input,
    worker: usize,
    settings: IngestSettings,
    lanes: Lanes,
    phase: Phase,
    arrivals: Vec<Arrival>,
    forgets: Vec<ForgetRequest>,
    in_flight: VecDeque<InFlight>,
    peers: Peers,
    announced: Option<Progress>,
    /// The latest dataflow time given to an event: where forgets go.
    latest_given: Millis,
    records_read: u64,
    /// Whether a lane was live at the last advance.
    live: bool,
    checkpointing: Option<Checkpointing>,
    /// Where a restored reader's capability stood at the checkpoint.
    restored_capability: Option<Millis>,
    /// Where this worker's part of the stream ended, once it has.
    ended: Option<Ends>,
    /// Ends to tell the others before anything else: a restored reader whose part had ended.
    resend_end: Option<Ends>,
}

impl Reader {
    fn new(input: Input, worker: usize, workers: usize, mut settings: IngestSettings, peers: Peers) -> Reader {
        let mut lanes = Lanes::new(input.source.lanes(), &settings.clock);
        let restored = settings.checkpoints.as_mut().and_then(|cut| cut.restore.take());
        let (mut latest_given, mut records_read, mut restored_capability, mut ended) = (0, 0, None, None);
        if let Some(RestoredReader(state)) = restored {
            let arrivals = vec![Instant::now(); state.lanes.clocks.len()];
            let saved = Lanes { last_arrival: arrivals, ..state.lanes };
            // Lanes the checkpoint did not know (partitions added to the topic since) come after
            // the saved ones, which keep their places, and start afresh.
            let added = Lanes::new(lanes.clocks.len().saturating_sub(saved.clocks.len()), &settings.clock);
            lanes = saved;
            lanes.clocks.extend(added.clocks);
            lanes.holds.extend(added.holds);
            lanes.last_arrival.extend(added.last_arrival);
            (latest_given, records_read, restored_capability, ended) =
                (state.latest_given, state.records_read, Some(state.capability), state.ended);
        }
        let checkpointing = settings.checkpoints.take().map(|cut| {
            let holding = cut.state.borrow().holding();
            Checkpointing {
                protocol: CutProtocol::new(worker, workers, holding),
                settings: cut,
                last_finished: Instant::now(),
                stopped: None,
            }
        });
        Reader {
            input,
            worker,
            settings,
            lanes,
            phase: if ended.is_some() { Phase::Ended { global_end_known: false } } else { Phase::Reading },
            arrivals: Vec::with_capacity(BATCH),
            forgets: Vec::new(),
            in_flight: VecDeque::new(),
            peers,
            announced: None,
            latest_given,
            records_read,
            live: false,
            checkpointing,
            restored_capability,
            ended,
            resend_end: ended,
        }
    }

    /// What the checkpoint protocol has this worker do now; worker 0 starts a checkpoint once
    /// its interval has passed, and none is taken once the end of the stream is known.
    fn cut_step(&mut self, capability: Millis) -> CutStep {
        let Some(checkpointing) = self.checkpointing.as_mut() else { return CutStep::Run };
        let protocol = &mut checkpointing.protocol;
        if self.settings.end.get().is_some() {
            protocol.abandon();
            return CutStep::Run;
        }
        let was_busy = protocol.busy();
        let due = checkpointing.last_finished.elapsed() >= checkpointing.settings.interval;
        if self.worker == 0 && !was_busy && due {
            protocol.start(capability);
        }
        let news: Vec<Option<CutNews>> = {
            let seen = self.peers.0.borrow();
            let workers = seen.keys().max().map_or(0, |w| w + 1);
            (0..workers).map(|w| seen.get(&w).map(|p| p.cut)).collect()
        };
        let completed = &self.settings.completed;
        let step = protocol.step(capability, &news, |frontier| !completed.less_than(&frontier));
        match (was_busy, protocol.busy()) {
            (false, true) => checkpointing.stopped = Some((Instant::now(), Duration::ZERO)),
            (true, false) => {
                checkpointing.last_finished = Instant::now();
                if let Some((stopped, taking)) = checkpointing.stopped.take() {
                    self.settings.metrics.record_checkpoint_pause(CheckpointPause {
                        id: protocol.news().checkpoint,
                        paused_us: stopped.elapsed().as_micros() as u64,
                        taking_us: taking.as_micros() as u64,
                    });
                }
            }
            _ => {}
        }
        step
    }

    /// Saves this worker's state for `checkpoint` and hands it on.
    fn save_cut(&mut self, checkpoint: u64, cut: Millis, frontier: Millis, capability: Millis) {
        let Some(checkpointing) = self.checkpointing.as_mut() else { return };
        let taking_since = Instant::now();
        let reader = ReaderState {
            capability,
            lanes: self.lanes.clone(),
            latest_given: self.latest_given,
            records_read: self.records_read,
            ended: self.ended,
        };
        let saved = bincode::serialize(&reader).map(|reader| FrozenCut {
            operators: checkpointing.settings.state.borrow().freeze(),
            cut: WorkerCut {
                checkpoint,
                worker: self.worker,
                cut,
                frontier,
                records_read: self.records_read,
                source: self.input.source.resume_point(),
                max_records_left: self.input.max_records,
                posted: self.input.posted.as_ref().map(Posted::position).unwrap_or_default(),
                forgets: self.input.forgotten.as_ref().map(ForgetsKept::at_cut).unwrap_or_default(),
                reader,
                operators: Vec::new(),
            },
        });
        // Handing it on may wait for the previous part's serialisation: that counts too.
        (checkpointing.settings.save)(saved);
        if let Some((_, taking)) = checkpointing.stopped.as_mut() {
            *taking = taking_since.elapsed();
        }
        checkpointing.protocol.saved();
    }

    /// How this worker stands, for its peers.
    fn progress(&self, capability: Millis) -> Progress {
        Progress {
            worker: self.worker,
            frontier: capability,
            live: self.live,
            reading: self.phase == Phase::Reading,
            records: self.records_read,
            cut: self.checkpointing.as_ref().map(|c| c.protocol.news()).unwrap_or_default(),
        }
    }

    /// Tells the source about every batch whose results are all written, oldest first, and
    /// records the batches' update latency.
    fn acknowledge(&mut self) {
        let metrics = &self.settings.metrics;
        let mut written: Vec<Position> = Vec::new();
        while let Some(batch) =
            self.in_flight.front().filter(|batch| !self.settings.completed.less_equal(&batch.latest))
        {
            if batch.accepted > 0 {
                metrics.update_latency.record(batch.read_at.elapsed().as_micros() as u64, batch.accepted);
            }
            for at in &batch.positions {
                advance_position(&mut written, *at);
            }
            metrics.in_flight.fetch_sub(batch.accepted, Ordering::Relaxed);
            self.in_flight.pop_front();
        }
        if !written.is_empty() {
            self.input.source.acknowledge(&written);
        }
    }

    /// Once this worker's part has ended: moves its capability to where the whole stream's
    /// results are final as soon as that is known, following the workers still reading until
    /// then, and finishes once every result is written.
    fn follow_peers(&mut self, cap: &mut Capability<Millis>) -> Next {
        let Phase::Ended { global_end_known } = &mut self.phase else { return Next::Now };
        if let (false, Some(ends)) = (*global_end_known, self.settings.end.get()) {
            let complete = ends.complete.max(*cap.time());
            cap.downgrade(&complete);
            *global_end_known = true;
        } else if !*global_end_known {
            // Follow the workers still reading rather than hold them back.
            if let Some(least) = self.peers.least(self.worker, |_| true) {
                let least = least.max(*cap.time());
                cap.downgrade(&least);
            }
        }
        if *global_end_known && self.in_flight.is_empty() {
            self.input.source.finish();
            self.settings.end.set_drained(true);
            Next::Finished
        } else {
            Next::Soon
        }
    }

    /// While crossing to `cut`: a worker still reading whose lanes are all idle moves its
    /// capability straight to the cut, as it follows live peers outside a checkpoint. Its lanes'
    /// watermarks would move only with new records, which may never come (a partition nobody
    /// writes to), while the workers that stopped at the cut wait without reading: the cut would
    /// never be reached. Records its lanes deliver later get times from the cut on, as they would
    /// after following a live peer there.
    /// Lanes that have finished do not count as idle: their worker's part is about to end, and
    /// its end must be worked out from its own lanes, not from the cut.
    fn follow_to_cut(&mut self, cap: &mut Capability<Millis>, cut: Millis) {
        let source = self.input.source.as_ref();
        let unfinished = (0..self.lanes.clocks.len()).any(|lane| !source.lane_finished(lane));
        if self.phase == Phase::Reading && !self.live && unfinished && *cap.time() < cut {
            cap.downgrade(&cut);
        }
    }

    /// Back-pressure: whether to wait because the dataflow lags behind what it could already
    /// complete at `now`.
    fn held_back(&self, now: &Millis) -> bool {
        let pending: u64 = self.in_flight.iter().map(|batch| batch.accepted).sum();
        pending > MAX_IN_FLIGHT && self.settings.completed.less_than(now)
    }

    /// Reads a batch of arrivals and gives each its fate at or after `now`: an event at its
    /// dataflow time, a dead letter, a user to forget, and the end of this worker's part.
    fn read_batch(&mut self, now: Millis) -> (Poll, Vec<(Ingest, Millis, isize)>) {
        let metrics = Arc::clone(&self.settings.metrics);
        self.arrivals.clear();
        let stopping = self.settings.stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed));
        let mut poll = if stopping { Poll::Done } else { self.input.poll(&mut self.arrivals, &mut self.forgets) };
        if self.lanes.clocks.is_empty() {
            // A worker with nothing to read has read everything.
            poll = Poll::Done;
        }
        metrics.records_in.fetch_add(self.arrivals.len() as u64, Ordering::Relaxed);
        self.records_read += self.arrivals.len() as u64;
        let mut batch = InFlight { latest: now, read_at: Instant::now(), accepted: 0, positions: Vec::new() };
        let source = self.input.source.as_ref();
        let mut given = Given { now, metrics: &metrics, reader: source, records: Vec::new() };
        // A live source's records cannot come from far beyond the wall clock.
        let wall_bound = if source.read_live() { self.settings.clock.max_future() } else { None };
        for (at, record) in self.arrivals.drain(..) {
            let (clock, hold) = (&mut self.lanes.clocks[at.lane], &mut self.lanes.holds[at.lane]);
            self.lanes.last_arrival[at.lane] = batch.read_at;
            match record {
                Ok(event) if beyond_wall_clock(event.ts, wall_bound) => given.future(at, &event),
                Ok(event) => given.settle(hold.arrive(clock, event.ts, (at, event)), clock, &mut batch),
                Err(dead) => given.dead_letter(dead),
            }
            // A held record is not yet written anywhere: its lane's position stays before it
            // until it is admitted or given up.
            if hold.is_empty() {
                advance_position(&mut batch.positions, at);
            }
        }
        if poll == Poll::Done {
            for hold in &mut self.lanes.holds {
                for (at, event) in hold.give_up() {
                    given.future(at, &event);
                    advance_position(&mut batch.positions, at);
                }
            }
        }
        let mut records = given.records;
        self.latest_given = self.latest_given.max(batch.latest);
        let (latest, done) = (self.latest_given, poll == Poll::Done);
        if let Some(kept) = &mut self.input.forgotten {
            // Forgets taken before, at the times they retracted at: every event up to that time is
            // read once the stream has given one past it (or has ended).
            while let Some(again) = kept.again.front().filter(|f| f.at <= latest || done) {
                records.push((Ingest::Forget(again.user.clone()), again.at.max(now), 1));
                kept.again.pop_front();
            }
        }
        for request in self.forgets.drain(..) {
            records.push((Ingest::Forget(request.user.clone()), self.latest_given, 1));
            if let Some(kept) = &mut self.input.forgotten {
                let taken = Forgotten { user: request.user, at: self.latest_given, post: request.post };
                if let Err(e) = kept.record(&taken) {
                    metrics.fatal.report("the ledger of forgotten users", e);
                }
            }
            // A requester that gave up waiting is not an error.
            let _ = request.reply.send(self.latest_given);
        }
        if poll == Poll::Done {
            let ends = self.settings.end_rule.ends(self.lanes.max_seen(), now);
            self.ended = Some(ends);
            records.push((Ingest::End(ends), now, 1));
        }
        metrics.accepted.fetch_add(batch.accepted, Ordering::Relaxed);
        // A worker with no lane (one that reads nothing, or has no partition) has no watermark to
        // report: a 0 would hold the process's least watermark down.
        if !self.lanes.clocks.is_empty() {
            metrics.set_watermark(self.worker, self.lanes.watermark());
        }
        if !batch.positions.is_empty() {
            metrics.in_flight.fetch_add(batch.accepted, Ordering::Relaxed);
            self.in_flight.push_back(batch);
        }
        (poll, records)
    }

    /// After a batch read at `cap`'s time: moves the capability to the lanes' watermark (or, at
    /// the end of this worker's part, just past where its results are final).
    fn advance(&mut self, cap: &mut Capability<Millis>, poll: Poll) -> Next {
        let now = *cap.time();
        match poll {
            Poll::Done => {
                // Hold the input open just past this part's completion until the stream's end is
                // known; the run stops there.
                let ends = self.ended.unwrap_or_else(|| self.settings.end_rule.ends(self.lanes.max_seen(), now));
                cap.downgrade(&ends.complete);
                self.phase = Phase::Ended { global_end_known: false };
                Next::Now
            }
            Poll::Ready | Poll::Idle => {
                let frontiers = self.lanes.frontiers(self.input.source.as_ref());
                self.live = frontiers.live.is_some();
                // With every lane idle, follow the live workers; if none is live, the idle lanes'
                // least watermark lets a quiet stream complete as far as every partition has
                // gone, so that none of their events turns late when they resume (a broker
                // frozen for a while, say).
                let target = frontiers.live.or_else(|| self.peers.least(self.worker, |p| p.live)).or(frontiers.idle);
                if let Some(frontier) = target {
                    cap.downgrade(&frontier.max(now));
                }
                if poll == Poll::Ready {
                    Next::Now
                } else {
                    Next::Soon
                }
            }
        }
    }

    /// Records this worker's progress; returns it when the other readers have to hear of it.
    fn announce(&mut self, progress: Progress) -> Option<Progress> {
        self.settings.metrics.set_reader_progress(self.worker, progress.into());
        let news = self.settings.readers > 1 && self.announced != Some(progress);
        news.then(|| {
            self.announced = Some(progress);
            progress
        })
    }
}

/// Builds the ingest operator. Workers given `Some(input)` read; the others release their
/// capability at once. Every worker's `settings.end` learns where the stream ended once all
/// `settings.readers` readers have reached the end of their part. Raising `settings.stop` ends
/// the input as if every source were exhausted: windows close, final results go out, offsets
/// are committed, and the run returns.
pub fn ingest<'scope>(
    scope: Scope<'scope, Millis>,
    input: Option<Input>,
    settings: IngestSettings,
) -> Ingested<'scope> {
    settings.end.set_drained(input.is_none());
    let (readers, end, metrics) = (settings.readers, settings.end.clone(), Arc::clone(&settings.metrics));
    let peers = Peers::default();
    let workers = scope.peers();
    let mut reader = input.map(|input| Reader::new(input, scope.index(), workers, settings, peers.clone()));
    let stream: Stream<'scope, Millis, Vec<(Ingest, Millis, isize)>> =
        source_operator::<_, timely::container::CapacityContainerBuilder<Vec<_>>, _, _>(
            scope,
            "Ingest",
            move |capability, info| {
                let activator = scope.activator_for(info.address);
                let mut capability = reader.as_ref().map(|reader| {
                    let mut capability = capability;
                    if let Some(restored) = reader.restored_capability {
                        capability.downgrade(&restored);
                    }
                    capability
                });
                move |output| {
                    let (Some(cap), Some(stepped)) = (capability.as_mut(), reader.as_mut()) else {
                        return;
                    };
                    stepped.acknowledge();
                    if let Some(ends) = stepped.resend_end.take() {
                        output.session(&*cap).give((Ingest::End(ends), *cap.time(), 1));
                    }
                    let next = match stepped.cut_step(*cap.time()) {
                        CutStep::Wait => Next::Soon,
                        CutStep::Save { checkpoint, cut, frontier } => {
                            stepped.save_cut(checkpoint, cut, frontier, *cap.time());
                            Next::Now
                        }
                        // A worker that reads nothing sends nothing: it crosses at once.
                        CutStep::CrossTo { cut } if stepped.phase != Phase::Reading => {
                            let cut = cut.max(*cap.time());
                            cap.downgrade(&cut);
                            Next::Now
                        }
                        step @ (CutStep::Run | CutStep::CrossTo { .. }) => {
                            if stepped.phase != Phase::Reading {
                                stepped.follow_peers(cap)
                            } else if stepped.held_back(cap.time()) {
                                Next::Soon
                            } else {
                                let (poll, records) = stepped.read_batch(*cap.time());
                                output.session(&*cap).give_iterator(records.into_iter());
                                let next = stepped.advance(cap, poll);
                                if let CutStep::CrossTo { cut } = step {
                                    stepped.follow_to_cut(cap, cut);
                                }
                                next
                            }
                        }
                    };
                    if let Some(progress) = stepped.announce(stepped.progress(*cap.time())) {
                        output.session(&*cap).give((Ingest::Progress(progress), progress.frontier, 1));
                    }
                    match next {
                        Next::Now => activator.activate(),
                        Next::Soon => activator.activate_after(Duration::from_millis(1)),
                        Next::Finished => reader = None,
                    }
                }
            },
        );
    let mut kinds = stream.partition(KINDS, |(ingest, time, diff)| (ingest.kind(), (ingest, time, diff)));
    let mut next_kind = move || kinds.pop().expect("partition gives one stream per kind");
    let ends = next_kind().flat_map(|(ingest, _, _)| ingest.into_end());
    let progress = next_kind().flat_map(|(ingest, _, _)| ingest.into_progress());
    let forgets = next_kind().flat_map(|(ingest, time, diff)| ingest.into_forget().map(|user| (user, time, diff)));
    let dead_letters = next_kind().flat_map(|(ingest, _, _)| ingest.into_dead());
    let events = next_kind().flat_map(|(ingest, time, diff)| ingest.into_event().map(|event| (event, time, diff)));
    follow_peers_progress(progress, peers, metrics);
    learn_stream_end(ends, readers, end);
    Ingested { events: events.as_collection(), dead_letters, forgets: forgets.as_collection() }
}

/// Every reading worker hears every other's progress.
fn follow_peers_progress(progress: Stream<'_, Millis, Vec<Progress>>, peers: Peers, metrics: Arc<Metrics>) {
    progress.broadcast().sink(Pipeline, "Ingest: Progress", move |(input, _frontier)| {
        input.for_each(|_time, data| {
            let mut seen = peers.0.borrow_mut();
            for progress in data.drain(..) {
                metrics.set_reader_progress(progress.worker, progress.into());
                seen.insert(progress.worker, progress);
            }
        });
    });
}

/// Every worker learns where the stream ended once every one of the `readers` has told where its
/// part did.
fn learn_stream_end(ends: Stream<'_, Millis, Vec<Ends>>, readers: usize, end: StreamEnd) {
    let mut heard: Vec<Ends> = Vec::new();
    ends.broadcast().sink(Pipeline, "StreamEnd", move |(input, _frontier)| {
        input.for_each(|_time, data| heard.append(data));
        if readers > 0 && heard.len() == readers && end.get().is_none() {
            end.set(heard.iter().copied().reduce(Ends::merge));
        }
    });
}

/// Records `at` as the last position of its lane in `positions` (one entry per lane).
fn advance_position(positions: &mut Vec<Position>, at: Position) {
    match positions.iter_mut().find(|p| p.lane == at.lane) {
        Some(p) => p.offset = p.offset.max(at.offset),
        None => positions.push(at),
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

    /// A Kafka reader restored on another number of workers takes each of its partitions' lanes
    /// from the old reader of that partition, and renumbers the records they hold back.
    #[test]
    fn kafka_lanes_are_dealt_to_the_new_workers_by_partition() {
        let spec = TimeSpec { tick: Span(1_000), max_out_of_orderness: Span(0), ..TimeSpec::default() };
        let view = |ts| Event {
            user: Id::Num(1),
            item: Id::Num(2),
            category: None,
            action: crate::event::Action::View,
            value: None,
            ts,
        };
        // Two hours ahead of every clock: held back until confirmed.
        let far = 7_200_000 + 3_000;
        // Old worker `w` of 2 read partitions `w` and `w + 2`; partition p's clock has seen p s.
        let part = |worker: usize| {
            let mut lanes = Lanes::new(2, &EventClock::new(&spec));
            let partitions = [worker as i32, worker as i32 + 2];
            for (lane, p) in partitions.iter().enumerate() {
                lanes.clocks[lane].admit(*p as u64 * 1_000);
                lanes.holds[lane] = FutureHold::default();
            }
            // Partition 3 (old worker 1's lane 1) holds a record back.
            if worker == 1 {
                let settled =
                    lanes.holds[1].arrive(&lanes.clocks[1], far, (Position { lane: 1, offset: 7 }, view(far)));
                assert!(settled.admit.is_empty() && settled.future.is_empty(), "held back");
            }
            let state =
                ReaderState { capability: 5_000 + worker as u64, lanes, latest_given: 0, records_read: 0, ended: None };
            let next_offsets = partitions.iter().map(|p| (*p, 10)).collect();
            WorkerCut {
                checkpoint: 1,
                worker,
                cut: 5_000,
                frontier: 5_000,
                records_read: 0,
                source: Some(ResumePoint::Kafka(super::super::KafkaResume { next_offsets })),
                max_records_left: None,
                posted: PostedPosition::default(),
                forgets: ForgetsAtCut::default(),
                reader: bincode::serialize(&state).unwrap(),
                operators: Vec::new(),
            }
        };
        let old = [part(0), part(1)];
        // On 3 workers, worker 0 reads partitions 0 and 3, worker 1 partition 1.
        let RestoredReader(first) = RestoredReader::dealt(&old, 0, 3).unwrap();
        let seen: Vec<Option<Millis>> = first.lanes.clocks.iter().map(EventClock::max_seen).collect();
        assert_eq!(seen, [Some(0), Some(3_000)]);
        assert_eq!(first.lanes.holds[1].clone().give_up(), [(Position { lane: 1, offset: 7 }, view(far))]);
        assert_eq!(first.capability, 5_000, "the least of the old readers'");
        let RestoredReader(second) = RestoredReader::dealt(&old, 1, 3).unwrap();
        let seen: Vec<Option<Millis>> = second.lanes.clocks.iter().map(EventClock::max_seen).collect();
        assert_eq!(seen, [Some(1_000)]);
        // On one worker, partitions 0 to 3 in order, the held record now on lane 3.
        let RestoredReader(only) = RestoredReader::dealt(&old, 0, 1).unwrap();
        let seen: Vec<Option<Millis>> = only.lanes.clocks.iter().map(EventClock::max_seen).collect();
        assert_eq!(seen, [Some(0), Some(1_000), Some(2_000), Some(3_000)]);
        assert_eq!(only.lanes.holds[3].clone().give_up(), [(Position { lane: 3, offset: 7 }, view(far))]);
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

    /// A replayed source that has nothing on its first poll and one event of 2023 on its second.
    struct SlowReplay(u32);

    impl EventSource for SlowReplay {
        fn poll(&mut self, _max: usize, out: &mut Vec<Arrival>) -> Poll {
            self.0 += 1;
            if self.0 == 2 {
                let event = Event {
                    user: Id::Num(1),
                    item: Id::Num(2),
                    category: None,
                    action: crate::event::Action::View,
                    value: None,
                    ts: 1_700_000_000_000,
                };
                out.push((Position { lane: 0, offset: 1 }, Ok(event)));
                return Poll::Ready;
            }
            Poll::Idle
        }

        fn name(&self) -> String {
            "file:slow.csv".into()
        }
    }

    /// Beside a replayed source, a post without `ts` waits for the source's first event and takes
    /// its time, rather than the wall clock, years past the replay's times.
    #[test]
    fn beside_a_replay_posts_wait_for_its_first_event() {
        let (sender, receiver) = super::super::post_channel(10);
        let mut input = Input::new(Box::new(SlowReplay(0)));
        input.posted = Some(Posted::new(receiver, None));
        let event = Event {
            user: Id::Num(9),
            item: Id::Num(3),
            category: None,
            action: crate::event::Action::View,
            value: None,
            ts: 0,
        };
        sender.send(vec![super::super::PostedRecord::Event { event, ts_given: false }]).unwrap();
        let (mut out, mut forgets) = (Vec::new(), Vec::new());
        assert_eq!(input.poll(&mut out, &mut forgets), Poll::Idle);
        assert!(out.is_empty(), "the post waits while the source has given nothing");
        input.poll(&mut out, &mut forgets);
        let times: Vec<Millis> = out.iter().map(|(_, arrival)| arrival.as_ref().unwrap().ts).collect();
        assert_eq!(times, [1_700_000_000_000, 1_700_000_000_000], "the post takes the source's time");
    }
}
