//! Restoring a checkpoint on another number of workers: each worker of the restored run builds
//! every operator's state from all the old workers' states, keeping what it owns.
//!
//! Timely sends an exchanged record to worker `hash % workers` (a mask when the count is a power
//! of two, the same thing), so which worker owns a key under any worker count is computable
//! ([`Owner`]). What an operator keeps falls in three kinds ([`Place`]): state of a key (split
//! by the key's hash), copies every worker holds (taken from old worker 0), and state that may
//! sit on any worker because the next operator exchanges it (merged onto new worker 0). Each
//! stateful operator says how its state splits and merges by implementing [`Rescale`]; the
//! design document lists them all.

use std::collections::BTreeMap;
use std::hash::Hash;

use differential_dataflow::Hashable;
use rustc_hash::FxHashMap as HashMap;

use crate::event_time::Time;

/// A worker of the restored run, and where the restored cut is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The worker.
    pub worker: usize,
    /// The restored run's workers.
    pub workers: usize,
    /// The checkpoint's cut: every time before it was complete when it was taken, none after.
    pub cut: Time,
}

impl Owner {
    /// Whether a record hashed to `hash` goes to this worker.
    pub fn owns(&self, hash: u64) -> bool {
        hash % self.workers as u64 == self.worker as u64
    }

    /// Whether `key` goes to this worker when exchanged by its hash.
    pub fn owns_key<K: Hashable<Output = u64>>(&self, key: &K) -> bool {
        self.owns(key.hashed())
    }

    /// Whether this is worker 0, where the operators that gather everything run.
    pub fn is_first(&self) -> bool {
        self.worker == 0
    }

    /// Whether this worker keeps a piece of `old` worker's state placed at `place`: a keyed one
    /// where its key goes, old worker 0's copy of what every worker holds, and on worker 0
    /// whatever may sit anywhere.
    pub fn keeps(&self, place: Place, old: usize) -> bool {
        match place {
            Place::Key(hash) => self.owns(hash),
            Place::Everywhere => old == 0,
            Place::Anywhere => self.is_first(),
        }
    }
}

/// Where a piece of operator state belongs in a run of any number of workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// On the worker its key hashes to.
    Key(u64),
    /// On every worker, the same copy (broadcast inputs).
    Everywhere,
    /// On any one worker: the next operator exchanges it.
    Anywhere,
}

/// Pending updates that know where they belong.
pub trait Placed {
    /// Where this update belongs.
    fn place(&self) -> Place;
}

/// An operator state that can be rebuilt for another number of workers.
pub trait Rescale: Sized {
    /// This worker's state, from every old worker's state (in old worker order).
    fn rescale(old: Vec<Self>, to: Owner) -> Self;
}

/// The entries of `old` maps whose keys this worker owns.
pub fn owned_entries<K: Hashable<Output = u64>, V, M: IntoIterator<Item = (K, V)> + Default + Extend<(K, V)>>(
    old: Vec<M>,
    to: Owner,
) -> M {
    let mut kept = M::default();
    for map in old {
        kept.extend(map.into_iter().filter(|(key, _)| to.owns_key(key)));
    }
    kept
}

/// Old worker 0's state on new worker 0, nothing elsewhere: for operators that gather
/// everything on worker 0.
pub fn first_only<S: Default>(old: Vec<S>, to: Owner) -> S {
    match (to.is_first(), old.into_iter().next()) {
        (true, Some(first)) => first,
        _ => S::default(),
    }
}

/// Time-ordered pending work of every old worker, merged: each worker's work kept by `keep`
/// (given the old worker), and one time's kept work of all old workers combined by `merge`.
pub fn merge_by_time<W>(
    old: Vec<BTreeMap<Time, W>>,
    mut keep: impl FnMut(usize, W) -> Option<W>,
    mut merge: impl FnMut(&mut W, W),
) -> BTreeMap<Time, W> {
    let mut merged: BTreeMap<Time, W> = BTreeMap::new();
    for (worker, pending) in old.into_iter().enumerate() {
        for (time, work) in pending {
            let Some(work) = keep(worker, work) else { continue };
            match merged.get_mut(&time) {
                Some(existing) => merge(existing, work),
                None => {
                    merged.insert(time, work);
                }
            }
        }
    }
    merged
}

/// Counts per key summed over every old worker.
pub fn sum_counts<K: Eq + Hash>(into: &mut HashMap<K, i64>, from: HashMap<K, i64>) {
    for (key, count) in from {
        *into.entry(key).or_default() += count;
    }
    into.retain(|_, count| *count != 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key has exactly one owner under any worker count, and that owner is the worker
    /// timely's exchange sends it to.
    #[test]
    fn every_key_has_one_owner_which_is_where_timely_sends_it() {
        for workers in 1..=5 {
            for hash in [0u64, 1, 2, 3, 7, 8, 1 << 40, u64::MAX, 0x9e37_79b9_7f4a_7c15] {
                let owners: Vec<usize> =
                    (0..workers).filter(|&worker| Owner { worker, workers, cut: 0 }.owns(hash)).collect();
                // Timely masks for powers of two and takes the remainder otherwise.
                let timely = if workers.is_power_of_two() {
                    (hash & (workers as u64 - 1)) as usize
                } else {
                    (hash % workers as u64) as usize
                };
                assert_eq!(owners, [timely], "hash {hash} on {workers} workers");
            }
        }
    }

    #[test]
    fn copies_come_from_old_worker_0_and_loose_state_goes_to_worker_0() {
        let first = Owner { worker: 0, workers: 3, cut: 0 };
        let second = Owner { worker: 1, workers: 3, cut: 0 };
        assert!(first.keeps(Place::Everywhere, 0) && second.keeps(Place::Everywhere, 0));
        assert!(!first.keeps(Place::Everywhere, 1) && !second.keeps(Place::Everywhere, 1));
        assert!(first.keeps(Place::Anywhere, 1) && !second.keeps(Place::Anywhere, 0));
        assert!(second.keeps(Place::Key(4), 0) && !first.keeps(Place::Key(4), 0));
    }
}
