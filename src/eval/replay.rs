//! The replay on timely workers: the input is ingested once, exactly as `recflow run` ingests it
//! (same decoder, same event clock, so the same dataflow times); every pipeline variant is a
//! dataflow built by [`crate::dataflow::build`] on those events; one operator on worker 0
//! gathers the events and every variant's result updates and, once the frontiers of both have
//! passed a time, hands them to [`Prequential::step`].
//!
//! Before the replay the input is read once without the dataflow to count its accepted events,
//! which fixes the warm-up and the slices and sizes the progress bar.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use differential_dataflow::collection::concatenate;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::{probe, Probe};

use super::prequential::{Plan, Prequential};
use super::variants::{Model, Variant};
use super::{EvalError, EvalOptions, Latency, Report};
use crate::dataflow::{self, Coll, Time};
use crate::decode::Decoder;
use crate::event::Event;
use crate::event_time::EventClock;
use crate::metrics::{LatencyHistogram, Metrics};
use crate::results::{ResultKey, ResultValue};
use crate::source::{ingest, EndRule, EventSource, FileSource, Poll, StreamEnd};
use crate::spec::Pipeline;

/// Opens the input with the pipeline's decoder.
fn open_input(pipeline: &Pipeline, path: &Path) -> Result<FileSource, EvalError> {
    let decoder = Decoder::new(&pipeline.source);
    let skip_header = pipeline.source.header && decoder.is_delimited();
    FileSource::open(path, decoder, skip_header).map_err(|source| EvalError::Input {
        pipeline: pipeline.name.clone(),
        path: path.display().to_string(),
        source,
    })
}

/// How many events of the input the replay will accept: the same decoder and event clock as the
/// ingest operator, run over the same records in the same order.
pub fn count_accepted(pipeline: &Pipeline, path: &Path) -> Result<u64, EvalError> {
    let mut source = open_input(pipeline, path)?;
    let mut clock = EventClock::new(&pipeline.time);
    let mut arrivals = Vec::with_capacity(8_192);
    let mut accepted = 0;
    loop {
        arrivals.clear();
        let poll = source.poll(8_192, &mut arrivals);
        for (event, _) in arrivals.drain(..).flatten() {
            accepted += u64::from(clock.admit(event.ts).is_some());
        }
        if poll == Poll::Done {
            return Ok(accepted);
        }
    }
}

fn progress_bar(total: u64, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "replaying {bar:40} {human_pos}/{human_len} events, {per_sec}, {elapsed_precise} (eta {eta})",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Replays `options.input` through every variant; see [`super::evaluate`].
pub fn replay(
    pipeline: &Pipeline,
    variants: &[Variant],
    k: usize,
    options: &EvalOptions,
    config: timely::Config,
) -> Result<Option<Report>, EvalError> {
    let is_first_process = match &config.communication {
        timely::CommunicationConfig::Cluster { process, .. } => *process == 0,
        _ => true,
    };
    let total = if is_first_process { count_accepted(pipeline, &options.input)? } else { 0 };
    let plan = Plan::new(total, options.warmup, options.slices);
    let progress = progress_bar(total, options.progress && is_first_process);
    let metrics = Arc::new(Metrics::default());
    let worker_metrics = Arc::clone(&metrics);
    let (spec, variants, input) = (pipeline.clone(), variants.to_vec(), options.input.clone());
    let worker_progress = progress.clone();
    let started = Instant::now();
    let guards = timely::execute(config, move |worker| -> Result<Option<(super::Evaluation, Latency)>, EvalError> {
        let reader = worker.index() == 0;
        let source: Option<Box<dyn EventSource>> =
            if reader { Some(Box::new(open_input(&spec, &input)?)) } else { None };
        let state = Rc::new(RefCell::new(reader.then(|| Scoring {
            prequential: Prequential::new(&spec, &variants, k, plan),
            latency: LatencyHistogram::default(),
        })));
        let completed = probe::Handle::<Time>::new();
        let end = StreamEnd::default();
        let end_rule = EndRule {
            alignment: spec.recommend.as_ref().map_or(spec.time.tick.millis(), |r| r.similarity.refresh.millis()),
            hopping: None,
        };
        let dataflow_index = worker.next_dataflow_index();
        worker.dataflow::<Time, _, _>(|scope| {
            let ingested = ingest(
                scope,
                source,
                EventClock::new(&spec.time),
                end_rule,
                Arc::clone(&worker_metrics),
                end.clone(),
                completed.clone(),
            );
            let mut results = Vec::new();
            for (index, variant) in variants.iter().enumerate() {
                if let Model::Dataflow(variant_spec) = &variant.model {
                    let built = dataflow::build(ingested.events.clone(), variant_spec, &end);
                    results.push(built.map(move |(key, value)| (index, key, value)));
                }
            }
            let results = concatenate(scope, results);
            score(ingested.events, results, Rc::clone(&state), worker_progress.clone(), &completed);
        });
        let finished = || completed.done() || end.get().is_some_and(|ends| !completed.less_than(&ends.complete));
        while !finished() {
            worker.step_or_park(Some(Duration::from_millis(50)));
        }
        worker.drop_dataflow(dataflow_index);
        let scored = state.borrow_mut().take().map(|s| (s.prequential.finish(), quantiles(&s.latency)));
        Ok(scored)
    })
    .map_err(|message| EvalError::Workers { pipeline: pipeline.name.clone(), message })?;
    let mut evaluation = None;
    for result in guards.join() {
        match result {
            Ok(Ok(found)) => evaluation = evaluation.or(found),
            Ok(Err(e)) => return Err(e),
            Err(message) => return Err(EvalError::Workers { pipeline: pipeline.name.clone(), message }),
        }
    }
    progress.finish_and_clear();
    let snapshot = metrics.snapshot();
    Ok(evaluation.map(|(evaluation, latency)| Report {
        pipeline: pipeline.name.clone(),
        input: options.input.display().to_string(),
        k,
        unit: pipeline.source.timestamp_unit.scale(),
        records: snapshot.records_in,
        rejected: snapshot.invalid,
        late: snapshot.late,
        evaluation,
        latency,
        elapsed_secs: started.elapsed().as_secs_f64(),
    }))
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
    prequential: Prequential,
    /// Per event: from its arrival at the scoring operator until every model's results at its
    /// time are complete and it is scored.
    latency: LatencyHistogram,
}

/// The scoring operator: on worker 0, once neither input can still bring anything at or before
/// a time, steps the evaluator through that time. Attaches `completed` after it, so the ingest
/// operator's back-pressure and the run's end wait for the scoring too.
fn score<'scope>(
    events: Coll<'scope, Event>,
    results: Coll<'scope, (usize, ResultKey, ResultValue)>,
    state: Rc<RefCell<Option<Scoring>>>,
    progress: ProgressBar,
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
                            state.prequential.step(next, events, updates);
                            for (at, count) in arrivals {
                                state.latency.record(at.elapsed().as_micros() as u64, count);
                            }
                            progress.set_position(state.prequential.replayed());
                        }
                    }
                }
            },
        )
        .probe_with(completed);
}
