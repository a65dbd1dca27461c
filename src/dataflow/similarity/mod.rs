//! Item-to-item similarity from co-occurrence of items in users' touches, refreshed on a coarser
//! event-time cadence (every `refresh`), keeping the `neighbours` most similar items per item
//! (similarity desc, then item asc) among items sharing at least `min_support` users and, with
//! `min_llr`, co-occurring more than chance would have them ([`significant`]).
//!
//! **Staggered refreshes.** Every user and every item has a *phase*: a tick within the refresh
//! period, from the hash of its id ([`refresh_phase`]). A user's history takes in their touches
//! at the user's phase times, and an item's row is re-ranked at the item's phase times, so each
//! tick does about `tick / refresh` of a refresh's work instead of all of it at once. At any time
//! `t`, the row of item `i` is the from-scratch answer over the histories as of `i`'s last phase
//! time `p <= t`, each user's history as of that user's last phase time at or before `p`.
//!
//! Two operators keep it so with work proportional to what changed:
//!
//! 1. **Histories** (per user): from each user's item touches, the changes to co-occurrence pairs
//!    `(i, j)` and to item user counts `n_i`. With `co_occurrence = "history"`, pairs are those
//!    within the user's `history` most recently touched items (ties: item asc), and `n_i` counts
//!    the histories holding `i` (the self-join of histories, done in place). With `"horizon"`,
//!    each item the user starts touching takes the user's next entry number and pairs with the
//!    items in the horizon whose entry numbers are at most `history` below its own; a pair counts
//!    until either item leaves the horizon, and `n_i` counts the users with `i` in the horizon.
//!    Either way an event changes at most about `2 * history` pairs.
//! 2. **Rows** (per item, with all `n` and the number of users holding any item on every
//!    worker): co-occurrence rows `c(i, ·)`; at each refresh, re-ranks exactly the rows whose
//!    counts changed or whose items' `n` changed (found through a local reverse index), or every
//!    row when the significance test's population changed, and emits only the rows' changes.

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};

use differential_dataflow::Hashable;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Concat, Exchange as ExchangeOperator};
use timely::dataflow::Stream;

use super::preference::{decay_factors, Touches};
use super::ranking::keep_best;
use super::{Coll, Time};
use crate::checkpoint::rescale::{owned_entries, Owner, Place, Placed, Rescale};
use crate::checkpoint::shared::{MapSnapshot, SharedMap};
use crate::checkpoint::worker_state::{self, Freeze};
use crate::event::Id;
use crate::event_time::ceil_to;
use crate::progress::StreamEnd;
use crate::results::SCORE_SCALE;
use crate::schedule::{Due, Inbox};
use crate::spec::{CoOccurrence, Measure, SimilaritySpec};

mod rows;
use rows::{rank_rows, RowInput};

/// The phase of `id` within the refresh period: a multiple of `tick` below `refresh`, from the
/// id's hash (the same on every worker and process).
pub fn refresh_phase(id: &Id, refresh: Time, tick: Time) -> Time {
    let slots = (refresh / tick.max(1)).max(1);
    (id.hashed() % slots) * tick
}

/// The first refresh time of `id` at or after `t`.
pub fn next_refresh(id: &Id, t: Time, refresh: Time, tick: Time) -> Time {
    next_phase_time(refresh_phase(id, refresh, tick), t, refresh)
}

/// The first time at or after `t` that is `phase` within the refresh period.
fn next_phase_time(phase: Time, t: Time, refresh: Time) -> Time {
    if t <= phase {
        phase
    } else {
        ceil_to(t - phase, refresh) + phase
    }
}

/// Similarity from item `i` to item `j` in millionths from their co-occurrence (in users,
/// possibly weighted) and item user counts, under `spec`'s measure, asymmetry and shrinkage.
/// Shrinkage only lowers a similarity, so a bound on the unshrunk value bounds it too.
pub fn similarity(spec: &SimilaritySpec, both: f64, users_i: i64, users_j: i64) -> i64 {
    let (n_i, n_j) = (users_i as f64, users_j as f64);
    let mut value = match spec.measure {
        Measure::Cosine if spec.asymmetry == 0.5 => both / (n_i * n_j).sqrt(),
        Measure::Cosine => both / (n_i.powf(spec.asymmetry) * n_j.powf(1.0 - spec.asymmetry)),
        Measure::Jaccard => both / (n_i + n_j - both),
    };
    if spec.shrinkage > 0.0 {
        value *= both / (both + spec.shrinkage);
    }
    crate::dataflow::ranking::round_to_i64(value * SCORE_SCALE as f64)
}

/// Whether items `i` and `j` co-occur (`both`, in users, possibly weighted) more than chance
/// would have them among `population` users, `n_i` and `n_j` of whom hold each, by at least
/// `spec.min_llr`: Dunning's log-likelihood ratio `G²` of the 2x2 table of users (both, `i`
/// only, `j` only, neither) must reach it, and `both` must exceed the `n_i * n_j / population`
/// expected by chance (`G²` alone also flags pairs that co-occur less than chance). Every pair
/// passes when `min_llr` is 0.
pub fn significant(spec: &SimilaritySpec, both: f64, n_i: i64, n_j: i64, population: i64) -> bool {
    if spec.min_llr <= 0.0 {
        return true;
    }
    let (a, b, all) = (n_i as f64, n_j as f64, population as f64);
    if both * all <= a * b {
        return false;
    }
    let table = [both, (a - both).max(0.0), (b - both).max(0.0), (all - a - b + both).max(0.0)];
    log_likelihood_ratio(table) >= spec.min_llr
}

/// The p-value of items `i` and `j` co-occurring as often as they do, or more, by chance (the
/// arguments as in [`significant`]): the chance that a chi-square variable of one degree of
/// freedom reaches the pair's `G²`. Pairs that co-occur no more than chance would have them
/// get 1.
pub fn p_value(both: f64, n_i: i64, n_j: i64, population: i64) -> f64 {
    let (a, b, all) = (n_i as f64, n_j as f64, population as f64);
    if both * all <= a * b {
        return 1.0;
    }
    let table = [both, (a - both).max(0.0), (b - both).max(0.0), (all - a - b + both).max(0.0)];
    chi_square_tail(log_likelihood_ratio(table))
}

/// `P(X >= g)` for a chi-square variable `X` of one degree of freedom: `erfc(sqrt(g / 2))`.
///
/// ```
/// use recflow::dataflow::similarity::chi_square_tail;
/// // The critical values for p = 0.05, 0.01 and 0.001.
/// for (g, p) in [(3.841459, 0.05), (6.634897, 0.01), (10.827566, 0.001)] {
///     assert!((chi_square_tail(g) / p - 1.0).abs() < 1e-5, "{g}: {}", chi_square_tail(g));
/// }
/// assert_eq!(chi_square_tail(0.0), 1.0);
/// ```
pub fn chi_square_tail(g: f64) -> f64 {
    complementary_error_function((g.max(0.0) / 2.0).sqrt())
}

/// `erfc(x)` for `x >= 0`, with a relative error below 1.2e-7: the Chebyshev fit of Press,
/// Teukolsky, Vetterling and Flannery, *Numerical Recipes* (2nd ed., section 6.2).
fn complementary_error_function(x: f64) -> f64 {
    const FIT: [f64; 10] = [
        -1.265_512_23,
        1.000_023_68,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135_203_98,
        1.488_515_87,
        -0.822_152_23,
        0.170_872_77,
    ];
    let t = 1.0 / (1.0 + 0.5 * x);
    let series = FIT.iter().rev().fold(0.0, |sum, coefficient| coefficient + t * sum);
    (t * (series - x * x).exp()).min(1.0)
}

/// The largest p-value the Benjamini-Hochberg procedure at rate `q` accepts among `p_values`
/// (sorted here), in a family of `family` hypotheses of which these are the only ones that may
/// be accepted: the `r`-th smallest p-value for the largest `r` with `p(r) <= r * q / family`.
/// `None` when it accepts none.
///
/// ```
/// use recflow::dataflow::similarity::benjamini_hochberg;
/// // 0.039 fails at rank 3 (0.015) and nothing after it passes its rank: the first two are kept.
/// let mut p = vec![0.041, 0.001, 0.039, 0.008, 0.06];
/// assert_eq!(benjamini_hochberg(&mut p, 0.05, 10), Some(0.008));
/// // Step-up: 0.03 fails at rank 1 (0.025) but 0.04 passes at rank 2 (0.05), which keeps both.
/// assert_eq!(benjamini_hochberg(&mut vec![0.04, 0.03], 0.05, 2), Some(0.04));
/// assert_eq!(benjamini_hochberg(&mut vec![0.04, 0.03], 0.05, 4), None);
/// ```
pub fn benjamini_hochberg(p_values: &mut [f64], q: f64, family: usize) -> Option<f64> {
    p_values.sort_unstable_by(f64::total_cmp);
    let family = family.max(1) as f64;
    p_values.iter().enumerate().rev().find(|(at, p)| **p <= (at + 1) as f64 * q / family).map(|(_, p)| *p)
}

/// `G² = 2 (H(rows) + H(columns) - H(cells))` of a 2x2 table `[k11, k12, k21, k22]` with the
/// unnormalised entropy `H(x) = xlnx(Σx) - Σ xlnx(x)`.
fn log_likelihood_ratio([k11, k12, k21, k22]: [f64; 4]) -> f64 {
    let x_ln_x = |x: f64| if x > 0.0 { x * x.ln() } else { 0.0 };
    let entropy = |cells: &[f64]| x_ln_x(cells.iter().sum()) - cells.iter().map(|&x| x_ln_x(x)).sum::<f64>();
    let cells = entropy(&[k11, k12, k21, k22]);
    (2.0 * (entropy(&[k11 + k12, k21 + k22]) + entropy(&[k11 + k21, k12 + k22]) - cells)).max(0.0)
}

/// The population the significance test uses: the number of users holding any item, rounded
/// down to its 6 leading binary digits (within 1/32 below it), so that it changes, and makes
/// every row's test change, 32 times per doubling rather than with every new user.
pub fn tested_population(users: i64) -> i64 {
    if users < 64 {
        return users.max(0);
    }
    let bits = 64 - users.leading_zeros();
    users & !((1i64 << (bits - 6)) - 1)
}

type Updates<'scope, D> = Stream<'scope, Time, Vec<(D, Time, isize)>>;

/// A similarity row: an item's neighbours with their similarity in millionths, in no particular
/// order (scores sum over them, so none is needed, and sorting every re-ranked row cost a tenth
/// of an evaluation). Shared, since every worker's users operator (and each evaluated variant's)
/// gets a copy.
pub type Neighbours = std::sync::Arc<Vec<(Id, i64)>>;

/// Row changes as upserts: `((item, neighbours), time, 1)` replaces the item's row from `time`
/// on, and an empty `neighbours` removes it. At most one per item and time. Not a collection:
/// sending only the new row halves what is broadcast to every worker.
pub type RowUpserts<'scope> = Updates<'scope, (Id, Neighbours)>;

/// Co-occurrence counts with horizon pairs are in thousandths of a user: pairs weighted by
/// `pair_decay` count a fraction of one.
pub const PAIR_UNIT: i64 = 1_000;

/// Which of a user's items pair up for co-occurrence, and what each pair counts.
#[derive(Clone, Debug)]
pub struct Pairing {
    /// Within the current history, or accumulated over the horizon.
    pub rule: CoOccurrence,
    /// The history length, or how many items entered before an item it pairs with.
    pub len: usize,
    /// With horizon pairs: what a pair entered `d` apart counts, at `d - 1`, in [`PAIR_UNIT`]s
    /// (`pair_decay^(d-1)`).
    pub weights: Vec<i64>,
}

impl Pairing {
    /// The pairing of `spec`.
    pub fn of(spec: &crate::spec::RecommendSpec) -> Pairing {
        Pairing {
            rule: spec.co_occurrence,
            len: spec.history,
            weights: decay_factors(PAIR_UNIT, crate::spec::to_thousandths(spec.pair_decay), spec.history),
        }
    }

    /// What one user's co-occurrence of two items counts, in the rows operator's counts.
    fn unit(&self) -> i64 {
        match self.rule {
            CoOccurrence::History => 1,
            CoOccurrence::Horizon => PAIR_UNIT,
        }
    }
}

/// `(item, neighbours)` rows from `(user, (item, ts))` touches, pairing each user's items as
/// `pairing` says, as [`RowUpserts`].
///
/// ```
/// use std::collections::BTreeMap;
///
/// use differential_dataflow::input::Input;
/// use recflow::dataflow::similarity::{item_similarity, Pairing};
/// use recflow::progress::StreamEnd;
/// use recflow::spec::RecommendSpec;
/// use recflow::Id;
/// use timely::dataflow::operators::capture::{Capture, Extract};
///
/// // Cosine similarity between items sharing at least 2 users, refreshed every minute.
/// let spec = RecommendSpec::default();
/// let captured = timely::example(move |scope| {
///     // `(user, (item, ts))`: users 1 and 2 touch items 7 and 8, user 3 touches 7 and 9.
///     let touches = [(1, 7), (1, 8), (2, 7), (2, 8), (3, 7), (3, 9)];
///     let touches = touches.map(|(user, item)| (Id::Num(user), (Id::Num(item), 0)));
///     let (_input, touches) = scope.new_collection_from(touches);
///     item_similarity(touches, Pairing::of(&spec), &spec.similarity, 1_000, StreamEnd::default()).capture()
/// });
/// // Each upsert replaces its item's row at the item's refresh phase, and an empty one removes
/// // it: replayed in time order, they leave the current table.
/// let mut upserts: Vec<_> = captured.extract().into_iter().flat_map(|(_, updates)| updates).collect();
/// upserts.sort_by_key(|(_, time, _)| *time);
/// let mut rows: BTreeMap<Id, Vec<(Id, i64)>> =
///     upserts.into_iter().map(|((item, row), _, _)| (item, row.to_vec())).collect();
/// rows.retain(|_, row| !row.is_empty());
/// // 7 (3 users) and 8 (2 users) share 2 users: 2 / sqrt(3 * 2) = 0.816497. 7 and 9 share only
/// // user 3, below `min_support`, so 9 has no row and is in none.
/// assert_eq!(rows.keys().collect::<Vec<_>>(), [&Id::Num(7), &Id::Num(8)]);
/// assert_eq!(rows[&Id::Num(7)], [(Id::Num(8), 816_497)]);
/// assert_eq!(rows[&Id::Num(8)], [(Id::Num(7), 816_497)]);
/// ```
pub fn item_similarity<'scope>(
    touches: Coll<'scope, (Id, (Id, u64))>,
    pairing: Pairing,
    spec: &SimilaritySpec,
    spec_tick: Time,
    end: StreamEnd,
) -> RowUpserts<'scope> {
    let (refresh, tick) = (spec.refresh.millis(), spec_tick);
    let touches = super::retime(
        touches,
        "HistoryRefresh",
        move |(user, _): &(Id, (Id, u64)), t| next_refresh(user, t, refresh, tick),
        end,
    );
    let unit = pairing.unit();
    let changes = co_occurrence(touches.inner, pairing);
    let (pairs, users): (Updates<'scope, RowInput>, Updates<'scope, RowInput>) =
        changes.ok_err(|update| match update.0 {
            RowInput::Pairs(..) => Ok(update),
            _ => Err(update),
        });
    let pairs = pairs.exchange(|(input, _, _): &(RowInput, Time, isize)| match input {
        RowInput::Pairs(i, _) => i.hashed(),
        _ => 0,
    });
    rank_rows(pairs.concat(users.broadcast()), spec.clone(), tick, unit)
}

/// What the histories operator keeps per user.
#[derive(Clone, Default, Serialize, Deserialize)]
struct UserHistory {
    /// The user's touches.
    touches: Touches,
    /// The current history: the most recently touched items.
    history: BTreeSet<Id>,
    /// With horizon co-occurrence: the entry number of each item in the horizon...
    entered: HashMap<Id, u64>,
    /// ... and the items by entry number.
    by_entry: BTreeMap<u64, Id>,
    /// The next entry number.
    entries: u64,
}

impl UserHistory {
    /// With horizon co-occurrence: takes in that `changed` items may have entered or left the
    /// horizon. A leaving item unpairs from every item still in the horizon whose entry number is
    /// within `len` of its own; then each entering item, by latest touch (earliest first, then
    /// item asc), takes the next entry number and pairs with the items in the horizon among the
    /// `len` entries before it.
    fn enter_and_leave(&mut self, mut changed: Vec<Id>, weights: &[i64], mut give: impl FnMut(RowInput, isize)) {
        changed.sort();
        changed.dedup();
        let mut pairs: BTreeMap<Id, Vec<(Id, i64)>> = BTreeMap::new();
        // What a pair entered `apart` entries apart counts (nothing beyond the weights).
        let weight = |apart: u64| weights.get(apart as usize - 1).copied().unwrap_or(0);
        let mut pair = |a: &Id, b: &Id, change: i64| {
            if change != 0 {
                pairs.entry(a.clone()).or_default().push((b.clone(), change));
                pairs.entry(b.clone()).or_default().push((a.clone(), change));
            }
        };
        let len = weights.len() as u64;
        let mut entering: Vec<(u64, Id)> = Vec::new();
        for item in changed {
            match (self.entered.get(&item).copied(), self.touches.latest(&item)) {
                (Some(entry), None) => {
                    self.entered.remove(&item);
                    self.by_entry.remove(&entry);
                    for (&at, other) in self.by_entry.range(entry.saturating_sub(len)..=entry.saturating_add(len)) {
                        pair(&item, other, -weight(at.abs_diff(entry)));
                    }
                    give(RowInput::Users(item), -1);
                }
                (None, Some(latest)) => entering.push((latest, item)),
                _ => {}
            }
        }
        entering.sort();
        for (_, item) in entering {
            let entry = self.entries;
            self.entries += 1;
            for (&at, other) in self.by_entry.range(entry.saturating_sub(len)..entry) {
                pair(&item, other, weight(entry - at));
            }
            self.entered.insert(item.clone(), entry);
            self.by_entry.insert(entry, item.clone());
            give(RowInput::Users(item), 1);
        }
        for (item, changes) in pairs {
            give(RowInput::Pairs(item, changes), 1);
        }
    }

    /// Whether the user's history (or horizon) holds any item: whether they count in the
    /// population of the significance test.
    fn holds_any(&self) -> bool {
        !self.history.is_empty() || !self.entered.is_empty()
    }

    /// The `len` most recently touched items (latest touch desc, item asc).
    fn recent(&self, len: usize) -> BTreeSet<Id> {
        let mut latest: Vec<(std::cmp::Reverse<u64>, &Id)> =
            self.touches.latest_all().map(|(item, ts)| (std::cmp::Reverse(ts), item)).collect();
        keep_best(&mut latest, len);
        latest.into_iter().map(|(_, item)| item.clone()).collect()
    }
}

/// The changes to co-occurrence pairs and item user counts when a user's history goes from `old`
/// to `new`: every ordered pair within `old` with an item leaving loses one, every ordered pair
/// within `new` with an item entering gains one, grouped by the pair's first item.
fn history_changes(old: &BTreeSet<Id>, new: &BTreeSet<Id>, mut give: impl FnMut(RowInput, isize)) {
    let removed: Vec<&Id> = old.difference(new).collect();
    let added: Vec<&Id> = new.difference(old).collect();
    // An item alone in its history pairs with nothing: no record for it.
    let mut give_pairs = |item: &Id, changes: Vec<(Id, i64)>| {
        if !changes.is_empty() {
            give(RowInput::Pairs(item.clone(), changes), 1);
        }
    };
    let others = |history: &BTreeSet<Id>, item: &Id, sign: i64| -> Vec<(Id, i64)> {
        history.iter().filter(|other| *other != item).map(|other| (other.clone(), sign)).collect()
    };
    for &item in &removed {
        give_pairs(item, others(old, item, -1));
    }
    for &item in &added {
        give_pairs(item, others(new, item, 1));
    }
    // Every kept item pairs with everything that left and everything that entered.
    let moved: Vec<(Id, i64)> =
        removed.iter().map(|item| ((*item).clone(), -1)).chain(added.iter().map(|item| ((*item).clone(), 1))).collect();
    for kept in old.intersection(new) {
        give_pairs(kept, moved.clone());
    }
    for (items, sign) in [(removed, -1), (added, 1)] {
        for item in items {
            give(RowInput::Users(item.clone()), sign);
        }
    }
}

/// What the histories operator keeps on one worker.
#[derive(Default, Serialize, Deserialize)]
struct HistoriesState {
    inbox: Inbox<(Id, (Id, u64))>,
    users: SharedMap<Id, UserHistory>,
}

impl Freeze for HistoriesState {
    type Frozen = (<Inbox<(Id, (Id, u64))> as Freeze>::Frozen, MapSnapshot<Id, UserHistory>);

    fn freeze(&mut self) -> Self::Frozen {
        (self.inbox.freeze(), self.users.share())
    }
}

/// A touch `(user, (item, time))` belongs to its user's worker.
impl Placed for (Id, (Id, u64)) {
    fn place(&self) -> Place {
        Place::Key(self.0.hashed())
    }
}

/// Each user's history goes to the user's worker.
impl Rescale for HistoriesState {
    fn rescale(old: Vec<Self>, to: Owner) -> Self {
        let (inboxes, users): (Vec<_>, Vec<_>) = old.into_iter().map(|s| (s.inbox, s.users)).unzip();
        HistoriesState { inbox: Inbox::rescale(inboxes, to), users: owned_entries(users, to) }
    }
}

/// Stage 1: per user, histories from touches, and the pair and item-count changes they cause.
fn co_occurrence(touches: Updates<'_, (Id, (Id, u64))>, pairing: Pairing) -> Updates<'_, RowInput> {
    touches.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<_>>, _, _, _>(
        Exchange::new(|((user, _), _, _): &((Id, (Id, u64)), Time, isize)| user.hashed()),
        "Similarity: Histories",
        move |capability, info| {
            let state = worker_state::keep(&info.address, HistoriesState::default);
            state.borrow_mut().inbox.hold_from(&capability);
            move |(input, frontier), output| {
                let HistoriesState { inbox, users } = &mut *state.borrow_mut();
                inbox.absorb(input);
                while let Some(Due { time, capability, updates }) = inbox.next_complete(frontier) {
                    let mut touched: Vec<Id> = Vec::with_capacity(updates.len());
                    let mut changed: HashMap<Id, Vec<Id>> = HashMap::default();
                    for ((user, (item, ts)), diff) in updates {
                        users.get_or_default(user.clone()).touches.add(&item, ts, diff as i64);
                        if pairing.rule == CoOccurrence::Horizon {
                            changed.entry(user.clone()).or_default().push(item);
                        }
                        touched.push(user);
                    }
                    touched.sort();
                    touched.dedup();
                    let mut session = output.session(&capability);
                    for user in touched {
                        let Some(state) = users.get_mut(&user) else { continue };
                        let held = state.holds_any();
                        let mut give = |change, diff| session.give((change, time, diff));
                        match pairing.rule {
                            CoOccurrence::History => {
                                let recent = state.recent(pairing.len);
                                if recent != state.history {
                                    history_changes(&state.history, &recent, &mut give);
                                    state.history = recent;
                                }
                            }
                            CoOccurrence::Horizon => {
                                let items = changed.remove(&user).unwrap_or_default();
                                state.enter_and_leave(items, &pairing.weights, &mut give);
                            }
                        }
                        match (held, state.holds_any()) {
                            (false, true) => give(RowInput::Population, 1),
                            (true, false) => give(RowInput::Population, -1),
                            _ => {}
                        }
                        if state.touches.is_empty() && state.history.is_empty() && state.entered.is_empty() {
                            users.remove(&user);
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per ordered pair and per item, the net changes `history_changes` reports.
    fn net_changes(old: &BTreeSet<Id>, new: &BTreeSet<Id>) -> (BTreeMap<(Id, Id), i64>, BTreeMap<Id, i64>) {
        let (mut pairs, mut users) = (BTreeMap::new(), BTreeMap::new());
        history_changes(old, new, |change, diff| match change {
            RowInput::Pairs(i, changes) => {
                assert!(!changes.is_empty(), "an empty record for {i:?}");
                for (j, change) in changes {
                    *pairs.entry((i.clone(), j)).or_default() += change * diff as i64;
                }
            }
            RowInput::Users(i) => *users.entry(i).or_default() += diff as i64,
            RowInput::Rerank(_) | RowInput::Population => panic!("history changes neither re-rank nor count users"),
        });
        pairs.retain(|_, count| *count != 0);
        (pairs, users)
    }

    fn ordered_pairs(history: &BTreeSet<Id>) -> BTreeMap<(Id, Id), i64> {
        let mut pairs = BTreeMap::new();
        for i in history {
            for j in history.iter().filter(|j| *j != i) {
                pairs.insert((i.clone(), j.clone()), 1);
            }
        }
        pairs
    }

    /// Over every pair of histories drawn from five items, the grouped changes add up to the
    /// new history's pairs minus the old one's, and the user counts to the items that moved.
    #[test]
    fn history_changes_are_the_difference_of_the_histories_pairs() {
        let subset = |mask: u32| -> BTreeSet<Id> { (0..5).filter(|b| mask & (1 << b) != 0).map(Id::Num).collect() };
        for old_mask in 0..32 {
            for new_mask in 0..32 {
                let (old, new) = (subset(old_mask), subset(new_mask));
                let (pairs, users) = net_changes(&old, &new);
                let mut expected = ordered_pairs(&new);
                for (pair, count) in ordered_pairs(&old) {
                    *expected.entry(pair).or_default() -= count;
                }
                expected.retain(|_, count| *count != 0);
                assert_eq!(pairs, expected, "{old:?} -> {new:?}");
                let mut expected_users: BTreeMap<Id, i64> = new.difference(&old).map(|i| (i.clone(), 1)).collect();
                expected_users.extend(old.difference(&new).map(|i| (i.clone(), -1)));
                assert_eq!(users, expected_users, "{old:?} -> {new:?}");
            }
        }
    }
}
