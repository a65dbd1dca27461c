//! What the server answers from: the current value of every key of the changelog (each user's
//! list, each kept hot-items window), the output frontier they are valid as of, and whether the
//! input has ended. Only the server's thread touches it; the worker feeds it through the sink's
//! [`Mailbox`](crate::sink::mailbox::Mailbox), taken as [`Feed`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::event::{Id, Millis};
use crate::results::ChangeRecord;
use crate::sink::mailbox::Feed;

/// The records of one batch of changes, in changelog order.
pub type Changes = Vec<Arc<ChangeRecord>>;

/// The current results, as of the output frontier.
#[derive(Debug)]
pub struct Served {
    recs: HashMap<Id, Arc<ChangeRecord>>,
    /// The list for users without one of their own.
    popular: Option<Arc<ChangeRecord>>,
    /// Hot-items lists by window end (input's unit), then by category.
    hot: BTreeMap<u64, BTreeMap<Option<Id>, Arc<ChangeRecord>>>,
    as_of: Option<u64>,
    /// The sink's frontier in milliseconds.
    frontier: Option<Millis>,
    ended: bool,
    unit: u64,
    hot_windows: usize,
}

/// Which changes a subscriber follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Topic {
    /// Recommendation lists: of these users, or of all users (with the list for users without
    /// one of their own).
    Recs(Option<BTreeSet<Id>>),
    /// Hot-items lists.
    HotItems,
}

impl Topic {
    /// Whether `record` belongs to this topic.
    pub fn matches(&self, record: &ChangeRecord) -> bool {
        match (self, record) {
            (Topic::Recs(None), ChangeRecord::Recs { .. } | ChangeRecord::Popular { .. }) => true,
            (Topic::Recs(Some(users)), ChangeRecord::Recs { user, .. }) => users.contains(user),
            (Topic::HotItems, ChangeRecord::HotItems { .. }) => true,
            _ => false,
        }
    }
}

impl Served {
    /// Empty state for times in units of `unit` ms, keeping at most `hot_windows` windows.
    pub fn new(unit: u64, hot_windows: usize) -> Served {
        Served {
            recs: HashMap::new(),
            popular: None,
            hot: BTreeMap::new(),
            as_of: None,
            frontier: None,
            ended: false,
            unit: unit.max(1),
            hot_windows: hot_windows.max(1),
        }
    }

    /// Applies what the sink said; returns the changes subscribers should see, if any.
    pub fn apply(&mut self, feed: Feed) -> Option<Changes> {
        match feed {
            Feed::Changes(records) => {
                let records: Vec<Arc<ChangeRecord>> = records.into_iter().map(Arc::new).collect();
                for record in &records {
                    self.upsert(record);
                }
                Some(records)
            }
            Feed::Progress(Some(frontier)) => {
                self.frontier = Some(self.frontier.map_or(frontier, |f| f.max(frontier)));
                // Every change at a time at most `frontier - 1` ms is in.
                if let Some(last) = frontier.checked_sub(1) {
                    self.as_of = Some(self.as_of.map_or(last / self.unit, |t| t.max(last / self.unit)));
                }
                None
            }
            Feed::Progress(None) => {
                self.ended = true;
                None
            }
        }
    }

    fn upsert(&mut self, record: &Arc<ChangeRecord>) {
        match &**record {
            ChangeRecord::Recs { user, items, .. } => {
                if items.is_empty() {
                    self.recs.remove(user);
                } else {
                    self.recs.insert(user.clone(), Arc::clone(record));
                }
            }
            ChangeRecord::Popular { items, .. } => {
                self.popular = (!items.is_empty()).then(|| Arc::clone(record));
            }
            ChangeRecord::HotItems { window_end, category, items, .. } => {
                let window = self.hot.entry(*window_end).or_default();
                if items.is_empty() {
                    window.remove(category);
                    if window.is_empty() {
                        self.hot.remove(window_end);
                    }
                } else {
                    window.insert(category.clone(), Arc::clone(record));
                }
                while self.hot.len() > self.hot_windows {
                    self.hot.pop_first();
                }
            }
        }
    }

    /// A user's current list (the last change record of that user), if they have one.
    pub fn recs(&self, user: &Id) -> Option<Arc<ChangeRecord>> {
        self.recs.get(user).cloned()
    }

    /// The list for users without one of their own (the last change record of it), if the
    /// popular pool holds anything.
    pub fn popular(&self) -> Option<Arc<ChangeRecord>> {
        self.popular.clone()
    }

    /// The lists of the window ending at `window_end`, or of the latest window; with its end.
    pub fn hot_window(&self, window_end: Option<u64>) -> Option<(u64, Vec<Arc<ChangeRecord>>)> {
        let (end, lists) = match window_end {
            Some(end) => self.hot.get_key_value(&end)?,
            None => self.hot.last_key_value()?,
        };
        Some((*end, lists.values().cloned().collect()))
    }

    /// The current value of every key of `topic`.
    pub fn snapshot(&self, topic: &Topic) -> Vec<Arc<ChangeRecord>> {
        match topic {
            Topic::Recs(Some(users)) => users.iter().filter_map(|u| self.recs.get(u).cloned()).collect(),
            Topic::Recs(None) => {
                let mut all: Vec<_> = self.recs.iter().collect();
                all.sort_by(|a, b| a.0.cmp(b.0));
                self.popular.iter().chain(all.into_iter().map(|(_, r)| r)).cloned().collect()
            }
            Topic::HotItems => self.hot.values().flat_map(|w| w.values().cloned()).collect(),
        }
    }

    /// The output frontier in the input's unit: every change up to and including this time is in.
    pub fn as_of(&self) -> Option<u64> {
        self.as_of
    }

    /// Whether every change at dataflow time `time` (ms) is in: the frontier has passed it, or the
    /// input has ended.
    pub fn complete_at(&self, time: Millis) -> bool {
        self.ended || self.frontier.is_some_and(|f| f > time)
    }

    /// The input's unit in milliseconds.
    pub fn unit(&self) -> u64 {
        self.unit
    }

    /// Whether the input has ended and the results are final.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Users with a list.
    pub fn users(&self) -> usize {
        self.recs.len()
    }

    /// Hot-items windows kept.
    pub fn hot_windows(&self) -> usize {
        self.hot.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{CountedItem, ScoredItem};

    fn recs(user: i64, time: u64, items: &[i64]) -> ChangeRecord {
        recs_of(Id::Num(user), time, items)
    }

    fn recs_of(user: Id, time: u64, items: &[i64]) -> ChangeRecord {
        let items = items
            .iter()
            .map(|i| ScoredItem { item: Id::Num(*i), score: 1.0, fallback: false, because: Vec::new() })
            .collect();
        ChangeRecord::Recs { user, time, items }
    }

    fn hot(window_end: u64, items: &[i64]) -> ChangeRecord {
        let items = items.iter().map(|i| CountedItem { item: Id::Num(*i), count: 1 }).collect();
        ChangeRecord::HotItems { window_start: window_end as i64 - 10, window_end, category: None, items }
    }

    #[test]
    fn keeps_the_last_value_per_key_and_the_frontier() {
        let mut served = Served::new(1_000, 2);
        served.apply(Feed::Changes(vec![recs(1, 5, &[7]), recs(2, 5, &[8]), hot(10, &[1]), hot(20, &[2])]));
        served.apply(Feed::Changes(vec![recs(1, 6, &[9]), recs(2, 6, &[]), hot(30, &[3])]));
        served.apply(Feed::Progress(Some(7_000)));
        assert_eq!(served.recs(&Id::Num(1)).as_deref(), Some(&recs(1, 6, &[9])));
        assert!(served.recs(&Id::Num(2)).is_none(), "an emptied list is gone");
        assert_eq!(served.as_of(), Some(6));
        assert!(served.complete_at(6_999) && !served.complete_at(7_000));
        assert_eq!(served.hot_windows(), 2, "the oldest window was dropped");
        assert_eq!(served.hot_window(None).map(|(end, _)| end), Some(30));
        assert!(served.hot_window(Some(10)).is_none());
        let topic = Topic::Recs(Some([Id::Num(1)].into()));
        assert_eq!(served.snapshot(&topic).len(), 1);
        assert!(!served.ended());
        served.apply(Feed::Progress(None));
        assert!(served.ended());
    }

    /// The number 42 and the text "42" are two users, each with its own list and subscribers.
    #[test]
    fn distinct_ids_never_share_a_key() {
        let mut served = Served::new(1_000, 2);
        let text = Id::Text("42".into());
        served.apply(Feed::Changes(vec![recs(42, 5, &[7]), recs_of(text.clone(), 5, &[8])]));
        assert_eq!(served.users(), 2);
        assert_eq!(served.recs(&Id::Num(42)).as_deref(), Some(&recs(42, 5, &[7])));
        assert_eq!(served.recs(&text).as_deref(), Some(&recs_of(text.clone(), 5, &[8])));
        let following_text = Topic::Recs(Some([Id::from_key("\"42\"").unwrap()].into()));
        assert_eq!(served.snapshot(&following_text), [Arc::new(recs_of(text, 5, &[8]))]);
        assert!(!following_text.matches(&recs(42, 6, &[9])));
    }
}
