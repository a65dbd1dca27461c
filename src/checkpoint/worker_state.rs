//! The operators' state a worker saves at a checkpoint and restores from, and the signal that a
//! checkpoint is under way.
//!
//! Operators are built deep inside the dataflow, far from the run that decides whether it takes
//! checkpoints, and every timely worker runs on a thread of its own. So the run installs one
//! [`WorkerState`] per worker thread before it builds the dataflow ([`install`]), and each
//! stateful operator registers what it keeps under its timely address, which is the same in
//! every run of the same pipeline, and takes back what a restored checkpoint saved under that
//! address. A worker thread without one (the evaluator, tests that build operators directly)
//! registers nothing, restores nothing and never holds due work back.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_bytes::ByteBuf;

use super::cut::Holding;

/// Saves one operator's state, serialised.
pub type Saver = Box<dyn Fn() -> Result<Vec<u8>, bincode::Error>>;

/// One operator's saved state: its timely address and its serialised state (as bytes, which
/// bincode reads and writes whole rather than one element at a time).
pub type SavedOperator = (Vec<usize>, ByteBuf);

/// What one worker's checkpoints know of its operators.
#[derive(Default)]
pub struct WorkerState {
    holding: Holding,
    savers: Vec<(Vec<usize>, Saver)>,
    /// Saved state not yet taken back by the operator at its address.
    restored: HashMap<Vec<usize>, Vec<u8>>,
    /// Saved state an operator could not read back, with why.
    unreadable: Vec<(Vec<usize>, String)>,
}

thread_local! {
    static WORKER: RefCell<Option<Rc<RefCell<WorkerState>>>> = const { RefCell::new(None) };
}

/// Makes this worker thread take part in checkpoints, restoring its operators from `restored`
/// (empty for a fresh start): operators built from now on register their state with the
/// returned handle, take their saved state back, and their due work follows its [`Holding`].
pub fn install(restored: Vec<SavedOperator>) -> Rc<RefCell<WorkerState>> {
    let restored = restored.into_iter().map(|(address, bytes)| (address, bytes.into_vec())).collect();
    let state = WorkerState { restored, ..WorkerState::default() };
    let state = Rc::new(RefCell::new(state));
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
    with_state(|state| state.holding.clone()).unwrap_or_default()
}

/// Registers the operator at `address` to be saved with `save`, when this worker takes
/// checkpoints; otherwise does nothing.
pub fn register(address: &[usize], save: Saver) {
    with_state(|state| state.savers.push((address.to_vec(), save)));
}

/// The state saved for the operator at `address`, when this worker restores a checkpoint that
/// holds one. State that cannot be read back is recorded ([`WorkerState::problems`]) and
/// treated as absent.
pub fn restored<T: DeserializeOwned>(address: &[usize]) -> Option<T> {
    let bytes = with_state(|state| state.restored.remove(address)).flatten()?;
    // Read outside the borrow: what is read may ask for the worker's state too.
    match bincode::deserialize(&bytes) {
        Ok(value) => Some(value),
        Err(e) => {
            with_state(|state| state.unreadable.push((address.to_vec(), e.to_string())));
            None
        }
    }
}

/// The state of the operator at `address`: restored from the checkpoint this worker restores,
/// if it holds one, or else `fresh()`; registered to be saved at every checkpoint. Without
/// checkpoints on this worker, simply `fresh()`.
pub fn keep<S: Serialize + DeserializeOwned + 'static>(address: &[usize], fresh: impl FnOnce() -> S) -> Rc<RefCell<S>> {
    let state = Rc::new(RefCell::new(restored(address).unwrap_or_else(fresh)));
    let saved = Rc::clone(&state);
    register(address, Box::new(move || bincode::serialize(&*saved.borrow())));
    state
}

fn with_state<R>(f: impl FnOnce(&mut WorkerState) -> R) -> Option<R> {
    WORKER.with(|worker| worker.borrow().as_ref().map(|state| f(&mut state.borrow_mut())))
}

impl WorkerState {
    /// The signal the ingest operator raises while a checkpoint is under way.
    pub fn holding(&self) -> Holding {
        self.holding.clone()
    }

    /// Every registered operator's state, serialised, in the order they were built.
    pub fn save(&self) -> Result<Vec<SavedOperator>, bincode::Error> {
        self.savers.iter().map(|(address, save)| Ok((address.clone(), ByteBuf::from(save()?)))).collect()
    }

    /// Once the dataflow is built: what kept the restore from being whole, one line each (saved
    /// state no operator took back, since the dataflow differs from the one that saved it, or
    /// could not read back).
    pub fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = self
            .unreadable
            .iter()
            .map(|(address, e)| format!("operator {address:?}: cannot read its state: {e}"))
            .collect();
        let mut unclaimed: Vec<&Vec<usize>> = self.restored.keys().collect();
        unclaimed.sort();
        problems
            .extend(unclaimed.into_iter().map(|address| format!("no operator at {address:?} takes its saved state")));
        problems
    }
}
