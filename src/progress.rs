//! How far a stream has got, for every room that needs to know: where a finite stream ends
//! ([`Ends`], by [`EndRule`]), what each worker knows of it ([`StreamEnd`]), and when a change is
//! settled in the similarity table and the popular pool ([`settled`]).
//!
//! It sits below the source, the dataflow, the sinks and the server, which all read it; the
//! ingest operator is the one that records the end.

use std::cell::Cell;
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use crate::event::Millis;
use crate::event_time::ceil_to;
use crate::window::Hopping;

/// The time by which the similarity table and the popular pool reflect every change made at `t`:
/// a user's history takes a change in at its next refresh phase, and the rows it touches at
/// theirs (each row at its own phase), each within one `refresh`.
pub fn settled(t: Millis, refresh: Millis) -> Millis {
    ceil_to(t, refresh) + 2 * refresh
}

/// Where a finite stream ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ends {
    /// The time results are final as of: the tick of the largest event time, rounded up to the
    /// similarity refresh cadence and the settling time of its staggered phases, so the final
    /// results reflect every event. Later recommendation
    /// changes come only from windows expiring past the end of the data and are not reported.
    pub results: Millis,
    /// Once the output frontier reaches this time, every result (including the last hot-items
    /// windows) has been reported and the run can stop.
    pub complete: Millis,
}

/// How the end of the stream is computed from the last event times.
#[derive(Clone, Copy, Debug)]
pub struct EndRule {
    /// The dataflow's tick.
    pub tick: Millis,
    /// The similarity refresh cadence (the tick when there are no recommendations).
    pub alignment: Millis,
    /// How long after an aligned time the similarity table reflects every change made at it
    /// (two refreshes, for its staggered phases; 0 without recommendations).
    pub settle: Millis,
    /// The hot-items windows, whose last ones fire after the data ends.
    pub hopping: Option<Hopping>,
}

impl EndRule {
    /// The rule for `pipeline`, whose hot-items windows (if they are computed) are `hopping`.
    pub fn of(pipeline: &crate::spec::Pipeline, hopping: Option<Hopping>) -> EndRule {
        let tick = pipeline.time.tick.millis();
        let refresh = pipeline.recommend.as_ref().map(|r| r.similarity.refresh.millis());
        EndRule { tick, alignment: refresh.unwrap_or(tick), settle: refresh.map_or(0, |r| settled(0, r)), hopping }
    }

    /// The ends of a stream whose largest event time is `max_seen` and whose input frontier is at
    /// `frontier`.
    pub fn ends(&self, max_seen: Option<Millis>, frontier: Millis) -> Ends {
        let last_tick = max_seen.map_or(0, |m| ceil_to(m, self.tick));
        let results = ceil_to(last_tick.max(frontier), self.alignment) + self.settle;
        let last_fire = match (self.hopping, max_seen) {
            (Some(hop), Some(max)) => hop.fire_time(hop.pane_end(max) + hop.size - hop.slide),
            _ => 0,
        };
        Ends { results, complete: results.max(last_fire) + 1 }
    }
}

impl Ends {
    /// The ends of a stream made of two parts that ended at `self` and `other`.
    pub(crate) fn merge(self, other: Ends) -> Ends {
        Ends { results: self.results.max(other.results), complete: self.complete.max(other.complete) }
    }
}

/// The end of a finite stream as this worker knows it, and whether this worker's source has
/// recorded its progress.
#[derive(Clone, Debug, Default)]
pub struct StreamEnd {
    ends: Rc<Cell<Option<Ends>>>,
    drained: Rc<Cell<bool>>,
}

impl StreamEnd {
    /// The ends, once every reading worker's input is exhausted.
    pub fn get(&self) -> Option<Ends> {
        self.ends.get()
    }

    /// Whether this worker has nothing more to read or acknowledge: its source (if any) ended and
    /// learned that every result depending on it is written.
    pub fn drained(&self) -> bool {
        self.drained.get()
    }

    /// Records the ends (by the ingest operator, once every reader has reported).
    pub(crate) fn set(&self, ends: Option<Ends>) {
        self.ends.set(ends);
    }

    /// Records whether this worker's source is drained.
    pub(crate) fn set_drained(&self, drained: bool) {
        self.drained.set(drained);
    }
}
