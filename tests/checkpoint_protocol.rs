//! The checkpoint protocol (`recflow::checkpoint::cut`): workers agree on consistent cuts while
//! the pipeline runs, and taking them changes no result.
//!
//! - At every cut nothing is in flight: what the readers had read is exactly what the operators
//!   held, summed over all workers, including work scheduled for later that a cut must not see
//!   released half-way.
//! - A run that takes a checkpoint as often as it can writes the same changelog, byte for byte,
//!   as one that takes none, on 1 and 3 workers; every worker saves every checkpoint, at the same
//!   cut.

mod common;

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{scratch_dir, SMALL_WORLD};
use differential_dataflow::Hashable;
use recflow::checkpoint::rescale::{Owner, Rescale};
use recflow::checkpoint::worker_state::{self, Freeze};
use recflow::dataflow::Time;
use recflow::driver::WorkerDriver;
use recflow::event_time::EventClock;
use recflow::metrics::Metrics;
use recflow::progress::EndRule;
use recflow::run::Checkpoints;
use recflow::schedule::DueWork;
use recflow::source::{
    ingest, CutSettings, EventSource, FrozenCut, IngestSettings, Input, NoSource, RestoredReader, ResumePoint,
    SynthSource, WorkerCut,
};
use recflow::{Event, Pipeline, RunOptions};
use timely::dataflow::channels::pact::{Exchange, Pipeline as Local};
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::Probe;

/// What each worker saved at each checkpoint, in the order saved, not yet serialised.
type Saved = Arc<Mutex<Vec<FrozenCut>>>;

/// Takes each worker's part of each checkpoint.
type Save = Arc<dyn Fn(Result<FrozenCut, bincode::Error>) + Send + Sync>;

fn collector() -> (Saved, Save) {
    let saved: Saved = Arc::default();
    let sink = Arc::clone(&saved);
    (saved, Arc::new(move |cut| sink.lock().unwrap().push(cut.expect("a worker's state is taken"))))
}

/// Every checkpoint was saved by each of `workers`, numbered from 1 without a gap, each at one
/// cut and frontier on every worker; returns how many there were.
fn check_complete(saved: &[WorkerCut], workers: usize) -> u64 {
    let mut by_checkpoint: BTreeMap<u64, Vec<&WorkerCut>> = BTreeMap::new();
    for cut in saved {
        by_checkpoint.entry(cut.checkpoint).or_default().push(cut);
    }
    let last = by_checkpoint.keys().next_back().copied().unwrap_or(0);
    for (n, cuts) in &by_checkpoint {
        let mut savers: Vec<usize> = cuts.iter().map(|c| c.worker).collect();
        savers.sort_unstable();
        // The last one may have been abandoned when the input ended.
        if *n < last {
            assert_eq!(savers, (0..workers).collect::<Vec<_>>(), "checkpoint {n} saved by every worker once");
        }
        assert!(cuts.iter().all(|c| (c.cut, c.frontier) == (cuts[0].cut, cuts[0].frontier)), "checkpoint {n}");
        assert!(cuts[0].frontier >= cuts[0].cut, "checkpoint {n}: the frontier is past the cut");
    }
    assert_eq!(by_checkpoint.keys().copied().collect::<Vec<_>>(), (1..=last).collect::<Vec<_>>());
    last
}

/// Records not yet released by the hold-back stage, by due time: its saved state.
type HeldBack = BTreeMap<Time, Vec<Event>>;

/// What a run of [`run_counting`] left: every worker's cuts, and the count each worker's
/// counter ended with.
struct Counted {
    cuts: Vec<WorkerCut>,
    counted: u64,
    /// The address of the counter (the other registered operator is the hold-back stage).
    counter: Vec<usize>,
}

/// The generator worker `worker` reads: worker 0 always; with `all_read` every worker reads its
/// own, whose event time runs at its own pace, so the workers' capabilities drift apart.
fn generator(pipeline: &Pipeline, worker: usize, all_read: bool) -> Option<recflow::spec::SynthSpec> {
    let mut spec = pipeline.source.synth.clone();
    spec.seed += worker as u64;
    spec.spacing.0 = spec.spacing.0 * (4 + worker as u64) / 4;
    (worker == 0 || all_read).then_some(spec)
}

/// Reads `events` generated events per reading worker on `workers` workers through a stage that
/// holds each record back until the next tick (due work, as windows' expiries are) and a stage,
/// on other workers, that counts what reaches it; both register their state. With `restore`
/// (every worker's part of one checkpoint), every worker starts from its part instead.
fn run_counting(events: u64, workers: usize, all_read: bool, restore: Option<&[WorkerCut]>) -> Counted {
    let pipeline = Pipeline::from_toml(SMALL_WORLD, "small.toml").unwrap();
    let (saved, save) = collector();
    let counted: Arc<Mutex<BTreeMap<usize, u64>>> = Arc::default();
    let counter: Arc<Mutex<Vec<usize>>> = Arc::default();
    let restore: Option<Vec<WorkerCut>> = restore.map(|cuts| cuts.to_vec());
    let (counts, counter_address) = (Arc::clone(&counted), Arc::clone(&counter));
    let config = if workers == 1 { timely::Config::thread() } else { timely::Config::process(workers) };
    timely::execute(config, move |worker| {
        let index = worker.index();
        let part = restore.as_ref().map(|cuts| cuts.iter().find(|c| c.worker == index).expect("every worker's part"));
        let state = worker_state::install(part.map(|p| p.operators.clone()).unwrap_or_default());
        let driver = WorkerDriver::new(worker);
        let tick = pipeline.time.tick.millis();
        let source: Box<dyn EventSource> = match (generator(&pipeline, index, all_read), part) {
            (Some(spec), Some(part)) => match &part.source {
                Some(ResumePoint::Synth(at)) => Box::new(SynthSource::resume(&spec, at)),
                other => panic!("a generator's resume point, not {other:?}"),
            },
            (Some(spec), None) => Box::new(SynthSource::new(&spec)),
            (None, _) => Box::new(NoSource),
        };
        let max_records = part.map_or(Some(events), |p| p.max_records_left);
        let input = Input { source, posted: None, max_records, forgotten: None };
        let save = Arc::clone(&save);
        let settings = IngestSettings {
            readers: worker.peers(),
            clock: EventClock::new(&pipeline.time),
            end_rule: EndRule::of(&pipeline, None),
            metrics: Arc::new(Metrics::default()),
            end: driver.end.clone(),
            completed: driver.completed.clone(),
            stop: None,
            checkpoints: Some(CutSettings {
                interval: Duration::ZERO,
                state: Rc::clone(&state),
                save: Box::new(move |cut| save(cut)),
                restore: part.map(|p| RestoredReader::from_bytes(&p.reader).expect("the reader's state reads back")),
            }),
        };
        let (counts, counter_address) = (Arc::clone(&counts), Arc::clone(&counter_address));
        worker.dataflow::<Time, _, _>(|scope| {
            let events = ingest(scope, Some(input), settings).events.inner;
            let held = events
                .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<(Event, Time, isize)>>, _, _, _>(
                    Local,
                    "HoldBack",
                    |capability, info| {
                        let work = worker_state::keep(&info.address, DueWork::<Vec<Event>>::default);
                        work.borrow_mut().hold_from(&capability);
                        move |(input, frontier), output| {
                            let mut work = work.borrow_mut();
                            input.for_each(|capability, data| {
                                for (event, time, _) in data.drain(..) {
                                    // Held until the next tick, where a cut is likely to fall.
                                    work.at((time / tick + 1) * tick, &capability).push(event);
                                }
                            });
                            while let Some((time, capability, due)) = work.next_due(frontier) {
                                output.session(&capability).give_iterator(due.into_iter().map(|e| (e, time, 1)));
                            }
                            work.settle();
                        }
                    },
                );
            // The counter takes its input only every other time it runs, as a worker in another
            // process takes messages only once they have crossed the network.
            held.unary::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
                Exchange::new(|(event, _, _): &(Event, Time, isize)| event.user.hashed()),
                "Count",
                |_capability, info| {
                    let counted = worker_state::keep(&info.address, EventsCounted::default);
                    *counter_address.lock().unwrap() = info.address.to_vec();
                    let activator = scope.activator_for(info.address);
                    let mut runs = 0u64;
                    move |input, _output| {
                        runs += 1;
                        if runs.is_multiple_of(2) {
                            input.for_each(|_, data| counted.borrow_mut().0 += data.len() as u64);
                            counts.lock().unwrap().insert(index, counted.borrow().0);
                        } else {
                            activator.activate();
                        }
                    }
                },
            )
            .probe_with(&driver.completed);
        });
        assert!(state.borrow().problems().is_empty(), "{:?}", state.borrow().problems());
        driver.until_complete(worker, || false, || {});
        worker_state::uninstall();
    })
    .unwrap();
    // Serialised only now, long after each worker went on from its cut, as a checkpoint's
    // serialiser may: each part must still hold what its worker held at the cut.
    let frozen = Arc::try_unwrap(saved).ok().unwrap().into_inner().unwrap();
    let cuts = frozen.into_iter().map(|cut| cut.serialise().expect("a worker's state serialises")).collect();
    let counted = counted.lock().unwrap().values().sum();
    let counter = counter.lock().unwrap().clone();
    Counted { cuts, counted, counter }
}

/// The counter's state: the events it has counted (saved as the bare number).
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct EventsCounted(u64);

impl Freeze for EventsCounted {
    type Frozen = u64;

    fn freeze(&mut self) -> u64 {
        self.0
    }
}

/// Counts add up, on worker 0.
impl Rescale for EventsCounted {
    fn rescale(old: Vec<Self>, to: Owner) -> Self {
        EventsCounted(if to.is_first() { old.iter().map(|counted| counted.0).sum() } else { 0 })
    }
}

/// What the operators of one worker's cut hold: records held back plus records counted.
fn held(cut: &WorkerCut, counter: &[usize]) -> u64 {
    let held = |(address, bytes): &worker_state::SavedOperator| -> u64 {
        if address == counter {
            bincode::deserialize::<u64>(bytes).unwrap()
        } else {
            bincode::deserialize::<HeldBack>(bytes).unwrap().values().map(|events| events.len() as u64).sum()
        }
    };
    cut.operators.iter().map(held).sum()
}

#[test]
fn at_every_cut_what_was_read_is_exactly_what_the_operators_hold() {
    for (workers, all_read) in [(1, true), (3, false), (3, true)] {
        let Counted { cuts, counter, .. } = run_counting(150_000, workers, all_read, None);
        let checkpoints = check_complete(&cuts, workers);
        // Readers whose event times run at different paces cut less often: each cut waits for
        // the slower ones to reach the fastest one's time.
        let least = if all_read && workers > 1 { 3 } else { 5 };
        assert!(checkpoints >= least, "{workers} workers: only {checkpoints} checkpoints");
        for n in 1..checkpoints {
            let parts: Vec<&WorkerCut> = cuts.iter().filter(|c| c.checkpoint == n).collect();
            let read: u64 = parts.iter().map(|c| c.records_read).sum();
            let held: u64 = parts.iter().map(|c| held(c, &counter)).sum();
            assert_eq!(held, read, "{workers} workers, checkpoint {n}: read {read}, held {held}");
        }
    }
}

/// A run restored from any of its checkpoints ends where the run that took it did: every
/// record read once, none lost in the state saved, none read twice.
#[test]
fn a_run_restored_from_a_cut_ends_as_the_run_that_took_it() {
    for (workers, all_read) in [(1, true), (3, true)] {
        let events = 150_000;
        let readers = if all_read { workers as u64 } else { 1 };
        let undisturbed = run_counting(events, workers, all_read, None);
        assert_eq!(undisturbed.counted, events * readers);
        let checkpoints = check_complete(&undisturbed.cuts, workers);
        assert!(checkpoints >= 3, "{workers} workers: only {checkpoints} checkpoints");
        for n in [1, checkpoints / 2, checkpoints - 1] {
            let parts: Vec<WorkerCut> = undisturbed.cuts.iter().filter(|c| c.checkpoint == n).cloned().collect();
            let restored = run_counting(events, workers, all_read, Some(&parts));
            assert_eq!(restored.counted, events * readers, "{workers} workers, restored from checkpoint {n}");
        }
    }
}

/// The changelog of a run of the small world's generator on `workers` workers, taking a
/// checkpoint as often as it can when `checkpoints`, starting from `restore` if given; and the
/// cuts it saved, each with the changelog's length when worker 0 saved it.
fn run_pipeline(workers: usize, checkpoints: bool, restore: Option<&[WorkerCut]>) -> (String, Vec<(WorkerCut, u64)>) {
    let pipeline = Pipeline::from_toml(SMALL_WORLD, "small.toml").unwrap();
    let dir = scratch_dir("protocol");
    let output = dir.join("changelog.jsonl");
    let saved: Arc<Mutex<Vec<(WorkerCut, u64)>>> = Arc::default();
    let (sink, written) = (Arc::clone(&saved), output.clone());
    let save: Save = Arc::new(move |cut| {
        let cut = cut.and_then(FrozenCut::serialise).expect("a worker's state serialises");
        // Worker 0 writes the changelog: what it holds when worker 0 saves is what precedes the cut.
        let length = if cut.worker == 0 { std::fs::metadata(&written).unwrap().len() } else { 0 };
        sink.lock().unwrap().push((cut, length));
    });
    let restore = restore.map(|parts| Arc::new(parts.to_vec()));
    let options = RunOptions {
        output: Some(output.display().to_string()),
        dead_letter: Some(dir.join("dead.jsonl").display().to_string()),
        max_events: Some(50_000),
        status: false,
        checkpoints: checkpoints.then_some(Checkpoints { interval: Duration::ZERO, save, restore }),
        ..RunOptions::default()
    };
    let config = if workers == 1 { timely::Config::thread() } else { timely::Config::process(workers) };
    let metrics = recflow::run(pipeline, options, config).expect("the run succeeds");
    // Workers that read nothing have no watermark to hold the run's down.
    assert!(metrics.watermark > 0, "{workers} workers: the run's watermark is 0");
    let changelog = std::fs::read_to_string(&output).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (changelog, Arc::try_unwrap(saved).ok().unwrap().into_inner().unwrap())
}

#[test]
fn taking_checkpoints_changes_no_result() {
    let (undisturbed, none) = run_pipeline(1, false, None);
    assert!(none.is_empty());
    assert!(undisturbed.lines().count() > 1_000, "a run with results to compare");
    for workers in [1, 3] {
        let (changelog, saved) = run_pipeline(workers, true, None);
        let cuts: Vec<WorkerCut> = saved.into_iter().map(|(cut, _)| cut).collect();
        let checkpoints = check_complete(&cuts, workers);
        assert!(checkpoints >= 5, "{workers} workers: only {checkpoints} checkpoints");
        assert!(cuts.iter().any(|cut| !cut.operators.is_empty()), "operators registered state");
        assert!(changelog == undisturbed, "{workers} workers: the changelog differs from an undisturbed run's");
    }
}

/// A pipeline (recommendations, similarity, popular fallback, hot items) restored from any of
/// its checkpoints writes exactly what the run that took it wrote after the cut, byte for byte.
#[test]
fn a_pipeline_restored_from_a_cut_writes_what_the_undisturbed_run_wrote_after_it() {
    for workers in [1, 3] {
        let (undisturbed, saved) = run_pipeline(workers, true, None);
        let cuts: Vec<WorkerCut> = saved.iter().map(|(cut, _)| cut.clone()).collect();
        let checkpoints = check_complete(&cuts, workers);
        for n in [1, checkpoints / 2, checkpoints - 1] {
            let parts: Vec<WorkerCut> = cuts.iter().filter(|c| c.checkpoint == n).cloned().collect();
            let written = saved.iter().find(|(cut, _)| cut.checkpoint == n && cut.worker == 0).unwrap().1;
            let (after, _) = run_pipeline(workers, true, Some(&parts));
            let expected = &undisturbed[written as usize..];
            assert!(
                after == expected,
                "{workers} workers, restored from checkpoint {n} (after {written} bytes): {} lines written, {} expected",
                after.lines().count(),
                expected.lines().count()
            );
        }
    }
}
