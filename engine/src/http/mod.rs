//! HTTP: the KPI and alert API, the live feed, the occupancy dashboard, and health and metrics.
//!
//! Every route but `/healthz`, `/readyz` and `/metrics` needs a bearer token with a role
//! ([`auth`]); what a route returns is filtered by the token's hospitals and departments, and
//! every authenticated access is written to the audit log ([`audit`]). Documents carry only
//! pseudonymised patient keys, so nothing served here identifies a patient.

pub mod acks;
mod actions;
mod api;
pub mod audit;
pub mod auth;
pub mod feed;
mod hooks;

pub use actions::publish_rates;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::model::Pseudonymiser;
use crate::sink::sqlite::SqliteConfig;
use acks::AckStore;
use audit::Audit;
use auth::Tokens;
use feed::LiveFeed;

/// What the handlers read.
#[derive(Debug, Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    /// Set once the engine has started consuming (no checkpoint to load yet).
    pub ready: Arc<AtomicBool>,
    pub tokens: Arc<Tokens>,
    /// The store the API reads (the SQLite sink's file).
    pub store: Option<SqliteConfig>,
    /// The numbered live feed for `/api/alerts/stream`.
    pub feed: Option<LiveFeed>,
    pub audit: Audit,
    /// Where clinicians' acknowledgements are kept.
    pub acks: Option<AckStore>,
    /// Matches an EHR's patient identifier (CDS Hooks) to the engine's pseudonyms.
    pub pseudonyms: Option<Pseudonymiser>,
}

/// The router of every route.
pub fn router(state: HttpState) -> Router {
    let protected = Router::new()
        .route("/", get(api::dashboard))
        .route("/api/kpis", get(api::kpis))
        .route("/api/alerts", get(api::alerts))
        .route("/api/alerts/stream", get(api::stream))
        .route("/api/alerts/{id}/ack", post(actions::ack))
        .route("/api/rules/stats", get(actions::stats))
        .route("/cds-services", get(hooks::discovery))
        .route(
            &format!("/cds-services/{}", hooks::SERVICE_ID),
            post(hooks::patient_view),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(protected)
        .with_state(state)
}

/// The bearer token of a request: the `Authorization` header, or `token=` in the query (the
/// dashboard page and `EventSource` cannot set headers).
fn bearer(req: &Request) -> Option<String> {
    if let Some(h) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return h.strip_prefix("Bearer ").map(|t| t.trim().to_owned());
    }
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(str::to_owned)
}

/// The query without the token, for the audit log.
fn query_without_token(req: &Request) -> String {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("token="))
        .collect::<Vec<_>>()
        .join("&")
}

async fn authenticate(State(state): State<HttpState>, mut req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let route = req.uri().path().to_owned();
    let query = query_without_token(&req);
    let token = bearer(&req).and_then(|b| state.tokens.authenticate(&b).cloned());
    let Some(token) = token else {
        state.audit.record("-", "-", &method, &route, &query, 401);
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is required\n",
        )
            .into_response();
    };
    let (name, role) = (
        token.name.clone(),
        format!("{:?}", token.role).to_lowercase(),
    );
    req.extensions_mut().insert(token);
    let response = next.run(req).await;
    state.audit.record(
        &name,
        &role,
        &method,
        &route,
        &query,
        response.status().as_u16(),
    );
    response
}

/// Ready once the engine consumes, and while no stage has stopped advancing with input in hand
/// (the failure contract: silence is never healthy); a stall names the stage.
async fn readyz(State(state): State<HttpState>) -> Response {
    if !state.ready.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response();
    }
    let stalls = state.metrics.stages.stalls();
    if stalls.is_empty() {
        return (StatusCode::OK, "ready\n").into_response();
    }
    let text: String = stalls
        .iter()
        .map(|s| {
            format!(
                "stalled: {} (no progress for {} s with input in hand)\n",
                s.stage,
                s.silent_for.as_secs()
            )
        })
        .collect();
    (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// Binds the address (port 0 picks a free port) and returns the listener and its address.
pub async fn bind(addr: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
