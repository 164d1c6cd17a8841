//! The ingest loop: poll the source, decode, clean (Silver), build facts, and send each
//! epoch to every worker, to the rules thread and to the lake; take checkpoints at epoch
//! boundaries and commit source positions once what they produced is durable.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use prometheus::IntCounter;
use tracing::info;

use super::messages::{Epoch, RulesBatch, WorkerBatch};
use super::sink_thread::Commits;
use super::{DataflowError, PipelineConfig, PipelineError, RunSummary, Until};
use crate::checkpoint::{Coordinator, IngestStages, IngestState};
use crate::cluster::PatientSplit;
use crate::decode::Decoder;
use crate::gold::{micros, FactBuilder, GoldBatch, Micros};
use crate::lake::tables::{EpochColumns, RowPosition};
use crate::lake::writer::{LakeHandle, LakeMessage, LakeWriteError};
use crate::lake::Lake;
use crate::metrics::Metrics;
use crate::model::{DeadLetter, Event, SourcePosition};
use crate::model::{LiveNetwork, Pseudonymiser};
use crate::ops::{Condition, OpsAlerts};
use crate::rules::{PartitionId, ReorderWindow, RuleInput};
use crate::silver::{DqFlag, Outcome, Silver, SilverRecord};
use crate::source::{DeadLetterDeliveries, Poll, Position, RawBatch, Source};
use crate::support::Stage;

/// How often a clustered process closes an empty epoch while its input is quiet: the other
/// processes' epochs complete only when every process has moved past them.
const CLUSTER_HEARTBEAT: Duration = Duration::from_millis(100);

/// Where the ingest thread sends its work, and how it learns what is durable.
pub(super) struct Downstream<'a> {
    pub to_workers: &'a [SyncSender<WorkerBatch>],
    /// One sender per rules thread; each gets every epoch.
    pub to_rules: Option<&'a [SyncSender<RulesBatch>]>,
    /// Epochs below this number are durably written (KPIs and alerts).
    pub durable: &'a AtomicU64,
    /// The lake writer, when the Delta tables are written.
    pub lake: Option<&'a LakeHandle>,
}

impl Downstream<'_> {
    /// What is durable for a checkpoint: the sink's outputs and the lake's tables.
    fn durable_now(&self) -> u64 {
        let sunk = self.durable.load(Ordering::Acquire);
        self.lake.map_or(sunk, |l| sunk.min(l.durable()))
    }

    /// Sends one epoch: the rules threads' records (each reports every epoch, even an empty
    /// one) and every worker's facts (every worker gets every epoch, so that all advance
    /// together).
    fn send(&self, epoch: Epoch) -> Result<(), PipelineError> {
        if let Some(threads) = self.to_rules {
            let records = std::sync::Arc::new(epoch.records);
            for tx in threads {
                let batch = RulesBatch {
                    epoch: epoch.number,
                    records: records.clone(),
                    read_at: epoch.read_at,
                    snapshot: epoch.snapshot,
                };
                if tx.send(batch).is_err() {
                    return Err(DataflowError::RulesStopped.into());
                }
            }
        }
        for (tx, batch) in self.to_workers.iter().zip(epoch.batches) {
            let msg = WorkerBatch {
                epoch: epoch.number,
                batch,
                watermark: epoch.watermark,
                read_at: epoch.read_at,
            };
            if tx.send(msg).is_err() {
                return Err(DataflowError::WorkerStopped.into());
            }
        }
        Ok(())
    }
}

/// What the ingest thread starts with.
pub(super) struct IngestStart<'a> {
    pub config: &'a PipelineConfig,
    /// The departments in force (the watcher puts a changed file in force).
    pub network: LiveNetwork,
    pub source: &'a mut dyn Source,
    pub pseudonyms: Pseudonymiser,
    pub downstream: Downstream<'a>,
    /// The ingest side of the checkpoint the run continues from, if any.
    pub restore: Option<IngestState<'static>>,
    /// `None` when no checkpoints are taken.
    pub checkpoints: Option<Coordinator>,
    pub metrics: &'a Metrics,
}

/// What the ingest thread hands back when it stops.
pub(super) struct Ingested {
    pub summary: RunSummary,
    pub commits: Commits,
    /// The ingest side of the final checkpoint, when checkpointing.
    pub final_state: Option<Vec<u8>>,
    pub checkpoints: Option<Coordinator>,
}

/// Runs the ingest loop until the source ends, input stays idle, or `shutdown` is set.
pub(super) fn ingest(
    start: IngestStart<'_>,
    shutdown: &AtomicBool,
) -> Result<Ingested, PipelineError> {
    let restore = start.restore;
    let mut ingest = Ingest::new(IngestStart {
        restore: None,
        ..start
    });
    match restore {
        Some(state) => {
            // Continuing from another cluster layout's checkpoints: this process's own first
            // checkpoint at once, so that a crash before the next one does not split the old
            // layout's state again over what this process has written since.
            if ingest.resume(state)? {
                ingest.checkpoint_now(shutdown)?;
            }
        }
        None => ingest.first_checkpoint(shutdown)?,
    }
    ingest.run(shutdown)?;
    ingest.finish()
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

/// Source positions: what has been processed, and what a checkpoint covers (skipped).
#[derive(Debug, Default)]
struct Positions {
    /// The last processed position per (stream, partition).
    processed: BTreeMap<(u16, i32), i64>,
    covered: HashMap<(u16, i32), i64>,
}

/// How long a restarted run waits for the partitions to be read again as far as the lake holds
/// them before it reads newer input anyway (a partition whose messages expired meanwhile).
const REPLAY_PATIENCE: Duration = Duration::from_secs(30);
/// Most payloads held back meanwhile.
const REPLAY_HOLD_LIMIT: usize = 500_000;

/// After a restart with the lake on, over several partitions: the previous run wrote rows to the
/// lake after its last checkpoint, and the restarted run reads those payloads again (the lake
/// skips what it holds). Silver keeps the first copy of a duplicate it sees, and a producer
/// without keys can write the two copies of one event to two partitions; if the copy the lake
/// already holds were read after the newer copy, the newer one would be kept and written too.
/// So every partition is read again as far as the lake holds it before any newer payload is
/// taken: newer payloads read meanwhile wait here, in arrival order.
struct Replay {
    /// The partitions not yet read as far as the lake holds them, and that offset.
    ends: HashMap<(u16, i32), i64>,
    waiting: Vec<(Vec<u8>, Position, i64)>,
    since: Instant,
    /// Stop waiting (the input ended or stops).
    give_up: bool,
}

impl Replay {
    /// Whether the payload at `pos` waits: the lake does not hold it. Every newer payload waits
    /// until the wait is over ([`Replay::over`]), also after the last partition is read again,
    /// so that each partition's payloads keep their order.
    fn holds_back(&mut self, pos: Position) -> bool {
        let key = (pos.stream, pos.partition);
        match self.ends.get(&key) {
            Some(end) if pos.offset < *end => false,
            Some(end) => {
                // The last payload the lake holds, or (when that one is gone) a newer one.
                let newer = pos.offset > *end;
                self.ends.remove(&key);
                newer
            }
            None => true,
        }
    }

    /// Whether the wait is over: every partition is read again, or waiting longer would hold
    /// too much or too long.
    fn over(&self) -> bool {
        self.ends.is_empty()
            || self.give_up
            || self.waiting.len() >= REPLAY_HOLD_LIMIT
            || self.since.elapsed() >= REPLAY_PATIENCE
    }
}

/// What one epoch gathers as its payloads are decoded.
struct EpochWork {
    /// Facts, one batch per worker.
    batches: Vec<GoldBatch>,
    /// What the reorder window released for the rules, in order.
    for_rules: Vec<RuleInput>,
    /// When its input was read (a held record's arrival).
    read_at: Instant,
    /// The lake's rows, when the lake is written.
    lake: Option<Box<EpochColumns>>,
    dead: u64,
    duplicates: u64,
    quarantined: u64,
    gold: u64,
    /// Records that other processes of the cluster clean.
    elsewhere: u64,
    /// Payloads decoded (not covered by a checkpoint).
    read: u64,
    /// Of those, the payloads of partitions this process keeps (all of them but in a cluster).
    kept: u64,
    /// The positions of the payloads taken (decoded or skipped), for the source's commits.
    positions: Vec<Position>,
}

impl EpochWork {
    fn new(workers: usize, read_at: Instant) -> Self {
        EpochWork {
            batches: vec![GoldBatch::default(); workers],
            for_rules: Vec::new(),
            read_at,
            lake: None,
            dead: 0,
            duplicates: 0,
            quarantined: 0,
            gold: 0,
            elsewhere: 0,
            read: 0,
            kept: 0,
            positions: Vec::new(),
        }
    }
}

/// What to do after a poll.
enum Next {
    /// Close an epoch with what was read.
    Epoch,
    /// Poll again.
    Wait,
    Stop,
}

/// The ingest thread's state.
struct Ingest<'a> {
    config: &'a PipelineConfig,
    source: &'a mut dyn Source,
    downstream: Downstream<'a>,
    metrics: &'a Metrics,
    checkpoints: Option<Coordinator>,
    workers: usize,
    silver: Silver,
    decoder: Decoder,
    facts: FactBuilder,
    /// This process's share of a cluster's records, when every process reads every partition.
    split: Option<PatientSplit>,
    /// Holds the rules' records until the event time has passed them.
    reorder: ReorderWindow,
    lake: Lake,
    positions: Positions,
    /// After a restart: newer payloads wait until the lake's tail is read again.
    replay: Option<Replay>,
    watermark: Micros,
    summary: RunSummary,
    commits: Commits,
    stream_names: HashMap<u16, Arc<str>>,
    source_name: String,
    events_in: IntCounter,
    flag_counts: [u64; DqFlag::ALL.len()],
    outages: OutageWatch,
    deadletters: DeadLetterWatch,
    last_input: Instant,
    last_epoch: Instant,
    last_lake_flush: Instant,
    lag_read: Instant,
    /// The source is exhausted; service mode keeps serving until shutdown.
    ended: bool,
    /// Where the last payload came from: an end-of-input dead letter points there.
    last_position: Option<Position>,
    /// What one payload decodes into, and what Silver makes of it: buffers reused per payload.
    decoded: Vec<Result<Event, DeadLetter>>,
    outcomes: Vec<(Outcome, bool, Option<Micros>)>,
}

impl<'a> Ingest<'a> {
    fn new(start: IngestStart<'a>) -> Self {
        let workers = start.downstream.to_workers.len();
        let config = start.config;
        let source_name = start.source.name().to_owned();
        let now = Instant::now();
        Ingest {
            silver: Silver::following(start.network.clone()),
            decoder: Decoder::new(config.format, start.pseudonyms.clone()),
            facts: FactBuilder::new(start.pseudonyms, workers),
            split: config
                .cluster
                .as_ref()
                .and_then(|c| c.patient_split(config.workers)),
            reorder: match start.downstream.to_rules {
                Some(_) => ReorderWindow::new(Some(config.reorder_window)),
                None => ReorderWindow::off(),
            },
            lake: Lake::open(&config.data_dir),
            events_in: start
                .metrics
                .source
                .events_in
                .with_label_values(&[&source_name]),
            source_name,
            config,
            source: start.source,
            downstream: start.downstream,
            metrics: start.metrics,
            checkpoints: start.checkpoints,
            workers,
            positions: Positions::default(),
            replay: None,
            watermark: Micros::MIN,
            summary: RunSummary::default(),
            commits: Commits::default(),
            stream_names: HashMap::new(),
            flag_counts: [0; DqFlag::ALL.len()],
            outages: OutageWatch::default(),
            deadletters: DeadLetterWatch::default(),
            last_input: now,
            last_epoch: now,
            last_lake_flush: now,
            lag_read: now,
            ended: false,
            last_position: None,
            decoded: Vec::new(),
            outcomes: Vec::new(),
        }
    }

    fn stages(&mut self) -> IngestStages<'_> {
        IngestStages {
            silver: &mut self.silver,
            decoder: &mut self.decoder,
            facts: &mut self.facts,
            reorder: &mut self.reorder,
        }
    }

    /// Continues from a checkpoint. Epoch 0 hands the new dataflow the checkpoint's facts;
    /// its outputs rewrite the same documents the previous run wrote. `true`: the state came
    /// from another cluster layout's checkpoints (its lake lengths are unknown, see
    /// [`IngestState::rescaled`]), and epoch 0 asks for a checkpoint.
    fn resume(&mut self, state: IngestState<'static>) -> Result<bool, PipelineError> {
        let resume = state.restore(self.stages());
        let rescaled = resume.lake == (u64::MAX, u64::MAX);
        self.lake.truncate_to(resume.lake)?;
        self.watermark = resume.watermark;
        for p in &resume.positions {
            let key = (p.stream, p.partition);
            self.positions.processed.insert(key, p.offset);
            self.positions.covered.insert(key, p.offset);
        }
        self.source.skip_to(&resume.positions)?;
        self.replay = self.lake_tail()?;
        let mut epoch = Epoch::empty(0, self.workers, self.watermark, rescaled);
        self.facts.restored_facts(&mut epoch.batches);
        self.downstream.send(epoch)?;
        self.summary.epochs = 1;
        Ok(rescaled)
    }

    /// What the lake holds beyond the checkpoint, when that is more than one partition's
    /// (see [`Replay`]).
    fn lake_tail(&mut self) -> Result<Option<Replay>, PipelineError> {
        let Some(lake) = self.downstream.lake else {
            return Ok(None);
        };
        let mut partitions: Vec<(u16, i32)> = self.source.partitions();
        partitions.extend(self.positions.covered.keys().copied());
        partitions.sort_unstable();
        partitions.dedup();
        if partitions.len() < 2 {
            return Ok(None);
        }
        let named = partitions
            .iter()
            .map(|(stream, p)| (Arc::from(self.source.stream_name(*stream)), *p))
            .collect();
        let held = lake.held(named)?;
        let ends: HashMap<(u16, i32), i64> = partitions
            .into_iter()
            .zip(held)
            .filter(|(key, end)| {
                *end > self.positions.covered.get(key).copied().unwrap_or(i64::MIN)
            })
            .collect();
        if ends.is_empty() {
            return Ok(None);
        }
        info!(
            partitions = ends.len(),
            "reading again what the lake holds beyond the checkpoint before newer input"
        );
        Ok(Some(Replay {
            ends,
            waiting: Vec::new(),
            since: Instant::now(),
            give_up: false,
        }))
    }

    /// Takes the payloads that waited for the lake's tail, once the wait is over.
    fn end_replay(&mut self, work: &mut EpochWork) -> Result<(), PipelineError> {
        if !self.replay.as_ref().is_some_and(Replay::over) {
            return Ok(());
        }
        let Some(replay) = self.replay.take() else {
            return Ok(());
        };
        if !replay.ends.is_empty() {
            tracing::warn!(
                partitions = replay.ends.len(),
                waiting = replay.waiting.len(),
                "partitions not read again as far as the lake holds them; reading on"
            );
        }
        for (payload, pos, ingested_at) in replay.waiting {
            self.payload(&payload, pos, ingested_at, work)?;
        }
        Ok(())
    }

    /// A first, empty checkpoint before any input, when checkpointing: it records where the
    /// lake files stood, so that a crash before the next checkpoint cuts back what this run
    /// appended instead of leaving it to be appended again.
    fn first_checkpoint(&mut self, shutdown: &AtomicBool) -> Result<(), PipelineError> {
        if self.checkpoints.is_none() {
            return Ok(());
        }
        let epoch = Epoch::empty(0, self.workers, self.watermark, true);
        self.downstream.send(epoch)?;
        self.summary.epochs = 1;
        self.checkpoint_now(shutdown)
    }

    /// Takes the checkpoint of epoch 0 (sent, asking for one) and waits until it is written.
    fn checkpoint_now(&mut self, shutdown: &AtomicBool) -> Result<(), PipelineError> {
        if self.checkpoints.is_none() {
            return Ok(());
        }
        self.take_checkpoint(0)?;
        while !shutdown.load(Ordering::Relaxed) {
            let durable = self.downstream.durable_now();
            let written = match self.checkpoints.as_mut() {
                Some(c) => c.poll(durable)?,
                None => true,
            };
            if written {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// The loop: one epoch per poll that brought input (or, while quiet, carries a
    /// checkpoint or a cluster heartbeat).
    fn run(&mut self, shutdown: &AtomicBool) -> Result<(), PipelineError> {
        let metrics = self.metrics;
        let mut raw = RawBatch::default();
        while !shutdown.load(Ordering::Relaxed) {
            self.housekeeping()?;
            raw.clear();
            if self.ended {
                // Service mode after a finite source: keep serving until shutdown.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            metrics.stages.progress(Stage::Ingest);
            let polled =
                self.source
                    .poll(&mut raw, self.config.batch_size, self.config.poll_wait)?;
            // From here to the end of this pass the ingest has input in hand.
            let _busy = metrics.stages.busy(Stage::Ingest);
            if !raw.is_empty() {
                crate::support::fault::drill(Stage::Ingest);
            }
            self.observe_source();
            if let Some((read, size)) = self.source.input_progress().filter(|(_, s)| *s > 0) {
                metrics
                    .source
                    .input_read_ratio
                    .set(read as f64 / size as f64);
            }
            if matches!(polled, Poll::End) && raw.is_empty() {
                self.end_of_input()?;
            }
            match self.after_poll(polled, raw.is_empty()) {
                Next::Epoch => self.close_epoch(&raw)?,
                Next::Wait => continue,
                Next::Stop => {
                    if let Some(replay) = self.replay.as_mut() {
                        replay.give_up = true;
                        self.close_epoch(&RawBatch::default())?;
                    }
                    self.release_held()?;
                    return Ok(());
                }
            }
        }
        // Stopped from outside: a checkpoint keeps what the window holds; without one, the
        // rules read it now rather than never.
        if self.checkpoints.is_none() {
            self.release_held()?;
        }
        Ok(())
    }

    /// Whether the stream is in a lull by `now`: the input has brought nothing for the reorder
    /// window's length, and the source has nothing waiting (in a backlog a pause is the
    /// engine's or the broker's, and what comes next still belongs before what is held).
    fn lull(&mut self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_input) >= self.config.reorder_window
            && !self.source.behind().unwrap_or(false)
    }

    /// The input ended: whatever the reorder window holds goes to the rules, in order, as one
    /// more epoch.
    fn release_held(&mut self) -> Result<(), PipelineError> {
        if self.reorder.is_empty() {
            return Ok(());
        }
        let read_at = Instant::now();
        let mut work = EpochWork::new(self.workers, read_at);
        self.reorder.release_all(&mut work.for_rules);
        self.send_epoch(work, read_at, 0)
    }

    /// Between polls: write a checkpoint that is ready, commit what is durable, read the lag.
    fn housekeeping(&mut self) -> Result<(), PipelineError> {
        let committable = match self.checkpoints.as_mut() {
            Some(c) => {
                c.poll(self.downstream.durable_now())?;
                c.through()
            }
            None => self.downstream.durable.load(Ordering::Acquire),
        };
        self.commits.commit_durable(self.source, committable)?;
        if self.lag_read.elapsed() >= Duration::from_secs(5) {
            self.lag_read = Instant::now();
            if let Some(lag) = self.source.lag() {
                self.metrics
                    .source
                    .source_lag
                    .set(i64::try_from(lag).unwrap_or(i64::MAX));
            }
        }
        Ok(())
    }

    fn observe_source(&mut self) {
        let unavailable = self.source.unavailable_since();
        self.outages.observe(unavailable, self.metrics);
        let deliveries = self.source.dead_letter_deliveries();
        self.deadletters
            .observe(deliveries, self.metrics, &self.config.ops);
        self.config.ops.observe_source(unavailable);
    }

    /// Whether a poll closes an epoch, and when the loop stops (per `until`).
    fn after_poll(&mut self, polled: Poll, nothing_read: bool) -> Next {
        match polled {
            Poll::End if nothing_read => {
                if let Some(replay) = self.replay.as_mut() {
                    // Nothing more comes: the payloads that wait go first.
                    replay.give_up = true;
                    return Next::Epoch;
                }
                if self.config.until == Until::Shutdown {
                    info!("source exhausted; serving until shutdown");
                    self.ended = true;
                    // Nothing more comes: what the reorder window holds goes to the rules.
                    return if self.reorder.is_empty() {
                        Next::Wait
                    } else {
                        Next::Epoch
                    };
                }
                Next::Stop
            }
            Poll::Idle => {
                if let Until::Idle(limit) = self.config.until {
                    if self.last_input.elapsed() >= limit {
                        info!("input idle; stopping");
                        return Next::Stop;
                    }
                }
                // While the input is quiet, an empty epoch carries a checkpoint of what came
                // before, so that a crash in a lull replays nothing.
                let checkpoint_due = self
                    .checkpoints
                    .as_ref()
                    .is_some_and(Coordinator::due_while_idle);
                // In a cluster, the other processes wait for this one's epochs.
                let heartbeat =
                    self.config.cluster.is_some() && self.last_epoch.elapsed() >= CLUSTER_HEARTBEAT;
                // The event time stood still for the window's length: what it holds goes.
                let lull = self.reorder.waiting() && self.lull(Instant::now());
                // Payloads wait for a partition that does not come.
                let replay = self.replay.as_ref().is_some_and(Replay::over);
                if checkpoint_due || heartbeat || lull || replay {
                    Next::Epoch
                } else {
                    Next::Wait
                }
            }
            Poll::End | Poll::Ready => Next::Epoch,
        }
    }

    /// Decodes and cleans what was read, then sends it as one epoch.
    fn close_epoch(&mut self, raw: &RawBatch) -> Result<(), PipelineError> {
        let read_at = Instant::now();
        self.last_epoch = read_at;
        if !raw.is_empty() {
            self.last_input = read_at;
        }
        if self.summary.events == 0 {
            if let Some((_, first)) = raw.iter().next() {
                tracing::debug!(?first, "first position read");
            }
        }
        let mut work = EpochWork::new(self.workers, read_at);
        if self.reorder.is_on() {
            self.reorder.expect(self.source.partitions());
        }
        let ingested_at = Utc::now().timestamp_micros();
        for (payload, pos) in raw.iter() {
            if let Some(replay) = self.replay.as_mut() {
                if replay.holds_back(pos) {
                    replay.waiting.push((payload.to_vec(), pos, ingested_at));
                    continue;
                }
            }
            self.payload(payload, pos, ingested_at, &mut work)?;
        }
        self.end_replay(&mut work)?;
        if self.ended {
            self.reorder.release_all(&mut work.for_rules);
        } else if raw.is_empty() {
            if self.lull(read_at) {
                self.reorder.release_quiet(&mut work.for_rules);
            }
        } else {
            let backlog = raw.len() >= self.config.batch_size
                || (self.reorder.is_on() && self.source.behind().unwrap_or(false));
            self.reorder.release(read_at, backlog, &mut work.for_rules);
        }
        let events = work.read;
        self.count(events, &work);
        self.commits
            .record(self.summary.epochs, work.positions.drain(..));
        self.send_epoch(work, read_at, events)
    }

    /// One payload: skipped if a checkpoint covers it, else decoded into outcomes.
    fn payload(
        &mut self,
        payload: &[u8],
        pos: Position,
        ingested_at: i64,
        work: &mut EpochWork,
    ) -> Result<(), PipelineError> {
        let key = (pos.stream, pos.partition);
        work.positions.push(pos);
        let covered = self.positions.covered.get(&key);
        if covered.is_some_and(|last| pos.offset <= *last) {
            return Ok(());
        }
        work.read += 1;
        let seen = self.positions.processed.entry(key).or_insert(pos.offset);
        *seen = (*seen).max(pos.offset);
        self.last_position = Some(pos);
        let source = &*self.source;
        let position = || SourcePosition {
            source: source.stream_name(pos.stream),
            partition: pos.partition,
            offset: pos.offset,
        };
        let row_position = self.downstream.lake.map(|_| RowPosition {
            source: self
                .stream_names
                .entry(pos.stream)
                .or_insert_with(|| source.stream_name(pos.stream).into())
                .clone(),
            partition: pos.partition,
            offset: pos.offset,
        });
        // Both lists are buffers of this loop, reused payload after payload.
        let mut decoded = std::mem::take(&mut self.decoded);
        let mut outcomes = std::mem::take(&mut self.outcomes);
        self.decoder.decode_into(payload, position, &mut decoded);
        // In a cluster whose every process reads every partition, this process keeps the
        // payload and its dead letters if the partition is its own, and cleans the records of
        // its own patients.
        let keeps = self.split.is_none_or(|s| s.keeps(pos.partition));
        // `cds_events_in_total` counts each payload in one process of a cluster, so that its
        // sum over the processes is the stream's.
        work.kept += u64::from(keeps);
        let partition = (pos.stream, pos.partition);
        let event_time = decoded
            .iter()
            .find_map(|d| d.as_ref().ok())
            .map(|e| micros(&e.event_timestamp));
        // Silver cleans every record (the duplicates of every event are known, and the rules
        // see every placement); what becomes of it here is for its own patients only.
        for d in decoded.drain(..) {
            match d {
                Ok(event) => {
                    let at = micros(&event.event_timestamp);
                    let own = self.split.is_none_or(|s| {
                        let patient = event
                            .patient_id
                            .as_deref()
                            .filter(|id| !id.trim().is_empty())
                            .map(|id| self.facts.patient_key(id));
                        s.cleans(patient, pos.partition)
                    });
                    outcomes.push((self.silver.clean(event), own, Some(at)));
                }
                Err(letter) => outcomes.push((Outcome::DeadLetter(letter), keeps, None)),
            }
        }
        self.decoded = decoded;
        if let (Some(p), true) = (&row_position, keeps) {
            // Bronze keeps the payload once, however many records it decodes into.
            work.lake
                .get_or_insert_with(Box::default)
                .payload(p, payload, ingested_at, event_time);
        }
        for (outcome, own, at) in outcomes.drain(..) {
            // Each event moves its partition's clock just before it is placed: a later event
            // of the same payload must not make an earlier one late.
            if let Some(at) = at {
                self.reorder.observe(partition, at, work.read_at);
            }
            match outcome {
                Outcome::Record(record) if own => {
                    self.record(record, row_position.as_ref(), partition, work)?
                }
                Outcome::Record(record) => self.elsewhere(record, partition, work),
                Outcome::Duplicate(copy) => {
                    work.duplicates += u64::from(own);
                    self.reorder
                        .duplicate(&copy.event_id, micros(&copy.event_time), partition);
                }
                Outcome::DeadLetter(letter) if own => {
                    work.dead += 1;
                    self.dead_letter(&letter)?;
                }
                Outcome::DeadLetter(_) => {}
            }
        }
        self.outcomes = outcomes;
        Ok(())
    }

    /// A payload that is no event: counted, kept in the dead-letter store, and handed to the
    /// source (a Kafka source also publishes it to its dead-letter topic).
    fn dead_letter(&mut self, letter: &DeadLetter) -> Result<(), PipelineError> {
        self.metrics
            .silver
            .dead_letters
            .with_label_values(&[letter.reason_code])
            .inc();
        self.lake.dead_letters.append(letter)?;
        self.source.dead_letter(letter)?;
        Ok(())
    }

    /// At the end of a finite input: what the decoder still holds (an extract row whose quote
    /// never closed) becomes a dead letter instead of vanishing.
    fn end_of_input(&mut self) -> Result<(), PipelineError> {
        let Some(pos) = self.last_position else {
            return Ok(());
        };
        let source = &*self.source;
        let position = || SourcePosition {
            source: source.stream_name(pos.stream),
            partition: pos.partition,
            offset: pos.offset,
        };
        if let Some(letter) = self.decoder.finish(position) {
            self.summary.dead_letters += 1;
            self.dead_letter(&letter)?;
        }
        Ok(())
    }

    /// One Silver record: quarantined, or facts for the workers (and the rules); and a row for
    /// the lake when it is written.
    fn record(
        &mut self,
        record: Box<SilverRecord>,
        row_position: Option<&RowPosition>,
        partition: PartitionId,
        work: &mut EpochWork,
    ) -> Result<(), PipelineError> {
        let mut patient_key = None;
        let mut to_rules_too = false;
        for f in record.dq_flags.iter() {
            self.flag_counts[f as usize] += 1;
        }
        if record.quarantined() {
            work.quarantined += 1;
            self.lake.quarantine.append(&record)?;
        } else if let Some((patient, at)) = self.facts.add(&record, &mut work.batches) {
            patient_key = Some(patient);
            work.gold += 1;
            self.watermark = self.watermark.max(at);
            // A cancel retracts Gold facts; the rules saw the event it cancels.
            to_rules_too =
                self.downstream.to_rules.is_some() && !record.kind.is_some_and(|k| k.is_cancel());
        }
        // The lake takes the record into its columns; the rules take the record itself.
        if let Some(position) = row_position {
            work.lake
                .get_or_insert_with(Box::default)
                .record(&record, patient_key, position);
        }
        if let (Some(patient), true) = (patient_key, to_rules_too) {
            self.reorder.hold(
                patient,
                record,
                partition,
                work.read_at,
                &mut work.for_rules,
            );
        }
        Ok(())
    }

    /// A record of another process's patient (in a cluster whose processes read every
    /// partition): no facts, no lake row, no count; the rules read it in its place for the
    /// placements and the watermark, without running its patient's rules.
    fn elsewhere(
        &mut self,
        record: Box<SilverRecord>,
        partition: PartitionId,
        work: &mut EpochWork,
    ) {
        work.elsewhere += 1;
        // A cancel retracts Gold facts; the rules saw the event it cancels.
        if self.downstream.to_rules.is_none() || record.kind.is_some_and(|k| k.is_cancel()) {
            return;
        }
        if let Some(patient) = self.facts.key_of(&record) {
            self.reorder.hold_elsewhere(
                patient,
                record,
                partition,
                work.read_at,
                &mut work.for_rules,
            );
        }
    }

    /// Counts one epoch in the metrics and the run's summary.
    fn count(&mut self, events: u64, work: &EpochWork) {
        let metrics = self.metrics;
        if work.dead > 0 {
            // Counted in /metrics and the status line; per-batch detail only when asked for.
            tracing::debug!(count = work.dead, source = %self.source_name, "payloads sent to the dead-letter store");
        }
        self.events_in.inc_by(work.kept);
        metrics.silver.duplicates.inc_by(work.duplicates);
        metrics.silver.quarantined.inc_by(work.quarantined);
        metrics.silver.elsewhere.inc_by(work.elsewhere);
        metrics.gold.gold_records.inc_by(work.gold);
        for (i, count) in self.flag_counts.iter_mut().enumerate() {
            if *count > 0 {
                metrics
                    .silver
                    .dq_flags
                    .with_label_values(&[DqFlag::ALL[i].name()])
                    .inc_by(*count);
                *count = 0;
            }
        }
        self.summary.events += events;
        self.summary.dead_letters += work.dead;
        self.summary.duplicates += work.duplicates;
        self.summary.quarantined += work.quarantined;
        self.summary.gold_records += work.gold;
        self.summary.elsewhere += work.elsewhere;
    }

    /// Sends the epoch to the lake, the rules and the workers; takes a checkpoint after it
    /// when one is due.
    fn send_epoch(
        &mut self,
        work: EpochWork,
        read_at: Instant,
        events: u64,
    ) -> Result<(), PipelineError> {
        let number = self.summary.epochs;
        if self.reorder.is_on() {
            let rules = &self.metrics.rules;
            rules.reorder_held.set(self.reorder.len() as i64);
            rules
                .late_records
                .inc_by(work.for_rules.iter().filter(|r| r.late).count() as u64);
        }
        if let (Some(l), Some(rows)) = (self.downstream.lake, work.lake) {
            let rows = (*rows).finish().map_err(|e| LakeWriteError::Table {
                table: "bronze/events",
                message: e.to_string(),
            })?;
            l.send(LakeMessage::Events {
                epoch: number,
                rows: Box::new(rows),
            })?;
        }
        let snapshot = self.checkpoints.as_ref().is_some_and(Coordinator::due);
        self.downstream.send(Epoch {
            number,
            batches: work.batches,
            records: work.for_rules,
            watermark: self.watermark,
            read_at,
            snapshot,
        })?;
        if let Some(c) = self.checkpoints.as_mut() {
            c.record_input(events);
        }
        if snapshot {
            self.take_checkpoint(number)?;
        }
        self.summary.epochs += 1;
        if self.last_lake_flush.elapsed() >= Duration::from_secs(1) {
            self.lake.flush()?;
            self.last_lake_flush = Instant::now();
        }
        Ok(())
    }

    /// The state after `epoch`; written once its outputs are durable.
    fn take_checkpoint(&mut self, epoch: u64) -> Result<(), PipelineError> {
        let ingest = self.encode_state()?;
        if let Some(c) = self.checkpoints.as_mut() {
            c.take(epoch, ingest);
        }
        if let Some(l) = self.downstream.lake {
            l.send(LakeMessage::Flush { epoch })?;
        }
        Ok(())
    }

    /// The ingest side of a checkpoint, encoded now (the lake is synced first, so the lengths
    /// recorded are on disk).
    fn encode_state(&mut self) -> Result<Vec<u8>, PipelineError> {
        let lake = self.lake.lengths()?;
        let (processed, watermark) = (&self.positions.processed, self.watermark);
        let stages = IngestStages {
            silver: &mut self.silver,
            decoder: &mut self.decoder,
            facts: &mut self.facts,
            reorder: &mut self.reorder,
        };
        Ok(IngestState::encode(&stages, processed, watermark, lake)?)
    }

    fn finish(mut self) -> Result<Ingested, PipelineError> {
        self.lake.flush()?;
        let final_state = match self.checkpoints {
            Some(_) => Some(self.encode_state()?),
            None => None,
        };
        Ok(Ingested {
            summary: self.summary,
            commits: self.commits,
            final_state,
            checkpoints: self.checkpoints,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::path::{Path, PathBuf};
    use std::sync::mpsc::{sync_channel, Receiver};

    use super::*;
    use crate::checkpoint::CheckpointStore;
    use crate::model::Network;
    use crate::source::SourceError;

    /// Payloads in memory, one list per poll; then the end.
    struct Payloads {
        polls: VecDeque<Vec<String>>,
        offset: i64,
    }

    impl Source for Payloads {
        fn name(&self) -> &str {
            "memory"
        }

        fn poll(
            &mut self,
            batch: &mut RawBatch,
            _max: usize,
            _wait: Duration,
        ) -> Result<Poll, SourceError> {
            let Some(payloads) = self.polls.pop_front() else {
                return Ok(Poll::End);
            };
            for p in payloads {
                batch.push(p.as_bytes(), 0, self.offset);
                self.offset += 1;
            }
            Ok(Poll::Ready)
        }
    }

    fn admission(n: u32) -> String {
        format!(
            r#"{{"event_id":"EV-{n}","event_type":"ADMISSION","event_timestamp":"2026-03-02T00:00:{n:02}Z","patient_id":"P10000{n:02}","hospital_id":1,"department":"Emergency","bed_id":"H1-EMR-{n}","gender":"F","age":50,"admission_time":"2026-03-01T15:37:00Z","admission_priority":"Emergency","diagnosis_code":"S72.0","insurance_type":"Public"}}"#
        )
    }

    fn data_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cds-ingest-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// What a run of the ingest loop sent.
    struct Sent {
        ingested: Ingested,
        /// Per worker, the epochs it received.
        workers: Vec<Vec<u64>>,
        /// The epochs the rules thread was asked to snapshot after.
        snapshots: Vec<u64>,
        /// The event ids the rules received, in order.
        for_rules: Vec<String>,
        metrics: Metrics,
    }

    /// Runs the ingest loop over `polls` with two workers and an always-durable sink, without
    /// a reorder window.
    fn ingest_polls(dir: &Path, polls: Vec<Vec<String>>, every: Option<Duration>) -> Sent {
        ingest_polls_with(dir, polls, every, Duration::ZERO)
    }

    fn ingest_polls_with(
        dir: &Path,
        polls: Vec<Vec<String>>,
        every: Option<Duration>,
        reorder_window: Duration,
    ) -> Sent {
        let mut config = PipelineConfig::new(dir.to_path_buf(), Network::default_network());
        config.reorder_window = reorder_window;
        let metrics = Metrics::new();
        let (to_workers, from_ingest): (Vec<_>, Vec<Receiver<WorkerBatch>>) =
            (0..2).map(|_| sync_channel(64)).unzip();
        let (to_rules, rules_rx) = sync_channel(64);
        let durable = AtomicU64::new(u64::MAX);
        let mut source = Payloads {
            polls: polls.into(),
            offset: 0,
        };
        let checkpoints = every.map(|interval| {
            let store = CheckpointStore::in_data_dir(dir);
            let ops = OpsAlerts::detached();
            Coordinator::new(
                store,
                interval,
                "memory".into(),
                ops,
                Arc::new(Metrics::new()),
            )
        });
        let start = IngestStart {
            config: &config,
            network: LiveNetwork::new(config.network.clone()),
            source: &mut source,
            pseudonyms: Pseudonymiser::new(b"k"),
            downstream: Downstream {
                to_workers: &to_workers,
                to_rules: Some(std::slice::from_ref(&to_rules)),
                durable: &durable,
                lake: None,
            },
            restore: None,
            checkpoints,
            metrics: &metrics,
        };
        let ingested = ingest(start, &AtomicBool::new(false)).expect("ingest");
        let workers = from_ingest
            .iter()
            .map(|rx| rx.try_iter().map(|b| b.epoch).collect())
            .collect();
        let batches: Vec<RulesBatch> = rules_rx.try_iter().collect();
        let snapshots = batches
            .iter()
            .filter(|b| b.snapshot)
            .map(|b| b.epoch)
            .collect();
        let for_rules = batches
            .iter()
            .flat_map(|b| b.records.iter())
            .map(|r| r.record.event.event_id.clone())
            .collect();
        Sent {
            ingested,
            workers,
            snapshots,
            for_rules,
            metrics,
        }
    }

    /// After a restart, newer payloads wait until every partition is read again as far as
    /// the lake holds it; a partition whose last held payload is gone ends its wait at the
    /// next one.
    #[test]
    fn newer_payloads_wait_for_the_lakes_tail() {
        let at = |partition, offset| Position {
            stream: 0,
            partition,
            offset,
        };
        let mut replay = Replay {
            ends: HashMap::from([((0, 0), 10), ((0, 1), 5)]),
            waiting: Vec::new(),
            since: Instant::now(),
            give_up: false,
        };
        assert!(
            replay.holds_back(at(2, 3)),
            "a partition without a tail waits"
        );
        assert!(!replay.holds_back(at(0, 4)), "the tail is read");
        assert!(!replay.holds_back(at(1, 5)), "the tail's last payload");
        assert!(
            replay.holds_back(at(1, 6)),
            "partition 0 is still read again"
        );
        assert!(!replay.over());
        assert!(
            replay.holds_back(at(0, 12)),
            "offset 10 is gone: the tail ends"
        );
        assert!(replay.over());
        assert!(
            replay.holds_back(at(2, 4)),
            "until the waiting payloads are taken, in their order"
        );
    }

    #[test]
    fn every_worker_gets_every_epoch_and_dead_letters_are_counted() {
        let dir = data_dir("epochs");
        let polls = vec![
            vec![admission(1), admission(2)],
            vec!["not an event".into()],
            vec![admission(3), "{\"event_id\":".into()],
        ];
        let sent = ingest_polls(&dir, polls, None);
        assert_eq!(sent.workers, vec![vec![0, 1, 2], vec![0, 1, 2]]);
        let summary = &sent.ingested.summary;
        assert_eq!((summary.epochs, summary.events), (3, 5));
        assert_eq!((summary.dead_letters, summary.gold_records), (2, 3));
        let counted: u64 = sent
            .metrics
            .silver
            .dead_letters
            .with_label_values(&["malformed_json"])
            .get();
        assert_eq!(counted, 2, "dead letters by reason");
        assert!(sent.ingested.final_state.is_none(), "no checkpointing");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_rules_read_event_time_order_and_the_end_releases_what_is_held() {
        let dir = data_dir("reorder");
        // Admissions 3 s, 1 s and 2 s into the minute; a window of half a second.
        let polls = vec![vec![admission(3), admission(1)], vec![admission(2)]];
        let sent = ingest_polls_with(&dir, polls, None, Duration::from_millis(500));
        assert_eq!(sent.for_rules, ["EV-1", "EV-2", "EV-3"]);
        // EV-3 was held until the input ended: it went in one more epoch.
        assert_eq!(sent.workers[0], vec![0, 1, 2]);
        assert_eq!(sent.ingested.summary.events, 3);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_checkpoint_is_requested_at_the_epoch_it_is_taken() {
        // A long interval: only the first, empty checkpoint before any input (epoch 0).
        let dir = data_dir("hourly");
        let polls = vec![vec![admission(1)], vec![admission(2)]];
        let sent = ingest_polls(&dir, polls, Some(Duration::from_secs(3600)));
        assert_eq!(sent.snapshots, vec![0]);
        assert_eq!(
            sent.workers[0],
            vec![0, 1, 2],
            "epoch 0 carries the first checkpoint"
        );
        let c = sent.ingested.checkpoints.as_ref().expect("checkpointing");
        assert_eq!(c.through(), 1, "the first checkpoint covers epoch 0");
        assert!(
            sent.ingested.final_state.is_some(),
            "the final checkpoint's state"
        );
        let _ = std::fs::remove_dir_all(dir);

        // No interval: every epoch takes one, each written once its outputs are durable.
        let dir = data_dir("always");
        let polls = vec![vec![admission(1)], vec![admission(2)], vec![admission(3)]];
        let sent = ingest_polls(&dir, polls, Some(Duration::ZERO));
        assert_eq!(sent.snapshots, vec![0, 1, 2, 3]);
        let c = sent.ingested.checkpoints.as_ref().expect("checkpointing");
        assert!(c.through() >= 3, "written through {}", c.through());
        assert!(!CheckpointStore::in_data_dir(&dir).list().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }
}
