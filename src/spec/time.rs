//! `[time]`: ticks, watermark, lateness and how far ahead an event may jump.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{rejecting, Span, SpecError, TimeUnit};
use crate::event::Millis;

/// The `[time]` table.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TimeSpec {
    /// Granularity of the dataflow's timestamps: results are emitted once per tick of event time.
    pub tick: Span,
    /// How far behind the largest event time seen the watermark trails.
    pub max_out_of_orderness: Span,
    /// How far behind the watermark an event may still arrive and update results.
    pub allowed_lateness: Span,
    /// How far beyond the largest event time seen an event may lie before it must be confirmed
    /// by the records after it (`FutureHold` in `event_time` holds it until then).
    pub max_future: FutureBound,
}

impl Default for TimeSpec {
    fn default() -> Self {
        TimeSpec {
            tick: Span(1_000),
            max_out_of_orderness: Span(5_000),
            allowed_lateness: Span(0),
            max_future: FutureBound::Ahead(Span(3_600_000)),
        }
    }
}

impl TimeSpec {
    /// Checks `[time]`: a positive tick that is a whole number of the input's timestamp `unit`,
    /// and a positive `max_future` unless it is off.
    pub(super) fn validate(&self, origin: &str, unit: TimeUnit) -> Result<(), SpecError> {
        let bad = rejecting(origin);
        let tick = self.tick.millis();
        if tick == 0 {
            return bad("time.tick", "must be positive, such as \"1s\"".into());
        }
        if self.max_future.millis() == Some(0) {
            return bad("time.max_future", "must be positive, such as \"1h\", or \"off\"".into());
        }
        if !tick.is_multiple_of(unit.scale()) {
            return bad("time.tick", "must be a whole number of seconds when source.timestamp_unit = \"s\"".into());
        }
        Ok(())
    }
}

/// `time.max_future`: `off`, or how far ahead an event may jump without confirmation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FutureBound {
    /// Any timestamp moves the watermark at once.
    Off,
    /// Events further than this beyond the largest event time seen wait for confirmation.
    Ahead(Span),
}

impl FutureBound {
    /// The bound in milliseconds, if there is one.
    pub fn millis(&self) -> Option<Millis> {
        match self {
            FutureBound::Off => None,
            FutureBound::Ahead(span) => Some(span.millis()),
        }
    }
}

impl Serialize for FutureBound {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Span::serialize_or(self.millis().map(Span), "off", serializer)
    }
}

impl<'de> Deserialize<'de> for FutureBound {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Span::parse_or(deserializer, "off")?.map_or(FutureBound::Off, FutureBound::Ahead))
    }
}
