//! Delivery of notifications to a webhook, from a thread of its own.
//!
//! The pipeline only puts a notice on a bounded channel (and drops it, counted, when the
//! channel is full): a slow or unreachable webhook never holds a stage. The thread POSTs each
//! notice in order with retries and exponential backoff; a notice that still fails is logged
//! with a fixed message and counted, and the next one is tried.
//!
//! The payload is one JSON object that Slack and both kinds of Microsoft Teams webhooks read:
//!
//! - `text`: the whole message in one line. Slack incoming webhooks post it; Teams incoming
//!   webhooks (Office 365 connectors) require `text` or `summary` and show it.
//! - `@type` / `@context` / `summary` / `title` / `themeColor` / `sections[].facts`: a Teams
//!   MessageCard with the structured fields as facts (Slack ignores these keys).
//! - `type: "message"` and `attachments[0]` with `contentType:
//!   application/vnd.microsoft.card.adaptive`: the Adaptive Card that Teams Workflows webhooks
//!   ("When a Teams webhook request is received") post. The same attachment carries Slack's
//!   legacy attachment keys (`fallback`, `color`, `fields`), so Slack shows it as a coloured
//!   block with the fields, and Teams ignores those keys.
//! - `cds`: the fields as plain JSON for any other receiver (`condition`, `state`, `detail`,
//!   `since`, `at`, `duration_secs`, `instance`, `host`).

use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tracing::warn;

use super::{Condition, OpsError, State};
use crate::metrics::Metrics;
use crate::support::Backoff;

/// How many notices may wait for delivery; more are dropped (counted) rather than held.
const QUEUE: usize = 64;

/// Longest backoff between two attempts of one notice.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// One notification, as the thread delivers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub condition: Condition,
    pub state: State,
    pub detail: &'static str,
    /// When the condition was raised (RFC 3339).
    pub since: String,
    /// When this notice was made (RFC 3339).
    pub at: String,
    /// How long the condition lasted (recovery notices only).
    pub duration_secs: Option<u64>,
    pub instance: String,
    pub host: String,
}

/// The sending side: cheap to share, never blocks.
#[derive(Debug)]
pub struct Notifier {
    tx: SyncSender<Notice>,
    metrics: Option<Arc<Metrics>>,
}

/// How the thread delivers.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub url: String,
    pub retries: u32,
    pub backoff: Duration,
    pub timeout: Duration,
}

impl Notifier {
    /// Starts the delivery thread; returns the sender and a receiver that is told when the
    /// thread has delivered everything and stopped (after every sender is gone).
    pub fn start(
        delivery: Delivery,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<(Notifier, Receiver<()>), OpsError> {
        let url = reqwest::Url::parse(&delivery.url).map_err(|_| OpsError::WebhookUrl)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(OpsError::WebhookUrl);
        }
        let client = reqwest::Client::builder()
            .timeout(delivery.timeout)
            .build()
            .map_err(|e| OpsError::Client(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| OpsError::Client(e.to_string()))?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Notice>(QUEUE);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let thread_metrics = metrics.clone();
        std::thread::Builder::new()
            .name("cds-ops-webhook".into())
            .spawn(move || {
                for notice in rx {
                    let body = payload(&notice).to_string();
                    let delivered = runtime.block_on(post(&client, &url, body, &delivery));
                    if let Some(m) = &thread_metrics {
                        let result = if delivered { "delivered" } else { "failed" };
                        m.ops
                            .ops_webhook_notifications
                            .with_label_values(&[result])
                            .inc();
                    }
                    if !delivered {
                        warn!(
                            condition = notice.condition.name(),
                            state = notice.state.name(),
                            "operational alert webhook unreachable; notification not delivered"
                        );
                    }
                }
                let _ = done_tx.send(());
            })
            .map_err(|e| OpsError::Client(e.to_string()))?;
        Ok((Notifier { tx, metrics }, done_rx))
    }

    /// Queues a notice; a full queue drops it (counted and logged), never waits.
    pub fn send(&self, notice: Notice) {
        match self.tx.try_send(notice) {
            Ok(()) => {}
            Err(TrySendError::Full(n) | TrySendError::Disconnected(n)) => {
                if let Some(m) = &self.metrics {
                    m.ops
                        .ops_webhook_notifications
                        .with_label_values(&["dropped"])
                        .inc();
                }
                warn!(
                    condition = n.condition.name(),
                    state = n.state.name(),
                    "operational alert notification dropped: the webhook queue is full"
                );
            }
        }
    }
}

/// POSTs one body with retries; true once the webhook answered 2xx. Client errors other than
/// 408 and 429 are not retried (a wrong URL or a refused payload stays wrong).
async fn post(client: &reqwest::Client, url: &reqwest::Url, body: String, d: &Delivery) -> bool {
    let backoff = Backoff {
        first: d.backoff,
        max: MAX_BACKOFF,
        retries: d.retries,
    };
    for attempt in 0..=d.retries {
        if attempt > 0 {
            tokio::time::sleep(backoff.delay(attempt - 1)).await;
        }
        let sent = client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return true,
            Ok(r) => {
                let status = r.status().as_u16();
                if (400..500).contains(&status) && status != 408 && status != 429 {
                    return false;
                }
            }
            Err(_) => {}
        }
    }
    false
}

/// The JSON body of a notice (see the module documentation for why each key is there).
pub fn payload(n: &Notice) -> Value {
    let condition = n.condition.name();
    let (verb, theme, slack, adaptive) = match n.state {
        State::Raised => ("RAISED", "D13438", "danger", "Attention"),
        State::Recovered => ("RECOVERED", "2EB886", "good", "Good"),
    };
    let title = format!("cds {verb}: {condition}");
    let lasted = n
        .duration_secs
        .map(|s| format!(" after {s} s"))
        .unwrap_or_default();
    let text = match n.state {
        State::Raised => format!(
            "{title} on {} ({}): {}. Since {}.",
            n.instance, n.host, n.detail, n.since
        ),
        State::Recovered => format!(
            "{title} on {} ({}): {}{lasted}. It was raised at {}: {}.",
            n.instance,
            n.host,
            n.condition.recovered(),
            n.since,
            n.detail
        ),
    };
    let mut facts = vec![
        ("condition", condition.to_owned()),
        ("state", n.state.name().to_owned()),
        ("detail", n.detail.to_owned()),
        ("since", n.since.clone()),
        ("at", n.at.clone()),
        ("instance", n.instance.clone()),
        ("host", n.host.clone()),
    ];
    if let Some(s) = n.duration_secs {
        facts.push(("duration_secs", s.to_string()));
    }
    let mut cds = json!({
        "condition": condition,
        "state": n.state.name(),
        "detail": n.detail,
        "since": n.since,
        "at": n.at,
        "instance": n.instance,
        "host": n.host,
    });
    if let (Some(s), Some(map)) = (n.duration_secs, cds.as_object_mut()) {
        map.insert("duration_secs".into(), json!(s));
    }
    json!({
        "text": text,
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": title,
        "title": title,
        "themeColor": theme,
        "sections": [{
            "facts": facts.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
        }],
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "type": "AdaptiveCard",
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "version": "1.4",
                "body": [
                    {"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "color": adaptive, "wrap": true},
                    {"type": "TextBlock", "text": text, "wrap": true},
                    {"type": "FactSet", "facts": facts.iter().map(|(k, v)| json!({"title": k, "value": v})).collect::<Vec<_>>()},
                ],
            },
            "fallback": text,
            "color": slack,
            "fields": facts.iter().map(|(k, v)| json!({"title": k, "value": v, "short": true})).collect::<Vec<_>>(),
        }],
        "cds": cds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(state: State) -> Notice {
        Notice {
            condition: Condition::SourceUnreachable,
            state,
            detail: "the source has been unreachable for longer than the threshold",
            since: "2026-01-01T00:00:00Z".into(),
            at: "2026-01-01T00:01:00Z".into(),
            duration_secs: (state == State::Recovered).then_some(60),
            instance: "cds-1".into(),
            host: "host-1".into(),
        }
    }

    #[test]
    fn the_payload_speaks_slack_and_both_kinds_of_teams_webhook() {
        let p = payload(&notice(State::Raised));
        let text = p["text"].as_str().expect("text");
        assert!(text.contains("RAISED") && text.contains("source_unreachable"));
        assert_eq!(p["@type"], "MessageCard");
        assert_eq!(p["summary"], "cds RAISED: source_unreachable");
        assert_eq!(p["type"], "message");
        let card = &p["attachments"][0];
        assert_eq!(
            card["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(card["content"]["type"], "AdaptiveCard");
        assert_eq!(card["color"], "danger");
        assert_eq!(p["cds"]["condition"], "source_unreachable");
        assert_eq!(p["cds"]["state"], "raised");
        assert!(p["cds"].get("duration_secs").is_none());

        let r = payload(&notice(State::Recovered));
        assert_eq!(r["cds"]["state"], "recovered");
        assert_eq!(r["cds"]["duration_secs"], 60);
        assert!(r["text"].as_str().expect("text").contains("RECOVERED"));
    }

    #[test]
    fn a_bad_url_is_refused_without_echoing_it() {
        let d = Delivery {
            url: "ftp://secret@example".into(),
            retries: 0,
            backoff: Duration::ZERO,
            timeout: Duration::from_secs(1),
        };
        let e = Notifier::start(d, None).expect_err("not http");
        assert!(!e.to_string().contains("secret"));
    }
}
