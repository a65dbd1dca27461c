//! The first fault a run cannot survive (an output that cannot be written, an input that cannot
//! be read), shared by the parts that meet it and the workers that must stop for it.
//!
//! A sink or source that meets such a fault reports it here and stops advancing: a sink keeps
//! holding its frontier at the earliest result it has not written, so nothing after the last
//! written result is acknowledged and no source offset past it is committed. Every worker of
//! the process checks the fault between steps and ends the run with it, and the process exits
//! non-zero with its message.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// The first unsurvivable fault of a run, if one happened. Clones share it.
#[derive(Clone, Debug, Default)]
pub struct Fatal {
    fault: Arc<OnceLock<String>>,
    /// Whether a report ends the process at once ([`Fatal::end_process_on_report`]).
    abrupt: Arc<AtomicBool>,
}

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
        if self.fault.set(message.clone()).is_ok() {
            eprintln!("recflow: {message}; stopping the run");
        }
        if self.abrupt.load(Ordering::SeqCst) {
            eprintln!("recflow: exiting at once, so that the other processes see this one is gone");
            std::process::exit(1);
        }
    }

    /// Records, like [`report`](Self::report), that `part` failed with `cause`, without printing
    /// it: for an error the run returns and reports itself, which the other workers must only
    /// stop for. With several processes it ends the process at once like a report, printing it,
    /// since nothing else will.
    pub fn stop(&self, part: &str, cause: impl std::fmt::Display) {
        if self.abrupt.load(Ordering::SeqCst) {
            self.report(part, cause);
        } else {
            let _ = self.fault.set(format!("{part}: {cause}"));
        }
    }

    /// The fault's message, once one was reported.
    pub fn get(&self) -> Option<&str> {
        self.fault.get().map(String::as_str)
    }

    /// Makes every report end the process at once with exit status 1, for runs of several
    /// processes. A process whose workers wound down would close its connections cleanly, and a
    /// peer that sees a clean close waits for it for ever; a process that ends abruptly breaks
    /// its connections, which every peer's [`watch_connections`] turns into a fault of its own.
    pub fn end_process_on_report(&self) {
        self.abrupt.store(true, Ordering::SeqCst);
    }
}

/// Reports a broken connection with another process (timely's network threads panic when one
/// breaks, and the workers would otherwise wait for the lost peer for ever) to `fatal`, naming
/// the process. Other panics go to the hook that was installed before.
pub fn watch_connections(fatal: Fatal) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let peer =
            thread.name().and_then(|name| name.strip_prefix("timely:recv-").or(name.strip_prefix("timely:send-")));
        match peer {
            Some(process) => {
                let cause = info.payload_as_str().unwrap_or("the connection broke");
                fatal.report(&format!("connection with process {process}"), format!("lost ({cause})"));
            }
            None => previous(info),
        }
    }));
}

/// The text of a caught panic's payload (what `panic!` was given), or a placeholder.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(text), _) => text.to_string(),
        (_, Some(text)) => text.clone(),
        _ => "a panic without a message".to_string(),
    }
}

/// The environment variable that makes one worker panic, for the tests of what a dying worker
/// does: `RECFLOW_INJECT_PANIC_WORKER=N` makes worker `N` (its index among all workers of all
/// processes) panic after its first step. Unset (as in every normal run), nothing is injected.
pub const INJECT_PANIC_WORKER: &str = "RECFLOW_INJECT_PANIC_WORKER";

/// A worker panic injected for tests ([`INJECT_PANIC_WORKER`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct InjectedPanic {
    worker: Option<usize>,
}

impl InjectedPanic {
    /// The injection the environment asks for, if any.
    pub fn from_env() -> InjectedPanic {
        InjectedPanic { worker: std::env::var(INJECT_PANIC_WORKER).ok().and_then(|w| w.trim().parse().ok()) }
    }

    /// Panics if `worker` is the one to panic.
    pub fn strike(&self, worker: usize) {
        if self.worker == Some(worker) {
            panic!("injected panic on worker {worker} ({INJECT_PANIC_WORKER})");
        }
    }
}
