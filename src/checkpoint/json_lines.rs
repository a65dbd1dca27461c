//! Append-only files of JSON lines that survive a crash (the log of posted records, the ledger
//! of forgotten users): a line is appended and synced whole, and a last line a crash cut short
//! (never synced, so never acknowledged) is dropped when the file is read back.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Reads the lines of the file at `path` (created if missing) up to the first that does not
/// parse, cuts that one and anything after it off the file, and opens the file for appending.
pub(super) fn open<T: DeserializeOwned>(path: &Path) -> std::io::Result<(File, Vec<T>)> {
    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
    let (mut whole, mut lines) = (0u64, Vec::new());
    for line in BufReader::new(&mut file).split(b'\n') {
        let line = line?;
        let Ok(parsed) = serde_json::from_slice::<T>(&line) else { break };
        whole += line.len() as u64 + 1;
        lines.push(parsed);
    }
    file.set_len(whole)?;
    file.sync_all()?;
    Ok((OpenOptions::new().append(true).open(path)?, lines))
}

/// The lines of `values`, each a JSON text and a newline.
pub(super) fn lines<'a, T: Serialize + 'a>(values: impl IntoIterator<Item = &'a T>) -> std::io::Result<Vec<u8>> {
    let mut text = Vec::new();
    for value in values {
        serde_json::to_writer(&mut text, value).map_err(std::io::Error::other)?;
        text.push(b'\n');
    }
    Ok(text)
}

/// Appends `text` (whole lines) to `file` and syncs it to disk.
pub(super) fn append_synced(file: &mut File, text: &[u8]) -> std::io::Result<()> {
    file.write_all(text)?;
    file.sync_data()
}

/// Replaces the file at `path` with `text`: a synced temporary file renamed over it, so a crash
/// leaves the old file or the new one.
pub(super) fn rewrite(path: &Path, text: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = File::create(&temporary)?;
    file.write_all(text)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}
