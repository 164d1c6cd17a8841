//! Bad data is data: a payload that could not become an event is kept, with where it came from
//! and why, in the dead-letter store beside the good events.

use serde::Serialize;

/// Where a payload came from, for dead letters and (later) checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourcePosition {
    /// `file:PATH`, `simulator`, `kafka:TOPIC`.
    pub source: String,
    /// Partition (0 for files and the simulator).
    pub partition: i32,
    /// Line number (files, 1-based), sequence number (simulator) or offset (Kafka).
    pub offset: i64,
}

/// A payload that could not become an event, kept with the reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    /// A fixed label for the kind of failure (metrics, dashboards).
    pub reason_code: &'static str,
    /// What exactly was wrong, for the person fixing the feed.
    pub reason: String,
    pub position: SourcePosition,
    /// The payload as received (lossy UTF-8).
    pub payload: String,
}
