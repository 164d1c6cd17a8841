use std::time::Duration;

use clap::Args;
use serde::Deserialize;

/// The environment variable that may hold the webhook URL: webhook URLs carry their own
/// secret, so they belong in the environment (or a secret store) rather than in a process list.
pub const WEBHOOK_ENV: &str = "CDS_OPS_WEBHOOK";

/// How operational alerts are raised and delivered.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpsConfig {
    /// Where notifications are POSTed (Microsoft Teams or Slack incoming webhook, or any
    /// receiver of JSON); `None`: metrics and log lines only.
    pub webhook: Option<String>,
    /// The name of this engine in notifications; default: the host name.
    pub instance: Option<String>,
    /// How long the source may stay unreachable before `source_unreachable` is raised: a
    /// broker restart or a short network cut should not page anyone.
    pub source_outage_secs: u64,
    /// Rule evaluation errors within `rule_error_window_secs` that raise `rule_errors`.
    pub rule_errors: u32,
    /// The window in which `rule_errors` errors raise the condition; it clears after a window
    /// without any error.
    pub rule_error_window_secs: u64,
    /// Retries of one notification after its first attempt, with exponential backoff.
    pub webhook_retries: u32,
    /// First backoff between webhook attempts; it doubles up to 60 s.
    pub webhook_backoff_ms: u64,
    /// Longest wait for one webhook request.
    pub webhook_timeout_ms: u64,
}

impl Default for OpsConfig {
    fn default() -> Self {
        OpsConfig {
            webhook: None,
            instance: None,
            source_outage_secs: 60,
            rule_errors: 5,
            rule_error_window_secs: 60,
            webhook_retries: 5,
            webhook_backoff_ms: 1000,
            webhook_timeout_ms: 10_000,
        }
    }
}

impl OpsConfig {
    /// The settings of a run given no `--ops-*` flag: the defaults, with the webhook of
    /// `CDS_OPS_WEBHOOK` when it is set.
    pub fn from_env() -> Self {
        OpsConfig {
            webhook: std::env::var(WEBHOOK_ENV)
                .ok()
                .filter(|u| !u.trim().is_empty()),
            ..OpsConfig::default()
        }
    }

    pub fn source_outage(&self) -> Duration {
        Duration::from_secs(self.source_outage_secs)
    }

    pub fn rule_error_window(&self) -> Duration {
        Duration::from_secs(self.rule_error_window_secs.max(1))
    }
}

/// The `cds run` flags of operational alerts.
#[derive(Debug, Clone, Args)]
pub struct OpsArgs {
    /// Operational alerts (sink retries exhausted, source unreachable, checkpoint failed, rule
    /// errors) are POSTed to this URL as JSON that Microsoft Teams and Slack incoming webhooks
    /// accept; one notification when a condition starts, one when it ends. Default: the
    /// CDS_OPS_WEBHOOK environment variable; unset: metrics and log lines only.
    #[arg(long, env = WEBHOOK_ENV, hide_env_values = true, value_name = "URL")]
    ops_webhook: Option<String>,
    /// Seconds the source may stay unreachable before `source_unreachable` is raised.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    ops_source_outage: u64,
    /// Rule evaluation errors within `--ops-rule-window` that raise `rule_errors`.
    #[arg(long, default_value_t = 5, value_name = "N")]
    ops_rule_errors: u32,
    /// The window of `--ops-rule-errors`; `rule_errors` clears after a window without errors.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    ops_rule_window: u64,
    /// The name of this engine in notifications (default: the host name).
    #[arg(long, value_name = "NAME")]
    ops_instance: Option<String>,
}

impl OpsArgs {
    pub fn config(&self) -> OpsConfig {
        OpsConfig {
            webhook: self.ops_webhook.clone().filter(|u| !u.trim().is_empty()),
            instance: self.ops_instance.clone(),
            source_outage_secs: self.ops_source_outage,
            rule_errors: self.ops_rule_errors.max(1),
            rule_error_window_secs: self.ops_rule_window,
            ..OpsConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused_and_defaults_fill_the_rest() {
        let c: OpsConfig = toml::from_str("source_outage_secs = 5").expect("valid");
        assert_eq!(c.source_outage(), Duration::from_secs(5));
        assert_eq!(c.rule_errors, 5);
        assert!(toml::from_str::<OpsConfig>("source_outage = 5").is_err());
    }
}
