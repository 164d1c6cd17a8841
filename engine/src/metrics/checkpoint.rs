//! Checkpoints: how many, how big, how old.

use prometheus::{IntCounter, IntGauge, Registry};

use super::{counter, gauge};

/// Checkpoints: how many, how big, how old.
#[derive(Debug, Clone)]
pub struct CheckpointMetrics {
    /// Seconds since the last checkpoint was written (or since the start).
    pub checkpoint_age_seconds: IntGauge,
    pub checkpoints_written: IntCounter,
    /// Size of the last checkpoint.
    pub checkpoint_bytes: IntGauge,
}

impl CheckpointMetrics {
    pub(super) fn new(r: &Registry) -> Self {
        CheckpointMetrics {
            checkpoint_age_seconds: gauge(
                r,
                "cds_checkpoint_age_seconds",
                "Seconds since the last checkpoint was written",
            ),
            checkpoints_written: counter(r, "cds_checkpoints_written_total", "Checkpoints written"),
            checkpoint_bytes: gauge(r, "cds_checkpoint_bytes", "Size of the last checkpoint"),
        }
    }
}
