//! Operational alerts: the engine telling its operators that the pipeline is in trouble.
//!
//! Four conditions ([`Condition`]) are raised where they happen: a sink that gives up on
//! documents after its retries, a source unreachable for longer than a threshold, a checkpoint
//! that cannot be written, a rule that keeps failing. Each is a state, not an event: raising
//! an active condition does nothing and clearing an inactive one does nothing, so one outage
//! is one notification and one recovery notice however often the stages report it.
//!
//! A raise or a recovery shows in three places: the metrics `cds_ops_alerts_total{condition,
//! state}` and `cds_ops_condition_active{condition}`, one log line with a fixed message (no
//! patient data, nothing taken from the input), and, with `--ops-webhook URL`, a POST whose
//! JSON Microsoft Teams and Slack incoming webhooks accept ([`webhook`]).

mod config;
mod webhook;

use std::collections::VecDeque;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tracing::{info, warn};

pub use config::{OpsArgs, OpsConfig};

use crate::metrics::Metrics;
use webhook::{Delivery, Notice, Notifier};

/// Why operational alerts could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The URL itself is never echoed: webhook URLs carry their secret.
    #[error("the operational alert webhook is not an http:// or https:// URL")]
    WebhookUrl,
    #[error("cannot start the operational alert webhook client: {0}")]
    Client(String),
}

/// What can go wrong with the pipeline, as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// A sink gave up on documents after its retries (Cosmos DB dead letters, a failed write).
    SinkRetriesExhausted,
    /// The source has been unreachable for longer than `--ops-source-outage`.
    SourceUnreachable,
    /// A checkpoint could not be written; source positions wait for the next one.
    CheckpointFailed,
    /// Rules failed at least `--ops-rule-errors` times within `--ops-rule-window`.
    RuleErrors,
    /// Dead letters cannot be published to the source's dead-letter topic (they stay in the
    /// local dead-letter store).
    DeadLetterTopic,
}

impl Condition {
    pub const ALL: [Condition; 5] = [
        Condition::SinkRetriesExhausted,
        Condition::SourceUnreachable,
        Condition::CheckpointFailed,
        Condition::RuleErrors,
        Condition::DeadLetterTopic,
    ];

    /// The label in metrics and payloads; dashboards and alert rules use these names.
    pub fn name(self) -> &'static str {
        match self {
            Condition::SinkRetriesExhausted => "sink_retries_exhausted",
            Condition::SourceUnreachable => "source_unreachable",
            Condition::CheckpointFailed => "checkpoint_failed",
            Condition::RuleErrors => "rule_errors",
            Condition::DeadLetterTopic => "deadletter_topic_unavailable",
        }
    }

    /// What the recovery notice says.
    fn recovered(self) -> &'static str {
        match self {
            Condition::SinkRetriesExhausted => "the sink writes again",
            Condition::SourceUnreachable => "the source is reachable again",
            Condition::CheckpointFailed => "a checkpoint was written again",
            Condition::RuleErrors => "the rules ran a whole window without errors",
            Condition::DeadLetterTopic => "dead letters are published to their topic again",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Whether a notice starts or ends a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Raised,
    Recovered,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Raised => "raised",
            State::Recovered => "recovered",
        }
    }
}

/// An active condition.
#[derive(Debug, Clone)]
struct Active {
    detail: &'static str,
    since: String,
    started: Instant,
}

#[derive(Debug)]
struct Inner {
    active: Mutex<[Option<Active>; Condition::ALL.len()]>,
    metrics: Option<Arc<Metrics>>,
    /// Taken at [`OpsAlerts::finish`], which lets the delivery thread drain and stop.
    notifier: Mutex<Option<Notifier>>,
    done: Mutex<Option<Receiver<()>>>,
    instance: String,
    host: String,
    source_outage: Duration,
    rule_errors: u32,
    rule_window: Duration,
}

/// The handle the stages raise and clear conditions with: cheap to clone, `Send`, never blocks
/// on delivery.
#[derive(Debug, Clone)]
pub struct OpsAlerts {
    inner: Arc<Inner>,
}

impl Default for OpsAlerts {
    fn default() -> Self {
        Self::detached()
    }
}

impl OpsAlerts {
    /// Starts operational alerts for a run: metrics in `metrics`, delivery to the webhook if
    /// one is configured.
    pub fn start(config: &OpsConfig, metrics: Arc<Metrics>) -> Result<Self, OpsError> {
        for c in Condition::ALL {
            metrics
                .ops
                .ops_condition_active
                .with_label_values(&[c.name()])
                .set(0);
            for s in [State::Raised, State::Recovered] {
                metrics
                    .ops
                    .ops_alerts
                    .with_label_values(&[c.name(), s.name()]);
            }
        }
        let (notifier, done) = match &config.webhook {
            Some(url) => {
                let delivery = Delivery {
                    url: url.clone(),
                    retries: config.webhook_retries,
                    backoff: Duration::from_millis(config.webhook_backoff_ms),
                    timeout: Duration::from_millis(config.webhook_timeout_ms.max(1)),
                };
                let (n, d) = Notifier::start(delivery, Some(metrics.clone()))?;
                (Some(n), Some(d))
            }
            None => (None, None),
        };
        Ok(Self::build(config, Some(metrics), notifier, done))
    }

    /// A handle with log lines only (no metrics, no webhook): for runs that nobody watches,
    /// such as library callers and benchmarks.
    pub fn detached() -> Self {
        Self::build(&OpsConfig::default(), None, None, None)
    }

    fn build(
        config: &OpsConfig,
        metrics: Option<Arc<Metrics>>,
        notifier: Option<Notifier>,
        done: Option<Receiver<()>>,
    ) -> Self {
        let host = host_name();
        OpsAlerts {
            inner: Arc::new(Inner {
                active: Mutex::new(Default::default()),
                metrics,
                notifier: Mutex::new(notifier),
                done: Mutex::new(done),
                instance: config.instance.clone().unwrap_or_else(|| host.clone()),
                host,
                source_outage: config.source_outage(),
                rule_errors: config.rule_errors.max(1),
                rule_window: config.rule_error_window(),
            }),
        }
    }

    /// Whether the condition is active now.
    #[cfg(test)]
    fn is_active(&self, condition: Condition) -> bool {
        self.inner
            .active
            .lock()
            .map(|a| a[condition.index()].is_some())
            .unwrap_or(false)
    }

    /// Raises a condition; does nothing while it is active. `detail` is a fixed text (never
    /// data from the input): it goes to logs and to the webhook.
    pub fn raise(&self, condition: Condition, detail: &'static str) {
        let since = now();
        {
            let Ok(mut active) = self.inner.active.lock() else {
                return;
            };
            let slot = &mut active[condition.index()];
            if slot.is_some() {
                return;
            }
            *slot = Some(Active {
                detail,
                since: since.clone(),
                started: Instant::now(),
            });
        }
        warn!(
            condition = condition.name(),
            detail, "operational alert raised"
        );
        self.count(condition, State::Raised, 1);
        self.notify(Notice {
            condition,
            state: State::Raised,
            detail,
            at: since.clone(),
            since,
            duration_secs: None,
            instance: self.inner.instance.clone(),
            host: self.inner.host.clone(),
        });
    }

    /// Clears a condition; does nothing while it is inactive.
    pub fn clear(&self, condition: Condition) {
        let was = {
            let Ok(mut active) = self.inner.active.lock() else {
                return;
            };
            active[condition.index()].take()
        };
        let Some(was) = was else {
            return;
        };
        let lasted = was.started.elapsed().as_secs();
        info!(
            condition = condition.name(),
            after_secs = lasted,
            "operational alert recovered"
        );
        self.count(condition, State::Recovered, 0);
        self.notify(Notice {
            condition,
            state: State::Recovered,
            detail: was.detail,
            since: was.since,
            at: now(),
            duration_secs: Some(lasted),
            instance: self.inner.instance.clone(),
            host: self.inner.host.clone(),
        });
    }

    /// Follows the source's availability: raises `source_unreachable` once it has been away
    /// longer than the threshold, clears it when it is back.
    pub fn observe_source(&self, unavailable_since: Option<Instant>) {
        match unavailable_since {
            Some(since) if since.elapsed() >= self.inner.source_outage => self.raise(
                Condition::SourceUnreachable,
                "the source has been unreachable for longer than the threshold",
            ),
            Some(_) => {}
            None => self.clear(Condition::SourceUnreachable),
        }
    }

    /// A watch over rule errors that raises and clears `rule_errors` on this handle.
    pub fn rule_error_watch(&self) -> RuleErrorWatch {
        RuleErrorWatch {
            ops: self.clone(),
            threshold: self.inner.rule_errors,
            window: self.inner.rule_window,
            recent: VecDeque::new(),
            last_error: None,
        }
    }

    /// Lets the webhook deliver what is queued, waiting at most `timeout`: called when a run
    /// ends, so that the notice of what stopped it still goes out.
    pub fn finish(&self, timeout: Duration) {
        if let Ok(mut n) = self.inner.notifier.lock() {
            n.take();
        }
        let done = self.inner.done.lock().ok().and_then(|mut d| d.take());
        if let Some(done) = done {
            let _ = done.recv_timeout(timeout);
        }
    }

    fn count(&self, condition: Condition, state: State, active: i64) {
        if let Some(m) = &self.inner.metrics {
            m.ops
                .ops_alerts
                .with_label_values(&[condition.name(), state.name()])
                .inc();
            m.ops
                .ops_condition_active
                .with_label_values(&[condition.name()])
                .set(active);
        }
    }

    fn notify(&self, notice: Notice) {
        if let Ok(n) = self.inner.notifier.lock() {
            if let Some(n) = n.as_ref() {
                n.send(notice);
            }
        }
    }
}

/// Turns rule errors into the `rule_errors` condition: raised when `threshold` errors fall
/// within `window`, cleared once a whole window passes without one. A single failing
/// evaluation (one odd event) is logged and counted by the rules stage but pages nobody.
#[derive(Debug)]
pub struct RuleErrorWatch {
    ops: OpsAlerts,
    threshold: u32,
    window: Duration,
    /// Times of the latest errors within the window (at most `threshold`).
    recent: VecDeque<Instant>,
    last_error: Option<Instant>,
}

impl RuleErrorWatch {
    /// Notes `errors` new rule errors now.
    pub fn record(&mut self, errors: u64) {
        if errors == 0 {
            return;
        }
        let now = Instant::now();
        self.last_error = Some(now);
        let keep = self.threshold as usize;
        for _ in 0..errors.min(keep as u64) {
            self.recent.push_back(now);
        }
        while self.recent.len() > keep {
            self.recent.pop_front();
        }
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= keep {
            self.ops.raise(
                Condition::RuleErrors,
                "rules keep failing; see cds_rule_errors_total by rule",
            );
        }
    }

    /// Clears the condition after a quiet window; called regularly, also without input.
    pub fn tick(&mut self) {
        if self.last_error.is_some_and(|t| t.elapsed() >= self.window) {
            self.last_error = None;
            self.recent.clear();
            self.ops.clear(Condition::RuleErrors);
        }
    }
}

/// The wall-clock time in whole seconds (RFC 3339), as people read it in a notification.
fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The host name, for notifications (`HOSTNAME`, else the kernel's, else `unknown`).
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counted(m: &Metrics, c: Condition, s: State) -> u64 {
        m.ops
            .ops_alerts
            .with_label_values(&[c.name(), s.name()])
            .get()
    }

    #[test]
    fn one_outage_is_one_raise_and_one_recovery() {
        let metrics = Arc::new(Metrics::new());
        let ops = OpsAlerts::start(&OpsConfig::default(), metrics.clone()).expect("start");
        let c = Condition::CheckpointFailed;
        ops.clear(c);
        assert_eq!(
            counted(&metrics, c, State::Recovered),
            0,
            "nothing to clear"
        );
        ops.raise(c, "x");
        ops.raise(c, "x");
        assert!(ops.is_active(c));
        assert_eq!(counted(&metrics, c, State::Raised), 1);
        let gauge = || {
            metrics
                .ops
                .ops_condition_active
                .with_label_values(&[c.name()])
                .get()
        };
        assert_eq!(gauge(), 1);
        ops.clone().clear(c);
        ops.clear(c);
        assert_eq!(counted(&metrics, c, State::Recovered), 1);
        assert_eq!(gauge(), 0);
        assert!(metrics
            .render()
            .contains("cds_ops_alerts_total{condition=\"rule_errors\",state=\"raised\"} 0"));
    }

    #[test]
    fn the_source_raises_only_after_the_threshold() {
        let config = OpsConfig {
            source_outage_secs: 3600,
            ..OpsConfig::default()
        };
        let ops = OpsAlerts::start(&config, Arc::new(Metrics::new())).expect("start");
        ops.observe_source(Some(Instant::now()));
        assert!(!ops.is_active(Condition::SourceUnreachable));
        let zero = OpsAlerts::start(
            &OpsConfig {
                source_outage_secs: 0,
                ..OpsConfig::default()
            },
            Arc::new(Metrics::new()),
        )
        .expect("start");
        zero.observe_source(Some(Instant::now()));
        assert!(zero.is_active(Condition::SourceUnreachable));
        zero.observe_source(None);
        assert!(!zero.is_active(Condition::SourceUnreachable));
    }

    #[test]
    fn rule_errors_raise_at_the_threshold_and_clear_after_a_quiet_window() {
        let config = OpsConfig {
            rule_errors: 3,
            rule_error_window_secs: 1,
            ..OpsConfig::default()
        };
        let ops = OpsAlerts::start(&config, Arc::new(Metrics::new())).expect("start");
        let mut watch = ops.rule_error_watch();
        watch.record(2);
        assert!(!ops.is_active(Condition::RuleErrors));
        watch.record(1);
        assert!(ops.is_active(Condition::RuleErrors));
        watch.tick();
        assert!(ops.is_active(Condition::RuleErrors), "not quiet yet");
        std::thread::sleep(Duration::from_millis(1100));
        watch.tick();
        assert!(!ops.is_active(Condition::RuleErrors));
    }
}
