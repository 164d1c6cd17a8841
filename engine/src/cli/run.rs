use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tracing::info;

use super::simulate::SimulatorArgs;
use super::status;
use crate::http::acks::AckStore;
use crate::http::audit::Audit;
use crate::http::auth::{Tokens, TOKENS_FILE_ENV};
use crate::http::feed::LiveFeed;
use crate::http::{self, HttpState};
use crate::lake::writer::LakeConfig;
use crate::metrics::Metrics;
use crate::model::{Network, Pseudonymiser};
use crate::pipeline::{self, ClusterConfig, PipelineConfig, Until};
use crate::rules::RulesStage;
use crate::sink::cosmos::{CosmosConfig, CosmosSink};
use crate::sink::sqlite::{SqliteConfig, SqliteSink};
use crate::sink::Sink;
use crate::source::bronze::{BronzeConfig, BronzeSource};
use crate::source::file::{FileConfig, FileSource, Framing};
use crate::source::format::Format;
use crate::source::kafka::{parse_setting, KafkaConfig, KafkaSource, PartitionShare};
use crate::source::mllp::MllpSource;
use crate::source::simulator::SimulatorSource;
use crate::source::{Source, SourceSpec};

/// Where `cds run` looks for the rule pack when `--rules` is not given.
pub const DEFAULT_RULES: &str = "cds-rules";

#[derive(Debug, Args)]
pub struct RunArgs {
    /// `simulator`, `file:PATH` (JSON lines; `file:-` for stdin), `kafka://HOST:PORT/TOPIC`,
    /// `mllp://HOST:PORT` (an HL7 v2 listener) or `bronze:LAKE` (a lake's Bronze table, as
    /// `cds replay --from-bronze` reads it).
    #[arg(long, default_value = "simulator", value_name = "SRC")]
    source: String,
    /// Payload format of the source: `json` (the event model), `fhir` (R4 resources or
    /// Bundles), `hl7v2`, `ehr-csv` (a daily extract with a header line) or `auto` (FHIR, HL7 v2
    /// or JSON, told apart per payload). An `mllp://` source is always `hl7v2`.
    #[arg(long, default_value = "json", value_name = "FORMAT")]
    pub(super) format: String,
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
    rules: Option<String>,
    /// Tokens file (TOML `[[token]]`: name, sha256, role, hospitals, departments); default
    /// CDS_TOKENS_FILE, else `DATA_DIR/tokens.toml`, created with one admin token on first start.
    #[arg(long, value_name = "FILE")]
    tokens: Option<PathBuf>,
    /// HTTP address for /healthz, /readyz, /metrics; port 0 picks a free port; `off` disables.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    http: String,
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
    /// Stop once a finite source is exhausted and every output is flushed.
    #[arg(long, conflicts_with = "until_idle")]
    until_end: bool,
    /// Stop after this many seconds without input.
    #[arg(long, value_name = "SECS")]
    until_idle: Option<f64>,
    /// Dataflow worker threads (per process).
    #[arg(long, default_value_t = 1, value_name = "N")]
    workers: usize,
    /// Processes of the timely cluster, each with `--workers` threads; 1 runs alone. A cluster
    /// reads Kafka: partition p belongs to worker p mod (P × N).
    #[arg(long, default_value_t = 1, value_name = "P")]
    processes: usize,
    /// This process's index in the cluster, 0-based (its line in the hosts file).
    #[arg(long, default_value_t = 0, value_name = "I")]
    process: usize,
    /// The cluster's hosts file: one `HOST:PORT` per line, process 0 first, the same file for
    /// every process (blank lines and `#` comments are skipped).
    #[arg(long, value_name = "FILE")]
    hosts: Option<PathBuf>,
    /// Most events per input batch (one dataflow epoch).
    #[arg(long, default_value_t = 16_384, value_name = "N")]
    batch_size: usize,
    /// Seconds between checkpoints (one is also written at a clean stop); 0 turns checkpoints
    /// off, and every run then starts from empty state.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    checkpoint_interval: f64,
    /// Seconds a pipeline stage may be busy without progress before `/readyz` answers 503
    /// naming it.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    stall_after: f64,
    /// Where the Bronze/Silver/Gold Delta tables go: a directory, `az://CONTAINER/PATH` or
    /// `abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH` (credentials from the AZURE_STORAGE_*
    /// environment); default `DATA_DIR/lake`; `off` writes none.
    #[arg(long, value_name = "LOCATION")]
    lake: Option<String>,
    /// Kafka consumer group.
    #[arg(long, default_value = "cds", value_name = "GROUP")]
    group: String,
    /// Extra librdkafka setting for the Kafka source (repeatable), e.g. `fetch.min.bytes=1`.
    #[arg(long = "kafka-config", value_name = "KEY=VALUE", value_parser = parse_setting)]
    kafka_config: Vec<(String, String)>,
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
    /// Turns a run into a replay of the lake's Bronze table (`cds replay --from-bronze`): the
    /// source is Bronze, the run ends with it, starts from empty state (no checkpoint is read
    /// or written), and the local dead-letter and quarantine stores start empty, because the
    /// replay writes all of them again. The lake it reads is the lake it writes: its
    /// exactly-once records keep every row that is there already from being added twice.
    pub(super) fn into_replay(mut self: Box<Self>) -> anyhow::Result<Self> {
        let lake = match self.lake.as_deref() {
            Some("off") => {
                anyhow::bail!("a replay reads the lake's Bronze table: `--lake off` has none")
            }
            Some(location) => location.to_owned(),
            None => self.data_dir.join("lake").display().to_string(),
        };
        self.source = format!("bronze:{lake}");
        self.until_end = true;
        self.until_idle = None;
        self.checkpoint_interval = 0.0;
        crate::lake::Lake::open(&self.data_dir)
            .truncate_to((0, 0))
            .context("emptying the local dead-letter and quarantine stores")?;
        Ok(*self)
    }
}

pub fn run(args: RunArgs, network: Network) -> anyhow::Result<ExitCode> {
    if !(args.checkpoint_interval.is_finite() && args.checkpoint_interval >= 0.0) {
        anyhow::bail!(
            "--checkpoint-interval must be a number of seconds (0 turns checkpoints off)"
        );
    }
    if args.workers == 0 || args.batch_size == 0 {
        anyhow::bail!("--workers and --batch-size must be at least 1");
    }
    let until = match (args.until_end, args.until_idle) {
        (true, _) => Until::End,
        (false, Some(secs)) if secs.is_finite() && secs >= 0.0 => {
            Until::Idle(Duration::from_secs_f64(secs))
        }
        (false, Some(secs)) => {
            anyhow::bail!("--until-idle must be a number of seconds, got {secs}")
        }
        (false, None) => Until::Shutdown,
    };
    crate::support::private::create_private_dir(&args.data_dir)
        .with_context(|| format!("creating the data directory {}", args.data_dir.display()))?;
    let pseudonyms = Pseudonymiser::from_env_or_dir(&args.data_dir)?;
    let source = open_source(&args, &network, until)?;
    let metrics = Arc::new(Metrics::new());
    anyhow::ensure!(
        args.stall_after.is_finite() && args.stall_after > 0.0,
        "--stall-after must be a positive number of seconds"
    );
    metrics
        .stages
        .set_stall_after(Duration::from_secs_f64(args.stall_after));
    let ops = crate::ops::OpsAlerts::start(&args.ops.config(), metrics.clone())?;
    let mut flush_interval = None;
    let sink: Box<dyn Sink> = match args.sink.as_str() {
        "sqlite" => {
            let config = SqliteConfig::in_data_dir(&args.data_dir);
            Box::new(
                SqliteSink::open(&config)
                    .with_context(|| format!("opening {}", config.path.display()))?
                    .counting_retries(metrics.sink_retries.clone()),
            )
        }
        "cosmos" => {
            let config = CosmosConfig::load(args.cosmos_config.as_deref())?;
            flush_interval = Some(config.flush_interval());
            info!(database = %config.database, "connecting to Cosmos DB");
            Box::new(
                CosmosSink::open(config, metrics.clone(), &args.data_dir)
                    .context("opening the Cosmos DB sink")?
                    .with_ops(ops.clone()),
            )
        }
        other => anyhow::bail!("unknown sink {other:?}: expected `sqlite` or `cosmos`"),
    };

    let rules = match args.rules.as_deref() {
        Some("off") => None,
        Some(dir) => Some(RulesStage::load(
            Path::new(dir),
            network.clone(),
            metrics.clone(),
        )?),
        None if Path::new(DEFAULT_RULES).is_dir() => Some(RulesStage::load(
            Path::new(DEFAULT_RULES),
            network.clone(),
            metrics.clone(),
        )?),
        None => {
            info!("no rule pack in ./{DEFAULT_RULES}: running without clinical rules");
            None
        }
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("cds-http")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let stop_http = Arc::new(tokio::sync::Notify::new());
    let mut feed = None;
    if args.http != "off" {
        let (listener, addr) = runtime
            .block_on(http::bind(&args.http))
            .with_context(|| format!("binding the HTTP address {}", args.http))?;
        let tokens_file = args
            .tokens
            .clone()
            .or_else(|| std::env::var_os(TOKENS_FILE_ENV).map(PathBuf::from));
        let (tokens, new_token) = match tokens_file {
            Some(path) => (Tokens::load(&path)?, None),
            None => Tokens::bootstrap(&args.data_dir)?,
        };
        let scheme = if args.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        eprintln!("cds: HTTP on {scheme}://{addr} (/healthz, /readyz, /metrics need no token)");
        match new_token {
            Some(t) => eprintln!(
                "cds: created an admin token (shown once; only its hash is stored in {}):\n  dashboard: {scheme}://{addr}/?token={t}",
                args.data_dir.join("tokens.toml").display()
            ),
            None => eprintln!("cds: dashboard: {scheme}://{addr}/?token=<your token>"),
        }
        let acks = AckStore::open(&args.data_dir).context("opening the acknowledgement store")?;
        http::publish_rates(&metrics, &acks);
        let (feed_tx, _) = tokio::sync::broadcast::channel(16_384);
        let live = {
            let _entered = runtime.enter();
            LiveFeed::spawn(&feed_tx)
        };
        feed = Some(feed_tx);
        let audit = Audit::open(Some(&args.data_dir.join("audit.jsonl")))
            .with_context(|| "opening the access audit log".to_owned())?;
        let secs = |value: f64, flag: &str| {
            Duration::try_from_secs_f64(value)
                .ok()
                .filter(|d| !d.is_zero())
                .with_context(|| format!("{flag} must be a positive number of seconds"))
        };
        let limits = http::HttpLimits {
            max_connections: args.http_max_connections,
            header_read_timeout: secs(args.http_header_timeout, "--http-header-timeout")?,
            request_timeout: secs(args.http_request_timeout, "--http-request-timeout")?,
            streams_per_token: args.http_streams_per_token,
            streams_total: args.http_streams_total,
        };
        let tokens = Arc::new(tokens);
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(http::tls_config(cert, key)?),
            _ => None,
        };
        {
            let _entered = runtime.enter();
            Tokens::watch(&tokens, Duration::from_secs(2));
        }
        let state = HttpState {
            metrics: metrics.clone(),
            ready: ready.clone(),
            tokens,
            sessions: Default::default(),
            store: (args.sink == "sqlite").then(|| SqliteConfig::in_data_dir(&args.data_dir)),
            feed: Some(live),
            http_metrics: http::HttpMetrics::register(&metrics, &audit),
            audit,
            acks: Some(acks),
            pseudonyms: Some(pseudonyms.clone()),
            limits,
            streams: http::feed::StreamSlots::new(limits.streams_per_token, limits.streams_total),
            tls,
        };
        let stop = stop_http.clone();
        runtime.spawn(async move {
            if let Err(e) = http::serve(listener, state, async move { stop.notified().await }).await
            {
                tracing::error!(error = %e, "HTTP server stopped");
            }
        });
    }
    {
        // First Ctrl-C: stop reading, flush, exit cleanly. Second: leave at once.
        let shutdown = shutdown.clone();
        runtime.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\ncds: stopping (Ctrl-C again to abort)");
                shutdown.store(true, Ordering::Relaxed);
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
    }

    let total_beds = network.total_beds();
    let mut config = PipelineConfig::new(args.data_dir.clone(), network);
    config.workers = args.workers;
    config.cluster = cluster(&args)?;
    config.batch_size = args.batch_size;
    config.until = until;
    config.feed = feed;
    config.checkpoint_interval =
        (args.checkpoint_interval > 0.0).then(|| Duration::from_secs_f64(args.checkpoint_interval));
    config.lake = match args.lake.as_deref() {
        Some("off") => None,
        Some(location) => Some(LakeConfig::new(location)),
        None => Some(LakeConfig::new(
            args.data_dir.join("lake").display().to_string(),
        )),
    };
    config.format = source_format(&args)?;
    config.departments_file = args.departments.clone();
    config.ops = ops.clone();
    if let Some(interval) = flush_interval {
        config.flush_interval = interval;
    }
    info!(source = source.name(), sink = %args.sink, workers = args.workers, "starting");
    ready.store(true, Ordering::Relaxed);
    let stop_status = Arc::new(AtomicBool::new(false));
    let status_thread = status::spawn(metrics.clone(), total_beds, stop_status.clone());
    let result = pipeline::run(config, source, sink, rules, pseudonyms, metrics, shutdown);
    // The notice of what stopped the run (a sink that failed for good) still goes out.
    ops.finish(Duration::from_secs(10));
    stop_status.store(true, Ordering::Relaxed);
    if let Some(t) = status_thread {
        let _ = t.join();
    }
    stop_http.notify_waiters();
    runtime.shutdown_timeout(Duration::from_secs(2));
    let summary = result?;
    println!("{}", status::summary(&summary, total_beds));
    Ok(ExitCode::SUCCESS)
}

fn open_source(args: &RunArgs, network: &Network, until: Until) -> anyhow::Result<Box<dyn Source>> {
    Ok(match args.source.parse::<SourceSpec>()? {
        SourceSpec::Simulator => {
            let mut config = args.sim.config()?;
            // A live demo by default; `--rate` overrides, and `--until-end` with a bounded
            // simulator runs as fast as possible.
            if config.rate.is_none() && !(until == Until::End && config.max_events.is_some()) {
                config.rate = Some(2_000.0);
            }
            Box::new(SimulatorSource::new(config, network))
        }
        SourceSpec::File(path) => {
            let framing = framing(&path, source_format(args)?);
            let config = FileConfig {
                path,
                follow: until != Until::End,
            };
            Box::new(FileSource::open(&config)?.with_framing(framing))
        }
        SourceSpec::Bronze(lake) => {
            let source = BronzeSource::open(&BronzeConfig { lake })?;
            info!(payloads = source.remaining(), "replaying the Bronze table");
            Box::new(source)
        }
        SourceSpec::Mllp(url) => {
            let config = args.mllp.config(&url, args.data_dir.join("mllp"))?;
            Box::new(MllpSource::open(&config)?)
        }
        SourceSpec::Kafka(url) => {
            let mut config = KafkaConfig::from_url(&url)?;
            config.group = args.group.clone();
            config.settings = args.kafka_config.clone();
            config.deadletter_topic = args.deadletter_topic.clone();
            config.eventhub_connection_string_env = args.eventhub_connection_string_env.clone();
            config.share = PartitionShare {
                process: args.process,
                processes: args.processes,
                workers: args.workers,
            };
            Box::new(KafkaSource::open(config)?)
        }
    })
}

/// This process's place in the cluster (`--processes`, `--process`, `--hosts`), if it has one.
fn cluster(args: &RunArgs) -> anyhow::Result<Option<ClusterConfig>> {
    if args.processes == 0 {
        anyhow::bail!("--processes must be at least 1");
    }
    if args.process >= args.processes {
        anyhow::bail!(
            "--process {} is not one of the {} processes (0 to {})",
            args.process,
            args.processes,
            args.processes - 1
        );
    }
    if args.processes == 1 {
        return Ok(None);
    }
    if !args.source.starts_with("kafka://") {
        anyhow::bail!(
            "a cluster reads a Kafka source (every process would read all of {:?})",
            args.source
        );
    }
    let file = args
        .hosts
        .as_ref()
        .context("--processes above 1 needs --hosts FILE (one HOST:PORT per process)")?;
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the hosts file {}", file.display()))?;
    let addresses: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .take(args.processes)
        .collect();
    if addresses.len() < args.processes {
        anyhow::bail!(
            "the hosts file {} names {} processes, --processes says {}",
            file.display(),
            addresses.len(),
            args.processes
        );
    }
    if let Some(bad) = addresses.iter().find(|a| !a.contains(':')) {
        anyhow::bail!("hosts file line {bad:?}: expected HOST:PORT");
    }
    Ok(Some(ClusterConfig {
        process: args.process,
        addresses,
    }))
}

/// The decoding format of the run's source: `--format`, and always HL7 v2 over MLLP.
fn source_format(args: &RunArgs) -> anyhow::Result<Format> {
    let format: Format = args.format.parse().map_err(anyhow::Error::msg)?;
    let mllp = args.source.starts_with("mllp://") || args.source.starts_with("mllps://");
    Ok(if mllp { Format::Hl7v2 } else { format })
}

/// How a file of this format is cut into payloads: HL7 v2 by message, FHIR by line unless the
/// file is one pretty-printed resource (its first line is not a whole JSON value).
fn framing(path: &Path, format: Format) -> Framing {
    let first_line = || -> Option<Vec<u8>> {
        use std::io::BufRead;
        let file = std::fs::File::open(path).ok()?;
        let mut line = Vec::new();
        std::io::BufReader::new(file)
            .read_until(b'\n', &mut line)
            .ok()?;
        Some(line)
    };
    let whole_json = |line: &[u8]| serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok();
    match format {
        Format::Hl7v2 => Framing::Hl7,
        Format::Fhir | Format::Auto => match first_line() {
            Some(l)
                if l.iter()
                    .skip_while(|b| b.is_ascii_whitespace())
                    .take(3)
                    .eq(b"MSH".iter()) =>
            {
                Framing::Hl7
            }
            Some(l) if !l.iter().all(u8::is_ascii_whitespace) && !whole_json(&l) => {
                Framing::Document
            }
            _ => Framing::Lines,
        },
        Format::Json | Format::EhrCsv => Framing::Lines,
    }
}
