//! Sources: where payloads come from. Each source is a folder behind the small [`Source`]
//! trait; it hands raw payloads (one JSON object each) in batches to Silver, with positions.
//! [`SourceConfig`] names the one `--source` chose and opens it.

pub mod bronze;
pub mod file;
pub mod kafka;
pub mod mllp;
pub mod simulator;
mod spec;

pub use spec::{KafkaSettings, SourceConfig, SourceSettings};

use std::time::Duration;

use crate::model::DeadLetter;

/// Counts of the dead letters a source published to its own channel, since it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeadLetterDeliveries {
    /// Letters the channel did not take (kept in the local store only).
    pub failed: u64,
    /// Letters the channel acknowledged.
    pub delivered: u64,
}

/// Why a source failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("read error on {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "unknown source {0:?}: expected `simulator`, `file:PATH`, `kafka://HOST:PORT/TOPIC`, `mllp://HOST:PORT`, `mllps://HOST:PORT` or `bronze:LAKE`"
    )]
    Unknown(String),
    #[error("source {0:?} is not built yet")]
    NotBuilt(String),
    #[error("kafka: {0}")]
    Kafka(String),
    #[error("invalid source configuration: {0}")]
    Config(String),
}

/// What a poll produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// Payloads were appended (at least one).
    Ready,
    /// Nothing arrived within the wait; more may come.
    Idle,
    /// The source is exhausted and will produce nothing more.
    End,
}

/// Payloads of one poll, stored back to back in one buffer.
#[derive(Debug, Default, Clone)]
pub struct RawBatch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    positions: Vec<Position>,
}

/// Where a payload sits in its source: the stream (topic index for Kafka, 0 otherwise), the
/// partition and the offset (line number for files, sequence number for the simulator).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Position {
    pub stream: u16,
    pub partition: i32,
    pub offset: i64,
}

impl RawBatch {
    /// Appends one payload with its (partition, offset).
    pub fn push(&mut self, payload: &[u8], partition: i32, offset: i64) {
        self.bytes.extend_from_slice(payload);
        self.ends.push(self.bytes.len());
        self.positions.push(Position {
            stream: 0,
            partition,
            offset,
        });
    }

    /// Appends one payload at a position of a multi-stream source.
    pub fn push_at(&mut self, payload: &[u8], position: Position) {
        self.bytes.extend_from_slice(payload);
        self.ends.push(self.bytes.len());
        self.positions.push(position);
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.positions.clear();
    }

    /// The payloads with their (partition, offset).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Position)> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .zip(self.positions.iter().copied())
            .map(|((s, e), pos)| (&self.bytes[s..e], pos))
    }
}

/// A stream of payloads.
pub trait Source: Send {
    /// A short name for metrics, logs and dead letters (`file:PATH`, `simulator`).
    fn name(&self) -> &str;

    /// Appends up to `max` payloads to `batch`, waiting at most `wait` for the first one.
    fn poll(
        &mut self,
        batch: &mut RawBatch,
        max: usize,
        wait: Duration,
    ) -> Result<Poll, SourceError>;

    /// The name of one stream for dead letters (`kafka:TOPIC`); by default the source's name.
    fn stream_name(&self, _stream: u16) -> String {
        self.name().to_owned()
    }

    /// Hands a payload that is not an event to the source's own dead-letter channel (a Kafka
    /// dead-letter topic); the local dead-letter store has it already.
    fn dead_letter(&mut self, _letter: &DeadLetter) -> Result<(), SourceError> {
        Ok(())
    }

    /// What became of the letters handed to [`Source::dead_letter`] so far.
    fn dead_letter_deliveries(&self) -> DeadLetterDeliveries {
        DeadLetterDeliveries::default()
    }

    /// Everything up to and including these positions (the last one per stream and
    /// partition) has been processed and durably written: the source may forget it.
    fn commit(&mut self, _upto: &[Position]) -> Result<(), SourceError> {
        Ok(())
    }

    /// Messages waiting in the source behind what has been read (consumer lag), if the source
    /// can tell without a round trip; `None` for sources without a backlog (file, simulator).
    fn lag(&mut self) -> Option<u64> {
        None
    }

    /// Whether messages wait in the source behind what has been read: `Some(true)` while it
    /// catches up (or cannot tell yet), `Some(false)` once it has read everything there is,
    /// `None` for a source that cannot tell. The rules' reorder window waits out lulls only
    /// when the source is not behind: in a backlog a pause is the engine's, not the stream's.
    fn behind(&mut self) -> Option<bool> {
        None
    }

    /// How much of a finite input has been read: (read, size) in the source's own unit (bytes
    /// of a file, payloads of a Bronze replay), for the progress of batch commands. `None` for
    /// a stream, standard input or a followed file, whose size is not known.
    fn input_progress(&self) -> Option<(u64, u64)> {
        None
    }

    /// The source's own metrics (the MLLP listener's refusals and timeouts), registered in the
    /// run's registry when the pipeline starts. They count from the source's opening, so
    /// nothing that happened before the registry existed is lost.
    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        Vec::new()
    }

    /// Since when the source has been unreachable (a broker outage), if it is now: the
    /// pipeline counts outages and exports their length, so operators see one before the
    /// clinicians notice stale KPIs.
    fn unavailable_since(&self) -> Option<std::time::Instant> {
        None
    }

    /// What must be the same for a checkpoint of an earlier run to continue this one: the
    /// source's name, plus whatever else decides its content (the simulator's seed and start).
    fn identity(&self) -> String {
        self.name().to_owned()
    }

    /// The (stream, partition) pairs the source reads now, as its positions name them, when it
    /// knows them before they bring anything (Kafka's assigned partitions): the rules' reorder
    /// window waits for each of them ([`crate::rules::ReorderWindow::expect`]).
    fn partitions(&self) -> Vec<(u16, i32)> {
        Vec::new()
    }

    /// Moves past everything up to and including `upto` (the last processed position per
    /// stream and partition), if the source can do so itself: the simulator and files
    /// regenerate or re-read from the start otherwise. Whatever the source returns at or
    /// before these positions is skipped by the pipeline anyway; Kafka reads on from them (the
    /// offsets committed never run ahead of a checkpoint, and a new group has none).
    fn skip_to(&mut self, _upto: &[Position]) -> Result<(), SourceError> {
        Ok(())
    }
}
