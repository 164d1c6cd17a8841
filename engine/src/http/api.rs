//! `/api/kpis`, `/api/alerts`, `/api/alerts/stream` and the dashboard page, each filtered by the
//! caller's role and scope.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::stream;
use serde_json::json;

use super::auth::Token;
use super::feed::FeedEvent;
use super::read::{bad_request, latest_acks, page, page_response, visible, Listing};
use super::HttpState;
use crate::sink::Container;

/// The dashboard page (HTML, CSS and JavaScript in one file: no CDN, works offline).
const DASHBOARD: &str = include_str!("dashboard.html");

pub async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD)
}

/// `GET /api/kpis?hospital=&department=&kind=&type=&since=&limit=&cursor=`: KPI documents
/// in id order, one page at a time.
pub async fn kpis(
    State(state): State<HttpState>,
    Extension(token): Extension<Token>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let listing = match Listing::parse(&q) {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    let kind = q.get("type");
    let found = page(&state, &token, Container::Kpis, &listing, |d| {
        kind.is_none_or(|k| d["type"].as_str() == Some(k))
    });
    let docs = found.documents.iter().map(|d| (**d).clone()).collect();
    page_response("/api/kpis", &q, docs, found.next)
}

fn severity_rank(s: &str) -> u8 {
    match s {
        "critical" | "high" => 2,
        "warning" | "medium" => 1,
        _ => 0,
    }
}

/// `GET /api/alerts?hospital=&department=&kind=&since=&mlmname=&min_severity=&limit=&cursor=`:
/// alerts in id order, one page at a time, each with its newest acknowledgement.
pub async fn alerts(
    State(state): State<HttpState>,
    Extension(token): Extension<Token>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !token.sees_patients() {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({ "error": "this role sees no patient-level alerts" })),
        )
            .into_response();
    }
    let listing = match Listing::parse(&q) {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    let min = q.get("min_severity").map(|s| severity_rank(s)).unwrap_or(0);
    let mlmname = q.get("mlmname");
    let acks = match latest_acks(&state).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let found = page(&state, &token, Container::Alerts, &listing, |d| {
        mlmname.is_none_or(|m| d["mlmname"].as_str() == Some(m))
            && severity_rank(d["severity"].as_str().unwrap_or_default()) >= min
    });
    let docs = found
        .documents
        .iter()
        .map(|d| {
            let mut d = (**d).clone();
            // What a clinician did with the alert travels with it (who, when, why).
            if let Some(a) = d["id"].as_str().and_then(|id| acks.get(id)) {
                d["ack"] = json!(a.ack);
            }
            d
        })
        .collect();
    page_response("/api/alerts", &q, docs, found.next)
}

fn sse_event(e: &FeedEvent) -> Event {
    let kind = match e.written.container {
        Container::Kpis => "kpi",
        Container::Alerts => "alert",
    };
    Event::default()
        .id(e.id.to_string())
        .event(kind)
        .data(e.written.document.body.to_string())
}

/// `GET /api/alerts/stream`: new alerts and KPI changes as server-sent events. A client that
/// reconnects with `Last-Event-ID` (header, or `last_event_id` in the query) first receives
/// every retained event after that id, then the live ones; each exactly once. The retained
/// events are read from a shared snapshot and rendered one at a time as the client reads; the
/// number of open streams is bounded per token and in total (429 beyond).
pub async fn stream(
    State(state): State<HttpState>,
    Extension(token): Extension<Token>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(feed) = state.feed.clone() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no live feed in this process\n",
        )
            .into_response();
    };
    let slot = match state.streams.acquire(&token.name) {
        Ok(s) => s,
        Err(e) => {
            state.http_metrics.streams_refused.inc();
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(axum::http::header::RETRY_AFTER, "10")],
                format!("{e}\n"),
            )
                .into_response();
        }
    };
    let after: u64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(q.get("last_event_id").map(String::as_str))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let (backlog, rx) = feed.resume(after);
    let last_sent = backlog.events().last().map_or(after, |e| e.id);
    let shown = move |e: &FeedEvent| visible(&token, &e.written.document.body);
    let shown_live = shown.clone();
    let replay = stream::unfold((backlog, 0usize), move |(backlog, mut i)| {
        let shown = shown.clone();
        async move {
            while let Some(e) = backlog.get(i) {
                i += 1;
                if shown(e) {
                    let event = sse_event(e);
                    return Some((Ok::<Event, Infallible>(event), (backlog, i)));
                }
            }
            None
        }
    });
    let live = stream::unfold((rx, last_sent, slot), move |(mut rx, mut last, slot)| {
        let shown = shown_live.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok(e) if e.id <= last => continue,
                    Ok(e) => {
                        last = e.id;
                        if shown(&e) {
                            return Some((
                                Ok::<Event, Infallible>(sse_event(&e)),
                                (rx, last, slot),
                            ));
                        }
                    }
                    // A client too slow for the live rate reconnects with its last id.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return None,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    use futures_util::StreamExt;
    Sse::new(replay.chain(live))
        .keep_alive(KeepAlive::default())
        .into_response()
}
