//! Serving as a changelog destination: every flushed batch of change records, and every advance
//! of the sink's frontier, is posted to the HTTP server's [`Mailbox`], whose posts never wait,
//! so the timely worker never waits on the server or its clients.

use std::sync::Arc;

use super::mailbox::Mailbox;
use super::{Destination, SinkError};
use crate::event::Millis;
use crate::results::ChangeRecord;

/// Feeds the served state from the changelog sink on worker 0.
pub struct ServeFeed {
    mailbox: Arc<Mailbox>,
    batch: Vec<ChangeRecord>,
}

impl ServeFeed {
    /// A feed into `mailbox`, which the server takes from.
    pub fn new(mailbox: Arc<Mailbox>) -> ServeFeed {
        ServeFeed { mailbox, batch: Vec::new() }
    }
}

impl Destination<ChangeRecord> for ServeFeed {
    fn write(&mut self, _time: Millis, record: &ChangeRecord) -> Result<(), SinkError> {
        self.batch.push(record.clone());
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        // A server that has shut down no longer takes anything; the changelog goes on regardless.
        self.mailbox.post_changes(std::mem::take(&mut self.batch));
        Ok(())
    }

    fn progress(&mut self, complete: Option<Millis>) {
        self.mailbox.post_progress(complete);
    }
}
