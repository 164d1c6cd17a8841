//! JSON lines from a file (or standard input): one event per line, blank lines skipped.
//! Positions are 1-based line numbers, so a dead letter points at the line to fix.

mod config;

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

pub use config::FileConfig;

use super::{Poll, RawBatch, Source, SourceError};

/// Reads JSON lines.
pub struct FileSource {
    name: String,
    path: String,
    reader: BufReader<Box<dyn Read + Send>>,
    follow: bool,
    line_no: i64,
    line: Vec<u8>,
}

impl FileSource {
    pub fn open(config: &FileConfig) -> Result<Self, SourceError> {
        let path = config.path.display().to_string();
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
        })
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
            self.line_no += 1;
        }
        self.line.clear();
        Ok(())
    }

    fn poll(
        &mut self,
        batch: &mut RawBatch,
        max: usize,
        wait: Duration,
    ) -> Result<Poll, SourceError> {
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
            let complete = self.line.last() == Some(&b'\n');
            if n == 0 || (!complete && self.follow) {
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
        if !line.iter().all(u8::is_ascii_whitespace) {
            batch.push(line, 0, self.line_no);
        }
        self.line.clear();
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
