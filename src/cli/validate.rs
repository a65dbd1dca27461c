//! `recflow validate`: check a pipeline file and print the settings it resolves to, defaults
//! filled in.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::pipeline_file;

/// Checks the pipeline file at `pipeline` and prints `PATH: ok` and its resolved settings.
pub fn main(pipeline: &Path) -> Result<()> {
    let spec = pipeline_file::load(pipeline)?;
    let resolved = toml::to_string_pretty(&spec).context("printing the resolved pipeline")?;
    // A closed pipe (`| head`) is not an error worth reporting.
    let _ = writeln!(std::io::stdout(), "{}: ok\n{resolved}", pipeline.display());
    Ok(())
}
