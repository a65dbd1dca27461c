//! Ranking and counting helpers shared by the operators.
//!
//! Rankings order by a key whose ascending order is the project's order (scores and counts are
//! negated so that higher comes first; ties fall to the item id), so "best n" is "smallest n".

use std::collections::BTreeMap;
use std::hash::Hash;

use rustc_hash::FxHashMap as HashMap;

/// Keeps the `n` smallest of `items`, in ascending order.
///
/// ```
/// let mut ranked = vec![(-3, "b"), (-5, "c"), (-3, "a"), (-1, "d")];
/// recflow::dataflow::ranking::keep_best(&mut ranked, 3);
/// assert_eq!(ranked, [(-5, "c"), (-3, "a"), (-3, "b")]);
/// ```
pub fn keep_best<T: Ord>(items: &mut Vec<T>, n: usize) {
    keep_best_by(items, n, T::cmp);
}

/// Keeps the `n` first of `items` in `order`, sorted: for rankings whose order needs more than
/// the items themselves (a lookup to break ties).
///
/// ```
/// let names = ["b", "a", "c"];
/// let mut ranked = vec![(0, 3), (1, 3), (2, 1)];
/// let by_count_then_name = |x: &(usize, i32), y: &(usize, i32)| y.1.cmp(&x.1).then(names[x.0].cmp(names[y.0]));
/// recflow::dataflow::ranking::keep_best_by(&mut ranked, 2, by_count_then_name);
/// assert_eq!(ranked, [(1, 3), (0, 3)]);
/// ```
pub fn keep_best_by<T>(items: &mut Vec<T>, n: usize, order: impl Fn(&T, &T) -> std::cmp::Ordering) {
    if n == 0 {
        items.clear();
        return;
    }
    if items.len() > n {
        items.select_nth_unstable_by(n - 1, &order);
        items.truncate(n);
    }
    items.sort_unstable_by(order);
}

/// `x.round() as i64`, without the library call `f64::round` costs on the hot paths that turn
/// scores into fixed point. Below 0.5 that is 0. From 0.5 up to 2^52, `x + 0.5` can round only
/// within the interval between two integers, never onto the next integer (the spacing of floats
/// there is at most half of the distance left), so truncating it rounds half away from zero
/// exactly as `round` does. Other values take `round` itself.
///
/// ```
/// use recflow::dataflow::ranking::round_to_i64;
/// let edges = [0.0, 0.49999999999999994, 0.5, 1.4999999999999998, 2.5, 4503599627370495.5];
/// for x in edges.into_iter().chain([1e15 + 0.5, -2.5, -0.4, f64::NAN, 1e300]) {
///     assert_eq!(round_to_i64(x), x.round() as i64, "{x}");
/// }
/// ```
#[inline]
pub fn round_to_i64(x: f64) -> i64 {
    const EXACT_BELOW: f64 = (1u64 << 52) as f64;
    if (0.0..0.5).contains(&x) {
        0
    } else if (0.5..EXACT_BELOW).contains(&x) {
        (x + 0.5) as i64
    } else {
        x.round() as i64
    }
}

/// Adds `diff` to the count of `key`, dropping the entry at zero; returns the counts before and
/// after.
pub fn adjust<K: Hash + Eq, V>(counts: &mut HashMap<K, V>, key: K, diff: V) -> (V, V)
where
    V: Copy + Default + PartialEq + std::ops::AddAssign,
{
    let zero = V::default();
    let count = counts.entry(key);
    match count {
        std::collections::hash_map::Entry::Occupied(mut entry) => {
            let before = *entry.get();
            *entry.get_mut() += diff;
            let after = *entry.get();
            if after == zero {
                entry.remove();
            }
            (before, after)
        }
        std::collections::hash_map::Entry::Vacant(entry) => {
            if diff != zero {
                entry.insert(diff);
            }
            (zero, diff)
        }
    }
}

/// Adds `diff` to the multiplicity of `key` in an ordered multiset, dropping it at zero.
pub fn adjust_ordered<K: Ord>(multiset: &mut BTreeMap<K, isize>, key: K, diff: isize) {
    match multiset.entry(key) {
        std::collections::btree_map::Entry::Occupied(mut entry) => {
            *entry.get_mut() += diff;
            if *entry.get() == 0 {
                entry.remove();
            }
        }
        std::collections::btree_map::Entry::Vacant(entry) => {
            if diff != 0 {
                entry.insert(diff);
            }
        }
    }
}
