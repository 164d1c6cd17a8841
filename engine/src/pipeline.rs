//! The job: source → Silver → Gold dataflow → sink, on bounded channels.
//!
//! ```text
//! ingest thread                     timely workers (N)                sink thread
//! source.poll ─► Silver ─► facts ─► [bounded, per worker] ─► dataflow ─► [bounded] ─► KpiState ─► Sink
//!                  │         └────► [bounded] ─► rules thread: rule pack ─► alerts ──┘
//!                  └─► dead letters, quarantine (lake)
//! ```
//!
//! Each poll becomes one epoch. Every worker receives a batch for every epoch (possibly empty)
//! so that all advance together; when every worker reports an epoch complete, the sink writes
//! the documents it changed, stamped with that epoch's event-time watermark. Bounded channels
//! carry backpressure from a slow sink back to the source.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tracing::{info, instrument};

use crate::decode::{Decoder, DecoderState, Format};
use crate::dims::department_versions;
use crate::gold::{self, FactBuilder, GoldBatch, GoldOutput, GoldState, KpiState, Micros};
use crate::lake::checkpoint::{Checkpoint, CheckpointStore};
use crate::lake::tables::{BronzeRow, KpiRow, RowPosition, SilverRow};
use crate::lake::writer::{LakeConfig, LakeHandle, LakeMessage, LakeWriteError};
use crate::lake::{Lake, LakeError};
use crate::metrics::Metrics;
use crate::model::Document;
use crate::model::SourcePosition;
use crate::model::{format_time, Network, Pseudonymiser};
use crate::ops::{Condition, OpsAlerts};
use crate::rules::{RulesStage, RELOAD_INTERVAL};
use crate::silver::{DedupWindow, Outcome, Silver, SilverRecord};
use crate::sink::{announce, Container, Feed, Sink, SinkError};
use crate::source::{DeadLetterDeliveries, Poll, Position, RawBatch, Source, SourceError};
use crate::support::{codec, Stage, StageHealth};

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
    pub workers: usize,
    /// Most payloads per epoch.
    pub batch_size: usize,
    /// Longest wait for input before an epoch is closed with what arrived.
    pub poll_wait: Duration,
    /// Shortest time between two sink writes (changes in between are coalesced).
    pub flush_interval: Duration,
    pub until: Until,
    /// Where written documents are announced (the HTTP live feed); `None` when nobody reads.
    pub feed: Option<Feed>,
    /// How often a checkpoint is taken (also once at the end); `None`: never, and a run
    /// starts from empty state.
    pub checkpoint_interval: Option<Duration>,
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
/// exchanging data by patient and by hospital over TCP. Each process reads its own Kafka
/// partitions, keeps its own checkpoints and writes its own share of the documents (those of
/// the hospitals its workers own).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This process's index, 0-based.
    pub process: usize,
    /// `HOST:PORT` of every process, in process order.
    pub addresses: Vec<String>,
}

/// How often a clustered process closes an empty epoch while its input is quiet: the other
/// processes' epochs complete only when every process has moved past them.
const CLUSTER_HEARTBEAT: Duration = Duration::from_millis(100);

impl PipelineConfig {
    pub fn new(data_dir: PathBuf, network: Network) -> Self {
        PipelineConfig {
            data_dir,
            network,
            workers: 1,
            batch_size: 16_384,
            poll_wait: Duration::from_millis(20),
            // The embedded store commits cheaply (WAL): a short interval keeps event-to-KPI
            // latency low; sinks that pay per write set their own (Cosmos DB: 250 ms).
            flush_interval: Duration::from_millis(5),
            until: Until::End,
            feed: None,
            checkpoint_interval: None,
            lake: None,
            format: Format::Json,
            departments_file: None,
            ops: OpsAlerts::detached(),
            cluster: None,
        }
    }
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
    Dataflow(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
}

impl From<crate::lake::checkpoint::CheckpointError> for PipelineError {
    fn from(e: crate::lake::checkpoint::CheckpointError) -> Self {
        PipelineError::Checkpoint(e.to_string())
    }
}

/// What a run did, for the final summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSummary {
    pub events: u64,
    pub dead_letters: u64,
    pub duplicates: u64,
    pub quarantined: u64,
    pub gold_records: u64,
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

/// What the sink thread receives.
enum SinkMessage {
    Gold(GoldOutput),
    /// A changed departments file: capacities for the occupancy documents.
    Departments(Network),
    /// The alerts of one epoch (possibly none: the rules thread reports every epoch).
    Alerts {
        epoch: u64,
        documents: Vec<Document>,
        read_at: Instant,
    },
}

impl From<GoldOutput> for SinkMessage {
    fn from(g: GoldOutput) -> Self {
        SinkMessage::Gold(g)
    }
}

/// One batch of Gold-eligible records, in arrival order, for the rules thread.
struct RulesBatch {
    epoch: u64,
    records: Vec<(u64, Box<SilverRecord>)>,
    read_at: Instant,
    /// Send the stage's state after this batch: a checkpoint is being taken at this epoch.
    snapshot: bool,
}

/// The rules stage's state at an epoch, for a checkpoint.
type RulesSnapshot = (u64, Result<Vec<u8>, String>);

/// What a checkpoint keeps of the ingest side (borrowed when written, owned when read).
#[derive(serde::Serialize, serde::Deserialize)]
struct IngestState<'a> {
    dedup: Cow<'a, DedupWindow>,
    gold: GoldState<'a>,
    /// The last processed position per stream and partition.
    positions: Vec<Position>,
    watermark: Micros,
    /// Lake table lengths: dead letters, quarantine.
    lake: (u64, u64),
    /// What the payload decoder remembers (FHIR encounters, where patients lie).
    decoder: DecoderState<'a>,
}

/// A checkpoint taken at `epoch`, waiting for the rules state and for its outputs to be
/// durable before it is written.
struct PendingCheckpoint {
    epoch: u64,
    ingest: Vec<u8>,
    rules: Option<Vec<u8>>,
}

/// How the ingest thread checkpoints.
struct Checkpointing {
    store: CheckpointStore,
    interval: Duration,
    identity: String,
    /// Where the rules thread answers snapshot requests; `None` when no rules run.
    rules: Option<Receiver<RulesSnapshot>>,
    /// Epochs covered by the newest written checkpoint.
    through: u64,
    /// Whether the last write failed: a quiet input still gets another checkpoint.
    failed: bool,
    ops: OpsAlerts,
}

/// The operational alert detail of a checkpoint that could not be written.
const CHECKPOINT_FAILED: &str =
    "a checkpoint could not be written; source positions are committed only through the last one written";

/// One epoch's facts for one worker.
struct WorkerBatch {
    epoch: u64,
    batch: GoldBatch,
    watermark: Micros,
    read_at: Instant,
}

/// Runs the job until the source ends, input stays idle, or `shutdown` is set (per `until`).
#[instrument(skip_all, fields(source = source.name(), workers = config.workers))]
pub fn run(
    config: PipelineConfig,
    mut source: Box<dyn Source>,
    sink: Box<dyn Sink>,
    rules: Option<RulesStage>,
    pseudonyms: Pseudonymiser,
    metrics: Arc<Metrics>,
    shutdown: Arc<AtomicBool>,
) -> Result<RunSummary, PipelineError> {
    let started = Instant::now();
    for collector in source.collectors() {
        metrics.register(collector);
    }
    let workers = config.workers.max(1);
    let durable = Arc::new(AtomicU64::new(0));
    let mut rules = rules;
    if let Some(stage) = rules.as_mut() {
        stage.watch_errors(config.ops.rule_error_watch());
    }
    let store = config
        .checkpoint_interval
        .map(|_| CheckpointStore::in_data_dir(&config.data_dir));
    let identity = source.identity();
    let restored = match store.as_ref() {
        Some(s) => s.load_newest(&identity)?,
        None => None,
    };
    let restore = match &restored {
        Some(c) => {
            if let Some(stage) = rules.as_mut() {
                match &c.rules {
                    Some(bytes) => stage.restore(bytes).map_err(|e| {
                        PipelineError::Checkpoint(format!("the rules state does not load: {e}"))
                    })?,
                    None => tracing::warn!(
                        "the checkpoint was taken without rules; rules start from empty state"
                    ),
                }
            }
            let state: IngestState<'static> = codec::decode(&c.ingest).map_err(|e| {
                PipelineError::Checkpoint(format!("the ingest state does not load: {e}"))
            })?;
            info!(taken = %c.written_at, positions = ?state.positions, "continuing from a checkpoint");
            Some(state)
        }
        None => None,
    };
    drop(restored);
    let (out_tx, out_rx) = sync_channel::<SinkMessage>(1024);
    let mut to_workers = Vec::with_capacity(workers);
    let mut from_ingest = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (tx, rx) = sync_channel::<WorkerBatch>(4);
        to_workers.push(tx);
        from_ingest.push(Some(rx));
    }
    let from_ingest = Arc::new(Mutex::new(from_ingest));

    let lake_writer = match config.lake.clone() {
        Some(lake) => {
            let handle = LakeHandle::start(lake, metrics.clone())?;
            let now = Utc::now().timestamp_micros();
            handle.send(LakeMessage::Departments(department_versions(
                &config.network,
                now,
            )))?;
            Some(handle)
        }
        None => None,
    };
    let sink_thread = {
        let (network, interval) = (config.network.clone(), config.flush_interval);
        // In a cluster: this process's first worker, and the workers of the whole cluster.
        let share = config
            .cluster
            .as_ref()
            .map(|c| (c.process * workers, c.addresses.len() * workers));
        let writer = Writer {
            sink,
            feed: config.feed.clone(),
            metrics: metrics.clone(),
            kpi_epochs: 0,
            alert_epochs: rules.as_ref().map(|_| 0),
            durable: durable.clone(),
            lake: lake_writer.as_ref().and_then(LakeHandle::sender),
            ops: config.ops.clone(),
        };
        std::thread::Builder::new()
            .name("cds-sink".into())
            .spawn(move || {
                let state = match share {
                    Some((first, of)) => KpiState::new(network).only_workers(first, workers, of),
                    None => KpiState::new(network),
                };
                sink_loop(out_rx, writer, state, workers, interval)
            })
            .map_err(|e| PipelineError::Dataflow(e.to_string()))?
    };

    let stop_watch = Arc::new(AtomicBool::new(false));
    let watcher = {
        let tx = out_tx.clone();
        let to_lake = lake_writer.as_ref().and_then(LakeHandle::sender);
        crate::dims::watcher::spawn(
            config.departments_file.clone(),
            config.network.clone(),
            crate::sink::sqlite::SqliteConfig::in_data_dir(&config.data_dir).path,
            move |network| {
                // A changed capacity or staff count is a new version of `gold/dim_department`.
                if let Some(lake) = &to_lake {
                    let now = Utc::now().timestamp_micros();
                    let _ = lake.send(LakeMessage::Departments(department_versions(&network, now)));
                }
                let _ = tx.send(SinkMessage::Departments(network));
            },
            stop_watch.clone(),
        )
        .map_err(|e| PipelineError::Dataflow(e.to_string()))?
    };

    let (snapshot_tx, snapshot_rx) = sync_channel::<RulesSnapshot>(2);
    let (rules_tx, rules_thread) = match rules {
        Some(stage) => {
            let (tx, rx) = sync_channel::<RulesBatch>(2);
            let out = out_tx.clone();
            let stages = metrics.stages.clone();
            let handle = std::thread::Builder::new()
                .name("cds-rules".into())
                .spawn(move || rules_loop(rx, stage, out, snapshot_tx, stages))
                .map_err(|e| PipelineError::Dataflow(e.to_string()))?;
            (Some(tx), Some(handle))
        }
        None => (None, None),
    };
    let checkpointing = match (store.clone(), config.checkpoint_interval) {
        (Some(store), Some(interval)) => Some(Checkpointing {
            store,
            interval,
            identity: identity.clone(),
            rules: rules_tx.as_ref().map(|_| snapshot_rx),
            through: 0,
            failed: false,
            ops: config.ops.clone(),
        }),
        _ => None,
    };

    let (timely_config, first_worker) = match &config.cluster {
        None => (timely::Config::process(workers), 0),
        Some(c) => (
            timely::Config {
                communication: timely::CommunicationConfig::Cluster {
                    threads: workers,
                    process: c.process,
                    addresses: c.addresses.clone(),
                    report: false,
                    zerocopy: false,
                },
                worker: timely::WorkerConfig::default(),
            },
            c.process * workers,
        ),
    };
    let worker_stages = metrics.stages.clone();
    let guards = timely::execute(timely_config, move |worker| {
        // Workers are numbered across the cluster; this process's are `first_worker..`.
        let index = worker.index().saturating_sub(first_worker);
        let rx = from_ingest
            .lock()
            .ok()
            .and_then(|mut v| v.get_mut(index).and_then(Option::take));
        let out = out_tx.clone();
        let stages = worker_stages.clone();
        let (mut inputs, probe) =
            worker.dataflow::<u64, _, _>(|scope| gold::build(scope, out.clone()));
        let Some(rx) = rx else { return };
        while let Ok(WorkerBatch {
            epoch,
            batch,
            watermark,
            read_at,
        }) = rx.recv()
        {
            let _busy = stages.busy(Stage::Gold);
            crate::support::fault::drill(Stage::Gold);
            inputs.insert(batch);
            inputs.advance_to(epoch + 1);
            while probe.less_than(&(epoch + 1)) {
                worker.step();
            }
            let complete = GoldOutput::Complete {
                worker: index,
                epoch,
                watermark,
                read_at,
            };
            if out.send(SinkMessage::Gold(complete)).is_err() {
                break;
            }
        }
    })
    .map_err(PipelineError::Dataflow)?;

    let ingested = ingest(
        &config,
        source.as_mut(),
        pseudonyms,
        Downstream {
            to_workers: &to_workers,
            to_rules: rules_tx.as_ref(),
            durable: &durable,
            lake: lake_writer.as_ref(),
        },
        restore,
        checkpointing,
        &metrics,
        &shutdown,
    );
    drop(to_workers);
    drop(rules_tx);
    stop_watch.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let mut final_rules = None;
    if let Some(t) = rules_thread {
        match t.join() {
            Ok(stage) => final_rules = Some(stage),
            Err(_) => return Err(PipelineError::Dataflow("the rules thread panicked".into())),
        }
    }
    // Workers finish their epochs and close their channels; the sink then drains and flushes.
    let joined = guards.join();
    let sunk = sink_thread
        .join()
        .map_err(|_| PipelineError::Dataflow("the sink thread panicked".into()))?;
    if joined.iter().any(Result::is_err) {
        return Err(PipelineError::Dataflow("a dataflow worker panicked".into()));
    }
    let Ingested {
        mut summary,
        mut commits,
        final_state,
    } = ingested?;
    let (documents_written, occupied) = sunk?;
    // The lake commits what it holds before the final checkpoint records it as done.
    if let Some(lake) = lake_writer {
        lake.finish()?;
    }
    // Every output is written now: a last checkpoint, then commit what is left.
    if let (Some(store), Some(ingest)) = (store, final_state) {
        let rules = match final_rules.as_ref().map(|stage| stage.snapshot()) {
            Some(Ok(bytes)) => Some(bytes),
            Some(Err(e)) => return Err(PipelineError::Checkpoint(e)),
            None => None,
        };
        let bytes = store
            .write(&Checkpoint {
                source: identity,
                written_at: format_time(&Utc::now().fixed_offset()),
                ingest,
                rules,
            })
            .inspect_err(|_| {
                config
                    .ops
                    .raise(Condition::CheckpointFailed, CHECKPOINT_FAILED)
            })?;
        metrics.checkpoint.checkpoints_written.inc();
        metrics.checkpoint.checkpoint_bytes.set(bytes as i64);
        metrics.checkpoint.checkpoint_age_seconds.set(0);
    }
    commits.commit_through(source.as_mut(), u64::MAX)?;
    summary.documents_written = documents_written;
    summary.occupied = occupied;
    summary.elapsed = started.elapsed();
    info!(
        events = summary.events,
        elapsed_ms = summary.elapsed.as_millis() as u64,
        "run finished"
    );
    Ok(summary)
}

/// Turns the source's dead-letter deliveries into `cds_deadletter_publish_failures_total` and
/// the operational alert: raised when letters fail, cleared when letters get through again.
#[derive(Default)]
struct DeadLetterWatch {
    seen: DeadLetterDeliveries,
}

impl DeadLetterWatch {
    fn observe(&mut self, now: DeadLetterDeliveries, metrics: &Metrics, ops: &OpsAlerts) {
        let failed = now.failed.saturating_sub(self.seen.failed);
        let delivered = now.delivered.saturating_sub(self.seen.delivered);
        if failed > 0 {
            metrics.source.deadletter_publish_failures.inc_by(failed);
            ops.raise(
                Condition::DeadLetterTopic,
                "dead letters cannot be published to the dead-letter topic; they stay in the local dead-letter store",
            );
        } else if delivered > 0 {
            ops.clear(Condition::DeadLetterTopic);
        }
        self.seen = now;
    }
}

/// Turns the source's availability into the outage metrics: one count per outage, and its
/// length while it lasts.
#[derive(Default)]
struct OutageWatch {
    down: bool,
}

impl OutageWatch {
    fn observe(&mut self, unavailable_since: Option<Instant>, metrics: &Metrics) {
        match unavailable_since {
            Some(since) => {
                if !self.down {
                    self.down = true;
                    metrics.source.source_outages.inc();
                }
                metrics
                    .source
                    .source_unavailable_seconds
                    .set(i64::try_from(since.elapsed().as_secs()).unwrap_or(i64::MAX));
            }
            None if self.down => {
                self.down = false;
                metrics.source.source_unavailable_seconds.set(0);
            }
            None => {}
        }
    }
}

/// The ingest loop: poll, clean, route facts to workers, one epoch per poll.
// Each argument is a different owner's handle (config, source, downstream channels, restored
// state, checkpointing, metrics, shutdown); bundling them would only rename the list.
#[allow(clippy::too_many_arguments)]
fn ingest(
    config: &PipelineConfig,
    source: &mut dyn Source,
    pseudonyms: Pseudonymiser,
    downstream: Downstream<'_>,
    restore: Option<IngestState<'static>>,
    mut checkpointing: Option<Checkpointing>,
    metrics: &Metrics,
    shutdown: &AtomicBool,
) -> Result<Ingested, PipelineError> {
    let Downstream {
        to_workers,
        to_rules,
        durable,
        lake: lake_writer,
    } = downstream;
    // What is durable for a checkpoint: the sink's outputs and the lake's tables.
    let durable_now = || {
        let sunk = durable.load(Ordering::Acquire);
        lake_writer.map_or(sunk, |l| sunk.min(l.durable()))
    };
    let mut stream_names: HashMap<u16, Arc<str>> = HashMap::new();
    let workers = to_workers.len();
    let mut silver = Silver::new(config.network.clone());
    let mut decoder = Decoder::new(config.format, pseudonyms.clone());
    let mut facts = FactBuilder::new(pseudonyms, workers);
    let mut lake = Lake::open(&config.data_dir);
    let mut raw = RawBatch::default();
    let mut summary = RunSummary::default();
    let mut watermark = Micros::MIN;
    let mut last_input = Instant::now();
    let mut last_epoch = Instant::now();
    let mut last_lake_flush = Instant::now();
    let mut ended = false;
    let source_name = source.name().to_owned();
    let events_in = metrics.source.events_in.with_label_values(&[&source_name]);
    let mut flag_counts = [0u64; crate::silver::DqFlag::ALL.len()];
    let mut commits = Commits::default();
    let mut lag_read = Instant::now();
    let mut outages = OutageWatch::default();
    let mut deadletters = DeadLetterWatch::default();
    // The last processed position per (stream, partition); what a checkpoint covers is skipped.
    let mut processed: BTreeMap<(u16, i32), i64> = BTreeMap::new();
    let mut covered: HashMap<(u16, i32), i64> = HashMap::new();
    let mut pending: Option<PendingCheckpoint> = None;
    let mut last_checkpoint = Instant::now();
    // Epochs below this are in a written checkpoint: only their positions may be committed.
    let mut checkpointed = 0u64;
    // Whether events arrived since the last checkpoint was taken.
    let mut uncheckpointed = false;

    let fresh = restore.is_none();
    if let Some(state) = restore {
        silver.restore_dedup(state.dedup.into_owned());
        decoder.restore(state.decoder);
        lake.truncate_to(state.lake)?;
        watermark = state.watermark;
        for p in &state.positions {
            processed.insert((p.stream, p.partition), p.offset);
            covered.insert((p.stream, p.partition), p.offset);
        }
        source.skip_to(&state.positions)?;
        // Epoch 0 hands the new dataflow the checkpoint's facts; its outputs rewrite the same
        // documents the previous run wrote.
        let mut batches = vec![GoldBatch::default(); workers];
        facts.restore(state.gold, &mut batches);
        send_epoch(
            to_workers,
            to_rules,
            0,
            (batches, Vec::new()),
            (watermark, Instant::now(), false),
        )?;
        summary.epochs = 1;
    }
    if let (true, Some(c)) = (fresh, checkpointing.as_mut()) {
        // A first, empty checkpoint before any input: it records where the lake files stood,
        // so that a crash before the next checkpoint cuts back what this run appended instead
        // of leaving it to be appended again.
        send_epoch(
            to_workers,
            to_rules,
            0,
            (vec![GoldBatch::default(); workers], Vec::new()),
            (watermark, Instant::now(), true),
        )?;
        pending = Some(PendingCheckpoint {
            epoch: 0,
            ingest: encode_ingest(&silver, &facts, &decoder, &processed, watermark, &mut lake)?,
            rules: None,
        });
        if let Some(l) = lake_writer {
            l.send(LakeMessage::Flush { epoch: 0 })?;
        }
        summary.epochs = 1;
        while !shutdown.load(Ordering::Relaxed) {
            if let Some(written) = c.try_write(&mut pending, durable_now(), metrics)? {
                checkpointed = written;
                last_checkpoint = Instant::now();
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    while !shutdown.load(Ordering::Relaxed) {
        if let Some(c) = checkpointing.as_mut() {
            if let Some(written) = c.try_write(&mut pending, durable_now(), metrics)? {
                checkpointed = written;
                last_checkpoint = Instant::now();
            }
            metrics
                .checkpoint
                .checkpoint_age_seconds
                .set(last_checkpoint.elapsed().as_secs() as i64);
        }
        let committable = match checkpointing {
            Some(_) => checkpointed,
            None => durable.load(Ordering::Acquire),
        };
        commits.commit_durable(source, committable)?;
        if lag_read.elapsed() >= Duration::from_secs(5) {
            lag_read = Instant::now();
            if let Some(lag) = source.lag() {
                metrics
                    .source
                    .source_lag
                    .set(i64::try_from(lag).unwrap_or(i64::MAX));
            }
        }
        raw.clear();
        if ended {
            // Service mode after a finite source: keep serving until shutdown.
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        metrics.stages.progress(Stage::Ingest);
        let polled = source.poll(&mut raw, config.batch_size, config.poll_wait)?;
        // From here to the end of this pass the ingest has input in hand.
        let _busy = metrics.stages.busy(Stage::Ingest);
        if !raw.is_empty() {
            crate::support::fault::drill(Stage::Ingest);
        }
        let unavailable = source.unavailable_since();
        outages.observe(unavailable, metrics);
        deadletters.observe(source.dead_letter_deliveries(), metrics, &config.ops);
        config.ops.observe_source(unavailable);
        match polled {
            Poll::End if raw.is_empty() => {
                if config.until == Until::Shutdown {
                    info!("source exhausted; serving until shutdown");
                    ended = true;
                    continue;
                }
                break;
            }
            Poll::Idle => {
                if let Until::Idle(limit) = config.until {
                    if last_input.elapsed() >= limit {
                        info!("input idle; stopping");
                        break;
                    }
                }
                // While the input is quiet, an empty epoch carries a checkpoint of what came
                // before, so that a crash in a lull replays nothing.
                let checkpoint_due = checkpointing.as_ref().is_some_and(|c| {
                    let due = uncheckpointed || c.failed;
                    pending.is_none() && due && last_checkpoint.elapsed() >= c.interval
                });
                // In a cluster, the other processes wait for this one's epochs.
                let heartbeat =
                    config.cluster.is_some() && last_epoch.elapsed() >= CLUSTER_HEARTBEAT;
                if !checkpoint_due && !heartbeat {
                    continue;
                }
            }
            Poll::End | Poll::Ready => {}
        }
        let read_at = Instant::now();
        last_epoch = read_at;
        if !raw.is_empty() {
            last_input = read_at;
        }
        let mut batches = vec![GoldBatch::default(); workers];
        let mut for_rules = Vec::new();
        let (mut dead, mut dups, mut quarantined, mut gold) = (0u64, 0u64, 0u64, 0u64);
        let mut skipped = 0u64;
        let mut bronze_rows = Vec::new();
        let mut silver_rows = Vec::new();
        let ingested_at = Utc::now().timestamp_micros();
        if summary.events == 0 {
            if let Some((_, first)) = raw.iter().next() {
                tracing::debug!(?first, "first position read");
            }
        }
        for (payload, pos) in raw.iter() {
            let key = (pos.stream, pos.partition);
            if covered.get(&key).is_some_and(|last| pos.offset <= *last) {
                skipped += 1;
                continue;
            }
            let seen = processed.entry(key).or_insert(pos.offset);
            *seen = (*seen).max(pos.offset);
            let position = || SourcePosition {
                source: source.stream_name(pos.stream),
                partition: pos.partition,
                offset: pos.offset,
            };
            let row_position = lake_writer.map(|_| RowPosition {
                source: stream_names
                    .entry(pos.stream)
                    .or_insert_with(|| source.stream_name(pos.stream).into())
                    .clone(),
                partition: pos.partition,
                offset: pos.offset,
            });
            let outcomes: Vec<Outcome> = decoder
                .decode_payload(payload, position)
                .into_iter()
                .map(|d| silver.admit(d))
                .collect();
            if let Some(p) = &row_position {
                // Bronze keeps the payload once, however many records it decodes into.
                bronze_rows.push(BronzeRow {
                    position: p.clone(),
                    payload: payload.to_vec(),
                    ingested_at,
                    event_time: outcomes.iter().find_map(|o| match o {
                        Outcome::Record(r) => Some(r.event.event_timestamp.timestamp_micros()),
                        _ => None,
                    }),
                });
            }
            for outcome in outcomes {
                match outcome {
                    Outcome::Record(record) => {
                        let mut patient_key = None;
                        let mut to_rules_too = false;
                        for f in record.dq_flags.iter() {
                            flag_counts[f as usize] += 1;
                        }
                        if record.quarantined() {
                            quarantined += 1;
                            lake.quarantine.append(&record)?;
                        } else if let Some((patient, at)) = facts.add(&record, &mut batches) {
                            patient_key = Some(patient);
                            gold += 1;
                            watermark = watermark.max(at);
                            // A cancel retracts Gold facts; the rules saw the event it cancels.
                            to_rules_too =
                                to_rules.is_some() && !record.kind.is_some_and(|k| k.is_cancel());
                        }
                        // The record goes to the lake and the rules: copied only when both
                        // take it.
                        match (row_position.clone(), patient_key) {
                            (Some(position), Some(patient)) if to_rules_too => {
                                for_rules.push((patient, record.clone()));
                                silver_rows.push(SilverRow {
                                    position,
                                    record,
                                    patient: patient_key,
                                });
                            }
                            (Some(position), _) => silver_rows.push(SilverRow {
                                position,
                                record,
                                patient: patient_key,
                            }),
                            (None, Some(patient)) if to_rules_too => {
                                for_rules.push((patient, record))
                            }
                            (None, _) => {}
                        }
                    }
                    Outcome::Duplicate => dups += 1,
                    Outcome::DeadLetter(letter) => {
                        dead += 1;
                        metrics
                            .silver
                            .dead_letters
                            .with_label_values(&[letter.reason_code])
                            .inc();
                        lake.dead_letters.append(&letter)?;
                        source.dead_letter(&letter)?;
                    }
                }
            }
        }
        if dead > 0 {
            // Counted in /metrics and the status line; per-batch detail only when asked for.
            tracing::debug!(count = dead, source = %source_name, "payloads sent to the dead-letter store");
        }
        let n = raw.len() as u64 - skipped;
        events_in.inc_by(n);
        metrics.silver.duplicates.inc_by(dups);
        metrics.silver.quarantined.inc_by(quarantined);
        metrics.gold.gold_records.inc_by(gold);
        for (i, count) in flag_counts.iter_mut().enumerate() {
            if *count > 0 {
                metrics
                    .silver
                    .dq_flags
                    .with_label_values(&[crate::silver::DqFlag::ALL[i].name()])
                    .inc_by(*count);
                *count = 0;
            }
        }
        summary.events += n;
        summary.dead_letters += dead;
        summary.duplicates += dups;
        summary.quarantined += quarantined;
        summary.gold_records += gold;

        commits.record(summary.epochs, raw.iter().map(|(_, pos)| pos));
        if let (Some(l), false) = (lake_writer, bronze_rows.is_empty()) {
            l.send(LakeMessage::Events {
                epoch: summary.epochs,
                bronze: bronze_rows,
                silver: silver_rows,
            })?;
        }
        let take_checkpoint = checkpointing
            .as_ref()
            .is_some_and(|c| pending.is_none() && last_checkpoint.elapsed() >= c.interval);
        send_epoch(
            to_workers,
            to_rules,
            summary.epochs,
            (batches, for_rules),
            (watermark, read_at, take_checkpoint),
        )?;
        uncheckpointed |= n > 0;
        if take_checkpoint {
            uncheckpointed = false;
            // The state after this epoch; written once its outputs are durable.
            pending = Some(PendingCheckpoint {
                epoch: summary.epochs,
                ingest: encode_ingest(&silver, &facts, &decoder, &processed, watermark, &mut lake)?,
                rules: None,
            });
            if let Some(l) = lake_writer {
                l.send(LakeMessage::Flush {
                    epoch: summary.epochs,
                })?;
            }
        }
        summary.epochs += 1;
        if last_lake_flush.elapsed() >= Duration::from_secs(1) {
            lake.flush()?;
            last_lake_flush = Instant::now();
        }
    }
    lake.flush()?;
    let final_state = match checkpointing {
        Some(_) => Some(encode_ingest(
            &silver, &facts, &decoder, &processed, watermark, &mut lake,
        )?),
        None => None,
    };
    Ok(Ingested {
        summary,
        commits,
        final_state,
    })
}

/// What the ingest thread hands back when it stops.
struct Ingested {
    summary: RunSummary,
    commits: Commits,
    /// The ingest side of the final checkpoint, when checkpointing.
    final_state: Option<Vec<u8>>,
}

/// Sends one epoch: the rules thread's records (it reports every epoch, even an empty one)
/// and every worker's facts (every worker gets every epoch, so that all advance together).
fn send_epoch(
    to_workers: &[SyncSender<WorkerBatch>],
    to_rules: Option<&SyncSender<RulesBatch>>,
    epoch: u64,
    (batches, records): (Vec<GoldBatch>, Vec<(u64, Box<SilverRecord>)>),
    (watermark, read_at, snapshot): (Micros, Instant, bool),
) -> Result<(), PipelineError> {
    if let Some(tx) = to_rules {
        let batch = RulesBatch {
            epoch,
            records,
            read_at,
            snapshot,
        };
        if tx.send(batch).is_err() {
            return Err(PipelineError::Dataflow("the rules thread stopped".into()));
        }
    }
    for (tx, batch) in to_workers.iter().zip(batches) {
        let msg = WorkerBatch {
            epoch,
            batch,
            watermark,
            read_at,
        };
        if tx.send(msg).is_err() {
            return Err(PipelineError::Dataflow("a dataflow worker stopped".into()));
        }
    }
    Ok(())
}

/// The ingest side of a checkpoint, encoded now (the lake is synced first, so the lengths
/// recorded are on disk).
fn encode_ingest(
    silver: &Silver,
    facts: &FactBuilder,
    decoder: &Decoder,
    processed: &BTreeMap<(u16, i32), i64>,
    watermark: Micros,
    lake: &mut Lake,
) -> Result<Vec<u8>, PipelineError> {
    let state = IngestState {
        dedup: Cow::Borrowed(silver.dedup()),
        gold: facts.snapshot(),
        positions: processed
            .iter()
            .map(|(&(stream, partition), &offset)| Position {
                stream,
                partition,
                offset,
            })
            .collect(),
        watermark,
        lake: lake.lengths()?,
        decoder: decoder.snapshot(),
    };
    codec::encode(&state).map_err(|e| PipelineError::Checkpoint(e.to_string()))
}

impl Checkpointing {
    /// Writes the pending checkpoint once the rules state has arrived and every output of its
    /// epoch is durable; returns, when it tried, the number of epochs the newest written
    /// checkpoint covers. A write that fails is not fatal: it raises `checkpoint_failed`, the
    /// next checkpoint is taken an interval later, and source positions stay committed only
    /// through the last checkpoint written, so a crash in between still replays exactly.
    fn try_write(
        &mut self,
        pending: &mut Option<PendingCheckpoint>,
        durable: u64,
        metrics: &Metrics,
    ) -> Result<Option<u64>, PipelineError> {
        let Some(p) = pending.as_mut() else {
            return Ok(None);
        };
        if let Some(rx) = &self.rules {
            while let Ok((epoch, state)) = rx.try_recv() {
                if epoch == p.epoch {
                    p.rules = Some(state.map_err(PipelineError::Checkpoint)?);
                }
            }
            if p.rules.is_none() {
                return Ok(None);
            }
        }
        if durable <= p.epoch {
            return Ok(None);
        }
        let Some(p) = pending.take() else {
            return Ok(None);
        };
        let written = self.store.write(&Checkpoint {
            source: self.identity.clone(),
            written_at: format_time(&Utc::now().fixed_offset()),
            ingest: p.ingest,
            rules: p.rules,
        });
        let bytes = match written {
            Ok(bytes) => bytes,
            Err(e) => {
                if !self.failed {
                    tracing::warn!(error = %e, "checkpoint not written; trying again at the next interval");
                }
                self.ops
                    .raise(Condition::CheckpointFailed, CHECKPOINT_FAILED);
                self.failed = true;
                return Ok(Some(self.through));
            }
        };
        self.ops.clear(Condition::CheckpointFailed);
        self.failed = false;
        self.through = p.epoch + 1;
        metrics.checkpoint.checkpoints_written.inc();
        metrics.checkpoint.checkpoint_bytes.set(bytes as i64);
        tracing::debug!(epoch = p.epoch, bytes, "checkpoint written");
        Ok(Some(self.through))
    }
}

/// Where the ingest thread sends its work, and how it learns what is durable.
struct Downstream<'a> {
    to_workers: &'a [SyncSender<WorkerBatch>],
    to_rules: Option<&'a SyncSender<RulesBatch>>,
    /// Epochs below this number are durably written (KPIs and alerts).
    durable: &'a AtomicU64,
    /// The lake writer, when the Delta tables are written.
    lake: Option<&'a LakeHandle>,
}

/// Source positions waiting for their outputs to be durable before they are committed.
#[derive(Debug, Default)]
struct Commits {
    pending: std::collections::VecDeque<(u64, Vec<Position>)>,
    last_commit: Option<Instant>,
}

impl Commits {
    fn record(&mut self, epoch: u64, positions: impl Iterator<Item = Position>) {
        let last = crate::source::kafka::last_positions(positions);
        if !last.is_empty() {
            self.pending.push_back((epoch, last));
        }
    }

    /// Commits, at most every 200 ms, the positions of every epoch below `durable`.
    fn commit_durable(&mut self, source: &mut dyn Source, durable: u64) -> Result<(), SourceError> {
        if self
            .last_commit
            .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        {
            return Ok(());
        }
        self.commit_through(source, durable)
    }

    /// Commits the positions of every epoch below `durable`.
    fn commit_through(&mut self, source: &mut dyn Source, durable: u64) -> Result<(), SourceError> {
        let mut upto = Vec::new();
        while self.pending.front().is_some_and(|(e, _)| *e < durable) {
            if let Some((_, positions)) = self.pending.pop_front() {
                upto.extend(positions);
            }
        }
        if upto.is_empty() {
            return Ok(());
        }
        self.last_commit = Some(Instant::now());
        let upto = crate::source::kafka::last_positions(upto.into_iter());
        tracing::debug!(through = durable, ?upto, "committing source positions");
        source.commit(&upto)
    }
}

/// Writes the KPI documents changed since the last write, stamped with the watermark.
/// The sink with what is announced and counted around each write.
struct Writer {
    sink: Box<dyn Sink>,
    feed: Option<Feed>,
    metrics: Arc<Metrics>,
    /// Epochs whose KPI documents are written (all epochs below this number).
    kpi_epochs: u64,
    /// Epochs whose alerts are written; `None` when no rules run.
    alert_epochs: Option<u64>,
    /// min(kpi_epochs, alert_epochs): what the ingest may commit to the source.
    durable: Arc<AtomicU64>,
    /// Where written KPI documents go as snapshots (`gold/kpi_snapshots`).
    lake: Option<SyncSender<LakeMessage>>,
    ops: OpsAlerts,
}

impl Writer {
    fn write(&mut self, container: Container, docs: &[Document]) -> Result<(), PipelineError> {
        if let Err(e) = self.sink.upsert(container, docs) {
            self.metrics.sink.sink_errors.inc();
            let detail = "a sink write failed for good; the run stops";
            self.ops.raise(Condition::SinkRetriesExhausted, detail);
            return Err(e.into());
        }
        announce(self.feed.as_ref(), container, docs);
        Ok(())
    }

    fn written_through(&mut self, kpi_epoch: Option<u64>, alert_epoch: Option<u64>) {
        if let Some(e) = kpi_epoch {
            self.kpi_epochs = self.kpi_epochs.max(e + 1);
        }
        if let (Some(e), Some(done)) = (alert_epoch, self.alert_epochs.as_mut()) {
            *done = (*done).max(e + 1);
        }
        let durable = self.kpi_epochs.min(self.alert_epochs.unwrap_or(u64::MAX));
        self.durable.store(durable, Ordering::Release);
    }
}

fn write_kpis(
    writer: &mut Writer,
    state: &mut KpiState,
    upto: (u64, Micros, Instant),
    written: &mut u64,
) -> Result<(), PipelineError> {
    let metrics = writer.metrics.clone();
    let (epoch, watermark, read_at) = upto;
    let as_of = DateTime::<Utc>::from_timestamp_micros(watermark)
        .map(|t| format_time(&t.fixed_offset()))
        .unwrap_or_default();
    let now = format_time(&Utc::now().fixed_offset());
    let docs = state.take_changed(&as_of, &now);
    if !docs.is_empty() {
        writer.write(Container::Kpis, &docs)?;
        if let Some(lake) = &writer.lake {
            let written_at = Utc::now().timestamp_micros();
            let rows = docs
                .iter()
                .map(|d| KpiRow {
                    document: d.clone(),
                    written_at,
                })
                .collect();
            lake.send(LakeMessage::Kpis(rows))
                .map_err(|_| PipelineError::LakeWrite(LakeWriteError::Stopped))?;
        }
        for d in &docs {
            let kind = d
                .body
                .get("type")
                .and_then(|t| t.as_str())
                .unwrap_or("unknown");
            metrics
                .sink
                .documents_written
                .with_label_values(&[kind])
                .inc();
        }
        *written += docs.len() as u64;
    }
    writer.written_through(Some(epoch), None);
    metrics.gold.occupied_beds.set(state.occupied());
    if watermark > Micros::MIN {
        metrics.gold.watermark_seconds.set(watermark / 1_000_000);
    }
    metrics
        .gold
        .processing_latency
        .observe(read_at.elapsed().as_secs_f64());
    Ok(())
}

/// The sink loop: add up changes; when every worker completed an epoch, write what changed.
fn sink_loop(
    rx: Receiver<SinkMessage>,
    mut writer: Writer,
    mut state: KpiState,
    workers: usize,
    interval: Duration,
) -> Result<(u64, i64), PipelineError> {
    let metrics = writer.metrics.clone();
    let mut completed: Vec<Option<u64>> = vec![None; workers];
    let mut pending: BTreeMap<u64, (Micros, Instant)> = BTreeMap::new();
    let mut flushed: Option<u64> = None;
    let mut ready: Option<(u64, Micros, Instant)> = None;
    let mut last_flush = Instant::now() - interval;
    let mut written = 0u64;
    let mut latest_watermark = Micros::MIN;

    loop {
        let message = rx.recv_timeout(interval);
        let _busy = metrics.stages.busy(Stage::Sink);
        if message.is_ok() {
            crate::support::fault::drill(Stage::Sink);
        }
        match message {
            Ok(SinkMessage::Alerts {
                epoch,
                documents,
                read_at,
            }) => {
                if !documents.is_empty() {
                    writer.write(Container::Alerts, &documents)?;
                    metrics.rules.alerts_written.inc_by(documents.len() as u64);
                    metrics
                        .rules
                        .alert_latency
                        .observe(read_at.elapsed().as_secs_f64());
                }
                writer.written_through(None, Some(epoch));
            }
            Ok(SinkMessage::Departments(network)) => {
                state.set_network(network);
                if let Some(epoch) = flushed {
                    ready = ready.or(Some((epoch, latest_watermark, Instant::now())));
                }
            }
            Ok(SinkMessage::Gold(GoldOutput::Changes(changes))) => {
                metrics.gold.kpi_changes.inc_by(changes.len() as u64);
                for c in changes {
                    state.apply(c);
                }
            }
            Ok(SinkMessage::Gold(GoldOutput::Complete {
                worker,
                epoch,
                watermark,
                read_at,
            })) => {
                if let Some(slot) = completed.get_mut(worker) {
                    *slot = Some(epoch);
                }
                pending.entry(epoch).or_insert((watermark, read_at));
                latest_watermark = latest_watermark.max(watermark);
                let all = completed.iter().copied().collect::<Option<Vec<u64>>>();
                if let Some(min) = all.and_then(|v| v.into_iter().min()) {
                    if flushed.is_none_or(|f| min > f) {
                        if let Some(&(w, r)) = pending.get(&min) {
                            ready = Some((min, w, r));
                        }
                        pending.retain(|e, _| *e > min);
                        flushed = Some(min);
                        metrics.gold.epochs_completed.inc();
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if let Some(upto) = ready {
            if last_flush.elapsed() >= interval {
                write_kpis(&mut writer, &mut state, upto, &mut written)?;
                ready = None;
                last_flush = Instant::now();
            }
        }
    }
    // Everything is complete once every worker has hung up.
    let read_at = ready.map_or_else(Instant::now, |(_, _, r)| r);
    write_kpis(
        &mut writer,
        &mut state,
        (flushed.unwrap_or(0), latest_watermark, read_at),
        &mut written,
    )?;
    Ok((written, state.occupied()))
}

/// The rules loop: evaluate each batch, send its alerts, answer snapshot requests, and reload
/// changed rule files. Returns the stage when the input closes (for the final checkpoint).
fn rules_loop(
    rx: Receiver<RulesBatch>,
    mut stage: RulesStage,
    out: SyncSender<SinkMessage>,
    snapshots: SyncSender<RulesSnapshot>,
    stages: Arc<StageHealth>,
) -> RulesStage {
    loop {
        match rx.recv_timeout(RELOAD_INTERVAL) {
            Ok(RulesBatch {
                epoch,
                records,
                read_at,
                snapshot,
            }) => {
                let _busy = stages.busy(Stage::Rules);
                crate::support::fault::drill(Stage::Rules);
                let documents = stage.process(&records);
                if snapshot {
                    // The state after this epoch's records, matching the ingest's snapshot.
                    let _ = snapshots.send((epoch, stage.snapshot()));
                }
                if out
                    .send(SinkMessage::Alerts {
                        epoch,
                        documents,
                        read_at,
                    })
                    .is_err()
                {
                    return stage;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return stage,
        }
        stage.maybe_reload();
    }
}
