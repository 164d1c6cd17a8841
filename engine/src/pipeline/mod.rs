//! The job: source → Silver → Gold dataflow → sink, on bounded channels.
//!
//! ```text
//! ingest thread                     timely workers (N)                sink thread
//! source.poll ─► Silver ─► facts ─► [bounded, per worker] ─► dataflow ─► [bounded] ─► KpiState ─► Sink
//!                  │         └────► [bounded, per rules thread] ─► rule pack share ─► alerts ──┘
//!                  └─► dead letters, quarantine (lake)
//! ```
//!
//! Each poll becomes one epoch. Every worker receives a batch for every epoch (possibly empty)
//! so that all advance together; when every worker reports an epoch complete, the sink writes
//! the documents it changed, stamped with that epoch's event-time watermark. Bounded channels
//! carry backpressure from a slow sink back to the source.
//!
//! This file starts the threads and joins them; each thread's loop has its own file (`ingest`,
//! `workers`, `rules_thread`, `sink_thread`), and `messages` holds what they send each other.
//! When checkpoints are taken and written, and how a run continues from one, is
//! [`crate::checkpoint`]'s.

mod ingest;
mod messages;
mod rules_thread;
mod sink_thread;
mod workers;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::Utc;
use timely::communication::WorkerGuards;
use tracing::{info, instrument};

use crate::checkpoint::{self, CheckpointError, CheckpointStore, Coordinator};
use crate::decode::Format;
use crate::dims::department_versions;
use crate::lake::writer::{LakeConfig, LakeHandle, LakeMessage, LakeWriteError};
use crate::lake::LakeError;
use crate::metrics::Metrics;
use crate::model::{LiveNetwork, Network, Pseudonymiser};
use crate::ops::OpsAlerts;
use crate::rules::RulesStage;
use crate::sink::{Feed, Sink, SinkError};
use crate::source::{Source, SourceError};

use ingest::{Downstream, IngestStart, Ingested};
use messages::{SinkMessage, Sunk, WorkerBatch};
use rules_thread::RulesThreads;
use sink_thread::Writer;

/// When `run` stops by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Only on shutdown (Ctrl-C): the service mode.
    Shutdown,
    /// When a finite source is exhausted.
    End,
    /// After this long without input.
    Idle(Duration),
}

/// How the job runs.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub data_dir: PathBuf,
    pub network: Network,
    /// Where the departments in force are published for others (the HTTP API) to follow;
    /// `None`: the pipeline keeps them to itself.
    pub live_network: Option<LiveNetwork>,
    pub workers: usize,
    /// Threads the rule pack runs on, each with its share of the patients
    /// ([`crate::rules::Share`]).
    pub rules_threads: usize,
    /// How far the event time must move past a record before the rules read it, so that they
    /// read event-time order ([`crate::rules::ReorderWindow`]); zero: arrival order.
    pub reorder_window: Duration,
    /// Most payloads per epoch.
    pub batch_size: usize,
    /// Longest wait for input before an epoch is closed with what arrived.
    pub poll_wait: Duration,
    /// Shortest time between two sink writes (changes in between are coalesced).
    pub flush_interval: Duration,
    pub until: Until,
    /// Where written documents are announced (the HTTP live feed); `None` when nobody reads.
    pub feed: Option<Feed>,
    /// What the HTTP API answers from: the sink thread puts every document it wrote there;
    /// `None` when nobody reads.
    pub index: Option<crate::sink::ServingIndex>,
    /// How often a checkpoint is taken (also once at the end); `None`: never, and a run
    /// starts from empty state.
    pub checkpoint_interval: Option<Duration>,
    /// Where checkpoints go: a directory or an object-storage URL
    /// ([`CheckpointStore::at`]); `None`: `DATA_DIR/lake/checkpoints`.
    pub checkpoints: Option<String>,
    /// Continue from the checkpoints of another cluster layout (`--rescale`) when they are
    /// newer than this process's own ([`crate::checkpoint`], rescaling).
    pub rescale: bool,
    /// Where the Bronze/Silver/Gold Delta tables go; `None`: not written (`cds run` writes
    /// them to `DATA_DIR/lake` unless told otherwise).
    pub lake: Option<LakeConfig>,
    /// How payloads are decoded (`--format`).
    pub format: Format,
    /// The departments file to watch for capacity and staff changes, if any.
    pub departments_file: Option<PathBuf>,
    /// Where the stages raise operational alerts.
    pub(crate) ops: OpsAlerts,
    /// This process's place in a timely cluster; `None`: the process runs alone.
    pub cluster: Option<ClusterConfig>,
}

/// A process of a timely cluster: `P` processes with `workers` threads each form one dataflow,
/// exchanging data by patient and by hospital over TCP. Each process cleans its own patients'
/// records (reading every Kafka partition, or only its own when the producers key by patient),
/// keeps its own checkpoints and writes its own share of the documents (those of the hospitals
/// its workers own).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This process's index, 0-based.
    pub process: usize,
    /// `HOST:PORT` of every process, in process order.
    pub addresses: Vec<String>,
    /// The producers key every event by patient (`--partitions-by-patient`): a process reads
    /// only its own partitions instead of every partition.
    pub partitions_by_patient: bool,
}

impl ClusterConfig {
    /// How the ingest thread splits the records with the other processes, when every process
    /// reads every partition.
    pub(crate) fn patient_split(&self, workers: usize) -> Option<crate::cluster::PatientSplit> {
        (!self.partitions_by_patient && self.addresses.len() > 1).then_some(
            crate::cluster::PatientSplit {
                process: self.process,
                processes: self.addresses.len(),
                workers,
            },
        )
    }
}

impl PipelineConfig {
    pub fn new(data_dir: PathBuf, network: Network) -> Self {
        PipelineConfig {
            data_dir,
            network,
            workers: 1,
            rules_threads: 1,
            reorder_window: DEFAULT_REORDER_WINDOW,
            batch_size: 16_384,
            poll_wait: Duration::from_millis(20),
            // The embedded store commits cheaply (WAL): a short interval keeps event-to-KPI
            // latency low; sinks that pay per write set their own (Cosmos DB: 250 ms).
            flush_interval: Duration::from_millis(5),
            until: Until::End,
            feed: None,
            index: None,
            live_network: None,
            checkpoint_interval: None,
            checkpoints: None,
            rescale: false,
            lake: None,
            format: Format::Json,
            departments_file: None,
            ops: OpsAlerts::detached(),
            cluster: None,
        }
    }
}

/// `--reorder-window`'s default: see docs/rules.md ("Event-time order") for the latency it
/// costs and why.
pub const DEFAULT_REORDER_WINDOW: Duration = Duration::from_millis(250);

/// `--rules-threads auto`: one rules thread per CPU core, at most 8 (each thread keeps every
/// patient's placement, so more threads cost memory).
pub fn auto_rules_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, 8)
}

/// Why the job stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    LakeWrite(#[from] LakeWriteError),
    #[error("the dataflow failed: {0}")]
    Dataflow(#[from] DataflowError),
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Rules(#[from] crate::rules::RulesError),
}

/// Why the job's threads could not run together.
#[derive(Debug, thiserror::Error)]
pub enum DataflowError {
    #[error("the rules thread stopped")]
    RulesStopped,
    #[error("a dataflow worker stopped")]
    WorkerStopped,
    #[error("the rules thread panicked")]
    RulesPanicked,
    #[error("the sink thread panicked")]
    SinkPanicked,
    #[error("a dataflow worker panicked")]
    WorkerPanicked,
    /// A thread could not be started.
    #[error("{0}")]
    Spawn(#[from] std::io::Error),
    /// Timely could not start its workers (or connect to the other processes of a cluster).
    #[error("{0}")]
    Timely(String),
}

/// What a run did, for the final summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSummary {
    pub events: u64,
    pub dead_letters: u64,
    pub duplicates: u64,
    pub quarantined: u64,
    pub gold_records: u64,
    /// Records read that other processes of the cluster clean (their patients').
    pub elsewhere: u64,
    pub documents_written: u64,
    pub epochs: u64,
    pub elapsed: Duration,
    pub occupied: i64,
}

impl RunSummary {
    /// Events per second over the whole run.
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// What a run is made of besides its settings: the stages that differ from one deployment to
/// another, and what it shares with the rest of the process.
pub struct Parts {
    pub source: Box<dyn Source>,
    pub sink: Box<dyn Sink>,
    /// `None`: no rules (`--rules off`).
    pub rules: Option<RulesStage>,
    pub pseudonyms: Pseudonymiser,
    pub metrics: Arc<Metrics>,
    /// Set to stop the run (Ctrl-C, SIGTERM, a test).
    pub shutdown: Arc<AtomicBool>,
}

/// Runs the job until the source ends, input stays idle, or `shutdown` is set (per `until`).
#[instrument(skip_all, fields(source = parts.source.name(), workers = config.workers))]
pub fn run(config: PipelineConfig, parts: Parts) -> Result<RunSummary, PipelineError> {
    let Parts {
        mut source,
        sink,
        rules,
        pseudonyms,
        metrics,
        shutdown,
    } = parts;
    let started = Instant::now();
    for collector in source.collectors() {
        metrics.register(collector);
    }
    let mut rules = rules;
    let store = match (config.checkpoint_interval, &config.checkpoints) {
        (None, _) => None,
        (Some(_), None) => Some(CheckpointStore::in_data_dir(&config.data_dir)),
        // The processes of a cluster each keep their own checkpoints, as they each keep their
        // own data directory.
        (Some(_), Some(location)) => Some(CheckpointStore::at(&match &config.cluster {
            Some(cluster) => format!(
                "{}/process-{}",
                location.trim_end_matches('/'),
                cluster.process
            ),
            None => location.clone(),
        })?),
    };
    // A cluster whose processes read every partition keeps other state than one that splits
    // the partitions, and another split with another number of processes: a checkpoint of
    // another layout is not taken for this one's, unless the run rescales from it.
    let source_identity = source.identity();
    let split = config
        .cluster
        .as_ref()
        .and_then(|c| c.patient_split(config.workers));
    let identity = checkpoint::identity(
        &source_identity,
        split.map(|s| (s.processes, config.workers)),
    );
    let hospitals = match &config.cluster {
        Some(c) => crate::rules::Hospitals {
            process: c.process,
            workers: config.workers,
            processes: c.addresses.len(),
        },
        None => crate::rules::Hospitals::ALL,
    };
    let rescale = match (config.rescale, &config.checkpoints) {
        (false, _) => None,
        (true, None) => {
            return Err(CheckpointError::Rescale(
                "--rescale reads the checkpoints of every process of the layout before, so \
                 both layouts need one --checkpoints location that every process reaches"
                    .into(),
            )
            .into())
        }
        (true, Some(_))
            if config
                .cluster
                .as_ref()
                .is_some_and(|c| c.partitions_by_patient) =>
        {
            return Err(CheckpointError::Rescale(
                "a cluster whose processes read their own partitions (--partitions-by-patient) \
                 keeps its patients with the partitions; its state cannot be split among \
                 another number of processes"
                    .into(),
            )
            .into())
        }
        (true, Some(location)) => Some(checkpoint::Rescale {
            location,
            source: &source_identity,
            process: hospitals.process,
            processes: hospitals.processes,
            hospitals,
        }),
    };
    let restore = checkpoint::recover(
        store.as_ref(),
        &source_identity,
        &identity,
        rules.as_mut(),
        rescale.as_ref(),
    )?;
    // The departments in force: the file's, and the names of those the checkpoint's state holds
    // that have left it since.
    let network = {
        let mut network = config.network.clone();
        if let Some(state) = &restore {
            network.remember_retired(state.department_names());
        }
        match &config.live_network {
            Some(live) => {
                live.publish(network);
                live.clone()
            }
            None => LiveNetwork::new(network),
        }
    };
    // Split after the restore: a checkpoint holds the whole stage, whatever the number of
    // threads that wrote it.
    let rules = match rules {
        Some(stage) => {
            // In a cluster each process runs the department rules of its own hospitals.
            let stage = match &config.cluster {
                Some(c) => {
                    let stage = stage.for_hospitals(hospitals);
                    if c.partitions_by_patient && c.addresses.len() > 1 {
                        stage.without_forecasts()
                    } else {
                        stage
                    }
                }
                None => stage,
            };
            let mut shares = stage.into_shares(config.rules_threads)?;
            for share in &mut shares {
                share.watch_errors(config.ops.rule_error_watch());
                share.follow_network(network.clone());
            }
            Some(shares)
        }
        None => None,
    };
    let mut threads = Threads::start(&config, &network, sink, rules, &metrics)?;
    let checkpoints = match (store, config.checkpoint_interval) {
        (Some(store), Some(interval)) => {
            let c = Coordinator::new(
                store,
                interval,
                identity,
                config.ops.clone(),
                metrics.clone(),
            );
            Some(match threads.rules.as_mut().and_then(|r| r.states.take()) {
                Some(rx) => c.with_rules(rx),
                None => c,
            })
        }
        _ => None,
    };
    let start = IngestStart {
        config: &config,
        network,
        source: source.as_mut(),
        pseudonyms,
        downstream: threads.downstream(),
        restore,
        checkpoints,
        metrics: &metrics,
    };
    let ingested = ingest::ingest(start, &shutdown);
    let joined = threads.join()?;
    let mut summary = finish(ingested, joined, source.as_mut())?;
    summary.elapsed = started.elapsed();
    info!(
        events = summary.events,
        elapsed_ms = summary.elapsed.as_millis() as u64,
        "run finished"
    );
    Ok(summary)
}

/// The threads of a run, started before the ingest and joined after it, with the ingest's
/// ends of their channels.
struct Threads {
    to_workers: Vec<SyncSender<WorkerBatch>>,
    /// The rules threads, when rules run.
    rules: Option<RulesThreads>,
    /// Epochs below this number are durably written by the sink (KPIs and alerts).
    durable: Arc<AtomicU64>,
    lake: Option<LakeHandle>,
    sink: JoinHandle<Result<Sunk, PipelineError>>,
    watcher: JoinHandle<()>,
    stop_watch: Arc<AtomicBool>,
    workers: WorkerGuards<()>,
}

/// What the threads hand back once joined.
struct Joined {
    /// The rules stage as it stopped, for the final checkpoint.
    rules: Option<RulesStage>,
    sunk: Result<Sunk, PipelineError>,
    lake: Option<LakeHandle>,
}

impl Threads {
    /// Starts the lake writer, the sink, the departments watcher, the rules threads (one per
    /// share) and the timely workers.
    fn start(
        config: &PipelineConfig,
        network: &LiveNetwork,
        sink: Box<dyn Sink>,
        rules: Option<Vec<RulesStage>>,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, PipelineError> {
        let count = config.workers.max(1);
        let durable = Arc::new(AtomicU64::new(0));
        let (out_tx, out_rx) = sync_channel::<SinkMessage>(1024);
        let (to_workers, from_ingest) = (0..count).map(|_| sync_channel::<WorkerBatch>(4)).unzip();
        let lake = start_lake(config, metrics)?;
        let writer = Writer {
            sink,
            feed: config.feed.clone(),
            index: config.index.clone(),
            metrics: metrics.clone(),
            kpi_epochs: 0,
            alert_epochs: rules.as_ref().map(|shares| vec![0; shares.len()]),
            durable: durable.clone(),
            lake: lake.as_ref().and_then(LakeHandle::sender),
            ops: config.ops.clone(),
        };
        let sink = sink_thread::spawn(config, network.current().as_ref().clone(), writer, out_rx)?;
        let stop_watch = Arc::new(AtomicBool::new(false));
        let watcher = spawn_watcher(
            config,
            network.clone(),
            out_tx.clone(),
            lake.as_ref(),
            stop_watch.clone(),
        )?;
        let rules = rules
            .map(|shares| RulesThreads::spawn(shares, &out_tx, &metrics.stages))
            .transpose()?;
        let workers = workers::start(workers::Workers {
            count,
            cluster: config.cluster.clone(),
            from_ingest,
            to_sink: out_tx,
            stages: metrics.stages.clone(),
        })?;
        Ok(Threads {
            to_workers,
            rules,
            durable,
            lake,
            sink,
            watcher,
            stop_watch,
            workers,
        })
    }

    fn downstream(&self) -> Downstream<'_> {
        Downstream {
            to_workers: &self.to_workers,
            to_rules: self.rules.as_ref().map(|r| r.inputs.as_slice()),
            durable: &self.durable,
            lake: self.lake.as_ref(),
        }
    }

    /// Closes the ingest's channels and joins every thread: the workers finish their epochs
    /// and close theirs; the sink then drains and flushes.
    fn join(self) -> Result<Joined, PipelineError> {
        let Threads {
            to_workers,
            lake,
            sink,
            watcher,
            stop_watch,
            rules,
            workers,
            ..
        } = self;
        drop(to_workers);
        stop_watch.store(true, Ordering::Relaxed);
        watcher.thread().unpark();
        let _ = watcher.join();
        let rules = match rules {
            Some(threads) => threads.join()?,
            None => None,
        };
        let joined = workers.join();
        let sunk = sink.join().map_err(|_| DataflowError::SinkPanicked)?;
        if joined.iter().any(Result::is_err) {
            return Err(DataflowError::WorkerPanicked.into());
        }
        Ok(Joined { rules, sunk, lake })
    }
}

/// The lake writer, when the Delta tables are written, with the departments as they start.
fn start_lake(
    config: &PipelineConfig,
    metrics: &Arc<Metrics>,
) -> Result<Option<LakeHandle>, PipelineError> {
    let Some(lake) = config.lake.clone() else {
        return Ok(None);
    };
    let handle = LakeHandle::start(lake, metrics.clone())?;
    let now = Utc::now().timestamp_micros();
    handle.send(LakeMessage::Departments(department_versions(
        &config.network,
        now,
    )))?;
    Ok(Some(handle))
}

/// Watches the departments file: a department added, removed or with other beds or staff is
/// put in force for Silver and the rules, and goes to the sink (for the occupancy documents)
/// and to the lake.
fn spawn_watcher(
    config: &PipelineConfig,
    live: LiveNetwork,
    to_sink: SyncSender<SinkMessage>,
    lake: Option<&LakeHandle>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, PipelineError> {
    let to_lake = lake.and_then(LakeHandle::sender);
    crate::dims::watcher::spawn(
        config.departments_file.clone(),
        config.network.clone(),
        crate::sink::sqlite::SqliteConfig::in_data_dir(&config.data_dir).path,
        move |network| {
            live.publish(live.current().succeeded_by(network.clone()));
            // A changed capacity or staff count is a new version of `gold/dim_department`.
            if let Some(lake) = &to_lake {
                let now = Utc::now().timestamp_micros();
                let _ = lake.send(LakeMessage::Departments(department_versions(&network, now)));
            }
            let _ = to_sink.send(SinkMessage::Departments(network));
        },
        stop,
    )
    .map_err(|e| PipelineError::Dataflow(e.into()))
}

/// Once every thread has stopped: the lake commits, the last checkpoint is written, and the
/// source positions left are committed.
fn finish(
    ingested: Result<Ingested, PipelineError>,
    joined: Joined,
    source: &mut dyn Source,
) -> Result<RunSummary, PipelineError> {
    let Ingested {
        mut summary,
        mut commits,
        final_state,
        checkpoints,
    } = ingested?;
    let sunk = joined.sunk?;
    // The lake commits what it holds before the final checkpoint records it as done.
    if let Some(lake) = joined.lake {
        lake.finish()?;
    }
    // Every output is written now: a last checkpoint, then commit what is left.
    if let (Some(mut c), Some(ingest)) = (checkpoints, final_state) {
        let last_epoch = summary.epochs.saturating_sub(1);
        c.finish(last_epoch, ingest, joined.rules.as_ref())?;
    }
    commits.commit_through(source, u64::MAX)?;
    summary.documents_written = sunk.documents_written;
    summary.occupied = sunk.occupied;
    Ok(summary)
}
