//! Prometheus metrics of the whole pipeline, one registry per run.
//!
//! Stages hold an `Arc<Metrics>` and add per batch (not per event) where they can, so the
//! counters cost nothing measurable on the hot path. `/metrics` renders the registry.

use prometheus::{
    Counter, CounterVec, Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::silver::DqFlag;

/// Every metric the engine exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Payloads read, by source.
    pub events_in: IntCounterVec,
    /// Silver records by data-quality flag.
    pub dq_flags: IntCounterVec,
    /// Payloads that were not events, by reason class.
    pub dead_letters: IntCounterVec,
    /// Events dropped as duplicates.
    pub duplicates: IntCounter,
    /// Silver records kept out of Gold.
    pub quarantined: IntCounter,
    /// Records that reached Gold.
    pub gold_records: IntCounter,
    /// KPI documents written, by document type.
    pub documents_written: IntCounterVec,
    /// KPI changes received from the dataflow.
    pub kpi_changes: IntCounter,
    /// Sink write failures.
    pub sink_errors: IntCounter,
    /// Sink writes retried after a failed attempt (before a failure is final).
    pub sink_retries: IntCounter,
    /// Dead letters that could not be published to the dead-letter topic (they stay in the
    /// local dead-letter store).
    pub deadletter_publish_failures: IntCounter,
    /// The heartbeat of each pipeline stage (`/readyz`, `cds_stage_*`).
    pub stages: std::sync::Arc<crate::support::StageHealth>,
    /// Patients located in the network now.
    pub occupied_beds: IntGauge,
    /// The event-time watermark (seconds since the Unix epoch).
    pub watermark_seconds: IntGauge,
    /// Messages waiting in the source behind what was read (Kafka consumer lag).
    pub source_lag: IntGauge,
    /// Times the source became unreachable (broker outages).
    pub source_outages: IntCounter,
    /// Seconds the source has been unreachable, 0 while it is reachable.
    pub source_unavailable_seconds: IntGauge,
    /// Seconds since the last checkpoint was written (or since the start).
    pub checkpoint_age_seconds: IntGauge,
    pub checkpoints_written: IntCounter,
    /// Size of the last checkpoint.
    pub checkpoint_bytes: IntGauge,
    /// Rows committed to the lake's Delta tables, by table.
    pub lake_rows: IntCounterVec,
    /// Lake commits that failed (retried with backoff; nothing is dropped).
    pub lake_errors: IntCounter,
    /// Epochs (input batches) completed by every worker.
    pub epochs_completed: IntCounter,
    /// Seconds from a batch being read to its KPI changes being written.
    pub processing_latency: Histogram,
    /// Rule evaluations, by rule (mlmname).
    pub rule_evaluations: IntCounterVec,
    /// Rules whose logic was true, by rule (alerts written = fires - suppressed).
    pub rule_fires: IntCounterVec,
    /// Alerts suppressed (same rule, patient and band within suppress_minutes), by rule.
    pub rule_suppressed: IntCounterVec,
    /// Rule evaluations that failed or ran over a sandbox limit, by rule.
    pub rule_errors: IntCounterVec,
    /// Time spent evaluating each rule.
    pub rule_eval_seconds: CounterVec,
    /// Alert documents written to the sink.
    pub alerts_written: IntCounter,
    /// Seconds from a batch being read to its alerts being written.
    pub alert_latency: Histogram,
    /// Clinicians' acknowledgements, by rule and action (accepted, overridden, snoozed).
    pub alert_acks: IntCounterVec,
    /// Per rule: accepted / (accepted + overridden), over every acknowledged alert.
    pub rule_accept_rate: GaugeVec,
    /// Per rule: overridden / (accepted + overridden): a high value marks a noisy rule.
    pub rule_override_rate: GaugeVec,
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
    /// Operational alerts raised and recovered, by condition and state (`raised`,
    /// `recovered`): one of each per outage.
    pub ops_alerts: IntCounterVec,
    /// 1 while an operational condition is active, by condition.
    pub ops_condition_active: IntGaugeVec,
    /// Operational alert notifications by outcome at the webhook: `delivered`, `failed` (after
    /// the last retry) or `dropped` (the delivery queue was full).
    pub ops_webhook_notifications: IntCounterVec,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    let _ = registry.register(Box::new(c.clone()));
    c
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    let _ = registry.register(Box::new(c.clone()));
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    let _ = registry.register(Box::new(g.clone()));
    g
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let dq_flags = counter_vec(
            &r,
            "cds_dq_flags_total",
            "Silver records by data-quality flag",
            &["flag"],
        );
        for f in DqFlag::ALL {
            dq_flags.with_label_values(&[f.name()]);
        }
        let dead_letters = counter_vec(
            &r,
            "cds_dead_letters_total",
            "Payloads sent to the dead-letter store",
            &["reason"],
        );
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
        let alert_latency = Histogram::with_opts(
            HistogramOpts::new(
                "cds_alert_latency_seconds",
                "From a batch being read to its alerts being written",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )
        .unwrap_or_else(|e| unreachable!("alert latency histogram: {e}"));
        let _ = r.register(Box::new(alert_latency.clone()));
        let rule_eval_seconds = CounterVec::new(
            Opts::new(
                "cds_rule_eval_seconds_total",
                "Time spent evaluating each rule",
            ),
            &["rule"],
        )
        .unwrap_or_else(|e| unreachable!("rule eval seconds: {e}"));
        let _ = r.register(Box::new(rule_eval_seconds.clone()));
        let rate = |name: &str, help: &str| {
            let g = GaugeVec::new(Opts::new(name, help), &["rule"])
                .unwrap_or_else(|e| unreachable!("{name}: {e}"));
            let _ = r.register(Box::new(g.clone()));
            g
        };
        let rule_accept_rate = rate(
            "cds_rule_accept_rate",
            "Share of a rule's acted-on alerts that clinicians accepted",
        );
        let rule_override_rate = rate(
            "cds_rule_override_rate",
            "Share of a rule's acted-on alerts that clinicians overrode",
        );
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
        let ops_condition_active = IntGaugeVec::new(
            Opts::new(
                "cds_ops_condition_active",
                "1 while an operational condition is active",
            ),
            &["condition"],
        )
        .unwrap_or_else(|e| unreachable!("ops condition gauge: {e}"));
        let _ = r.register(Box::new(ops_condition_active.clone()));
        Metrics {
            events_in: counter_vec(
                &r,
                "cds_events_in_total",
                "Payloads read from sources",
                &["source"],
            ),
            dq_flags,
            dead_letters,
            duplicates: counter(
                &r,
                "cds_duplicate_events_total",
                "Events dropped as duplicates",
            ),
            quarantined: counter(
                &r,
                "cds_quarantined_total",
                "Silver records quarantined (kept out of Gold)",
            ),
            gold_records: counter(
                &r,
                "cds_gold_records_total",
                "Silver records that reached Gold",
            ),
            documents_written: counter_vec(
                &r,
                "cds_documents_written_total",
                "Documents written to the sink",
                &["type"],
            ),
            kpi_changes: counter(
                &r,
                "cds_kpi_changes_total",
                "KPI changes received from the dataflow",
            ),
            sink_errors: counter(&r, "cds_sink_errors_total", "Sink write failures"),
            sink_retries: counter(
                &r,
                "cds_sink_retries_total",
                "Sink writes retried with backoff after a failed attempt",
            ),
            deadletter_publish_failures: counter(
                &r,
                "cds_deadletter_publish_failures_total",
                "Dead letters not published to the dead-letter topic (kept in the local store)",
            ),
            stages: crate::support::StageHealth::new(&r),
            occupied_beds: gauge(&r, "cds_occupied_beds", "Patients located in the network"),
            watermark_seconds: gauge(
                &r,
                "cds_event_time_watermark_seconds",
                "Latest event time seen in Gold",
            ),
            epochs_completed: counter(
                &r,
                "cds_epochs_completed_total",
                "Input batches completed by every worker",
            ),
            processing_latency: latency,
            rule_evaluations: counter_vec(
                &r,
                "cds_rule_evaluations_total",
                "Rule evaluations",
                &["rule"],
            ),
            rule_fires: counter_vec(
                &r,
                "cds_rule_fires_total",
                "Rules whose logic was true",
                &["rule"],
            ),
            rule_suppressed: counter_vec(
                &r,
                "cds_rule_suppressed_total",
                "Alerts suppressed",
                &["rule"],
            ),
            rule_errors: counter_vec(
                &r,
                "cds_rule_errors_total",
                "Rule evaluations that failed",
                &["rule"],
            ),
            rule_eval_seconds,
            alerts_written: counter(
                &r,
                "cds_alerts_written_total",
                "Alert documents written to the sink",
            ),
            alert_latency,
            alert_acks: counter_vec(
                &r,
                "cds_alert_acks_total",
                "Clinicians' acknowledgements of alerts",
                &["rule", "action"],
            ),
            rule_accept_rate,
            rule_override_rate,
            source_lag: gauge(
                &r,
                "cds_source_lag_messages",
                "Messages waiting in the source behind what was read (Kafka consumer lag)",
            ),
            source_outages: counter(
                &r,
                "cds_source_outages_total",
                "Times the source became unreachable (broker outages)",
            ),
            source_unavailable_seconds: gauge(
                &r,
                "cds_source_unavailable_seconds",
                "Seconds the source has been unreachable; 0 while it is reachable",
            ),
            checkpoint_age_seconds: gauge(
                &r,
                "cds_checkpoint_age_seconds",
                "Seconds since the last checkpoint was written",
            ),
            checkpoints_written: counter(
                &r,
                "cds_checkpoints_written_total",
                "Checkpoints written",
            ),
            checkpoint_bytes: gauge(&r, "cds_checkpoint_bytes", "Size of the last checkpoint"),
            lake_rows: counter_vec(
                &r,
                "cds_lake_rows_total",
                "Rows committed to the lake's Delta tables",
                &["table"],
            ),
            lake_errors: counter(&r, "cds_lake_errors_total", "Lake commits that failed"),
            cosmos_documents: counter_vec(
                &r,
                "cds_cosmos_documents_written_total",
                "Documents written to Cosmos DB",
                &["container"],
            ),
            cosmos_request_units,
            cosmos_retries: counter_vec(
                &r,
                "cds_cosmos_retries_total",
                "Cosmos DB requests retried, by the status that caused the retry",
                &["status"],
            ),
            cosmos_request_seconds,
            cosmos_dead_lettered: counter_vec(
                &r,
                "cds_cosmos_dead_lettered_total",
                "Documents sent to the dead-letter store after the last Cosmos DB retry",
                &["container"],
            ),
            ops_alerts: counter_vec(
                &r,
                "cds_ops_alerts_total",
                "Operational alerts raised and recovered",
                &["condition", "state"],
            ),
            ops_condition_active,
            ops_webhook_notifications: counter_vec(
                &r,
                "cds_ops_webhook_notifications_total",
                "Operational alert notifications by outcome at the webhook",
                &["result"],
            ),
            registry: r,
        }
    }

    /// Adds a metric owned by another part of the engine (a source's
    /// ([`crate::source::Source::collectors`]), the HTTP server's), so that `/metrics` shows it;
    /// a second registration of the same name is ignored.
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        match self.registry.register(collector) {
            Ok(()) | Err(prometheus::Error::AlreadyReg) => {}
            Err(e) => tracing::warn!(error = %e, "a metric is not exported"),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Sum over every label of a counter vector.
    pub fn total(vec: &IntCounterVec) -> u64 {
        use prometheus::core::Collector;
        vec.collect()
            .iter()
            .flat_map(|mf| {
                mf.get_metric()
                    .iter()
                    .map(|m| m.get_counter().get_value() as u64)
                    .collect::<Vec<_>>()
            })
            .sum()
    }
}
