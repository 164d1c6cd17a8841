//! `cds run`: its flags, the [`RunConfig`] they make, and the run itself (source -> Silver ->
//! Gold -> rules -> sink, with the HTTP endpoints).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tracing::info;

use super::config::{
    cluster, default_lake, HttpConfig, RulePack, RunConfig, Switch, TlsFiles, DEFAULT_BATCH_SIZE,
    DEFAULT_RULES, DEFAULT_STALL_AFTER_SECS,
};
use super::properties;
use super::serve::{self, Shared};
use super::simulate::SimulatorArgs;
use super::status;
use crate::decode::Format;
use crate::http::HttpLimits;
use crate::lake::writer::LakeConfig;
use crate::metrics::Metrics;
use crate::model::{LiveNetwork, Network, Pseudonymiser};
use crate::ops::OpsAlerts;
use crate::pipeline::{self, PipelineConfig, Until};
use crate::rules::RulesStage;
use crate::sink::{restore_index, Container, ServingIndex};
use crate::source::kafka::{parse_setting, PartitionShare};
use crate::source::{KafkaSettings, SourceConfig, SourceSettings};
use crate::support::lock::{EngineLock, LockError};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Settings file (TOML): any option of `cds run` as a key without `--`, e.g.
    /// `checkpoint-interval = 5`; default CDS_CONFIG. A flag wins over its CDS_… variable,
    /// the variable over the file.
    #[arg(long, value_name = "FILE")]
    pub(super) config: Option<PathBuf>,
    /// `simulator`, `file:PATH` (JSON lines; `file:-` for stdin), `kafka://HOST:PORT/TOPIC`,
    /// `mllp://HOST:PORT` (an HL7 v2 listener) or `bronze:LAKE` (a lake's Bronze table, as
    /// `cds replay --from-bronze` reads it).
    #[arg(long, default_value = "simulator", value_name = "SRC")]
    source: String,
    /// Payload format of the source: `json` (the event model), `fhir` (R4 resources or
    /// Bundles), `hl7v2`, `ehr-csv` (a daily extract with a header line) or `auto` (FHIR, HL7 v2
    /// or JSON, told apart per payload). An `mllp://` source is always `hl7v2`.
    #[arg(long, default_value = "json", value_name = "FORMAT")]
    format: String,
    /// The departments file to watch for changes (from the global `--departments`).
    #[arg(skip)]
    pub(super) departments: Option<PathBuf>,
    /// `sqlite` (embedded, under the data directory) or `cosmos`.
    #[arg(long, default_value = "sqlite", value_name = "SINK")]
    sink: String,
    /// Cosmos DB sink tuning (TOML: flush_interval_ms, max_in_flight, max_retries,
    /// throughput, …); endpoint, key and database come from COSMOS_ENDPOINT, COSMOS_KEY and
    /// COSMOS_DATABASE.
    #[arg(long, value_name = "FILE")]
    cosmos_config: Option<PathBuf>,
    /// Holds the SQLite store, the local lake and the pseudonym key.
    #[arg(long, default_value = "./cds-data", value_name = "DIR")]
    data_dir: PathBuf,
    /// Rule pack directory (`.rhai` MLMs); default `cds-rules` when present; `off` disables.
    #[arg(long, value_name = "DIR")]
    rules: Option<Switch<PathBuf>>,
    /// Tokens file (TOML `[[token]]`: name, sha256, role, hospitals, departments); default
    /// CDS_TOKENS_FILE, else `DATA_DIR/tokens.toml`, created with one admin token on first start.
    #[arg(long, value_name = "FILE")]
    tokens: Option<PathBuf>,
    /// HTTP address for /healthz, /readyz, /metrics; port 0 picks a free port; `off` disables.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    http: Switch<String>,
    /// Open HTTP connections at most; beyond, a new connection is answered 503 and closed.
    #[arg(long, default_value_t = 512, value_name = "N")]
    http_max_connections: usize,
    /// Seconds a client has to send a request's headers (also the keep-alive idle limit).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    http_header_timeout: f64,
    /// Seconds within which a request (other than the live stream) is answered, else 503.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    http_request_timeout: f64,
    /// Live streams (`/api/alerts/stream`) per token at most; beyond, 429.
    #[arg(long, default_value_t = 4, value_name = "N")]
    http_streams_per_token: usize,
    /// Live streams in total at most; beyond, 429.
    #[arg(long, default_value_t = 256, value_name = "N")]
    http_streams_total: usize,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CDS Hooks: an identifier system (`urn:oid:…`, a URL) of the streams' patient ids, whose
    /// values in the Patient an EHR prefetched find the patient as well as `context.patientId`
    /// (repeatable); without one, prefetched identifiers are not used.
    #[arg(long, value_name = "SYSTEM")]
    hooks_patient_system: Vec<String>,
    /// Stop once a finite source is exhausted and every output is flushed.
    #[arg(long, conflicts_with = "until_idle")]
    until_end: bool,
    /// Stop after this many seconds without input.
    #[arg(long, value_name = "SECS")]
    until_idle: Option<f64>,
    /// Dataflow worker threads (per process).
    #[arg(long, default_value_t = 1, value_name = "N")]
    workers: usize,
    /// Threads the rule pack runs on (per process), each with its share of the patients;
    /// `auto`: one per CPU core, at most 8.
    #[arg(long, default_value = "auto", value_name = "N|auto")]
    rules_threads: String,
    /// Seconds of event time the rules wait for earlier events before they read a record, so
    /// that they read each patient's events in event-time order whatever the arrival order (and
    /// once the input has been quiet that long in wall time, whatever is held goes). A record
    /// later than the window is still evaluated and its alert marked `"late": true`. 0: the
    /// rules read the arrival order.
    #[arg(long, default_value_t = crate::pipeline::DEFAULT_REORDER_WINDOW.as_secs_f64(), value_name = "SECS")]
    reorder_window: f64,
    /// Processes of the timely cluster, each with `--workers` threads; 1 runs alone. A cluster
    /// reads Kafka: every process reads every partition and cleans its own patients' records.
    #[arg(long, default_value_t = 1, value_name = "P")]
    processes: usize,
    /// In a cluster: every producer keys its events by patient (one patient's events all in
    /// one partition), so each process reads only its own partitions (partition p belongs to
    /// worker p mod (P × N)) instead of every partition. With producers that do not key by
    /// patient this gives wrong KPIs; keep it the same for a deployment's life.
    #[arg(long)]
    partitions_by_patient: bool,
    /// This process's index in the cluster, 0-based (its line in the hosts file).
    #[arg(long, default_value_t = 0, value_name = "I")]
    process: usize,
    /// The cluster's hosts file: one `HOST:PORT` per line, process 0 first, the same file for
    /// every process (blank lines and `#` comments are skipped).
    #[arg(long, value_name = "FILE")]
    hosts: Option<PathBuf>,
    /// Most events per input batch (one dataflow epoch).
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE, value_name = "N")]
    batch_size: usize,
    /// Seconds between checkpoints (one is also written at a clean stop); 0 turns checkpoints
    /// off, and every run then starts from empty state.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    checkpoint_interval: f64,
    /// Where checkpoints go: a directory, or object storage (`az://CONTAINER/PATH`,
    /// `abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH`, with the lake's `AZURE_STORAGE_…`
    /// credentials) so that the process can continue on another machine; default
    /// `DATA_DIR/lake/checkpoints`.
    #[arg(long, value_name = "DIR|URL")]
    checkpoints: Option<String>,
    /// Continue from the checkpoints of another cluster layout (another number of processes
    /// or workers) when they are newer than this process's own: every process of the new
    /// layout splits the old processes' state by the ownership rule. Both layouts use one
    /// `--checkpoints` location, and the old one stopped at one point of the stream (see
    /// docs/cluster.md, Rescaling); harmless to leave on.
    #[arg(long)]
    rescale: bool,
    /// Seconds a pipeline stage may be busy without progress before `/readyz` answers 503
    /// naming it.
    #[arg(long, default_value_t = DEFAULT_STALL_AFTER_SECS, value_name = "SECS")]
    stall_after: f64,
    /// Where the Bronze/Silver/Gold Delta tables go: a directory, `az://CONTAINER/PATH` or
    /// `abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH` (credentials from the AZURE_STORAGE_*
    /// environment); default `DATA_DIR/lake`; `off` writes none.
    #[arg(long, value_name = "LOCATION")]
    lake: Option<Switch<String>>,
    /// Kafka consumer group.
    #[arg(long, default_value = "cds", value_name = "GROUP")]
    group: String,
    /// Extra librdkafka setting for the Kafka source (repeatable), e.g. `fetch.min.bytes=1`.
    #[arg(long = "kafka-config", value_name = "KEY=VALUE", value_parser = parse_setting)]
    kafka_config: Vec<(String, String)>,
    /// Kafka client settings from a properties file (`key=value` lines, `#` comments), e.g. a
    /// mounted secret with the SASL settings; `--kafka-config` wins for the same key.
    #[arg(long, value_name = "FILE")]
    kafka_config_file: Option<PathBuf>,
    /// Dead-letter topic for malformed messages (default `<topic>.deadletter`).
    #[arg(long, value_name = "TOPIC")]
    deadletter_topic: Option<String>,
    /// Environment variable with an Azure Event Hubs connection string (default
    /// EVENTHUB_CONNECTION_STRING); when set, the Kafka source connects to Event Hubs.
    #[arg(long, value_name = "NAME")]
    eventhub_connection_string_env: Option<String>,
    /// MLLP listener settings (with `--source mllp://` or `mllps://`).
    #[command(flatten)]
    mllp: crate::source::mllp::MllpArgs,
    /// Simulator settings (with `--source simulator`); its rate defaults to 2,000 events/s.
    #[command(flatten)]
    sim: SimulatorArgs,
    /// Operational alerts (`--ops-webhook`, thresholds).
    #[command(flatten)]
    ops: crate::ops::OpsArgs,
}

impl RunArgs {
    /// The run these flags describe.
    pub(super) fn into_config(self) -> anyhow::Result<RunConfig> {
        let source: SourceConfig = self.source.parse()?;
        let until = self.until()?;
        let checkpoint_interval = self.checkpoint_every()?;
        self.into_run(source, until, checkpoint_interval)
    }

    /// A replay of the lake's Bronze table (`cds replay --from-bronze`): the source is Bronze,
    /// the run ends with it, starts from empty state (no checkpoint is read or written), and
    /// the local dead-letter and quarantine stores start empty, because the replay writes all
    /// of them again. The lake it reads is the lake it writes: its exactly-once records keep
    /// every row that is there already from being added twice.
    pub(super) fn into_replay(self) -> anyhow::Result<RunConfig> {
        let lake = match &self.lake {
            Some(Switch::Off) => {
                anyhow::bail!("a replay reads the lake's Bronze table: `--lake off` has none")
            }
            Some(Switch::On(location)) => location.clone(),
            None => default_lake(&self.data_dir),
        };
        let config = self.into_run(SourceConfig::Bronze(lake), Until::End, None)?;
        crate::lake::Lake::open(&config.data_dir)
            .truncate_to((0, 0))
            .context("emptying the local dead-letter and quarantine stores")?;
        Ok(config)
    }

    /// Keeps every other engine off this run's data directory and local lake until the
    /// returned lock is dropped; taken before anything there is opened.
    pub(super) fn lock(&self, command: &str) -> Result<EngineLock, LockError> {
        let lake = match &self.lake {
            Some(Switch::Off) => None,
            Some(Switch::On(location)) => Some(location.clone()),
            None => Some(default_lake(&self.data_dir)),
        };
        EngineLock::take(&self.data_dir, lake.as_deref(), command)
    }

    /// When the run stops by itself: `--until-end`, `--until-idle`, or at shutdown.
    fn until(&self) -> anyhow::Result<Until> {
        Ok(match (self.until_end, self.until_idle) {
            (true, _) => Until::End,
            (false, Some(secs)) if secs.is_finite() && secs >= 0.0 => {
                Until::Idle(Duration::from_secs_f64(secs))
            }
            (false, Some(secs)) => {
                anyhow::bail!("--until-idle must be a number of seconds, got {secs}")
            }
            (false, None) => Until::Shutdown,
        })
    }

    /// `--checkpoint-interval`; `None` when 0 turns checkpoints off.
    fn checkpoint_every(&self) -> anyhow::Result<Option<Duration>> {
        let secs = self.checkpoint_interval;
        if !(secs.is_finite() && secs >= 0.0) {
            anyhow::bail!(
                "--checkpoint-interval must be a number of seconds (0 turns checkpoints off)"
            );
        }
        Ok((secs > 0.0).then(|| Duration::from_secs_f64(secs)))
    }

    /// The run of `source` with this stop and these checkpoints; every other setting comes
    /// from the flags.
    fn into_run(
        self,
        source: SourceConfig,
        until: Until,
        checkpoint_interval: Option<Duration>,
    ) -> anyhow::Result<RunConfig> {
        if self.workers == 0 || self.batch_size == 0 {
            anyhow::bail!("--workers and --batch-size must be at least 1");
        }
        let rules_threads = rules_threads(&self.rules_threads)?;
        // clap checks this pair on the command line only; either may come from the settings.
        anyhow::ensure!(
            self.tls_cert.is_some() == self.tls_key.is_some(),
            "--tls-cert and --tls-key go together"
        );
        anyhow::ensure!(
            self.stall_after.is_finite() && self.stall_after > 0.0,
            "--stall-after must be a positive number of seconds"
        );
        let reorder_window = Duration::try_from_secs_f64(self.reorder_window)
            .ok()
            .filter(|w| *w <= Duration::from_secs(3600))
            .context("--reorder-window must be a number of seconds from 0 to 3600")?;
        let source_settings = self.source_settings(&source, until)?;
        let sink = self
            .sink
            .parse::<crate::sink::SinkConfig>()?
            .with_cosmos_tuning(self.cosmos_config.clone());
        let http = self
            .http
            .clone()
            .on()
            .map(|address| self.http_config(address))
            .transpose()?;
        let mut cluster = cluster(self.processes, self.process, self.hosts.as_deref(), &source)?;
        if let Some(c) = cluster.as_mut() {
            c.partitions_by_patient = self.partitions_by_patient;
        }
        let lake = match self.lake {
            Some(given) => given.on(),
            None => Some(default_lake(&self.data_dir)),
        };
        Ok(RunConfig {
            source,
            source_settings,
            sink,
            rules: self.rules.into(),
            http,
            lake,
            until,
            checkpoint_interval,
            checkpoints: self.checkpoints.clone(),
            rescale: self.rescale,
            workers: self.workers,
            rules_threads,
            reorder_window,
            batch_size: self.batch_size,
            cluster,
            stall_after: Duration::from_secs_f64(self.stall_after),
            ops: self.ops.config(),
            departments: self.departments,
            data_dir: self.data_dir,
        })
    }

    /// What the source-specific flags say; the simulator's are read only when it runs.
    fn source_settings(
        &self,
        source: &SourceConfig,
        until: Until,
    ) -> anyhow::Result<SourceSettings> {
        let format: Format = self.format.parse().map_err(anyhow::Error::msg)?;
        let from_file = match &self.kafka_config_file {
            Some(file) => properties::read(file)?,
            None => Vec::new(),
        };
        let simulator = match source {
            SourceConfig::Simulator => {
                let mut config = self.sim.config()?;
                // A live demo by default; `--rate` overrides, and `--until-end` with a bounded
                // simulator runs as fast as possible.
                if config.rate.is_none() && !(until == Until::End && config.max_events.is_some()) {
                    config.rate = Some(2_000.0);
                }
                Some(config)
            }
            _ => None,
        };
        Ok(SourceSettings {
            simulator,
            follow: until != Until::End,
            format,
            mllp: self.mllp.clone(),
            mllp_log_dir: self.data_dir.join("mllp"),
            kafka: KafkaSettings {
                group: self.group.clone(),
                settings: properties::merge(from_file, &self.kafka_config),
                deadletter_topic: self.deadletter_topic.clone(),
                eventhub_connection_string_env: self.eventhub_connection_string_env.clone(),
                share: PartitionShare {
                    process: self.process,
                    processes: self.processes,
                    workers: self.workers,
                    keyed: self.partitions_by_patient,
                },
            },
        })
    }

    /// The HTTP server's settings, read only when it runs.
    fn http_config(&self, address: String) -> anyhow::Result<HttpConfig> {
        let secs = |value: f64, flag: &str| {
            Duration::try_from_secs_f64(value)
                .ok()
                .filter(|d| !d.is_zero())
                .with_context(|| format!("{flag} must be a positive number of seconds"))
        };
        let limits = HttpLimits {
            max_connections: self.http_max_connections,
            header_read_timeout: secs(self.http_header_timeout, "--http-header-timeout")?,
            request_timeout: secs(self.http_request_timeout, "--http-request-timeout")?,
            streams_per_token: self.http_streams_per_token,
            streams_total: self.http_streams_total,
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        Ok(HttpConfig {
            address,
            tokens: self.tokens.clone(),
            limits,
            tls,
            hooks_patient_systems: self.hooks_patient_system.clone(),
        })
    }
}

/// Runs the engine until its source ends, it is idle, or Ctrl-C.
pub fn run(config: RunConfig, network: Network) -> anyhow::Result<ExitCode> {
    crate::support::private::create_private_dir(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    let pseudonyms = Pseudonymiser::from_env_or_dir(&config.data_dir)?;
    let source = config.source.open(&config.source_settings, &network)?;
    let metrics = Arc::new(Metrics::new());
    metrics.stages.set_stall_after(config.stall_after);
    let ops = OpsAlerts::start(&config.ops, metrics.clone())?;
    let mut opened = config.sink.open(&config.data_dir, &metrics, &ops)?;
    let rules = load_rules(&config.rules, &network, &metrics)?;
    let shutdown = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("cds-http")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let shared = Shared {
        metrics: metrics.clone(),
        ready: Arc::new(AtomicBool::new(false)),
        pseudonyms: pseudonyms.clone(),
        network: LiveNetwork::new(network.clone()),
        stop: Arc::new(tokio::sync::Notify::new()),
        index: ServingIndex::default(),
    };
    let feed = match &config.http {
        Some(http) => {
            // The API answers from what the sink holds from the start, whichever sink it is.
            restore_index(opened.sink.as_mut(), &shared.index)
                .context("reading the sink's documents for the API")?;
            for container in [Container::Kpis, Container::Alerts] {
                metrics
                    .sink
                    .index_documents
                    .with_label_values(&[container.name()])
                    .set(i64::try_from(shared.index.len(container)).unwrap_or(i64::MAX));
            }
            Some(serve::start(&runtime, http, &config, &shared)?)
        }
        None => None,
    };
    stop_on_ctrl_c(&runtime, &shutdown);

    let total_beds = network.total_beds();
    let mut pipeline_config = pipeline_config(&config, network, &ops);
    pipeline_config.index = feed.as_ref().map(|_| shared.index.clone());
    pipeline_config.live_network = Some(shared.network.clone());
    pipeline_config.feed = feed;
    if let Some(interval) = opened.flush_interval {
        pipeline_config.flush_interval = interval;
    }
    info!(source = source.name(), sink = %config.sink, workers = config.workers, "starting");
    shared.ready.store(true, Ordering::Relaxed);
    let stop_status = Arc::new(AtomicBool::new(false));
    let status_thread = status::spawn(metrics.clone(), total_beds, stop_status.clone());
    let result = pipeline::run(
        pipeline_config,
        pipeline::Parts {
            source,
            sink: opened.sink,
            rules,
            pseudonyms,
            metrics,
            shutdown,
        },
    );
    // The notice of what stopped the run (a sink that failed for good) still goes out.
    ops.finish(Duration::from_secs(10));
    stop_status.store(true, Ordering::Relaxed);
    if let Some(t) = status_thread {
        let _ = t.join();
    }
    shared.stop.notify_waiters();
    runtime.shutdown_timeout(Duration::from_secs(2));
    let summary = result?;
    println!("{}", status::summary(&summary, total_beds));
    Ok(ExitCode::SUCCESS)
}

/// The clinical rule pack of the run, if it has one.
fn load_rules(
    pack: &RulePack,
    network: &Network,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Option<RulesStage>> {
    let dir = match pack {
        RulePack::Off => return Ok(None),
        RulePack::Dir(dir) => dir.as_path(),
        RulePack::Default if std::path::Path::new(DEFAULT_RULES).is_dir() => {
            std::path::Path::new(DEFAULT_RULES)
        }
        RulePack::Default => {
            info!("no rule pack in ./{DEFAULT_RULES}: running without clinical rules");
            return Ok(None);
        }
    };
    Ok(Some(RulesStage::load(
        dir,
        network.clone(),
        metrics.clone(),
    )?))
}

/// First Ctrl-C: stop reading, flush, exit cleanly. Second: leave at once.
fn stop_on_ctrl_c(runtime: &tokio::runtime::Runtime, shutdown: &Arc<AtomicBool>) {
    let shutdown = shutdown.clone();
    runtime.spawn(async move {
        // Ctrl-C, or SIGTERM (how Kubernetes and systemd stop a process): the run finishes
        // what it read, writes its last checkpoint and exits.
        if stop_signal().await {
            eprintln!("\ncds: stopping (Ctrl-C again to abort)");
            shutdown.store(true, Ordering::Relaxed);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
}

/// Waits for Ctrl-C or SIGTERM; `false` when neither can be listened for.
async fn stop_signal() -> bool {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            return tokio::select! {
                r = tokio::signal::ctrl_c() => r.is_ok(),
                _ = term.recv() => true,
            };
        }
    }
    tokio::signal::ctrl_c().await.is_ok()
}

/// `--rules-threads`: a number from 1 to 64, or `auto` (one per CPU core, at most 8).
fn rules_threads(given: &str) -> anyhow::Result<usize> {
    if given == "auto" {
        return Ok(crate::pipeline::auto_rules_threads());
    }
    match given.parse::<usize>() {
        Ok(n) if (1..=64).contains(&n) => Ok(n),
        _ => {
            anyhow::bail!("--rules-threads must be `auto` or a number from 1 to 64, not '{given}'")
        }
    }
}

/// The pipeline's settings from the run's; the feed and the flush interval come later, from
/// the HTTP server and the sink.
fn pipeline_config(config: &RunConfig, network: Network, ops: &OpsAlerts) -> PipelineConfig {
    let mut pipeline = PipelineConfig::new(config.data_dir.clone(), network);
    pipeline.workers = config.workers;
    pipeline.rules_threads = config.rules_threads;
    pipeline.reorder_window = config.reorder_window;
    pipeline.cluster = config.cluster.clone();
    pipeline.batch_size = config.batch_size;
    pipeline.until = config.until;
    pipeline.checkpoint_interval = config.checkpoint_interval;
    pipeline.checkpoints = config.checkpoints.clone();
    pipeline.rescale = config.rescale;
    pipeline.lake = config.lake.as_deref().map(LakeConfig::new);
    if let (Some(lake), Some(cluster)) = (pipeline.lake.as_mut(), &pipeline.cluster) {
        if cluster.patient_split(config.workers).is_some() {
            lake.writer = Some(cluster.process);
        }
    }
    pipeline.format = config.format();
    pipeline.departments_file = config.departments.clone();
    pipeline.ops = ops.clone();
    pipeline
}

#[cfg(test)]
pub(super) mod tests {
    use std::path::Path;

    use clap::Parser;

    use super::*;
    use crate::sink::SinkConfig;

    #[derive(Debug, Parser)]
    struct Run {
        #[command(flatten)]
        run: RunArgs,
    }

    /// The flags of `cds run` as clap reads them.
    pub(in crate::cli) fn run_args(flags: &[&str]) -> RunArgs {
        Run::try_parse_from(std::iter::once("cds").chain(flags.iter().copied()))
            .expect("valid flags")
            .run
    }

    /// A data directory of its own for one test.
    fn data_dir(test: &str) -> PathBuf {
        std::env::temp_dir().join(format!("cds-run-config-{}-{test}", std::process::id()))
    }

    #[test]
    fn without_flags_a_run_reads_the_simulator_into_sqlite_and_serves_http() {
        let config = run_args(&[]).into_config().expect("the defaults are valid");
        assert_eq!(config.source, SourceConfig::Simulator);
        assert_eq!(config.sink, SinkConfig::Sqlite);
        assert_eq!(config.rules, RulePack::Default);
        let http = config.http.as_ref().expect("HTTP is on by default");
        assert_eq!(http.address, "127.0.0.1:8080");
        assert!(http.tls.is_none());
        assert_eq!(
            config.lake.as_deref(),
            Some(default_lake(Path::new("./cds-data")).as_str())
        );
        assert_eq!(config.until, Until::Shutdown);
        assert_eq!(config.checkpoint_interval, Some(Duration::from_secs(10)));
        assert_eq!(config.format(), Format::Json);
        let simulator = config
            .source_settings
            .simulator
            .expect("the simulator runs");
        assert_eq!(simulator.rate, Some(2_000.0), "a live demo by default");
        assert!(config.source_settings.follow);
    }

    #[test]
    fn off_turns_http_rules_and_lake_off() {
        let config = run_args(&["--http", "off", "--rules", "off", "--lake", "off"])
            .into_config()
            .expect("valid");
        assert!(config.http.is_none());
        assert_eq!(config.rules, RulePack::Off);
        assert_eq!(config.lake, None);
        let config = run_args(&[
            "--rules",
            "pack",
            "--lake",
            "az://c/p",
            "--http",
            "0.0.0.0:0",
        ])
        .into_config()
        .expect("valid");
        assert_eq!(config.rules, RulePack::Dir("pack".into()));
        assert_eq!(config.lake.as_deref(), Some("az://c/p"));
        assert_eq!(config.http.expect("on").address, "0.0.0.0:0");
    }

    #[test]
    fn source_sink_and_format_are_typed() {
        let config = run_args(&[
            "--source",
            "mllp://127.0.0.1:2575",
            "--sink",
            "cosmos",
            "--cosmos-config",
            "cosmos.toml",
            "--until-end",
        ])
        .into_config()
        .expect("valid");
        assert_eq!(
            config.source,
            SourceConfig::Mllp("mllp://127.0.0.1:2575".into())
        );
        assert_eq!(
            config.sink,
            SinkConfig::Cosmos {
                tuning: Some("cosmos.toml".into())
            }
        );
        assert_eq!(config.format(), Format::Hl7v2);
        assert!(config.source_settings.simulator.is_none());
        assert!(!config.source_settings.follow);
    }

    #[test]
    fn a_bad_source_sink_or_format_is_an_error_naming_what_is_accepted() {
        let error = |flags: &[&str]| {
            run_args(flags)
                .into_config()
                .expect_err("refused")
                .to_string()
        };
        assert!(error(&["--source", "ftp://x"]).contains("`file:PATH`"));
        assert!(error(&["--sink", "postgres"]).contains("`sqlite` or `cosmos`"));
        assert!(error(&["--format", "xml"]).contains("json, fhir, hl7v2, ehr-csv or auto"));
    }

    #[test]
    fn the_simulator_flags_are_checked_only_when_it_runs() {
        let flags = ["--dirty-rate", "2", "--source", "file:x.jsonl"];
        assert!(run_args(&flags).into_config().is_ok());
        assert!(run_args(&flags[..2]).into_config().is_err());
    }

    #[test]
    fn a_replay_reads_the_bronze_table_of_its_lake_to_the_end() {
        let dir = data_dir("replay");
        let dir_text = dir.display().to_string();
        let config = run_args(&["--data-dir", &dir_text, "--checkpoint-interval", "5"])
            .into_replay()
            .expect("a replay of the default lake");
        let lake = default_lake(&dir);
        assert_eq!(config.source, SourceConfig::Bronze(lake.clone()));
        assert_eq!(config.lake, Some(lake));
        assert_eq!(config.until, Until::End);
        assert_eq!(config.checkpoint_interval, None);
        let config = run_args(&["--data-dir", &dir_text, "--lake", "az://c/p"])
            .into_replay()
            .expect("a replay of a remote lake");
        assert_eq!(config.source, SourceConfig::Bronze("az://c/p".into()));
        let e = run_args(&["--data-dir", &dir_text, "--lake", "off"])
            .into_replay()
            .expect_err("no lake to replay");
        assert!(e.to_string().contains("`--lake off`"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
