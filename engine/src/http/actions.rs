//! Acting on alerts: `POST /api/alerts/{id}/ack` and the per-rule numbers a CDS committee
//! reads before it retires a noisy rule, `GET /api/rules/stats` (and the same rates in
//! `/metrics`).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::acks::{by_rule, AckRequest, Action, Latest, RuleAcks};
use super::auth::{Role, Token};
use super::read::{bad_request, error, latest_acks, unavailable, visible};
use super::HttpState;
use crate::metrics::Metrics;
use crate::sink::Container;

/// Sets the accept and override rate gauges from the acknowledgements (all alerts, every
/// scope).
pub fn publish_rates(metrics: &Metrics, latest: &Latest) {
    for (rule, n) in by_rule(latest, |_| true) {
        let acted = (n.accepted + n.overridden) as f64;
        if acted > 0.0 {
            let labels = [rule.as_str()];
            metrics
                .http
                .rule_accept_rate
                .with_label_values(&labels)
                .set(n.accepted as f64 / acted);
            metrics
                .http
                .rule_override_rate
                .with_label_values(&labels)
                .set(n.overridden as f64 / acted);
        }
    }
}

/// `POST /api/alerts/{id}/ack` with `{"action": "accepted"|"overridden"|"snoozed", "reason":
/// CODE, "minutes": N}`: a clinician in the alert's scope records what they did with it.
pub async fn ack(
    State(state): State<HttpState>,
    Extension(token): Extension<Token>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let request: AckRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        // A fixed text: a parser's message quotes the input.
        Err(_) => return bad_request("the body is not an acknowledgement".to_owned()),
    };
    match act(&state, &token, id, request).await {
        Ok((mut alert, ack)) => {
            alert["ack"] = json!(ack);
            Json(alert).into_response()
        }
        Err(r) => r,
    }
}

/// Records what a clinician (`token`) did with alert `id`, when the alert is in their scope:
/// the alert and the acknowledgement, or the answer that says why not. Shared by the API and
/// CDS Hooks feedback.
pub(super) async fn act(
    state: &HttpState,
    token: &Token,
    id: String,
    request: AckRequest,
) -> Result<(Value, super::acks::Ack), Response> {
    if token.role != Role::Clinician {
        return Err(error(
            StatusCode::FORBIDDEN,
            "only a clinician acts on alerts",
        ));
    }
    if let Err(e) = request.validate() {
        return Err(bad_request(e));
    }
    let Some(acks) = state.acks.clone() else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this process keeps no acknowledgements",
        ));
    };
    let Some(alert) = state.index.get(Container::Alerts, &id) else {
        return Err(error(StatusCode::NOT_FOUND, "no such alert"));
    };
    if !visible(token, &alert) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "this alert is outside your departments",
        ));
    }
    let mlmname = alert["mlmname"].as_str().unwrap_or("unknown").to_owned();
    let ack = match acks
        .record(&alert, &request, &token.name, chrono::Utc::now())
        .await
    {
        Ok(ack) => ack,
        Err(e) => return Err(unavailable(e)),
    };
    state
        .metrics
        .http
        .alert_acks
        .with_label_values(&[mlmname.as_str(), ack.action.as_str()])
        .inc();
    if ack.action != Action::Snoozed {
        match acks.latest().await {
            Ok(latest) => publish_rates(&state.metrics, &latest),
            Err(e) => tracing::error!(error = %e, "reading acknowledgements for metrics failed"),
        }
    }
    Ok(((*alert).clone(), ack))
}

/// One rule's line in `/api/rules/stats`.
#[derive(Debug, serde::Serialize)]
struct RuleStats {
    /// Alerts of the rule in the caller's scope.
    alerts: u64,
    #[serde(flatten)]
    acks: RuleAcks,
    /// Alerts nobody has acted on yet.
    unacknowledged: u64,
    /// accepted / (accepted + overridden); `null` until one was acted on.
    accept_rate: Option<f64>,
    /// overridden / (accepted + overridden).
    override_rate: Option<f64>,
    /// Engine-wide counters of the rule since this process started.
    evaluations: u64,
    fires: u64,
    suppressed: u64,
    errors: u64,
}

/// `GET /api/rules/stats`: per rule, alerts in the caller's scope, how clinicians acted on
/// them, and the engine's evaluation counters.
pub async fn stats(State(state): State<HttpState>, Extension(token): Extension<Token>) -> Response {
    if !token.sees_patients() {
        return error(
            StatusCode::FORBIDDEN,
            "rule statistics are for clinicians and admins",
        );
    }
    let alerts = state.index.all(Container::Alerts, |d| visible(&token, d));
    let acks = match latest_acks(&state).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut rules: BTreeMap<String, RuleStats> = BTreeMap::new();
    let m = &state.metrics;
    let counter = |vec: &prometheus::IntCounterVec, rule: &str| {
        vec.get_metric_with_label_values(&[rule])
            .map(|c| c.get())
            .unwrap_or(0)
    };
    for alert in &alerts {
        let rule = alert["mlmname"].as_str().unwrap_or("unknown");
        let entry = rules.entry(rule.to_owned()).or_insert_with(|| RuleStats {
            alerts: 0,
            acks: RuleAcks::default(),
            unacknowledged: 0,
            accept_rate: None,
            override_rate: None,
            evaluations: counter(&m.rules.rule_evaluations, rule),
            fires: counter(&m.rules.rule_fires, rule),
            suppressed: counter(&m.rules.rule_suppressed, rule),
            errors: counter(&m.rules.rule_errors, rule),
        });
        entry.alerts += 1;
        match alert["id"].as_str().and_then(|id| acks.get(id)) {
            Some(a) => match a.ack.action {
                Action::Accepted => entry.acks.accepted += 1,
                Action::Overridden => entry.acks.overridden += 1,
                Action::Snoozed => entry.acks.snoozed += 1,
            },
            None => entry.unacknowledged += 1,
        }
    }
    for s in rules.values_mut() {
        let acted = s.acks.accepted + s.acks.overridden;
        if acted > 0 {
            s.accept_rate = Some(s.acks.accepted as f64 / acted as f64);
            s.override_rate = Some(s.acks.overridden as f64 / acted as f64);
        }
    }
    Json(json!({ "rules": rules })).into_response()
}
