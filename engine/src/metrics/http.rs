//! What clinicians did with alerts over the API.

use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};

use super::counter_vec;

/// What clinicians did with alerts over the API.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    /// Clinicians' acknowledgements, by rule and action (accepted, overridden, snoozed).
    pub alert_acks: IntCounterVec,
    /// Per rule: accepted / (accepted + overridden), over every acknowledged alert.
    pub rule_accept_rate: GaugeVec,
    /// Per rule: overridden / (accepted + overridden): a high value marks a noisy rule.
    pub rule_override_rate: GaugeVec,
}

impl HttpMetrics {
    pub(super) fn new(r: &Registry) -> Self {
        let rate = |name: &str, help: &str| {
            let g = GaugeVec::new(Opts::new(name, help), &["rule"])
                .unwrap_or_else(|e| unreachable!("{name}: {e}"));
            let _ = r.register(Box::new(g.clone()));
            g
        };
        let rule_accept_rate = rate(
            "cds_rule_accept_ratio",
            "Share of a rule's acted-on alerts that clinicians accepted",
        );
        let rule_override_rate = rate(
            "cds_rule_override_ratio",
            "Share of a rule's acted-on alerts that clinicians overrode",
        );
        HttpMetrics {
            alert_acks: counter_vec(
                r,
                "cds_alert_acks_total",
                "Clinicians' acknowledgements of alerts",
                &["rule", "action"],
            ),
            rule_accept_rate,
            rule_override_rate,
        }
    }
}
