//! The synthetic generator, recflow's embedded default source: a deterministic stream of sessions
//! by users with latent taste clusters over categories, Zipf item popularity, and bounded
//! out-of-order jitter, produced as fast as possible or at a steady rate.
//!
//! Layout of the synthetic world (all derived from the seed):
//! - item `i` (1-based) belongs to category `(i - 1) % categories + 1`; within a category, items are
//!   ranked by a seeded permutation and drawn with Zipf(`zipf`) over their rank;
//! - category `c` belongs to taste cluster `(c - 1) % clusters`; user `u`'s cluster is
//!   [`SynthSource::cluster_of`]; a share `taste` of a user's sessions draw items from the
//!   categories of their cluster, the rest from any category;
//! - a session is a handful of events on few items: views, then sometimes cart, fav and buy of an
//!   item already viewed in the session.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{Arrival, EventSource, Poll, Position, ResumePoint};
use crate::event::{Action, Event, Id, Millis};
use crate::spec::SynthSpec;

/// A small, fast, seedable generator (SplitMix64); stable across releases, unlike external crates.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform integer in `[0, n)`.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// A session in progress.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Session {
    user: u64,
    category: u64,
    remaining: u64,
    viewed: Vec<u64>,
}

/// The generator's world and state.
pub struct SynthSource {
    spec: SynthSpec,
    rng: SplitMix,
    /// Per category, its items in popularity-rank order.
    category_items: Vec<Vec<u64>>,
    /// Cumulative Zipf weights over ranks `0..` (shared by all categories, cut at each one's size).
    zipf_cdf: Vec<f64>,
    sessions: Vec<Session>,
    produced: u64,
    /// With a `rate`: when the first poll came, and how many events had been produced before it
    /// (more than none when the generator was resumed).
    paced_from: Option<(Instant, u64)>,
}

/// The generator's state after the events it produced: with the same `[source.synth]` settings,
/// [`SynthSource::resume`] goes on producing exactly the events that would have come next. The
/// world (items per category, popularity) is not kept: the seed rebuilds it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SynthResume {
    produced: u64,
    random_state: u64,
    sessions: Vec<Session>,
}

impl SynthResume {
    /// How many events the generator had produced.
    pub fn produced(&self) -> u64 {
        self.produced
    }
}

/// Concurrent sessions the generator interleaves.
const CONCURRENT_SESSIONS: usize = 32;

impl SynthSource {
    /// A generator for `spec` (validated by the pipeline).
    pub fn new(spec: &SynthSpec) -> SynthSource {
        let mut rng = SplitMix::new(spec.seed);
        let mut category_items: Vec<Vec<u64>> = vec![Vec::new(); spec.categories as usize];
        for item in 1..=spec.items {
            category_items[((item - 1) % spec.categories) as usize].push(item);
        }
        for items in &mut category_items {
            for i in (1..items.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                items.swap(i, j);
            }
        }
        let longest = category_items.iter().map(Vec::len).max().unwrap_or(1);
        let mut zipf_cdf = Vec::with_capacity(longest);
        let mut total = 0.0;
        for rank in 0..longest {
            total += 1.0 / ((rank + 1) as f64).powf(spec.zipf);
            zipf_cdf.push(total);
        }
        SynthSource {
            spec: spec.clone(),
            rng,
            category_items,
            zipf_cdf,
            sessions: Vec::new(),
            produced: 0,
            paced_from: None,
        }
    }

    /// The generator for `spec` in the state `resume` recorded, which must have been taken with
    /// the same settings (a `rate` may differ: it paces the events, it does not choose them). A
    /// rate counts from the resumed events on.
    pub fn resume(spec: &SynthSpec, resume: &SynthResume) -> SynthSource {
        let mut source = SynthSource::new(spec);
        source.rng = SplitMix(resume.random_state);
        source.sessions = resume.sessions.clone();
        source.produced = resume.produced;
        source
    }

    /// The taste cluster of a user.
    pub fn cluster_of(spec: &SynthSpec, user: u64) -> u64 {
        let mut mix = SplitMix::new(spec.seed ^ user.wrapping_mul(0x9E37_79B9));
        mix.below(spec.clusters)
    }

    /// The taste cluster of a category.
    pub fn cluster_of_category(spec: &SynthSpec, category: u64) -> u64 {
        (category - 1) % spec.clusters
    }

    /// The category of an item.
    pub fn category_of(spec: &SynthSpec, item: u64) -> u64 {
        (item - 1) % spec.categories + 1
    }

    fn draw_item(&mut self, category: u64) -> u64 {
        let items = &self.category_items[(category - 1) as usize];
        let top = self.zipf_cdf[items.len() - 1];
        let x = self.rng.unit() * top;
        let rank = self.zipf_cdf[..items.len()].partition_point(|&c| c <= x).min(items.len() - 1);
        items[rank]
    }

    fn new_session(&mut self) -> Session {
        let spec = &self.spec;
        let user = self.rng.below(spec.users) + 1;
        let category = if self.rng.unit() < spec.taste {
            let cluster = SynthSource::cluster_of(spec, user);
            // Categories of this cluster are cluster+1, cluster+1+clusters, ...
            let in_cluster = (spec.categories - cluster - 1) / spec.clusters + 1;
            cluster + 1 + self.rng.below(in_cluster) * spec.clusters
        } else {
            self.rng.below(spec.categories) + 1
        };
        let remaining = 1 + self.rng.below(2 * spec.session_events - 1);
        Session { user, category, remaining, viewed: Vec::new() }
    }

    /// The next event; the generator never ends.
    pub fn next_event(&mut self) -> Event {
        while self.sessions.len() < CONCURRENT_SESSIONS {
            let session = self.new_session();
            self.sessions.push(session);
        }
        let slot = self.rng.below(self.sessions.len() as u64) as usize;
        let category = self.sessions[slot].category;
        let roll = self.rng.unit();
        let revisit = !self.sessions[slot].viewed.is_empty() && roll < 0.25;
        let (item, action) = if revisit {
            let viewed = &self.sessions[slot].viewed;
            let item = viewed[self.rng.below(viewed.len() as u64) as usize];
            let action = match self.rng.below(10) {
                0..=3 => Action::Cart,
                4..=5 => Action::Fav,
                6..=7 => Action::Buy,
                _ => Action::View,
            };
            (item, action)
        } else {
            let item = self.draw_item(category);
            self.sessions[slot].viewed.push(item);
            (item, Action::View)
        };
        let user = self.sessions[slot].user;
        self.sessions[slot].remaining -= 1;
        if self.sessions[slot].remaining == 0 {
            self.sessions.swap_remove(slot);
        }
        let spec = &self.spec;
        let base = spec.start_ms + self.produced * spec.spacing.millis();
        let jitter = spec.jitter.millis();
        let ts: Millis =
            if jitter == 0 { base } else { (base + self.rng.below(2 * jitter + 1)).saturating_sub(jitter) };
        self.produced += 1;
        Event {
            user: Id::Num(user as i64),
            item: Id::Num(item as i64),
            category: Some(Id::Num(SynthSource::category_of(spec, item) as i64)),
            action,
            value: None,
            ts,
        }
    }
}

impl EventSource for SynthSource {
    fn poll(&mut self, max: usize, out: &mut Vec<Arrival>) -> Poll {
        let allowed = if self.spec.rate == 0 {
            max
        } else {
            let (started, produced_before) = *self.paced_from.get_or_insert((Instant::now(), self.produced));
            let due = produced_before + (started.elapsed().as_secs_f64() * self.spec.rate as f64) as u64;
            (due.saturating_sub(self.produced)).min(max as u64) as usize
        };
        if allowed == 0 {
            return Poll::Idle;
        }
        for _ in 0..allowed {
            let event = self.next_event();
            out.push((Position { lane: 0, offset: self.produced }, Ok(event)));
        }
        Poll::Ready
    }

    fn name(&self) -> String {
        format!("synth:seed={}", self.spec.seed)
    }

    fn resume_point(&self) -> Option<ResumePoint> {
        Some(ResumePoint::Synth(SynthResume {
            produced: self.produced,
            random_state: self.rng.0,
            sessions: self.sessions.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::spec::Span;

    /// Polls `source` until it has delivered `count` arrivals, asking for at most `per_poll` at a
    /// time.
    fn take(source: &mut SynthSource, count: usize, per_poll: usize) -> Vec<Arrival> {
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            if source.poll(per_poll.min(count - out.len()), &mut out) == Poll::Idle {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        out
    }

    /// The generator's resume point, as a checkpoint would store and load it.
    fn stored_resume_point(source: &SynthSource) -> SynthResume {
        let Some(ResumePoint::Synth(point)) = source.resume_point() else { panic!("the generator can always resume") };
        serde_json::from_str(&serde_json::to_string(&point).unwrap()).unwrap()
    }

    #[test]
    fn a_resumed_generator_produces_what_it_would_have_produced() {
        const TOTAL: usize = 3_000;
        for seed in [1, 42, 7_777] {
            for jitter in [Span(0), Span(2_000)] {
                let spec = SynthSpec { seed, jitter, session_events: 3, ..SynthSpec::default() };
                let straight = take(&mut SynthSource::new(&spec), TOTAL, TOTAL);
                for split in [0, 1, 31, 1_000, TOTAL - 1] {
                    let mut first = SynthSource::new(&spec);
                    let mut arrivals = take(&mut first, split, 97);
                    let point = stored_resume_point(&first);
                    assert_eq!(point.produced(), split as u64);
                    arrivals.extend(take(&mut SynthSource::resume(&spec, &point), TOTAL - split, 256));
                    assert!(arrivals == straight, "seed {seed}, jitter {jitter}: resumed after {split} events");
                }
            }
        }
    }

    #[test]
    fn a_rate_paces_a_resumed_generator_from_where_it_resumed() {
        let unpaced = SynthSpec::default();
        let mut first = SynthSource::new(&unpaced);
        let mut arrivals = take(&mut first, 50_000, 4_096);
        let point = stored_resume_point(&first);
        // Counted from its first event, a generator at 2,000 events/s would owe none for 25 s.
        let paced = SynthSpec { rate: 2_000, ..unpaced.clone() };
        let resumed_at = Instant::now();
        arrivals.extend(take(&mut SynthSource::resume(&paced, &point), 200, 200));
        assert!(resumed_at.elapsed() < Duration::from_secs(5), "took {:?}", resumed_at.elapsed());
        assert!(arrivals == take(&mut SynthSource::new(&unpaced), 50_200, 4_096));
    }

    #[test]
    fn same_seed_same_events_and_taste_is_planted() {
        let spec = SynthSpec::default();
        let a: Vec<Event> = {
            let mut s = SynthSource::new(&spec);
            (0..1000).map(|_| s.next_event()).collect()
        };
        let b: Vec<Event> = {
            let mut s = SynthSource::new(&spec);
            (0..1000).map(|_| s.next_event()).collect()
        };
        assert_eq!(a, b);
        let mut s = SynthSource::new(&spec);
        let on_taste = (0..10_000)
            .map(|_| s.next_event())
            .filter(|e| {
                let (Id::Num(u), Some(Id::Num(c))) = (&e.user, &e.category) else {
                    return false;
                };
                SynthSource::cluster_of(&spec, *u as u64) == SynthSource::cluster_of_category(&spec, *c as u64)
            })
            .count();
        // 80% of sessions follow taste, plus 1 in 10 by chance for the rest.
        assert!(on_taste > 7_500, "{on_taste} of 10000 events match the user's taste cluster");
    }
}
