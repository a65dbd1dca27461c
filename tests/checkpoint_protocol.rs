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

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{scratch_dir, SMALL_WORLD};
use differential_dataflow::Hashable;
use recflow::checkpoint::worker_state;
use recflow::dataflow::Time;
use recflow::driver::WorkerDriver;
use recflow::event_time::EventClock;
use recflow::metrics::Metrics;
use recflow::progress::EndRule;
use recflow::run::Checkpoints;
use recflow::schedule::DueWork;
use recflow::source::{ingest, CutSettings, IngestSettings, Input, NoSource, SynthSource, WorkerCut};
use recflow::{Event, Pipeline, RunOptions};
use timely::dataflow::channels::pact::{Exchange, Pipeline as Local};
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::Probe;

/// What each worker saved at each checkpoint, in the order saved.
type Saved = Arc<Mutex<Vec<WorkerCut>>>;

/// Takes each worker's part of each checkpoint.
type Save = Arc<dyn Fn(Result<WorkerCut, bincode::Error>) + Send + Sync>;

fn collector() -> (Saved, Save) {
    let saved: Saved = Arc::default();
    let sink = Arc::clone(&saved);
    (saved, Arc::new(move |cut| sink.lock().unwrap().push(cut.expect("a worker's state serialises"))))
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

/// A counter one operator keeps and registers for checkpoints.
fn registered_counter(address: &[usize], count: impl Fn() -> u64 + 'static) {
    worker_state::register(address, Box::new(move || bincode::serialize(&count())));
}

/// Reads `events` generated events (on worker 0, or on every worker with `all_read`) on
/// `workers` workers through a stage that holds each event
/// back until a later time (due work, as windows' expiries are) and a stage, on another worker,
/// that counts what reaches it; both register their counts. Returns every worker's cuts.
fn run_counting(events: u64, workers: usize, all_read: bool) -> Vec<WorkerCut> {
    let pipeline = Pipeline::from_toml(SMALL_WORLD, "small.toml").unwrap();
    let (saved, save) = collector();
    let config = if workers == 1 { timely::Config::thread() } else { timely::Config::process(workers) };
    timely::execute(config, move |worker| {
        let state = worker_state::install();
        let driver = WorkerDriver::new(worker);
        let tick = pipeline.time.tick.millis();
        // Worker 0 always reads; with `all_read`, every worker reads its own generator, whose
        // event time runs at its own pace, so their capabilities drift apart.
        let source: Box<dyn recflow::source::EventSource> = if worker.index() == 0 || all_read {
            let mut spec = pipeline.source.synth.clone();
            spec.seed += worker.index() as u64;
            spec.spacing.0 = spec.spacing.0 * (4 + worker.index() as u64) / 4;
            Box::new(SynthSource::new(&spec))
        } else {
            Box::new(NoSource)
        };
        let input = Input { source, posted: None, max_records: Some(events) };
        let save = Arc::clone(&save);
        let settings = IngestSettings {
            readers: worker.peers(),
            clock: EventClock::new(&pipeline.time),
            end_rule: EndRule::of(&pipeline, None),
            metrics: Arc::new(Metrics::default()),
            end: driver.end.clone(),
            completed: driver.completed.clone(),
            stop: None,
            checkpoints: Some(CutSettings { interval: Duration::ZERO, state, save: Box::new(move |cut| save(cut)) }),
        };
        worker.dataflow::<Time, _, _>(|scope| {
            let events = ingest(scope, Some(input), settings).events.inner;
            let held = events
                .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<(Event, Time, isize)>>, _, _, _>(
                    Local,
                    "HoldBack",
                    |_capability, info| {
                        let work: Rc<RefCell<DueWork<Vec<Event>>>> = Rc::default();
                        let pending = Rc::clone(&work);
                        registered_counter(&info.address, move || {
                            // Everything not yet released, whatever its time.
                            pending.borrow().pending().map(|(_, events)| events.len() as u64).sum()
                        });
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
                    let counted: Rc<RefCell<u64>> = Rc::default();
                    let count = Rc::clone(&counted);
                    registered_counter(&info.address, move || *count.borrow());
                    let activator = scope.activator_for(info.address);
                    let mut runs = 0u64;
                    move |input, _output| {
                        runs += 1;
                        if runs.is_multiple_of(2) {
                            input.for_each(|_, data| *counted.borrow_mut() += data.len() as u64);
                        } else {
                            activator.activate();
                        }
                    }
                },
            )
            .probe_with(&driver.completed);
        });
        driver.until_complete(worker, || false, || {});
        worker_state::uninstall();
    })
    .unwrap();
    Arc::try_unwrap(saved).ok().unwrap().into_inner().unwrap()
}

#[test]
fn at_every_cut_what_was_read_is_exactly_what_the_operators_hold() {
    for (workers, all_read) in [(1, true), (3, false), (3, true)] {
        let saved = run_counting(150_000, workers, all_read);
        let checkpoints = check_complete(&saved, workers);
        // Readers whose event times run at different paces cut less often: each cut waits for
        // the slower ones to reach the fastest one's time.
        let least = if all_read && workers > 1 { 3 } else { 5 };
        assert!(checkpoints >= least, "{workers} workers: only {checkpoints} checkpoints");
        for n in 1..checkpoints {
            let cuts: Vec<&WorkerCut> = saved.iter().filter(|c| c.checkpoint == n).collect();
            let read: u64 = cuts.iter().map(|c| c.records_read).sum();
            let held: u64 = cuts
                .iter()
                .flat_map(|c| &c.operators)
                .map(|(_, bytes)| bincode::deserialize::<u64>(bytes).unwrap())
                .sum();
            assert_eq!(held, read, "{workers} workers, checkpoint {n}: read {read}, held {held}");
        }
    }
}

/// The changelog of a run of the small world's generator, and the cuts it saved.
fn run_pipeline(workers: usize, checkpoints: bool) -> (String, Vec<WorkerCut>) {
    let pipeline = Pipeline::from_toml(SMALL_WORLD, "small.toml").unwrap();
    let dir = scratch_dir("protocol");
    let output = dir.join("changelog.jsonl");
    let (saved, save) = collector();
    let options = RunOptions {
        output: Some(output.display().to_string()),
        dead_letter: Some(dir.join("dead.jsonl").display().to_string()),
        max_events: Some(50_000),
        status: false,
        checkpoints: checkpoints.then_some(Checkpoints { interval: Duration::ZERO, save }),
        ..RunOptions::default()
    };
    let config = if workers == 1 { timely::Config::thread() } else { timely::Config::process(workers) };
    recflow::run(pipeline, options, config).expect("the run succeeds");
    let changelog = std::fs::read_to_string(&output).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (changelog, Arc::try_unwrap(saved).ok().unwrap().into_inner().unwrap())
}

#[test]
fn taking_checkpoints_changes_no_result() {
    let (undisturbed, none) = run_pipeline(1, false);
    assert!(none.is_empty());
    assert!(undisturbed.lines().count() > 1_000, "a run with results to compare");
    for workers in [1, 3] {
        let (changelog, saved) = run_pipeline(workers, true);
        let checkpoints = check_complete(&saved, workers);
        assert!(checkpoints >= 5, "{workers} workers: only {checkpoints} checkpoints");
        assert!(saved.iter().any(|cut| !cut.operators.is_empty()), "operators registered state");
        assert!(changelog == undisturbed, "{workers} workers: the changelog differs from an undisturbed run's");
    }
}
