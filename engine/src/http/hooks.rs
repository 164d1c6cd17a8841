//! HL7 CDS Hooks 2.0: an EHR asks, when a clinician opens a patient's chart (`patient-view`),
//! which of our alerts are active for that patient, and shows them as cards inside the chart.
//!
//! The EHR names the patient by its own identifier (`context.patientId`); the engine only knows
//! pseudonyms, so the identifier is pseudonymised with the engine's key and matched against
//! the alerts' `patient`. The identifier is neither logged nor echoed back: every error body
//! is a fixed text. Active means not
//! accepted or overridden and not under a running snooze.
//!
//! Each card's `uuid` is its alert's id written as a UUID; the EHR's feedback on a card (accepted, overridden
//! with a reason) is recorded as the clinician's acknowledgement of that alert, so it counts in
//! the rule's accept and override rates like an action taken in the API.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use super::acks::{AckRequest, Action};
use super::auth::Token;
use super::read::{bad_request, latest_acks, visible};
use super::HttpState;
use crate::sink::Container;

/// The id of our one service, the last segment of its URL.
pub const SERVICE_ID: &str = "cds-patient-alerts";
/// The service's route.
pub const SERVICE_PATH: &str = "/cds-services/cds-patient-alerts";
/// Where the EHR sends what the clinician did with the service's cards.
pub const FEEDBACK_PATH: &str = "/cds-services/cds-patient-alerts/feedback";

/// The prefetch template: the Patient in view, whose identifiers (an MRN) may be what the
/// streams call the patient when the EHR's `patientId` is a FHIR resource id.
const PATIENT_PREFETCH: &str = "Patient/{{context.patientId}}";

/// `GET /cds-services`: discovery.
pub async fn discovery() -> Json<Value> {
    Json(json!({
        "services": [{
            "hook": "patient-view",
            "id": SERVICE_ID,
            "title": "cds active alerts",
            "description": "Active clinical alerts (NEWS2, qSOFA, SIRS, hypoxia, long stay, readmission, ...) raised by the cds stream processor for the patient in view.",
            "prefetch": { "patient": PATIENT_PREFETCH },
            "usageRequirements": "A bearer token of a clinician whose departments include the patient's, or a JWT signed by a configured EHR client (CDS Hooks 2.0 client authentication). The prefetched Patient's identifiers are matched as well as context.patientId, so that an EHR whose FHIR ids are not the streams' patient identifiers still finds its patient's alerts."
        }]
    }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HookRequest {
    hook: String,
    #[allow(dead_code)]
    hook_instance: String,
    context: PatientViewContext,
    #[serde(default)]
    prefetch: Option<Prefetch>,
}

/// What the EHR prefetched by the template.
#[derive(Debug, Default, Deserialize)]
struct Prefetch {
    #[serde(default)]
    patient: Option<PrefetchedPatient>,
}

/// The parts of a FHIR Patient the service reads.
#[derive(Debug, Default, Deserialize)]
struct PrefetchedPatient {
    #[serde(default)]
    identifier: Vec<PatientIdentifier>,
}

#[derive(Debug, Default, Deserialize)]
struct PatientIdentifier {
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    value: Option<String>,
}

/// The most prefetched identifiers looked at.
const MAX_IDENTIFIERS: usize = 16;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PatientViewContext {
    patient_id: String,
    #[allow(dead_code)]
    #[serde(default)]
    user_id: Option<String>,
}

fn severity_rank(card: &Value) -> u8 {
    match card["indicator"].as_str() {
        Some("critical") => 2,
        Some("warning") => 1,
        _ => 0,
    }
}

/// `POST /cds-services/cds-patient-alerts`: the patient's active alerts as CDS Hooks cards,
/// most severe first, newest first within a severity.
pub async fn patient_view(
    State(state): State<HttpState>,
    Extension(token): Extension<Token>,
    body: Bytes,
) -> Response {
    if !token.sees_patients() {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({ "error": "this role sees no patient-level alerts" })),
        )
            .into_response();
    }
    let request: HookRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        // Fixed texts: a parser's message quotes the offending input, which may be an MRN.
        Err(_) => {
            return bad_request(
                "not a CDS Hooks patient-view request (hook, hookInstance and context.patientId are required)"
                    .to_owned(),
            )
        }
    };
    if request.hook != "patient-view" {
        return bad_request("this service answers the patient-view hook only".to_owned());
    }
    let Some(pseudonyms) = state.pseudonyms.as_ref() else {
        return bad_request("this process cannot match patients".to_owned());
    };
    // The patient's pseudonyms: of `patientId`, and of the prefetched Patient's identifiers of
    // the configured systems (an MRN; never another system's value, which may be another
    // patient's id in the streams).
    let systems = &state.hooks_patient_systems;
    let identifiers = request
        .prefetch
        .and_then(|p| p.patient)
        .map(|p| p.identifier)
        .unwrap_or_default();
    let patients: Vec<String> = std::iter::once(request.context.patient_id)
        .chain(
            identifiers
                .into_iter()
                .filter(|i| i.system.as_ref().is_some_and(|s| systems.contains(s)))
                .take(MAX_IDENTIFIERS)
                .filter_map(|i| i.value),
        )
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty())
        .map(|id| pseudonyms.pseudonym(&id))
        .collect();
    let alerts = state.index.of_patients(Container::Alerts, &patients);
    let acks = match latest_acks(&state).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let now = chrono::Utc::now();
    let mut found: Vec<(String, Value)> = alerts
        .into_iter()
        // The index's map by patient, checked again against the document itself.
        .filter(|a| {
            a["patient"]
                .as_str()
                .is_some_and(|p| patients.iter().any(|mine| mine == p))
                && visible(&token, a)
        })
        .filter(|a| {
            a["id"]
                .as_str()
                .and_then(|id| acks.get(id))
                .is_none_or(|a| !a.ack.is_resolved_at(now))
        })
        .map(|a| {
            let time = a["event_time"].as_str().unwrap_or_default().to_owned();
            let mut card = a["card"].clone();
            card["overrideReasons"] = json!([
                { "code": "not-clinically-relevant", "display": "Not clinically relevant" },
                { "code": "already-treated", "display": "Already being treated" },
                { "code": "data-error", "display": "Measurement or data error" }
            ]);
            (time, card)
        })
        .collect();
    found.sort_by(|(ta, a), (tb, b)| {
        severity_rank(b)
            .cmp(&severity_rank(a))
            .then_with(|| tb.cmp(ta))
    });
    let cards: Vec<Value> = found.into_iter().map(|(_, c)| c).collect();
    Json(json!({ "cards": cards })).into_response()
}

/// The body of a feedback call (CDS Hooks 2.0).
#[derive(Deserialize)]
struct Feedback {
    feedback: Vec<CardFeedback>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CardFeedback {
    /// The card's `uuid`: the alert's id written as a UUID.
    card: String,
    outcome: String,
    #[serde(default)]
    override_reason: Option<OverrideReason>,
}

#[derive(Deserialize)]
struct OverrideReason {
    /// A coding; its code is kept. The `userComment` beside it is not read: free text invites
    /// patient details into a table meant to hold none.
    #[serde(default)]
    reason: Option<Coding>,
}

#[derive(Deserialize)]
struct Coding {
    code: String,
}

/// `POST /cds-services/cds-patient-alerts/feedback`: what the clinician did with each card,
/// recorded as their acknowledgement of its alert.
pub async fn feedback(
    State(state): State<HttpState>,
    Extension(token): Extension<Token>,
    body: Bytes,
) -> Response {
    let Ok(request) = serde_json::from_slice::<Feedback>(&body) else {
        return bad_request(
            "not CDS Hooks feedback (feedback: [{card, outcome, overrideReason}])".to_owned(),
        );
    };
    let mut recorded = 0;
    for f in request.feedback {
        let action = match f.outcome.as_str() {
            "accepted" => Action::Accepted,
            "overridden" => Action::Overridden,
            _ => return bad_request("outcome is accepted or overridden".to_owned()),
        };
        let reason = f
            .override_reason
            .and_then(|o| o.reason)
            .map(|c| c.code)
            .unwrap_or_else(|| format!("{}-in-ehr", action.as_str()));
        let ack = AckRequest {
            action,
            reason,
            minutes: None,
        };
        let alert = f.card.replace('-', "");
        if let Err(answer) = super::actions::act(&state, &token, alert, ack).await {
            return answer;
        }
        recorded += 1;
    }
    Json(json!({ "recorded": recorded })).into_response()
}
