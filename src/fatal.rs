//! The first fault a run cannot survive (an output that cannot be written, an input that cannot
//! be read), shared by the parts that meet it and the workers that must stop for it.
//!
//! A sink or source that meets such a fault reports it here and stops advancing: a sink keeps
//! holding its frontier at the earliest result it has not written, so nothing after the last
//! written result is acknowledged and no source offset past it is committed. Every worker of
//! the process checks the fault between steps and ends the run with it, and the process exits
//! non-zero with its message.

use std::sync::{Arc, OnceLock};

/// The first unsurvivable fault of a run, if one happened. Clones share it.
#[derive(Clone, Debug, Default)]
pub struct Fatal(Arc<OnceLock<String>>);

impl Fatal {
    /// Records that `part` (an output or input, named as the user gave it) failed with `cause`;
    /// only the first report is kept, and it is printed once when made.
    ///
    /// ```
    /// let fatal = recflow::fatal::Fatal::default();
    /// fatal.report("output out.jsonl", "cannot write: No space left on device");
    /// fatal.report("dead-letter output stderr", "a later failure");
    /// assert_eq!(fatal.get(), Some("output out.jsonl: cannot write: No space left on device"));
    /// ```
    pub fn report(&self, part: &str, cause: impl std::fmt::Display) {
        let message = format!("{part}: {cause}");
        if self.0.set(message.clone()).is_ok() {
            eprintln!("recflow: {message}; stopping the run");
        }
    }

    /// The fault's message, once one was reported.
    pub fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}
