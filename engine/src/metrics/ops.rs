//! Operational alerts and their webhook notifications.

use prometheus::{IntCounterVec, IntGaugeVec, Registry};

use super::{counter_vec, gauge_vec};

/// Operational alerts and their webhook notifications.
#[derive(Debug, Clone)]
pub struct OpsMetrics {
    /// Operational alerts raised and recovered, by condition and state (`raised`,
    /// `recovered`): one of each per outage.
    pub ops_alerts: IntCounterVec,
    /// 1 while an operational condition is active, by condition.
    pub ops_condition_active: IntGaugeVec,
    /// Operational alert notifications by outcome at the webhook: `delivered`, `failed` (after
    /// the last retry) or `dropped` (the delivery queue was full).
    pub ops_webhook_notifications: IntCounterVec,
}

impl OpsMetrics {
    pub(super) fn new(r: &Registry) -> Self {
        let ops_condition_active = gauge_vec(
            r,
            "cds_ops_condition_active",
            "1 while an operational condition is active",
            &["condition"],
        );
        OpsMetrics {
            ops_alerts: counter_vec(
                r,
                "cds_ops_alerts_total",
                "Operational alerts raised and recovered",
                &["condition", "state"],
            ),
            ops_condition_active,
            ops_webhook_notifications: counter_vec(
                r,
                "cds_ops_webhook_notifications_total",
                "Operational alert notifications by outcome at the webhook",
                &["result"],
            ),
        }
    }
}
