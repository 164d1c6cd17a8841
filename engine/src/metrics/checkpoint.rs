//! Checkpoints: how many, how big, how old.

use prometheus::{IntCounter, IntGauge, Registry};

use super::{counter, gauge};

/// Checkpoints: how many, how big, how old.
#[derive(Debug, Clone)]
pub struct CheckpointMetrics {
    /// Seconds since the last checkpoint was written (or since the start), as the pipeline
    /// loop last saw it.
    pub checkpoint_age_seconds: IntGauge,
    /// Unix time of the last checkpoint written (the start until the first). Unlike the age,
    /// it needs no running loop to stay true: `time() - …` keeps growing when the loop is stuck.
    pub last_success_timestamp_seconds: IntGauge,
    pub checkpoints_written: IntCounter,
    /// Size of the last checkpoint.
    pub checkpoint_bytes: IntGauge,
}

impl CheckpointMetrics {
    pub(super) fn new(r: &Registry) -> Self {
        let last_success = gauge(
            r,
            "cds_checkpoint_last_success_timestamp_seconds",
            "Unix time of the last checkpoint written (the start until the first)",
        );
        last_success.set(crate::support::unix_seconds());
        CheckpointMetrics {
            checkpoint_age_seconds: gauge(
                r,
                "cds_checkpoint_age_seconds",
                "Seconds since the last checkpoint was written",
            ),
            last_success_timestamp_seconds: last_success,
            checkpoints_written: counter(r, "cds_checkpoints_written_total", "Checkpoints written"),
            checkpoint_bytes: gauge(r, "cds_checkpoint_bytes", "Size of the last checkpoint"),
        }
    }
}
