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
use std::sync::Arc;

use rustc_hash::FxBuildHasher;
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::worker_state::Freeze;

/// How many shards a [`SharedMap`] has.
const MAP_SHARDS: usize = 64;

/// How many elements one chunk of a [`SharedVec`] holds.
const VEC_CHUNK: usize = 1024;

/// One value the worker owns, or shares with a checkpoint until it next changes it.
///
/// Owned, it is changed in place with no more cost than the value itself; a checkpoint
/// ([`Shared::share`]) puts it behind a reference count, and the next change takes it back,
/// copying it only if the checkpoint still holds it.
pub enum Shared<T> {
    /// The worker's alone.
    Own(T),
    /// Shared with a checkpoint (or once shared, not changed since).
    Held(Arc<T>),
}

impl<T> Shared<T> {
    /// Owns `value`.
    pub fn new(value: T) -> Shared<T> {
        Shared::Own(value)
    }

    /// The value, copied if a checkpoint still holds it.
    pub fn into_inner(self) -> T
    where
        T: Clone,
    {
        match self {
            Shared::Own(own) => own,
            Shared::Held(held) => Arc::unwrap_or_clone(held),
        }
    }
}

impl<T: Default + Clone> Shared<T> {
    /// The value, to change: taken back first if shared, copied if a checkpoint still holds it.
    pub fn get_mut(&mut self) -> &mut T {
        if let Shared::Held(held) = self {
            *self = Shared::Own(Arc::unwrap_or_clone(std::mem::take(held)));
        }
        match self {
            Shared::Own(own) => own,
            // Not reached: taken back above.
            Shared::Held(held) => Arc::make_mut(held),
        }
    }

    /// Another handle on the value, for a checkpoint: it keeps the value as it is now, whatever
    /// changes follow. Copies nothing.
    pub fn share(&mut self) -> Shared<T> {
        if let Shared::Own(own) = self {
            *self = Shared::Held(Arc::new(std::mem::take(own)));
        }
        match self {
            Shared::Held(held) => Shared::Held(Arc::clone(held)),
            // Not reached: shared above.
            Shared::Own(own) => Shared::Own(own.clone()),
        }
    }
}

impl<T: Default> Default for Shared<T> {
    fn default() -> Self {
        Shared::Own(T::default())
    }
}

impl<T: Clone> Clone for Shared<T> {
    fn clone(&self) -> Self {
        match self {
            Shared::Own(own) => Shared::Own(own.clone()),
            Shared::Held(held) => Shared::Held(Arc::clone(held)),
        }
    }
}

impl<T> std::ops::Deref for Shared<T> {
    type Target = T;

    fn deref(&self) -> &T {
        match self {
            Shared::Own(own) => own,
            Shared::Held(held) => held,
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

/// A hash map in shards a checkpoint can share ([`SharedMap::share`]).
#[derive(Clone)]
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
    pub fn share(&mut self) -> SharedMap<K, V> {
        SharedMap { shards: self.shards.iter_mut().map(Shared::share).collect() }
    }
}

/// A checkpoint shares the shards.
impl<K, V> Freeze for SharedMap<K, V>
where
    K: Hash + Eq + Clone + Serialize + Send + Sync + 'static,
    V: Clone + Serialize + Send + Sync + 'static,
{
    type Frozen = Self;

    fn freeze(&mut self) -> Self {
        self.share()
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
#[derive(Clone)]
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
    pub fn share(&mut self) -> SharedVec<T> {
        SharedVec { chunks: self.chunks.iter_mut().map(Shared::share).collect(), len: self.len }
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

    /// What a checkpoint shares keeps the contents of the moment it was shared, while the map
    /// goes on changing; both serialise as a standard map with the same entries would.
    #[test]
    fn a_shared_map_keeps_what_it_held_when_shared() {
        let mut map: SharedMap<u64, Vec<u64>> = (0..1_000).map(|k| (k, vec![k])).collect();
        let shared = map.share();
        map.get_mut(&7).expect("present").push(70);
        map.insert(2_000, vec![1]);
        map.remove(&8);
        *map.get_or_default(3_000) = vec![3];
        map.remove(&9);
        assert_eq!(shared.len(), 1_000);
        assert_eq!(shared.get(&7), Some(&vec![7]));
        assert_eq!(shared.get(&8), Some(&vec![8]));
        assert_eq!(shared.get(&9), Some(&vec![9]));
        assert_eq!(shared.get(&2_000), None);
        assert_eq!(map.get(&7), Some(&vec![7, 70]));
        assert_eq!((map.get(&8), map.get(&9), map.get(&3_000)), (None, None, Some(&vec![3])));
        assert_eq!(map.len(), 1_000);

        let standard: HashMap<u64, Vec<u64>> = shared.iter().map(|(k, v)| (*k, v.clone())).collect();
        let read: HashMap<u64, Vec<u64>> = bincode::deserialize(&bincode::serialize(&shared).unwrap()).unwrap();
        assert_eq!(read, standard);
        let back: SharedMap<u64, Vec<u64>> = bincode::deserialize(&bincode::serialize(&standard).unwrap()).unwrap();
        let mut entries: Vec<_> = back.into_iter().collect();
        entries.sort();
        assert_eq!(entries, (0..1_000).map(|k| (k, vec![k])).collect::<Vec<_>>());
    }

    /// The same for a vector, across chunk boundaries; it serialises exactly as a `Vec` does.
    #[test]
    fn a_shared_vec_keeps_what_it_held_when_shared() {
        let mut vec: SharedVec<u32> = (0..3_000).collect();
        let shared = vec.share();
        vec[5] = 50;
        vec[2_500] = 25;
        vec.push(3_000);
        for at in [1_024, 1_025] {
            vec[at] += 1;
        }
        let standard: Vec<u32> = (0..3_000).collect();
        assert_eq!(shared.iter().copied().collect::<Vec<_>>(), standard);
        assert_eq!(bincode::serialize(&shared).unwrap(), bincode::serialize(&standard).unwrap());
        assert_eq!((vec[5], vec[2_500], vec[3_000], vec[1_024], vec[1_026]), (50, 25, 3_000, 1_025, 1_026));
        assert_eq!(vec.len(), 3_001);
        let back: SharedVec<u32> = bincode::deserialize(&bincode::serialize(&standard).unwrap()).unwrap();
        assert_eq!(back.iter().copied().collect::<Vec<_>>(), standard);
    }
}
