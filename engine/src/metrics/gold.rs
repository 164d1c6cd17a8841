//! The dataflow: records in, KPI changes out, epochs, occupancy, event time, latency.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

use super::{counter, gauge};

/// The dataflow: records in, KPI changes out, epochs, occupancy, event time, latency.
#[derive(Debug, Clone)]
pub struct GoldMetrics {
    /// Records that reached Gold.
    pub gold_records: IntCounter,
    /// KPI changes received from the dataflow.
    pub kpi_changes: IntCounter,
    /// Patients located in the network now.
    pub occupied_beds: IntGauge,
    /// The event-time watermark (seconds since the Unix epoch).
    pub watermark_seconds: IntGauge,
    /// Epochs (input batches) completed by every worker.
    pub epochs_completed: IntCounter,
    /// Seconds from a batch being read to its KPI changes being written.
    pub processing_latency: Histogram,
}

impl GoldMetrics {
    pub(super) fn new(r: &Registry) -> Self {
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "cds_processing_latency_seconds",
                "From a batch being read to its KPI changes being written",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )
        .unwrap_or_else(|e| unreachable!("latency histogram: {e}"));
        let _ = r.register(Box::new(latency.clone()));
        GoldMetrics {
            gold_records: counter(
                r,
                "cds_gold_records_total",
                "Silver records that reached Gold",
            ),
            kpi_changes: counter(
                r,
                "cds_kpi_changes_total",
                "KPI changes received from the dataflow",
            ),
            occupied_beds: gauge(r, "cds_occupied_beds", "Patients located in the network"),
            watermark_seconds: gauge(
                r,
                "cds_event_time_watermark_timestamp_seconds",
                "Latest event time seen in Gold",
            ),
            epochs_completed: counter(
                r,
                "cds_epochs_completed_total",
                "Input batches completed by every worker",
            ),
            processing_latency: latency,
        }
    }
}
