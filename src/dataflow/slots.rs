//! Dense local slots for ids: an operator that keeps many small facts per item (counts, flags,
//! reverse indexes) holds them in vectors indexed by a slot instead of in maps keyed by [`Id`]
//! clones, so its inner loops index arrays instead of hashing and comparing ids.
//!
//! Slots are local to one operator on one worker and never leave it: anything sent on or ordered
//! (ties are broken by id) goes back through [`Slots::id`]. A released slot is reused for the next
//! new id, so memory follows the live ids, not every id ever seen.
//!
//! [`Id`]: crate::event::Id

use std::hash::Hash;

use rustc_hash::FxHashMap as HashMap;

/// A slot number: an index into an operator's per-slot vectors.
pub type Slot = u32;

/// Assigns each live id a dense slot.
///
/// ```
/// use recflow::dataflow::slots::Slots;
///
/// let mut slots: Slots<&str> = Slots::default();
/// let (a, new) = slots.assign(&"a");
/// assert!(new);
/// assert_eq!(slots.assign(&"a"), (a, false));
/// let (b, _) = slots.assign(&"b");
/// assert_eq!((*slots.id(a), *slots.id(b)), ("a", "b"));
/// slots.release(a);
/// slots.release(a);
/// assert_eq!(slots.get(&"a"), None);
/// // The released slot is reused.
/// assert_eq!(slots.assign(&"c"), (a, true));
/// assert_eq!(slots.len(), 2);
/// ```
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(bound(serialize = "K: serde::Serialize", deserialize = "K: serde::Deserialize<'de> + Eq + Hash"))]
pub struct Slots<K> {
    /// The slot of each live id.
    assigned: HashMap<K, Slot>,
    /// The id in each slot (a released slot keeps its last id until it is reused).
    ids: Vec<K>,
    /// Released slots, reused before new ones.
    free: Vec<Slot>,
}

impl<K> Default for Slots<K> {
    fn default() -> Self {
        Slots { assigned: HashMap::default(), ids: Vec::new(), free: Vec::new() }
    }
}

impl<K: Clone + Eq + Hash> Slots<K> {
    /// The slot of `id`, assigning one if it has none; and whether it was assigned just now.
    /// Every slot is below [`Slots::len`].
    pub fn assign(&mut self, id: &K) -> (Slot, bool) {
        if let Some(&slot) = self.assigned.get(id) {
            return (slot, false);
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                self.ids[slot as usize] = id.clone();
                slot
            }
            None => {
                self.ids.push(id.clone());
                (self.ids.len() - 1) as Slot
            }
        };
        self.assigned.insert(id.clone(), slot);
        (slot, true)
    }

    /// The slot of `id`, if it has one.
    pub fn get(&self, id: &K) -> Option<Slot> {
        self.assigned.get(id).copied()
    }

    /// The id in `slot` (the last one, if the slot was released).
    pub fn id(&self, slot: Slot) -> &K {
        &self.ids[slot as usize]
    }

    /// The id in every slot, indexed by slot (for comparators that order slots by id).
    pub fn ids(&self) -> &[K] {
        &self.ids
    }

    /// Frees `slot` for another id; the caller resets what it keeps per slot. Releasing a slot
    /// that is already free does nothing.
    pub fn release(&mut self, slot: Slot) {
        let id = &self.ids[slot as usize];
        if self.assigned.get(id) == Some(&slot) {
            self.assigned.remove(id);
            self.free.push(slot);
        }
    }

    /// One more than the highest slot ever assigned: the length per-slot vectors need.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no slot was ever assigned.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}
