//! What the sources read and how reachable they are.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};

use super::{counter, counter_vec, float_gauge, gauge};

/// What the sources read and how reachable they are.
#[derive(Debug, Clone)]
pub struct SourceMetrics {
    /// Payloads read, by source.
    pub events_in: IntCounterVec,
    /// Messages waiting in the source behind what was read (Kafka consumer lag).
    pub source_lag: IntGauge,
    /// Times the source became unreachable (broker outages).
    pub source_outages: IntCounter,
    /// Seconds the source has been unreachable, 0 while it is reachable.
    pub source_unavailable_seconds: IntGauge,
    /// Dead letters that could not be published to the dead-letter topic (they stay in the
    /// local dead-letter store).
    pub deadletter_publish_failures: IntCounter,
    /// Share of a finite input read so far (a file, a Bronze replay); 0 for a stream.
    pub input_read_ratio: prometheus::Gauge,
}

impl SourceMetrics {
    pub(super) fn new(r: &Registry) -> Self {
        SourceMetrics {
            events_in: counter_vec(
                r,
                "cds_events_in_total",
                "Payloads read from sources",
                &["source"],
            ),
            source_lag: gauge(
                r,
                "cds_source_lag_messages",
                "Messages waiting in the source behind what was read (Kafka consumer lag)",
            ),
            source_outages: counter(
                r,
                "cds_source_outages_total",
                "Times the source became unreachable (broker outages)",
            ),
            source_unavailable_seconds: gauge(
                r,
                "cds_source_unavailable_seconds",
                "Seconds the source has been unreachable; 0 while it is reachable",
            ),
            deadletter_publish_failures: counter(
                r,
                "cds_deadletter_publish_failures_total",
                "Dead letters not published to the dead-letter topic (kept in the local store)",
            ),
            input_read_ratio: float_gauge(
                r,
                "cds_source_input_read_ratio",
                "Share of a finite input read so far (a file, a Bronze replay); 0 for a stream",
            ),
        }
    }
}
