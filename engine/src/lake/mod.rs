//! The lake: Bronze, Silver and Gold Delta tables ([`tables`], SCD2 [`dims`], written by
//! [`writer`] to a local directory or Azure Blob Storage / ADLS Gen2); and two append-only
//! JSON-lines files in the local data directory that must never be lost: the dead-letter store
//! (`deadletter/`) and the quarantined Silver records (`silver/quarantine/`), cut back to a
//! checkpoint's length on restart.

pub mod compact;
pub mod dims;
pub mod dq_report;
mod patients;
pub mod tables;
pub mod writer;

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Why a lake write failed.
#[derive(Debug, thiserror::Error)]
#[error("lake table {path}: {source}")]
pub struct LakeError {
    path: String,
    source: std::io::Error,
}

/// One append-only JSON-lines file.
#[derive(Debug)]
pub struct JsonlTable {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    rows: u64,
}

impl JsonlTable {
    /// A table at `root/relative`; the file is created on the first row.
    pub fn new(root: &Path, relative: &str) -> Self {
        JsonlTable {
            path: root.join(relative),
            out: None,
            rows: 0,
        }
    }

    fn error(&self, source: std::io::Error) -> LakeError {
        LakeError {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Appends one row.
    pub fn append<T: Serialize>(&mut self, row: &T) -> Result<(), LakeError> {
        if self.out.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| self.error(e))?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| self.error(e))?;
            self.out = Some(BufWriter::new(f));
        }
        let line = serde_json::to_vec(row).map_err(|e| self.error(e.into()))?;
        if let Some(out) = self.out.as_mut() {
            out.write_all(&line)
                .and_then(|_| out.write_all(b"\n"))
                .map_err(|e| LakeError {
                    path: self.path.display().to_string(),
                    source: e,
                })?;
        }
        self.rows += 1;
        Ok(())
    }

    /// Writes buffered rows through to the file.
    pub fn flush(&mut self) -> Result<(), LakeError> {
        match self.out.as_mut().map(|o| o.flush()) {
            Some(Err(e)) => Err(self.error(e)),
            _ => Ok(()),
        }
    }

    /// The file's length with every appended row written through (0 before the first row).
    pub fn durable_len(&mut self) -> Result<u64, LakeError> {
        self.flush()?;
        if let Some(out) = self.out.as_mut() {
            out.get_ref().sync_data().map_err(|e| LakeError {
                path: self.path.display().to_string(),
                source: e,
            })?;
        }
        match std::fs::metadata(&self.path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Cuts the file back to `len` bytes: rows appended after a checkpoint by a run that then
    /// crashed are appended again by the run that continues from it, so they must go.
    pub fn truncate_to(&mut self, len: u64) -> Result<(), LakeError> {
        self.out = None;
        match OpenOptions::new().write(true).open(&self.path) {
            Ok(f) => {
                if f.metadata().map_err(|e| self.error(e))?.len() > len {
                    f.set_len(len).map_err(|e| self.error(e))?;
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Rows appended by this process.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Where the table lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The local lake under the data directory.
#[derive(Debug)]
pub struct Lake {
    /// Payloads that were not events, with reason and source position.
    pub dead_letters: JsonlTable,
    /// Silver records kept out of Gold, with their flags.
    pub quarantine: JsonlTable,
}

impl Lake {
    /// The lake at `DATA_DIR/lake`.
    pub fn open(data_dir: &Path) -> Self {
        let root = data_dir.join("lake");
        Lake {
            dead_letters: JsonlTable::new(&root, "deadletter/deadletter.jsonl"),
            quarantine: JsonlTable::new(&root, "silver/quarantine/quarantine.jsonl"),
        }
    }

    pub fn flush(&mut self) -> Result<(), LakeError> {
        self.dead_letters.flush()?;
        self.quarantine.flush()
    }

    /// Durable lengths of the tables, for a checkpoint: (dead letters, quarantine).
    pub fn lengths(&mut self) -> Result<(u64, u64), LakeError> {
        Ok((
            self.dead_letters.durable_len()?,
            self.quarantine.durable_len()?,
        ))
    }

    /// Cuts the tables back to a checkpoint's lengths.
    pub fn truncate_to(&mut self, lengths: (u64, u64)) -> Result<(), LakeError> {
        self.dead_letters.truncate_to(lengths.0)?;
        self.quarantine.truncate_to(lengths.1)
    }
}
