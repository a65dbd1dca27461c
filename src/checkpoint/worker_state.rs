//! The operators' state a worker saves at a checkpoint, and the signal that a checkpoint is
//! under way.
//!
//! Operators are built deep inside the dataflow, far from the run that decides whether it takes
//! checkpoints, and every timely worker runs on a thread of its own. So the run installs one
//! [`WorkerState`] per worker thread before it builds the dataflow ([`install`]), and each
//! stateful operator registers what it keeps under its timely address, which is the same in
//! every run of the same pipeline. A worker thread without one (the evaluator, tests that build
//! operators directly) registers nothing and never holds due work back.

use std::cell::RefCell;
use std::rc::Rc;

use super::cut::Holding;

/// Saves one operator's state, serialised.
pub type Saver = Box<dyn Fn() -> Result<Vec<u8>, bincode::Error>>;

/// One operator's saved state: its timely address and its serialised state.
pub type SavedOperator = (Vec<usize>, Vec<u8>);

/// What one worker's checkpoints know of its operators.
#[derive(Default)]
pub struct WorkerState {
    holding: Holding,
    savers: Vec<(Vec<usize>, Saver)>,
}

thread_local! {
    static WORKER: RefCell<Option<Rc<RefCell<WorkerState>>>> = const { RefCell::new(None) };
}

/// Makes this worker thread take part in checkpoints: operators built from now on register
/// their state with the returned handle, and their due work follows its [`Holding`].
pub fn install() -> Rc<RefCell<WorkerState>> {
    let state = Rc::new(RefCell::new(WorkerState::default()));
    WORKER.with(|worker| *worker.borrow_mut() = Some(Rc::clone(&state)));
    state
}

/// Ends this worker thread's part in checkpoints (its dataflow is gone).
pub fn uninstall() {
    WORKER.with(|worker| *worker.borrow_mut() = None);
}

/// Whether due work on this worker waits for the frontier to pass its time: a handle that is
/// never raised unless checkpoints are installed.
pub fn holding() -> Holding {
    WORKER.with(|worker| worker.borrow().as_ref().map(|state| state.borrow().holding.clone()).unwrap_or_default())
}

/// Registers the operator at `address` to be saved with `save`, when this worker takes
/// checkpoints; otherwise does nothing.
pub fn register(address: &[usize], save: Saver) {
    WORKER.with(|worker| {
        if let Some(state) = worker.borrow().as_ref() {
            state.borrow_mut().savers.push((address.to_vec(), save));
        }
    });
}

impl WorkerState {
    /// The signal the ingest operator raises while a checkpoint is under way.
    pub fn holding(&self) -> Holding {
        self.holding.clone()
    }

    /// Every registered operator's state, serialised, in the order they were built.
    pub fn save(&self) -> Result<Vec<SavedOperator>, bincode::Error> {
        self.savers.iter().map(|(address, save)| Ok((address.clone(), save()?))).collect()
    }
}
