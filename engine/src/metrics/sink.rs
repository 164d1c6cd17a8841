//! The sink: documents written, failures and retries; Cosmos DB requests, request units and dead-lettered documents.

use prometheus::{
    Counter, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Registry,
};

use super::{counter, counter_vec, gauge_vec};

/// The sink: documents written, failures and retries; Cosmos DB requests, request units and dead-lettered documents.
#[derive(Debug, Clone)]
pub struct SinkMetrics {
    /// KPI documents written, by document type.
    pub documents_written: IntCounterVec,
    /// Sink write failures.
    pub sink_errors: IntCounter,
    /// Sink writes retried after a failed attempt (before a failure is final).
    pub sink_retries: IntCounter,
    /// Documents the Cosmos DB sink wrote, by container.
    pub cosmos_documents: IntCounterVec,
    /// Request units charged by Cosmos DB for the sink's requests.
    pub cosmos_request_units: Counter,
    /// Cosmos DB requests retried, by the status that caused the retry (`429`, `503`, `408`,
    /// `449`, `404` when a container had to be re-created, `timeout`, `connection`).
    pub cosmos_retries: IntCounterVec,
    /// Seconds per Cosmos DB upsert request (one attempt).
    pub cosmos_request_seconds: Histogram,
    /// Documents sent to the dead-letter store after the last retry, by container.
    pub cosmos_dead_lettered: IntCounterVec,
    /// Documents the HTTP API's serving index holds, by container (what it keeps in memory).
    pub index_documents: IntGaugeVec,
}

impl SinkMetrics {
    pub(super) fn new(r: &Registry) -> Self {
        let cosmos_request_units = Counter::new(
            "cds_cosmos_request_units_total",
            "Request units charged by Cosmos DB for the sink's requests",
        )
        .unwrap_or_else(|e| unreachable!("cosmos request units: {e}"));
        let _ = r.register(Box::new(cosmos_request_units.clone()));
        let cosmos_request_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "cds_cosmos_request_seconds",
                "Seconds per Cosmos DB upsert request (one attempt)",
            )
            .buckets(vec![
                0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .unwrap_or_else(|e| unreachable!("cosmos request histogram: {e}"));
        let _ = r.register(Box::new(cosmos_request_seconds.clone()));
        SinkMetrics {
            index_documents: gauge_vec(
                r,
                "cds_serving_index_documents",
                "Documents the HTTP API's serving index holds in memory, by container",
                &["container"],
            ),
            documents_written: counter_vec(
                r,
                "cds_documents_written_total",
                "Documents written to the sink",
                &["type"],
            ),
            sink_errors: counter(r, "cds_sink_errors_total", "Sink write failures"),
            sink_retries: counter(
                r,
                "cds_sink_retries_total",
                "Sink writes retried with backoff after a failed attempt",
            ),
            cosmos_documents: counter_vec(
                r,
                "cds_cosmos_documents_written_total",
                "Documents written to Cosmos DB",
                &["container"],
            ),
            cosmos_request_units,
            cosmos_retries: counter_vec(
                r,
                "cds_cosmos_retries_total",
                "Cosmos DB requests retried, by the status that caused the retry",
                &["status"],
            ),
            cosmos_request_seconds,
            cosmos_dead_lettered: counter_vec(
                r,
                "cds_cosmos_dead_lettered_total",
                "Documents sent to the dead-letter store after the last Cosmos DB retry",
                &["container"],
            ),
        }
    }
}
