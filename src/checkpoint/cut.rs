//! How the workers agree on a consistent cut of the running dataflow, with no worker stopping
//! the others for longer than it takes the dataflow to catch up with what was already read.
//!
//! Every worker's ingest operator follows the same steps for checkpoint `n`, telling the others
//! where it stands ([`CutNews`], carried on the readers' progress broadcast):
//!
//! 1. **Stop.** Worker 0 starts checkpoint `n` when its interval has passed; every other worker
//!    stops as soon as it hears of it. A stopped worker reads nothing and keeps its capability
//!    where it is, and scheduled work stops being released the moment the frontier *reaches*
//!    its time: it waits until the frontier *passes* it ([`Holding`]).
//! 2. **Cross.** Once every worker has stopped, each knows every stopped capability and takes
//!    the largest as the cut `C`. A worker below `C` reads on until its capability reaches `C`
//!    (event times are never forced: a capability only moves as its lanes' watermarks do), then
//!    stops again. Every record a reader sent for this checkpoint therefore went out at a time
//!    before `C`, and everything it reads afterwards at a time at or after its capability.
//! 3. **Save.** Once every worker has crossed, the least crossed capability `F` is the furthest
//!    any frontier can get while they stay stopped. When a worker's output frontier reaches `F`,
//!    every message sent before the stop has been taken in, and nothing new can be sent: no
//!    reader reads, operators only act on times the frontier has passed, and due work waits for
//!    the frontier to pass its time. Each worker's operators are quiet: it saves their state.
//! 4. **Resume.** Once every worker has saved, all read on.
//!
//! A worker that reads nothing (or whose part of the stream has ended) follows the same steps; at
//! the cross it moves its capability straight to `C`, since it sends no records. So does a reader
//! whose lanes are all idle (Kafka partitions without new records), as it follows live readers
//! outside checkpoints: its lanes might never reach `C` while the stopped readers wait. Once the end of
//! the stream is known, a checkpoint under way is abandoned: the run is about to finish.
//!
//! [`CutProtocol`] is that state machine for one worker, free of timely so it can be tested on
//! its own; the ingest operator feeds it capabilities and news and does what it says.

use std::cell::Cell;
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use crate::event_time::Time;

/// Where one worker stands in the checkpoint protocol, as it tells the others.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CutNews {
    /// The checkpoint it is taking or last took; 0 before the first.
    pub checkpoint: u64,
    /// Its capability when it stopped for `checkpoint`.
    pub stopped_at: Time,
    /// Its capability once it crossed the cut, when it has.
    pub crossed_at: Option<Time>,
    /// Whether it has saved its state for `checkpoint`.
    pub saved: bool,
}

/// What a worker does in the current step of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutStep {
    /// Read and advance as usual.
    Run,
    /// Neither read nor move the capability.
    Wait,
    /// Read and advance, but only until the capability reaches `cut`; a worker that reads
    /// nothing moves its capability straight there.
    CrossTo {
        /// The cut.
        cut: Time,
    },
    /// Save this worker's state now: every frontier has reached `frontier`, the cut's.
    Save {
        /// The checkpoint.
        checkpoint: u64,
        /// The cut every capability reached.
        cut: Time,
        /// The least capability after the cut: where every frontier stands while saving.
        frontier: Time,
    },
}

/// Whether the due work of this worker's operators waits for the frontier to pass its time
/// rather than reach it: raised while a checkpoint is under way, so that no operator sends
/// anything the saved state would miss. Shared by a worker's ingest operator and its
/// operators' schedules; a worker without checkpoints never raises it.
#[derive(Clone, Default)]
pub struct Holding(Rc<Cell<bool>>);

impl Holding {
    /// Whether due work waits for the frontier to pass its time.
    pub fn get(&self) -> bool {
        self.0.get()
    }

    fn set(&self, holding: bool) {
        self.0.set(holding);
    }
}

/// One worker's side of the protocol.
pub struct CutProtocol {
    worker: usize,
    workers: usize,
    news: CutNews,
    /// The cut of the checkpoint under way, once every worker has stopped.
    cut: Option<Time>,
    holding: Holding,
}

impl CutProtocol {
    /// Worker `worker` of `workers`, raising `holding` while a checkpoint is under way.
    pub fn new(worker: usize, workers: usize, holding: Holding) -> CutProtocol {
        CutProtocol { worker, workers, news: CutNews::default(), cut: None, holding }
    }

    /// This worker's news, for the others.
    pub fn news(&self) -> CutNews {
        self.news
    }

    /// Whether a checkpoint is under way on this worker: it holds due work back from the stop
    /// until it resumes (or abandons the checkpoint).
    pub fn busy(&self) -> bool {
        self.holding.get()
    }

    /// Worker 0 starts the next checkpoint at its capability `at` (when its interval has passed
    /// and no checkpoint is under way).
    pub fn start(&mut self, at: Time) {
        debug_assert!(self.worker == 0 && !self.busy());
        self.stop(self.news.checkpoint + 1, at);
    }

    /// Abandons a checkpoint under way: the end of the stream is known, and the run finishes.
    pub fn abandon(&mut self) {
        if self.busy() {
            self.news.saved = true;
            self.news.crossed_at = self.news.crossed_at.or(Some(self.news.stopped_at));
            self.cut = None;
            self.holding.set(false);
        }
    }

    /// The next step for this worker, whose capability is at `capability`, given every worker's
    /// latest news (its own included or not; indexed by worker) and whether its output frontier
    /// has reached `completed(time)`.
    pub fn step(&mut self, capability: Time, peers: &[Option<CutNews>], completed: impl Fn(Time) -> bool) -> CutStep {
        let started_elsewhere = peers.iter().flatten().map(|news| news.checkpoint).max().unwrap_or(0);
        if !self.busy() {
            if started_elsewhere > self.news.checkpoint {
                self.stop(started_elsewhere, capability);
            } else {
                return CutStep::Run;
            }
        }
        let n = self.news.checkpoint;
        let past = |news: &CutNews| news.checkpoint > n;
        if self.cut.is_none() {
            if !self.all(peers, |news| news.checkpoint >= n) {
                return CutStep::Wait;
            }
            let stops = (0..self.workers).filter_map(|w| self.news_of(w, peers)).filter(|news| news.checkpoint == n);
            self.cut = stops.map(|news| news.stopped_at).max();
        }
        let cut = self.cut.expect("set above");
        if self.news.crossed_at.is_none() {
            if capability < cut {
                return CutStep::CrossTo { cut };
            }
            self.news.crossed_at = Some(capability);
        }
        if !self.news.saved {
            if !self.all(peers, |news| past(news) || news.crossed_at.is_some()) {
                return CutStep::Wait;
            }
            let crossed = (0..self.workers).filter_map(|w| self.news_of(w, peers)).filter(|news| news.checkpoint == n);
            let frontier = crossed.filter_map(|news| news.crossed_at).min().unwrap_or(capability);
            if !completed(frontier) {
                return CutStep::Wait;
            }
            return CutStep::Save { checkpoint: n, cut, frontier };
        }
        if self.all(peers, |news| past(news) || news.saved) {
            self.cut = None;
            self.holding.set(false);
            return CutStep::Run;
        }
        CutStep::Wait
    }

    /// Records that this worker has saved its state for the checkpoint under way.
    pub fn saved(&mut self) {
        self.news.saved = true;
    }

    fn stop(&mut self, checkpoint: u64, at: Time) {
        self.news = CutNews { checkpoint, stopped_at: at, crossed_at: None, saved: false };
        self.cut = None;
        self.holding.set(true);
    }

    /// Whether every worker's news satisfies `check`; a worker not heard from yet does not.
    fn all(&self, peers: &[Option<CutNews>], check: impl Fn(&CutNews) -> bool) -> bool {
        (0..self.workers).all(|w| self.news_of(w, peers).is_some_and(|news| check(&news)))
    }

    fn news_of(&self, worker: usize, peers: &[Option<CutNews>]) -> Option<CutNews> {
        if worker == self.worker {
            Some(self.news)
        } else {
            peers.get(worker).copied().flatten()
        }
    }
}
