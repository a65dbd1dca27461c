//! `recflow checkpoints DIR`: the checkpoints a `run --checkpoint DIR` left, newest first, with
//! each one's cut, when it was taken, its size, its workers and where its source resumes; and
//! the damaged ones, with what is wrong.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::checkpoint::store::{CheckpointStore, Damage, Manifest};
use crate::durable::CheckpointMeta;
use crate::event_time::wall_clock_ms;
use crate::source::{ResumePoint, WorkerCut};

/// Lists the checkpoints in `dir`.
pub fn main(dir: &Path) -> Result<()> {
    if !dir.join("manifests").is_dir() {
        anyhow::bail!("{} holds no checkpoints (no `manifests` directory)", dir.display());
    }
    let store = CheckpointStore::open(dir, usize::MAX).with_context(|| format!("reading {}", dir.display()))?;
    let mut out = std::io::stdout().lock();
    let listed = store.list()?;
    if listed.is_empty() {
        writeln!(out, "{}: no checkpoints", dir.display())?;
    }
    for entry in listed {
        let line = match entry.and_then(|manifest| describe(&store, &manifest)) {
            Ok(line) => line,
            Err(damage) => format!("damaged: {damage}"),
        };
        // A closed pipe (`| head`) is not an error worth reporting.
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    Ok(())
}

/// One checkpoint on one line: number, cut, age, size, workers and the sources' positions; or
/// what is wrong with one of its files.
fn describe(store: &CheckpointStore, manifest: &Manifest) -> Result<String, Damage> {
    let bytes: u64 = manifest.files.iter().map(|f| f.len).sum();
    let workers = serde_json::from_value::<CheckpointMeta>(manifest.meta.clone()).map_or(0, |meta| meta.workers);
    let mut positions: Vec<String> = Vec::new();
    let mut posted = 0;
    for entry in &manifest.files {
        let part = store.read_file(manifest.id, entry)?;
        let unreadable = |e: bincode::Error| Damage::File {
            id: manifest.id,
            name: entry.name.clone(),
            problem: format!("not a worker's part: {e}"),
        };
        let part: WorkerCut = bincode::deserialize(&part).map_err(unreadable)?;
        positions.extend(part.source.map(|at| position(&at)));
        posted += part.posted.taken;
    }
    let mut positions = if positions.is_empty() { "none".to_string() } else { positions.join(", ") };
    if posted > 0 {
        positions.push_str(&format!(", {posted} posted records taken"));
    }
    let age_s = wall_clock_ms().saturating_sub(manifest.completed_ms) / 1000;
    Ok(format!(
        "checkpoint {}: frontier {} ms, taken {} s ago, {:.1} MB in {} files, {} workers, source at {}",
        manifest.id,
        manifest.frontier,
        age_s,
        bytes as f64 / 1e6,
        manifest.files.len(),
        workers,
        positions
    ))
}

/// Where a source resumes, for people.
fn position(at: &ResumePoint) -> String {
    match at {
        ResumePoint::File(file) => format!("line {} (byte {})", file.lines_read, file.next_byte),
        ResumePoint::Synth(synth) => format!("event {}", synth.produced()),
        ResumePoint::Kafka(kafka) => {
            let offsets: Vec<String> = kafka.next_offsets.iter().map(|(p, o)| format!("{p}:{o}")).collect();
            format!("partition:offset {}", offsets.join(" "))
        }
    }
}
