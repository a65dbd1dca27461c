//! The ledger of forgotten users of a run that takes checkpoints: every forget the ingest
//! operator takes, with the dataflow time it retracts the user's events at, appended and synced
//! in the order they were taken.
//!
//! A forget at time `T` retracts every event of the user with a time up to `T`, whatever order
//! they were read in, so a replay that gives the same events the same times (a file, the
//! generator) and forgets the user again at `T` ends with the same results. A run that starts
//! over (`--fresh`) replays every forget of the ledger at its time, and a restored run those
//! its checkpoint had not taken yet (a checkpoint records how many it had): a forgotten user
//! stays forgotten, and at the same point of the stream.
//!
//! ```text
//! {"user":{"Num":42},"at":1700000060000,"post":17}
//! ```

use std::fs::File;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::json_lines;
use crate::event::{Id, Millis};

/// One forget taken.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Forgotten {
    /// The user.
    pub user: Id,
    /// The dataflow time it retracted the user's events at.
    pub at: Millis,
    /// Its number in the log of posted records, when it was posted there.
    pub post: Option<u64>,
}

/// The ledger, open for appending.
#[derive(Debug)]
pub struct ForgetLedger {
    file: Mutex<File>,
}

impl ForgetLedger {
    /// Opens the ledger at `path`, created if missing, and returns it with every forget it
    /// holds, in the order taken. A last line cut short by a crash is cut off.
    pub fn open(path: &Path) -> std::io::Result<(ForgetLedger, Vec<Forgotten>)> {
        let (file, taken) = json_lines::open(path)?;
        Ok((ForgetLedger { file: Mutex::new(file) }, taken))
    }

    /// Appends a forget and syncs it to disk.
    pub fn record(&self, forgotten: &Forgotten) -> std::io::Result<()> {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        json_lines::append_synced(&mut file, &json_lines::lines([forgotten])?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Write;

    #[test]
    fn reopened_it_gives_back_every_forget_in_order_and_drops_a_torn_last_line() {
        let dir = std::env::temp_dir().join(format!("recflow-forgotten-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("forgotten.log");
        let (ledger, taken) = ForgetLedger::open(&path).unwrap();
        assert!(taken.is_empty());
        let first = Forgotten { user: Id::Num(7), at: 60_000, post: Some(3) };
        let second = Forgotten { user: Id::Text("ann".into()), at: 61_000, post: None };
        ledger.record(&first).unwrap();
        ledger.record(&second).unwrap();
        drop(ledger);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"user\":{\"Num\":8},\"a").unwrap();
        drop(file);
        let (ledger, taken) = ForgetLedger::open(&path).unwrap();
        assert_eq!(taken, [first.clone(), second.clone()]);
        let third = Forgotten { user: Id::Num(9), at: 62_000, post: Some(4) };
        ledger.record(&third).unwrap();
        assert_eq!(ForgetLedger::open(&path).unwrap().1, [first, second, third]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
