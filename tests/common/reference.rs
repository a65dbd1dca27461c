//! A from-scratch reference model of recflow's semantics, written independently of the dataflow:
//! given the input in arrival order, it computes each user's list and each window's hot items at
//! any time by scanning all events.

use std::collections::{BTreeMap, BTreeSet};

use recflow::event::{Action, Event, Id};
use recflow::spec::{CoOccurrence, Exclude, Horizon, Measure, Pipeline, RecommendSpec, Seeds, ShortTermWindow};

/// An accepted event with the dataflow time it entered at.
#[derive(Clone, Debug)]
pub struct Timed {
    pub event: Event,
    pub time: u64,
}

fn ceil_to(t: u64, step: u64) -> u64 {
    t.div_ceil(step) * step
}

/// The events accepted by the watermark rules, and how many were late.
///
/// An event more than `max_future` beyond the largest time seen waits: it is accepted with the
/// next two events if both are also that far ahead and not more than `max_future` before it,
/// and dropped (a `future` dead letter) if an event in normal time, one too far before it, or
/// the end of the input comes first.
pub fn admit(pipeline: &Pipeline, events: &[Event]) -> (Vec<Timed>, usize) {
    let tick = pipeline.time.tick.millis();
    let ooo = pipeline.time.max_out_of_orderness.millis();
    let lateness = pipeline.time.allowed_lateness.millis();
    let max_future = pipeline.time.max_future.millis();
    let mut max_seen: Option<u64> = None;
    let mut accepted = Vec::new();
    let mut late = 0;
    let mut waiting: Vec<&Event> = Vec::new();
    let mut take = |event: &Event, max_seen: &mut Option<u64>| {
        let watermark = max_seen.map_or(0, |m| m.saturating_sub(ooo));
        if max_seen.is_some() && event.ts + lateness < watermark {
            late += 1;
            return;
        }
        accepted.push(Timed { event: event.clone(), time: ceil_to(event.ts.max(watermark), tick) });
        *max_seen = Some(max_seen.map_or(event.ts, |m| m.max(event.ts)));
    };
    for event in events {
        let ahead = matches!((max_seen, max_future), (Some(seen), Some(bound)) if event.ts > seen + bound);
        if !ahead {
            waiting.clear();
            take(event, &mut max_seen);
            continue;
        }
        let bound = max_future.unwrap();
        if waiting.first().is_some_and(|first| event.ts + bound < first.ts) {
            waiting.clear();
        }
        waiting.push(event);
        if waiting.len() == 3 {
            for event in waiting.drain(..) {
                take(event, &mut max_seen);
            }
        }
    }
    (accepted, late)
}

/// The time final results are reported as of: the last tick rounded up to the refresh, plus two
/// refreshes for the staggered phases to take every event in.
pub fn end_time(pipeline: &Pipeline, accepted: &[Timed]) -> u64 {
    let tick = pipeline.time.tick.millis();
    let refresh = pipeline.recommend.as_ref().map(|r| r.similarity.refresh.millis());
    let last = accepted.iter().map(|t| t.event.ts).max().unwrap_or(0);
    ceil_to(ceil_to(last, tick), refresh.unwrap_or(tick)) + refresh.map_or(0, |r| 2 * r)
}

/// The last refresh time of `id` at or before `at` (its phase plus a multiple of the refresh), if
/// there has been one.
fn last_refresh(id: &Id, at: u64, refresh: u64, tick: u64) -> Option<u64> {
    let phase = recflow::dataflow::similarity::refresh_phase(id, refresh, tick);
    (at >= phase).then(|| (at - phase) / refresh * refresh + phase)
}

fn weight(pipeline: &Pipeline, event: &Event) -> i64 {
    let w = &pipeline.weights;
    let base = match event.action {
        Action::View => w.view,
        Action::Cart => w.cart,
        Action::Fav => w.fav,
        Action::Buy => w.buy,
        Action::Rate => w.rate,
    };
    let base = (base * 1000.0).round() as i64;
    let offset = (w.rating_offset * 1000.0).round() as i64;
    let weighted = match (event.action, event.value) {
        (Action::Rate, Some(v)) => base * (v - offset) / 1000,
        _ => base,
    };
    weighted.max(0)
}

/// Whether an event's long-term contribution is still present at `at`.
fn in_horizon(horizon: Horizon, ts: u64, tick: u64, at: u64) -> bool {
    match horizon {
        Horizon::All => true,
        Horizon::Retention(span) => ceil_to(ts + span.millis(), tick) > at,
    }
}

/// A user's inputs to scoring: top preferences (item, preference) and excluded items.
type Inputs = (Vec<(Id, i64)>, BTreeSet<Id>);

/// Similarity rows and the popular pool.
type Tables = (BTreeMap<Id, Vec<(i64, Id)>>, Vec<(i64, Id)>);

/// Each user's scoring inputs at `at`: preferences and exclusions from every event still inside
/// its windows.
fn inputs_at(pipeline: &Pipeline, accepted: &[Timed], at: u64) -> BTreeMap<Id, Inputs> {
    let spec = pipeline.recommend.as_ref().expect("pipeline recommends");
    let tick = pipeline.time.tick.millis();
    let alpha = (spec.alpha * 1000.0).round() as i64;
    let beta = (spec.beta * 1000.0).round() as i64;
    // Summed in 128 bits: no sum of accepted events overflows.
    let mut preference: BTreeMap<(Id, Id), i128> = BTreeMap::new();
    let mut excluded: BTreeSet<(Id, Id)> = BTreeSet::new();
    // The latest touch of each (user, item) in the long-term horizon, for recent seeds.
    let mut latest: BTreeMap<(Id, Id), u64> = BTreeMap::new();
    // With session windows: each user's events (ts, item, weight), for their current session.
    let mut sessions: BTreeMap<Id, Vec<(u64, Id, i64)>> = BTreeMap::new();
    for Timed { event, .. } in accepted.iter().filter(|t| t.time <= at) {
        let w = weight(pipeline, event);
        let key = (event.user.clone(), event.item.clone());
        let short_end = match spec.short_term {
            ShortTermWindow::Sliding { size } => Some(ceil_to(event.ts + size.millis(), tick)),
            ShortTermWindow::Tumbling { size } => Some(ceil_to((event.ts / size.millis() + 1) * size.millis(), tick)),
            ShortTermWindow::Session { .. } => {
                sessions.entry(event.user.clone()).or_default().push((event.ts, event.item.clone(), w));
                None
            }
        };
        let mut p: i128 = 0;
        if short_end.is_some_and(|end| end > at) {
            p += (alpha * w) as i128;
        }
        let long = in_horizon(spec.long_term, event.ts, tick, at);
        if long {
            p += (beta * w) as i128;
            let touch = latest.entry(key.clone()).or_insert(event.ts);
            *touch = (*touch).max(event.ts);
        }
        *preference.entry(key.clone()).or_default() += p;
        let rule = match spec.exclude {
            Exclude::Seen => true,
            Exclude::Bought => event.action == Action::Buy,
            Exclude::None => false,
        };
        if rule && long {
            excluded.insert(key);
        }
    }
    if let ShortTermWindow::Session { gap } = spec.short_term {
        let gap = gap.millis();
        for (user, mut events) in sessions {
            events.sort_by_key(|(ts, _, _)| *ts);
            let last = events.last().map(|(ts, _, _)| *ts).unwrap_or(0);
            if at >= ceil_to(last + gap, tick) {
                continue;
            }
            let mut later = last;
            for (ts, item, w) in events.into_iter().rev() {
                if later - ts >= gap {
                    break;
                }
                *preference.entry((user.clone(), item)).or_default() += (alpha * w) as i128;
                later = ts;
            }
        }
    }
    let mut preferred: BTreeMap<Id, Vec<(Id, i128)>> = BTreeMap::new();
    for ((user, item), p) in preference {
        if p > 0 {
            preferred.entry(user).or_default().push((item, p));
        }
    }
    let mut inputs: BTreeMap<Id, Inputs> = BTreeMap::new();
    for (user, item) in excluded {
        inputs.entry(user).or_default().1.insert(item);
    }
    // A preference seeds with a weight of at most 10^14 millionths (ranking by the whole sum).
    let seed_weight = |p: i128| p.min(100_000_000_000_000) as i64;
    for (user, mut seeds) in preferred {
        let weighted: Vec<(Id, i64)> = match spec.seeds {
            Seeds::Preference => {
                seeds.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                seeds.truncate(spec.top_preferences);
                seeds.into_iter().map(|(item, p)| (item, seed_weight(p))).collect()
            }
            Seeds::Recent => {
                let touched = |item: &Id| latest.get(&(user.clone(), item.clone())).copied().unwrap_or(0);
                seeds.sort_by(|a, b| touched(&b.0).cmp(&touched(&a.0)).then(a.0.cmp(&b.0)));
                seeds.truncate(spec.top_preferences);
                // The r-th most recent weighs decay^r (millionths, rounded down at every step).
                let decay = (spec.recency_decay * 1000.0).round() as i64;
                let mut factor: i64 = 1_000_000;
                let mut weighted = Vec::new();
                for (item, p) in seeds {
                    weighted.push((item, ((seed_weight(p) as i128 * factor as i128) / 1_000_000) as i64));
                    factor = factor * decay / 1000;
                }
                weighted.retain(|(_, p)| *p > 0);
                weighted
            }
        };
        inputs.entry(user).or_default().0 = weighted;
    }
    inputs
}

/// Similarity rows and the popular pool at `at`: each item's row as of its last phase time, from
/// every user's history as of the user's last phase time before that; the pool as of the last
/// multiple of its refresh.
fn tables_at(pipeline: &Pipeline, accepted: &[Timed], at: u64) -> Tables {
    let spec = pipeline.recommend.as_ref().expect("pipeline recommends");
    let tick = pipeline.time.tick.millis();
    let refresh = spec.similarity.refresh.millis();
    let at_refresh = at / pool_refresh(spec) * pool_refresh(spec);
    let mut popular: BTreeMap<Id, i64> = BTreeMap::new();
    let mut items: BTreeSet<Id> = BTreeSet::new();
    for Timed { event, time } in accepted {
        items.insert(event.item.clone());
        if *time <= at_refresh && ceil_to(event.ts + spec.popular_window.millis(), tick) > at_refresh {
            *popular.entry(event.item.clone()).or_default() += 1;
        }
    }
    // The table as of each item phase time, computed once per distinct time.
    let mut tables: BTreeMap<u64, BTreeMap<Id, Vec<(i64, Id)>>> = BTreeMap::new();
    let mut neighbours: BTreeMap<Id, Vec<(i64, Id)>> = BTreeMap::new();
    for item in items {
        let Some(as_of) = last_refresh(&item, at, refresh, tick) else { continue };
        let table = tables.entry(as_of).or_insert_with(|| rows_as_of(pipeline, accepted, as_of));
        if let Some(row) = table.get(&item) {
            neighbours.insert(item, row.clone());
        }
    }
    let mut pool: Vec<(i64, Id)> = popular.into_iter().map(|(i, c)| (c, i)).collect();
    pool.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    pool.truncate(spec.k * 4);
    (neighbours, pool)
}

/// Every item's row from the histories as of `as_of`: each user's as of their last phase time at
/// or before it.
fn rows_as_of(pipeline: &Pipeline, accepted: &[Timed], as_of: u64) -> BTreeMap<Id, Vec<(i64, Id)>> {
    let spec = pipeline.recommend.as_ref().expect("pipeline recommends");
    let tick = pipeline.time.tick.millis();
    let refresh = spec.similarity.refresh.millis();
    let mut users_of: BTreeMap<Id, i64> = BTreeMap::new();
    let mut both: BTreeMap<(Id, Id), i64> = BTreeMap::new();
    // Users holding any item: the population of the significance test.
    let mut population = 0i64;
    // Pair counts in units: one user's pair counts 1 within histories, 1000 (thousandths, times
    // the pair's decay) over the horizon.
    let unit = match spec.co_occurrence {
        CoOccurrence::History => 1,
        CoOccurrence::Horizon => 1000,
    };
    let mut count = |items: &[Id], pairs: &[WeightedPair]| {
        population += i64::from(!items.is_empty());
        for i in items {
            *users_of.entry(i.clone()).or_default() += 1;
        }
        for (pair, weight) in pairs {
            *both.entry(pair.clone()).or_default() += weight;
        }
    };
    match spec.co_occurrence {
        CoOccurrence::History => {
            let mut last_touch: BTreeMap<(Id, Id), u64> = BTreeMap::new();
            for Timed { event, time } in accepted {
                let Some(user_at) = last_refresh(&event.user, as_of, refresh, tick) else { continue };
                if *time <= user_at && in_horizon(spec.long_term, event.ts, tick, user_at) {
                    let entry = last_touch.entry((event.user.clone(), event.item.clone())).or_insert(0);
                    *entry = (*entry).max(event.ts);
                }
            }
            let mut by_user: BTreeMap<Id, Vec<(u64, Id)>> = BTreeMap::new();
            for ((user, item), ts) in last_touch {
                by_user.entry(user).or_default().push((ts, item));
            }
            for (_, mut touched) in by_user {
                touched.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                let items: Vec<Id> = touched.into_iter().take(spec.history).map(|(_, i)| i).collect();
                let pairs: Vec<WeightedPair> = items
                    .iter()
                    .flat_map(|i| items.iter().filter(move |j| *j != i).map(move |j| ((i.clone(), j.clone()), 1)))
                    .collect();
                count(&items, &pairs);
            }
        }
        CoOccurrence::Horizon => {
            let mut by_user: BTreeMap<Id, Vec<(u64, u64, Id)>> = BTreeMap::new();
            for Timed { event, time } in accepted {
                by_user.entry(event.user.clone()).or_default().push((*time, event.ts, event.item.clone()));
            }
            for (user, touches) in by_user {
                let Some(user_at) = last_refresh(&user, as_of, refresh, tick) else { continue };
                let (items, pairs) = horizon_pairs(pipeline, &user, &touches, user_at);
                count(&items, &pairs);
            }
        }
    }
    // Per row, its candidates' similarity in millionths, item and p-value.
    let mut candidates: BTreeMap<Id, Vec<(i64, Id, f64)>> = BTreeMap::new();
    let population = leading_six_bits(population) as f64;
    // The family of the false discovery rate: every other item some user holds.
    let catalogue = users_of.values().filter(|n| **n > 0).count() as i64;
    let family = (leading_six_bits(catalogue) - 1).max(1) as f64;
    for ((i, j), c) in both {
        if c < spec.similarity.min_support as i64 * unit {
            continue;
        }
        let c = c as f64 / unit as f64;
        let (ni, nj) = (users_of[&i] as f64, users_of[&j] as f64);
        if spec.similarity.min_llr > 0.0
            && (c * population <= ni * nj || g_squared(c, ni, nj, population) < spec.similarity.min_llr)
        {
            continue;
        }
        let a = spec.similarity.asymmetry;
        let s = match spec.similarity.measure {
            Measure::Cosine if a == 0.5 => c / (ni * nj).sqrt(),
            Measure::Cosine => c / (ni.powf(a) * nj.powf(1.0 - a)),
            Measure::Jaccard => c / (ni + nj - c),
        };
        let shrink = spec.similarity.shrinkage;
        let s = if shrink > 0.0 { s * (c / (c + shrink)) } else { s };
        let p = if c * population <= ni * nj {
            1.0
        } else {
            recflow::dataflow::similarity::chi_square_tail(g_squared(c, ni, nj, population))
        };
        candidates.entry(i).or_default().push(((s * 1e6).round() as i64, j, p));
    }
    let rate = spec.similarity.false_discovery_rate;
    let mut neighbours: BTreeMap<Id, Vec<(i64, Id)>> = BTreeMap::new();
    for (i, mut row) in candidates {
        if rate > 0.0 {
            // Benjamini-Hochberg: the largest rank r whose p-value is at most r * rate / family
            // sets the cut, and every candidate up to it is accepted.
            let mut p_values: Vec<f64> = row.iter().map(|(_, _, p)| *p).collect();
            p_values.sort_by(|a, b| a.partial_cmp(b).expect("a p-value"));
            let mut accepted = None;
            for (rank, p) in (1..).zip(&p_values) {
                if *p < 1.0 && *p <= rank as f64 * rate / family {
                    accepted = Some(*p);
                }
            }
            row.retain(|(_, _, p)| accepted.is_some_and(|cut| *p <= cut));
        }
        if !row.is_empty() {
            neighbours.insert(i, row.into_iter().map(|(s, j, _)| (s, j)).collect());
        }
    }
    for list in neighbours.values_mut() {
        list.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        list.truncate(spec.similarity.neighbours);
    }
    neighbours
}

/// `n` with every binary digit below its 6 leading ones cleared.
fn leading_six_bits(n: i64) -> i64 {
    let mut kept = n;
    let mut low = 1;
    while kept >= 64 {
        kept >>= 1;
        low <<= 1;
    }
    kept * low
}

/// Dunning's log-likelihood ratio of two items' table of users: `c` hold both, `ni` and `nj` hold
/// each, `u` in all: `2 Σ k ln(k / expected)` over the four cells.
fn g_squared(c: f64, ni: f64, nj: f64, u: f64) -> f64 {
    let cells = [c, ni - c, nj - c, u - ni - nj + c].map(|k| k.max(0.0));
    let (rows, columns) = ([cells[0] + cells[1], cells[2] + cells[3]], [cells[0] + cells[2], cells[1] + cells[3]]);
    let total: f64 = cells.iter().sum();
    let mut sum = 0.0;
    for (at, k) in cells.into_iter().enumerate() {
        let expected = rows[at / 2] * columns[at % 2] / total;
        if k > 0.0 {
            sum += k * (k / expected).ln();
        }
    }
    2.0 * sum
}

/// An ordered pair of items and what it counts.
type WeightedPair = ((Id, Id), i64);

/// With horizon co-occurrence, one user's items in the horizon and their ordered pairs as of the
/// user's phase time `user_at`, from their touches `(dataflow time, ts, item)`.
///
/// Replays the user's phase times: at each, the items whose touches are all gone leave, and the
/// items that now have a touch and had none enter, earliest latest touch first (then item), each
/// taking the next entry number. At `user_at` two items pair when both are in the horizon and
/// their entry numbers are `d <= history` apart; the pair counts `1000 * pair_decay^(d-1)`
/// (rounded down at every step).
fn horizon_pairs(
    pipeline: &Pipeline,
    user: &Id,
    touches: &[(u64, u64, Id)],
    user_at: u64,
) -> (Vec<Id>, Vec<WeightedPair>) {
    let spec = pipeline.recommend.as_ref().expect("pipeline recommends");
    let tick = pipeline.time.tick.millis();
    let refresh = spec.similarity.refresh.millis();
    let next = |t: u64| recflow::dataflow::similarity::next_refresh(user, t, refresh, tick);
    let expiry = |ts: u64| match spec.long_term {
        Horizon::All => u64::MAX,
        Horizon::Retention(span) => ceil_to(ts + span.millis(), tick),
    };
    let mut batches: BTreeSet<u64> = BTreeSet::new();
    for (time, ts, _) in touches {
        batches.insert(next(*time));
        if expiry(*ts) != u64::MAX {
            batches.insert(next((*time).max(expiry(*ts))));
        }
    }
    let mut entered: BTreeMap<Id, u64> = BTreeMap::new();
    let mut entries = 0;
    for b in batches.into_iter().filter(|b| *b <= user_at) {
        let mut latest: BTreeMap<Id, u64> = BTreeMap::new();
        for (_, ts, item) in touches.iter().filter(|(time, ts, _)| *time <= b && expiry(*ts) > b) {
            let l = latest.entry(item.clone()).or_insert(*ts);
            *l = (*l).max(*ts);
        }
        entered.retain(|item, _| latest.contains_key(item));
        let mut entering: Vec<(u64, Id)> =
            latest.into_iter().filter(|(item, _)| !entered.contains_key(item)).map(|(i, l)| (l, i)).collect();
        entering.sort();
        for (_, item) in entering {
            entered.insert(item, entries);
            entries += 1;
        }
    }
    let decay = (spec.pair_decay * 1000.0).round() as i64;
    let weight = |apart: u64| (1..apart).fold(1000, |w, _| w * decay / 1000);
    let mut pairs = Vec::new();
    for (i, a) in &entered {
        for (j, b) in &entered {
            let apart = a.abs_diff(*b);
            if i != j && apart <= spec.history as u64 && weight(apart) > 0 {
                pairs.push(((i.clone(), j.clone()), weight(apart)));
            }
        }
    }
    (entered.into_keys().collect(), pairs)
}

/// The scoring rules beyond similarity sums, in thousandths.
#[derive(Clone, Copy)]
struct Rules {
    prior: i64,
    long_tail: i64,
    diversity: i64,
}

/// Greedy maximal marginal relevance over `scored` (score desc, item asc): `k` picks, each the
/// candidate with the highest `(1000 - d) * (score * 1e6 / best score) - d * redundancy`, ties to
/// the smaller item; a pick raises every remaining candidate's redundancy to the similarity its
/// row gives that candidate.
fn most_marginal_relevance(
    scored: Vec<(i64, Id, bool)>,
    k: usize,
    d: i64,
    neighbours: &BTreeMap<Id, Vec<(i64, Id)>>,
) -> Vec<(i64, Id, bool)> {
    let best = scored.first().map_or(1, |c| c.0.max(1)) as i128;
    let mut left: Vec<((i64, Id, bool), i64)> = scored.into_iter().map(|c| (c, 0)).collect();
    let mut picked = Vec::new();
    while picked.len() < k && !left.is_empty() {
        let gain = |((s, _, _), r): &((i64, Id, bool), i64)| {
            (1000 - d as i128) * (*s as i128 * 1_000_000 / best) - d as i128 * *r as i128
        };
        let mut at = 0;
        for i in 1..left.len() {
            let (a, b) = (gain(&left[i]), gain(&left[at]));
            if a > b || (a == b && left[i].0 .1 < left[at].0 .1) {
                at = i;
            }
        }
        let (choice, _) = left.remove(at);
        for (similarity, j) in neighbours.get(&choice.1).map(Vec::as_slice).unwrap_or(&[]) {
            for (candidate, r) in left.iter_mut() {
                if &candidate.1 == j {
                    *r = (*r).max(*similarity);
                }
            }
        }
        picked.push(choice);
    }
    picked
}

/// A user's list from their inputs and the tables: the seeds' similarity sums plus, with a
/// popularity prior (thousandths), `prior * Σ seed weights * count / top count` for each pool
/// item; an item only the prior scores is marked as a fill-in. Pool items then lose
/// `long_tail * count / top count` of each part, and with `diversity` the list is re-ranked by
/// maximal marginal relevance among the `4k` best.
fn rank(k: usize, rules: Rules, (seeds, excluded): &Inputs, (neighbours, pool): &Tables) -> Vec<(Id, i64, bool)> {
    let prior = rules.prior;
    if seeds.is_empty() {
        return Vec::new();
    }
    let mut score: BTreeMap<Id, (i64, i64)> = BTreeMap::new();
    for (i, p) in seeds {
        for (s, j) in neighbours.get(i).map(Vec::as_slice).unwrap_or(&[]) {
            score.entry(j.clone()).or_default().0 += ((*p as i128 * *s as i128) / 1_000_000) as i64;
        }
    }
    if prior > 0 {
        let total: i128 = seeds.iter().map(|(_, p)| *p as i128).sum();
        let top = pool.first().map_or(1, |(c, _)| *c as i128);
        for (count, item) in pool {
            // The prior's term is at most 2^61.
            let term = (prior as i128 * total * *count as i128 / (top * 1000)).min(1 << 61);
            score.entry(item.clone()).or_default().1 += term as i64;
        }
    }
    if rules.long_tail > 0 {
        let top = pool.first().map_or(1, |(c, _)| *c as i128);
        for (count, item) in pool {
            if let Some((s, p)) = score.get_mut(item) {
                for part in [s, p] {
                    *part -= (*part as i128 * rules.long_tail as i128 * *count as i128 / (top * 1000)) as i64;
                }
            }
        }
    }
    let mut scored: Vec<(i64, Id, bool)> = score
        .into_iter()
        .filter(|(j, (s, p))| s + p > 0 && !excluded.contains(j))
        .map(|(j, (s, p))| (s + p, j, s == 0))
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    if rules.diversity > 0 {
        scored.truncate(4 * k);
        scored = most_marginal_relevance(scored, k, rules.diversity, neighbours);
    }
    let mut list: Vec<(Id, i64, bool)> = scored.into_iter().take(k).map(|(s, j, fill)| (j, s, fill)).collect();
    for (_, item) in pool {
        if list.len() == k {
            break;
        }
        if !excluded.contains(item) && !list.iter().any(|(i, _, _)| i == item) {
            list.push((item.clone(), 0, true));
        }
    }
    list
}

/// Users' lists over time: a user's list is recomputed, with the tables of that moment, at each
/// tick where the user's inputs changed.
pub struct RecsReference<'a> {
    pipeline: &'a Pipeline,
    accepted: &'a [Timed],
    next_tick: u64,
    inputs: BTreeMap<Id, Inputs>,
    lists: BTreeMap<Id, Vec<(Id, i64, bool)>>,
}

impl<'a> RecsReference<'a> {
    /// A reference over the accepted events.
    pub fn new(pipeline: &'a Pipeline, accepted: &'a [Timed]) -> Self {
        let first = accepted.iter().map(|t| t.time).min().unwrap_or(0);
        RecsReference { pipeline, accepted, next_tick: first, inputs: BTreeMap::new(), lists: BTreeMap::new() }
    }

    /// Every user's list at `at` (users without a list are absent); calls must not go back in time.
    pub fn lists_at(&mut self, at: u64) -> &BTreeMap<Id, Vec<(Id, i64, bool)>> {
        let tick = self.pipeline.time.tick.millis();
        let spec = self.pipeline.recommend.as_ref().expect("pipeline recommends");
        let milli = |x: f64| (x * 1000.0).round() as i64;
        let rules = Rules {
            prior: milli(spec.popularity_prior),
            long_tail: milli(spec.long_tail),
            diversity: milli(spec.diversity),
        };
        let k = spec.k;
        while self.next_tick <= at {
            let now = self.next_tick;
            let inputs = inputs_at(self.pipeline, self.accepted, now);
            let changed: Vec<Id> = inputs
                .keys()
                .chain(self.inputs.keys())
                .filter(|u| inputs.get(*u) != self.inputs.get(*u))
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if !changed.is_empty() {
                let tables = tables_at(self.pipeline, self.accepted, now);
                for user in changed {
                    let list = inputs.get(&user).map(|i| rank(k, rules, i, &tables)).unwrap_or_default();
                    if list.is_empty() {
                        self.lists.remove(&user);
                    } else {
                        self.lists.insert(user, list);
                    }
                }
            }
            self.inputs = inputs;
            self.next_tick += tick;
        }
        &self.lists
    }
}

/// How often the popular pool is refreshed: `popular_refresh`, or with the similarity.
fn pool_refresh(spec: &RecommendSpec) -> u64 {
    spec.popular_refresh.unwrap_or(spec.similarity.refresh).millis()
}

/// The list for users without one of their own at `at`: the first `k` items of the popular pool
/// as of its last refresh, by count desc then item asc.
pub fn new_user_list_at(pipeline: &Pipeline, accepted: &[Timed], at: u64) -> Vec<Id> {
    let spec = pipeline.recommend.as_ref().expect("pipeline recommends");
    let tick = pipeline.time.tick.millis();
    let at_refresh = at / pool_refresh(spec) * pool_refresh(spec);
    let mut counts: BTreeMap<Id, i64> = BTreeMap::new();
    for Timed { event, time } in accepted {
        if *time <= at_refresh && ceil_to(event.ts + spec.popular_window.millis(), tick) > at_refresh {
            *counts.entry(event.item.clone()).or_default() += 1;
        }
    }
    let mut ranked: Vec<(i64, Id)> = counts.into_iter().map(|(item, count)| (-count, item)).collect();
    ranked.sort();
    ranked.into_iter().take(spec.k).map(|(_, item)| item).collect()
}

/// Final hot items per (window_end, category): every accepted event counted in its windows.
pub fn hot_items(
    pipeline: &Pipeline,
    accepted: &[Timed],
) -> BTreeMap<recflow::dataflow::hot_items::HotWindow, Vec<(Id, i64)>> {
    let spec = pipeline.hot_items.as_ref().expect("pipeline has hot items");
    let (size, slide) = (spec.size.millis(), spec.slide.millis());
    let mut counts: BTreeMap<(u64, Option<Id>), BTreeMap<Id, i64>> = BTreeMap::new();
    for Timed { event, .. } in accepted {
        if !spec.actions.contains(&event.action) {
            continue;
        }
        let category = if spec.per_category { event.category.clone() } else { None };
        // Windows [start, start + size) with start a multiple of slide that contain ts.
        let last_start = event.ts / slide * slide;
        let mut start = last_start as i128;
        while start > event.ts as i128 - size as i128 {
            let end = (start + size as i128) as u64;
            *counts.entry((end, category.clone())).or_default().entry(event.item.clone()).or_default() += 1;
            start -= slide as i128;
        }
    }
    counts
        .into_iter()
        .map(|(key, per_item)| {
            let mut ranked: Vec<(i64, Id)> = per_item.into_iter().map(|(i, c)| (c, i)).collect();
            ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            (key, ranked.into_iter().take(spec.top_n).map(|(c, i)| (i, c)).collect())
        })
        .collect()
}
