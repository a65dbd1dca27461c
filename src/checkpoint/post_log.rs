//! The log of what is posted over HTTP (events, and requests to forget a user) while a run takes
//! checkpoints: each request's records are appended and synced to disk before the request is
//! answered, so an answered post survives a crash.
//!
//! The log numbers the records in the order the ingest operator takes them (a record is handed
//! on while the log is held, so the two orders agree). A checkpoint records how many posted
//! records its run had taken; on restore, the records after those are posted again, in their
//! order, and the ones before are already in the restored state. A last line cut short by a
//! crash was never answered, and is dropped.
//!
//! ```text
//! {"seq":0,"post":{"Event":{"event":{...},"ts_given":true}}}
//! {"seq":1,"post":{"Forget":{"Num":42}}}
//! ```

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::json_lines;
use crate::event::{DeadLetter, Event, Id};

/// One posted record as the log keeps it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum LoggedPost {
    /// A valid event; `ts_given` is false when the poster left `ts` out.
    Event {
        /// The event.
        event: Event,
        /// Whether the poster gave its timestamp.
        ts_given: bool,
    },
    /// A record that did not decode, as its dead letter.
    Rejected(DeadLetter),
    /// A request to forget a user.
    Forget(Id),
}

/// One line of the log.
#[derive(Serialize, Deserialize)]
struct Line {
    seq: u64,
    post: LoggedPost,
}

/// The log, open for appending.
#[derive(Debug)]
pub struct PostLog {
    appender: Mutex<Appender>,
}

#[derive(Debug)]
struct Appender {
    file: File,
    /// The number the next record gets.
    next: u64,
}

impl PostLog {
    /// Opens the log at `path`, created if missing, and returns it with the records it holds
    /// from number `from` on, in order, with their numbers. The records before number
    /// `keep_from` (every kept checkpoint has taken them) are dropped from the file, and so is a
    /// last line cut short.
    pub fn open(path: &Path, from: u64, keep_from: u64) -> std::io::Result<(PostLog, Vec<(u64, LoggedPost)>)> {
        let (file, lines) = json_lines::open::<Line>(path)?;
        let next = lines.last().map_or(0, |line| line.seq + 1);
        let file = if lines.first().is_some_and(|line| line.seq < keep_from) {
            let kept = json_lines::lines(lines.iter().filter(|line| line.seq >= keep_from))?;
            drop(file);
            json_lines::rewrite(path, &kept)?;
            OpenOptions::new().append(true).open(path)?
        } else {
            file
        };
        let after = lines.into_iter().filter(|line| line.seq >= from).map(|line| (line.seq, line.post)).collect();
        Ok((PostLog { appender: Mutex::new(Appender { file, next }) }, after))
    }

    /// Empties the log at `path` (a run starting over) and opens it.
    pub fn open_empty(path: &Path) -> std::io::Result<PostLog> {
        json_lines::rewrite(path, &[])?;
        Ok(PostLog::open(path, 0, 0)?.0)
    }

    /// Appends `posts` and syncs them to disk, then calls `then` while still holding the log, so
    /// that what `then` hands on keeps the log's order; returns what `then` returns.
    pub fn append<T>(&self, posts: &[LoggedPost], then: impl FnOnce() -> T) -> std::io::Result<T> {
        let mut appender = self.appender.lock().unwrap_or_else(|e| e.into_inner());
        let first = appender.next;
        let numbered: Vec<Line> =
            posts.iter().enumerate().map(|(at, post)| Line { seq: first + at as u64, post: post.clone() }).collect();
        json_lines::append_synced(&mut appender.file, &json_lines::lines(&numbered)?)?;
        appender.next += posts.len() as u64;
        Ok(then())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Action;
    use std::io::Write;

    fn view(user: i64) -> LoggedPost {
        let event =
            Event { user: Id::Num(user), item: Id::Num(7), category: None, action: Action::View, value: None, ts: 5 };
        LoggedPost::Event { event, ts_given: true }
    }

    #[test]
    fn reopened_it_gives_back_what_followed_a_count_and_drops_a_torn_last_line() {
        let dir = std::env::temp_dir().join(format!("recflow-post-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("posted.log");
        let (log, held) = PostLog::open(&path, 0, 0).unwrap();
        assert!(held.is_empty());
        assert_eq!(log.append(&[view(1), view(2)], || "handed on").unwrap(), "handed on");
        log.append(&[LoggedPost::Forget(Id::Num(1))], || ()).unwrap();
        drop(log);
        // A crash in the middle of the next append.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"seq\":3,\"post\":{\"Eve").unwrap();
        drop(file);
        let (log, after) = PostLog::open(&path, 1, 0).unwrap();
        assert_eq!(after, [(1, view(2)), (2, LoggedPost::Forget(Id::Num(1)))]);
        // Numbering goes on after the whole lines, and the torn one is gone.
        log.append(&[view(4)], || ()).unwrap();
        let (_, all) = PostLog::open(&path, 0, 0).unwrap();
        assert_eq!(all, [(0, view(1)), (1, view(2)), (2, LoggedPost::Forget(Id::Num(1))), (3, view(4))]);
        let (_, last) = PostLog::open(&path, 3, 0).unwrap();
        assert_eq!(last, [(3, view(4))]);
        // Every kept checkpoint took the first two: they go, and numbering goes on.
        let (log, after) = PostLog::open(&path, 3, 2).unwrap();
        assert_eq!(after, [(3, view(4))]);
        log.append(&[view(5)], || ()).unwrap();
        let (_, all) = PostLog::open(&path, 0, 0).unwrap();
        assert_eq!(all, [(2, LoggedPost::Forget(Id::Num(1))), (3, view(4)), (4, view(5))]);
        assert!(PostLog::open_empty(&path).is_ok());
        assert!(PostLog::open(&path, 0, 0).unwrap().1.is_empty(), "emptied");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
