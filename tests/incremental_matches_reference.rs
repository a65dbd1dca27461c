//! The incremental results equal a from-scratch reference model at every time, on random
//! out-of-order streams with late events, with 1 and 4 workers; and the changelog is identical for
//! any worker count.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::reference::{self, Timed};
use common::{recs_list, run_lines};
use recflow::decode::Decoder;
use recflow::event::{Event, Id};
use recflow::source::synth::SplitMix;
use recflow::Pipeline;
use serde_json::Value;

const SLIDING: &str = r#"
[time]
tick = "1s"
max_out_of_orderness = "3s"
allowed_lateness = "2s"
[recommend]
k = 3
short_term = { kind = "sliding", size = "20s" }
long_term = "120s"
alpha = 0.7
beta = 0.3
top_preferences = 3
exclude = "bought"
history = 4
popular_window = "30s"
[recommend.similarity]
measure = "cosine"
min_support = 1
neighbours = 3
refresh = "10s"
[hot_items]
actions = ["view", "cart"]
size = "30s"
slide = "10s"
top_n = 2
"#;

const TUMBLING: &str = r#"
[time]
tick = "2s"
max_out_of_orderness = "2s"
allowed_lateness = "0s"
[weights]
view = 1.0
cart = 2.5
fav = 0.5
buy = 4.0
[recommend]
k = 4
short_term = { kind = "tumbling", size = "30s" }
long_term = "all"
alpha = 1.0
beta = 0.25
top_preferences = 4
exclude = "seen"
history = 5
popular_window = "40s"
[recommend.similarity]
measure = "jaccard"
min_support = 2
neighbours = 4
refresh = "20s"
[hot_items]
actions = ["view"]
size = "20s"
slide = "20s"
top_n = 3
per_category = true
"#;

const SESSIONS: &str = r#"
[time]
tick = "1s"
max_out_of_orderness = "3s"
allowed_lateness = "4s"
[recommend]
k = 3
short_term = { kind = "session", gap = "6s" }
long_term = "90s"
alpha = 1.0
beta = 0.2
top_preferences = 3
exclude = "bought"
history = 4
popular_window = "30s"
[recommend.similarity]
min_support = 1
neighbours = 3
refresh = "10s"
[hot_items]
size = "30s"
slide = "10s"
"#;

/// What every pipeline here shares: millisecond CSV input, no status line.
const COMMON: &str = r#"
[source]
kind = "file"
path = "unused.csv"
timestamp_unit = "ms"
min_timestamp = 1000000
[output]
status_interval_secs = 0
"#;

/// A random CSV stream: a few users and items (integer and string ids), out of order, some
/// events inside the allowed lateness, some late, and a few malformed lines.
fn random_lines(seed: u64, count: usize) -> Vec<String> {
    let mut rng = SplitMix::new(seed);
    let users = ["1", "2", "3", "4", "5", "alice", "bob"];
    let items = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "x", "y"];
    let actions = ["pv", "pv", "pv", "view", "cart", "fav", "buy"];
    let mut clock: u64 = 1_000_000_000;
    let mut lines = Vec::with_capacity(count);
    for _ in 0..count {
        clock += rng.below(2_500);
        let roll = rng.unit();
        let ts = if roll < 0.15 {
            clock.saturating_sub(rng.below(6_000))
        } else if roll < 0.18 {
            clock.saturating_sub(20_000)
        } else {
            clock
        };
        let user = users[rng.below(users.len() as u64) as usize];
        let item = items[rng.below(items.len() as u64) as usize];
        let category = item.len() % 3;
        let action = actions[rng.below(actions.len() as u64) as usize];
        if rng.unit() < 0.02 {
            lines.push(format!("{user},{item},{category},{action}"));
        } else {
            lines.push(format!("{user},{item},{category},{action},{ts}"));
        }
    }
    lines
}

fn accepted(pipeline: &Pipeline, lines: &[String]) -> (Vec<Timed>, usize) {
    let decoder = Decoder::new(&pipeline.source);
    let events: Vec<Event> = lines.iter().filter_map(|l| decoder.decode(l).ok()).collect();
    reference::admit(pipeline, &events)
}

fn id(value: &Value) -> Id {
    match value {
        Value::Number(n) => Id::Num(n.as_i64().unwrap()),
        Value::String(s) => Id::Text(s.clone()),
        other => panic!("not an id: {other}"),
    }
}

/// Every tick from the first event to the end: all times at which results may change.
fn checkpoints(pipeline: &Pipeline, accepted: &[Timed], end: u64) -> BTreeSet<u64> {
    let tick = pipeline.time.tick.millis();
    let first = accepted.iter().map(|t| t.time).min().unwrap_or(0);
    (first / tick..=end / tick).map(|k| k * tick).collect()
}

fn check(toml: &str, seed: u64, workers: usize) -> String {
    check_stream(COMMON, toml, &random_lines(seed, 260), seed, workers)
}

/// Like [`COMMON`], with a rating column.
const RATED: &str = r#"
[source]
kind = "file"
path = "unused.csv"
timestamp_unit = "ms"
min_timestamp = 1000000
columns = ["user", "item", "category", "action", "value", "ts"]
[output]
status_interval_secs = 0
"#;

/// [`random_lines`] with a rating column: about half the events become ratings of 1 to 5 stars
/// (in halves), the others have no value.
fn rated_lines(seed: u64, count: usize) -> Vec<String> {
    let mut rng = SplitMix::new(seed ^ 0x5ca1ab1e);
    random_lines(seed, count)
        .into_iter()
        .map(|line| {
            let mut fields: Vec<String> = line.split(',').map(String::from).collect();
            let last = fields.len() - 1;
            if fields.len() == 5 && rng.unit() < 0.5 {
                fields[3] = "rate".into();
                fields.insert(last, format!("{}", 1.0 + rng.below(9) as f64 / 2.0));
            } else {
                fields.insert(last, String::new());
            }
            fields.join(",")
        })
        .collect()
}

fn check_stream(common: &str, toml: &str, lines: &[String], seed: u64, workers: usize) -> String {
    let pipeline = Pipeline::from_toml(&format!("{common}{toml}"), "test").unwrap();
    let out = run_lines(&pipeline, lines, workers);
    let (accepted, late) = accepted(&pipeline, lines);
    let end = reference::end_time(&pipeline, &accepted);

    // Counts: every record is accepted, late or rejected.
    assert_eq!(out.metrics.records_in, lines.len() as u64);
    assert_eq!(out.metrics.accepted, accepted.len() as u64, "accepted events");
    assert_eq!(out.metrics.late, late as u64, "late events");
    assert_eq!(out.metrics.accepted + out.metrics.late + out.metrics.invalid, out.metrics.records_in);
    assert_eq!(out.dead_letters.len() as u64, out.metrics.late + out.metrics.invalid);
    assert!(late > 0, "the stream exercises lateness");

    // Recommendations: the changelog's state equals the reference at every checkpoint.
    let recs: Vec<&Value> = out.records.iter().filter(|r| r["type"] == "recs").collect();
    assert!(recs.windows(2).all(|w| w[0]["time"].as_u64() <= w[1]["time"].as_u64()), "records in time order");
    assert!(recs.iter().all(|r| r["time"].as_u64().unwrap() <= end), "no record after the end of the data");
    let mut state: BTreeMap<Id, Vec<(Id, i64, bool)>> = BTreeMap::new();
    let mut next = 0;
    let mut checked = 0;
    let mut reference = reference::RecsReference::new(&pipeline, &accepted);
    for at in checkpoints(&pipeline, &accepted, end) {
        while next < recs.len() && recs[next]["time"].as_u64().unwrap() <= at {
            let list: Vec<(Id, i64, bool)> =
                recs_list(recs[next]).into_iter().map(|(i, s, f)| (id(&i), s, f)).collect();
            let user = id(&recs[next]["user"]);
            if list.is_empty() {
                assert!(state.remove(&user).is_some(), "an empty list is reported only for a user who had one");
            } else {
                assert_ne!(state.insert(user, list.clone()), Some(list), "a record is reported only on change");
            }
            next += 1;
        }
        let expected = reference.lists_at(at);
        assert_eq!(&state, expected, "recommendations at time {at} (seed {seed}, {workers} workers)");
        checked += 1;
    }
    assert!(checked > 50 && !state.is_empty(), "the check covered real results");

    // The new-user list: at every tick, the changelog's last one is the popular pool's first k.
    let populars: Vec<&Value> = out.records.iter().filter(|r| r["type"] == "popular").collect();
    assert!(populars.iter().all(|r| r["time"].as_u64().unwrap() <= end), "no record after the end of the data");
    let (mut current, mut next, mut shown) = (Vec::new(), 0, 0);
    for at in checkpoints(&pipeline, &accepted, end) {
        while next < populars.len() && populars[next]["time"].as_u64().unwrap() <= at {
            let list: Vec<(Id, i64, bool)> =
                recs_list(populars[next]).into_iter().map(|(i, s, f)| (id(&i), s, f)).collect();
            assert!(list.iter().all(|(_, score, fallback)| *score == 0 && *fallback), "popular items are fill-ins");
            let items: Vec<Id> = list.into_iter().map(|(item, _, _)| item).collect();
            assert_ne!(items, current, "a record is reported only on change");
            current = items;
            next += 1;
        }
        let expected = reference::new_user_list_at(&pipeline, &accepted, at);
        assert_eq!(current, expected, "the new-user list at time {at} (seed {seed}, {workers} workers)");
        shown += usize::from(!current.is_empty());
    }
    assert!(shown > 50 && next == populars.len(), "the check covered the new-user list");

    // Hot items: the last record per window is the from-scratch answer.
    let expected: BTreeMap<(u64, String), Vec<(Value, i64)>> = reference::hot_items(&pipeline, &accepted)
        .into_iter()
        .map(|((end, category), list)| {
            let category = category.map(|c| serde_json::to_value(c).unwrap().to_string()).unwrap_or_default();
            (
                (end, category),
                list.into_iter().map(|(item, count)| (serde_json::to_value(item).unwrap(), count)).collect(),
            )
        })
        .collect();
    assert_eq!(common::final_hot_items(&out.records), expected, "hot items (seed {seed}, {workers} workers)");
    out.changelog_text
}

#[test]
fn sliding_window_one_worker() {
    for seed in 0..3 {
        check(SLIDING, seed, 1);
    }
}

#[test]
fn sliding_window_four_workers_same_changelog() {
    for seed in 0..2 {
        let one = check(SLIDING, seed, 1);
        let four = check(SLIDING, seed, 4);
        assert_eq!(one, four, "changelog differs between 1 and 4 workers (seed {seed})");
    }
}

#[test]
fn tumbling_window_jaccard_per_category() {
    for seed in 10..12 {
        let one = check(TUMBLING, seed, 1);
        let four = check(TUMBLING, seed, 4);
        assert_eq!(one, four, "changelog differs between 1 and 4 workers (seed {seed})");
    }
}

#[test]
fn session_window_one_and_four_workers() {
    for seed in 20..23 {
        let one = check(SESSIONS, seed, 1);
        let four = check(SESSIONS, seed, 4);
        assert_eq!(one, four, "changelog differs between 1 and 4 workers (seed {seed})");
    }
}

/// Seeds chosen by recency: a user's most recently touched items, older ones weighted down.
fn recent_seeds(toml: &str) -> String {
    toml.replace("top_preferences = 3", "top_preferences = 3\nseeds = \"recent\"\nrecency_decay = 0.6")
}

/// Checks `toml` against the reference on each seed with 1 and 4 workers, and that both wrote
/// the same changelog.
fn check_one_and_four(toml: &str, seeds: std::ops::Range<u64>) {
    for seed in seeds {
        let one = check(toml, seed, 1);
        let four = check(toml, seed, 4);
        assert_eq!(one, four, "changelog differs between 1 and 4 workers (seed {seed})");
    }
}

#[test]
fn recent_seeds_sliding_window_one_and_four_workers() {
    check_one_and_four(&recent_seeds(SLIDING), 30..32);
}

#[test]
fn recent_seeds_session_window() {
    for seed in 40..42 {
        check(&recent_seeds(SESSIONS), seed, 1);
    }
}

/// Co-occurrence accumulated over the long-term horizon instead of within the sliding history.
fn horizon_pairs(toml: &str) -> String {
    toml.replace("history = ", "co_occurrence = \"horizon\"\nhistory = ")
}

#[test]
fn horizon_co_occurrence_sliding_window_one_and_four_workers() {
    check_one_and_four(&horizon_pairs(SLIDING), 50..53);
}

#[test]
fn horizon_co_occurrence_all_history_recent_seeds() {
    let tumbling = TUMBLING.replace("top_preferences = 4", "top_preferences = 3");
    check_one_and_four(&recent_seeds(&horizon_pairs(&tumbling)), 60..62);
}

/// Horizon pairs weighted down by how far apart their items entered.
/// [`random_lines`] over a catalogue of 90 items: items pair with dozens of others, so similarity
/// rows hold many more candidates than the neighbours they keep, as in real catalogues.
fn wide_lines(seed: u64, count: usize) -> Vec<String> {
    let mut rng = SplitMix::new(seed ^ 0x0a1de);
    random_lines(seed, count)
        .into_iter()
        .map(|line| {
            let mut fields: Vec<String> = line.split(',').map(String::from).collect();
            fields[1] = rng.below(90).to_string();
            fields.join(",")
        })
        .collect()
}

#[test]
fn long_similarity_rows_one_and_four_workers() {
    // Long horizons and histories, and pairs that expire: rows of dozens of candidates whose
    // counts rise and fall, each keeping its best 8.
    let toml = horizon_pairs(SLIDING)
        .replace("long_term = \"120s\"", "long_term = \"400s\"")
        .replace("history = 4", "history = 40")
        .replace("neighbours = 3", "neighbours = 8");
    for seed in 70..71 {
        let one = check_stream(COMMON, &toml, &wide_lines(seed, 700), seed, 1);
        let four = check_stream(COMMON, &toml, &wide_lines(seed, 700), seed, 4);
        assert_eq!(one, four, "changelog differs between 1 and 4 workers (seed {seed})");
    }
}

#[test]
fn decayed_horizon_pairs_one_and_four_workers() {
    let decayed = |toml: &str| horizon_pairs(toml).replace("history = ", "pair_decay = 0.7\nhistory = ");
    check_one_and_four(&decayed(SLIDING), 70..72);
    for seed in 70..72 {
        check(&decayed(TUMBLING), seed, 1);
    }
}

/// Ratings centred at 2.5 stars: a rating at or below it is no positive preference, so it never
/// seeds a list (it still pairs and, under `seen`, excludes).
#[test]
fn centred_ratings_one_and_four_workers() {
    let centred = |toml: &str| format!("{toml}\n[weights]\nrate = 1.0\nrating_offset = 2.5\n");
    let sliding = centred(&recent_seeds(SLIDING));
    let sessions = centred(&SESSIONS.replace("exclude = \"bought\"", "exclude = \"seen\""));
    for (toml, seeds) in [(&sliding, 80..82), (&sessions, 82..83)] {
        for seed in seeds {
            let lines = rated_lines(seed, 260);
            let one = check_stream(RATED, toml, &lines, seed, 1);
            let four = check_stream(RATED, toml, &lines, seed, 4);
            assert_eq!(one, four, "changelog differs between 1 and 4 workers (seed {seed})");
        }
    }
}

/// The asymmetric cosine, damping popular neighbours (0.3) and favouring them (0.9).
#[test]
fn asymmetric_cosine_one_and_four_workers() {
    for (asymmetry, seeds) in [(0.3, 90..92), (0.9, 92..93)] {
        let toml = horizon_pairs(SLIDING).replace("measure = \"cosine\"", &format!("asymmetry = {asymmetry}"));
        check_one_and_four(&toml, seeds);
    }
}

/// Similarities of pairs with little support shrunk towards 0, with Jaccard and with horizon
/// pairs.
#[test]
fn shrunk_similarity_one_and_four_workers() {
    let shrunk = |toml: &str| toml.replace("min_support = ", "shrinkage = 2.5\nmin_support = ");
    check_one_and_four(&shrunk(&horizon_pairs(SLIDING)), 110..112);
    check(&shrunk(TUMBLING), 112, 1);
}

/// A popularity prior: pool items gain score by their windowed counts, and items only the
/// prior scores are marked as fill-ins.
#[test]
fn popularity_prior_one_and_four_workers() {
    let prior = |toml: &str, weight: f64| {
        toml.replace("popular_window = ", &format!("popularity_prior = {weight}\npopular_window = "))
    };
    check_one_and_four(&prior(&recent_seeds(SLIDING), 0.3), 100..102);
    for seed in 102..104 {
        check(&prior(SESSIONS, 2.0), seed, 1);
    }
}

/// The re-ranks: maximal marginal relevance for variety, and the long-tail demotion of popular
/// items, alone and together.
#[test]
fn diversity_and_long_tail_one_and_four_workers() {
    let with = |toml: &str, keys: &str| toml.replace("popular_window = ", &format!("{keys}\npopular_window = "));
    let wide = SLIDING.replace("k = 3", "k = 4").replace("neighbours = 3", "neighbours = 6");
    check_one_and_four(&with(&recent_seeds(&wide), "diversity = 0.5"), 120..122);
    check_one_and_four(&with(&wide, "long_tail = 0.6"), 122..123);
    for seed in 123..125 {
        check(&with(&horizon_pairs(&wide), "diversity = 0.3\nlong_tail = 1.0\npopularity_prior = 0.2"), seed, 1);
    }
}

/// [`random_lines`] whose users join over time: the `n`-th line's user is one of the first
/// `1 + 24 n / count` of 25, so the number of users keeps growing.
fn joining_lines(seed: u64, count: usize) -> Vec<String> {
    let mut rng = SplitMix::new(seed ^ 0x70b);
    random_lines(seed, count)
        .into_iter()
        .enumerate()
        .map(|(n, line)| {
            let (_, rest) = line.split_once(',').expect("a user field");
            format!("u{},{rest}", rng.below(1 + (24 * n / count) as u64))
        })
        .collect()
}

/// Only pairs that co-occur more than chance would have them, by a log-likelihood ratio: as
/// users join (which alone can make a pair significant) and as they leave the horizon; with
/// horizon pairs and with histories (Jaccard).
#[test]
fn significant_pairs_one_and_four_workers() {
    let significant = |toml: &str| toml.replace("min_support = ", "min_llr = 1.5\nmin_support = ");
    for seed in 130..132 {
        let lines = joining_lines(seed, 300);
        let toml = significant(&horizon_pairs(SLIDING));
        let one = check_stream(COMMON, &toml, &lines, seed, 1);
        let four = check_stream(COMMON, &toml, &lines, seed, 4);
        assert_eq!(one, four, "changelog differs between 1 and 4 workers (seed {seed})");
    }
    check_one_and_four(&significant(&horizon_pairs(SLIDING)), 132..133);
    for seed in 133..135 {
        check(&significant(TUMBLING), seed, 1);
    }
}

/// Only the pairs the Benjamini-Hochberg procedure accepts at a false discovery rate, over the
/// catalogue: as users join and leave the horizon (which moves every p-value), with the
/// log-likelihood test too, and with histories.
#[test]
fn false_discovery_rate_one_and_four_workers() {
    let controlled = |toml: &str, rate: &str| {
        toml.replace("min_support = ", &format!("false_discovery_rate = {rate}\nmin_support = "))
    };
    for seed in 136..138 {
        let lines = joining_lines(seed, 300);
        let toml = controlled(&horizon_pairs(SLIDING), "0.5");
        let one = check_stream(COMMON, &toml, &lines, seed, 1);
        let four = check_stream(COMMON, &toml, &lines, seed, 4);
        assert_eq!(one, four, "changelog differs between 1 and 4 workers (seed {seed})");
    }
    let both_tests =
        controlled(&horizon_pairs(SLIDING), "0.8").replace("min_support = ", "min_llr = 1.5\nmin_support = ");
    check_one_and_four(&both_tests, 138..139);
    check(&controlled(TUMBLING, "0.5"), 139, 1);
}

/// The popular pool refreshed every tick rather than with the similarity: lists are filled, and
/// users without one answered, from the fresher pool.
#[test]
fn popular_pool_refreshed_every_tick_one_and_four_workers() {
    let every_tick = |toml: &str, tick: &str| {
        toml.replace("popular_window = ", &format!("popular_refresh = \"{tick}\"\npopular_window = "))
    };
    check_one_and_four(&every_tick(SLIDING, "1s"), 140..141);
    check(&every_tick(TUMBLING, "2s"), 141, 1);
}

/// [`random_lines`] with timestamps from the future: about one line in 40 is stamped ten days
/// ahead (poison), and at a third and at two thirds of the stream event time jumps a minute ahead
/// for good (a gap in the data).
fn jumping_lines(seed: u64, count: usize) -> Vec<String> {
    let mut rng = SplitMix::new(seed ^ 0xf07);
    let mut shift = 0;
    random_lines(seed, count)
        .into_iter()
        .enumerate()
        .map(|(n, line)| {
            if n == count / 3 || n == 2 * count / 3 {
                shift += 60_000;
            }
            let fields: Vec<&str> = line.split(',').collect();
            let Some(ts) = fields.get(4).and_then(|ts| ts.parse::<u64>().ok()) else { return line };
            let ts = if rng.unit() < 0.025 { ts + 864_000_000 } else { ts + shift };
            format!("{},{ts}", fields[..4].join(","))
        })
        .collect()
}

/// A record stamped far beyond the event time seen so far waits for the records after it: poison
/// is dead-lettered as `future` and moves nothing, a real jump is taken once confirmed.
#[test]
fn far_future_timestamps_one_and_four_workers() {
    let toml = SLIDING.replace("tick = \"1s\"", "tick = \"1s\"\nmax_future = \"30s\"");
    for seed in 140..142 {
        let lines = jumping_lines(seed, 300);
        let pipeline = Pipeline::from_toml(&format!("{COMMON}{toml}"), "test").unwrap();
        let (accepted, late) = accepted(&pipeline, &lines);
        let decoded = lines.iter().filter(|l| Decoder::new(&pipeline.source).decode(l).is_ok()).count();
        let future = decoded - accepted.len() - late;
        assert!(future >= 3, "the stream holds poison (seed {seed}): {future}");
        // Two thirds of the stream lie beyond the jumps: most events are accepted only if they were taken.
        assert!(accepted.len() + late > decoded * 3 / 4, "the jumps were taken (seed {seed})");
        let one = check_stream(COMMON, &toml, &lines, seed, 1);
        let four = check_stream(COMMON, &toml, &lines, seed, 4);
        assert_eq!(one, four, "changelog differs between 1 and 4 workers (seed {seed})");
    }
}

/// [`rated_lines`] on three items, every rating at or near the bound on values (±1,000,000):
/// with the largest weights, ten ratings of one item sum past 64 bits.
fn extreme_lines(seed: u64, count: usize) -> Vec<String> {
    let mut rng = SplitMix::new(seed ^ 0xb16b00b5);
    let values = ["1000000", "999999.999", "-1000000", "0.001"];
    rated_lines(seed, count)
        .into_iter()
        .map(|line| {
            let mut fields: Vec<String> = line.split(',').map(String::from).collect();
            fields[1] = (fields[1].len() % 3).to_string();
            if fields.len() == 6 && fields[3] == "rate" {
                fields[4] = values[rng.below(values.len() as u64) as usize].to_string();
            }
            fields.join(",")
        })
        .collect()
}

/// Values and weights at their bounds: preferences beyond 64 bits are summed exactly, seed with
/// the largest seed weight, and rank as the reference says, on 1 and 4 workers.
#[test]
fn values_and_weights_at_their_bounds_one_and_four_workers() {
    let toml = SLIDING.replace("alpha = 0.7", "alpha = 1000").replace("beta = 0.3", "beta = 1000")
        + "\n[weights]\nrate = 1000\nview = 1000\n";
    for seed in 130..132 {
        let lines = extreme_lines(seed, 260);
        let one = check_stream(RATED, &toml, &lines, seed, 1);
        let four = check_stream(RATED, &toml, &lines, seed, 4);
        assert_eq!(one, four, "changelog differs between 1 and 4 workers (seed {seed})");
    }
}
