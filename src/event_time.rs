//! Event time: the watermark, lateness, and the dataflow timestamp an accepted event is given.
//!
//! The dataflow's timestamps are event time in milliseconds, rounded up to whole ticks. The
//! watermark is the largest event time seen minus `max_out_of_orderness`; the ingest operator
//! holds its capability at the watermark's tick, so the dataflow's input frontier follows it.
//! An event older than `watermark - allowed_lateness` is late. An event that is not late enters at
//! the tick of `max(ts, watermark)`: on time, it lands at its own tick; behind the watermark but
//! within the allowed lateness, it lands at the current watermark's tick, where it updates
//! (retracts and re-emits) results that were already reported.

use crate::event::Millis;
use crate::spec::TimeSpec;

/// Rounds `t` up to a multiple of `step` (saturating).
pub fn ceil_to(t: Millis, step: Millis) -> Millis {
    match t % step {
        0 => t,
        r => t.saturating_add(step - r),
    }
}

/// Tracks the watermark of one ordered stream of events and classifies each arrival.
#[derive(Clone, Debug)]
pub struct EventClock {
    tick: Millis,
    out_of_orderness: Millis,
    lateness: Millis,
    max_seen: Option<Millis>,
}

impl EventClock {
    /// A clock with no event seen yet.
    pub fn new(spec: &TimeSpec) -> EventClock {
        EventClock {
            tick: spec.tick.millis(),
            out_of_orderness: spec.max_out_of_orderness.millis(),
            lateness: spec.allowed_lateness.millis(),
            max_seen: None,
        }
    }

    /// The current watermark: no event older than this is expected (0 before any event).
    pub fn watermark(&self) -> Millis {
        self.max_seen.map_or(0, |m| m.saturating_sub(self.out_of_orderness))
    }

    /// The largest event time seen.
    pub fn max_seen(&self) -> Option<Millis> {
        self.max_seen
    }

    /// The least dataflow time any future arrival can get: the watermark's tick.
    pub fn frontier(&self) -> Millis {
        ceil_to(self.watermark(), self.tick)
    }

    /// Rounds an event time up to its tick.
    pub fn tick_of(&self, t: Millis) -> Millis {
        ceil_to(t, self.tick)
    }

    /// Admits an event at event time `ts`: its dataflow time, or `None` when it is late.
    pub fn admit(&mut self, ts: Millis) -> Option<Millis> {
        let watermark = self.watermark();
        if self.max_seen.is_some() && ts.saturating_add(self.lateness) < watermark {
            return None;
        }
        let time = self.tick_of(ts.max(watermark));
        self.max_seen = Some(self.max_seen.map_or(ts, |m| m.max(ts)));
        Some(time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Span, TimeSpec};

    #[test]
    fn watermark_lateness_and_times() {
        let spec = TimeSpec { tick: Span(1_000), max_out_of_orderness: Span(5_000), allowed_lateness: Span(2_000) };
        let mut clock = EventClock::new(&spec);
        assert_eq!(clock.admit(100_500), Some(101_000));
        assert_eq!(clock.watermark(), 95_500);
        // Out of order but ahead of the watermark: its own tick.
        assert_eq!(clock.admit(97_000), Some(97_000));
        // Behind the watermark, within lateness: lands at the watermark's tick.
        assert_eq!(clock.admit(94_000), Some(96_000));
        // Older than watermark - lateness: late.
        assert_eq!(clock.admit(93_000), None);
        assert_eq!(clock.frontier(), 96_000);
    }
}
