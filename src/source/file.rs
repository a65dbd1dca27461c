//! Events from a file or standard input, one record per line, decoded by the source's [`Decoder`].
//!
//! A file is read in place: reading it never waits long. Standard input may be a pipe that stays
//! quiet for hours, so a thread of its own reads it and hands lines over in batches; a poll takes
//! what has arrived and never blocks the worker.
//!
//! An input that cannot be read any further (an I/O error, not the end) is the run's [`Fatal`]
//! fault: the run stops with it rather than taking what was read for the whole input.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, TryRecvError};

use super::{Arrival, EventSource, FileResume, Poll, Position, ResumePoint};
use crate::decode::Decoder;
use crate::fatal::Fatal;

/// Reads lines from any reader and decodes each into an [`Arrival`].
pub struct LineReader<R> {
    reader: R,
    decoder: Decoder,
    origin: String,
    line_number: u64,
    /// The bytes of the lines read so far, line ends included: where the next line starts.
    bytes_read: u64,
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

    /// Whether the lines are written as they are read (standard input), not replayed; a live input
    /// cannot be read again, so a reader of it cannot resume.
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

/// The bytes a file is read in at a time.
const FILE_BUFFER: usize = 1 << 20;

impl FileSource {
    /// Opens `path`; `-` means standard input. A read error later is reported to `fatal`.
    pub fn open(path: &Path, decoder: Decoder, skip_header: bool, fatal: Fatal) -> std::io::Result<FileSource> {
        if path.as_os_str() == "-" {
            let input = FileOrStdin::Stdin(StdinLines::start()?);
            return Ok(LineReader::new(input, decoder, "stdin".into(), skip_header, fatal));
        }
        FileSource::open_at(path, decoder, skip_header, fatal, FileResume::default())
    }

    /// Opens the file `path` at `resume`, a point an earlier reader of the same file reported:
    /// reading goes on from its byte offset, counting lines on from its line count, so a header is
    /// skipped only when reading starts at the top. Fails for standard input, which cannot be
    /// read again, and for a file too short to hold the point (not the file that was read).
    pub fn open_at(
        path: &Path,
        decoder: Decoder,
        skip_header: bool,
        fatal: Fatal,
        resume: FileResume,
    ) -> std::io::Result<FileSource> {
        if path.as_os_str() == "-" {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "standard input cannot be resumed: what was read from it cannot be read again",
            ));
        }
        let mut file = File::open(path)?;
        let length = file.metadata()?.len();
        if resume.next_byte > length {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the file has {length} bytes, fewer than the {} already read from it: it is not the file that was read",
                    resume.next_byte
                ),
            ));
        }
        file.seek(SeekFrom::Start(resume.next_byte))?;
        let input = FileOrStdin::File(BufReader::with_capacity(FILE_BUFFER, file));
        let mut source = LineReader::new(input, decoder, format!("file:{}", path.display()), skip_header, fatal);
        source.line_number = resume.lines_read;
        source.bytes_read = resume.next_byte;
        Ok(source)
    }
}

impl<R: LineInput> LineReader<R> {
    /// Decodes the lines of `reader`; `origin` prefixes dead letters' positions; a read error
    /// is reported to `fatal`.
    pub fn new(reader: R, decoder: Decoder, origin: String, skip_header: bool, fatal: Fatal) -> Self {
        LineReader {
            reader,
            decoder,
            origin,
            line_number: 0,
            bytes_read: 0,
            skip_header,
            buffer: Vec::with_capacity(256),
            fatal,
        }
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
            self.bytes_read += self.buffer.len() as u64;
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

    fn resume_point(&self) -> Option<ResumePoint> {
        if self.reader.live() {
            return None;
        }
        Some(ResumePoint::File(FileResume { next_byte: self.bytes_read, lines_read: self.line_number }))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::spec::SourceSpec;

    /// A header, CRLF and LF line ends, a blank and a whitespace-only line, a malformed record
    /// (line 6) and a last line without a line end: five records.
    const EVENTS_CSV: &str = "user,item,category,action,ts\r\n\
        1,10,3,view,1700000000\r\n\
        \r\n\
        2,11,3,cart,1700000001\n\
        \x20\x20\n\
        3,12,3,view,yesterday\r\n\
        4,12,4,buy,1700000003\n\
        \n\
        5,13,4,view,1700000004";

    fn scratch_file(tag: &str, contents: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let path = std::env::temp_dir().join(format!("recflow-file-{tag}-{}-{nanos}.csv", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn open_csv(path: &Path, resume: FileResume) -> std::io::Result<FileSource> {
        let spec = SourceSpec { header: true, ..SourceSpec::default() };
        FileSource::open_at(path, Decoder::new(&spec), true, Fatal::default(), resume)
    }

    fn read_to_end(source: &mut FileSource, per_poll: usize) -> Vec<Arrival> {
        let mut out = Vec::new();
        while source.poll(per_poll, &mut out) != Poll::Done {}
        out
    }

    /// The source's resume point, as a checkpoint would store and load it.
    fn stored_resume_point(source: &FileSource) -> FileResume {
        let Some(ResumePoint::File(point)) = source.resume_point() else { panic!("a file can always resume") };
        serde_json::from_str(&serde_json::to_string(&point).unwrap()).unwrap()
    }

    #[test]
    fn a_file_resumed_after_any_record_reads_on_as_if_never_stopped() {
        let path = scratch_file("resume", EVENTS_CSV);
        let straight = read_to_end(&mut open_csv(&path, FileResume::default()).unwrap(), 3);
        let lines: Vec<u64> = straight.iter().map(|(at, _)| at.offset).collect();
        assert_eq!(lines, [2, 4, 6, 7, 9]);
        let rejected = straight[2].1.as_ref().unwrap_err();
        assert_eq!(rejected.origin, format!("file:{}:6", path.display()));
        for split in 0..=straight.len() {
            let mut first = open_csv(&path, FileResume::default()).unwrap();
            let mut arrivals = Vec::new();
            if split > 0 {
                first.poll(split, &mut arrivals);
            }
            assert_eq!(arrivals.len(), split);
            let mut rest = open_csv(&path, stored_resume_point(&first)).unwrap();
            arrivals.extend(read_to_end(&mut rest, 2));
            assert_eq!(arrivals, straight, "resumed after {split} records");
        }
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_resume_point_past_the_end_of_the_file_or_on_standard_input_is_refused() {
        let path = scratch_file("short", "1,10,3,view,1700000000\n");
        let beyond = FileResume { next_byte: 1_000, lines_read: 30 };
        let error = open_csv(&path, beyond).err().expect("a point past the end is refused");
        assert!(error.to_string().contains("not the file that was read"), "{error}");
        let error = open_csv(Path::new("-"), FileResume::default()).err().expect("standard input is refused");
        assert_eq!(error.kind(), std::io::ErrorKind::Unsupported);
        let _ = std::fs::remove_file(&path);
    }
}
