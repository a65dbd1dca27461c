//! `recflow eval`: prequential (test-then-learn) metrics of the real dataflow's lists against a
//! hand-computed fixture, on synthetic data with planted taste clusters and sessions, the same
//! for any worker count, and the command line's files and errors.

mod common;

use common::OutputWithin;

use std::path::Path;
use std::process::Command;

use common::scratch_dir;
use recflow::eval::{evaluate, EvalOptions, Report, VariantResult};
use recflow::source::SynthSource;
use recflow::Pipeline;

fn options(input: &Path, slices: usize) -> EvalOptions {
    EvalOptions {
        input: input.to_path_buf(),
        k: None,
        warmup: 0.0,
        slices,
        knn_seeds: 10,
        compare: Vec::new(),
        progress: false,
    }
}

fn config(workers: usize) -> timely::Config {
    if workers == 1 {
        timely::Config::thread()
    } else {
        timely::Config::process(workers)
    }
}

fn model<'a>(report: &'a Report, name: &str) -> &'a VariantResult {
    report.evaluation.results.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("no model {name}"))
}

fn close(actual: f64, expected: f64, what: &str) {
    assert!((actual - expected).abs() < 1e-9, "{what}: {actual} != {expected}");
}

const FIXTURE_PIPELINE: &str = r#"
name = "fixture"
[source]
kind = "file"
path = "events.csv"
columns = ["user", "item", "action", "ts"]
[time]
tick = "1s"
max_out_of_orderness = "0s"
[recommend]
k = 2
short_term = { kind = "sliding", size = "1h" }
long_term = "all"
alpha = 0.5
beta = 0.5
exclude = "seen"
popular_window = "4s"
[recommend.similarity]
measure = "jaccard"
min_support = 1
refresh = "1s"
"#;

/// `user,item,action,ts` (seconds): every event at its own tick.
const FIXTURE_EVENTS: &str = "\
1,1,view,1
1,2,view,2
2,1,view,3
2,2,view,4
3,3,view,5
1,3,view,6
3,1,view,7
2,3,view,8
1,1,view,9
4,3,view,10
4,2,view,11
";

/// Worked by hand. Lists are k = 2, "before" an event at t means as of t - 1 s.
///
/// The pipeline's lists (each user's list changes only at their own events; `fb` = fill-in from
/// the pool of the last 4 s, seen items never listed; Jaccard similarity over histories). A user
/// without a list of their own is scored against the new-user list `pop`: the first two items of
/// the pool as of t - 1 s (events with ts in [t-4, t-1], count desc then item asc), seen items
/// not removed:
/// - u1 at 1 s and 2 s: no unseen candidate, pool items all seen: no list, ever.
/// - u2 at 3 s: seed 1, sim(1,2) = 1/(2+1-1) = 0.5: [2]. At 4 s: everything seen: no list.
/// - u3 at 5 s: item 3 has no neighbour; pool over 2..5 s = {2:2, 1:1, 3:1}: [2 fb, 1 fb].
///   At 7 s: [2] (2 is the only unseen item).
/// - u4 at 10 s: sim(3,1) = 3/(4+3-3) = 0.75, sim(3,2) = 2/(4+2-2) = 0.5: [1, 2].
///
/// Scoring (1,1)@9 is skipped: u1 has seen item 1. The ten other events:
///
/// | event   | blend            | global-pop (counts before t) | windowed-pop (ts in [t-4, t-1]) |
/// |---------|------------------|------------------------------|---------------------------------|
/// | (1,1)@1 | no list, pop []: miss     | empty                        | empty                           |
/// | (1,2)@2 | no list, pop [1]: miss    | [1] - seen 1: empty          | empty                           |
/// | (2,1)@3 | no list, pop [1, 2]: hit 1| [1, 2]: hit 1                | [1, 2]: hit 1                   |
/// | (2,2)@4 | [2]: hit 1                | [1, 2] - seen 1: hit 1       | [1, 2] - seen 1: hit 1          |
/// | (3,3)@5 | no list, pop [1, 2]: miss | [1, 2]: miss                 | [1, 2]: miss                    |
/// | (1,3)@6 | no list, pop [2, 1]: miss | [1,2,3] - seen: [3]: hit 1   | [2,1,3] - seen: [3]: hit 1      |
/// | (3,1)@7 | [2fb, 1fb]: hit 2         | [1,2,3] - 3: [1, 2]: hit 1   | [3,1,2] - 3: [1, 2]: hit 1      |
/// | (2,3)@8 | no list, pop [3, 1]: hit 1| [1,2,3] - 1,2: [3]: hit 1    | [3,1,2] - 1,2: [3]: hit 1       |
/// | (4,3)@10| no list, pop [1, 3]: hit 2| {1:4,3:3,2:2}: [1, 3]: hit 2 | {1:2,3:2}: [1, 3]: hit 2        |
/// | (4,2)@11| [1, 2]: hit 2             | {1:4,3:4,2:2} - 3: [1, 2]: hit 2 | {1:2,3:2} - 3: [1]: miss    |
///
/// With NDCG 1 for rank 1 and 1/log2(3) = 0.6309 for rank 2, over 10 events:
/// - blend: 6 hits, 3 at rank 1: HR 0.6; NDCG (3 + 3 * 0.6309) / 10; MRR (3 + 3 * 0.5) / 10 =
///   0.45; no list of their own 7/10; seven non-empty lists all fill-ins (u3 at 7 s and the six
///   `pop` lists): fallback 0.7, and 4 of the 6 hits are on fill-ins; items shown {1, 2, 3} of
///   the catalogue {1, 2, 3}: coverage 1.
/// - global-pop: 7 hits: HR 0.7; NDCG (5 + 2 * 0.6309) / 10; MRR (5 + 2 * 0.5) / 10 = 0.6; empty
///   lists 2/10; coverage 3/3.
/// - windowed-pop: 6 hits: HR 0.6; NDCG (5 + 0.6309) / 10; MRR 5.5 / 10; coverage 3/3.
/// - item-knn (cosine over all co-occurrences before t, the user's 10 most recent items as seeds,
///   seen items skipped): (2,2)@4: seed 1, c(1,2) = 1, n = 1:2, 2:1: [2]: hit 1. (3,1)@7: seed 3,
///   sim(3,1) = sim(3,2) = 1/sqrt(2*2): a tie, [1, 2]: hit 1. (2,3)@8: seeds 2, 1; 3 is the only
///   unseen candidate: [3]: hit 1. (4,2)@11: seed 3, sim(3,1) = 3/sqrt(4*3) = 0.87 above
///   sim(3,2) = 2/sqrt(4*2) = 0.71: [1, 2]: hit 2. The other six events have no scored item and
///   get global-pop's list: (2,1)@3 and (1,3)@6 hit 1, (4,3)@10 hits 2, (1,1)@1 and (1,2)@2 are
///   empty, (3,3)@5 misses. So 7 hits, 5 at rank 1: the metrics of global-pop. item-knn-recent
///   ranks no list differently here.
/// - beyond accuracy, for the blend's nine non-empty lists ([1] at 2 s, [1, 2] at 3 s, [2] at
///   4 s, [1, 2] at 5 s, [2, 1] at 6 and 7 s, [3, 1] at 8 s, [1, 3] at 10 s, [1, 2] at 11 s),
///   with the evaluator's cosine over events before t: items 1 and 2 have the same users until
///   8 s (cos 1); at 8 s n_3 = 2 (users 1, 3), n_1 = 3, c(1, 3) = 2: cos = 2/sqrt(6); at 10 s
///   users 1-3 hold both 1 and 3: cos 1; at 11 s n_1 = 3, n_2 = 2: cos = 2/sqrt(6). Diversity
///   over the seven lists of two: 1 - (5 + 2 * 2/sqrt(6)) / 7. Novelty (-log2 of the item's
///   share of the events before t, per list the mean over its items): 0 at 2 s (item 1 has 1 of
///   1), 1 at 3 s, log2 3 at 4 s, 1 at 5 s, log2 2.5 at 6 s, log2 3 at 7 s, (log2 3.5 +
///   log2 7/3)/2 at 8 s, (log2 2.25 + log2 3)/2 at 10 s, (log2 2.5 + log2 5)/2 at 11 s; their
///   mean. Exposures: item 1 eight times, item 2 six, item 3 twice: sorted 2, 6, 8, Gini
///   ((2-4)*2 + (4-4)*6 + (6-4)*8) / (3*16) = 0.25.
/// - short-term and long-term: the same lists as the blend (every event is inside the 1 h
///   window, so the short-term and long-term preferences are equal).
#[test]
fn metrics_match_a_hand_computed_fixture() {
    let dir = scratch_dir("eval-fixture");
    let input = dir.join("events.csv");
    std::fs::write(&input, FIXTURE_EVENTS).unwrap();
    let pipeline = Pipeline::from_toml(FIXTURE_PIPELINE, "fixture").unwrap();
    let rank2 = 1.0 / 3f64.log2();
    for workers in [1, 3] {
        let report = evaluate(&pipeline, &options(&input, 1), config(workers)).unwrap().unwrap();
        let e = &report.evaluation;
        assert_eq!((e.counts.accepted, e.counts.skipped, e.counts.evaluated, e.catalogue), (11, 1, 10, 3));
        for name in ["blend", "short-term", "long-term"] {
            let s = &model(&report, name).overall;
            assert_eq!((s.events, s.hits), (10, 6), "{name}");
            close(s.hr, 0.6, name);
            close(s.ndcg, (3.0 + 3.0 * rank2) / 10.0, name);
            close(s.mrr, 0.45, name);
            close(s.no_list, 0.7, name);
            close(s.fallback, 0.7, name);
            close(s.fallback_hits, 4.0 / 6.0, name);
            close(s.coverage, 1.0, name);
            assert_eq!((s.from_time, s.to_time), (Some(1_000), Some(11_000)));
            close(s.diversity.unwrap(), 1.0 - (5.0 + 2.0 * 2.0 / 6f64.sqrt()) / 7.0, name);
            let log2 = f64::log2;
            let per_list = [
                0.0,
                1.0,
                log2(3.0),
                1.0,
                log2(2.5),
                log2(3.0),
                (log2(3.5) + log2(7.0 / 3.0)) / 2.0,
                (log2(2.25) + log2(3.0)) / 2.0,
                (log2(2.5) + log2(5.0)) / 2.0,
            ];
            close(s.novelty.unwrap(), per_list.iter().sum::<f64>() / 9.0, name);
            close(s.gini, 0.25, name);
        }
        let global = &model(&report, "global-pop").overall;
        assert_eq!(global.hits, 7);
        close(global.ndcg, (5.0 + 2.0 * rank2) / 10.0, "global ndcg");
        close(global.mrr, 0.6, "global mrr");
        close(global.no_list, 0.2, "global empty lists");
        close(global.coverage, 1.0, "global coverage");
        let windowed = &model(&report, "windowed-pop").overall;
        assert_eq!(windowed.hits, 6);
        close(windowed.ndcg, (5.0 + rank2) / 10.0, "windowed ndcg");
        close(windowed.mrr, 0.55, "windowed mrr");
        for name in ["item-knn", "item-knn-recent"] {
            let knn = &model(&report, name).overall;
            assert_eq!((knn.events, knn.hits), (10, 7), "{name}");
            close(knn.ndcg, (5.0 + 2.0 * rank2) / 10.0, name);
            close(knn.mrr, 0.6, name);
            close(knn.no_list, 0.2, name);
            close(knn.coverage, 1.0, name);
        }
    }
    // The replay is in event-time order whatever the file's order.
    let reversed = dir.join("reversed.csv");
    std::fs::write(&reversed, FIXTURE_EVENTS.lines().rev().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let sorted = evaluate(&pipeline, &options(&input, 3), config(1)).unwrap().unwrap();
    let from_reversed = evaluate(&pipeline, &options(&reversed, 3), config(1)).unwrap().unwrap();
    assert_eq!(sorted.evaluation, from_reversed.evaluation);
    // Warm-up: the first 5 accepted events are learned only; of the remaining six, (1,1)@9 is
    // skipped and the blend hits (3,1)@7, (4,3)@10 and (4,2)@11 at rank 2 and (2,3)@8 at rank 1.
    let report = evaluate(&pipeline, &EvalOptions { warmup: 0.5, ..options(&input, 1) }, config(1)).unwrap().unwrap();
    assert_eq!((report.evaluation.counts.warmup, report.evaluation.counts.evaluated), (5, 5));
    let blend = &model(&report, "blend").overall;
    assert_eq!(blend.hits, 4);
    close(blend.mrr, 2.5 / 5.0, "blend mrr after warm-up");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A small synthetic world: 400 users in 4 taste clusters over 24 categories, sessions of about
/// 8 events in one category, an event every 100 ms (20k events = 33 min), a 10 min short-term
/// window.
const PLANTED: &str = r#"
name = "planted"
[source]
kind = "file"
path = "planted.csv"
timestamp_unit = "ms"
[source.synth]
seed = 7
users = 400
items = 1200
categories = 24
clusters = 4
session_events = 8
spacing = "100ms"
jitter = "1s"
[time]
tick = "1s"
max_out_of_orderness = "2s"
[recommend]
k = 10
short_term = { kind = "sliding", size = "10m" }
long_term = "all"
alpha = 0.7
beta = 0.3
exclude = "seen"
history = 30
popular_window = "30m"
[recommend.similarity]
measure = "cosine"
min_support = 2
neighbours = 20
refresh = "60s"
"#;

/// Writes `events` events of the pipeline's generator as `user,item,category,action,ts` (ms).
fn generate(pipeline: &Pipeline, events: usize, path: &Path) {
    let mut synth = SynthSource::new(&pipeline.source.synth);
    let mut text = String::new();
    for _ in 0..events {
        let e = synth.next_event();
        let category = e.category.as_ref().map(ToString::to_string).unwrap_or_default();
        text.push_str(&format!("{},{},{},{},{}\n", e.user, e.item, category, e.action.name(), e.ts));
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn planted_sessions_and_taste_clusters_show_in_the_metrics() {
    let dir = scratch_dir("eval-planted");
    let input = dir.join("planted.csv");
    let pipeline = Pipeline::from_toml(PLANTED, "planted").unwrap();
    generate(&pipeline, 20_000, &input);
    // 5 slices of 4,000 events, 400 s each: the first ends before any event leaves the window.
    let report = evaluate(&pipeline, &options(&input, 5), config(2)).unwrap().unwrap();
    print!("{}", recflow::eval::report::table(&report));
    let hr = |name: &str| model(&report, name).overall.hr;
    let (blend, short, long, global) = (hr("blend"), hr("short-term"), hr("long-term"), hr("global-pop"));
    assert!(report.evaluation.counts.evaluated > 10_000, "{:?}", report.evaluation.counts);

    // Users' tastes and sessions are planted: the pipeline beats popularity by a wide margin.
    assert!(blend > 3.0 * global, "blend HR {blend} vs global popularity {global}");
    let ndcg = |name: &str| model(&report, name).overall.ndcg;
    assert!(ndcg("blend") > 3.0 * ndcg("global-pop"));
    assert!(hr("windowed-pop") < 0.1 && blend > 3.0 * hr("windowed-pop"));
    // A user's history carries their taste cluster: long-term alone also beats popularity widely.
    assert!(long > 2.5 * global, "long-term HR {long} vs global popularity {global}");
    // Sessions stay in one category, so the current session predicts the next item better than
    // the whole history, which spreads over the cluster's categories as it grows.
    assert!(short > long + 0.02, "short-term HR {short} vs long-term {long}");
    let slice_hr = |name: &str, slice: usize| model(&report, name).slices[slice].hr;
    // While no event has left the short-term window, short and long preferences are equal and
    // the three blends rank identically: they are the same dataflow with other weights.
    assert_eq!(slice_hr("short-term", 0), slice_hr("long-term", 0));
    assert_eq!(slice_hr("blend", 0), slice_hr("long-term", 0));
    let gap_first = slice_hr("short-term", 0) - slice_hr("long-term", 0);
    let gap_last = slice_hr("short-term", 4) - slice_hr("long-term", 4);
    assert!(gap_last > gap_first + 0.03, "the long-term list drifts as history grows: {gap_first} then {gap_last}");
    // The personalised lists reach far more of the catalogue than any popularity list.
    assert!(model(&report, "blend").overall.coverage > 5.0 * model(&report, "global-pop").overall.coverage);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn metrics_are_the_same_for_any_worker_count() {
    let dir = scratch_dir("eval-workers");
    let input = dir.join("planted.csv");
    let pipeline = Pipeline::from_toml(PLANTED, "planted").unwrap();
    generate(&pipeline, 9_000, &input);
    // 900 s of events: the last ones outlive the 10 min short-term window, so the variants differ.
    // A compared copy of the pipeline with only the short-term preference: the same lists as
    // the built-in short-term variant, so the same metrics.
    let short_only =
        Pipeline::from_toml(&PLANTED.replace("alpha = 0.7\nbeta = 0.3", "alpha = 1.0\nbeta = 0.0"), "b").unwrap();
    let options = EvalOptions { compare: vec![("short-only".into(), short_only)], warmup: 0.1, ..options(&input, 4) };
    let one = evaluate(&pipeline, &options, config(1)).unwrap().unwrap();
    let three = evaluate(&pipeline, &options, config(3)).unwrap().unwrap();
    assert_eq!(one.evaluation, three.evaluation);
    assert_eq!(one.evaluation.results.len(), 8);
    assert_eq!(model(&one, "short-only").overall, model(&one, "short-term").overall);
    assert_eq!(model(&one, "short-only").slices, model(&one, "short-term").slices);
    assert_ne!(model(&one, "blend").overall, model(&one, "short-term").overall);
    let _ = std::fs::remove_dir_all(&dir);
}

fn recflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_recflow"))
}

#[test]
fn command_line_prints_the_table_and_writes_csv_and_plot() {
    let dir = scratch_dir("eval-cli");
    let (pipeline, input, out) = (dir.join("fixture.toml"), dir.join("events.csv"), dir.join("out"));
    std::fs::write(&pipeline, FIXTURE_PIPELINE).unwrap();
    std::fs::write(&input, FIXTURE_EVENTS).unwrap();
    let run = recflow()
        .arg("eval")
        .arg(&pipeline)
        .arg("--input")
        .arg(format!("file:{}", input.display()))
        .args(["-k", "2", "--slices", "2", "-q", "--out"])
        .arg(&out)
        .output_within();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("| model | HR@2 | NDCG@2 | MRR@2 |"), "{stdout}");
    assert!(stdout.contains("| blend | 0.6000 |"), "{stdout}");
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], recflow::eval::report::CSV_HEADER);
    assert_eq!(lines.len(), 1 + 7 * 3, "7 models, each overall and 2 slices");
    assert!(lines[1].starts_with("blend,all,1,11,10,6,0.600000,"), "{}", lines[1]);
    assert!(lines
        .iter()
        .any(|l| l.starts_with("global-pop,all,1,11,10,7,0.700000,") && l.contains(",1.000000,0.200000,,,")));
    let latency = std::fs::read_to_string(out.join("latency.csv")).unwrap();
    let latency: Vec<&str> = latency.lines().collect();
    assert_eq!((latency.len(), latency[0]), (4, "slice,p50_ms,p90_ms,p99_ms"), "{latency:?}");
    assert!(latency[1].starts_with("all,") && latency[3].starts_with("2,"), "{latency:?}");
    let svg = std::fs::read_to_string(out.join("hr.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("HR@2 over the stream") && svg.contains("windowed-pop"));
    let tradeoff = std::fs::read_to_string(out.join("tradeoff.svg")).unwrap();
    assert!(tradeoff.starts_with("<svg") && tradeoff.contains("HR@2 against diversity"), "{tradeoff}");
    let labelled = |name: &str| tradeoff.lines().any(|line| line.trim() == name);
    assert!(labelled("blend") && labelled("item-knn"), "a labelled point per model: {tradeoff}");
    assert_eq!(tradeoff.matches("<circle").count(), 7, "one point per model: {tradeoff}");

    // Options out of range and pipelines without lists are refused with the fix.
    let refused = |args: &[&str], expected: &str| {
        let run = recflow().args(args).arg("--out").arg(&out).output_within();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success() && stderr.contains(expected), "{args:?}: {stderr}");
    };
    let (pipeline, input) = (pipeline.display().to_string(), format!("file:{}", input.display()));
    refused(&["eval", &pipeline, "--input", &input, "--warmup", "1.5"], "--warmup: must be a fraction in [0, 1)");
    refused(&["eval", &pipeline, "--input", &input, "-k", "0"], "-k: must be at least 1");
    refused(&["eval", "pipelines/hot-items.toml", "--input", &input], "has no [recommend] table");
    refused(&["eval", &pipeline, "--input", "file:/nonexistent/events.csv"], "cannot read input");
    // A compared pipeline replays this one's [time]: its refresh must fit this tick.
    let other = dir.join("other.toml");
    let other_toml = "[source]\ntimestamp_unit = \"ms\"\n[time]\ntick = \"500ms\"\n\
                      [recommend]\n[recommend.similarity]\nrefresh = \"1500ms\"\n";
    std::fs::write(&other, other_toml).unwrap();
    let other = other.display().to_string();
    refused(
        &["eval", &pipeline, "--input", &input, "--compare", &other],
        "model other: pipeline fixture with the [weights] and [recommend] of other: key `recommend.similarity.refresh`",
    );
    let _ = std::fs::remove_dir_all(&dir);
}
