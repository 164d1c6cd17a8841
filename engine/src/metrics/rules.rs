//! The rules stage: evaluations, fires, suppressions, errors and time per rule; alerts written and their latency.

use prometheus::{
    CounterVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use super::{counter, counter_vec, gauge};

/// The rules stage: evaluations, fires, suppressions, errors and time per rule; alerts written and their latency.
#[derive(Debug, Clone)]
pub struct RulesMetrics {
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
    /// Records the reorder window holds for the rules now.
    pub reorder_held: IntGauge,
    /// Records that reached the rules later than the reorder window (their alerts say so).
    pub late_records: IntCounter,
}

impl RulesMetrics {
    pub(super) fn new(r: &Registry) -> Self {
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
        RulesMetrics {
            rule_evaluations: counter_vec(
                r,
                "cds_rule_evaluations_total",
                "Rule evaluations",
                &["rule"],
            ),
            rule_fires: counter_vec(
                r,
                "cds_rule_fires_total",
                "Rules whose logic was true",
                &["rule"],
            ),
            rule_suppressed: counter_vec(
                r,
                "cds_rule_suppressed_total",
                "Alerts suppressed",
                &["rule"],
            ),
            rule_errors: counter_vec(
                r,
                "cds_rule_errors_total",
                "Rule evaluations that failed",
                &["rule"],
            ),
            rule_eval_seconds,
            alerts_written: counter(
                r,
                "cds_alerts_written_total",
                "Alert documents written to the sink",
            ),
            alert_latency,
            reorder_held: gauge(
                r,
                "cds_reorder_held_records",
                "Records the reorder window holds for the rules",
            ),
            late_records: counter(
                r,
                "cds_rules_late_records_total",
                "Records that reached the rules later than the reorder window",
            ),
        }
    }
}
