//! The replay on timely workers: the input is ingested once, through the same ingest operator
//! and event clock as `recflow run` (so the same dataflow times); every pipeline variant is a
//! dataflow built by [`crate::dataflow::build`] on those events; one operator on worker 0
//! gathers the events and every variant's result updates and, once the frontiers of both have
//! passed a time, hands them to [`Prequential::step`], which runs on a thread of its own while
//! the workers go on with later times.
//!
//! Before the replay the whole input is read, decoded and sorted by event time ([`read_sorted`]):
//! the replay is in event-time order whatever the file's order, its length fixes the warm-up and
//! the slices, and sizes the progress bar. The events are held in memory meanwhile.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use differential_dataflow::collection::concatenate;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::{probe, Probe};
use timely::worker::Worker;

use super::prequential::{Plan, Prequential};
use super::variants::{Model, Variant};
use super::{EvalError, EvalOptions, Latency, Report};
use crate::dataflow::{self, Coll, Time};
use crate::decode::Decoder;
use crate::driver::{is_first_process, WorkerDriver};
use crate::event::Event;
use crate::event_time::EventClock;
use crate::fatal::Fatal;
use crate::metrics::{LatencyHistogram, Metrics};
use crate::progress::EndRule;
use crate::results::{ResultKey, ResultValue};
use crate::source::{ingest, Arrival, EventSource, FileSource, IngestSettings, Input, Poll, Position};
use crate::spec::Pipeline;

/// The input's events in event-time order, ready to replay.
pub struct SortedInput {
    /// Accepted records as `(event, line)`, stably sorted by event time: ties keep file order.
    pub events: Vec<(Event, u64)>,
    /// Records read.
    pub records: u64,
    /// Records that could not be decoded into an event (malformed, missing field, bad value).
    pub rejected: u64,
    /// The input's name for dead letters.
    pub name: String,
}

/// Reads and decodes the whole input with the pipeline's decoder, and sorts it by event time.
///
/// A prequential replay is in event-time order whatever the file's order (MovieLens `u.data`,
/// for one, is not sorted), so no event arrives late and the whole file is replayed.
pub fn read_sorted(pipeline: &Pipeline, path: &Path) -> Result<SortedInput, EvalError> {
    let decoder = Decoder::new(&pipeline.source);
    let skip_header = pipeline.source.header && decoder.is_delimited();
    let unreadable = Fatal::default();
    let input_error =
        |source| EvalError::Input { pipeline: pipeline.name.clone(), path: path.display().to_string(), source };
    let mut source = FileSource::open(path, decoder, skip_header, unreadable.clone()).map_err(input_error)?;
    let mut input = SortedInput { events: Vec::new(), records: 0, rejected: 0, name: source.name() };
    let mut arrivals = Vec::with_capacity(8_192);
    loop {
        arrivals.clear();
        let poll = source.poll(8_192, &mut arrivals);
        input.records += arrivals.len() as u64;
        for arrival in arrivals.drain(..) {
            match arrival {
                (at, Ok(event)) => input.events.push((event, at.offset)),
                (_, Err(_)) => input.rejected += 1,
            }
        }
        match poll {
            Poll::Done => break,
            // Standard input that has nothing yet.
            Poll::Idle => std::thread::park_timeout(std::time::Duration::from_millis(1)),
            Poll::Ready => {}
        }
    }
    if let Some(message) = unreadable.get() {
        return Err(input_error(std::io::Error::other(message.to_string())));
    }
    input.events.sort_by_key(|(event, _)| event.ts);
    Ok(input)
}

/// Events the replay lets run ahead of the scored output. Far below the ingest operator's own
/// bound, so that the dataflow moves through the stream in small steps: the progress bar moves,
/// and update latency is a latency rather than the time to queue the whole file.
const AHEAD: u64 = 8_192;
/// Events handed to the ingest operator per poll.
const CHUNK: usize = 2_048;

/// Replays sorted events; positions are the events' lines in the file.
struct Replay {
    events: std::iter::Peekable<std::vec::IntoIter<(Event, u64)>>,
    name: String,
    /// The scored output's frontier.
    completed: probe::Handle<Time>,
    /// Batches not yet scored: (dataflow time of the batch's last event, events).
    ahead: std::collections::VecDeque<(Time, u64)>,
    /// The ingest operator's frontier follows the watermark: `max_out_of_orderness` behind the
    /// latest event, rounded up to a tick (events are sorted, so this is also their time rule).
    clock: EventClock,
}

impl EventSource for Replay {
    fn poll(&mut self, max: usize, out: &mut Vec<Arrival>) -> Poll {
        while self.ahead.front().is_some_and(|(time, _)| !self.completed.less_equal(time)) {
            self.ahead.pop_front();
        }
        let ahead: u64 = self.ahead.iter().map(|(_, n)| n).sum();
        // Wait only while the output lags behind what it could already complete, as the ingest
        // operator does: events past the watermark cannot complete until more are read.
        if ahead > AHEAD && self.completed.less_than(&self.clock.frontier()) {
            return Poll::Idle;
        }
        let before = out.len();
        let mut last = None;
        for (event, line) in self.events.by_ref().take(max.min(CHUNK)) {
            last = self.clock.admit(event.ts).or(last);
            out.push((Position { lane: 0, offset: line }, Ok(event)));
        }
        if let Some(time) = last {
            self.ahead.push_back((time, (out.len() - before) as u64));
        }
        if self.events.peek().is_none() {
            Poll::Done
        } else {
            Poll::Ready
        }
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

fn progress_bar(total: u64, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("replaying {bar:40} {human_pos}/{human_len} events, {elapsed_precise} (eta {eta})")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

/// What every worker of the replay shares.
struct ReplayShared {
    spec: Pipeline,
    variants: Vec<Variant>,
    k: usize,
    knn_seeds: usize,
    plan: Plan,
    /// The sorted input, taken by worker 0 of process 0, which feeds it.
    input: Mutex<Option<SortedInput>>,
    metrics: Arc<Metrics>,
    progress: ProgressBar,
}

/// What worker 0 of process 0 scored: the evaluation, its update latency, and that per slice.
type Scored = (super::Evaluation, Latency, Vec<Latency>);

/// Replays `options.input` through every variant; see [`super::evaluate`].
pub fn replay(
    pipeline: &Pipeline,
    variants: &[Variant],
    k: usize,
    options: &EvalOptions,
    config: timely::Config,
) -> Result<Option<Report>, EvalError> {
    let first_process = is_first_process(&config);
    let input = if first_process { Some(read_sorted(pipeline, &options.input)?) } else { None };
    let (records, rejected) = input.as_ref().map_or((0, 0), |i| (i.records, i.rejected));
    let total = input.as_ref().map_or(0, |i| i.events.len() as u64);
    let progress = progress_bar(total, options.progress && first_process);
    let shared = ReplayShared {
        spec: pipeline.clone(),
        variants: variants.to_vec(),
        k,
        knn_seeds: options.knn_seeds,
        plan: Plan::new(total, options.warmup, options.slices),
        input: Mutex::new(input),
        metrics: Arc::new(Metrics::default()),
        progress: progress.clone(),
    };
    let started = Instant::now();
    let guards = timely::execute(config, move |worker| replay_worker(worker, &shared))
        .map_err(|message| EvalError::Workers { pipeline: pipeline.name.clone(), message })?;
    let mut evaluation = None;
    for result in guards.join() {
        match result {
            Ok(found) => evaluation = evaluation.or(found),
            Err(message) => return Err(EvalError::Workers { pipeline: pipeline.name.clone(), message }),
        }
    }
    progress.finish_and_clear();
    Ok(evaluation.map(|(evaluation, latency, slice_latency)| Report {
        pipeline: pipeline.name.clone(),
        input: options.input.display().to_string(),
        k,
        unit: pipeline.source.timestamp_unit.scale(),
        records,
        rejected,
        evaluation,
        latency,
        slice_latency,
        elapsed_secs: started.elapsed().as_secs_f64(),
    }))
}

/// Builds the variants on one worker behind the ingest operator, worker 0 feeding the input and
/// scoring, and drives the replay to its end; returns what worker 0 scored.
fn replay_worker(worker: &mut Worker, shared: &ReplayShared) -> Option<Scored> {
    let spec = &shared.spec;
    let reader = worker.index() == 0;
    let taken = if reader { shared.input.lock().ok().and_then(|mut input| input.take()) } else { None };
    let driver = WorkerDriver::new(worker);
    let input = taken.map(|input| {
        Input::new(Box::new(Replay {
            events: input.events.into_iter().peekable(),
            name: input.name,
            completed: driver.completed.clone(),
            ahead: Default::default(),
            clock: EventClock::new(&spec.time),
        }))
    });
    let state = Rc::new(RefCell::new(reader.then(|| Scoring {
        evaluator: Evaluator::start(
            Prequential::new(spec, &shared.variants, shared.k, shared.knn_seeds, shared.plan),
            shared.progress.clone(),
        ),
        plan: shared.plan,
        handed: 0,
        latency: LatencyHistogram::default(),
        slice_latency: (0..shared.plan.slices).map(|_| LatencyHistogram::default()).collect(),
    })));
    let settings = IngestSettings {
        readers: 1,
        clock: EventClock::new(&spec.time),
        end_rule: EndRule::of(spec, None),
        metrics: Arc::clone(&shared.metrics),
        end: driver.end.clone(),
        completed: driver.completed.clone(),
        stop: None,
        checkpoints: None,
    };
    worker.dataflow::<Time, _, _>(|scope| {
        let ingested = ingest(scope, input, settings);
        let mut results = Vec::new();
        let mut built = dataflow::Shared::default();
        for (index, variant) in shared.variants.iter().enumerate() {
            if let Model::Dataflow(variant_spec) = &variant.model {
                let variant_results = dataflow::build_sharing(
                    ingested.events.clone(),
                    dataflow::Control::default(),
                    variant_spec,
                    &driver.end,
                    &mut built,
                );
                results.push(variant_results.map(move |(key, value)| (index, key, value)));
            }
        }
        let results = concatenate(scope, results);
        score(ingested.events, results, Rc::clone(&state), &driver.completed);
    });
    driver.until_complete(worker, || false, || {});
    let scored = state.borrow_mut().take().map(|s| {
        let slices = s.slice_latency.iter().map(quantiles).collect();
        (s.evaluator.finish().finish(), quantiles(&s.latency), slices)
    });
    scored
}

fn quantiles(histogram: &LatencyHistogram) -> Latency {
    Latency {
        p50_ms: histogram.quantile_ms(0.5),
        p90_ms: histogram.quantile_ms(0.9),
        p99_ms: histogram.quantile_ms(0.99),
    }
}

/// What the scoring operator keeps on worker 0.
struct Scoring {
    /// The evaluator, stepping on its own thread.
    evaluator: Evaluator,
    /// Where warm-up ends and the slices fall.
    plan: Plan,
    /// Accepted events handed to the evaluator so far.
    handed: u64,
    /// Per event: from its arrival at the scoring operator until every model's results at its
    /// time are complete.
    latency: LatencyHistogram,
    /// The same per slice, for the scored part of the stream.
    slice_latency: Vec<LatencyHistogram>,
}

/// One completed dataflow time for the evaluator: its time, its events, and every model's result
/// updates at it.
type Step = (Time, Vec<Event>, Vec<(usize, ResultKey, ResultValue, isize)>);

/// Completed times handed to the evaluator and not yet stepped through, at most: when it falls
/// this far behind, the scoring operator waits, and so, through `completed`, does the replay.
const STEPS_QUEUED: usize = 8_192;

/// The evaluator on a thread of its own, stepping through completed times in order while the
/// workers compute the next ones: its work (the baselines and every model's metrics) is
/// sequential and would otherwise hold up worker 0's share of the dataflow.
struct Evaluator {
    steps: std::sync::mpsc::SyncSender<Step>,
    thread: std::thread::JoinHandle<Prequential>,
}

impl Evaluator {
    /// Starts `prequential` on its thread, moving `progress` to the events stepped through.
    fn start(mut prequential: Prequential, progress: ProgressBar) -> Evaluator {
        let (steps, queued) = std::sync::mpsc::sync_channel::<Step>(STEPS_QUEUED);
        let thread = std::thread::Builder::new()
            .name("recflow-eval".into())
            .spawn(move || {
                for (time, events, updates) in queued {
                    prequential.step(time, events, updates);
                    progress.set_position(prequential.replayed());
                }
                prequential
            })
            .expect("the evaluator thread starts");
        Evaluator { steps, thread }
    }

    /// Hands the evaluator a completed time; times must come in order.
    fn step(&self, step: Step) {
        // A send fails only when the thread has died; `finish` then reports why.
        let _ = self.steps.send(step);
    }

    /// Waits for the evaluator to step through every time handed to it and returns it; a panic on
    /// its thread is resumed on this one.
    fn finish(self) -> Prequential {
        let Evaluator { steps, thread } = self;
        drop(steps);
        thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

/// The scoring operator: on worker 0, once neither input can still bring anything at or before
/// a time, hands that time to the evaluator. Attaches `completed` after it, so the ingest
/// operator's back-pressure and the run's end wait for the scoring too.
fn score<'scope>(
    events: Coll<'scope, Event>,
    results: Coll<'scope, (usize, ResultKey, ResultValue)>,
    state: Rc<RefCell<Option<Scoring>>>,
    completed: &probe::Handle<Time>,
) {
    type Update = (usize, ResultKey, ResultValue, isize);
    /// When batches of a time's events arrived, and how many each held.
    type Arrivals = Vec<(Instant, u64)>;
    let mut pending_events: BTreeMap<Time, (Vec<Event>, Arrivals)> = BTreeMap::new();
    let mut pending_results: BTreeMap<Time, Vec<Update>> = BTreeMap::new();
    events
        .inner
        .binary_frontier::<_, timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _, _>(
            results.inner,
            Exchange::new(|_: &(Event, Time, isize)| 0u64),
            Exchange::new(|_: &((usize, ResultKey, ResultValue), Time, isize)| 0u64),
            "Eval: Prequential",
            move |_capability, _info| {
                move |(events, event_frontier), (results, result_frontier), _output| {
                    let now = Instant::now();
                    events.for_each(|_time, data| {
                        for (event, time, diff) in data.drain(..) {
                            let (pending, arrivals) = pending_events.entry(time).or_default();
                            let copies = diff.max(0) as u64;
                            pending.extend(std::iter::repeat_n(event, copies as usize));
                            match arrivals.last_mut() {
                                Some((at, count)) if *at == now => *count += copies,
                                _ => arrivals.push((now, copies)),
                            }
                        }
                    });
                    results.for_each(|_time, data| {
                        for ((variant, key, value), time, diff) in data.drain(..) {
                            pending_results.entry(time).or_default().push((variant, key, value, diff));
                        }
                    });
                    let mut state = state.borrow_mut();
                    loop {
                        let next = match (pending_events.keys().next(), pending_results.keys().next()) {
                            (Some(a), Some(b)) => *a.min(b),
                            (Some(a), None) => *a,
                            (None, Some(b)) => *b,
                            (None, None) => break,
                        };
                        if event_frontier.less_equal(&next) || result_frontier.less_equal(&next) {
                            break;
                        }
                        let (events, arrivals) = pending_events.remove(&next).unwrap_or_default();
                        let updates = pending_results.remove(&next).unwrap_or_default();
                        if let Some(state) = state.as_mut() {
                            let slice = state.plan.scored_slice(state.handed);
                            state.handed += events.len() as u64;
                            for (at, count) in arrivals {
                                let micros = at.elapsed().as_micros() as u64;
                                state.latency.record(micros, count);
                                if let Some(histogram) = slice.and_then(|s| state.slice_latency.get(s)) {
                                    histogram.record(micros, count);
                                }
                            }
                            state.evaluator.step((next, events, updates));
                        }
                    }
                }
            },
        )
        .probe_with(completed);
}
