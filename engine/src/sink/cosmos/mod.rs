//! The Azure Cosmos DB sink: the `kpis` and `alerts` containers of docs/design.md, partition key
//! `/hospital_id`, written with the official Rust SDK (`azure_data_cosmos`).
//!
//! [`Sink::upsert`] is synchronous and returns only once every document of the batch is
//! written (or, after the last retry, safely in the dead-letter store). It drives a private
//! tokio runtime with at most `max_in_flight` upserts at once, so a Cosmos DB account that is
//! slower than the stream holds the pipeline's sink thread, whose bounded channel then holds the
//! dataflow and the source: memory stays bounded and nothing is dropped.
//!
//! Request units are spent on what the wards see, not on the event rate: the pipeline writes KPI
//! documents at most once per flush interval (250 ms by default) with only the newest version
//! of each id, and the sink writes each id once per batch. Alerts carry a deterministic id, so
//! a replay rewrites the same document.
//!
//! Throttling (429, waiting at least the service's `x-ms-retry-after-ms`), 449, 503, 408,
//! timeouts and failed connections are retried with exponential backoff and full jitter. A
//! container that has disappeared (404: deleted, or an emulator restarted) is created again and
//! the whole batch written again, since what it wrote before may have gone with the container. A document that still fails goes to `lake/deadletter/cosmos.jsonl` with
//! the reason; the failure is counted and logged with a fixed message and no patient data, and
//! the pipeline goes on.

mod acks;
mod config;
mod credential;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::credentials::Secret;
use azure_data_cosmos::clients::{ContainerClient, DatabaseClient};
use azure_data_cosmos::models::{ContainerProperties, ThroughputProperties};
use azure_data_cosmos::options::{
    BinaryEncodingOptions, ConnectionPoolOptions, CreateContainerOptions, OperationOptionsBuilder,
    ThrottlingRetryOptionsBuilder,
};
use azure_data_cosmos::{
    AccountEndpoint, AccountReference, CosmosClient, CosmosClientBuilder, CosmosError,
    CosmosRuntime, RoutingStrategy,
};
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use serde_json::Value;
use tracing::{error, info, warn};

pub use acks::CosmosAcks;
pub use config::{
    AccountKey, CosmosConfig, CosmosConfigError, EntraCredential, Throughput, DEFAULT_DATABASE,
    EMULATOR_KEY,
};

/// Fault injection of the SDK's transport (tests and chaos drills): build rules with these
/// types and give them to [`CosmosSink::open_with_faults`].
#[cfg(feature = "cosmos-fault-injection")]
pub use azure_data_cosmos::fault_injection;

use super::{Container, Sink, SinkError};
use crate::lake::JsonlTable;
use crate::metrics::Metrics;
use crate::model::Document;
use crate::support::Backoff;

/// The partition key path of both containers (docs/design.md).
pub const PARTITION_KEY_PATH: &str = "/hospital_id";

/// What the operator sees when documents are dead-lettered: fixed, with no patient data.
const DEAD_LETTER_MESSAGE: &str =
    "Cosmos DB writes failed after the last retry; documents sent to the dead-letter store";

/// Why a Cosmos DB sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum CosmosSinkError {
    #[error(transparent)]
    Config(#[from] CosmosConfigError),
    #[error("cannot start the Cosmos DB client runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the Cosmos DB endpoint {endpoint:?} is not a valid URL")]
    Endpoint { endpoint: String },
    #[error("Microsoft Entra ID credential: {0}")]
    Credential(String),
    #[error("Cosmos DB {what}: {source}")]
    Cosmos {
        what: &'static str,
        #[source]
        source: CosmosError,
    },
}

/// Writes documents to Cosmos DB.
pub struct CosmosSink {
    runtime: tokio::runtime::Runtime,
    config: CosmosConfig,
    client: CosmosClient,
    kpis: ContainerClient,
    alerts: ContainerClient,
    metrics: Arc<Metrics>,
    dead_letters: JsonlTable,
    faults: ClientFaults,
    /// Where dead-lettering raises `sink_retries_exhausted` (cleared by the next batch written
    /// whole).
    ops: crate::ops::OpsAlerts,
    /// The ids the last upsert sent to the dead-letter store.
    dead_lettered: Vec<String>,
}

impl std::fmt::Debug for CosmosSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CosmosSink")
            .field("endpoint", &self.config.endpoint)
            .field("database", &self.config.database)
            .finish_non_exhaustive()
    }
}

/// How one document's write ended, when it did not succeed.
enum Failure {
    /// The database or container is gone: re-create it and write again.
    Missing,
    /// Retries are spent or the error is not retriable.
    Failed { reason: String, attempts: u32 },
}

/// What a retriable error asks of the sink.
enum Verdict {
    Retry {
        label: &'static str,
        wait: Option<Duration>,
    },
    Missing,
    Fatal(String),
}

/// One dead-lettered document, as the lake keeps it.
#[derive(Serialize)]
struct DeadLetter<'a> {
    at: String,
    sink: &'static str,
    container: &'static str,
    id: &'a str,
    partition_key: i64,
    reason: &'a str,
    attempts: u32,
    document: &'a Value,
}

impl CosmosSink {
    /// Connects, creates the database and containers if missing, and returns the sink.
    pub fn open(
        config: CosmosConfig,
        metrics: Arc<Metrics>,
        data_dir: &Path,
    ) -> Result<Self, CosmosSinkError> {
        Self::open_inner(config, metrics, data_dir, ClientFaults::default())
    }

    /// [`CosmosSink::open`] with the SDK's fault injection: every request passes the rules.
    #[cfg(feature = "cosmos-fault-injection")]
    pub fn open_with_faults(
        config: CosmosConfig,
        metrics: Arc<Metrics>,
        data_dir: &Path,
        rules: Vec<Arc<fault_injection::FaultInjectionRule>>,
    ) -> Result<Self, CosmosSinkError> {
        Self::open_inner(config, metrics, data_dir, ClientFaults { rules })
    }

    fn open_inner(
        config: CosmosConfig,
        metrics: Arc<Metrics>,
        data_dir: &Path,
        faults: ClientFaults,
    ) -> Result<Self, CosmosSinkError> {
        config.validate()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cds-cosmos")
            .enable_all()
            .build()
            .map_err(CosmosSinkError::Runtime)?;
        let client = runtime.block_on(connect(&config, faults.clone()))?;
        let (kpis, alerts) = runtime.block_on(ensure_containers(&client, &config))?;
        info!(database = %config.database, "Cosmos DB sink ready");
        Ok(CosmosSink {
            runtime,
            client,
            kpis,
            alerts,
            metrics,
            dead_letters: JsonlTable::new(&data_dir.join("lake"), "deadletter/cosmos.jsonl"),
            config,
            faults,
            ops: crate::ops::OpsAlerts::detached(),
            dead_lettered: Vec::new(),
        })
    }

    /// Raises and clears `sink_retries_exhausted` on this handle.
    pub(crate) fn with_ops(mut self, ops: crate::ops::OpsAlerts) -> Self {
        self.ops = ops;
        self
    }

    /// Every document of a container (system properties `_rid`, `_etag`… removed), ordered by
    /// id: what the serving index starts from, and the tests' read-back.
    pub fn read_all(&self, container: Container) -> Result<Vec<Value>, SinkError> {
        let client = self.container(container).clone();
        let mut docs: Vec<Value> = self.runtime.block_on(async move {
            let mut items = client
                .query_items::<Value>(
                    "SELECT * FROM c",
                    azure_data_cosmos::FeedScope::full_container(),
                    None,
                )
                .await?;
            let mut out = Vec::new();
            while let Some(item) = items.next().await {
                out.push(item?);
            }
            Ok::<_, CosmosError>(out)
        })?;
        for d in &mut docs {
            if let Some(o) = d.as_object_mut() {
                o.retain(|k, _| !k.starts_with('_'));
            }
        }
        docs.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        Ok(docs)
    }

    fn container(&self, container: Container) -> &ContainerClient {
        match container {
            Container::Kpis => &self.kpis,
            Container::Alerts => &self.alerts,
        }
    }

    /// The backoff before retry number `attempt` (0-based): full jitter over an exponentially
    /// growing window, and never shorter than what a throttling response asked for.
    fn backoff(&self, attempt: u32, asked: Option<Duration>) -> Duration {
        let retry = Backoff {
            first: Duration::from_millis(self.config.base_backoff_ms),
            max: Duration::from_millis(self.config.max_backoff_ms),
            retries: self.config.max_retries,
        };
        let jittered = retry.jittered(attempt);
        asked.map_or(jittered, |a| a.max(jittered))
    }

    /// Writes one document with retries; `Ok` once Cosmos DB has it.
    async fn write_one(
        &self,
        client: &ContainerClient,
        container: Container,
        doc: &Document,
        item: &Value,
    ) -> Result<(), Failure> {
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            let result = tokio::time::timeout(
                self.config.request_timeout(),
                client.upsert_item(doc.hospital_id, &doc.id, item, None),
            )
            .await;
            self.metrics
                .sink
                .cosmos_request_seconds
                .observe(started.elapsed().as_secs_f64());
            let verdict = match result {
                Ok(Ok(response)) => {
                    if let Some(charge) = response.headers().request_charge() {
                        self.metrics
                            .sink
                            .cosmos_request_units
                            .inc_by(charge.value());
                    }
                    self.metrics
                        .sink
                        .cosmos_documents
                        .with_label_values(&[container.name()])
                        .inc();
                    return Ok(());
                }
                Ok(Err(e)) => classify(&e),
                Err(_) => Verdict::Retry {
                    label: "timeout",
                    wait: None,
                },
            };
            match verdict {
                Verdict::Missing => return Err(Failure::Missing),
                Verdict::Fatal(reason) => {
                    return Err(Failure::Failed {
                        reason,
                        attempts: attempt + 1,
                    })
                }
                Verdict::Retry { label, wait } => {
                    if attempt >= self.config.max_retries {
                        return Err(Failure::Failed {
                            reason: format!("{label} after {} attempts", attempt + 1),
                            attempts: attempt + 1,
                        });
                    }
                    self.metrics
                        .sink
                        .cosmos_retries
                        .with_label_values(&[label])
                        .inc();
                    tokio::time::sleep(self.backoff(attempt, wait)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Writes a batch with bounded concurrency; returns the documents that need the
    /// containers re-created and those that failed for good.
    fn write_round(
        &self,
        container: Container,
        docs: &[(&Document, Value)],
    ) -> (Vec<usize>, Vec<(usize, String, u32)>) {
        let client = self.container(container);
        let outcomes: Vec<(usize, Result<(), Failure>)> = self.runtime.block_on(
            stream::iter(docs.iter().enumerate())
                .map(|(i, (doc, item))| async move {
                    (i, self.write_one(client, container, doc, item).await)
                })
                .buffer_unordered(self.config.max_in_flight)
                .collect(),
        );
        let mut missing = Vec::new();
        let mut failed = Vec::new();
        for (i, outcome) in outcomes {
            match outcome {
                Ok(()) => {}
                Err(Failure::Missing) => missing.push(i),
                Err(Failure::Failed { reason, attempts }) => failed.push((i, reason, attempts)),
            }
        }
        (missing, failed)
    }

    /// Creates the database and containers again (after a 404) and takes fresh clients. The
    /// client is built anew too: the SDK caches container metadata per client runtime, and the
    /// cached container would still be the one that is gone.
    fn recreate_containers(&mut self) -> Result<(), CosmosSinkError> {
        let client = self
            .runtime
            .block_on(connect(&self.config, self.faults.clone()))?;
        let (kpis, alerts) = self
            .runtime
            .block_on(ensure_containers(&client, &self.config))?;
        self.client = client;
        self.kpis = kpis;
        self.alerts = alerts;
        Ok(())
    }

    fn dead_letter(
        &mut self,
        container: Container,
        failed: &[(&Document, &Value, String, u32)],
    ) -> Result<(), SinkError> {
        let at = crate::model::format_time(&chrono::Utc::now().fixed_offset());
        for (doc, item, reason, attempts) in failed {
            self.dead_letters
                .append(&DeadLetter {
                    at: at.clone(),
                    sink: "cosmos",
                    container: container.name(),
                    id: &doc.id,
                    partition_key: doc.hospital_id,
                    reason,
                    attempts: *attempts,
                    document: item,
                })
                .map_err(|e| SinkError::DeadLetter(e.to_string()))?;
        }
        self.dead_letters
            .flush()
            .map_err(|e| SinkError::DeadLetter(e.to_string()))?;
        self.metrics
            .sink
            .cosmos_dead_lettered
            .with_label_values(&[container.name()])
            .inc_by(failed.len() as u64);
        error!(
            container = container.name(),
            documents = failed.len(),
            "{DEAD_LETTER_MESSAGE}"
        );
        Ok(())
    }
}

impl Sink for CosmosSink {
    fn read_back(&mut self, container: Container) -> Result<Vec<Value>, SinkError> {
        self.read_all(container)
    }

    fn take_dead_lettered(&mut self) -> Vec<String> {
        std::mem::take(&mut self.dead_lettered)
    }

    fn upsert(&mut self, container: Container, documents: &[Document]) -> Result<(), SinkError> {
        let batch = newest_per_id(documents);
        if batch.is_empty() {
            return Ok(());
        }
        let mut pending: Vec<(&Document, Value)> =
            batch.into_iter().map(|d| (d, cosmos_item(d))).collect();
        let mut dead: Vec<(&Document, Value, String, u32)> = Vec::new();
        let mut rounds = 0u32;
        loop {
            let (missing, failed) = self.write_round(container, &pending);
            let mut slots: Vec<Option<(&Document, Value)>> =
                pending.into_iter().map(Some).collect();
            for (i, reason, attempts) in failed {
                if let Some((d, v)) = slots.get_mut(i).and_then(Option::take) {
                    dead.push((d, v, reason, attempts));
                }
            }
            // A missing container means that what this batch wrote before may have gone with
            // it (a deleted container, a restarted emulator): the whole batch is written again
            // into the new one, not only the documents that saw the 404.
            pending = if missing.is_empty() {
                Vec::new()
            } else {
                slots.into_iter().flatten().collect()
            };
            if pending.is_empty() {
                break;
            }
            if rounds >= self.config.max_retries {
                dead.extend(pending.drain(..).map(|(d, v)| {
                    (
                        d,
                        v,
                        "container missing after re-creating it".to_owned(),
                        rounds + 1,
                    )
                }));
                break;
            }
            self.metrics
                .sink
                .cosmos_retries
                .with_label_values(&["404"])
                .inc_by(pending.len() as u64);
            warn!(
                database = %self.config.database,
                container = container.name(),
                "Cosmos DB container not found; creating it again"
            );
            if let Err(e) = self.recreate_containers() {
                warn!(error = %e, "re-creating the Cosmos DB containers failed; retrying");
            }
            std::thread::sleep(self.backoff(rounds, None));
            rounds += 1;
        }
        self.dead_lettered = dead.iter().map(|(d, ..)| d.id.clone()).collect();
        if !dead.is_empty() {
            let refs: Vec<(&Document, &Value, String, u32)> = dead
                .iter()
                .map(|(d, v, r, a)| (*d, v, r.clone(), *a))
                .collect();
            self.dead_letter(container, &refs)?;
            self.ops.raise(
                crate::ops::Condition::SinkRetriesExhausted,
                "Cosmos DB writes failed after the last retry; documents sent to the dead-letter store",
            );
        } else {
            self.ops.clear(crate::ops::Condition::SinkRetriesExhausted);
        }
        Ok(())
    }
}

/// Fault-injection rules for the client (empty without the feature).
#[derive(Default, Clone)]
struct ClientFaults {
    #[cfg(feature = "cosmos-fault-injection")]
    rules: Vec<Arc<fault_injection::FaultInjectionRule>>,
}

/// Builds the client: key auth when a key is given, Microsoft Entra ID otherwise.
async fn connect(
    config: &CosmosConfig,
    faults: ClientFaults,
) -> Result<CosmosClient, CosmosSinkError> {
    let endpoint: AccountEndpoint =
        config
            .endpoint
            .parse()
            .map_err(|_| CosmosSinkError::Endpoint {
                endpoint: config.endpoint.clone(),
            })?;
    let account = match &config.key {
        Some(key) => {
            AccountReference::with_authentication_key(endpoint, Secret::new(key.0.clone()))
        }
        None => AccountReference::with_credential(
            endpoint,
            credential::entra_credential(config.credential)?,
        ),
    };
    let mut pool = ConnectionPoolOptions::builder();
    if let Some(http2) = config.http2 {
        pool = pool.with_is_http2_allowed(http2);
    }
    let pool = pool.build().map_err(|source| CosmosSinkError::Cosmos {
        what: "connection pool options",
        source,
    })?;
    // The sink does its own retrying (counted, with jitter and the dead-letter store after the
    // last one), so the SDK hands throttling back at once instead of retrying it unseen.
    let operation = OperationOptionsBuilder::new()
        .with_throttling_retry_options(
            ThrottlingRetryOptionsBuilder::new()
                .with_max_retry_count(0)
                .build(),
        )
        .build();
    let runtime = CosmosRuntime::builder()
        .with_connection_pool(pool)
        .with_default_operation_options(operation)
        .build()
        .await
        .map_err(|source| CosmosSinkError::Cosmos {
            what: "runtime",
            source,
        })?;
    let mut builder = CosmosClientBuilder::new().with_runtime(runtime);
    if let Some(enabled) = config.binary_encoding {
        builder = builder
            .with_binary_encoding_options(BinaryEncodingOptions::new().with_enabled(enabled));
    }
    #[cfg(feature = "cosmos-fault-injection")]
    if !faults.rules.is_empty() {
        builder = builder
            .with_fault_injection_rules(faults.rules)
            .map_err(|source| CosmosSinkError::Cosmos {
                what: "fault injection rules",
                source,
            })?;
    }
    #[cfg(not(feature = "cosmos-fault-injection"))]
    let _ = faults;
    let routing = match &config.region {
        Some(region) => RoutingStrategy::ProximityTo(region.clone().into()),
        None => RoutingStrategy::PreferredRegions(Vec::new()),
    };
    builder
        .build(account, routing)
        .await
        .map_err(|source| CosmosSinkError::Cosmos {
            what: "connecting",
            source,
        })
}

/// Gets clients for both containers, creating the database and the containers when missing.
async fn ensure_containers(
    client: &CosmosClient,
    config: &CosmosConfig,
) -> Result<(ContainerClient, ContainerClient), CosmosSinkError> {
    let database = client.database_client(config.database.as_str());
    let kpis = ensure_container(client, &database, config, Container::Kpis.name()).await?;
    let alerts = ensure_container(client, &database, config, Container::Alerts.name()).await?;
    Ok((kpis, alerts))
}

async fn ensure_container(
    client: &CosmosClient,
    database: &DatabaseClient,
    config: &CosmosConfig,
    name: &str,
) -> Result<ContainerClient, CosmosSinkError> {
    match database.container_client(name, None).await {
        Ok(c) => return Ok(c),
        Err(e) if e.status().is_not_found() => {}
        Err(source) => {
            return Err(CosmosSinkError::Cosmos {
                what: "reading the container",
                source,
            })
        }
    }
    // Creating needs the account key or a control-plane role: with Entra ID data-plane roles
    // the database and containers must exist beforehand (README, Cosmos DB sink).
    match client.create_database(&config.database, None).await {
        Ok(_) => info!(database = %config.database, "created the Cosmos DB database"),
        Err(e) if e.status().is_conflict() => {}
        Err(source) => {
            return Err(CosmosSinkError::Cosmos {
                what: "creating the database",
                source,
            })
        }
    }
    let properties = ContainerProperties::new(name.to_owned(), PARTITION_KEY_PATH.into());
    let mut options = CreateContainerOptions::default();
    match config.throughput {
        Throughput::Autoscale { max } => {
            options = options.with_throughput(ThroughputProperties::autoscale(max, None))
        }
        Throughput::Manual { ru } => {
            options = options.with_throughput(ThroughputProperties::manual(ru))
        }
        Throughput::Account => {}
    }
    match database.create_container(properties, Some(options)).await {
        Ok(_) => info!(container = name, "created the Cosmos DB container"),
        Err(e) if e.status().is_conflict() => {}
        Err(source) => {
            return Err(CosmosSinkError::Cosmos {
                what: "creating the container",
                source,
            })
        }
    }
    database
        .container_client(name, None)
        .await
        .map_err(|source| CosmosSinkError::Cosmos {
            what: "opening the container",
            source,
        })
}

/// What to do about an error from Cosmos DB.
fn classify(e: &CosmosError) -> Verdict {
    let status = e.status();
    let wait = e
        .response()
        .and_then(|r| r.headers().retry_after_ms)
        .map(Duration::from_millis);
    if !e.is_from_wire() {
        // No response at all: the connection failed or the request never left.
        return Verdict::Retry {
            label: "connection",
            wait: None,
        };
    }
    let code = u16::from(status.status_code());
    match code {
        429 => Verdict::Retry { label: "429", wait },
        449 => Verdict::Retry { label: "449", wait },
        503 => Verdict::Retry { label: "503", wait },
        408 => Verdict::Retry { label: "408", wait },
        404 => Verdict::Missing,
        410 | 500 | 502 | 504 => Verdict::Retry {
            label: "5xx",
            wait: None,
        },
        _ => Verdict::Fatal(format!("status {code}")),
    }
}

/// The newest version of each id, in first-seen order: a batch may hold an id twice when
/// changes are coalesced upstream per epoch but a caller hands several epochs at once.
fn newest_per_id(documents: &[Document]) -> Vec<&Document> {
    let mut index: std::collections::HashMap<&str, usize> =
        std::collections::HashMap::with_capacity(documents.len());
    let mut out: Vec<&Document> = Vec::with_capacity(documents.len());
    for d in documents {
        match index.get(d.id.as_str()) {
            Some(&i) => out[i] = d,
            None => {
                index.insert(d.id.as_str(), out.len());
                out.push(d);
            }
        }
    }
    out
}

/// The item as Cosmos DB stores it: the document, with `id` and the partition key made to agree
/// with the document's own (Cosmos DB refuses an item whose partition key differs).
fn cosmos_item(doc: &Document) -> Value {
    let mut item = doc.body.clone();
    if let Some(o) = item.as_object_mut() {
        if o.get("id").and_then(Value::as_str) != Some(doc.id.as_str()) {
            o.insert("id".into(), Value::from(doc.id.as_str()));
        }
        if o.get("hospital_id").and_then(Value::as_i64) != Some(doc.hospital_id) {
            o.insert("hospital_id".into(), Value::from(doc.hospital_id));
        }
    }
    item
}

/// A uniformly random number in `0..=max`, from the operating system (no seeding to get wrong).
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(id: &str, v: i64) -> Document {
        Document {
            id: id.into(),
            hospital_id: 3,
            body: json!({"id": id, "hospital_id": 3, "v": v}),
        }
    }

    #[test]
    fn keeps_the_newest_version_of_each_id() {
        let docs = [doc("a", 1), doc("b", 1), doc("a", 2)];
        let got: Vec<(String, i64)> = newest_per_id(&docs)
            .into_iter()
            .map(|d| (d.id.clone(), d.body["v"].as_i64().unwrap_or(-1)))
            .collect();
        assert_eq!(got, vec![("a".into(), 2), ("b".into(), 1)]);
    }

    #[test]
    fn items_carry_their_id_and_partition_key() {
        let d = Document {
            id: "alert-1".into(),
            hospital_id: 5,
            body: json!({"hospital_id": null}),
        };
        assert_eq!(cosmos_item(&d), json!({"id": "alert-1", "hospital_id": 5}));
    }
}
