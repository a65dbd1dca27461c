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
use super::rescale::{Owner, Rescale};

/// Takes one operator's state as it stands, on the worker's thread, to be serialised later.
pub type Saver = Box<dyn Fn() -> Frozen>;

/// One operator's state as it stood at a checkpoint, serialised when called: on another thread
/// than the worker's, which goes on meanwhile.
pub type Frozen = Box<dyn FnOnce() -> Result<Vec<u8>, bincode::Error> + Send>;

/// A state a checkpoint takes on the worker's thread, quickly, and serialises on another.
///
/// `Frozen` must serialise to exactly the bytes the state itself does, since a restore reads
/// them back as the state: it is the state's serialised fields, in order (bincode writes a
/// struct as its fields one after the other, so a tuple of them serialises the same).
pub trait Freeze {
    /// The state's serialised part, free of the worker's handles (capabilities).
    type Frozen: Serialize + Send + 'static;

    /// The state's serialised part as it is now, whatever changes follow: large parts shared
    /// ([`super::shared`]), small ones copied.
    fn freeze(&mut self) -> Self::Frozen;
}

/// State kept as a plain map (what a sink writes at each time) is copied whole.
impl<K, V> Freeze for std::collections::BTreeMap<K, V>
where
    K: Clone + Serialize + Send + 'static,
    V: Clone + Serialize + Send + 'static,
{
    type Frozen = Self;

    fn freeze(&mut self) -> Self {
        self.clone()
    }
}

/// Serialises `frozen` when called, in one pass: shared state serialises once only
/// ([`super::shared::Snapshot`]), and `bincode::serialize` would go over it twice (once to size
/// its buffer).
pub fn frozen<F: Serialize + Send + 'static>(frozen: F) -> Frozen {
    Box::new(move || serialise_once(&frozen))
}

/// `value` serialised as `bincode::serialize` does, in one pass over it.
pub fn serialise_once<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, bincode::Error> {
    let mut bytes = Vec::new();
    bincode::serialize_into(&mut bytes, value)?;
    Ok(bytes)
}

/// Every registered operator's state as it stood at a checkpoint, by operator address.
pub struct FrozenOperators(Vec<(Vec<usize>, Frozen)>);

impl FrozenOperators {
    /// Serialises every operator's state, in the order they were built.
    pub fn serialise(self) -> Result<Vec<SavedOperator>, bincode::Error> {
        self.0.into_iter().map(|(address, frozen)| Ok((address, ByteBuf::from(frozen()?)))).collect()
    }
}

/// One operator's saved state: its timely address and its serialised state (as bytes, which
/// bincode reads and writes whole rather than one element at a time).
pub type SavedOperator = (Vec<usize>, ByteBuf);

/// What one worker's checkpoints know of its operators.
#[derive(Default)]
pub struct WorkerState {
    holding: Holding,
    savers: Vec<(Vec<usize>, Saver)>,
    /// Saved state not yet taken back by the operator at its address.
    restored: Restoring,
    /// Saved state an operator could not read back, with why.
    unreadable: Vec<(Vec<usize>, String)>,
}

/// What a worker restores its operators from.
enum Restoring {
    /// Its own saved state, by operator address: the checkpoint was taken on as many workers.
    Own(HashMap<Vec<usize>, Vec<u8>>),
    /// Every old worker's saved state, each operator's rebuilt for this worker of a run with
    /// another number of workers ([`Rescale`]).
    Rescaled { to: Owner, old: Vec<HashMap<Vec<usize>, Vec<u8>>> },
}

impl Default for Restoring {
    fn default() -> Self {
        Restoring::Own(HashMap::new())
    }
}

thread_local! {
    static WORKER: RefCell<Option<Rc<RefCell<WorkerState>>>> = const { RefCell::new(None) };
}

/// Makes this worker thread take part in checkpoints, restoring its operators from `restored`
/// (empty for a fresh start): operators built from now on register their state with the
/// returned handle, take their saved state back, and their due work follows its [`Holding`].
pub fn install(restored: Vec<SavedOperator>) -> Rc<RefCell<WorkerState>> {
    install_restoring(Restoring::Own(by_address(restored)))
}

/// [`install`] for worker `to` of a run restoring a checkpoint taken on another number of
/// workers: `old` holds every old worker's saved operators, in old worker order.
pub fn install_rescaled(old: Vec<Vec<SavedOperator>>, to: Owner) -> Rc<RefCell<WorkerState>> {
    install_restoring(Restoring::Rescaled { to, old: old.into_iter().map(by_address).collect() })
}

fn by_address(saved: Vec<SavedOperator>) -> HashMap<Vec<usize>, Vec<u8>> {
    saved.into_iter().map(|(address, bytes)| (address, bytes.into_vec())).collect()
}

fn install_restoring(restored: Restoring) -> Rc<RefCell<WorkerState>> {
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
/// holds one; rebuilt from every old worker's when the checkpoint was taken on another number
/// of workers. State that cannot be read back is recorded ([`WorkerState::problems`]) and
/// treated as absent.
pub fn restored<T: DeserializeOwned + Rescale>(address: &[usize]) -> Option<T> {
    let (saved, to) = with_state(|state| match &mut state.restored {
        Restoring::Own(own) => (own.remove(address).into_iter().collect::<Vec<_>>(), None),
        Restoring::Rescaled { to, old } => {
            (old.iter_mut().filter_map(|part| part.remove(address)).collect(), Some(*to))
        }
    })?;
    if saved.is_empty() {
        return None;
    }
    // Read outside the borrow: what is read may ask for the worker's state too.
    let read: Result<Vec<T>, bincode::Error> = saved.iter().map(|bytes| bincode::deserialize(bytes)).collect();
    match (read, to) {
        (Ok(mut states), None) => states.pop(),
        (Ok(states), Some(to)) => Some(T::rescale(states, to)),
        (Err(e), _) => {
            with_state(|state| state.unreadable.push((address.to_vec(), e.to_string())));
            None
        }
    }
}

/// Where this worker stands in a run restoring a checkpoint taken on another number of workers:
/// for operators that must do more than rebuild their state ([`Rescale`]).
pub fn rescaled() -> Option<Owner> {
    with_state(|state| match &state.restored {
        Restoring::Rescaled { to, .. } => Some(*to),
        Restoring::Own(_) => None,
    })
    .flatten()
}

/// The state of the operator at `address`: restored from the checkpoint this worker restores,
/// if it holds one, or else `fresh()`; registered to be saved at every checkpoint. Without
/// checkpoints on this worker, simply `fresh()`.
pub fn keep<S: Freeze + DeserializeOwned + Rescale + 'static>(
    address: &[usize],
    fresh: impl FnOnce() -> S,
) -> Rc<RefCell<S>> {
    let state = Rc::new(RefCell::new(restored(address).unwrap_or_else(fresh)));
    let saved = Rc::clone(&state);
    register(address, Box::new(move || frozen(saved.borrow_mut().freeze())));
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

    /// Every registered operator's state as it stands, in the order they were built, to be
    /// serialised later ([`FrozenOperators::serialise`]).
    pub fn freeze(&self) -> FrozenOperators {
        FrozenOperators(self.savers.iter().map(|(address, save)| (address.clone(), save())).collect())
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
        let mut unclaimed: Vec<&Vec<usize>> = match &self.restored {
            Restoring::Own(own) => own.keys().collect(),
            Restoring::Rescaled { old, .. } => old.iter().flat_map(HashMap::keys).collect(),
        };
        unclaimed.sort();
        unclaimed.dedup();
        problems
            .extend(unclaimed.into_iter().map(|address| format!("no operator at {address:?} takes its saved state")));
        problems
    }
}
