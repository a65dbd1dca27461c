//! JSON lines to standard output, standard error or a file: the changelog and dead letters.

use std::io::Write;

use serde::Serialize;

use super::{Destination, SinkError};
use crate::event::{DeadLetter, Millis};
use crate::results::ChangeRecord;

/// Opens an output destination: `-` is standard output, `stderr` standard error, else a file,
/// created empty.
pub fn open_destination(path: &str) -> std::io::Result<Box<dyn Write>> {
    open_file_or_stream(path, false)
}

/// Like [`open_destination`], but a file is written on at its end (a restored run continues
/// the file its checkpoint's run wrote).
pub fn open_destination_appending(path: &str) -> std::io::Result<Box<dyn Write>> {
    open_file_or_stream(path, true)
}

fn open_file_or_stream(path: &str, append: bool) -> std::io::Result<Box<dyn Write>> {
    Ok(match path {
        "-" | "stdout" => Box::new(std::io::BufWriter::with_capacity(1 << 16, std::io::stdout())),
        "stderr" => Box::new(std::io::stderr()),
        path => {
            let file =
                std::fs::OpenOptions::new().write(true).create(true).append(append).truncate(!append).open(path)?;
            Box::new(std::io::BufWriter::with_capacity(1 << 16, file))
        }
    })
}

/// Writes one JSON object per line.
pub struct JsonLines {
    out: Box<dyn Write>,
    line: Vec<u8>,
}

impl JsonLines {
    /// Lines into `out`.
    pub fn new(out: Box<dyn Write>) -> JsonLines {
        JsonLines { out, line: Vec::with_capacity(1024) }
    }

    fn write_line(&mut self, value: &impl Serialize) -> Result<(), SinkError> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, value).map_err(SinkError::encode)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)?;
        Ok(())
    }
}

impl Destination<ChangeRecord> for JsonLines {
    fn write(&mut self, _time: Millis, record: &ChangeRecord) -> Result<(), SinkError> {
        self.write_line(record)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(self.out.flush()?)
    }
}

/// A dead letter as a JSON line.
#[derive(Serialize)]
struct DeadLetterLine<'a> {
    reason: &'static str,
    detail: String,
    origin: &'a str,
    raw: std::borrow::Cow<'a, str>,
}

impl Destination<DeadLetter> for JsonLines {
    fn write(&mut self, _time: Millis, dead: &DeadLetter) -> Result<(), SinkError> {
        let line = DeadLetterLine {
            reason: dead.reason.code(),
            detail: dead.reason.to_string(),
            origin: &dead.origin,
            raw: dead.raw_text(),
        };
        self.write_line(&line)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(self.out.flush()?)
    }
}
