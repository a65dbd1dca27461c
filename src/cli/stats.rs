//! Figures the benchmarks share: nearest-rank percentiles of latency samples, the median of
//! several runs, and the process's peak memory.

/// The nearest-rank `q`-quantile of `sorted` (ascending): the smallest sample with at least a
/// share `q` of the samples at or below it; `None` when there are no samples.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    (!sorted.is_empty()).then(|| sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1])
}

/// The median and the 99th percentile of `samples`, both NaN when there are none.
pub fn p50_p99(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| quantile(&samples, q).unwrap_or(f64::NAN);
    (at(0.5), at(0.99))
}

/// The median of the figures of several runs: the upper of the middle two for an even number
/// of runs; NaN for none.
pub fn median(mut figures: Vec<f64>) -> f64 {
    figures.sort_by(f64::total_cmp);
    figures.get(figures.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The process's peak resident memory (VmHWM) in MiB, as printed: `unknown` where the system
/// does not say.
pub fn peak_memory_mib() -> String {
    crate::metrics::Memory::now().peak_resident_bytes.map_or("unknown".to_string(), |bytes| (bytes >> 20).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_and_upper_median() {
        let samples: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(p50_p99(samples.clone()), (100.0, 198.0));
        assert_eq!(quantile(&samples, 0.0), Some(1.0));
        assert_eq!(quantile(&[], 0.5), None);
        assert!(p50_p99(Vec::new()).0.is_nan());
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 3.0);
        assert!(median(Vec::new()).is_nan());
    }
}
