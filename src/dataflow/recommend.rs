//! User-item scores and per-user top-k lists.
//!
//! `score(u, j) = Σ w(u, i) · sim(i, j)` over the user's seeds `i`: their `top_preferences` most
//! preferred items with `w = pref(u, i)`, or with `seeds = "recent"` their `top_preferences` most
//! recently touched items with a positive preference and `w = pref(u, i) · recency_decay^r` for
//! the `r`-th most recent; excluded pairs never appear. With a `popularity_prior` `p`, each item
//! of the popular pool also gains `p · W · count / top_count` ([`prior_term`], `W` the sum of the
//! seed weights), and then loses `long_tail · count / top_count` of its score ([`demote`]).
//!
//! Ranking: scored items by score desc, then item asc (with `diversity`, re-ranked by maximal
//! marginal relevance among the `4k` best, `diversify`); then, for users with fewer than `k`
//! scored candidates, fill-ins from the windowed popular items (a pool of `4k`, refreshed every
//! `popular_refresh`) by popularity (count desc, then item asc), skipping items already listed
//! or excluded.
//!
//! **When a list is recomputed.** A user's list is recomputed whenever the user's inputs change:
//! their top preferences (every event of theirs, and every window expiry that changes them) or
//! their excluded items. It is computed with the similarity and popularity as of that moment; a
//! similarity refresh alone does not re-score users. Re-scoring every user whose seed items moved
//! on each refresh would redo the whole `users × M × N` product every refresh; scoring at the
//! user's own changes keeps the work proportional to the events.
//!
//! One operator per worker keeps everything about its users (spread by hash): their blended
//! preferences, exclusions, top preferences and last list. The similarity rows and the popular
//! pool are small (`items × N` and `4k`), so every worker keeps a full copy of them.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use rustc_hash::FxHashMap as HashMap;

use differential_dataflow::{AsCollection, Hashable};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Capability, Concat, Exchange};

use super::preference::{decay_factors, saturating_i64, seed_weight, Contribution, Touches};
use super::ranking::{adjust, adjust_ordered, keep_best};
use super::similarity::Neighbours;
use super::{Coll, Time};
use crate::checkpoint::rescale::{owned_entries, Owner, Place, Placed, Rescale};
use crate::checkpoint::shared::SharedMap;
use crate::checkpoint::worker_state::{self, Freeze};
use crate::event::Id;
use crate::event_time::ceil_to;
use crate::progress::settled;
use crate::progress::StreamEnd;
use crate::results::{Because, RecItem, SCORE_SCALE};
use crate::schedule::{Due, Inbox};
use crate::spec::{RecommendSpec, Seeds, ShortTermWindow};

/// How many popular items the fallback pool holds, per `k`.
pub const POOL_PER_K: usize = 4;

/// The term one preferred item contributes to a candidate's score, in millionths.
pub fn score_term(preference: i64, similarity: i64) -> i64 {
    // The product fits in 64 bits nearly always, and a 128-bit division is a slow library call.
    match preference.checked_mul(similarity) {
        Some(product) => product / SCORE_SCALE,
        None => ((preference as i128 * similarity as i128) / SCORE_SCALE as i128) as i64,
    }
}

/// One input of the users operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum UserInput {
    /// A part of an event's effect on a user.
    Contribution(Id, Contribution),
    /// `(item, neighbours)`: a row of the similarity table replaced, or removed when empty (on
    /// every worker).
    Similar(Id, Neighbours),
    /// `(rank, item, count)`: an entry of the popular pool (on every worker).
    Popular(usize, Id, i64),
    /// Look at a user again: their session may have closed or become forgettable.
    Wake(Id),
    /// Re-score every user (on every worker): a user was forgotten, and the similarity table and
    /// popular pool no longer hold what their events gave them.
    RescoreAll,
    /// A user's list as it stood at a restored cut: it replaces the list last reported.
    Restore(Id, Vec<RecItem>),
}

/// Which of a user's items seed their scores, and with what weight.
#[derive(Clone, Debug)]
struct Seeding {
    /// How many seeds (M).
    count: usize,
    /// Most preferred or most recent.
    rule: Seeds,
    /// With [`Seeds::Recent`]: the weight of the `r`-th most recent seed relative to the most
    /// recent, in millionths (`recency_decay^r`).
    recency: Vec<i64>,
}

impl Seeding {
    /// The seeding of `spec`.
    fn of(spec: &RecommendSpec) -> Seeding {
        let decay = crate::spec::to_thousandths(spec.recency_decay);
        Seeding {
            count: spec.top_preferences,
            rule: spec.seeds,
            recency: decay_factors(SCORE_SCALE, decay, spec.top_preferences),
        }
    }
}

/// How a user's list is scored.
#[derive(Clone, Debug)]
struct Scoring {
    /// Length of each list.
    k: usize,
    /// The user's seeds.
    seeding: Seeding,
    /// The popularity prior in thousandths.
    prior: i64,
    /// The diversity trade-off in thousandths.
    diversity: i64,
    /// The long-tail demotion in thousandths.
    long_tail: i64,
}

/// Session windows: when a user's session closes, and when its events can be forgotten.
#[derive(Clone, Copy, Debug)]
pub struct Sessions {
    /// Inactivity that ends a session.
    pub gap: Time,
    /// The pipeline's allowed lateness: how far back a late event can still reach.
    pub lateness: Time,
    /// The dataflow tick.
    pub tick: Time,
}

impl Sessions {
    /// When a session whose last event is at `last` closes.
    fn close_time(&self, last: u64) -> Time {
        ceil_to(last.saturating_add(self.gap), self.tick)
    }

    /// The earliest event time an event arriving after time `now` can have, less the gap: a
    /// session that ended before this can never grow again.
    fn settled_before(&self, now: Time) -> u64 {
        now.saturating_sub(self.tick + self.lateness + self.gap)
    }

    /// When a session whose last event is at `last` can be forgotten.
    fn forget_time(&self, last: u64) -> Time {
        ceil_to(last.saturating_add(self.gap + self.lateness), self.tick) + self.tick + 1
    }
}

/// What reaches the users operator besides events and similarity.
#[derive(Clone, Default)]
pub struct Control<'scope> {
    /// Users forgotten, each at the time its retraction is due: every user is re-scored once
    /// the similarity and popular pool have taken it in.
    pub forgets: Option<Coll<'scope, Id>>,
    /// Lists as they stood at a restored cut, each at a time before the cut: they replace what
    /// the users operator reported, which it computed from only part of the history (a list is
    /// scored against the similarity as of the user's last change).
    pub restored: Option<Coll<'scope, (Id, Vec<RecItem>)>>,
}

/// How [`recommendations`] scores and ranks, and the pipeline's timing it runs by: everything
/// but the collections it reads.
#[derive(Clone, Debug)]
pub struct RecommendSettings<'a> {
    /// The lists' length, seeds, prior, diversity and windows, and the similarity refresh.
    pub spec: &'a RecommendSpec,
    /// Whether each scored item carries the seeds that lead to it ([`RecItem::because`]).
    pub explain: bool,
    /// The dataflow tick.
    pub tick: Time,
    /// The pipeline's allowed lateness: how far back a late event can still reach a session.
    pub lateness: Time,
    /// The end of a finite stream: pool refreshes and re-scorings due after its last results are
    /// dropped.
    pub end: StreamEnd,
}

/// `(user, list)`: each user's current top-k, from their events' contributions, the similarity
/// table and the popular pool ([`popular_pool`](super::popular::popular_pool)). After each forgotten user in `control.forgets`, every user is re-scored
/// once the forgotten user's events are out of the table and the pool ([`settled`]).
/// With `settings.explain`, each scored item carries the seeds that lead to it
/// ([`RecItem::because`]).
///
/// ```
/// use std::sync::Arc;
///
/// use differential_dataflow::input::Input;
/// use recflow::dataflow::popular::{popular_pool, PoolSpec};
/// use recflow::dataflow::preference::contributions;
/// use recflow::dataflow::recommend::{recommendations, Control, RecommendSettings};
/// use recflow::progress::StreamEnd;
/// use recflow::results::RecItem;
/// use recflow::spec::{RecommendSpec, Weights};
/// use recflow::{Action, Event, Id};
/// use timely::dataflow::operators::capture::{Capture, Extract};
///
/// // Lists of 3. A view weighs 1, blended 0.7 for an hour and 0.3 for ever; seen items are excluded.
/// let spec = RecommendSpec { k: 3, ..RecommendSpec::default() };
/// let captured = timely::example(move |scope| {
///     let view = |user, item| Event {
///         user: Id::Num(user), item: Id::Num(item), category: None, action: Action::View, value: None, ts: 0,
///     };
///     let (_events, events) = scope.new_collection_from([view(1, 7), view(2, 5)]);
///     // The similarity table as upserts, here one row at time 0: item 7 leads to 8 (0.5) and 9 (0.25).
///     let row = (Id::Num(7), Arc::new(vec![(Id::Num(8), 500_000), (Id::Num(9), 250_000)]));
///     let (_rows, rows) = scope.new_collection_from([row]);
///     let end = StreamEnd::default();
///     let parts = contributions(events.clone(), &spec, &Weights::default(), 1_000, end.clone());
///     let pool = popular_pool(events, PoolSpec::of(&spec, 1_000), end.clone());
///     let settings = RecommendSettings { spec: &spec, explain: false, tick: 1_000, lateness: 0, end };
///     recommendations(pool, parts, rows.inner, Control::default(), settings).inner.capture()
/// });
/// // Each list as it is set, by time and user (the retractions of replaced lists left out).
/// let updates = captured.extract().into_iter().flat_map(|(_, updates)| updates);
/// let mut lists: Vec<_> =
///     updates.filter(|(_, _, diff)| *diff > 0).map(|((user, list), time, _)| (time, user, list)).collect();
/// lists.sort();
/// let rec = |item, score| RecItem { item: Id::Num(item), score, fallback: score == 0, because: vec![] };
/// assert_eq!(lists, [
///     // User 1 prefers 7 (1.0): 8 and 9 by score, then the popular 5 fills in (7 is seen).
///     (0, Id::Num(1), vec![rec(8, 500_000), rec(9, 250_000), rec(5, 0)]),
///     // Nothing is similar to user 2's 5: the popular 7 fills in.
///     (0, Id::Num(2), vec![rec(7, 0)]),
///     // An hour on, the views have left the short-term and popular windows: user 1 prefers 7 at
///     // 0.3, and no popular item is left to fill in (user 2's list is retracted).
///     (3_600_000, Id::Num(1), vec![rec(8, 150_000), rec(9, 75_000)]),
/// ]);
/// ```
pub fn recommendations<'scope>(
    pool: Coll<'scope, (usize, Id, i64)>,
    contributions: Coll<'scope, (Id, Contribution)>,
    similar: super::similarity::RowUpserts<'scope>,
    control: Control<'scope>,
    settings: RecommendSettings<'_>,
) -> Coll<'scope, (Id, Vec<RecItem>)> {
    let RecommendSettings { spec, explain, tick, lateness, end } = settings;
    let Control { forgets, restored } = control;
    let refresh = spec.similarity.refresh.millis();
    let rescore = forgets.map(|forgets| {
        super::retime(forgets.map(|_| ()), "RescoreAfterForget", move |_, t| settled(t, refresh), end.clone())
    });
    let mut per_user = contributions.map(|(user, contribution)| UserInput::Contribution(user, contribution));
    if let Some(restored) = restored {
        per_user = per_user.concat(restored.map(|(user, list)| UserInput::Restore(user, list)));
    }
    let per_user = per_user.inner.exchange(|(input, _, _): &(UserInput, Time, isize)| match input {
        UserInput::Contribution(user, _) | UserInput::Wake(user) | UserInput::Restore(user, _) => user.hashed(),
        _ => 0,
    });
    use timely::dataflow::operators::vec::Map;
    let mut shared = similar
        .map(|((item, neighbours), time, diff)| (UserInput::Similar(item, neighbours), time, diff))
        .concat(pool.map(|(rank, item, count)| UserInput::Popular(rank, item, count)).inner);
    if let Some(rescore) = rescore {
        shared = shared.concat(rescore.map(|()| UserInput::RescoreAll).inner);
    }
    let shared = shared.broadcast();
    let sessions = match spec.short_term {
        ShortTermWindow::Session { gap } => Some(Sessions { gap: gap.millis(), lateness, tick }),
        _ => None,
    };
    let scoring = Scoring {
        k: spec.k,
        seeding: Seeding::of(spec),
        prior: crate::spec::to_thousandths(spec.popularity_prior),
        diversity: crate::spec::to_thousandths(spec.diversity),
        long_tail: crate::spec::to_thousandths(spec.long_tail),
    };
    score_users(per_user.concat(shared), scoring, sessions, explain).as_collection()
}

/// What the users operator keeps per user.
#[derive(Clone, Default, Serialize, Deserialize)]
struct UserState {
    /// Blended preference per item, in millionths (without session parts).
    preferences: HashMap<Id, i128>,
    /// The short-term part of each preference (kept only for explanations).
    short_term: HashMap<Id, i128>,
    /// With session windows: the user's recent events by time, `(item, short-term part)`.
    session_events: BTreeMap<u64, Vec<(Id, i64)>>,
    /// The last event time the session timers were set for.
    session_last: Option<u64>,
    /// Exclusion marks per item.
    excluded: HashMap<Id, i64>,
    /// With recent seeds: the user's touches.
    touches: Touches,
    /// The top preferences the current list was computed from.
    seeds: Vec<(Id, i64)>,
    /// The list last reported.
    reported: Vec<RecItem>,
}

impl UserState {
    /// The short-term parts of the user's current session at `now`, per item (empty when the
    /// session has closed).
    fn session_preferences(&self, sessions: &Sessions, now: Time) -> HashMap<Id, i128> {
        let mut parts: HashMap<Id, i128> = HashMap::default();
        let Some(&last) = self.session_events.keys().next_back() else { return parts };
        if now >= sessions.close_time(last) {
            return parts;
        }
        let mut later = last;
        for (&ts, events) in self.session_events.range(..=last).rev() {
            if later - ts >= sessions.gap {
                break;
            }
            for (item, part) in events {
                *parts.entry(item.clone()).or_default() += *part as i128;
            }
            later = ts;
        }
        parts
    }

    /// Removes one event of the session at `ts` (a forgotten user's).
    fn forget_session_event(&mut self, ts: u64, item: &Id, short: i64) {
        let Some(events) = self.session_events.get_mut(&ts) else { return };
        if let Some(at) = events.iter().position(|(i, s)| i == item && *s == short) {
            events.swap_remove(at);
        }
        if events.is_empty() {
            self.session_events.remove(&ts);
        }
    }

    /// Forgets sessions that ended before `before`: no event can join them any more.
    fn forget_sessions(&mut self, sessions: &Sessions, before: u64) {
        let mut cut = None;
        let mut previous: Option<u64> = None;
        for &ts in self.session_events.keys() {
            if previous.is_some_and(|p| ts - p >= sessions.gap) {
                // `previous` ended a session.
                match previous {
                    Some(p) if p < before => cut = Some(p),
                    _ => break,
                }
            }
            previous = Some(ts);
        }
        if previous.is_some_and(|p| p < before) {
            cut = previous;
        }
        if let Some(cut) = cut {
            self.session_events = self.session_events.split_off(&(cut + 1));
        }
    }

    /// Adds `diff` times one part of an event's effect: to the preferences (and with `explain`
    /// their short-term parts), the exclusions, with [`Seeds::Recent`] the touches, and the
    /// session. Returns whether an exclusion appeared or vanished.
    fn add_part(&mut self, part: &Contribution, diff: isize, seeds: Seeds, explain: bool) -> bool {
        // In 128 bits: a consolidated update may repeat one large part.
        add(&mut self.preferences, &part.item, part.preference as i128 * diff as i128);
        if explain {
            add(&mut self.short_term, &part.item, part.short as i128 * diff as i128);
        }
        let crossed = add(&mut self.excluded, &part.item, part.excluded * diff as i64);
        if let (Seeds::Recent, Some(ts)) = (seeds, part.touch) {
            self.touches.add(&part.item, ts, diff as i64);
        }
        if let (Some(short), Some(ts)) = (part.session, part.touch) {
            if diff > 0 {
                self.session_events.entry(ts).or_default().push((part.item.clone(), short));
            } else {
                // A forgotten event leaves its session too.
                self.forget_session_event(ts, &part.item, short);
            }
        }
        crossed
    }

    /// Brings the user's sessions to `now`: forgets those no late event can join, calls `wake`
    /// with each later time to look at the user again (when a new last session closes and when
    /// it can be forgotten), and returns the current session's short-term parts.
    fn advance_sessions(&mut self, rule: &Sessions, now: Time, mut wake: impl FnMut(Time)) -> HashMap<Id, i128> {
        self.forget_sessions(rule, rule.settled_before(now));
        let last = self.session_events.keys().next_back().copied();
        if let Some(last) = last.filter(|l| self.session_last != Some(*l)) {
            // Look again when the session closes and when it can be forgotten.
            for at in [rule.close_time(last), rule.forget_time(last)] {
                if at > now {
                    wake(at);
                }
            }
        }
        self.session_last = last;
        self.session_preferences(rule, now)
    }

    /// Whether nothing about the user is left to keep.
    fn holds_nothing(&self) -> bool {
        self.preferences.is_empty()
            && self.excluded.is_empty()
            && self.reported.is_empty()
            && self.session_events.is_empty()
            && self.touches.is_empty()
    }

    /// The user's seeds under `seeding`, with their weights.
    fn seeds(&self, seeding: &Seeding, session: &HashMap<Id, i128>) -> Vec<(Id, i64)> {
        match seeding.rule {
            Seeds::Preference => self.top_preferences(seeding.count, session),
            Seeds::Recent => self.recent_preferences(seeding, session),
        }
    }

    /// The `seeding.count` most recently touched items with a positive preference (latest touch
    /// desc, item asc), session parts included, each weighted by its preference (at most
    /// [`super::preference::MAX_SEED_WEIGHT`]) times `decay^r` for the `r`-th most recent.
    fn recent_preferences(&self, seeding: &Seeding, session: &HashMap<Id, i128>) -> Vec<(Id, i64)> {
        let mut combined: HashMap<&Id, i128> = self.preferences.iter().map(|(item, p)| (item, *p)).collect();
        for (item, part) in session {
            *combined.entry(item).or_default() += part;
        }
        let latest = |item: &Id| self.touches.latest(item).unwrap_or(0);
        let mut ranked: Vec<(std::cmp::Reverse<u64>, &Id, i128)> = combined
            .into_iter()
            .filter(|(_, p)| *p > 0)
            .map(|(item, p)| (std::cmp::Reverse(latest(item)), item, p))
            .collect();
        keep_best(&mut ranked, seeding.count);
        ranked
            .into_iter()
            .zip(&seeding.recency)
            .map(|((_, item, p), factor)| (item.clone(), score_term(seed_weight(p), *factor)))
            .filter(|(_, weight)| *weight > 0)
            .collect()
    }

    /// The `m` items with the highest positive preference (preference desc, item asc), session
    /// parts included, each weighted by its preference (at most
    /// [`super::preference::MAX_SEED_WEIGHT`]).
    fn top_preferences(&self, m: usize, session: &HashMap<Id, i128>) -> Vec<(Id, i64)> {
        let mut ranked: Vec<(i128, &Id)> = if session.is_empty() {
            self.preferences.iter().filter(|(_, p)| **p > 0).map(|(item, p)| (-p, item)).collect()
        } else {
            let mut combined: HashMap<&Id, i128> = self.preferences.iter().map(|(item, p)| (item, *p)).collect();
            for (item, part) in session {
                *combined.entry(item).or_default() += part;
            }
            combined.into_iter().filter(|(_, p)| *p > 0).map(|(item, p)| (-p, item)).collect()
        };
        keep_best(&mut ranked, m);
        ranked.into_iter().map(|(negated, item)| (item.clone(), seed_weight(-negated))).collect()
    }
}

/// Adds `diff` to a counter; whether it crossed zero (appeared or vanished).
fn add<V>(map: &mut HashMap<Id, V>, key: &Id, diff: V) -> bool
where
    V: Copy + Default + PartialEq + std::ops::AddAssign,
{
    let zero = V::default();
    if diff == zero {
        return false;
    }
    let (before, after) = adjust(map, key.clone(), diff);
    (before == zero) != (after == zero)
}

type UserUpdates<'scope> = timely::dataflow::Stream<'scope, Time, Vec<(UserInput, Time, isize)>>;
type ListUpdates<'scope> = timely::dataflow::Stream<'scope, Time, Vec<((Id, Vec<RecItem>), Time, isize)>>;

/// The users operator: applies each completed time's updates in time order and re-scores the
/// users whose seeds or exclusions changed at that time.
fn score_users(
    updates: UserUpdates<'_>,
    scoring: Scoring,
    sessions: Option<Sessions>,
    explain: bool,
) -> ListUpdates<'_> {
    let mut users = Users {
        scoring,
        sessions,
        explain,
        inbox: Inbox::default(),
        similar: SharedMap::default(),
        pool: BTreeMap::new(),
        per_user: SharedMap::default(),
        restored: Vec::new(),
    };
    updates.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<_>>, _, _, _>(
        Pipeline,
        "Users",
        move |capability, info| {
            if let Some(saved) = worker_state::restored::<SavedUsers>(&info.address) {
                users.take_saved(saved);
            }
            users.inbox.hold_from(&capability);
            let users = Rc::new(RefCell::new(users));
            let saved = Rc::clone(&users);
            worker_state::register(&info.address, Box::new(move || saved.borrow_mut().freeze()));
            move |(input, frontier), output| {
                let users = &mut *users.borrow_mut();
                users.inbox.absorb(input);
                while let Some(Due { time, capability, updates }) = users.inbox.next_complete(frontier) {
                    let (touched, rescore_all) = users.apply(updates);
                    let mut session = output.session(&capability);
                    // A user's list replaced: the old one out, the new one in (an empty list is none).
                    let mut replace = |user: &Id, old: Vec<RecItem>, list: Vec<RecItem>| {
                        if !old.is_empty() {
                            session.give(((user.clone(), old), time, -1));
                        }
                        if !list.is_empty() {
                            session.give(((user.clone(), list), time, 1));
                        }
                    };
                    for (user, old, list) in users.restored.drain(..) {
                        replace(&user, old, list);
                    }
                    for (user, exclusions_changed) in touched {
                        let force = exclusions_changed || rescore_all;
                        let Some((old, list)) = users.rescore(&user, force, time, &capability) else { continue };
                        replace(&user, old, list);
                    }
                }
            }
        },
    )
}

/// What the users operator keeps on one worker: how it scores, its pending updates, everything
/// about its own users, and its full copies of the similarity table and the popular pool.
struct Users {
    /// How lists are scored.
    scoring: Scoring,
    /// With session windows: when sessions close and can be forgotten.
    sessions: Option<Sessions>,
    /// Whether scored items carry the seeds that lead to them.
    explain: bool,
    /// Updates waiting for their time to complete, and the users' wake-ups.
    inbox: Inbox<UserInput>,
    /// The similarity table: each item's neighbours.
    similar: SharedMap<Id, Neighbours>,
    /// The popular pool.
    pool: Pool,
    /// The worker's users.
    per_user: SharedMap<Id, UserState>,
    /// Restored lists not yet reported, with the lists they replace: `(user, old, new)`.
    restored: Vec<(Id, Vec<RecItem>, Vec<RecItem>)>,
}

/// What a checkpoint saves of the users operator ([`Users::freeze`]) read back: its state, not
/// how it scores.
#[derive(Deserialize)]
struct SavedUsers {
    inbox: Inbox<UserInput>,
    similar: SharedMap<Id, Neighbours>,
    pool: Pool,
    per_user: SharedMap<Id, UserState>,
    restored: Vec<(Id, Vec<RecItem>, Vec<RecItem>)>,
}

/// A user's inputs belong to the user's worker; similarity rows, pool entries and re-scorings
/// reach every worker.
impl Placed for UserInput {
    fn place(&self) -> Place {
        match self {
            UserInput::Contribution(user, _) | UserInput::Wake(user) | UserInput::Restore(user, _) => {
                Place::Key(user.hashed())
            }
            UserInput::Similar(..) | UserInput::Popular(..) | UserInput::RescoreAll => Place::Everywhere,
        }
    }
}

/// Users go to their workers; the full copies of the similarity table and the pool come from
/// old worker 0.
impl Rescale for SavedUsers {
    fn rescale(old: Vec<Self>, to: Owner) -> Self {
        let mut inboxes = Vec::with_capacity(old.len());
        let (mut per_user, mut restored, mut copies) = (Vec::new(), Vec::new(), None);
        for saved in old {
            inboxes.push(saved.inbox);
            per_user.push(saved.per_user);
            restored.extend(saved.restored.into_iter().filter(|(user, _, _)| to.owns_key(user)));
            copies.get_or_insert((saved.similar, saved.pool));
        }
        let (similar, pool) = copies.unwrap_or_default();
        SavedUsers {
            inbox: Inbox::rescale(inboxes, to),
            similar,
            pool,
            per_user: owned_entries(per_user, to),
            restored,
        }
    }
}

impl Users {
    /// What a checkpoint saves, as [`SavedUsers`] reads it back: the same fields in the same order.
    fn freeze(&mut self) -> worker_state::Frozen {
        worker_state::frozen((
            self.inbox.freeze(),
            self.similar.share(),
            self.pool.clone(),
            self.per_user.share(),
            self.restored.clone(),
        ))
    }

    fn take_saved(&mut self, saved: SavedUsers) {
        let SavedUsers { inbox, similar, pool, per_user, restored } = saved;
        (self.inbox, self.similar, self.pool, self.per_user, self.restored) =
            (inbox, similar, pool, per_user, restored);
    }

    /// Applies one time's updates. Returns the users to look at again, in order, each with whether
    /// their exclusions changed, and whether every user is to be re-scored.
    fn apply(&mut self, updates: Vec<(UserInput, isize)>) -> (Vec<(Id, bool)>, bool) {
        // Users whose inputs changed at this time, and whether their exclusions did.
        let mut touched: HashMap<Id, bool> = HashMap::default();
        let mut rescore_all = false;
        for (update, diff) in updates {
            match update {
                // An upsert: the row's new value, or empty when it is gone.
                UserInput::Similar(item, neighbours) => {
                    if neighbours.is_empty() {
                        self.similar.remove(&item);
                    } else {
                        self.similar.insert(item, neighbours);
                    }
                }
                UserInput::Popular(rank, item, count) => adjust_ordered(&mut self.pool, (rank, item, count), diff),
                UserInput::Contribution(user, part) => {
                    let state = self.per_user.get_or_default(user.clone());
                    let crossed = state.add_part(&part, diff, self.scoring.seeding.rule, self.explain);
                    *touched.entry(user).or_default() |= crossed;
                }
                UserInput::Wake(user) => {
                    touched.entry(user).or_default();
                }
                UserInput::RescoreAll => rescore_all = true,
                UserInput::Restore(user, list) if diff > 0 => {
                    let state = self.per_user.get_or_default(user.clone());
                    let old = std::mem::replace(&mut state.reported, list.clone());
                    self.restored.push((user, old, list));
                }
                UserInput::Restore(..) => {}
            }
        }
        if rescore_all {
            for user in self.per_user.keys() {
                touched.entry(user.clone()).or_default();
            }
        }
        let mut touched: Vec<(Id, bool)> = touched.into_iter().collect();
        touched.sort();
        (touched, rescore_all)
    }

    /// Looks at `user` again at `time` (`capability` at or before it): re-ranks their list when
    /// their seeds changed or with `force`, and drops the user once nothing of theirs is left.
    /// Returns `(old, new)` when the list changed.
    fn rescore(
        &mut self,
        user: &Id,
        force: bool,
        time: Time,
        capability: &Capability<Time>,
    ) -> Option<(Vec<RecItem>, Vec<RecItem>)> {
        let state = self.per_user.get_mut(user)?;
        let session_parts = match &self.sessions {
            Some(rule) => state.advance_sessions(rule, time, |at| {
                self.inbox.schedule(capability, UserInput::Wake(user.clone()), at);
            }),
            None => HashMap::default(),
        };
        let seeds = state.seeds(&self.scoring.seeding, &session_parts);
        let mut change = None;
        if seeds != state.seeds || force {
            state.seeds = seeds;
            let explained = self.explain.then_some(&session_parts);
            let list = rank_for_user(state, &self.similar, &self.pool, &self.scoring, explained);
            if list != state.reported {
                let old = std::mem::replace(&mut state.reported, list.clone());
                change = Some((old, list));
            }
        }
        if state.holds_nothing() {
            self.per_user.remove(user);
        }
        change
    }
}

/// The popular pool as the users operator keeps it: `(rank, item, count)` entries.
type Pool = BTreeMap<(usize, Id, i64), isize>;

/// The score the popularity prior gives an item with `count` events when the pool's top item has
/// `top`, for a user whose seed weights sum to `seed_weight`: `prior * seed_weight * count / top`,
/// the prior in thousandths.
/// The term is at most [`MAX_PRIOR_TERM`].
pub fn prior_term(prior: i64, seed_weight: i64, count: i64, top: i64) -> i64 {
    if top <= 0 {
        return 0;
    }
    let term = prior as i128 * seed_weight as i128 * count as i128
        / (top as i128 * crate::event::THOUSANDTHS_PER_UNIT as i128);
    term.clamp(0, MAX_PRIOR_TERM as i128) as i64
}

/// The largest popularity-prior term (2^61): with similarity scores below 10^18
/// ([`super::preference::MAX_SEED_WEIGHT`]), no score reaches 2^62.
pub const MAX_PRIOR_TERM: i64 = 1 << 61;

/// `score` less `long_tail * count / top` of it (`long_tail` in thousandths): the long-tail
/// demotion of a popular item with `count` events when the pool's top item has `top`.
pub fn demote(score: i64, long_tail: i64, count: i64, top: i64) -> i64 {
    score - prior_term(long_tail, score, count, top)
}

/// Maximal marginal relevance: from `ranked` (negated score, item, fill-in; best first), `k`
/// items picked one at a time, each the candidate with the highest `(1 - d) * relevance - d *
/// redundancy` (in millionths; ties by item), where relevance is its score over the best score
/// and redundancy its highest similarity from an item already picked (as that item's similarity
/// row lists it; 0 when it does not). `d` is in thousandths.
fn diversify<'a>(
    ranked: Vec<(i64, &'a Id, bool)>,
    k: usize,
    d: i64,
    similar: &SharedMap<Id, Neighbours>,
) -> Vec<(i64, &'a Id, bool)> {
    let best = ranked.first().map_or(1, |(negated, _, _)| (-negated).max(1)) as i128;
    let at: HashMap<&Id, usize> = ranked.iter().enumerate().map(|(at, (_, item, _))| (*item, at)).collect();
    // Per candidate: its redundancy so far, or `None` once picked.
    let mut redundancy: Vec<Option<i64>> = vec![Some(0); ranked.len()];
    let gain = |negated: i64, redundancy: i64| {
        let relevance = -negated as i128 * SCORE_SCALE as i128 / best;
        (1000 - d as i128) * relevance - d as i128 * redundancy as i128
    };
    let mut picked = Vec::with_capacity(k);
    while picked.len() < k {
        let next = (0..ranked.len())
            .filter_map(|i| Some((gain(ranked[i].0, redundancy[i]?), std::cmp::Reverse(ranked[i].1), i)))
            .max();
        let Some((_, _, i)) = next else { break };
        redundancy[i] = None;
        if let Some(row) = similar.get(ranked[i].1) {
            for (neighbour, similarity) in row.iter() {
                if let Some(Some(r)) = at.get(neighbour).map(|&j| redundancy[j].as_mut()) {
                    *r = (*r).max(*similarity);
                }
            }
        }
        picked.push(ranked[i]);
    }
    picked
}

/// A user's top-k from their seeds, the similarity table and the popular pool; with `explain`
/// (the user's session parts), each scored item says which seeds lead to it.
fn rank_for_user(
    state: &UserState,
    similar: &SharedMap<Id, Neighbours>,
    pool: &Pool,
    scoring: &Scoring,
    explain: Option<&HashMap<Id, i128>>,
) -> Vec<RecItem> {
    if state.seeds.is_empty() {
        return Vec::new();
    }
    let k = scoring.k;
    let rows: Vec<(i64, &Neighbours)> =
        state.seeds.iter().filter_map(|(item, preference)| Some((*preference, similar.get(item)?))).collect();
    // Sized for a quarter of the terms: seeds' rows overlap, and a table sized for every term
    // is mostly empty and too large for the cache.
    let terms: usize = rows.iter().map(|(_, row)| row.len()).sum();
    let mut scores: HashMap<&Id, (i64, i64)> = HashMap::with_capacity_and_hasher(terms / 4, Default::default());
    for (preference, row) in rows {
        for (neighbour, similarity) in row.iter() {
            scores.entry(neighbour).or_default().0 += score_term(preference, *similarity);
        }
    }
    let top = pool.keys().next().map_or(0, |(_, _, count)| *count);
    if scoring.prior > 0 {
        let seed_weights: i64 = state.seeds.iter().map(|(_, weight)| weight).sum();
        for (_, item, count) in pool.keys() {
            scores.entry(item).or_default().1 += prior_term(scoring.prior, seed_weights, *count, top);
        }
    }
    if scoring.long_tail > 0 {
        for (_, item, count) in pool.keys() {
            if let Some((similar, prior)) = scores.get_mut(item) {
                *similar = demote(*similar, scoring.long_tail, *count, top);
                *prior = demote(*prior, scoring.long_tail, *count, top);
            }
        }
    }
    let mut ranked: Vec<(i64, &Id, bool)> = scores
        .into_iter()
        .filter(|(item, (similar, prior))| similar + prior > 0 && !state.excluded.contains_key(*item))
        .map(|(item, (similar, prior))| (-(similar + prior), item, similar == 0))
        .collect();
    if scoring.diversity > 0 {
        keep_best(&mut ranked, k * POOL_PER_K);
        ranked = diversify(ranked, k, scoring.diversity, similar);
    } else {
        keep_best(&mut ranked, k);
    }
    let mut list: Vec<RecItem> = ranked
        .into_iter()
        .map(|(negated, item, popular_only)| RecItem {
            item: item.clone(),
            score: -negated,
            fallback: popular_only,
            because: explain.map(|session| because(state, similar, session, item)).unwrap_or_default(),
        })
        .collect();
    if list.len() < k {
        for (_, item, _) in pool.keys() {
            if list.len() == k {
                break;
            }
            if !state.excluded.contains_key(item) && !list.iter().any(|r| &r.item == item) {
                list.push(RecItem { item: item.clone(), score: 0, fallback: true, because: Vec::new() });
            }
        }
    }
    list
}

/// The seeds of a user's list that lead to `item`, largest contribution first (then seed asc).
fn because(
    state: &UserState,
    similar: &SharedMap<Id, Neighbours>,
    session: &HashMap<Id, i128>,
    item: &Id,
) -> Vec<Because> {
    let mut reasons: Vec<Because> = state
        .seeds
        .iter()
        .filter_map(|(seed, weight)| {
            let row = similar.get(seed)?;
            let &(_, similarity) = row.iter().find(|(neighbour, _)| neighbour == item)?;
            let session = session.get(seed).copied().unwrap_or(0);
            let short_term = state.short_term.get(seed).copied().unwrap_or(0) + session;
            let preference = state.preferences.get(seed).copied().unwrap_or(0) + session;
            Some(Because {
                item: seed.clone(),
                short_term: saturating_i64(short_term),
                long_term: saturating_i64(preference - short_term),
                similarity,
                contribution: score_term(*weight, similarity),
            })
        })
        .collect();
    reasons.sort_by(|a, b| b.contribution.cmp(&a.contribution).then_with(|| a.item.cmp(&b.item)));
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_forgotten_only_when_no_late_event_can_join_them() {
        let rule = Sessions { gap: 10_000, lateness: 5_000, tick: 1_000 };
        let mut state = UserState::default();
        state.session_events.insert(70_000, vec![(Id::Num(1), 10)]);
        state.session_events.insert(85_000, vec![(Id::Num(2), 20)]);
        // After time 100 s an event may still arrive with ts >= 94 s (tick and lateness), which
        // would join the session ending at 85 s (gap 9 s < 10 s) but not the one ending at 70 s.
        state.forget_sessions(&rule, rule.settled_before(100_000));
        assert_eq!(state.session_events.keys().copied().collect::<Vec<_>>(), [85_000]);
        // The session closed at 95 s: no short-term part at 100 s.
        assert!(state.session_preferences(&rule, 100_000).is_empty());
        assert_eq!(state.session_preferences(&rule, 94_000).get(&Id::Num(2)), Some(&20));
    }

    #[test]
    fn a_session_reaches_back_through_short_gaps_only() {
        let rule = Sessions { gap: 10_000, lateness: 0, tick: 1_000 };
        let mut state = UserState::default();
        for (ts, item) in [(10_000, 1), (25_000, 2), (30_000, 3), (39_000, 2)] {
            state.session_events.entry(ts).or_default().push((Id::Num(item), 5));
        }
        let parts = state.session_preferences(&rule, 40_000);
        assert_eq!(parts.get(&Id::Num(2)), Some(&10));
        assert_eq!(parts.get(&Id::Num(3)), Some(&5));
        assert_eq!(parts.get(&Id::Num(1)), None, "15 s gap: an earlier session");
    }
}
