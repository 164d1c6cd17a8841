//! What the job's threads send each other.

use std::time::Instant;

use crate::gold::{GoldBatch, GoldOutput, Micros};
use crate::model::Document;
use crate::model::Network;
use crate::rules::RuleInput;

/// What the sink thread receives.
pub(super) enum SinkMessage {
    Gold(GoldOutput),
    /// A changed departments file: capacities for the occupancy documents.
    Departments(Network),
    /// The alerts of one epoch from one rules thread (possibly none: every rules thread
    /// reports every epoch).
    Alerts {
        /// Which rules thread (its [`crate::rules::Share`] index).
        share: usize,
        epoch: u64,
        documents: Vec<Document>,
        /// Occupancy forecast documents (for the KPI container).
        forecasts: Vec<Document>,
        read_at: Instant,
    },
}

impl From<GoldOutput> for SinkMessage {
    fn from(g: GoldOutput) -> Self {
        SinkMessage::Gold(g)
    }
}

/// One batch of Gold-eligible records, in the reorder window's order, for the rules threads
/// (each reads all of them: one copy shared by all).
pub(super) struct RulesBatch {
    pub epoch: u64,
    pub records: std::sync::Arc<Vec<RuleInput>>,
    pub read_at: Instant,
    /// Send the stage's state after this batch: a checkpoint is being taken at this epoch.
    pub snapshot: bool,
}

/// One epoch's facts for one worker.
pub(super) struct WorkerBatch {
    pub epoch: u64,
    pub batch: GoldBatch,
    pub watermark: Micros,
    pub read_at: Instant,
}

/// One epoch as the ingest closes it: every worker's facts and the rules' records.
pub(super) struct Epoch {
    pub number: u64,
    /// One batch per worker, in worker order.
    pub batches: Vec<GoldBatch>,
    pub records: Vec<RuleInput>,
    /// The event-time watermark after this epoch.
    pub watermark: Micros,
    /// When its input was read, for the latency metrics.
    pub read_at: Instant,
    /// Whether a checkpoint is taken at this epoch.
    pub snapshot: bool,
}

impl Epoch {
    /// An epoch without input: facts for no worker, records for no rule.
    pub fn empty(number: u64, workers: usize, watermark: Micros, snapshot: bool) -> Self {
        Epoch {
            number,
            batches: vec![GoldBatch::default(); workers],
            records: Vec::new(),
            watermark,
            read_at: Instant::now(),
            snapshot,
        }
    }
}

/// An epoch every worker has completed, whose KPI documents can be written.
#[derive(Debug, Clone, Copy)]
pub(super) struct CompletedEpoch {
    pub epoch: u64,
    /// The event-time watermark the documents are stamped with.
    pub watermark: Micros,
    pub read_at: Instant,
}

/// What the sink thread hands back when it stops.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sunk {
    pub documents_written: u64,
    pub occupied: i64,
}
