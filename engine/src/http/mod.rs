//! HTTP: the KPI and alert API, the live feed, the occupancy dashboard, and health and metrics.
//!
//! Every route but `/healthz`, `/readyz` and `/metrics` needs a bearer token with a role
//! ([`auth`]); what a route returns is filtered by the token's hospitals and departments, and
//! every authenticated access is written to the audit log ([`audit`]). An EHR may instead sign
//! its CDS Hooks calls with its own key, as the specification has it ([`jwt`]). Documents carry only
//! pseudonymised patient keys, so nothing served here identifies a patient.
//!
//! Bounded against clients that do not play by the rules ([`HttpLimits`]): a connection
//! limit, a header-read timeout, a request timeout, and caps on live streams.

pub mod acks;
mod actions;
mod api;
pub mod audit;
pub mod auth;
pub mod feed;
pub use wards::Trends;
mod hooks;
mod jwt;
mod openapi;
mod read;
mod reports;
mod wards;

pub use actions::publish_rates;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use prometheus::{IntCounter, IntCounterVec, IntGauge};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::metrics::Metrics;
use crate::model::Pseudonymiser;
use acks::AckStore;
use audit::Audit;
use auth::{Sessions, Tokens, SESSION_COOKIE, SESSION_TTL};
use feed::{LiveFeed, StreamSlots};

/// The route of the live stream: the only API route that takes `?token=` (an `EventSource`
/// cannot set headers) and the only one without a request timeout.
const STREAM_ROUTE: &str = "/api/alerts/stream";

/// The bounds of the HTTP server: what a client that opens connections and never finishes a
/// request, or never reads an answer, can hold.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Open connections at most; beyond, new ones are answered 503 and closed.
    pub max_connections: usize,
    /// A request's headers must arrive within this time (also the keep-alive idle limit).
    pub header_read_timeout: Duration,
    /// A request (other than the live stream) must be answered within this time.
    pub request_timeout: Duration,
    /// Live streams per token at most.
    pub streams_per_token: usize,
    /// Live streams in total at most.
    pub streams_total: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 512,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            streams_per_token: 4,
            streams_total: 256,
        }
    }
}

/// The HTTP server's own metrics.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    /// Connections refused at the connection limit.
    pub connections_refused: IntCounter,
    pub connections_open: IntGauge,
    /// Requests answered 503 at the request timeout.
    pub request_timeouts: IntCounter,
    /// Live streams refused at the per-token or total limit.
    pub streams_refused: IntCounter,
    /// CDS Hooks client JWTs refused, by reason.
    pub hooks_jwt_refused: IntCounterVec,
}

impl HttpMetrics {
    /// The counters, registered with `metrics` (so `/metrics` shows them) along with the audit
    /// log's.
    pub fn register(metrics: &Metrics, audit: &Audit) -> Self {
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("metric: {e}"));
            metrics.register(Box::new(c.clone()));
            c
        };
        let open = IntGauge::new("cds_http_connections_open", "Open HTTP connections")
            .unwrap_or_else(|e| unreachable!("metric: {e}"));
        metrics.register(Box::new(open.clone()));
        metrics.register(Box::new(audit.suppressed_counter()));
        let hooks_jwt_refused = IntCounterVec::new(
            prometheus::Opts::new(
                "cds_http_hooks_jwt_refused_total",
                "CDS Hooks client JWTs refused, by reason",
            ),
            &["reason"],
        )
        .unwrap_or_else(|e| unreachable!("metric: {e}"));
        metrics.register(Box::new(hooks_jwt_refused.clone()));
        HttpMetrics {
            hooks_jwt_refused,
            connections_refused: counter(
                "cds_http_connections_refused_total",
                "HTTP connections refused at the connection limit",
            ),
            connections_open: open,
            request_timeouts: counter(
                "cds_http_request_timeouts_total",
                "HTTP requests answered 503 at the request timeout",
            ),
            streams_refused: counter(
                "cds_http_streams_refused_total",
                "Live streams refused at the per-token or total limit (429)",
            ),
        }
    }
}

/// What the handlers read.
#[derive(Debug, Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    /// Set once the engine has started consuming (no checkpoint to load yet).
    pub ready: Arc<AtomicBool>,
    /// The tokens in force (the file is read again when it changes: [`Tokens::watch`]).
    pub tokens: Arc<Tokens>,
    /// Dashboard sessions (cookie id to token hash).
    pub sessions: Sessions,
    /// What the API answers from: the documents the sink wrote (whichever sink).
    pub index: crate::sink::ServingIndex,
    /// The numbered live feed for `/api/alerts/stream`.
    pub feed: Option<LiveFeed>,
    pub audit: Audit,
    /// Where clinicians' acknowledgements are kept.
    pub acks: Option<AckStore>,
    /// Matches an EHR's patient identifier (CDS Hooks) to the engine's pseudonyms.
    pub pseudonyms: Option<Pseudonymiser>,
    pub limits: HttpLimits,
    /// Open live streams, bounded by `limits`.
    pub streams: StreamSlots,
    pub http_metrics: HttpMetrics,
    /// HTTPS when set (`--tls-cert`, `--tls-key`); the session cookie is then `Secure`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// What `/reports/dq` reads: the lake's location and the data directory (`None`: the
    /// run writes no lake).
    pub reports: Option<ReportSource>,
    /// Each department's occupancy over the last day of event time, for the dashboard.
    pub trends: wards::Trends,
    /// The hospitals, their names and departments in force (the departments file or topic,
    /// followed while running).
    pub network: crate::model::LiveNetwork,
    /// CDS Hooks: the identifier systems whose values in a prefetched Patient are the streams'
    /// patient ids (`--hooks-patient-system`); empty: prefetched identifiers are not used.
    pub hooks_patient_systems: Arc<Vec<String>>,
    /// Set while a data-quality report is being made: one at a time (each reads whole tables).
    pub reports_running: Arc<AtomicBool>,
}

/// Where the data-quality report is read from.
#[derive(Debug, Clone)]
pub struct ReportSource {
    pub lake: String,
    pub data_dir: std::path::PathBuf,
    /// How Bronze's payloads are read (the run's `--format`).
    pub format: crate::decode::Format,
}

/// One route: its path, method and handler, and whether it needs a token.
struct Route {
    path: String,
    method: &'static str,
    handler: MethodRouter<HttpState>,
    protected: bool,
}

/// Every route, described one by one in [`openapi::OPERATIONS`] (a test holds them together).
fn routes() -> Vec<Route> {
    let route = |path: &str, method, handler, protected| Route {
        path: path.to_owned(),
        method,
        handler,
        protected,
    };
    vec![
        route("/", "get", get(api::dashboard), true),
        route("/api/kpis", "get", get(api::kpis), true),
        route("/api/kpis/trend", "get", get(wards::trend), true),
        route("/api/hospitals", "get", get(wards::hospitals), true),
        route("/api/alerts", "get", get(api::alerts), true),
        route(STREAM_ROUTE, "get", get(api::stream), true),
        route("/api/alerts/{id}/ack", "post", post(actions::ack), true),
        route("/api/rules/stats", "get", get(actions::stats), true),
        route("/api/openapi.json", "get", get(openapi_json), true),
        route("/cds-services", "get", get(hooks::discovery), true),
        route(hooks::SERVICE_PATH, "post", post(hooks::patient_view), true),
        route(hooks::FEEDBACK_PATH, "post", post(hooks::feedback), true),
        route("/reports/dq", "get", get(reports::dq), true),
        route("/signin", "post", post(signin), false),
        route("/healthz", "get", get(|| async { "ok\n" }), false),
        route("/readyz", "get", get(readyz), false),
        route("/metrics", "get", get(metrics), false),
    ]
}

/// The router of every route.
pub fn router(state: HttpState) -> Router {
    let (mut protected, mut open) = (Router::new(), Router::new());
    for r in routes() {
        tracing::debug!(method = r.method, path = %r.path, protected = r.protected, "route");
        if r.protected {
            protected = protected.route(&r.path, r.handler);
        } else {
            open = open.route(&r.path, r.handler);
        }
    }
    let protected =
        protected.route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    open.merge(protected)
        .layer(middleware::from_fn_with_state(state.clone(), deadline))
        .with_state(state)
}

/// The API's description (OpenAPI 3.1).
async fn openapi_json() -> axum::Json<serde_json::Value> {
    axum::Json(openapi::document())
}

/// Answers 503 when a request (other than the live stream) is not answered in time, so a slow
/// store read cannot hold a connection and its slot forever.
async fn deadline(State(state): State<HttpState>, req: Request, next: Next) -> Response {
    if req.uri().path() == STREAM_ROUTE {
        return next.run(req).await;
    }
    match tokio::time::timeout(state.limits.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            state.http_metrics.request_timeouts.inc();
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the request was not answered in time\n",
            )
                .into_response()
        }
    }
}

/// Where a request's credential came from.
enum Credential {
    /// `Authorization: Bearer …` (the scheme in any case, RFC 7235).
    Header(String),
    /// `?token=`, accepted on the dashboard page and the live stream only.
    Query(String),
    /// The dashboard's session cookie.
    Session(String),
}

/// The bearer token of the `Authorization` header.
fn bearer_header(req: &Request) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(char::is_whitespace)?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// `token=` of the query.
fn query_token(req: &Request) -> Option<String> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(str::to_owned)
}

/// The session id of the dashboard's cookie.
fn session_cookie(req: &Request) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == SESSION_COOKIE).then(|| v.to_owned())
        })
}

fn credential(req: &Request) -> Option<Credential> {
    if req.headers().contains_key(header::AUTHORIZATION) {
        return bearer_header(req).map(Credential::Header);
    }
    let path = req.uri().path();
    if path == "/" || path == STREAM_ROUTE {
        if let Some(t) = query_token(req) {
            return Some(Credential::Query(t));
        }
    }
    session_cookie(req).map(Credential::Session)
}

/// The query without the token, for the audit log and the dashboard's redirect.
fn query_without_token(req: &Request) -> String {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("token="))
        .collect::<Vec<_>>()
        .join("&")
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a bearer token is required\n",
    )
        .into_response()
}

async fn authenticate(State(state): State<HttpState>, mut req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let route = req.uri().path().to_owned();
    let query = query_without_token(&req);
    let credential = credential(&req);
    let token = match &credential {
        // An EHR's signed JWT (CDS Hooks client authentication), on the CDS Hooks routes only.
        Some(Credential::Header(t))
            if route.starts_with("/cds-services") && jwt::looks_like_jwt(t) =>
        {
            let now = chrono::Utc::now().timestamp();
            match state.tokens.hooks_client(t, &route, now) {
                Ok(token) => Some(token),
                // Not a client's JWT after all: perhaps a bearer token of that shape.
                Err(jwt::Refusal::Malformed | jwt::Refusal::UnknownIssuer)
                    if state.tokens.authenticate(t).is_some() =>
                {
                    state.tokens.authenticate(t)
                }
                Err(refusal) => {
                    state
                        .http_metrics
                        .hooks_jwt_refused
                        .with_label_values(&[&refusal.to_string()])
                        .inc();
                    tracing::info!(reason = %refusal, "a CDS Hooks client token was refused");
                    None
                }
            }
        }
        Some(Credential::Header(t) | Credential::Query(t)) => state.tokens.authenticate(t),
        Some(Credential::Session(id)) => state
            .sessions
            .hash_of(id)
            .and_then(|hash| state.tokens.by_hash(&hash)),
        None => None,
    };
    let Some(token) = token else {
        state.audit.record("-", "-", &method, &route, &query, 401);
        // A person opening the dashboard: the sign-in form (still a 401).
        if route == "/" {
            return signin_page(StatusCode::UNAUTHORIZED, "");
        }
        return unauthorized();
    };
    let (name, role) = (
        token.name.clone(),
        format!("{:?}", token.role).to_lowercase(),
    );
    // The dashboard opened with `?token=`: trade it for a session cookie and drop it from the
    // address bar (and from the history and any Referer).
    let response = if route == "/" && matches!(credential, Some(Credential::Query(_))) {
        match dashboard_session(&state, &token.sha256, &query) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "opening a dashboard session failed");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    } else {
        req.extensions_mut().insert(token);
        next.run(req).await
    };
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

const SIGNIN: &str = include_str!("signin.html");

/// The sign-in form, with a message (fixed texts only).
fn signin_page(status: StatusCode, message: &'static str) -> Response {
    let page = SIGNIN.replace(
        "<!--MESSAGE-->",
        &if message.is_empty() {
            String::new()
        } else {
            format!("<p class=\"error\" role=\"alert\">{message}</p>")
        },
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response()
}

/// `POST /signin` (the form's `token`): a valid token opens a dashboard session (an HttpOnly
/// cookie) and goes to the dashboard; anything else shows the form again.
async fn signin(
    State(state): State<HttpState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    // Only from this server's own page: another site must not sign a browser in with a token
    // of its choosing (whose acts would then be audited under it).
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let cross_site = value("sec-fetch-site").is_some_and(|v| v != "same-origin" && v != "none");
    let foreign_origin = match (value("origin"), value("host")) {
        (Some(origin), Some(host)) => {
            origin != format!("http://{host}") && origin != format!("https://{host}")
        }
        (Some(_), None) => true,
        _ => false,
    };
    if cross_site || foreign_origin {
        state.audit.record("-", "-", "POST", "/signin", "", 403);
        return signin_page(
            StatusCode::FORBIDDEN,
            "Sign in from this server's own page.",
        );
    }
    let token = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let Some(found) = (!token.is_empty())
        .then(|| state.tokens.authenticate(&token))
        .flatten()
    else {
        state.audit.record("-", "-", "POST", "/signin", "", 401);
        return signin_page(StatusCode::UNAUTHORIZED, "That token is not valid.");
    };
    let role = format!("{:?}", found.role).to_lowercase();
    let response = dashboard_session(&state, &found.sha256, "").unwrap_or_else(|e| {
        tracing::error!(error = %e, "opening a dashboard session failed");
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    });
    state.audit.record(
        &found.name,
        &role,
        "POST",
        "/signin",
        "",
        response.status().as_u16(),
    );
    response
}

/// 303 to the dashboard without the token, with an HttpOnly, SameSite=Strict session cookie
/// (a random id; the token stays out of reach of scripts).
fn dashboard_session(
    state: &HttpState,
    sha256: &str,
    query: &str,
) -> Result<Response, auth::AuthError> {
    let id = state.sessions.open(&sha256.to_ascii_lowercase())?;
    let cookie = format!(
        "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        if state.tls.is_some() { "; Secure" } else { "" }
    );
    let location = if query.is_empty() {
        "/".to_owned()
    } else {
        format!("/?{query}")
    };
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(&location).unwrap_or(HeaderValue::from_static("/")),
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        headers.insert(header::SET_COOKIE, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
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

/// Why the TLS certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path} holds no certificate (PEM)")]
    NoCertificate { path: String },
    #[error("the TLS certificate and key are not usable: {0}")]
    Config(String),
}

/// The TLS configuration of `--tls-cert` (PEM chain, leaf first) and `--tls-key` (PEM key).
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read_err = |p: &std::path::Path, e: &dyn std::fmt::Display| TlsError::Read {
        path: p.display().to_string(),
        message: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| read_err(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err(cert, &e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.display().to_string(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| read_err(key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves one connection until it ends, or drains it when the server stops.
async fn connection<I>(
    builder: &hyper::server::conn::http1::Builder,
    io: I,
    service: hyper_util::service::TowerToHyperService<Router>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
{
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN, conn.as_mut()).await;
        }
    }
}

/// What an over-limit connection reads before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 26\r\nConnection: close\r\nRetry-After: 5\r\n\r\ntoo many open connections\n";

/// How long open connections may finish after the shutdown signal.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves until `shutdown` resolves: one task per connection, at most
/// `limits.max_connections` of them, each with a header-read timeout (axum::serve has
/// neither, so a client could hold any number of half-sent requests open).
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let limits = state.limits;
    let metrics = state.http_metrics.clone();
    let acceptor = state.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let app = router(state);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics.connections_refused.inc();
            // Best effort and never waiting: the client may not read at all.
            let _ = stream.try_write(BUSY);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let mut stop = stop_rx.clone();
        let open = metrics.connections_open.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            open.inc();
            match acceptor {
                None => connection(&builder, TokioIo::new(stream), service, &mut stop).await,
                // The handshake gets the header-read time: a client that stalls in it holds a
                // connection slot like one that stalls in its headers.
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
                    if let Ok(Ok(tls)) = handshake.await {
                        connection(&builder, TokioIo::new(tls), service, &mut stop).await;
                    }
                }
            }
            open.dec();
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Wait (bounded: live streams never end by themselves) until the connections are done.
    let _ = tokio::time::timeout(
        DRAIN,
        slots.acquire_many(u32::try_from(limits.max_connections).unwrap_or(u32::MAX)),
    )
    .await;
    Ok(())
}
