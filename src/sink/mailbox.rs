//! The feed from the changelog sink to the server. The sink posts change records and frontier
//! advances; the server's thread takes whatever has gathered since it last looked. Posting only
//! takes a lock for as long as it takes to file the records, so the dataflow never waits on the
//! server. Records of one key that the server has not taken yet replace each other (every
//! record is the key's whole current value), so what waits is bounded by the number of users
//! and kept hot-items windows however far the server falls behind; only subscribers of a server
//! that far behind miss the values in between.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::event::{Id, Millis};
use crate::results::ChangeRecord;

/// What the changelog sink tells the server.
#[derive(Debug)]
pub enum Feed {
    /// Change records, in changelog order (time, then key).
    Changes(Vec<ChangeRecord>),
    /// The sink's frontier in milliseconds: every change before it has been fed. `None`: the
    /// input has ended and the results are final.
    Progress(Option<Millis>),
}

/// What the sink has posted and the server not yet taken.
#[derive(Debug)]
pub struct Mailbox {
    pending: Mutex<Pending>,
    posted: Notify,
}

#[derive(Debug, Default)]
struct Pending {
    /// The waiting records by the order they were posted in.
    records: BTreeMap<u64, ChangeRecord>,
    next: u64,
    /// Where each user's record waits.
    users: HashMap<Id, u64>,
    /// Where the new-user list's record waits.
    popular: Option<u64>,
    /// Where each hot-items list's record waits, by `(window_end, category)`.
    hot: BTreeMap<(u64, Option<Id>), u64>,
    /// How many lists of each window wait.
    hot_ends: BTreeMap<u64, usize>,
    /// The latest frontier posted.
    frontier: Option<Millis>,
    /// Whether the input has ended (posted after the last frontier).
    ended: bool,
    /// Hot-items windows kept; records of older windows are dropped, as the served state would
    /// drop those windows anyway.
    hot_windows: usize,
}

impl Mailbox {
    /// An empty mailbox for a server keeping `hot_windows` hot-items windows.
    pub fn new(hot_windows: usize) -> Mailbox {
        Mailbox { pending: Mutex::new(Pending { hot_windows, ..Pending::default() }), posted: Notify::new() }
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Posts change records, in changelog order.
    pub fn post_changes(&self, records: Vec<ChangeRecord>) {
        if records.is_empty() {
            return;
        }
        let mut pending = self.pending();
        for record in records {
            pending.file(record);
        }
        pending.drop_old_windows();
        drop(pending);
        self.posted.notify_one();
    }

    /// Posts the sink's frontier (`None`: the input has ended and the results are final).
    pub fn post_progress(&self, frontier: Option<Millis>) {
        let mut pending = self.pending();
        match frontier {
            Some(now) => pending.frontier = Some(pending.frontier.map_or(now, |before| before.max(now))),
            None => pending.ended = true,
        }
        drop(pending);
        self.posted.notify_one();
    }

    /// Waits until something is posted and takes everything waiting: the changes, oldest first,
    /// then the latest frontier, then the end of the input.
    pub async fn take(&self) -> Vec<Feed> {
        loop {
            let taken = self.pending().take();
            if !taken.is_empty() {
                return taken;
            }
            // A post between the look above and this wait leaves a permit, so none is missed.
            self.posted.notified().await;
        }
    }

    /// Records waiting now.
    pub fn waiting(&self) -> usize {
        self.pending().records.len()
    }
}

impl Pending {
    fn file(&mut self, record: ChangeRecord) {
        let at = self.next;
        self.next += 1;
        let replaced = match &record {
            ChangeRecord::Recs { user, .. } => self.users.insert(user.clone(), at),
            ChangeRecord::Popular { .. } => self.popular.replace(at),
            ChangeRecord::HotItems { window_end, category, .. } => {
                let replaced = self.hot.insert((*window_end, category.clone()), at);
                if replaced.is_none() {
                    *self.hot_ends.entry(*window_end).or_default() += 1;
                }
                replaced
            }
        };
        if let Some(earlier) = replaced {
            self.records.remove(&earlier);
        }
        self.records.insert(at, record);
    }

    /// Drops the records of all but the latest `hot_windows` windows.
    fn drop_old_windows(&mut self) {
        while self.hot_ends.len() > self.hot_windows {
            let Some((oldest, _)) = self.hot_ends.pop_first() else { return };
            let lists: Vec<(u64, Option<Id>)> = self
                .hot
                .range((oldest, None)..)
                .take_while(|(key, _)| key.0 == oldest)
                .map(|(key, _)| key.clone())
                .collect();
            for key in lists {
                if let Some(at) = self.hot.remove(&key) {
                    self.records.remove(&at);
                }
            }
        }
    }

    fn take(&mut self) -> Vec<Feed> {
        let mut taken = Vec::with_capacity(2);
        if !self.records.is_empty() {
            self.users.clear();
            self.popular = None;
            self.hot.clear();
            self.hot_ends.clear();
            taken.push(Feed::Changes(std::mem::take(&mut self.records).into_values().collect()));
        }
        if let Some(frontier) = self.frontier.take() {
            taken.push(Feed::Progress(Some(frontier)));
        }
        if std::mem::take(&mut self.ended) {
            taken.push(Feed::Progress(None));
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs(user: i64, time: u64) -> ChangeRecord {
        ChangeRecord::Recs { user: Id::Num(user), time, items: Vec::new() }
    }

    fn hot(window_end: u64, category: Option<i64>) -> ChangeRecord {
        ChangeRecord::HotItems { window_start: 0, window_end, category: category.map(Id::Num), items: Vec::new() }
    }

    fn take_now(mailbox: &Mailbox) -> Vec<Feed> {
        futures_executor::block_on(mailbox.take())
    }

    fn changes(feed: &[Feed]) -> Vec<String> {
        match &feed[0] {
            Feed::Changes(records) => records.iter().map(|r| format!("{r:?}")).collect(),
            other => panic!("changes come first: {other:?}"),
        }
    }

    #[test]
    fn a_server_far_behind_gets_each_keys_latest_value_in_posting_order() {
        let mailbox = Mailbox::new(10);
        for time in 0..100_000 {
            mailbox.post_changes(vec![recs(time as i64 % 7, time), hot(time / 1000 % 3, None)]);
            mailbox.post_progress(Some(time));
        }
        assert_eq!(mailbox.waiting(), 10, "one record per key waits, however many were posted");
        // Windows 1 and 2 were last posted at 97,999 and 98,999, window 0 last of all.
        let expected: Vec<ChangeRecord> = [hot(1, None), hot(2, None)]
            .into_iter()
            .chain((99_993..100_000).map(|time| recs(time as i64 % 7, time)))
            .chain([hot(0, None)])
            .collect();
        let taken = take_now(&mailbox);
        assert_eq!(changes(&taken), expected.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>());
        assert!(matches!(taken[1], Feed::Progress(Some(99_999))), "{taken:?}");
        assert_eq!(mailbox.waiting(), 0);
    }

    #[test]
    fn the_last_frontier_comes_before_the_end_of_input() {
        let mailbox = Mailbox::new(10);
        mailbox.post_progress(Some(5));
        mailbox.post_progress(Some(9));
        mailbox.post_progress(None);
        // The final frontier must not be lost in the end: answers are valid as of it.
        assert!(matches!(take_now(&mailbox)[..], [Feed::Progress(Some(9)), Feed::Progress(None)]));
    }

    #[test]
    fn only_the_latest_hot_items_windows_wait() {
        let mailbox = Mailbox::new(3);
        for end in 0..50 {
            mailbox.post_changes(vec![hot(end, Some(1)), hot(end, Some(2))]);
        }
        assert_eq!(mailbox.waiting(), 6);
        let taken = take_now(&mailbox);
        let ends: Vec<String> = changes(&taken);
        assert_eq!(ends[0], format!("{:?}", hot(47, Some(1))));
        assert_eq!(ends[5], format!("{:?}", hot(49, Some(2))));
    }
}
