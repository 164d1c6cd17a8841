//! What the routes share to read documents and acknowledgements: the serving index, paging,
//! the filters every listing takes, the visibility rule of a token, and the error responses
//! they answer with.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, FixedOffset};
use serde_json::{json, Value};

use super::acks::Latest;
use super::auth::Token;
use super::HttpState;
use crate::model::parse_time;
use crate::sink::{Container, Page};

/// Documents in one page when the request names no `limit`.
pub const DEFAULT_LIMIT: usize = 1_000;
/// The largest `limit` a request may ask for.
pub const MAX_LIMIT: usize = 10_000;

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

/// The filters and paging every listing takes: `hospital`, `department`, `kind` (the
/// department's kind in the departments file), `since` (RFC 3339: alerts by `event_time`, KPI
/// documents by `as_of`), `limit` and `cursor`.
pub(super) struct Listing {
    hospital: Option<i64>,
    department: Option<String>,
    kind: Option<String>,
    since: Option<DateTime<FixedOffset>>,
    pub limit: usize,
    pub cursor: Option<String>,
}

impl Listing {
    pub fn parse(q: &HashMap<String, String>) -> Result<Self, String> {
        let hospital = match q.get("hospital") {
            Some(h) => Some(
                h.parse()
                    .map_err(|_| "hospital is not a number".to_owned())?,
            ),
            None => None,
        };
        let since = match q.get("since") {
            Some(s) => {
                Some(parse_time(s).ok_or_else(|| "since is not an RFC 3339 time".to_owned())?)
            }
            None => None,
        };
        let limit = match q.get("limit") {
            Some(l) => l
                .parse::<usize>()
                .ok()
                .filter(|l| (1..=MAX_LIMIT).contains(l))
                .ok_or_else(|| format!("limit is a number from 1 to {MAX_LIMIT}"))?,
            None => DEFAULT_LIMIT,
        };
        Ok(Listing {
            hospital,
            department: q.get("department").cloned(),
            kind: q.get("kind").map(|k| k.to_lowercase()),
            since,
            limit,
            cursor: q.get("cursor").filter(|c| !c.is_empty()).cloned(),
        })
    }

    /// Whether a document passes the filters (`network` knows each department's kind).
    pub fn keeps(&self, doc: &Value, network: &crate::model::Network) -> bool {
        let hospital = doc["hospital_id"].as_i64();
        let department = doc["department"].as_str();
        self.hospital.is_none_or(|h| hospital == Some(h))
            && self
                .department
                .as_deref()
                .is_none_or(|d| department == Some(d))
            && self.kind.as_deref().is_none_or(|k| {
                hospital
                    .zip(department)
                    .and_then(|(h, d)| network.department_named(h, d))
                    .is_some_and(|d| d.kind == k)
            })
            && self.since.is_none_or(|s| {
                let field = if doc["type"] == "alert" {
                    "event_time"
                } else {
                    "as_of"
                };
                doc[field]
                    .as_str()
                    .and_then(parse_time)
                    .is_some_and(|t| t >= s)
            })
    }
}

/// One page of a container's documents that `token` may see and `keep` accepts.
pub(super) fn page(
    state: &HttpState,
    token: &Token,
    container: Container,
    listing: &Listing,
    keep: impl Fn(&Value) -> bool,
) -> Page {
    let network = state.network.current();
    state
        .index
        .page(container, listing.cursor.as_deref(), listing.limit, |d| {
            visible(token, d) && listing.keeps(d, &network) && keep(d)
        })
}

/// A page as the answer: the documents as a JSON array and, when there are more, a `Link`
/// header to the next page (RFC 8288, `rel="next"`: the same query with the next `cursor`).
pub(super) fn page_response(
    path: &str,
    q: &HashMap<String, String>,
    documents: Vec<Value>,
    next: Option<String>,
) -> Response {
    let mut response = Json(documents).into_response();
    if let Some(next) = next {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        let mut pairs: Vec<(&String, &String)> = q
            .iter()
            .filter(|(k, _)| k.as_str() != "cursor" && k.as_str() != "token")
            .collect();
        pairs.sort();
        for (k, v) in pairs {
            query.append_pair(k, v);
        }
        query.append_pair("cursor", &next);
        let link = format!("<{path}?{}>; rel=\"next\"", query.finish());
        if let Ok(v) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, v);
        }
    }
    response
}

/// The newest acknowledgement of every alert (empty when the process keeps none).
pub(super) async fn latest_acks(state: &HttpState) -> Result<Arc<Latest>, Response> {
    let Some(acks) = state.acks.clone() else {
        return Ok(Arc::default());
    };
    acks.latest().await.map_err(unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_link_keeps_the_query_and_carries_any_id() {
        let q: HashMap<String, String> = [
            ("department", "A&E 2"),
            ("limit", "2"),
            ("token", "secret"),
            ("cursor", "old"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let id = "occupancy:7:A&E 2/Ward #3?";
        let response = page_response("/api/kpis", &q, Vec::new(), Some(id.to_owned()));
        let link = response
            .headers()
            .get(header::LINK)
            .and_then(|v| v.to_str().ok())
            .expect("a Link header");
        let target = link
            .strip_prefix('<')
            .and_then(|l| l.split_once(">; rel=\"next\""))
            .map(|(t, _)| t)
            .expect("rel=next");
        let (path, query) = target.split_once('?').expect("a query");
        assert_eq!(path, "/api/kpis");
        let next: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(next["cursor"], id, "the cursor comes back as it was");
        assert_eq!(next["department"], "A&E 2");
        assert_eq!(next["limit"], "2");
        assert!(!next.contains_key("token"), "the token stays out of links");
        let last = page_response("/api/kpis", &q, Vec::new(), None);
        assert!(
            last.headers().get(header::LINK).is_none(),
            "the last page has none"
        );
    }
}
