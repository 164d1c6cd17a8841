//! What decoding and Silver made of the payloads: flags, dead letters, duplicates, quarantine.

use prometheus::{IntCounter, IntCounterVec, Registry};

use super::{counter, counter_vec};
use crate::silver::DqFlag;

/// What decoding and Silver made of the payloads: flags, dead letters, duplicates, quarantine.
#[derive(Debug, Clone)]
pub struct SilverMetrics {
    /// Silver records by data-quality flag.
    pub dq_flags: IntCounterVec,
    /// Payloads that were not events, by reason class.
    pub dead_letters: IntCounterVec,
    /// Events dropped as duplicates.
    pub duplicates: IntCounter,
    /// Silver records kept out of Gold.
    pub quarantined: IntCounter,
    /// Records read that another process of the cluster cleans (its patients').
    pub elsewhere: IntCounter,
}

impl SilverMetrics {
    pub(super) fn new(r: &Registry) -> Self {
        let dq_flags = counter_vec(
            r,
            "cds_dq_flags_total",
            "Silver records by data-quality flag",
            &["flag"],
        );
        for f in DqFlag::ALL {
            dq_flags.with_label_values(&[f.name()]);
        }
        let dead_letters = counter_vec(
            r,
            "cds_dead_letters_total",
            "Payloads sent to the dead-letter store",
            &["reason"],
        );
        SilverMetrics {
            dq_flags,
            dead_letters,
            duplicates: counter(
                r,
                "cds_duplicate_events_total",
                "Events dropped as duplicates",
            ),
            quarantined: counter(
                r,
                "cds_quarantined_total",
                "Silver records quarantined (kept out of Gold)",
            ),
            elsewhere: counter(
                r,
                "cds_records_other_processes_total",
                "Records read that another process of the cluster cleans (its patients')",
            ),
        }
    }
}
