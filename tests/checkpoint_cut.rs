//! The property checkpoints rest on (docs/design/checkpoints.md): from a cut `C` on, every result
//! depends only on the events whose influence reaches `C` (`Influence::ends`), the events after
//! `C`, and the users' lists as they stood at `C` (a list is scored against the similarity as of
//! the user's last change, so it carries history no retained event does). A dataflow fed only
//! those holds, at every time from `C` on, the same value for every key as one fed everything.
//!
//! Not yet with `co_occurrence = "horizon"`: there each item a user starts touching takes the
//! user's next entry number, and which items pair (and with what decay) depends on the numbers of
//! items that left the horizon long ago, so a checkpoint will have to carry the users' entry
//! numbers as well (docs/design/checkpoints.md).

mod common;

use std::collections::BTreeMap;

use common::{recflow, run_ok, scratch_dir};
use differential_dataflow::input::Input;
use recflow::dataflow::forget::Influence;
use recflow::dataflow::{self, Control, Time};
use recflow::event_time::ceil_to;
use recflow::progress::StreamEnd;
use recflow::results::{RecItem, ResultKey, ResultValue};
use recflow::{Action, Event, Id, Pipeline};
use timely::dataflow::operators::capture::{Capture, Extract};

const PIPELINE: &str = r#"
[source]
kind = "synth"
timestamp_unit = "ms"
[recommend]
k = 5
history = 10
short_term = SHORT_TERM
long_term = "2m"
co_occurrence = "history"
popular_window = "1m"
[recommend.similarity]
refresh = "10s"
min_support = 1
[hot_items]
size = "2m"
slide = "30s"
"#;

type Update = ((ResultKey, ResultValue), Time, isize);

/// The value of every key after each time.
type States = BTreeMap<Time, BTreeMap<ResultKey, ResultValue>>;

/// The generator's events, each at its dataflow time (in order, so the tick of its timestamp).
fn events(tick: Time) -> Vec<(Event, Time)> {
    let dir = scratch_dir("cut");
    let world = dir.join("world.toml");
    std::fs::write(&world, common::SMALL_WORLD).unwrap();
    let file = dir.join("events.csv");
    run_ok(recflow().arg("gen").arg(&world).args(["--events", "12000", "--unit", "ms", "--output"]).arg(&file));
    let text = std::fs::read_to_string(&file).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let id = |field: &str| Id::Num(field.parse().unwrap());
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let ts: u64 = f[4].parse().unwrap();
            let action = Action::parse(f[3]).unwrap();
            let event = Event { user: id(f[0]), item: id(f[1]), category: Some(id(f[2])), action, value: None, ts };
            (event, ceil_to(ts, tick))
        })
        .collect()
}

/// Every result update of `pipeline` on `events`, with `restored` lists at `restored_at`, on
/// `workers` threads.
fn results(
    pipeline: &Pipeline,
    events: &[(Event, Time)],
    restored: &[(Id, Vec<RecItem>)],
    restored_at: Time,
    workers: usize,
) -> Vec<Update> {
    let (pipeline, events, restored) = (pipeline.clone(), events.to_vec(), restored.to_vec());
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let first = worker.index() == 0;
        let captured = worker.dataflow::<Time, _, _>(|scope| {
            let fed = if first { events.iter().map(|(e, t)| (e.clone(), *t, 1)).collect() } else { Vec::new() };
            let (_events, events) = scope.new_collection_from_raw(fed);
            let lists = if first { restored.iter().map(|l| (l.clone(), restored_at, 1)).collect() } else { Vec::new() };
            let (_lists, lists) = scope.new_collection_from_raw(lists);
            let control = Control { forgets: None, restored: Some(lists) };
            dataflow::build(events, control, &pipeline, &StreamEnd::default()).inner.capture()
        });
        while worker.step() {}
        captured.extract().into_iter().flat_map(|(_, updates)| updates).collect::<Vec<Update>>()
    })
    .unwrap();
    guards.join().into_iter().flat_map(Result::unwrap).collect()
}

/// The value of every key after each time.
fn states(updates: &[Update]) -> States {
    let mut by_time: BTreeMap<Time, Vec<&Update>> = BTreeMap::new();
    for update in updates {
        by_time.entry(update.1).or_default().push(update);
    }
    let mut current: BTreeMap<(ResultKey, ResultValue), isize> = BTreeMap::new();
    let mut states = BTreeMap::new();
    for (time, updates) in by_time {
        for ((key, value), _, diff) in updates {
            *current.entry((key.clone(), value.clone())).or_default() += diff;
        }
        current.retain(|_, count| *count != 0);
        states.insert(time, current.iter().map(|((k, v), _)| (k.clone(), v.clone())).collect());
    }
    states
}

/// A value as the assertion shows it: a list as `item:score` (`f` for a fill-in).
fn shown(value: Option<&ResultValue>) -> String {
    match value {
        Some(ResultValue::Recs(list)) => list
            .iter()
            .map(|r| format!("{}:{}{}", r.item, r.score, if r.fallback { "f" } else { "" }))
            .collect::<Vec<_>>()
            .join(" "),
        other => format!("{other:?}"),
    }
}

/// At three cuts of the generator's events, a dataflow fed the events that reach the cut, the
/// later ones and the lists at the cut (restored just before it) holds the same results from the
/// cut on as one fed everything.
fn a_cut_keeps_every_result(short_term: &str, workers: usize) {
    let text = PIPELINE.replace("SHORT_TERM", short_term);
    let pipeline = Pipeline::from_toml(&text, "cut.toml").unwrap();
    let tick = pipeline.time.tick.millis();
    let influence = Influence::of(&pipeline);
    let hop = dataflow::hopping(&pipeline).unwrap();
    let events = events(tick);
    let everything = results(&pipeline, &events, &[], 0, workers);
    let (first, last) = (events[0].1, events.last().unwrap().1);
    for cut in [1, 2, 3].map(|n| ceil_to(first + n * (last - first) / 4, tick)) {
        let kept: Vec<(Event, Time)> = events
            .iter()
            .filter(|(event, time)| *time >= cut || influence.ends(event).is_none_or(|end| end >= cut))
            .cloned()
            .collect();
        assert!(kept.len() < events.len(), "the cut at {cut} drops no event");
        let at_cut = states(&everything).range(..cut).next_back().map(|(_, state)| state.clone());
        let lists: Vec<(Id, Vec<RecItem>)> = at_cut
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(key, value)| match (key, value) {
                (ResultKey::Recs(user), ResultValue::Recs(list)) => Some((user, list)),
                _ => None,
            })
            .collect();
        let restored = results(&pipeline, &kept, &lists, cut - 1, workers);
        // A hot-items window purged before the cut was final then: the checkpoint's changelog
        // values hold it, and nothing after the cut changes it.
        let open = |states: States| -> States {
            let open_at_cut = |key: &ResultKey| match key {
                ResultKey::HotItems { window_end, .. } => hop.purge_time(*window_end) >= cut,
                ResultKey::Recs(_) | ResultKey::Popular => true,
            };
            states
                .into_iter()
                .map(|(t, state)| (t, state.into_iter().filter(|(k, _)| open_at_cut(k)).collect()))
                .collect()
        };
        let (full, from_cut) = (open(states(&everything)), open(states(&restored)));
        let as_of = |states: &States, time: Time| {
            states.range(..=time).next_back().map(|(_, state)| state.clone()).unwrap_or_default()
        };
        for &time in full.keys().chain(from_cut.keys()).filter(|time| **time >= cut) {
            let (expected, found) = (as_of(&full, time), as_of(&from_cut, time));
            let differ: Vec<String> = expected
                .keys()
                .chain(found.keys())
                .filter(|key| expected.get(*key) != found.get(*key))
                .take(3)
                .map(|key| format!("{key:?}: {} against {}", shown(expected.get(key)), shown(found.get(key))))
                .collect();
            assert!(differ.is_empty(), "results at {time}, cut {cut}, {short_term}, -w {workers}: {differ:#?}");
        }
    }
}

#[test]
fn a_cut_keeps_every_result_with_sliding_windows() {
    a_cut_keeps_every_result(r#"{ kind = "sliding", size = "30s" }"#, 1);
}

#[test]
fn a_cut_keeps_every_result_on_three_workers() {
    a_cut_keeps_every_result(r#"{ kind = "sliding", size = "30s" }"#, 3);
}

#[test]
fn a_cut_keeps_every_result_with_session_windows() {
    a_cut_keeps_every_result(r#"{ kind = "session", gap = "20s" }"#, 1);
}
