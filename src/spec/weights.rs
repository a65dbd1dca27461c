//! `[weights]`: how much each action counts towards a preference.

use serde::{Deserialize, Serialize};

use super::{rejecting, SpecError};
use crate::event::{Action, Thousandths, THOUSANDTHS_PER_UNIT};

/// The `[weights]` table: how much each action counts.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Weights {
    /// Weight of a view.
    pub view: f64,
    /// Weight of adding to cart.
    pub cart: f64,
    /// Weight of a favourite.
    pub fav: f64,
    /// Weight of a purchase.
    pub buy: f64,
    /// Weight per rating point of a rating (a 4-star rating counts `4 * rate`).
    pub rate: f64,
    /// Ratings count from this point up: a rating `v` weighs `rate * (v - rating_offset)`, and
    /// nothing at or below the offset (0 counts every rating point).
    pub rating_offset: f64,
}

/// The largest action weight (`[weights]`); with [`crate::event::MAX_VALUE`] it bounds what one
/// event can add to a preference.
pub const MAX_WEIGHT: f64 = 1000.0;

impl Default for Weights {
    fn default() -> Self {
        Weights { view: 1.0, cart: 3.0, fav: 2.0, buy: 5.0, rate: 1.0, rating_offset: 0.0 }
    }
}

impl Weights {
    /// The weight of an action in thousandths, before any rating value is applied.
    pub fn thousandths(&self, action: Action) -> Thousandths {
        let w = match action {
            Action::View => self.view,
            Action::Cart => self.cart,
            Action::Fav => self.fav,
            Action::Buy => self.buy,
            Action::Rate => self.rate,
        };
        to_thousandths(w)
    }

    /// Checks `[weights]`: every action weight between 0 and [`MAX_WEIGHT`], the rating offset
    /// between 0 and the largest value.
    pub(super) fn validate(&self, origin: &str) -> Result<(), SpecError> {
        let bad = rejecting(origin);
        for (key, w) in [
            ("weights.view", self.view),
            ("weights.cart", self.cart),
            ("weights.fav", self.fav),
            ("weights.buy", self.buy),
            ("weights.rate", self.rate),
        ] {
            if !(w.is_finite() && (0.0..=MAX_WEIGHT).contains(&w)) {
                return bad(key, format!("{w} is not a weight; use a number between 0 and {MAX_WEIGHT}"));
            }
        }
        let offset = self.rating_offset;
        if !(offset.is_finite() && (0.0..=crate::event::MAX_VALUE as f64).contains(&offset)) {
            return bad(
                "weights.rating_offset",
                format!("{offset} is not a rating offset; use a number between 0 and {}", crate::event::MAX_VALUE),
            );
        }
        Ok(())
    }
}

/// Rounds a decimal to thousandths.
pub fn to_thousandths(x: f64) -> Thousandths {
    (x * THOUSANDTHS_PER_UNIT as f64).round() as Thousandths
}
