//! The lake writer: rows committed per table and failed commits.

use prometheus::{IntCounter, IntCounterVec, Registry};

use super::{counter, counter_vec};

/// The lake writer: rows committed per table and failed commits.
#[derive(Debug, Clone)]
pub struct LakeMetrics {
    /// Rows committed to the lake's Delta tables, by table.
    pub lake_rows: IntCounterVec,
    /// Lake commits that failed (retried with backoff; nothing is dropped).
    pub lake_errors: IntCounter,
}

impl LakeMetrics {
    pub(super) fn new(r: &Registry) -> Self {
        LakeMetrics {
            lake_rows: counter_vec(
                r,
                "cds_lake_rows_total",
                "Rows committed to the lake's Delta tables",
                &["table"],
            ),
            lake_errors: counter(r, "cds_lake_errors_total", "Lake commits that failed"),
        }
    }
}
