//! A run's checkpoints on disk. Each worker hands its part of a checkpoint ([`WorkerCut`]) to
//! its process's writer thread, which writes it into the store as a data file; process 0's
//! writer commits the checkpoint's manifest once every worker's part is there (those of other
//! processes too, in the same directory), so a checkpoint is whole or absent. On start, the
//! newest whole checkpoint is read back ([`newest`]) and the file outputs are cut back to what
//! they held at its cut.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::checkpoint::store::{map_in_parallel, CheckpointStore, FileEntry, Manifest, Newest, StoreError};
use crate::checkpoint::{check_compatible, IncompatibleSettings};
use crate::event_time::wall_clock_ms;
use crate::fatal::Fatal;
use crate::metrics::{CheckpointFigures, Metrics};
use crate::sink::kafka::WrittenOffsets;
use crate::source::{FrozenCut, WorkerCut};
use crate::spec::Pipeline;

/// The layout of the operator state a checkpoint holds. It changes whenever the dataflow's
/// operators or what they keep change, so that a checkpoint another recflow took is refused by
/// name instead of read as something else.
///
/// 1: the list for users without one of their own joined the dataflow (checkpoints before it
/// have no number, read as 0).
pub const STATE_FORMAT: u32 = 1;

/// What a manifest records beside the parts' files.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CheckpointMeta {
    /// The layout of the operator state in its parts ([`STATE_FORMAT`] when taken by this
    /// recflow).
    #[serde(default)]
    pub state_format: u32,
    /// The pipeline the checkpoint was taken with, to refuse a changed one on restore.
    pub pipeline: Pipeline,
    /// The number of workers it was taken on.
    pub workers: usize,
    /// Each output that is a regular file, with its length at the cut: restore cuts it back to
    /// that length.
    pub outputs: Vec<(String, u64)>,
    /// How many records posted over HTTP the run had taken: the log of posted records keeps
    /// those after the fewest any kept checkpoint took.
    #[serde(default)]
    pub posted_taken: u64,
    /// Each Kafka output with its partitions' next offsets at the cut: a restored run writes on
    /// from there and skips what a run before it wrote after them.
    #[serde(default)]
    pub kafka_outputs: Vec<KafkaOutputAt>,
}

/// Where a Kafka output stood at a cut.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct KafkaOutputAt {
    /// The topic (its brokers may change between runs).
    pub topic: String,
    /// Every partition's next offset.
    pub next_offsets: BTreeMap<i32, i64>,
}

/// A checkpoint read back for a restore.
pub struct Restored {
    /// Its manifest.
    pub manifest: Manifest,
    /// What it was taken with.
    pub meta: CheckpointMeta,
    /// Every worker's part, in worker order.
    pub parts: Vec<WorkerCut>,
    /// Newer checkpoints passed over as damaged, one line each.
    pub damaged: Vec<String>,
}

/// Why a checkpoint cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The store cannot be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file of the newest whole checkpoint cannot be read back.
    #[error("checkpoint {id}: {problem}")]
    Unreadable {
        /// The checkpoint.
        id: u64,
        /// What is wrong.
        problem: String,
    },
    /// The checkpoint was taken by a recflow that kept other operator state.
    #[error(
        "checkpoint {id} holds operator state of format {found}, and this recflow reads format {STATE_FORMAT}: \
         restore it with the recflow that took it, or run with --fresh to start over"
    )]
    OtherFormat {
        /// The checkpoint.
        id: u64,
        /// Its state format.
        found: u32,
    },
    /// The pipeline changed in a way that changes results.
    #[error(
        "checkpoint {id} was taken with other settings: {changed}; run with the settings it was taken with, or \
         with --fresh to start over"
    )]
    Changed {
        /// The checkpoint.
        id: u64,
        /// The changed settings.
        changed: IncompatibleSettings,
    },
}

/// The newest whole checkpoint in `store`, if any, checked against `pipeline`.
pub fn newest(store: &CheckpointStore, pipeline: &Pipeline) -> Result<Option<Restored>, RestoreError> {
    let Some(Newest { manifest, files, damaged }) = store.newest()? else { return Ok(None) };
    let id = manifest.id;
    let unreadable = |problem: String| RestoreError::Unreadable { id, problem };
    let meta: CheckpointMeta = serde_json::from_value(manifest.meta.clone()).map_err(|e| unreadable(e.to_string()))?;
    if meta.state_format != STATE_FORMAT {
        return Err(RestoreError::OtherFormat { id, found: meta.state_format });
    }
    check_compatible(&meta.pipeline, pipeline).map_err(|changed| RestoreError::Changed { id, changed })?;
    // One thread per part, as they were read: decoding is the other half of the time.
    let decode = |(entry, bytes): (&FileEntry, Vec<u8>)| {
        bincode::deserialize(&bytes).map_err(|e| unreadable(format!("{}: {e}", entry.name)))
    };
    let mut parts =
        map_in_parallel(manifest.files.iter().zip(files), decode).into_iter().collect::<Result<Vec<WorkerCut>, _>>()?;
    // In worker order: a restore on another number of workers takes some state from worker 0.
    parts.sort_by_key(|part| part.worker);
    let damaged = damaged.iter().map(ToString::to_string).collect();
    Ok(Some(Restored { manifest, meta, parts, damaged }))
}

/// The fewest posted records any whole checkpoint in `store` had taken (0 with none): the log of
/// posted records must keep every record from there on.
pub fn posted_taken_by_all(store: &CheckpointStore) -> Result<u64, StoreError> {
    let taken =
        |manifest: Manifest| serde_json::from_value::<CheckpointMeta>(manifest.meta).ok().map(|m| m.posted_taken);
    // A manifest that does not read could be restored by nobody; but be safe and keep all.
    let all: Option<Vec<u64>> = store.list()?.into_iter().map(|listed| listed.ok().and_then(taken)).collect();
    Ok(all.and_then(|counts| counts.into_iter().min()).unwrap_or(0))
}

/// Cuts each file output back to the length it had at the checkpoint's cut.
pub fn cut_back_outputs(meta: &CheckpointMeta) -> std::io::Result<()> {
    for (path, len) in &meta.outputs {
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        if file.metadata()?.len() < *len {
            return Err(std::io::Error::other(format!(
                "{path} is shorter than at the checkpoint ({len} bytes): it was changed since"
            )));
        }
        file.set_len(*len)?;
        file.sync_all()?;
    }
    Ok(())
}

/// A worker's part on its way to the writer, with the file outputs' lengths and the Kafka
/// outputs' offsets when worker 0 saved it (every result before the cut written and flushed, or
/// acknowledged, by then).
struct Part {
    cut: WorkerCut,
    outputs: Vec<(String, u64)>,
    kafka_outputs: Vec<KafkaOutputAt>,
}

/// How the writer of one process runs.
pub struct WriterSettings {
    /// The store.
    pub store: CheckpointStore,
    /// What the manifests record, less the outputs' lengths (taken at each cut).
    pub meta: CheckpointMeta,
    /// Checkpoint numbers continue from here (the newest in the store when the run started).
    pub first_id: u64,
    /// Whether this process commits manifests (process 0).
    pub commits: bool,
    /// The file outputs whose lengths the manifest records.
    pub file_outputs: Vec<String>,
    /// Where a write that fails is reported: the run stops.
    pub fatal: Fatal,
    /// Where the last committed checkpoint's figures go (status line, `/metrics`).
    pub metrics: Arc<Metrics>,
}

/// The writer thread of one process, and the threads serialising the parts it is handed.
pub struct Writer {
    sender: Mutex<Option<mpsc::SyncSender<Part>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The thread serialising each worker's last part: the worker goes on meanwhile, but hands
    /// on its next part only once that one is serialised and queued for the writer, so parts
    /// never pile up when checkpoints come faster than they are written.
    serialisers: Mutex<BTreeMap<usize, JoinHandle<()>>>,
    /// Where a part that cannot be serialised is reported.
    fatal: Fatal,
    file_outputs: Vec<String>,
    /// The Kafka outputs worker 0 writes, by topic.
    kafka_outputs: Mutex<Vec<(String, WrittenOffsets)>>,
}

impl Writer {
    /// Starts the writer.
    pub fn start(settings: WriterSettings) -> Arc<Writer> {
        // Serialised parts wait for the writer here; a serialiser blocks while it is full.
        let (sender, receiver) = mpsc::sync_channel(PARTS_QUEUED);
        let (file_outputs, fatal) = (settings.file_outputs.clone(), settings.fatal.clone());
        let thread = std::thread::Builder::new()
            .name("checkpoint writer".into())
            .spawn(move || write_parts(receiver, settings))
            .expect("a thread starts");
        let kafka_outputs = Mutex::new(Vec::new());
        Arc::new(Writer {
            sender: Mutex::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
            serialisers: Mutex::new(BTreeMap::new()),
            fatal,
            file_outputs,
            kafka_outputs,
        })
    }

    /// Records the offsets of the Kafka output to `topic` in every checkpoint from now on.
    pub fn follow_kafka_output(&self, topic: &str, offsets: WrittenOffsets) {
        self.kafka_outputs.lock().unwrap_or_else(|e| e.into_inner()).push((topic.to_string(), offsets));
    }

    /// Hands a worker's part to the writer (on the worker's thread): the outputs' positions are
    /// taken now, at the cut, and the part is serialised on a thread of its own. Waits first
    /// for the worker's previous part to be serialised and queued, if it is not yet.
    pub fn save(&self, cut: FrozenCut) {
        let worker = cut.worker();
        let previous = self.serialisers.lock().unwrap_or_else(|e| e.into_inner()).remove(&worker);
        if let Some(previous) = previous {
            let _ = previous.join();
        }
        let (outputs, kafka_outputs) = if cut.worker() == 0 {
            // Only regular files can be cut back (not `/dev/null` or a pipe).
            let length = |path: &String| {
                let metadata = std::fs::metadata(path).ok().filter(std::fs::Metadata::is_file)?;
                Some((path.clone(), metadata.len()))
            };
            let kafka = self.kafka_outputs.lock().unwrap_or_else(|e| e.into_inner());
            let at = |(topic, offsets): &(String, WrittenOffsets)| KafkaOutputAt {
                topic: topic.clone(),
                next_offsets: offsets.get(),
            };
            (self.file_outputs.iter().filter_map(length).collect(), kafka.iter().map(at).collect())
        } else {
            (Vec::new(), Vec::new())
        };
        let Some(sender) = self.sender.lock().unwrap_or_else(|e| e.into_inner()).clone() else { return };
        let fatal = self.fatal.clone();
        let serialise = move || match cut.serialise() {
            // The writer only goes away once the run is over.
            Ok(cut) => drop(sender.send(Part { cut, outputs, kafka_outputs })),
            Err(e) => fatal.report("checkpoint", e),
        };
        match std::thread::Builder::new().name("checkpoint serialiser".into()).spawn(serialise) {
            Ok(thread) => drop(self.serialisers.lock().unwrap_or_else(|e| e.into_inner()).insert(worker, thread)),
            Err(e) => self.fatal.report("checkpoint", format!("cannot start a thread to serialise a part: {e}")),
        }
    }

    /// Writes what is queued and stops the writer; parts of checkpoints not yet whole are left
    /// without a manifest.
    pub fn finish(&self) {
        for thread in std::mem::take(&mut *self.serialisers.lock().unwrap_or_else(|e| e.into_inner())).into_values() {
            let _ = thread.join();
        }
        drop(self.sender.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

/// How many serialised parts may wait for the writer.
const PARTS_QUEUED: usize = 2;

/// A checkpoint whose parts are being written.
struct Pending {
    /// When its first part reached the writer.
    started: Instant,
    frontier: u64,
    outputs: Vec<(String, u64)>,
    kafka_outputs: Vec<KafkaOutputAt>,
    posted_taken: u64,
    written: BTreeMap<usize, FileEntry>,
}

fn write_parts(receiver: mpsc::Receiver<Part>, settings: WriterSettings) {
    let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
    loop {
        let open = match receiver.recv_timeout(Duration::from_millis(50)) {
            Ok(part) => {
                if let Err(e) = write_part(&settings, &mut pending, part) {
                    settings.fatal.report("checkpoint", e);
                }
                true
            }
            Err(mpsc::RecvTimeoutError::Timeout) => true,
            Err(mpsc::RecvTimeoutError::Disconnected) => false,
        };
        if settings.commits {
            if let Err(e) = commit_whole(&settings, &mut pending) {
                settings.fatal.report("checkpoint", e);
            }
        }
        if !open {
            return;
        }
    }
}

/// The data file of worker `worker`'s part of checkpoint `id`.
fn part_name(id: u64, worker: usize) -> String {
    format!("checkpoint-{id:020}-worker-{worker}.bin")
}

fn write_part(settings: &WriterSettings, pending: &mut BTreeMap<u64, Pending>, part: Part) -> Result<(), String> {
    let id = settings.first_id + part.cut.checkpoint;
    let bytes = bincode::serialize(&part.cut).map_err(|e| e.to_string())?;
    let entry = settings.store.write_file(&part_name(id, part.cut.worker), &bytes).map_err(|e| e.to_string())?;
    let fresh = || Pending {
        started: Instant::now(),
        frontier: 0,
        outputs: Vec::new(),
        kafka_outputs: Vec::new(),
        posted_taken: 0,
        written: BTreeMap::new(),
    };
    let checkpoint = pending.entry(id).or_insert_with(fresh);
    checkpoint.frontier = part.cut.frontier;
    if part.cut.worker == 0 {
        (checkpoint.outputs, checkpoint.kafka_outputs) = (part.outputs, part.kafka_outputs);
        checkpoint.posted_taken = part.cut.posted.taken;
    }
    checkpoint.written.insert(part.cut.worker, entry);
    Ok(())
}

/// Commits, oldest first, every checkpoint whose parts are all written, reading the parts other
/// processes wrote from the store.
fn commit_whole(settings: &WriterSettings, pending: &mut BTreeMap<u64, Pending>) -> Result<(), String> {
    let workers = settings.meta.workers;
    while let Some(mut entry) = pending.first_entry() {
        let id = *entry.key();
        let checkpoint = entry.get_mut();
        for worker in 0..workers {
            if checkpoint.written.contains_key(&worker) {
                continue;
            }
            let name = part_name(id, worker);
            let Ok(bytes) = std::fs::read(settings.store.data_path(&name)) else { return Ok(()) };
            let crc32 = crc32fast::hash(&bytes);
            checkpoint.written.insert(worker, FileEntry { name, len: bytes.len() as u64, crc32 });
        }
        let checkpoint = entry.remove();
        let meta = CheckpointMeta {
            outputs: checkpoint.outputs,
            kafka_outputs: checkpoint.kafka_outputs,
            posted_taken: checkpoint.posted_taken,
            ..settings.meta.clone()
        };
        let manifest = Manifest {
            id,
            frontier: checkpoint.frontier,
            completed_ms: wall_clock_ms(),
            meta: serde_json::to_value(&meta).map_err(|e| e.to_string())?,
            files: checkpoint.written.into_values().collect(),
        };
        settings.store.commit(&manifest).map_err(|e| e.to_string())?;
        settings.metrics.set_last_checkpoint(CheckpointFigures {
            id,
            completed_ms: manifest.completed_ms,
            bytes: manifest.files.iter().map(|f| f.len).sum(),
            write_ms: checkpoint.started.elapsed().as_millis() as u64,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint written by a recflow that kept other operator state (one before the state
    /// format was recorded reads as format 0) is refused by name, not read as something else.
    #[test]
    fn a_checkpoint_of_another_state_format_is_refused() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let dir = std::env::temp_dir().join(format!("recflow-durable-format-{}-{nanos}", std::process::id()));
        let store = CheckpointStore::open(&dir, 2).unwrap();
        let pipeline = Pipeline::from_toml("[recommend]\nk = 3", "format").unwrap();
        let meta = CheckpointMeta {
            state_format: STATE_FORMAT,
            pipeline: pipeline.clone(),
            workers: 1,
            outputs: Vec::new(),
            posted_taken: 0,
            kafka_outputs: Vec::new(),
        };
        let mut older = serde_json::to_value(&meta).unwrap();
        older.as_object_mut().unwrap().remove("state_format");
        let manifest = Manifest { id: 1, frontier: 1_000, completed_ms: 0, meta: older, files: Vec::new() };
        store.commit(&manifest).unwrap();
        let refused = newest(&store, &pipeline).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("format 0") && refused.contains("--fresh"), "{refused}");
        let current = Manifest { id: 2, meta: serde_json::to_value(&meta).unwrap(), ..manifest };
        store.commit(&current).unwrap();
        assert!(newest(&store, &pipeline).is_ok_and(|restored| restored.is_some()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
