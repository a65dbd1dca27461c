//! Serving as a changelog destination: every flushed batch of change records, and every advance
//! of the sink's frontier, goes to the HTTP server's thread through an unbounded channel whose
//! `send` never blocks, so the timely worker never waits on the server or its clients.

use tokio::sync::mpsc::UnboundedSender;

use super::changelog::ChangeRecord;
use super::{Destination, SinkError};
use crate::event::Millis;
use crate::serve::Feed;

/// Feeds the served state from the changelog sink on worker 0.
pub struct ServeFeed {
    tx: UnboundedSender<Feed>,
    batch: Vec<ChangeRecord>,
}

impl ServeFeed {
    /// A feed into the server that `tx` leads to (see [`crate::serve::Server::feed`]).
    pub fn new(tx: UnboundedSender<Feed>) -> ServeFeed {
        ServeFeed { tx, batch: Vec::new() }
    }
}

impl Destination<ChangeRecord> for ServeFeed {
    fn write(&mut self, _time: Millis, record: &ChangeRecord) -> Result<(), SinkError> {
        self.batch.push(record.clone());
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        if !self.batch.is_empty() {
            // A server that has shut down no longer listens; the changelog goes on regardless.
            let _ = self.tx.send(Feed::Changes(std::mem::take(&mut self.batch)));
        }
        Ok(())
    }

    fn progress(&mut self, complete: Option<Millis>) {
        let _ = self.tx.send(Feed::Progress(complete));
    }
}
