//! Events from a file or standard input, one record per line, decoded by the source's [`Decoder`].

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::{Arrival, EventSource, Poll, Position};
use crate::decode::Decoder;
use crate::event::RejectReason;

/// Reads lines from any reader and decodes each into an [`Arrival`].
pub struct LineReader<R> {
    reader: R,
    decoder: Decoder,
    origin: String,
    line_number: u64,
    skip_header: bool,
    buffer: Vec<u8>,
}

/// A [`LineReader`] over a file or standard input.
pub type FileSource = LineReader<BufReader<Box<dyn Read + Send>>>;

impl FileSource {
    /// Opens `path`; `-` means standard input.
    pub fn open(path: &Path, decoder: Decoder, skip_header: bool) -> std::io::Result<FileSource> {
        let (reader, origin): (Box<dyn Read + Send>, String) = if path.as_os_str() == "-" {
            (Box::new(std::io::stdin()), "stdin".into())
        } else {
            (Box::new(File::open(path)?), format!("file:{}", path.display()))
        };
        Ok(LineReader::new(BufReader::with_capacity(1 << 20, reader), decoder, origin, skip_header))
    }
}

impl<R: BufRead> LineReader<R> {
    /// Decodes the lines of `reader`; `origin` prefixes dead letters' positions.
    pub fn new(reader: R, decoder: Decoder, origin: String, skip_header: bool) -> Self {
        LineReader { reader, decoder, origin, line_number: 0, skip_header, buffer: Vec::with_capacity(256) }
    }
}

impl<R: BufRead> EventSource for LineReader<R> {
    fn poll(&mut self, max: usize, out: &mut Vec<Arrival>) -> Poll {
        let mut produced = 0;
        while produced < max {
            self.buffer.clear();
            match self.reader.read_until(b'\n', &mut self.buffer) {
                Ok(0) => return Poll::Done,
                Ok(_) => {}
                Err(e) => {
                    let at = Position { lane: 0, offset: self.line_number + 1 };
                    out.push((
                        at,
                        Err(self.reject(at, RejectReason::Malformed(format!("read error: {e}")), Vec::new())),
                    ));
                    return Poll::Done;
                }
            }
            self.line_number += 1;
            if self.buffer.last() == Some(&b'\n') {
                self.buffer.pop();
            }
            if self.buffer.last() == Some(&b'\r') {
                self.buffer.pop();
            }
            if self.skip_header && self.line_number == 1 {
                continue;
            }
            if self.buffer.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            produced += 1;
            let at = Position { lane: 0, offset: self.line_number };
            let record =
                self.decoder.decode_bytes(&self.buffer).map_err(|reason| self.reject(at, reason, self.buffer.clone()));
            out.push((at, record));
        }
        Poll::Ready
    }

    fn name(&self) -> String {
        self.origin.clone()
    }
}
