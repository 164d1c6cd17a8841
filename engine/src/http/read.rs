//! What the routes share to read documents and acknowledgements: the store reads, the
//! visibility rule of a token, and the error responses they answer with.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::acks::Ack;
use super::auth::Token;
use super::HttpState;
use crate::sink::sqlite::SqliteSink;
use crate::sink::Container;

pub(super) fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

pub(super) fn unavailable(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "acknowledgement store failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the acknowledgement store is unavailable",
    )
}

pub(super) fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}

/// Whether a document may be shown to `token`.
pub(super) fn visible(token: &Token, doc: &Value) -> bool {
    let hospital = doc["hospital_id"].as_i64().unwrap_or(0);
    let department = doc["department"].as_str();
    let patient_level = doc["type"] == "alert" || doc["type"] == "patient_los";
    // A patient-level document of no single department is no department's to show: only a
    // reader of whole hospitals sees it.
    if patient_level && department.is_none() && !token.sees_every_department() {
        return false;
    }
    token.sees(hospital, department) && (!patient_level || token.sees_patients())
}

pub(super) async fn read(state: &HttpState, container: Container) -> Result<Vec<Value>, Response> {
    let Some(store) = state.store.clone() else {
        return Ok(Vec::new());
    };
    if !store.path.exists() {
        return Ok(Vec::new());
    }
    tokio::task::spawn_blocking(move || SqliteSink::read_all(&store, container))
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())?
        .map_err(|e| {
            tracing::error!(error = %e, "reading the store failed");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        })
}

/// The newest acknowledgement of every alert (empty when the process keeps none).
pub(super) async fn latest_acks(state: &HttpState) -> Result<BTreeMap<String, Ack>, Response> {
    let Some(acks) = state.acks.clone() else {
        return Ok(BTreeMap::new());
    };
    tokio::task::spawn_blocking(move || acks.latest())
        .await
        .map_err(unavailable)?
        .map_err(unavailable)
}
