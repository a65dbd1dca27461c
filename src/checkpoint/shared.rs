//! Maps and vectors a checkpoint takes without copying them.
//!
//! A worker must not be stopped for long at a checkpoint, yet its largest states (every user's
//! history and scores, every item's similarity row, every result's current value) take hundreds
//! of milliseconds to copy or serialise. These containers keep their entries in shards
//! ([`Shared`]) that a checkpoint puts behind reference counts: it takes a copy of the handles alone
//! ([`SharedMap::share`]), which another thread then serialises, while the worker goes on. The
//! worker's first change to a shard the checkpoint still holds copies that shard alone (copy on
//! write), so the cost of copying is spread over the changes that follow, a shard at a time;
//! between checkpoints a shard is the worker's own and changes in place at no extra cost.
//!
//! Both serialise exactly as the standard containers do (a map as its length and entries, a
//! vector as its length and elements), so saved state reads back either way. [`Shared`] alone serves
//! state kept in many parts of its own (scheduled work, by the time it is due).

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rustc_hash::FxBuildHasher;
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::ser::{self, SerializeMap, SerializeSeq, SerializeTuple};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::worker_state::Freeze;

/// How many shards a [`SharedMap`] has.
const MAP_SHARDS: usize = 64;

/// How many elements one chunk of a [`SharedVec`] holds.
const VEC_CHUNK: usize = 1024;

/// One value the worker owns, or shares with a checkpoint until it next changes it.
///
/// Owned, it is changed in place with no more cost than the value itself. A checkpoint
/// ([`Shared::share`]) puts it behind a reference count and takes a [`Snapshot`] of it, which
/// another thread serialises. The worker's next change takes it back: if the snapshot is not
/// serialised yet, the worker first writes the value's bytes for it (write-ahead), so the value
/// is never copied and the worker never waits for more than one value's serialisation.
pub struct Shared<T>(Ownership<T>);

/// Whose a [`Shared`] value is.
enum Ownership<T> {
    /// The worker's alone.
    Own(T),
    /// Shared with the checkpoints whose snapshots are in `snapshots` (or once shared, not
    /// changed since).
    Held {
        /// The value as the checkpoints took it.
        value: Arc<T>,
        /// What each checkpoint that took it knows of it.
        snapshots: Vec<SlotHandle<T>>,
    },
}

/// Writes a value's contents as the serialiser of its container would: the bytes a checkpoint
/// holds for it.
type WriteAhead<T> = fn(&T, &mut Vec<u8>) -> bincode::Result<()>;

/// One checkpoint's view of one shared value.
enum Slot<T> {
    /// Not serialised yet: the value as the checkpoint took it, and how to write it ahead.
    Waiting(Arc<T>, WriteAhead<T>),
    /// Written ahead by the worker before it changed the value (or why that failed).
    WrittenAhead(Arc<Result<Vec<u8>, String>>),
    /// Serialised into the checkpoint.
    Serialised,
}

/// A [`Slot`] the worker and a checkpoint's serialiser both reach.
type SlotHandle<T> = Arc<Mutex<Slot<T>>>;

fn lock<T>(slot: &SlotHandle<T>) -> MutexGuard<'_, Slot<T>> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes `value` ahead for every snapshot of it that still waits to be serialised: once, and
/// the same bytes for all of them. Afterwards no snapshot holds the value.
fn write_ahead<T>(value: &Arc<T>, snapshots: Vec<SlotHandle<T>>) {
    let mut written: Option<Arc<Result<Vec<u8>, String>>> = None;
    // A snapshot no checkpoint holds any more is never read.
    for handle in snapshots.iter().filter(|handle| Arc::strong_count(handle) > 1) {
        let mut slot = lock(handle);
        if let Slot::Waiting(_, write) = &*slot {
            let bytes = written.get_or_insert_with(|| {
                let mut bytes = Vec::new();
                Arc::new(write(value, &mut bytes).map(|()| bytes).map_err(|e| e.to_string()))
            });
            *slot = Slot::WrittenAhead(Arc::clone(bytes));
        }
    }
}

impl<T> Shared<T> {
    /// Owns `value`.
    pub fn new(value: T) -> Shared<T> {
        Shared(Ownership::Own(value))
    }

    /// The value, written ahead for the checkpoints still waiting to serialise it; copied only
    /// if something else still holds it.
    pub fn into_inner(self) -> T
    where
        T: Clone,
    {
        match self.0 {
            Ownership::Own(own) => own,
            Ownership::Held { value, snapshots } => {
                write_ahead(&value, snapshots);
                Arc::unwrap_or_clone(value)
            }
        }
    }
}

impl<T: Default + Clone> Shared<T> {
    /// The value, to change: taken back first if shared ([`Shared::into_inner`]).
    pub fn get_mut(&mut self) -> &mut T {
        if let Ownership::Held { .. } = self.0 {
            let held = std::mem::take(self);
            self.0 = Ownership::Own(held.into_inner());
        }
        match &mut self.0 {
            Ownership::Own(own) => own,
            // Not reached: taken back above.
            Ownership::Held { value, .. } => Arc::make_mut(value),
        }
    }

    /// A snapshot of the value for a checkpoint: it serialises the value as it is now, whatever
    /// changes follow, through `write` if the worker changes it first. Copies nothing.
    fn share_as(&mut self, write: WriteAhead<T>) -> Snapshot<T> {
        let (value, mut snapshots) = match std::mem::take(self).0 {
            Ownership::Own(own) => (Arc::new(own), Vec::new()),
            Ownership::Held { value, snapshots } => (value, snapshots),
        };
        snapshots.retain(|handle| Arc::strong_count(handle) > 1);
        let handle = Arc::new(Mutex::new(Slot::Waiting(Arc::clone(&value), write)));
        snapshots.push(Arc::clone(&handle));
        self.0 = Ownership::Held { value, snapshots };
        Snapshot(handle)
    }

    /// A snapshot of the whole value for a checkpoint: it serialises the value as it is now,
    /// whatever changes follow, written ahead if the worker changes it first. Copies nothing.
    pub fn share(&mut self) -> Snapshot<T>
    where
        T: Serialize,
    {
        self.share_as(|value, bytes| bincode::serialize_into(bytes, value))
    }
}

impl<T: Default> Default for Shared<T> {
    fn default() -> Self {
        Shared(Ownership::Own(T::default()))
    }
}

impl<T> std::ops::Deref for Shared<T> {
    type Target = T;

    fn deref(&self) -> &T {
        match &self.0 {
            Ownership::Own(own) => own,
            Ownership::Held { value, .. } => value,
        }
    }
}

/// Serialises as the value itself.
impl<T: Serialize> Serialize for Shared<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Shared<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Shared::new)
    }
}

/// A checkpoint's view of a [`Shared`] value: it serialises the value as it was when shared,
/// once (so with `bincode::serialize_into`, not `bincode::serialize`, which serialises twice),
/// on whichever thread serialises the checkpoint.
pub struct Snapshot<T>(SlotHandle<T>);

/// What a [`Snapshot`] serialises: the value, or the bytes the worker wrote ahead for it.
enum Contents<'a, T> {
    Fresh(&'a T),
    WrittenAhead(&'a [u8]),
}

impl<T> Snapshot<T> {
    /// Serialises the snapshot's contents with `serialise`, once: afterwards the snapshot no
    /// longer holds the value, so the worker takes it back without copying it.
    fn serialise_once<R, E: ser::Error>(
        &self,
        serialise: impl FnOnce(Contents<'_, T>) -> Result<R, E>,
    ) -> Result<R, E> {
        let mut slot = lock(&self.0);
        let result = match &*slot {
            Slot::Waiting(value, _) => serialise(Contents::Fresh(value)),
            Slot::WrittenAhead(written) => match &**written {
                Ok(bytes) => serialise(Contents::WrittenAhead(bytes)),
                Err(why) => Err(E::custom(why)),
            },
            Slot::Serialised => Err(E::custom("a checkpoint's snapshot is serialised once only")),
        };
        *slot = Slot::Serialised;
        result
    }
}

/// Serialises as the value did when it was shared, once.
impl<T: Serialize> Serialize for Snapshot<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.serialise_once(|contents| match contents {
            Contents::Fresh(value) => value.serialize(serializer),
            Contents::WrittenAhead(bytes) => WrittenAhead(bytes).serialize(serializer),
        })
    }
}

/// Bytes written ahead, passed through a serialiser as they are. They go as a tuple of
/// little-endian words and then bytes, which bincode (the format of checkpoints) writes with
/// no length, tag or padding: exactly the bytes given.
struct WrittenAhead<'a>(&'a [u8]);

impl Serialize for WrittenAhead<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let words = self.0.chunks_exact(8);
        let rest = words.remainder();
        let mut tuple = serializer.serialize_tuple(words.len() + rest.len())?;
        for word in words {
            let mut le = [0; 8];
            le.copy_from_slice(word);
            tuple.serialize_element(&u64::from_le_bytes(le))?;
        }
        for byte in rest {
            tuple.serialize_element(byte)?;
        }
        tuple.end()
    }
}

/// A hash map in shards a checkpoint can share ([`SharedMap::share`]).
pub struct SharedMap<K, V> {
    shards: Vec<Shared<HashMap<K, V, FxBuildHasher>>>,
}

impl<K, V> Default for SharedMap<K, V> {
    fn default() -> Self {
        SharedMap { shards: (0..MAP_SHARDS).map(|_| Shared::new(HashMap::default())).collect() }
    }
}

impl<K: Hash + Eq, V> SharedMap<K, V> {
    /// The shard `key` lives in. The shards' own tables index by the hash's low bits, so the
    /// shard is picked by bits above those (and below the ones the tables' control bytes use).
    fn shard_of(key: &K) -> usize {
        (FxBuildHasher.hash_one(key) >> 40) as usize % MAP_SHARDS
    }

    /// The value of `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.shards[Self::shard_of(key)].get(key)
    }

    /// How many keys have a value.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.len()).sum()
    }

    /// Whether no key has a value.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|shard| shard.is_empty())
    }

    /// Every key and its value, shard by shard.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|shard| shard.iter())
    }

    /// Every key, shard by shard.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.iter().map(|(key, _)| key)
    }
}

impl<K: Hash + Eq + Clone, V: Clone> SharedMap<K, V> {
    /// The shard `key` lives in, to change ([`Shared::get_mut`]).
    fn shard_mut(&mut self, key: &K) -> &mut HashMap<K, V, FxBuildHasher> {
        self.shards[Self::shard_of(key)].get_mut()
    }

    /// The value of `key`, to change.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.shard_mut(key).get_mut(key)
    }

    /// Sets the value of `key`, returning the one it replaces.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.shard_mut(&key).insert(key, value)
    }

    /// Removes the value of `key`, returning it.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.shard_mut(key).remove(key)
    }

    /// The value of `key`, to change, set to `V::default()` first if it has none.
    pub fn get_or_default(&mut self, key: K) -> &mut V
    where
        V: Default,
    {
        self.shard_mut(&key).entry(key).or_default()
    }

    /// The map as it is now, for a checkpoint, whatever changes follow: copies no entry
    /// ([`Shared::share`]).
    pub fn share(&mut self) -> MapSnapshot<K, V>
    where
        K: Serialize,
        V: Serialize,
    {
        MapSnapshot {
            len: self.len(),
            shards: self.shards.iter_mut().map(|shard| shard.share_as(write_entries)).collect(),
        }
    }
}

/// Writes a shard's entries as a map's serialiser does: each key, then its value.
fn write_entries<K: Serialize, V: Serialize>(
    shard: &HashMap<K, V, FxBuildHasher>,
    bytes: &mut Vec<u8>,
) -> bincode::Result<()> {
    for (key, value) in shard {
        bincode::serialize_into(&mut *bytes, key)?;
        bincode::serialize_into(&mut *bytes, value)?;
    }
    Ok(())
}

/// A checkpoint shares the shards.
impl<K, V> Freeze for SharedMap<K, V>
where
    K: Hash + Eq + Clone + Serialize + Send + Sync + 'static,
    V: Clone + Serialize + Send + Sync + 'static,
{
    type Frozen = MapSnapshot<K, V>;

    fn freeze(&mut self) -> Self::Frozen {
        self.share()
    }
}

/// A [`SharedMap`] as a checkpoint took it ([`SharedMap::share`]): it serialises as the map did
/// then, once.
pub struct MapSnapshot<K, V> {
    len: usize,
    shards: Vec<Snapshot<HashMap<K, V, FxBuildHasher>>>,
}

impl<K: Serialize, V: Serialize> Serialize for MapSnapshot<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len))?;
        for shard in &self.shards {
            shard.serialise_once(|contents| match contents {
                Contents::Fresh(entries) => entries.iter().try_for_each(|(key, value)| map.serialize_entry(key, value)),
                // Entries written ahead go as one key: bincode writes keys and values alike.
                Contents::WrittenAhead(bytes) => map.serialize_key(&WrittenAhead(bytes)),
            })?;
        }
        map.end()
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Extend<(K, V)> for SharedMap<K, V> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, entries: I) {
        for (key, value) in entries {
            self.insert(key, value);
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> FromIterator<(K, V)> for SharedMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> Self {
        let mut map = SharedMap::default();
        map.extend(entries);
        map
    }
}

/// The entries, taken out of the shards nothing else holds and copied out of the others.
impl<K: Clone, V: Clone> IntoIterator for SharedMap<K, V> {
    type Item = (K, V);
    type IntoIter = std::iter::FlatMap<
        std::vec::IntoIter<Shared<HashMap<K, V, FxBuildHasher>>>,
        std::collections::hash_map::IntoIter<K, V>,
        fn(Shared<HashMap<K, V, FxBuildHasher>>) -> std::collections::hash_map::IntoIter<K, V>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.shards.into_iter().flat_map(|shard| shard.into_inner().into_iter())
    }
}

impl<K: Serialize, V: Serialize> Serialize for SharedMap<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.shards.iter().map(|shard| shard.len()).sum()))?;
        for (key, value) in self.shards.iter().flat_map(|shard| shard.iter()) {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'de, K, V> Deserialize<'de> for SharedMap<K, V>
where
    K: Deserialize<'de> + Hash + Eq + Clone,
    V: Deserialize<'de> + Clone,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries<K, V>(PhantomData<(K, V)>);

        impl<'de, K, V> Visitor<'de> for Entries<K, V>
        where
            K: Deserialize<'de> + Hash + Eq + Clone,
            V: Deserialize<'de> + Clone,
        {
            type Value = SharedMap<K, V>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
                let mut map = SharedMap::default();
                while let Some((key, value)) = entries.next_entry()? {
                    map.insert(key, value);
                }
                Ok(map)
            }
        }

        deserializer.deserialize_map(Entries(PhantomData))
    }
}

/// A vector in chunks a checkpoint can share ([`SharedVec::share`]).
pub struct SharedVec<T> {
    chunks: Vec<Shared<Vec<T>>>,
    len: usize,
}

impl<T> Default for SharedVec<T> {
    fn default() -> Self {
        SharedVec { chunks: Vec::new(), len: 0 }
    }
}

impl<T> SharedVec<T> {
    /// How many elements it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every element, in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flat_map(|chunk| chunk.iter())
    }
}

impl<T: Clone> SharedVec<T> {
    /// Appends `element`.
    pub fn push(&mut self, element: T) {
        if self.len.is_multiple_of(VEC_CHUNK) {
            self.chunks.push(Shared::new(Vec::with_capacity(VEC_CHUNK)));
        }
        if let Some(last) = self.chunks.last_mut() {
            last.get_mut().push(element);
            self.len += 1;
        }
    }

    /// The vector as it is now, for a checkpoint, whatever changes follow: copies no element
    /// ([`Shared::share`]).
    pub fn share(&mut self) -> VecSnapshot<T>
    where
        T: Serialize,
    {
        VecSnapshot {
            len: self.len,
            chunks: self
                .chunks
                .iter_mut()
                .map(|chunk| chunk.share_as(|chunk, bytes| write_elements(chunk, bytes)))
                .collect(),
        }
    }
}

/// Writes a chunk's elements as a sequence's serialiser does.
fn write_elements<T: Serialize>(chunk: &[T], bytes: &mut Vec<u8>) -> bincode::Result<()> {
    chunk.iter().try_for_each(|element| bincode::serialize_into(&mut *bytes, element))
}

/// A [`SharedVec`] as a checkpoint took it ([`SharedVec::share`]): it serialises as the vector
/// did then, once.
pub struct VecSnapshot<T> {
    len: usize,
    chunks: Vec<Snapshot<Vec<T>>>,
}

impl<T: Serialize> Serialize for VecSnapshot<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len))?;
        for chunk in &self.chunks {
            chunk.serialise_once(|contents| match contents {
                Contents::Fresh(elements) => elements.iter().try_for_each(|element| seq.serialize_element(element)),
                Contents::WrittenAhead(bytes) => seq.serialize_element(&WrittenAhead(bytes)),
            })?;
        }
        seq.end()
    }
}

impl<T> std::ops::Index<usize> for SharedVec<T> {
    type Output = T;

    fn index(&self, at: usize) -> &T {
        &self.chunks[at / VEC_CHUNK][at % VEC_CHUNK]
    }
}

/// The element's chunk is taken back first if shared ([`Shared::get_mut`]).
impl<T: Clone> std::ops::IndexMut<usize> for SharedVec<T> {
    fn index_mut(&mut self, at: usize) -> &mut T {
        &mut self.chunks[at / VEC_CHUNK].get_mut()[at % VEC_CHUNK]
    }
}

/// The elements, taken out of the chunks nothing else holds and copied out of the others.
impl<T: Clone> IntoIterator for SharedVec<T> {
    type Item = T;
    type IntoIter = std::iter::FlatMap<
        std::vec::IntoIter<Shared<Vec<T>>>,
        std::vec::IntoIter<T>,
        fn(Shared<Vec<T>>) -> std::vec::IntoIter<T>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.chunks.into_iter().flat_map(|chunk| chunk.into_inner().into_iter())
    }
}

impl<T: Clone> FromIterator<T> for SharedVec<T> {
    fn from_iter<I: IntoIterator<Item = T>>(elements: I) -> Self {
        let mut vec = SharedVec::default();
        for element in elements {
            vec.push(element);
        }
        vec
    }
}

impl<T: Serialize> Serialize for SharedVec<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len))?;
        for element in self.iter() {
            seq.serialize_element(element)?;
        }
        seq.end()
    }
}

impl<'de, T: Deserialize<'de> + Clone> Deserialize<'de> for SharedVec<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Elements<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de> + Clone> Visitor<'de> for Elements<T> {
            type Value = SharedVec<T>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sequence")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut elements: A) -> Result<Self::Value, A::Error> {
                let mut vec = SharedVec::default();
                while let Some(element) = elements.next_element()? {
                    vec.push(element);
                }
                Ok(vec)
            }
        }

        deserializer.deserialize_seq(Elements(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::worker_state::serialise_once;
    use std::cell::Cell;

    thread_local! {
        static COPIES: Cell<usize> = const { Cell::new(0) };
    }

    /// A value that counts its copies.
    #[derive(Default, Debug, PartialEq, Serialize, Deserialize)]
    struct Counted(Vec<u64>);

    impl Clone for Counted {
        fn clone(&self) -> Self {
            COPIES.with(|copies| copies.set(copies.get() + 1));
            Counted(self.0.clone())
        }
    }

    fn copies() -> usize {
        COPIES.with(Cell::get)
    }

    /// What a checkpoint takes serialises as the map did when it was taken, byte for byte,
    /// whether the worker changed a shard before the snapshot was serialised (and so wrote it
    /// ahead) or after; no entry is ever copied; and the map goes on with its changes.
    #[test]
    fn a_shared_map_keeps_what_it_held_when_shared_without_copying() {
        let mut map: SharedMap<u64, Counted> = (0..1_000).map(|k| (k, Counted(vec![k]))).collect();
        let then = bincode::serialize(&map).unwrap();
        let snapshot = map.share();
        map.get_mut(&7).expect("present").0.push(70);
        map.insert(2_000, Counted(vec![1]));
        map.remove(&8);
        *map.get_or_default(3_000) = Counted(vec![3]);
        assert_eq!(serialise_once(&snapshot).unwrap(), then, "serialised after changes to some shards");
        map.remove(&9);
        assert!(serialise_once(&snapshot).is_err(), "a snapshot serialises once");
        assert_eq!(map.get(&7), Some(&Counted(vec![7, 70])));
        assert_eq!((map.get(&8), map.get(&9), map.get(&3_000)), (None, None, Some(&Counted(vec![3]))));
        assert_eq!(map.len(), 1_000);
        assert_eq!(copies(), 0, "no entry was copied");

        let standard: HashMap<u64, Counted> = bincode::deserialize(&then).unwrap();
        assert_eq!(standard.len(), 1_000);
        let back: SharedMap<u64, Counted> = bincode::deserialize(&bincode::serialize(&standard).unwrap()).unwrap();
        let mut entries: Vec<_> = back.into_iter().collect();
        entries.sort_by_key(|(k, _)| *k);
        assert_eq!(entries, (0..1_000).map(|k| (k, Counted(vec![k]))).collect::<Vec<_>>());
    }

    /// Two checkpoints under way at once each serialise the map as it was when they took it.
    #[test]
    fn overlapping_snapshots_each_keep_their_own_moment() {
        let mut map: SharedMap<u64, Counted> = (0..200).map(|k| (k, Counted(vec![k]))).collect();
        let (first_then, first) = (bincode::serialize(&map).unwrap(), map.share());
        map.get_mut(&1).expect("present").0.push(10);
        let (second_then, second) = (bincode::serialize(&map).unwrap(), map.share());
        let untouched_since_both = map.share();
        map.get_mut(&1).expect("present").0.push(11);
        map.get_mut(&2).expect("present").0.push(20);
        assert_eq!(serialise_once(&second).unwrap(), second_then);
        assert_eq!(serialise_once(&first).unwrap(), first_then);
        drop(untouched_since_both);
        map.get_mut(&3).expect("present").0.push(30);
        assert_eq!(map.get(&1), Some(&Counted(vec![1, 10, 11])));
        assert_eq!(copies(), 0, "no entry was copied");
    }

    /// The same for a vector, across chunk boundaries; it serialises exactly as a `Vec` does.
    #[test]
    fn a_shared_vec_keeps_what_it_held_when_shared_without_copying() {
        let mut vec: SharedVec<Counted> = (0..3_000).map(|k| Counted(vec![k])).collect();
        let standard: Vec<Counted> = (0..3_000).map(|k| Counted(vec![k])).collect();
        let snapshot = vec.share();
        vec[5].0.push(50);
        vec[2_500] = Counted(vec![25]);
        vec.push(Counted(vec![3_000]));
        assert_eq!(serialise_once(&snapshot).unwrap(), bincode::serialize(&standard).unwrap());
        for at in [1_024, 1_025] {
            vec[at].0.push(1);
        }
        assert_eq!(
            (&vec[5].0, &vec[2_500].0, &vec[3_000].0, &vec[1_024].0),
            (&vec![5, 50], &vec![25], &vec![3_000], &vec![1_024, 1])
        );
        assert_eq!(vec.len(), 3_001);
        assert_eq!(copies(), 0, "no element was copied");
        let back: SharedVec<Counted> = bincode::deserialize(&bincode::serialize(&standard).unwrap()).unwrap();
        assert!(back.iter().eq(standard.iter()));
    }

    /// A single shared value, written ahead or not, serialises as the value did when shared.
    #[test]
    fn a_shared_value_serialises_as_it_was_when_shared() {
        let mut value = Shared::new(Counted(vec![1, 2, 3]));
        let then = bincode::serialize(&*value).unwrap();
        let (written_ahead, untouched) = (value.share(), value.share());
        value.get_mut().0.push(4);
        assert_eq!(serialise_once(&written_ahead).unwrap(), then);
        assert_eq!(serialise_once(&untouched).unwrap(), then);
        assert_eq!(value.into_inner(), Counted(vec![1, 2, 3, 4]));
    }

    /// Bytes written ahead pass through bincode as they are, whatever their length.
    #[test]
    fn bytes_written_ahead_pass_through_bincode_unchanged() {
        for len in [0, 1, 7, 8, 9, 16, 23] {
            let bytes: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(37)).collect();
            assert_eq!(bincode::serialize(&WrittenAhead(&bytes)).unwrap(), bytes, "{len} bytes");
        }
    }
}
