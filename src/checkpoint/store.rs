//! Checkpoints on disk, each whole or absent.
//!
//! A checkpoint is a manifest naming data files, each with its length and CRC-32. Data files are
//! written first (temporary name, `fsync`, rename); the manifest is written last the same way,
//! and the directory is synced after it, so a crash leaves either a complete checkpoint or one
//! without a manifest, which does not count. Several checkpoints may name the same data file (an
//! incremental checkpoint names the files of the one before it that still hold current state);
//! a data file is deleted once no kept manifest names it.
//!
//! Several processes may write into one store (each its workers' data files, one of them the
//! manifests). Writers name data files so that a later checkpoint's names sort after an earlier
//! one's: pruning then keeps every file that sorts after the newest manifest's, which may be a
//! later checkpoint's part still being written elsewhere. Only the process that commits removes
//! the temporary files a crashed writer left behind ([`CheckpointStore::remove_leftovers`]), and
//! only before any checkpoint of its run is taken.
//!
//! Reading takes the newest checkpoint whose manifest parses, matches its own checksum, and whose
//! files all exist with the length and checksum it names; newer damaged ones are reported, not
//! restored.
//!
//! ```text
//! DIR/
//!   data/NAME                     data files, named by their writer
//!   manifests/0000000000000042.json
//! ```

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A data file as a manifest names it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Its name under `data/`.
    pub name: String,
    /// Its length in bytes.
    pub len: u64,
    /// The CRC-32 of its bytes.
    pub crc32: u32,
}

/// What a checkpoint is: its number, the dataflow time it was cut at, what it was taken with, and
/// its files.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Manifest {
    /// Increases with every checkpoint of a directory.
    pub id: u64,
    /// The dataflow time of the cut: every result before it is in the checkpoint's outputs.
    pub frontier: u64,
    /// When it was completed, in milliseconds since the Unix epoch.
    pub completed_ms: u64,
    /// Whatever the writer records beside the files (settings, source positions).
    pub meta: serde_json::Value,
    /// Its data files.
    pub files: Vec<FileEntry>,
}

/// The manifest as stored: the manifest and the CRC-32 of its JSON text.
#[derive(Serialize, Deserialize)]
struct Stored {
    manifest: Manifest,
    crc32: u32,
}

/// Why a checkpoint cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Damage {
    /// The manifest does not parse or does not match its checksum.
    #[error("manifest {path}: {problem}")]
    Manifest {
        /// The manifest file.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A data file is missing or not what the manifest says.
    #[error("checkpoint {id}: data file {name}: {problem}")]
    File {
        /// The checkpoint.
        id: u64,
        /// The file's name.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// A checkpoint directory that cannot be used.
#[derive(Debug, Error)]
pub enum StoreError {
    /// Reading or writing the directory failed.
    #[error("checkpoint directory {dir}: {action}: {source}")]
    Io {
        /// The directory.
        dir: String,
        /// What was being done.
        action: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A data file name that is not a plain file name.
    #[error("checkpoint data file name {0:?}: use letters, digits, '.', '-' and '_'")]
    BadName(String),
}

/// The newest checkpoint that can be restored, and the newer ones that could not.
#[derive(Debug)]
pub struct Newest {
    /// The checkpoint to restore.
    pub manifest: Manifest,
    /// The bytes of its files, in the manifest's order, checked against it.
    pub files: Vec<Vec<u8>>,
    /// Newer checkpoints passed over, newest first, and why.
    pub damaged: Vec<Damage>,
}

/// `f` of every item, each on a thread of its own, in the items' order: for the parts of a
/// checkpoint, hundreds of megabytes each, read and decoded independently. A panic on one of
/// them is raised again here.
pub fn map_in_parallel<I: Send, R: Send>(items: impl IntoIterator<Item = I>, f: impl Fn(I) -> R + Sync) -> Vec<R> {
    std::thread::scope(|scope| {
        let f = &f;
        let running: Vec<_> = items.into_iter().map(|item| scope.spawn(move || f(item))).collect();
        running.into_iter().map(|done| done.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    })
}

/// A directory of checkpoints, keeping the `keep` newest.
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
    keep: usize,
}

impl CheckpointStore {
    /// The store in `dir`, created if missing, keeping the `keep` newest checkpoints (at least
    /// one).
    pub fn open(dir: &Path, keep: usize) -> Result<CheckpointStore, StoreError> {
        let store = CheckpointStore { dir: dir.to_path_buf(), keep: keep.max(1) };
        for sub in [store.data_dir(), store.manifest_dir()] {
            fs::create_dir_all(&sub).map_err(|e| store.io("creating it", e))?;
        }
        Ok(store)
    }

    /// Removes the temporary files a crashed writer left behind. Only for the process that
    /// commits, before its run takes a checkpoint: another process's writer may be writing one.
    pub fn remove_leftovers(&self) -> Result<(), StoreError> {
        for sub in [self.data_dir(), self.manifest_dir()] {
            for entry in fs::read_dir(&sub).map_err(|e| self.io("listing it", e))? {
                let entry = entry.map_err(|e| self.io("listing it", e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.ends_with(".tmp") {
                    fs::remove_file(entry.path()).map_err(|e| self.io("removing a temporary file", e))?;
                }
            }
        }
        Ok(())
    }

    /// Removes every checkpoint (manifests first, so none is left half-removed and whole-looking)
    /// and every data file; returns how many checkpoints there were. For a run that starts
    /// over: a checkpoint of the run before must never be restored after it.
    pub fn remove_all(&self) -> Result<usize, StoreError> {
        let ids = self.manifest_ids()?;
        for &id in &ids {
            let path = self.manifest_dir().join(manifest_name(id));
            fs::remove_file(&path).map_err(|e| self.io("removing a manifest", e))?;
        }
        File::open(self.manifest_dir()).and_then(|d| d.sync_all()).map_err(|e| self.io("syncing the directory", e))?;
        for file in fs::read_dir(self.data_dir()).map_err(|e| self.io("listing data files", e))? {
            let file = file.map_err(|e| self.io("listing data files", e))?;
            fs::remove_file(file.path()).map_err(|e| self.io("removing a data file", e))?;
        }
        Ok(ids.len())
    }

    /// Writes a data file durably; returns its entry for the manifest.
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> Result<FileEntry, StoreError> {
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !plain {
            return Err(StoreError::BadName(name.to_string()));
        }
        self.write_durably(&self.data_dir(), name, bytes)?;
        Ok(FileEntry { name: name.to_string(), len: bytes.len() as u64, crc32: crc32fast::hash(bytes) })
    }

    /// Completes a checkpoint: writes its manifest durably, then deletes the checkpoints beyond
    /// the `keep` newest and the data files no kept manifest names.
    pub fn commit(&self, manifest: &Manifest) -> Result<(), StoreError> {
        let text = serde_json::to_string(manifest).expect("a manifest is plain data");
        let stored = Stored { manifest: manifest.clone(), crc32: crc32fast::hash(text.as_bytes()) };
        let bytes = serde_json::to_vec_pretty(&stored).expect("a manifest is plain data");
        self.write_durably(&self.manifest_dir(), &manifest_name(manifest.id), &bytes)?;
        self.prune(manifest)
    }

    /// Every checkpoint, newest first, as it reads.
    pub fn list(&self) -> Result<Vec<Result<Manifest, Damage>>, StoreError> {
        Ok(self.manifest_ids()?.into_iter().rev().map(|id| self.read_manifest(id)).collect())
    }

    /// The newest checkpoint whose manifest and files are whole, if any.
    pub fn newest(&self) -> Result<Option<Newest>, StoreError> {
        let mut damaged = Vec::new();
        for listed in self.list()? {
            match listed.and_then(|manifest| self.read_files(&manifest).map(|files| (manifest, files))) {
                Ok((manifest, files)) => return Ok(Some(Newest { manifest, files, damaged })),
                Err(damage) => damaged.push(damage),
            }
        }
        Ok(None)
    }

    /// The bytes of a data file of checkpoint `id`, checked against its entry.
    pub fn read_file(&self, id: u64, entry: &FileEntry) -> Result<Vec<u8>, Damage> {
        let problem = |problem: String| Damage::File { id, name: entry.name.clone(), problem };
        let bytes = fs::read(self.data_dir().join(&entry.name)).map_err(|e| problem(e.to_string()))?;
        if bytes.len() as u64 != entry.len {
            return Err(problem(format!("{} bytes, the manifest says {}", bytes.len(), entry.len)));
        }
        if crc32fast::hash(&bytes) != entry.crc32 {
            return Err(problem("its checksum does not match the manifest's".to_string()));
        }
        Ok(bytes)
    }

    /// The bytes of every file of `manifest`, each checked against its entry. One thread per
    /// file: each holds a worker's part, hundreds of megabytes at a large state, and reading
    /// them is much of a restore's time.
    fn read_files(&self, manifest: &Manifest) -> Result<Vec<Vec<u8>>, Damage> {
        map_in_parallel(&manifest.files, |entry| self.read_file(manifest.id, entry)).into_iter().collect()
    }

    fn read_manifest(&self, id: u64) -> Result<Manifest, Damage> {
        let path = self.manifest_dir().join(manifest_name(id));
        let damage = |problem: String| Damage::Manifest { path: path.display().to_string(), problem };
        let bytes = fs::read(&path).map_err(|e| damage(e.to_string()))?;
        let stored: Stored = serde_json::from_slice(&bytes).map_err(|e| damage(e.to_string()))?;
        let text = serde_json::to_string(&stored.manifest).expect("a manifest is plain data");
        if crc32fast::hash(text.as_bytes()) != stored.crc32 || stored.manifest.id != id {
            return Err(damage("its checksum does not match its contents".to_string()));
        }
        Ok(stored.manifest)
    }

    /// Deletes the manifests beyond the `keep` newest, then every data file that no remaining
    /// manifest names (a manifest that does not read names nothing) and that sorts before the
    /// last name `newest` names: what sorts after it belongs to a later checkpoint, possibly
    /// still being written by another process.
    fn prune(&self, newest: &Manifest) -> Result<(), StoreError> {
        let ids = self.manifest_ids()?;
        let dropped = ids.len().saturating_sub(self.keep);
        for &id in &ids[..dropped] {
            let path = self.manifest_dir().join(manifest_name(id));
            fs::remove_file(&path).map_err(|e| self.io("removing an old manifest", e))?;
        }
        let named: BTreeSet<String> = ids[dropped..]
            .iter()
            .filter_map(|&id| self.read_manifest(id).ok())
            .flat_map(|manifest| manifest.files.into_iter().map(|entry| entry.name))
            .collect();
        let Some(last) = newest.files.iter().map(|entry| entry.name.as_str()).max() else { return Ok(()) };
        let data = fs::read_dir(self.data_dir()).map_err(|e| self.io("listing data files", e))?;
        for file in data {
            let file = file.map_err(|e| self.io("listing data files", e))?;
            let name = file.file_name().to_string_lossy().into_owned();
            if !named.contains(&name) && !name.starts_with('.') && name.as_str() < last {
                fs::remove_file(file.path()).map_err(|e| self.io("removing an unused data file", e))?;
            }
        }
        Ok(())
    }

    /// The ids of the manifests present, oldest first.
    fn manifest_ids(&self) -> Result<Vec<u64>, StoreError> {
        let entries = fs::read_dir(self.manifest_dir()).map_err(|e| self.io("listing manifests", e))?;
        let mut ids = Vec::new();
        for entry in entries {
            let name = entry.map_err(|e| self.io("listing manifests", e))?.file_name();
            if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")).and_then(|n| n.parse().ok()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Writes `bytes` to `dir/name` so that the file is either absent or whole after a crash:
    /// a temporary file, synced, renamed over the name, then the directory synced.
    fn write_durably(&self, dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let temporary = dir.join(format!(".{name}.tmp"));
        let mut file = File::create(&temporary).map_err(|e| self.io("creating a file", e))?;
        file.write_all(bytes).and_then(|()| file.sync_all()).map_err(|e| self.io("writing a file", e))?;
        fs::rename(&temporary, dir.join(name)).map_err(|e| self.io("renaming a file into place", e))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| self.io("syncing the directory", e))
    }

    /// Where the data file `name` is (or would be).
    pub fn data_path(&self, name: &str) -> PathBuf {
        self.data_dir().join(name)
    }

    /// The newest checkpoint's number, whole or not; 0 when there is none.
    pub fn last_id(&self) -> Result<u64, StoreError> {
        Ok(self.manifest_ids()?.into_iter().max().unwrap_or(0))
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn manifest_dir(&self) -> PathBuf {
        self.dir.join("manifests")
    }

    fn io(&self, action: &str, source: std::io::Error) -> StoreError {
        StoreError::Io { dir: self.dir.display().to_string(), action: action.to_string(), source }
    }
}

fn manifest_name(id: u64) -> String {
    format!("{id:016}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let dir = std::env::temp_dir().join(format!("recflow-store-{tag}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Checkpoint `id` with one file of its own and, from the second on, the first one's file.
    fn checkpoint(store: &CheckpointStore, id: u64) -> Manifest {
        let mut files = vec![store.write_file(&format!("part-{id}"), format!("state {id}").as_bytes()).unwrap()];
        if id > 1 {
            files.push(FileEntry { name: "part-1".into(), len: 7, crc32: crc32fast::hash(b"state 1") });
        }
        let manifest = Manifest { id, frontier: id * 1_000, completed_ms: 0, meta: serde_json::json!({}), files };
        store.commit(&manifest).unwrap();
        manifest
    }

    fn data_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir.join("data")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        names.sort();
        names
    }

    #[test]
    fn keeps_the_newest_checkpoints_and_the_files_they_name() {
        let dir = scratch("keep");
        let store = CheckpointStore::open(&dir, 2).unwrap();
        for id in 1..=4 {
            checkpoint(&store, id);
        }
        let listed: Vec<u64> = store.list().unwrap().into_iter().map(|m| m.unwrap().id).collect();
        assert_eq!(listed, [4, 3]);
        // part-1 is still named by 3 and 4; part-2 by no kept checkpoint.
        assert_eq!(data_files(&dir), ["part-1", "part-3", "part-4"]);
        let newest = store.newest().unwrap().unwrap();
        assert_eq!((newest.manifest.id, newest.damaged.len()), (4, 0));
        assert_eq!(store.read_file(4, &newest.manifest.files[1]).unwrap(), b"state 1");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Another process may have written its part of the next checkpoint before this one is
    /// committed: pruning keeps it, and drops the parts of a checkpoint that was never committed.
    #[test]
    fn pruning_keeps_a_later_checkpoints_parts_written_elsewhere() {
        let dir = scratch("later");
        let store = CheckpointStore::open(&dir, 1).unwrap();
        checkpoint(&store, 1);
        // Checkpoint 2 was never committed (its run crashed); another process has already
        // written its part of checkpoint 4 while 3 commits.
        store.write_file("part-2", b"orphan").unwrap();
        store.write_file("part-4", b"state 4").unwrap();
        checkpoint(&store, 3);
        assert_eq!(data_files(&dir), ["part-1", "part-3", "part-4"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_newest_checkpoint_falls_back_to_the_one_before() {
        let dir = scratch("damage");
        let store = CheckpointStore::open(&dir, 3).unwrap();
        for id in 1..=3 {
            checkpoint(&store, id);
        }
        // A truncated data file: checkpoint 3 is passed over.
        fs::write(dir.join("data/part-3"), b"stat").unwrap();
        let newest = store.newest().unwrap().unwrap();
        assert_eq!(newest.manifest.id, 2);
        assert!(matches!(&newest.damaged[..], [Damage::File { id: 3, .. }]), "{:?}", newest.damaged);
        // A data file of the same length with other bytes: the checksum catches it.
        fs::write(dir.join("data/part-2"), b"STATE 2").unwrap();
        assert_eq!(store.newest().unwrap().unwrap().manifest.id, 1);
        // An edited manifest that still parses: its own checksum catches it.
        let path = dir.join("manifests").join(manifest_name(1));
        let edited = fs::read_to_string(&path).unwrap().replace("\"frontier\": 1000", "\"frontier\": 9000");
        fs::write(&path, edited).unwrap();
        let damaged = store.newest().unwrap();
        assert!(damaged.is_none(), "no checkpoint is whole: {damaged:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_checkpoint_without_its_manifest_does_not_exist() {
        let dir = scratch("torn");
        let store = CheckpointStore::open(&dir, 2).unwrap();
        checkpoint(&store, 1);
        // A crash after writing checkpoint 2's data and a partial manifest under its temporary name.
        store.write_file("part-2", b"state 2").unwrap();
        fs::write(dir.join("manifests").join(format!(".{}.tmp", manifest_name(2))), b"{\"manif").unwrap();
        let newest = store.newest().unwrap().unwrap();
        assert_eq!((newest.manifest.id, newest.damaged.len()), (1, 0));
        // Opened again, for a listing, the leftover stays (a run may be writing it); the
        // committing process of a restarted run removes it.
        let reopened = CheckpointStore::open(&dir, 2).unwrap();
        assert_eq!(fs::read_dir(dir.join("manifests")).unwrap().count(), 2);
        reopened.remove_leftovers().unwrap();
        assert_eq!(fs::read_dir(dir.join("manifests")).unwrap().count(), 1);
        assert!(matches!(store.write_file("../escape", b""), Err(StoreError::BadName(_))));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn starting_over_leaves_nothing_to_restore() {
        let dir = scratch("over");
        let store = CheckpointStore::open(&dir, 2).unwrap();
        for id in 1..=3 {
            checkpoint(&store, id);
        }
        assert_eq!(store.remove_all().unwrap(), 2);
        assert!(store.newest().unwrap().is_none());
        assert!(data_files(&dir).is_empty());
        assert_eq!(store.last_id().unwrap(), 0);
        fs::remove_dir_all(&dir).unwrap();
    }
}
