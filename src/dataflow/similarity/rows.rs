//! Stage 2 of the similarity: per-item co-occurrence rows `c(i, ·)`, with every item's user count
//! `n` on every worker, each row re-ranked at its phase times when its own inputs changed: its
//! candidates' counts, its item's user count, and the tests' population and family where they
//! are on. A neighbour's user count alone does not re-rank a row: re-ranking every row a
//! neighbour of which was touched made nearly nine re-ranks in ten on MovieLens, for no gain
//! in the lists. So that no row keeps a neighbour's old count for long, every row is also
//! re-ranked at its *full refresh* times, whatever changed (`full_refresh` apart, staggered by
//! the item's hash like the phases), and every row after a user is forgotten, once the user's
//! events have left the counts (so none keeps a count that held them).
//!
//! The operator keeps its facts in dense local [`Slots`] (one per item with a count, a row or a
//! reference), so the loop that dominates its cost (a row's candidates in [`rank_row`]) indexes
//! arrays instead of hashing ids. Ties are still broken by id, never by slot.

use std::cmp::Ordering;

use differential_dataflow::Hashable;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use serde::{Deserialize, Serialize};

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;

use super::{
    benjamini_hochberg, next_phase_time, next_refresh, p_value, refresh_phase, significant, similarity,
    tested_population, RowUpserts, Updates,
};
use crate::checkpoint::rescale::{Owner, Place, Placed, Rescale};
use crate::checkpoint::shared::{SharedVec, VecSnapshot};
use crate::checkpoint::worker_state::{self, Freeze};
use crate::dataflow::slots::{Slot, Slots};
use crate::dataflow::Time;
use crate::event::Id;
use crate::progress::StreamEnd;
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
    /// Re-rank a row whatever changed: it is its full refresh time.
    Refresh(Id),
    /// Re-rank every row at its next phase time whatever changed: a forgotten user's events have
    /// left the counts (on every worker).
    RefreshAll,
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
    /// Re-ranked at its next phase time even if its own inputs are as they were.
    forced: bool,
    /// Waiting for its next full refresh time.
    refresh_scheduled: bool,
    /// The fingerprint of the row's own inputs ([`RowTable::inputs_now`]) when it was last ranked.
    ranked: u64,
    /// The fingerprint of its candidates' counts and its item's user count as they are now (see
    /// [`count_term`]). Worked out again from the counts on restore.
    #[serde(skip)]
    inputs: u64,
}

impl Row {
    /// Adds `diff` to `c(i, j)` (`j` identified by `j_hash`, its id's hash), keeping it in
    /// `strong` or `weak` by `min_support` and the fingerprint of the strong counts right;
    /// returns the count before and after.
    fn add(&mut self, j: Slot, j_hash: u64, diff: i64, min_support: i64) -> (i64, i64) {
        let (before, now) = self.add_count(j, diff, min_support);
        if before >= min_support {
            self.inputs ^= count_term(j_hash, before);
        }
        if now >= min_support {
            self.inputs ^= count_term(j_hash, now);
        }
        (before, now)
    }

    /// [`Row::add`] without the fingerprint.
    fn add_count(&mut self, j: Slot, diff: i64, min_support: i64) -> (i64, i64) {
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
        !self.ranks_anything() && self.weak.is_empty() && !self.scheduled && !self.refresh_scheduled
    }

    /// Whether the row has candidates or neighbours: what a full refresh would rank again.
    fn ranks_anything(&self) -> bool {
        !self.strong.is_empty() || !self.emitted.is_empty()
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
type FrozenRowTable = (Slots<Id>, Vec<i64>, VecSnapshot<Row>, Vec<u32>, Vec<Time>, i64, i64);

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
        let Row { scheduled, forced, refresh_scheduled, ranked, .. } = row;
        self.rows[at] = Row { weak, strong, emitted, scheduled, forced, refresh_scheduled, ranked, inputs: 0 };
    }

    /// The table as it is now, for a checkpoint: the rows shared, not copied; its
    /// fields in order, as the table serialises.
    fn share(&mut self) -> FrozenRowTable {
        (
            self.items.clone(),
            self.users.clone(),
            self.rows.share(),
            self.references.clone(),
            self.phases.clone(),
            self.unit,
            self.population,
        )
    }

    /// Works out what checkpoints do not hold: `catalogue` from `users`, and each row's
    /// fingerprint of its inputs from its counts.
    fn derive_unsaved(&mut self) {
        self.catalogue = self.users.iter().filter(|&&users| users > 0).count() as i64;
        for i in 0..self.rows.len() {
            let ids = self.items.ids();
            let row = &self.rows[i];
            let counts =
                row.strong.iter().fold(0, |inputs, (&j, &count)| inputs ^ count_term(ids[j as usize].hashed(), count));
            let inputs = counts ^ users_term(self.users[i]);
            if inputs != row.inputs {
                self.rows[i].inputs = inputs;
            }
        }
    }

    /// Adds `diff` to `n` of slot `i`, keeping `catalogue` and the row's fingerprint right.
    fn add_users(&mut self, i: Slot, diff: i64) {
        let users = &mut self.users[i as usize];
        let before = *users;
        *users += diff;
        let now = *users;
        self.catalogue += (now > 0) as i64 - (before > 0) as i64;
        self.rows[i as usize].inputs ^= users_term(before) ^ users_term(now);
    }

    /// The fingerprint of row `i`'s own inputs now: its candidates' counts, its item's user count
    /// and, where the significance tests are on, the population and family they are run with.
    /// A row is re-ranked only when this differs from what it was at its last ranking.
    fn inputs_now(&self, i: Slot, spec: &SimilaritySpec) -> u64 {
        let mut inputs = self.rows[i as usize].inputs;
        if spec.min_llr > 0.0 || spec.false_discovery_rate > 0.0 {
            inputs ^= mix(POPULATION_TAG ^ tested_population(self.population) as u64);
        }
        if spec.false_discovery_rate > 0.0 {
            inputs ^= mix(CATALOGUE_TAG ^ tested_population(self.catalogue) as u64);
        }
        inputs
    }

    /// Works out `references` again from the rows.
    fn count_references(&mut self) {
        for row in self.rows.iter() {
            for &j in row.weak.keys().chain(row.strong.keys()).chain(row.emitted.iter().map(|(j, _)| j)) {
                self.references[j as usize] += 1;
            }
        }
    }

    /// Applies a change of `c(i, j)` (`j` identified by `j_hash`); returns whether row `i`'s
    /// candidates changed.
    fn add_pair(&mut self, i: Slot, j: Slot, j_hash: u64, diff: i64, min_support: i64) -> bool {
        let (before, now) = self.rows[i as usize].add(j, j_hash, diff, min_support);
        match (before == 0, now == 0) {
            (true, false) => self.references[j as usize] += 1,
            (false, true) => self.references[j as usize] -= 1,
            _ => {}
        }
        before >= min_support || now >= min_support
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
        if self.users[at] == 0 && self.references[at] == 0 && self.rows[at].is_empty() {
            self.items.release(slot);
            // Drop the emptied maps' storage too.
            self.rows[at] = Row::default();
        }
    }
}

/// The ranking order of `(slot, similarity)` entries: similarity desc, then item id asc.
fn best_first(ids: &[Id], a: &(Slot, i64), b: &(Slot, i64)) -> Ordering {
    b.1.cmp(&a.1).then_with(|| ids[a.0 as usize].cmp(&ids[b.0 as usize]))
}

/// The fingerprint term of a candidate `j` (its id's hash) with count `count`: the row's
/// fingerprint is the XOR of its candidates' terms and [`users_term`] of its item's user count.
fn count_term(j_hash: u64, count: i64) -> u64 {
    mix(j_hash ^ mix(count as u64))
}

/// The fingerprint term of the row's item's user count `n` (none when 0, as for an empty row).
fn users_term(n: i64) -> u64 {
    if n == 0 {
        0
    } else {
        mix(USERS_TAG ^ n as u64)
    }
}

/// Tags that keep the fingerprint terms of a row's own user count, the tested population and the
/// family apart from each other and from candidates' counts.
const USERS_TAG: u64 = 0x9e37_79b9_7f4a_7c15;
const POPULATION_TAG: u64 = 0xbf58_476d_1ce4_e5b9;
const CATALOGUE_TAG: u64 = 0x94d0_49bb_1331_11eb;

/// A 64-bit mix (the splitmix64 finaliser): nearby inputs give unrelated outputs, so distinct
/// inputs collide in a fingerprint with probability about 2^-64.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The rows operator: per-item co-occurrence rows, each re-ranked at its phase times when its
/// inputs changed, emitting only the rows that changed, as upserts.
///
/// Co-occurrence counts are in `unit`s: `unit` is what one user's pair counts.
///
/// A row waits for its next full refresh only while more input can change it: not past the
/// stream's end, once known, nor once the input has closed (so a finite dataflow completes).
pub(super) fn rank_rows(
    inputs: Updates<'_, RowInput>,
    spec: SimilaritySpec,
    tick: Time,
    unit: i64,
    end: StreamEnd,
) -> RowUpserts<'_> {
    let (refresh, full_refresh) = (spec.refresh.millis(), spec.full_refresh().millis());
    let min_support = spec.min_support as i64 * unit;
    inputs.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<_>>, _, _, _>(
        Pipeline,
        "Similarity: Rows",
        move |capability, info| {
            let fresh = || RowsState { inbox: Inbox::default(), table: RowTable { unit, ..RowTable::default() } };
            let state = worker_state::keep(&info.address, fresh);
            state.borrow_mut().inbox.hold_from(&capability);
            state.borrow_mut().table.derive_unsaved();
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
                    let mut refresh_all = false;
                    for (entry, diff) in batch {
                        match entry {
                            RowInput::Pairs(i, changes) => {
                                let i = table.slot(&i, refresh, tick);
                                let mut ranking_may_change = false;
                                let mut any_removed = false;
                                for (j, change) in changes {
                                    let j_hash = j.hashed();
                                    let j = table.slot(&j, refresh, tick);
                                    let change = change * diff as i64;
                                    ranking_may_change |= table.add_pair(i, j, j_hash, change, min_support);
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
                            RowInput::Refresh(i) => {
                                if let Some(i) = table.items.get(&i) {
                                    let row = &mut table.rows[i as usize];
                                    row.refresh_scheduled = false;
                                    row.forced = true;
                                    due.push(i);
                                }
                            }
                            RowInput::RefreshAll => refresh_all = true,
                        }
                    }
                    if refresh_all || table.tests_changed(before, &spec) {
                        dirty.extend(
                            table
                                .rows
                                .iter()
                                .enumerate()
                                .filter_map(|(i, row)| row.ranks_anything().then_some(i as Slot)),
                        );
                    }
                    if refresh_all {
                        for &i in &dirty {
                            table.rows[i as usize].forced = true;
                        }
                    }
                    recounted.sort_unstable();
                    recounted.dedup();
                    for &j in &recounted {
                        if table.rows[j as usize].ranks_anything() {
                            dirty.insert(j);
                        }
                    }
                    // A change of a candidate's own user count alone does not re-rank a row: the
                    // row keeps the similarities of its last ranking until its own inputs move.
                    shrunk.extend(recounted);
                    // Changed rows are ranked at their next phase time: now, or later.
                    for &i in &dirty {
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
                    for &i in &due {
                        shrunk.push(i);
                        // Inputs that changed and changed back leave the row as it was ranked.
                        let inputs = table.inputs_now(i, &spec);
                        let row = &mut table.rows[i as usize];
                        if inputs == row.ranked && !row.forced {
                            continue;
                        }
                        (row.ranked, row.forced) = (inputs, false);
                        let best = rank_row(i, table, &spec);
                        if best != table.rows[i as usize].emitted {
                            let ids = table.items.ids();
                            let neighbours =
                                std::sync::Arc::new(best.iter().map(|&(j, s)| (ids[j as usize].clone(), s)).collect());
                            session.give(((ids[i as usize].clone(), neighbours), time, 1));
                            table.set_emitted(i, best, &mut shrunk);
                        }
                    }
                    drop(session);
                    // Every row that ranks anything waits for its next full refresh time.
                    let input_open = !frontier.frontier().is_empty();
                    let before_end = |at: Time| end.get().is_none_or(|ends| at <= ends.results);
                    for i in dirty.into_iter().chain(due) {
                        let row = &table.rows[i as usize];
                        if row.ranks_anything() && !row.refresh_scheduled && input_open {
                            let item = table.items.id(i).clone();
                            let at = next_refresh(&item, time + 1, full_refresh, tick);
                            if before_end(at) {
                                table.rows[i as usize].refresh_scheduled = true;
                                inbox.schedule(&capability, RowInput::Refresh(item), at);
                            }
                        }
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
            RowInput::Pairs(i, _) | RowInput::Rerank(i) | RowInput::Refresh(i) => Place::Key(i.hashed()),
            RowInput::Users(_) | RowInput::Population | RowInput::RefreshAll => Place::Everywhere,
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
                let owned = { to.owns(from.items.ids()[i].hashed()) };
                if owned && !row.is_empty() {
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
