//! Event time: the watermark, lateness, and the dataflow timestamp an accepted event is given.
//!
//! The dataflow's timestamps are event time in milliseconds, rounded up to whole ticks. The
//! watermark is the largest event time seen minus `max_out_of_orderness`; the ingest operator
//! holds its capability at the watermark's tick, so the dataflow's input frontier follows it.
//! An event older than `watermark - allowed_lateness` is late. An event that is not late enters at
//! the tick of `max(ts, watermark)`: on time, it lands at its own tick; behind the watermark but
//! within the allowed lateness, it lands at the current watermark's tick, where it updates
//! (retracts and re-emits) results that were already reported.
//!
//! **Far-future timestamps.** One record stamped years ahead would move the watermark there and
//! make every later record late. So a record more than `max_future` beyond the largest event
//! time seen does not move anything at once: it waits in a [`FutureHold`] until the records after
//! it say whether event time really jumped (a gap in a replayed file, a stream resuming after a
//! quiet night) or the record is poison.

use differential_dataflow::VecCollection;

use crate::event::Millis;
use crate::spec::TimeSpec;

/// The dataflow's timestamp: event time in milliseconds, at tick granularity.
pub type Time = Millis;

/// A collection of `D` with signed multiplicities at [`Time`]: what every operator of the
/// dataflow, and every sink, consumes.
pub type Coll<'scope, D> = VecCollection<'scope, Time, D, isize>;

/// The wall clock in milliseconds since the Unix epoch.
pub fn wall_clock_ms() -> Millis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis)
}

/// Whether `ts` lies more than `max_future` beyond the wall clock: for records read live, which
/// cannot have happened yet.
pub fn beyond_wall_clock(ts: Millis, max_future: Option<Millis>) -> bool {
    max_future.is_some_and(|bound| ts > wall_clock_ms().saturating_add(bound))
}

/// Rounds `t` up to a multiple of `step` (saturating).
pub fn ceil_to(t: Millis, step: Millis) -> Millis {
    match t % step {
        0 => t,
        r => t.saturating_add(step - r),
    }
}

/// Tracks the watermark of one ordered stream of events and classifies each arrival.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct EventClock {
    tick: Millis,
    out_of_orderness: Millis,
    lateness: Millis,
    max_future: Option<Millis>,
    max_seen: Option<Millis>,
}

impl EventClock {
    /// A clock with no event seen yet.
    pub fn new(spec: &TimeSpec) -> EventClock {
        EventClock {
            tick: spec.tick.millis(),
            out_of_orderness: spec.max_out_of_orderness.millis(),
            lateness: spec.allowed_lateness.millis(),
            max_future: spec.max_future.millis(),
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

    /// `time.max_future` in milliseconds, unless it is off.
    pub fn max_future(&self) -> Option<Millis> {
        self.max_future
    }

    /// Whether an event at `ts` lies more than `max_future` beyond the largest event time seen
    /// (never before the first event, nor with `max_future = "off"`).
    pub fn too_far_ahead(&self, ts: Millis) -> bool {
        match (self.max_future, self.max_seen) {
            (Some(bound), Some(seen)) => ts > seen.saturating_add(bound),
            _ => false,
        }
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

    /// Admits an event read while the input stands at dataflow time `frontier`, which this
    /// clock's own watermark may lag (a partition that was idle while the others went on): its
    /// dataflow time, at least `frontier`, or `None` when it is late, against this clock or
    /// because it would enter more than the allowed lateness after its own tick
    /// (`tick_of(ts + allowed_lateness) < frontier`), when the windows holding it are closed.
    pub fn admit_at(&mut self, ts: Millis, frontier: Millis) -> Option<Millis> {
        let time = self.admit(ts)?;
        if self.tick_of(ts.saturating_add(self.lateness)) < frontier {
            return None;
        }
        Some(time.max(frontier))
    }
}

/// How many records after one that is too far ahead must agree with it before event time jumps.
pub const FUTURE_CONFIRMATIONS: usize = 2;

/// One lane's records that are too far ahead of its clock ([`EventClock::too_far_ahead`]),
/// waiting for the records after them. The rule:
///
/// - A record that is not too far ahead shows the held ones to be poison: they are given up
///   (dead-lettered as `future`), and it is admitted as usual.
/// - A record that is too far ahead is held too, unless it lies more than `max_future` before the
///   first held one, which gives the held ones up first (poison followed by a real jump). Later
///   records, however much later, back the first one up: time goes on past it, as it does
///   through a sparse stretch of a sorted file. Once [`FUTURE_CONFIRMATIONS`] records have joined
///   the first, the jump is real: all of them are admitted, in arrival order.
/// - At the end of the input the held records are given up.
///
/// Records are held only while consecutive records of the lane are too far ahead, so a lane
/// holds at most `FUTURE_CONFIRMATIONS` of them.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct FutureHold<T> {
    held: Vec<(Millis, T)>,
}

impl<T> Default for FutureHold<T> {
    fn default() -> Self {
        FutureHold { held: Vec::new() }
    }
}

/// What an arrival settled: records given up as `future`, and records to admit, in order.
#[derive(Debug, PartialEq, Eq)]
pub struct Settled<T> {
    /// Held records the arrival showed to be poison (or could not join), to dead-letter.
    pub future: Vec<T>,
    /// Records to admit through the clock now, in arrival order.
    pub admit: Vec<T>,
}

impl<T> FutureHold<T> {
    /// Takes in `record`, stamped `ts`, under `clock` (which has not admitted it yet).
    pub fn arrive(&mut self, clock: &EventClock, ts: Millis, record: T) -> Settled<T> {
        let mut settled = Settled { future: Vec::new(), admit: Vec::new() };
        if !clock.too_far_ahead(ts) {
            settled.future = self.give_up();
            settled.admit.push(record);
            return settled;
        }
        let bound = clock.max_future.unwrap_or(Millis::MAX);
        if self.held.first().is_some_and(|(first, _)| ts < first.saturating_sub(bound)) {
            settled.future = self.give_up();
        }
        self.held.push((ts, record));
        if self.held.len() > FUTURE_CONFIRMATIONS {
            settled.admit = self.give_up();
        }
        settled
    }

    /// Whether no record is waiting.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The hold with every record changed by `f`, in the same order.
    pub fn map<U>(self, mut f: impl FnMut(T) -> U) -> FutureHold<U> {
        FutureHold { held: self.held.into_iter().map(|(ts, record)| (ts, f(record))).collect() }
    }

    /// Empties the hold: its records, in arrival order.
    pub fn give_up(&mut self) -> Vec<T> {
        self.held.drain(..).map(|(_, record)| record).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{FutureBound, Span, TimeSpec};

    /// 1 s ticks, 5 s out of order, 2 s lateness.
    fn one_second_ticks() -> TimeSpec {
        TimeSpec {
            tick: Span(1_000),
            max_out_of_orderness: Span(5_000),
            allowed_lateness: Span(2_000),
            ..TimeSpec::default()
        }
    }

    #[test]
    fn watermark_lateness_and_times() {
        let spec = one_second_ticks();
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

    #[test]
    fn a_clock_behind_the_input_enters_at_the_frontier_or_is_late() {
        let spec = one_second_ticks();
        // The other partitions went on to 120 s while this one was idle at 100.5 s.
        let mut clock = EventClock::new(&spec);
        assert_eq!(clock.admit_at(100_500, 101_000), Some(101_000));
        assert_eq!(clock.admit_at(101_000, 120_000), None, "its windows closed more than 2 s ago");
        assert_eq!(clock.admit_at(117_500, 120_000), Some(120_000), "within the allowed lateness");
        assert_eq!(clock.admit_at(119_000, 120_000), Some(120_000));
        assert_eq!(clock.admit_at(125_000, 120_000), Some(125_000), "ahead of the input: its own tick");
        // In step with the input, it is the lane's own rule: a watermark of 95.5 s, frontier 96 s.
        let mut alone = EventClock::new(&spec);
        alone.admit(100_500);
        assert_eq!(alone.admit_at(93_500, 96_000), Some(96_000), "just inside the lateness");
        assert_eq!(alone.admit_at(93_000, 96_000), None);
    }

    /// Replays `stamps` through a clock and hold with `max_future` 1000: each record's fate.
    fn fates(stamps: &[Millis]) -> Vec<(Millis, &'static str)> {
        let spec = TimeSpec { max_future: FutureBound::Ahead(Span(1_000)), ..TimeSpec::default() };
        let mut clock = EventClock::new(&spec);
        let mut hold = FutureHold::default();
        let mut fates = Vec::new();
        for &ts in stamps {
            let settled = hold.arrive(&clock, ts, ts);
            fates.extend(settled.future.into_iter().map(|ts| (ts, "future")));
            for ts in settled.admit {
                fates.push((ts, if clock.admit(ts).is_some() { "admitted" } else { "late" }));
            }
        }
        fates.extend(hold.give_up().into_iter().map(|ts| (ts, "future")));
        fates
    }

    #[test]
    fn a_poison_timestamp_is_given_up_and_moves_nothing() {
        let fates = fates(&[10_000, 10_500, 99_999_000, 11_000, 11_500]);
        assert_eq!(
            fates,
            [
                (10_000, "admitted"),
                (10_500, "admitted"),
                (99_999_000, "future"),
                (11_000, "admitted"),
                (11_500, "admitted")
            ]
        );
    }

    #[test]
    fn a_real_jump_is_admitted_once_confirmed() {
        let fates = fates(&[10_000, 50_000, 50_200, 50_100, 50_300]);
        assert!(fates.iter().all(|(_, fate)| *fate == "admitted"), "{fates:?}");
        assert_eq!(fates.iter().map(|(ts, _)| *ts).collect::<Vec<_>>(), [10_000, 50_000, 50_200, 50_100, 50_300]);
    }

    #[test]
    fn poison_then_a_real_jump_gives_up_only_the_poison() {
        let fates = fates(&[10_000, 99_999_000, 50_000, 50_100, 50_200]);
        assert_eq!(fates[1], (99_999_000, "future"));
        assert!(fates.iter().filter(|(ts, _)| *ts != 99_999_000).all(|(_, fate)| *fate == "admitted"), "{fates:?}");
    }

    #[test]
    fn a_sparse_stretch_is_admitted_however_far_apart_its_records() {
        let fates = fates(&[10_000, 20_000, 40_000, 90_000, 90_500, 91_000]);
        assert!(fates.iter().all(|(_, fate)| *fate == "admitted"), "{fates:?}");
    }

    #[test]
    fn an_unconfirmed_jump_at_the_end_is_given_up() {
        assert_eq!(fates(&[10_000, 50_000]), [(10_000, "admitted"), (50_000, "future")]);
    }

    #[test]
    fn without_a_bound_anything_moves_the_watermark() {
        let mut clock = EventClock::new(&TimeSpec { max_future: FutureBound::Off, ..TimeSpec::default() });
        clock.admit(10_000);
        assert!(!clock.too_far_ahead(u64::MAX));
    }
}
