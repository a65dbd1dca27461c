//! Event-time window arithmetic shared by the operators and by the reference model in tests:
//! when an event's contribution to a window ends, and which hopping windows it belongs to.

use crate::event::Millis;
use crate::event_time::ceil_to;
use crate::spec::{Horizon, ShortTermWindow};

/// The dataflow time at which an event at `ts` leaves the short-term window, when that depends
/// on the event alone (`None` for sessions, whose end depends on the user's later events).
///
/// Sliding: `ts + size`; tumbling: the end of the fixed window holding `ts`. Both round up to the
/// tick, since the dataflow changes only at ticks.
pub fn short_term_expiry(window: ShortTermWindow, ts: Millis, tick: Millis) -> Option<Millis> {
    Some(match window {
        ShortTermWindow::Sliding { size } => ceil_to(ts.saturating_add(size.millis()), tick),
        ShortTermWindow::Tumbling { size } => {
            let size = size.millis();
            ceil_to((ts / size).saturating_add(1).saturating_mul(size), tick)
        }
        ShortTermWindow::Session { .. } => return None,
    })
}

/// The dataflow time at which an event at `ts` leaves the long-term horizon, if ever.
pub fn horizon_expiry(horizon: Horizon, ts: Millis, tick: Millis) -> Option<Millis> {
    match horizon {
        Horizon::All => None,
        Horizon::Retention(span) => Some(ceil_to(ts.saturating_add(span.millis()), tick)),
    }
}

/// Hopping windows of length `size` starting every `slide`, aligned to multiples of `slide` since
/// the Unix epoch (tumbling when `size == slide`), as Flink's `HOP`/`TUMBLE` assign them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hopping {
    /// Window length.
    pub size: Millis,
    /// Distance between window starts.
    pub slide: Millis,
    /// How long after its end a window still accepts (late) updates.
    pub lateness: Millis,
    /// The dataflow tick.
    pub tick: Millis,
}

impl Hopping {
    /// The end of the slide-long pane that holds `ts`.
    pub fn pane_end(&self, ts: Millis) -> Millis {
        (ts / self.slide + 1) * self.slide
    }

    /// Ends of all windows containing the pane that ends at `pane_end`, earliest first.
    pub fn window_ends(&self, pane_end: Millis) -> impl Iterator<Item = Millis> {
        let (slide, count) = (self.slide, self.size / self.slide);
        (0..count).map(move |k| pane_end + k * slide)
    }

    /// Ends of the windows containing the pane that ends at `pane_end` that an update at `time`
    /// can still change: those not purged before it (a forgotten user's retraction can come
    /// later than any accepted event could).
    pub fn open_window_ends(&self, pane_end: Millis, time: Millis) -> impl Iterator<Item = Millis> + '_ {
        self.window_ends(pane_end).filter(move |end| time <= self.purge_time(*end))
    }

    /// When the window ending at `end` fires: its result is reported once the frontier passes it.
    pub fn fire_time(&self, end: Millis) -> Millis {
        ceil_to(end, self.tick)
    }

    /// When the window ending at `end` is purged: no accepted event can change it any more, so its
    /// state is retracted (sinks do not report this as a change).
    pub fn purge_time(&self, end: Millis) -> Millis {
        ceil_to(end.saturating_add(self.lateness), self.tick).saturating_add(self.tick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Span;

    #[test]
    fn hopping_windows_align_to_the_epoch() {
        let hop = Hopping { size: 3_600_000, slide: 300_000, lateness: 0, tick: 1_000 };
        assert_eq!(hop.pane_end(299_999), 300_000);
        assert_eq!(hop.pane_end(300_000), 600_000);
        let ends: Vec<_> = hop.window_ends(300_000).collect();
        assert_eq!(ends.len(), 12);
        assert_eq!((ends[0], ends[11]), (300_000, 3_600_000));
        assert!(hop.purge_time(300_000) > hop.fire_time(300_000));
    }

    #[test]
    fn expiries() {
        let tick = 1_000;
        assert_eq!(short_term_expiry(ShortTermWindow::Sliding { size: Span(60_000) }, 10_500, tick), Some(71_000));
        assert_eq!(short_term_expiry(ShortTermWindow::Tumbling { size: Span(60_000) }, 10_500, tick), Some(60_000));
        assert_eq!(short_term_expiry(ShortTermWindow::Session { gap: Span(60_000) }, 10_500, tick), None);
        assert_eq!(horizon_expiry(Horizon::All, 5, tick), None);
        assert_eq!(horizon_expiry(Horizon::Retention(Span(2_000)), 500, tick), Some(3_000));
    }
}
