//! `[hot_items]`: windowed lists of the most active items.

use serde::{Deserialize, Serialize};

use super::{rejecting, Span, SpecError};
use crate::event::Action;

/// The `[hot_items]` table.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HotItemsSpec {
    /// Which actions count.
    pub actions: Vec<Action>,
    /// Window length (S).
    pub size: Span,
    /// Distance between window starts (L); windows are tumbling when equal to `size`.
    pub slide: Span,
    /// Items per list.
    pub top_n: usize,
    /// One list per (window, category) instead of per window.
    pub per_category: bool,
}

impl Default for HotItemsSpec {
    fn default() -> Self {
        HotItemsSpec {
            actions: vec![Action::View],
            size: Span(3_600_000),
            slide: Span(300_000),
            top_n: 3,
            per_category: false,
        }
    }
}

impl HotItemsSpec {
    /// Checks `[hot_items]`: some action counted, a slide that is a positive multiple of `tick`
    /// (`time.tick`), a size that is a whole multiple of the slide (at most 10000 slides), and
    /// lists of at least one item.
    pub(super) fn validate(&self, origin: &str, tick: Span) -> Result<(), SpecError> {
        let bad = rejecting(origin);
        if self.actions.is_empty() {
            return bad("hot_items.actions", "lists no action; use e.g. [\"view\"]".into());
        }
        if self.slide.millis() == 0 || !self.slide.millis().is_multiple_of(tick.millis()) {
            return bad(
                "hot_items.slide",
                format!("must be a positive multiple of time.tick ({tick}), such as \"5m\""),
            );
        }
        if self.size.millis() < self.slide.millis() || !self.size.millis().is_multiple_of(self.slide.millis()) {
            return bad(
                "hot_items.size",
                format!("must be a whole multiple of slide ({}); got {}", self.slide, self.size),
            );
        }
        if self.size.millis() / self.slide.millis() > 10_000 {
            return bad("hot_items.size", "more than 10000 slides per window; raise slide".into());
        }
        if self.top_n == 0 {
            return bad("hot_items.top_n", "must be at least 1".into());
        }
        Ok(())
    }
}
