//! Stage 2 of the similarity: per-item co-occurrence rows `c(i, ·)`, with every item's user count
//! `n` on every worker, each row re-ranked at its phase times when its inputs changed.
//!
//! The operator keeps its facts in dense local [`Slots`] (one per item with a count, a row or a
//! reference), so the loops that dominate its cost (a row's candidates in [`rank_row`], an item's
//! partners after its count changed) index arrays instead of hashing ids. Ties are still broken
//! by id, never by slot.

use std::cmp::Ordering;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use serde::{Deserialize, Serialize};

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;

use super::{
    benjamini_hochberg, next_phase_time, p_value, refresh_phase, significant, similarity, tested_population,
    RowUpserts, Updates,
};
use crate::checkpoint::rescale::{Owner, Place, Placed, Rescale};
use crate::checkpoint::shared::{SharedVec, VecSnapshot};
use crate::checkpoint::worker_state::{self, Freeze};
use crate::dataflow::slots::{Slot, Slots};
use crate::dataflow::Time;
use crate::event::Id;
use crate::results::SCORE_SCALE;
use crate::schedule::{Due, Inbox};
use crate::spec::{Measure, SimilaritySpec};

/// The kinds of input of the rows operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum RowInput {
    /// `(i, [(j, d), ..])`: `c(i, j)` changed by `d` times the update's difference, for each `j`
    /// (on the worker that owns `i`). One user's history change sends one per item it affects.
    Pairs(Id, Vec<(Id, i64)>),
    /// `n_i` changed by the update's difference (on every worker).
    Users(Id),
    /// The number of users holding any item changed by the update's difference (on every
    /// worker).
    Population,
    /// Re-rank a row: it is its phase time, and it changed since it was last ranked.
    Rerank(Id),
}

/// What the rows operator keeps about one item's row.
#[derive(Clone, Default, Serialize, Deserialize)]
struct Row {
    /// `c(i, j)` for every `j` co-occurring with `i` fewer than `min_support` times.
    weak: HashMap<Slot, i64>,
    /// `c(i, j)` for every `j` co-occurring with `i` at least `min_support` times: the candidates.
    strong: HashMap<Slot, i64>,
    /// The neighbours last emitted, in no particular order: the ranking decides which neighbours
    /// a row holds, and nothing downstream depends on their order, so they are not sorted.
    emitted: Vec<(Slot, i64)>,
    /// Waiting for its next phase time to be re-ranked.
    scheduled: bool,
    /// The last of `emitted` in the ranking order ([`best_first`]), once the row holds as many as
    /// it may: what a candidate must beat to enter. Found again from `emitted` on restore.
    #[serde(skip)]
    last: Option<(Slot, i64)>,
}

impl Row {
    /// Adds `diff` to `c(i, j)`, keeping it in `strong` or `weak` by `min_support`; returns the
    /// count before and after.
    fn add(&mut self, j: Slot, diff: i64, min_support: i64) -> (i64, i64) {
        if let Some(count) = self.strong.get_mut(&j) {
            let before = *count;
            *count += diff;
            let now = *count;
            if now < min_support {
                self.strong.remove(&j);
                if now != 0 {
                    self.weak.insert(j, now);
                }
            }
            return (before, now);
        }
        let before = self.weak.get(&j).copied().unwrap_or(0);
        let now = before + diff;
        if now >= min_support {
            self.weak.remove(&j);
            self.strong.insert(j, now);
        } else if now == 0 {
            self.weak.remove(&j);
        } else {
            self.weak.insert(j, now);
        }
        (before, now)
    }

    /// Whether the row holds nothing.
    fn is_empty(&self) -> bool {
        self.weak.is_empty() && self.strong.is_empty() && self.emitted.is_empty() && !self.scheduled
    }
}

/// Everything the rows operator keeps, by slot.
#[derive(Default, Serialize, Deserialize)]
struct RowTable {
    items: Slots<Id>,
    /// `n` per slot: how many users' histories hold the item.
    users: Vec<i64>,
    /// The item's row, if this worker owns it (empty otherwise).
    rows: SharedVec<Row>,
    /// For every item `j`, the local rows `i` with `c(i, j) >= min_support`: whose rankings an
    /// `n_j` change affects. Weaker pairs rank nothing, so their changes re-rank nothing.
    partners: SharedVec<HashSet<Slot>>,
    /// How often the slot appears in rows' counts and emitted neighbours: a slot is released
    /// only when nothing refers to it.
    references: Vec<u32>,
    /// Each slot's refresh phase.
    phases: Vec<Time>,
    /// What one user's co-occurrence counts in the rows' counts.
    unit: i64,
    /// How many users hold any item: the population of the significance test.
    population: i64,
    /// How many items some user holds: the family of the false discovery rate. Counted again
    /// from `users` when the table is restored, so checkpoints do not hold it.
    #[serde(skip)]
    catalogue: i64,
}

/// A [`RowTable`] as a checkpoint took it ([`RowTable::share`]).
type FrozenRowTable =
    (Slots<Id>, Vec<i64>, VecSnapshot<Row>, VecSnapshot<HashSet<Slot>>, Vec<u32>, Vec<Time>, i64, i64);

impl RowTable {
    /// The slot of `item`, assigning one (and room in every per-slot vector) if it has none.
    fn slot(&mut self, item: &Id, refresh: Time, tick: Time) -> Slot {
        self.slot_with(item, || refresh_phase(item, refresh, tick))
    }

    /// [`RowTable::slot`], with the item's refresh phase from `phase` when it is new.
    fn slot_with(&mut self, item: &Id, phase: impl FnOnce() -> Time) -> Slot {
        let (slot, new) = self.items.assign(item);
        let at = slot as usize;
        if at == self.users.len() {
            self.users.push(0);
            self.rows.push(Row::default());
            self.partners.push(HashSet::default());
            self.references.push(0);
            self.phases.push(0);
        }
        if new {
            self.phases[at] = phase();
        }
        slot
    }

    /// Takes in row `i` of `from` (slots of `from`), translating its slots to this table's.
    fn take_row(&mut self, from: &RowTable, i: Slot, row: Row) {
        let slot_of = |table: &mut RowTable, j: Slot| {
            let item = &from.items.ids()[j as usize];
            table.slot_with(item, || from.phases[j as usize])
        };
        let at = slot_of(self, i) as usize;
        let translate = |table: &mut RowTable, counts: HashMap<Slot, i64>| -> HashMap<Slot, i64> {
            counts.into_iter().map(|(j, count)| (slot_of(table, j), count)).collect()
        };
        let weak = translate(self, row.weak);
        let strong = translate(self, row.strong);
        let emitted = row.emitted.into_iter().map(|(j, similarity)| (slot_of(self, j), similarity)).collect();
        self.rows[at] = Row { weak, strong, emitted, scheduled: row.scheduled, last: None };
    }

    /// The table as it is now, for a checkpoint: the rows and partners shared, not copied; its
    /// fields in order, as the table serialises.
    fn share(&mut self) -> FrozenRowTable {
        (
            self.items.clone(),
            self.users.clone(),
            self.rows.share(),
            self.partners.share(),
            self.references.clone(),
            self.phases.clone(),
            self.unit,
            self.population,
        )
    }

    /// Works out what checkpoints do not hold: `catalogue` from `users`, and each full row's
    /// `last` (rows hold at most `neighbours`) from its emitted neighbours.
    fn derive_unsaved(&mut self, neighbours: usize) {
        self.catalogue = self.users.iter().filter(|&&users| users > 0).count() as i64;
        for i in 0..self.rows.len() {
            let last = last_of(self.items.ids(), &self.rows[i].emitted, neighbours);
            if last != self.rows[i].last {
                self.rows[i].last = last;
            }
        }
    }

    /// Adds `diff` to `n` of slot `i`, keeping `catalogue` right.
    fn add_users(&mut self, i: Slot, diff: i64) {
        let users = &mut self.users[i as usize];
        let held_before = *users > 0;
        *users += diff;
        self.catalogue += (*users > 0) as i64 - held_before as i64;
    }

    /// Works out `partners` and `references` again from the rows.
    fn count_references(&mut self) {
        for (i, row) in self.rows.iter().enumerate() {
            for &j in row.strong.keys() {
                self.partners[j as usize].insert(i as Slot);
            }
            for &j in row.weak.keys().chain(row.strong.keys()).chain(row.emitted.iter().map(|(j, _)| j)) {
                self.references[j as usize] += 1;
            }
        }
    }

    /// Applies a change of `c(i, j)`; returns whether row `i`'s ranking may have changed.
    fn add_pair(&mut self, i: Slot, j: Slot, diff: i64, min_support: i64) -> bool {
        let (before, now) = self.rows[i as usize].add(j, diff, min_support);
        match (before == 0, now == 0) {
            (true, false) => self.references[j as usize] += 1,
            (false, true) => self.references[j as usize] -= 1,
            _ => {}
        }
        match (before >= min_support, now >= min_support) {
            (false, true) => {
                self.partners[j as usize].insert(i);
            }
            (true, false) => {
                self.partners[j as usize].remove(&i);
            }
            _ => {}
        }
        before >= min_support || now >= min_support
    }

    /// Whether re-ranking row `i` could change it after `n_j` changed (and nothing else of the
    /// row's): `j` is among its neighbours, or now ranks above the last of them, or the row has
    /// room. The row's other neighbours are current (any change to them dirties the row), so
    /// if `j` ranks below the last of them the row stays as it is.
    fn may_take(&self, i: Slot, j: Slot, spec: &SimilaritySpec) -> bool {
        let row = &self.rows[i as usize];
        if row.emitted.len() < spec.neighbours || row.emitted.iter().any(|&(neighbour, _)| neighbour == j) {
            return true;
        }
        let Some(&both) = row.strong.get(&j) else { return false };
        if spec.false_discovery_rate > 0.0 {
            // Any candidate's p-value can move the row's acceptance cut.
            return true;
        }
        let (n_i, n_j) = (self.users[i as usize], self.users[j as usize]);
        let Some((last, last_similarity)) = row.last else { return false };
        if n_i <= 0 || n_j <= 0 {
            return false;
        }
        let both = both as f64 / self.unit as f64;
        let candidate = similarity(spec, both, n_i, n_j);
        best_first(self.items.ids(), &(j, candidate), &(last, last_similarity)) == Ordering::Less
            && significant(spec, both, n_i, n_j, tested_population(self.population))
    }

    /// Whether the significance test of every pair may have changed: its population did, or
    /// with a false discovery rate its family.
    fn tests_changed(&self, (population_before, catalogue_before): (i64, i64), spec: &SimilaritySpec) -> bool {
        let tested = spec.min_llr > 0.0 || spec.false_discovery_rate > 0.0;
        let family_changed = tested_population(catalogue_before) != tested_population(self.catalogue);
        (tested && tested_population(population_before) != tested_population(self.population))
            || (spec.false_discovery_rate > 0.0 && family_changed)
    }

    /// The family of the false discovery rate for a row: every other item of the catalogue,
    /// which is rounded as the population is.
    fn family(&self) -> usize {
        (tested_population(self.catalogue) - 1).max(1) as usize
    }

    /// Replaces row `i`'s emitted neighbours, keeping the references right; the old neighbours
    /// that nothing refers to any more go to `shrunk` (only those can be released).
    fn set_emitted(&mut self, i: Slot, neighbours: Vec<(Slot, i64)>, shrunk: &mut Vec<Slot>) {
        for &(j, _) in &neighbours {
            self.references[j as usize] += 1;
        }
        let old = std::mem::replace(&mut self.rows[i as usize].emitted, neighbours);
        for (j, _) in old {
            self.references[j as usize] -= 1;
            if self.references[j as usize] == 0 {
                shrunk.push(j);
            }
        }
    }

    /// Releases the slot if nothing is kept for it and nothing refers to it.
    fn release_if_unused(&mut self, slot: Slot) {
        let at = slot as usize;
        if self.users[at] == 0 && self.references[at] == 0 && self.rows[at].is_empty() && self.partners[at].is_empty() {
            self.items.release(slot);
            // Drop the emptied maps' storage too.
            self.rows[at] = Row::default();
            self.partners[at] = HashSet::default();
        }
    }
}

/// The ranking order of `(slot, similarity)` entries: similarity desc, then item id asc.
fn best_first(ids: &[Id], a: &(Slot, i64), b: &(Slot, i64)) -> Ordering {
    b.1.cmp(&a.1).then_with(|| ids[a.0 as usize].cmp(&ids[b.0 as usize]))
}

/// The last of a row's `neighbours` in the ranking order, if it holds that many (it never holds
/// more): a candidate must rank above it to enter.
fn last_of(ids: &[Id], neighbours: &[(Slot, i64)], keep: usize) -> Option<(Slot, i64)> {
    if neighbours.len() < keep {
        return None;
    }
    neighbours.iter().copied().max_by(|a, b| best_first(ids, a, b))
}

/// The rows operator: per-item co-occurrence rows, each re-ranked at its phase times when its
/// inputs changed, emitting only the rows that changed, as upserts.
///
/// Co-occurrence counts are in `unit`s: `unit` is what one user's pair counts.
pub(super) fn rank_rows(inputs: Updates<'_, RowInput>, spec: SimilaritySpec, tick: Time, unit: i64) -> RowUpserts<'_> {
    let refresh = spec.refresh.millis();
    let min_support = spec.min_support as i64 * unit;
    inputs.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<_>>, _, _, _>(
        Pipeline,
        "Similarity: Rows",
        move |capability, info| {
            let fresh = || RowsState { inbox: Inbox::default(), table: RowTable { unit, ..RowTable::default() } };
            let state = worker_state::keep(&info.address, fresh);
            state.borrow_mut().inbox.hold_from(&capability);
            state.borrow_mut().table.derive_unsaved(spec.neighbours);
            move |(input, frontier), output| {
                let RowsState { inbox, table } = &mut *state.borrow_mut();
                inbox.absorb(input);
                while let Some(Due { time, capability, updates: batch }) = inbox.next_complete(frontier) {
                    let mut dirty: HashSet<Slot> = HashSet::default();
                    let mut recounted: Vec<Slot> = Vec::new();
                    let mut due: Vec<Slot> = Vec::new();
                    // Slots whose facts or references shrank: released at the end if unused.
                    let mut shrunk: Vec<Slot> = Vec::new();
                    let before = (table.population, table.catalogue);
                    for (entry, diff) in batch {
                        match entry {
                            RowInput::Pairs(i, changes) => {
                                let i = table.slot(&i, refresh, tick);
                                let mut ranking_may_change = false;
                                let mut any_removed = false;
                                for (j, change) in changes {
                                    let j = table.slot(&j, refresh, tick);
                                    let change = change * diff as i64;
                                    ranking_may_change |= table.add_pair(i, j, change, min_support);
                                    if change < 0 {
                                        shrunk.push(j);
                                        any_removed = true;
                                    }
                                }
                                if ranking_may_change {
                                    dirty.insert(i);
                                }
                                if any_removed {
                                    shrunk.push(i);
                                }
                            }
                            RowInput::Users(i) => {
                                let i = table.slot(&i, refresh, tick);
                                table.add_users(i, diff as i64);
                                recounted.push(i);
                            }
                            RowInput::Population => table.population += diff as i64,
                            RowInput::Rerank(i) => {
                                if let Some(i) = table.items.get(&i) {
                                    table.rows[i as usize].scheduled = false;
                                    due.push(i);
                                }
                            }
                        }
                    }
                    if table.tests_changed(before, &spec) {
                        dirty.extend(table.rows.iter().enumerate().filter_map(|(i, row)| {
                            (!row.strong.is_empty() || !row.emitted.is_empty()).then_some(i as Slot)
                        }));
                    }
                    recounted.sort_unstable();
                    recounted.dedup();
                    for &j in &recounted {
                        let row = &table.rows[j as usize];
                        if !row.strong.is_empty() || !row.emitted.is_empty() {
                            dirty.insert(j);
                        }
                    }
                    // A partner's row changes only if `j` is in it or can now enter it: a row that
                    // is not dirty still holds its exact best neighbours, since every other
                    // change to its candidates makes it dirty.
                    for &j in &recounted {
                        for &i in &table.partners[j as usize] {
                            if table.rows[i as usize].scheduled || dirty.contains(&i) {
                                continue;
                            }
                            if table.may_take(i, j, &spec) {
                                dirty.insert(i);
                            }
                        }
                    }
                    shrunk.extend(recounted);
                    // Changed rows are ranked at their next phase time: now, or later.
                    for i in dirty {
                        let phase = table.phases[i as usize];
                        let at = next_phase_time(phase, time, refresh);
                        if at == time {
                            due.push(i);
                        } else if !table.rows[i as usize].scheduled {
                            table.rows[i as usize].scheduled = true;
                            inbox.schedule(&capability, RowInput::Rerank(table.items.id(i).clone()), at);
                        }
                    }
                    due.sort_unstable();
                    due.dedup();
                    let mut session = output.session(&capability);
                    for i in due {
                        let best = rank_row(i, table, &spec);
                        if best != table.rows[i as usize].emitted {
                            let ids = table.items.ids();
                            let neighbours =
                                std::sync::Arc::new(best.iter().map(|&(j, s)| (ids[j as usize].clone(), s)).collect());
                            session.give(((ids[i as usize].clone(), neighbours), time, 1));
                            let last = last_of(ids, &best, spec.neighbours);
                            table.set_emitted(i, best, &mut shrunk);
                            table.rows[i as usize].last = last;
                        }
                        shrunk.push(i);
                    }
                    shrunk.sort_unstable();
                    shrunk.dedup();
                    for slot in shrunk {
                        table.release_if_unused(slot);
                    }
                }
            }
        },
    )
}

/// Pair changes and re-rankings belong to the row's worker; item and population counts reach
/// every worker.
impl Placed for RowInput {
    fn place(&self) -> Place {
        match self {
            RowInput::Pairs(i, _) | RowInput::Rerank(i) => {
                use differential_dataflow::Hashable;
                Place::Key(i.hashed())
            }
            RowInput::Users(_) | RowInput::Population => Place::Everywhere,
        }
    }
}

/// Each row goes to its item's worker, with its slots numbered anew; every worker's copies of
/// the items' user counts and the population come from old worker 0.
impl Rescale for RowsState {
    fn rescale(old: Vec<Self>, to: Owner) -> Self {
        let mut table = RowTable { unit: old.first().map_or(1, |state| state.table.unit), ..RowTable::default() };
        let mut inboxes = Vec::with_capacity(old.len());
        for (worker, RowsState { inbox, table: mut from }) in old.into_iter().enumerate() {
            inboxes.push(inbox);
            if worker == 0 {
                table.population = from.population;
                for (j, &users) in from.users.iter().enumerate() {
                    if users != 0 {
                        let slot = table.slot_with(&from.items.ids()[j], || from.phases[j]);
                        table.users[slot as usize] = users;
                    }
                }
            }
            let rows = std::mem::take(&mut from.rows);
            for (i, row) in rows.into_iter().enumerate() {
                let owned = {
                    use differential_dataflow::Hashable;
                    to.owns(from.items.ids()[i].hashed())
                };
                if owned && (!row.weak.is_empty() || !row.strong.is_empty() || !row.emitted.is_empty() || row.scheduled)
                {
                    table.take_row(&from, i as Slot, row);
                }
            }
        }
        table.count_references();
        RowsState { inbox: Inbox::rescale(inboxes, to), table }
    }
}

/// What the rows operator keeps on one worker.
#[derive(Serialize, Deserialize)]
struct RowsState {
    inbox: Inbox<RowInput>,
    table: RowTable,
}

impl Freeze for RowsState {
    type Frozen = (<Inbox<RowInput> as Freeze>::Frozen, FrozenRowTable);

    fn freeze(&mut self) -> Self::Frozen {
        (self.inbox.freeze(), self.table.share())
    }
}

/// The `neighbours` best `(j, similarity)` of row `i` among its candidates (pairs with enough
/// support that pass the significance test and, with a false discovery rate, that the
/// Benjamini-Hochberg procedure accepts) by similarity desc then item asc, in no particular
/// order.
///
/// Candidates are pruned by support: `n_j >= c(i, j)` (every user holding both holds `j`), so
/// `sim(i, j) <= sqrt(c / n_i)` for cosine and `<= c / n_i` for Jaccard. Once `neighbours`
/// candidates are known, one whose support bounds it below the last of them is skipped without
/// looking up its `n_j`.
fn rank_row(i: Slot, table: &RowTable, spec: &SimilaritySpec) -> Vec<(Slot, i64)> {
    let n_i = table.users[i as usize];
    let keep = spec.neighbours;
    if n_i <= 0 || keep == 0 {
        return Vec::new();
    }
    let ids = table.items.ids();
    let order = |a: &(Slot, i64), b: &(Slot, i64)| best_first(ids, a, b);
    let mut ranked: Vec<(Slot, i64)> = Vec::with_capacity(2 * keep);
    // The last of the best `keep` so far, and the support below which nothing can beat it.
    let mut threshold: Option<(Slot, i64)> = None;
    let mut cut = 0.0;
    let unit = table.unit as f64;
    let population = tested_population(table.population);
    let row = &table.rows[i as usize];
    // With a false discovery rate, the counts whose pairs pass both tests, each tested once here;
    // without, every count, tested in the loop below.
    let accepted = if spec.false_discovery_rate > 0.0 {
        let Some(accepted) = accepted_by_rate(row, n_i, table, spec) else { return Vec::new() };
        Some(accepted)
    } else {
        None
    };
    let tested = accepted.is_some();
    let all = accepted.is_none().then(|| row.strong.iter().map(|(&j, &both)| (j, both)));
    for (j, both) in accepted.into_iter().flatten().chain(all.into_iter().flatten()) {
        if (both as f64) < cut {
            continue;
        }
        let n_j = table.users[j as usize];
        if n_j <= 0 {
            continue;
        }
        let users_of_both = both as f64 / unit;
        let candidate = (j, similarity(spec, users_of_both, n_i, n_j));
        if threshold.is_some_and(|last| order(&candidate, &last) != Ordering::Less)
            || !(tested || significant(spec, users_of_both, n_i, n_j, population))
        {
            continue;
        }
        ranked.push(candidate);
        if ranked.len() == 2 * keep {
            // Only the best `keep` and the last of them matter here: no need to sort them yet.
            ranked.select_nth_unstable_by(keep - 1, order);
            ranked.truncate(keep);
            threshold = ranked.last().copied();
            cut = threshold.map_or(0.0, |(_, last)| support_cut(spec, n_i, last) * unit);
        }
    }
    if ranked.len() > keep {
        ranked.select_nth_unstable_by(keep - 1, order);
        ranked.truncate(keep);
    }
    ranked
}

/// The counts `(j, c(i, j))` of row `i` (whose item has `n_i` users) whose pairs pass the
/// significance test and the Benjamini-Hochberg procedure at the spec's false discovery rate;
/// `None` when the procedure accepts none.
fn accepted_by_rate(row: &Row, n_i: i64, table: &RowTable, spec: &SimilaritySpec) -> Option<Vec<(Slot, i64)>> {
    let (unit, population) = (table.unit as f64, tested_population(table.population));
    let tested: Vec<(Slot, i64, f64)> = row
        .strong
        .iter()
        .filter_map(|(&j, &both)| {
            let n_j = table.users[j as usize];
            let users_of_both = both as f64 / unit;
            (n_j > 0 && significant(spec, users_of_both, n_i, n_j, population))
                .then(|| (j, both, p_value(users_of_both, n_i, n_j, population)))
        })
        .filter(|&(_, _, p)| p < 1.0)
        .collect();
    let mut p_values: Vec<f64> = tested.iter().map(|&(_, _, p)| p).collect();
    let accepted = benjamini_hochberg(&mut p_values, spec.false_discovery_rate, table.family())?;
    Some(tested.into_iter().filter(|&(_, _, p)| p <= accepted).map(|(j, both, _)| (j, both)).collect())
}

/// The support below which an item cannot reach similarity `last` (millionths) from an item of
/// `n_i` users: since `c <= n_j`, `sim <= (c / n_i)^a` (cosine with asymmetry `a`; `a = 0.5` is
/// `sqrt(c / n_i)`) or `c / n_i` (Jaccard), with a margin of one millionth for rounding, so what
/// is cut is strictly below `last`.
fn support_cut(spec: &SimilaritySpec, n_i: i64, last: i64) -> f64 {
    let reach = (last - 1) as f64 / SCORE_SCALE as f64;
    if reach <= 0.0 {
        return 0.0;
    }
    match spec.measure {
        Measure::Cosine if spec.asymmetry == 0.5 => n_i as f64 * reach * reach,
        Measure::Cosine => n_i as f64 * reach.powf(1.0 / spec.asymmetry) * (1.0 - 1e-9),
        Measure::Jaccard => n_i as f64 * reach,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No pair whose support is below the cut reaches the similarity the cut is for.
    #[test]
    fn support_cut_never_cuts_a_pair_that_reaches_the_threshold() {
        let shapes = [(Measure::Cosine, 0.5), (Measure::Cosine, 0.2), (Measure::Cosine, 0.8), (Measure::Cosine, 1.0)];
        for (measure, asymmetry) in shapes.into_iter().chain([(Measure::Jaccard, 0.5)]) {
            let spec = SimilaritySpec { measure, asymmetry, ..SimilaritySpec::default() };
            for n_i in 1..60 {
                for n_j in 1..60 {
                    for both in 1..=n_i.min(n_j) {
                        let value = similarity(&spec, both as f64, n_i, n_j);
                        for last in [value - 1, value, value + 1] {
                            if (both as f64) < support_cut(&spec, n_i, last) {
                                assert!(value < last, "{spec:?} c={both} n_i={n_i} n_j={n_j} last={last}");
                            }
                        }
                    }
                }
            }
        }
    }
}
