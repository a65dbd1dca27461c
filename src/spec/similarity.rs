//! `[recommend.similarity]`: the item-to-item similarity recommendations are scored with.

use serde::{Deserialize, Serialize};

use super::{rejecting, Span, SpecError};

/// Similarity measure between items.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Measure {
    /// co(i,j) / sqrt(n_i * n_j)
    Cosine,
    /// co(i,j) / (n_i + n_j - co(i,j))
    Jaccard,
}

/// The `[recommend.similarity]` table.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SimilaritySpec {
    /// `cosine` or `jaccard`.
    pub measure: Measure,
    /// Least number of users two items must share.
    pub min_support: u64,
    /// Neighbours kept per item (N).
    pub neighbours: usize,
    /// Event-time cadence at which the similarity arrangement refreshes.
    pub refresh: Span,
    /// The exponent `a` of the asymmetric cosine `c(i, j) / (n_i^a * n_j^(1 - a))` from seed `i`
    /// to neighbour `j`: 0.5 is the cosine; lower damps popular neighbours, higher favours them
    /// (1 is the share of `i`'s users who also touched `j`).
    pub asymmetry: f64,
    /// Shrinks the similarity of pairs with little support: times `c / (c + shrinkage)`, `c` the
    /// pair's co-occurrence in users (0 leaves it as it is).
    pub shrinkage: f64,
    /// Keeps only pairs that co-occur more than chance would have them: Dunning's log-likelihood
    /// ratio of the pair's 2x2 table of users must reach it (3.84, 6.63 and 10.83 are the
    /// chi-square critical values for p = 0.05, 0.01 and 0.001; 0 keeps every pair).
    pub min_llr: f64,
    /// Keeps, in each item's row, only the candidates that the Benjamini-Hochberg procedure at
    /// this false discovery rate accepts, the family being every other item of the catalogue:
    /// of the neighbours a row lists, at most this share are expected to co-occur with it by
    /// chance alone (0 turns the test off).
    pub false_discovery_rate: f64,
}

impl SimilaritySpec {
    /// Checks `neighbours` and `min_support` (at least 1) and `refresh` (a positive multiple of
    /// `tick`, which is `time.tick`).
    pub(super) fn validate_neighbourhood(&self, origin: &str, tick: Span) -> Result<(), SpecError> {
        let bad = rejecting(origin);
        if self.neighbours == 0 {
            return bad("recommend.similarity.neighbours", "must be at least 1".into());
        }
        if self.min_support == 0 {
            return bad("recommend.similarity.min_support", "must be at least 1".into());
        }
        if self.refresh.millis() == 0 || !self.refresh.millis().is_multiple_of(tick.millis()) {
            return bad(
                "recommend.similarity.refresh",
                format!("must be a positive multiple of time.tick ({tick}), such as \"60s\""),
            );
        }
        Ok(())
    }

    /// Checks `asymmetry` (in (0, 1], and only with the cosine), `shrinkage`, `min_llr` and
    /// `false_discovery_rate`.
    pub(super) fn validate_shape(&self, origin: &str) -> Result<(), SpecError> {
        let bad = rejecting(origin);
        let a = self.asymmetry;
        if !(a > 0.0 && a <= 1.0) {
            return bad(
                "recommend.similarity.asymmetry",
                format!("{a} is not an exponent in (0, 1]; use 0.5 for the cosine, lower to damp popular items"),
            );
        }
        if !(self.shrinkage.is_finite() && (0.0..=1_000_000.0).contains(&self.shrinkage)) {
            return bad(
                "recommend.similarity.shrinkage",
                format!(
                    "{} is not a shrinkage; use a number of users between 0 and 1000000, such as 10",
                    self.shrinkage
                ),
            );
        }
        if !(self.min_llr.is_finite() && (0.0..=1_000_000.0).contains(&self.min_llr)) {
            return bad(
                "recommend.similarity.min_llr",
                format!(
                    "{} is not a log-likelihood ratio; use a number between 0 (off) and 1000000, such as 10.83 (p = 0.001)",
                    self.min_llr
                ),
            );
        }
        if !(0.0..1.0).contains(&self.false_discovery_rate) {
            return bad(
                "recommend.similarity.false_discovery_rate",
                format!(
                    "{} is not a rate; use a number from 0 (off) up to but not including 1, such as 0.05",
                    self.false_discovery_rate
                ),
            );
        }
        if a != 0.5 && self.measure != Measure::Cosine {
            return bad(
                "recommend.similarity.asymmetry",
                "shapes the cosine only; set measure = \"cosine\" or remove asymmetry".into(),
            );
        }
        Ok(())
    }
}

impl Default for SimilaritySpec {
    fn default() -> Self {
        SimilaritySpec {
            measure: Measure::Cosine,
            min_support: 2,
            neighbours: 20,
            refresh: Span(60_000),
            asymmetry: 0.5,
            shrinkage: 0.0,
            min_llr: 0.0,
            false_discovery_rate: 0.0,
        }
    }
}
