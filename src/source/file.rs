//! Events from a file or standard input, one record per line, decoded by the source's [`Decoder`].
//!
//! A file is read in place: reading it never waits long. Standard input may be a pipe that stays
//! quiet for hours, so a thread of its own reads it and hands lines over in batches; a poll takes
//! what has arrived and never blocks the worker.
//!
//! An input that cannot be read any further (an I/O error, not the end) is the run's [`Fatal`]
//! fault: the run stops with it rather than taking what was read for the whole input.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, TryRecvError};

use super::{Arrival, EventSource, Poll, Position};
use crate::decode::Decoder;
use crate::fatal::Fatal;

/// Reads lines from any reader and decodes each into an [`Arrival`].
pub struct LineReader<R> {
    reader: R,
    decoder: Decoder,
    origin: String,
    line_number: u64,
    skip_header: bool,
    buffer: Vec<u8>,
    fatal: Fatal,
}

/// What asking a line input for its next line found.
pub enum NextLine {
    /// A line is in the buffer, with its line end.
    Line,
    /// No line has arrived yet.
    Pending,
    /// The input has ended.
    End,
    /// The input cannot be read any further.
    Failed(std::io::Error),
}

/// Where lines come from.
pub trait LineInput {
    /// Replaces `buffer` with the next line, if one is there.
    fn next_line(&mut self, buffer: &mut Vec<u8>) -> NextLine;

    /// Whether the lines are written as they are read (standard input), not replayed.
    fn live(&self) -> bool {
        false
    }
}

impl<R: BufRead> LineInput for R {
    fn next_line(&mut self, buffer: &mut Vec<u8>) -> NextLine {
        buffer.clear();
        match self.read_until(b'\n', buffer) {
            Ok(0) => NextLine::End,
            Ok(_) => NextLine::Line,
            Err(e) => NextLine::Failed(e),
        }
    }
}

/// Lines per batch the standard-input thread hands over.
const STDIN_BATCH: usize = 4_096;

/// Standard input, read by a thread of its own.
pub struct StdinLines {
    batches: Receiver<std::io::Result<Vec<Vec<u8>>>>,
    current: std::vec::IntoIter<Vec<u8>>,
    ended: bool,
}

impl StdinLines {
    /// Starts the reading thread. It sends what it has whenever standard input has nothing more
    /// buffered, so a line written alone arrives at once, and waits while batches are unread.
    pub fn start() -> std::io::Result<StdinLines> {
        let (sender, batches) = sync_channel(16);
        std::thread::Builder::new().name("recflow-stdin".into()).spawn(move || {
            let mut reader = BufReader::with_capacity(1 << 20, std::io::stdin());
            let mut batch: Vec<Vec<u8>> = Vec::with_capacity(STDIN_BATCH);
            loop {
                let mut line = Vec::new();
                let read = reader.read_until(b'\n', &mut line);
                let ended = !matches!(read, Ok(n) if n > 0);
                if !line.is_empty() {
                    batch.push(line);
                }
                if ended || batch.len() >= STDIN_BATCH || reader.buffer().is_empty() {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(STDIN_BATCH));
                    if !full.is_empty() && sender.send(Ok(full)).is_err() {
                        return;
                    }
                }
                if let Err(e) = read {
                    let _ = sender.send(Err(e));
                    return;
                }
                if ended {
                    return;
                }
            }
        })?;
        Ok(StdinLines { batches, current: Vec::new().into_iter(), ended: false })
    }
}

impl LineInput for StdinLines {
    fn next_line(&mut self, buffer: &mut Vec<u8>) -> NextLine {
        loop {
            if let Some(line) = self.current.next() {
                *buffer = line;
                return NextLine::Line;
            }
            if self.ended {
                return NextLine::End;
            }
            match self.batches.try_recv() {
                Ok(Ok(batch)) => self.current = batch.into_iter(),
                Ok(Err(e)) => {
                    self.ended = true;
                    return NextLine::Failed(e);
                }
                Err(TryRecvError::Empty) => return NextLine::Pending,
                Err(TryRecvError::Disconnected) => {
                    self.ended = true;
                    return NextLine::End;
                }
            }
        }
    }
}

/// A file, or standard input.
pub enum FileOrStdin {
    /// A file, read in place.
    File(BufReader<File>),
    /// Standard input, read by a thread.
    Stdin(StdinLines),
}

impl LineInput for FileOrStdin {
    fn next_line(&mut self, buffer: &mut Vec<u8>) -> NextLine {
        match self {
            FileOrStdin::File(file) => file.next_line(buffer),
            FileOrStdin::Stdin(stdin) => stdin.next_line(buffer),
        }
    }

    fn live(&self) -> bool {
        matches!(self, FileOrStdin::Stdin(_))
    }
}

/// A [`LineReader`] over a file or standard input.
pub type FileSource = LineReader<FileOrStdin>;

impl FileSource {
    /// Opens `path`; `-` means standard input. A read error later is reported to `fatal`.
    pub fn open(path: &Path, decoder: Decoder, skip_header: bool, fatal: Fatal) -> std::io::Result<FileSource> {
        let (input, origin) = if path.as_os_str() == "-" {
            (FileOrStdin::Stdin(StdinLines::start()?), "stdin".into())
        } else {
            let file = BufReader::with_capacity(1 << 20, File::open(path)?);
            (FileOrStdin::File(file), format!("file:{}", path.display()))
        };
        Ok(LineReader::new(input, decoder, origin, skip_header, fatal))
    }
}

impl<R: LineInput> LineReader<R> {
    /// Decodes the lines of `reader`; `origin` prefixes dead letters' positions; a read error
    /// is reported to `fatal`.
    pub fn new(reader: R, decoder: Decoder, origin: String, skip_header: bool, fatal: Fatal) -> Self {
        LineReader { reader, decoder, origin, line_number: 0, skip_header, buffer: Vec::with_capacity(256), fatal }
    }
}

impl<R: LineInput> EventSource for LineReader<R> {
    fn read_live(&self) -> bool {
        self.reader.live()
    }

    fn poll(&mut self, max: usize, out: &mut Vec<Arrival>) -> Poll {
        let mut produced = 0;
        while produced < max {
            match self.reader.next_line(&mut self.buffer) {
                NextLine::End => return Poll::Done,
                NextLine::Pending => return if produced > 0 { Poll::Ready } else { Poll::Idle },
                NextLine::Line => {}
                NextLine::Failed(e) => {
                    let line = self.line_number + 1;
                    self.fatal.report(&format!("input {}", self.origin), format!("cannot read line {line}: {e}"));
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
