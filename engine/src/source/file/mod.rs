//! JSON lines from a file (or standard input): one event per line, blank lines skipped.
//! Positions are 1-based line numbers, so a dead letter points at the line to fix.

mod config;

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

pub use config::{FileConfig, Framing};

use super::{Poll, RawBatch, Source, SourceError};

/// Reads JSON lines.
pub struct FileSource {
    name: String,
    path: String,
    reader: BufReader<Box<dyn Read + Send>>,
    follow: bool,
    line_no: i64,
    line: Vec<u8>,
    framing: Framing,
    /// HL7 v2: the message being collected and the line number of its MSH.
    message: Vec<u8>,
    message_line: i64,
    /// Document framing: the file was read.
    done: bool,
    /// Bytes read so far, and the file's size when it is a finite input.
    read: u64,
    size: Option<u64>,
}

impl FileSource {
    pub fn open(config: &FileConfig) -> Result<Self, SourceError> {
        let path = config.path.display().to_string();
        let size = (path != "-" && !config.follow)
            .then(|| std::fs::metadata(&config.path).ok())
            .flatten()
            .filter(std::fs::Metadata::is_file)
            .map(|m| m.len());
        let input: Box<dyn Read + Send> = if path == "-" {
            Box::new(std::io::stdin())
        } else {
            Box::new(
                File::open(&config.path).map_err(|source| SourceError::Open {
                    path: path.clone(),
                    source,
                })?,
            )
        };
        Ok(FileSource {
            name: format!("file:{path}"),
            path,
            reader: BufReader::with_capacity(1 << 20, input),
            follow: config.follow,
            line_no: 0,
            line: Vec::with_capacity(1024),
            framing: Framing::Lines,
            message: Vec::new(),
            message_line: 0,
            done: false,
            read: 0,
            size,
        })
    }
}

impl FileSource {
    /// Cuts the file into payloads this way instead of by line.
    pub fn with_framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }
}

impl Source for FileSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn skip_to(&mut self, upto: &[super::Position]) -> Result<(), SourceError> {
        // Offsets are line numbers: re-read (without parsing) the lines already processed.
        let Some(last) = upto.iter().map(|p| p.offset).max() else {
            return Ok(());
        };
        while self.line_no < last {
            self.line.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.line)
                .map_err(|source| SourceError::Read {
                    path: self.path.clone(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            self.read += n as u64;
            self.line_no += 1;
        }
        self.line.clear();
        Ok(())
    }

    fn input_progress(&self) -> Option<(u64, u64)> {
        let size = self.size?;
        let read = if self.done { size } else { self.read.min(size) };
        Some((read, size))
    }

    fn poll(
        &mut self,
        batch: &mut RawBatch,
        max: usize,
        wait: Duration,
    ) -> Result<Poll, SourceError> {
        if self.framing == Framing::Document {
            return self.poll_document(batch);
        }
        let deadline = Instant::now() + wait;
        let before = batch.len();
        while batch.len() - before < max {
            // A partial line at the end of a growing file stays in `line` until its newline.
            let n = self
                .reader
                .read_until(b'\n', &mut self.line)
                .map_err(|source| SourceError::Read {
                    path: self.path.clone(),
                    source,
                })?;
            self.read += n as u64;
            let complete = self.line.last() == Some(&b'\n');
            if n == 0 || (!complete && self.follow) {
                if (n == 0 || !self.follow) && self.framing == Framing::Hl7 {
                    // The last message of what is there is complete.
                    if !self.line.is_empty() && !self.follow {
                        self.emit(batch);
                    }
                    self.flush_message(batch);
                }
                if batch.len() > before {
                    return Ok(Poll::Ready);
                }
                if !self.follow {
                    if !self.line.is_empty() {
                        // The last line of a finished file needs no newline.
                        self.emit(batch);
                        return Ok(Poll::Ready);
                    }
                    return Ok(Poll::End);
                }
                if Instant::now() >= deadline {
                    return Ok(Poll::Idle);
                }
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            self.emit(batch);
        }
        Ok(Poll::Ready)
    }
}

impl FileSource {
    fn emit(&mut self, batch: &mut RawBatch) {
        self.line_no += 1;
        let mut line: &[u8] = &self.line;
        while let [rest @ .., b'\n' | b'\r'] = line {
            line = rest;
        }
        if self.framing == Framing::Hl7 {
            // A line may hold several CR-separated segments.
            let segments: Vec<Vec<u8>> = line
                .split(|b| *b == b'\r')
                .map(|s| {
                    s.iter()
                        .copied()
                        .filter(|b| *b != 0x0b && *b != 0x1c)
                        .collect()
                })
                .collect();
            for segment in segments {
                // Blank lines end a message; batch and file headers and trailers
                // (FHS, BHS, BTS, FTS) only wrap messages.
                let wrapper = [b"FHS", b"BHS", b"BTS", b"FTS"]
                    .iter()
                    .any(|w| segment.starts_with(*w));
                if wrapper || segment.iter().all(u8::is_ascii_whitespace) {
                    self.flush_message(batch);
                    continue;
                }
                if segment.starts_with(b"MSH") {
                    self.flush_message(batch);
                    self.message_line = self.line_no;
                }
                self.message.extend_from_slice(&segment);
                self.message.push(b'\r');
            }
        } else if !line.iter().all(u8::is_ascii_whitespace) {
            batch.push(line, 0, self.line_no);
        }
        self.line.clear();
    }

    /// Hands the HL7 v2 message collected so far to the batch.
    fn flush_message(&mut self, batch: &mut RawBatch) {
        if !self.message.is_empty() {
            batch.push(&self.message, 0, self.message_line.max(1));
            self.message.clear();
        }
    }

    /// Document framing: the whole file at once.
    fn poll_document(&mut self, batch: &mut RawBatch) -> Result<Poll, SourceError> {
        if self.done {
            return Ok(Poll::End);
        }
        let mut all = Vec::new();
        self.reader
            .read_to_end(&mut all)
            .map_err(|source| SourceError::Read {
                path: self.path.clone(),
                source,
            })?;
        self.done = true;
        if all.iter().all(u8::is_ascii_whitespace) {
            return Ok(Poll::End);
        }
        batch.push(&all, 0, 1);
        Ok(Poll::Ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lines_with_numbers_and_skips_blanks() {
        let path =
            std::env::temp_dir().join(format!("cds-file-source-{}.jsonl", std::process::id()));
        std::fs::write(&path, "{\"a\":1}\r\n\n{\"b\":2}\n{\"c\":3}").expect("write");
        let mut src = FileSource::open(&FileConfig {
            path: path.clone(),
            follow: false,
        })
        .expect("open");
        let mut batch = RawBatch::default();
        assert_eq!(
            src.poll(&mut batch, 2, Duration::ZERO).expect("poll"),
            Poll::Ready
        );
        assert_eq!(batch.len(), 2, "at most `max` payloads per poll");
        assert_eq!(
            src.poll(&mut batch, 10, Duration::ZERO).expect("poll"),
            Poll::Ready
        );
        assert_eq!(
            src.poll(&mut batch, 10, Duration::ZERO).expect("poll"),
            Poll::End
        );
        let got: Vec<(String, i64)> = batch
            .iter()
            .map(|(p, pos)| (String::from_utf8_lossy(p).into_owned(), pos.offset))
            .collect();
        assert_eq!(
            got,
            vec![
                ("{\"a\":1}".into(), 1),
                ("{\"b\":2}".into(), 3),
                ("{\"c\":3}".into(), 4)
            ]
        );
        let _ = std::fs::remove_file(path);
    }
}
