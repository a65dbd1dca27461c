//! Reading a pipeline file from disk: the one place the pipeline's settings touch the file system.
//!
//! [`crate::spec`] parses and checks the TOML it is given; this module reads it from a file first.

use std::path::Path;

use crate::spec::{Pipeline, SpecError};

/// Reads and validates a pipeline file.
pub fn load(path: &Path) -> Result<Pipeline, SpecError> {
    let pipeline = read(path)?;
    pipeline.validate(&path.display().to_string())?;
    Ok(pipeline)
}

/// Reads a pipeline file without validating it, for callers that override settings first
/// (such as `--input kafka://...`) and then call [`Pipeline::validate`].
pub fn read(path: &Path) -> Result<Pipeline, SpecError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read { path: shown.clone(), source })?;
    Pipeline::parse(&text, &shown)
}
