//! The HTTP server of `cds run`: binds it, loads or creates the tokens, and serves the API,
//! the dashboard and the live feed beside the pipeline.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::config::{HttpConfig, RunConfig};
use crate::http::acks::AckStore;
use crate::http::audit::Audit;
use crate::http::auth::Tokens;
use crate::http::feed::LiveFeed;
use crate::http::{self, HttpState};
use crate::metrics::Metrics;
use crate::model::Pseudonymiser;
use crate::sink::cosmos::{CosmosAcks, CosmosConfig};
use crate::sink::{Feed, ServingIndex, SinkConfig};

/// What the HTTP server shares with the rest of the run.
pub struct Shared {
    pub metrics: Arc<Metrics>,
    /// Set once the pipeline starts: `/readyz` answers 503 until then.
    pub ready: Arc<AtomicBool>,
    pub pseudonyms: Pseudonymiser,
    /// The hospitals, their names and departments in force (the pipeline publishes each
    /// change of the departments file or topic).
    pub network: crate::model::LiveNetwork,
    /// Notified when the run is over: the server stops.
    pub stop: Arc<tokio::sync::Notify>,
    /// What the API answers from, kept by the sink thread.
    pub index: ServingIndex,
}

/// Where acknowledgements go: the configured sink's place for them (the SQLite file beside the
/// store, or the Cosmos DB `acks` container), so that every process of a deployment agrees.
fn ack_store(runtime: &tokio::runtime::Runtime, config: &RunConfig) -> anyhow::Result<AckStore> {
    match &config.sink {
        SinkConfig::Sqlite => {
            AckStore::open(&config.data_dir).context("opening the acknowledgement store")
        }
        SinkConfig::Cosmos { tuning } => {
            let cosmos = CosmosConfig::load(tuning.as_deref())?;
            let acks = runtime
                .block_on(CosmosAcks::open(cosmos))
                .context("opening the Cosmos DB acknowledgement container")?;
            Ok(AckStore::cosmos(acks))
        }
    }
}

/// Starts the server on `runtime`; returns the feed the sink announces its writes on.
pub fn start(
    runtime: &tokio::runtime::Runtime,
    http: &HttpConfig,
    config: &RunConfig,
    shared: &Shared,
) -> anyhow::Result<Feed> {
    let data_dir = &config.data_dir;
    let (listener, addr) = runtime
        .block_on(http::bind(&http.address))
        .with_context(|| format!("binding the HTTP address {}", http.address))?;
    let (tokens, new_token) = match &http.tokens {
        Some(path) => (Tokens::load(path)?, None),
        None => Tokens::bootstrap(data_dir)?,
    };
    let scheme = if http.tls.is_some() { "https" } else { "http" };
    eprintln!("cds: HTTP on {scheme}://{addr} (/healthz, /readyz, /metrics need no token)");
    match new_token {
        Some(t) => eprintln!(
            "cds: created an admin token (shown once; only its hash is stored in {}):\n  dashboard: {scheme}://{addr}/?token={t}",
            data_dir.join("tokens.toml").display()
        ),
        None => eprintln!("cds: dashboard: {scheme}://{addr}/?token=<your token>"),
    }
    let acks = ack_store(runtime, config)?;
    match runtime.block_on(acks.latest()) {
        Ok(latest) => http::publish_rates(&shared.metrics, &latest),
        Err(e) => return Err(e).context("reading the acknowledgements"),
    }
    let (feed, _) = tokio::sync::broadcast::channel(16_384);
    let (live, trends) = {
        let _entered = runtime.enter();
        (LiveFeed::spawn(&feed), http::Trends::spawn(&feed))
    };
    trends.seed(&shared.index);
    let audit = Audit::open(Some(&data_dir.join("audit.jsonl")))
        .with_context(|| "opening the access audit log".to_owned())?;
    let tokens = Arc::new(tokens);
    let tls = match &http.tls {
        Some(files) => Some(http::tls_config(&files.cert, &files.key)?),
        None => None,
    };
    {
        let _entered = runtime.enter();
        Tokens::watch(&tokens, Duration::from_secs(2));
    }
    let limits = http.limits;
    let state = HttpState {
        metrics: shared.metrics.clone(),
        ready: shared.ready.clone(),
        tokens,
        sessions: Default::default(),
        index: shared.index.clone(),
        feed: Some(live),
        http_metrics: http::HttpMetrics::register(&shared.metrics, &audit),
        audit,
        acks: Some(acks),
        pseudonyms: Some(shared.pseudonyms.clone()),
        limits,
        streams: http::feed::StreamSlots::new(limits.streams_per_token, limits.streams_total),
        tls,
        trends,
        network: shared.network.clone(),
        hooks_patient_systems: Arc::new(http.hooks_patient_systems.clone()),
        reports_running: Default::default(),
        reports: config.lake.as_ref().map(|lake| http::ReportSource {
            lake: lake.clone(),
            data_dir: data_dir.clone(),
            format: config.format(),
        }),
    };
    let stop = shared.stop.clone();
    runtime.spawn(async move {
        if let Err(e) = http::serve(listener, state, async move { stop.notified().await }).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok(feed)
}
