//! The sink thread: adds up the workers' KPI changes and writes the documents an epoch
//! changed once every worker has completed it; writes the rules' alerts; and tells the ingest
//! which epochs are durable, so that it commits source positions only behind them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::messages::{CompletedEpoch, SinkMessage, Sunk};
use super::{PipelineConfig, PipelineError};
use crate::gold::{GoldOutput, KpiState, Micros};
use crate::lake::tables::KpiRow;
use crate::lake::writer::{LakeMessage, LakeWriteError};
use crate::metrics::Metrics;
use crate::model::format_time;
use crate::model::{Document, Network};
use crate::ops::{Condition, OpsAlerts};
use crate::sink::{announce, Container, Feed, ServingIndex, Sink};
use crate::source::{Position, Source, SourceError};
use crate::support::Stage;

/// Source positions waiting for their outputs to be durable before they are committed.
#[derive(Debug, Default)]
pub(super) struct Commits {
    pending: VecDeque<(u64, Vec<Position>)>,
    last_commit: Option<Instant>,
}

impl Commits {
    pub(super) fn record(&mut self, epoch: u64, positions: impl Iterator<Item = Position>) {
        let last = crate::source::kafka::last_positions(positions);
        if !last.is_empty() {
            self.pending.push_back((epoch, last));
        }
    }

    /// Commits, at most every 200 ms, the positions of every epoch below `durable`.
    pub(super) fn commit_durable(
        &mut self,
        source: &mut dyn Source,
        durable: u64,
    ) -> Result<(), SourceError> {
        if self
            .last_commit
            .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        {
            return Ok(());
        }
        self.commit_through(source, durable)
    }

    /// Commits the positions of every epoch below `durable`.
    pub(super) fn commit_through(
        &mut self,
        source: &mut dyn Source,
        durable: u64,
    ) -> Result<(), SourceError> {
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

/// The sink with what is announced and counted around each write.
pub(super) struct Writer {
    pub sink: Box<dyn Sink>,
    pub feed: Option<Feed>,
    /// What the HTTP API answers from, when a server runs.
    pub index: Option<ServingIndex>,
    pub metrics: Arc<Metrics>,
    /// Epochs whose KPI documents are written (all epochs below this number).
    pub kpi_epochs: u64,
    /// Per rules thread, the epochs whose alerts are written; `None` when no rules run.
    pub alert_epochs: Option<Vec<u64>>,
    /// min(kpi_epochs, alert_epochs): what the ingest may commit to the source.
    pub durable: Arc<AtomicU64>,
    /// Where written KPI documents go as snapshots (`gold/kpi_snapshots`).
    pub lake: Option<SyncSender<LakeMessage>>,
    pub ops: OpsAlerts,
}

impl Writer {
    fn write(&mut self, container: Container, docs: &[Document]) -> Result<(), PipelineError> {
        if let Err(e) = self.sink.upsert(container, docs) {
            self.metrics.sink.sink_errors.inc();
            let detail = "a sink write failed for good; the run stops";
            self.ops.raise(Condition::SinkRetriesExhausted, detail);
            return Err(e.into());
        }
        let dead = self.sink.take_dead_lettered();
        if let Some(index) = &self.index {
            if dead.is_empty() {
                index.apply(container, docs);
            } else {
                let held: Vec<Document> = docs
                    .iter()
                    .filter(|d| !dead.contains(&d.id))
                    .cloned()
                    .collect();
                index.apply(container, &held);
            }
            self.metrics
                .sink
                .index_documents
                .with_label_values(&[container.name()])
                .set(i64::try_from(index.len(container)).unwrap_or(i64::MAX));
        }
        announce(self.feed.as_ref(), container, docs);
        Ok(())
    }

    /// Records what is written: KPIs through `kpi_epoch`, the alerts of rules thread `share`
    /// through `epoch` (`alerts`).
    fn written_through(&mut self, kpi_epoch: Option<u64>, alerts: Option<(usize, u64)>) {
        if let Some(e) = kpi_epoch {
            self.kpi_epochs = self.kpi_epochs.max(e + 1);
        }
        if let (Some((share, e)), Some(done)) = (alerts, self.alert_epochs.as_mut()) {
            if let Some(done) = done.get_mut(share) {
                *done = (*done).max(e + 1);
            }
        }
        let alerts_done = self
            .alert_epochs
            .as_ref()
            .and_then(|d| d.iter().min().copied())
            .unwrap_or(u64::MAX);
        let durable = self.kpi_epochs.min(alerts_done);
        self.durable.store(durable, Ordering::Release);
    }
}

/// Writes the KPI documents changed since the last write, stamped with the watermark of
/// `upto`; returns how many it wrote.
fn write_kpis(
    writer: &mut Writer,
    state: &mut KpiState,
    upto: CompletedEpoch,
) -> Result<u64, PipelineError> {
    let metrics = writer.metrics.clone();
    let as_of = DateTime::<Utc>::from_timestamp_micros(upto.watermark)
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
    }
    writer.written_through(Some(upto.epoch), None);
    metrics.gold.occupied_beds.set(state.occupied());
    if upto.watermark > Micros::MIN {
        metrics
            .gold
            .watermark_seconds
            .set(upto.watermark / 1_000_000);
    }
    metrics
        .gold
        .processing_latency
        .observe(upto.read_at.elapsed().as_secs_f64());
    Ok(docs.len() as u64)
}

/// The sink loop's state between messages.
struct SinkLoop {
    writer: Writer,
    state: KpiState,
    metrics: Arc<Metrics>,
    /// The epoch each worker completed last.
    completed: Vec<Option<u64>>,
    /// Epochs some worker completed, with their watermark and read time.
    pending: BTreeMap<u64, (Micros, Instant)>,
    /// The newest epoch every worker completed.
    flushed: Option<u64>,
    /// What to write at the next flush.
    ready: Option<CompletedEpoch>,
    written: u64,
    latest_watermark: Micros,
}

impl SinkLoop {
    fn handle(&mut self, message: SinkMessage) -> Result<(), PipelineError> {
        match message {
            SinkMessage::Alerts {
                share,
                epoch,
                documents,
                forecasts,
                read_at,
            } => {
                if !forecasts.is_empty() {
                    self.writer.write(Container::Kpis, &forecasts)?;
                    self.metrics
                        .sink
                        .documents_written
                        .with_label_values(&["forecast"])
                        .inc_by(forecasts.len() as u64);
                }
                if !documents.is_empty() {
                    self.writer.write(Container::Alerts, &documents)?;
                    self.metrics
                        .rules
                        .alerts_written
                        .inc_by(documents.len() as u64);
                    self.metrics
                        .rules
                        .alert_latency
                        .observe(read_at.elapsed().as_secs_f64());
                }
                self.writer.written_through(None, Some((share, epoch)));
            }
            SinkMessage::Departments(network) => {
                self.state.set_network(network);
                if let Some(epoch) = self.flushed {
                    self.ready = self.ready.or(Some(CompletedEpoch {
                        epoch,
                        watermark: self.latest_watermark,
                        read_at: Instant::now(),
                    }));
                }
            }
            SinkMessage::Gold(GoldOutput::Changes(changes)) => {
                self.metrics.gold.kpi_changes.inc_by(changes.len() as u64);
                for c in changes {
                    self.state.apply(c);
                }
            }
            SinkMessage::Gold(GoldOutput::Complete {
                worker,
                epoch,
                watermark,
                read_at,
            }) => self.complete(worker, epoch, watermark, read_at),
        }
        Ok(())
    }

    /// A worker completed `epoch`: once every worker has, its documents are ready.
    fn complete(&mut self, worker: usize, epoch: u64, watermark: Micros, read_at: Instant) {
        if let Some(slot) = self.completed.get_mut(worker) {
            *slot = Some(epoch);
        }
        self.pending.entry(epoch).or_insert((watermark, read_at));
        self.latest_watermark = self.latest_watermark.max(watermark);
        let all = self.completed.iter().copied().collect::<Option<Vec<u64>>>();
        if let Some(min) = all.and_then(|v| v.into_iter().min()) {
            if self.flushed.is_none_or(|f| min > f) {
                if let Some(&(watermark, read_at)) = self.pending.get(&min) {
                    self.ready = Some(CompletedEpoch {
                        epoch: min,
                        watermark,
                        read_at,
                    });
                }
                self.pending.retain(|e, _| *e > min);
                self.flushed = Some(min);
                self.metrics.gold.epochs_completed.inc();
            }
        }
    }

    fn write_kpis(&mut self, upto: CompletedEpoch) -> Result<(), PipelineError> {
        self.written += write_kpis(&mut self.writer, &mut self.state, upto)?;
        Ok(())
    }
}

/// The sink loop: add up changes; when every worker completed an epoch, write what changed,
/// at most once per `interval`.
fn sink_loop(
    rx: Receiver<SinkMessage>,
    writer: Writer,
    state: KpiState,
    workers: usize,
    interval: Duration,
) -> Result<Sunk, PipelineError> {
    let metrics = writer.metrics.clone();
    let mut sink = SinkLoop {
        writer,
        state,
        metrics: metrics.clone(),
        completed: vec![None; workers],
        pending: BTreeMap::new(),
        flushed: None,
        ready: None,
        written: 0,
        latest_watermark: Micros::MIN,
    };
    let mut last_flush = Instant::now() - interval;
    loop {
        let message = rx.recv_timeout(interval);
        let _busy = metrics.stages.busy(Stage::Sink);
        if message.is_ok() {
            crate::support::fault::drill(Stage::Sink);
        }
        match message {
            Ok(message) => sink.handle(message)?,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if let Some(upto) = sink.ready {
            if last_flush.elapsed() >= interval {
                sink.write_kpis(upto)?;
                sink.ready = None;
                last_flush = Instant::now();
            }
        }
    }
    // Everything is complete once every worker has hung up.
    let read_at = sink.ready.map_or_else(Instant::now, |r| r.read_at);
    sink.write_kpis(CompletedEpoch {
        epoch: sink.flushed.unwrap_or(0),
        watermark: sink.latest_watermark,
        read_at,
    })?;
    Ok(Sunk {
        documents_written: sink.written,
        occupied: sink.state.occupied(),
    })
}

/// Starts the sink thread. In a cluster it writes only the documents of the hospitals this
/// process's workers own.
pub(super) fn spawn(
    config: &PipelineConfig,
    network: Network,
    writer: Writer,
    rx: Receiver<SinkMessage>,
) -> Result<JoinHandle<Result<Sunk, PipelineError>>, PipelineError> {
    let workers = config.workers.max(1);
    let interval = config.flush_interval;
    // In a cluster: this process's first worker, and the workers of the whole cluster.
    let share = config
        .cluster
        .as_ref()
        .map(|c| (c.process * workers, c.addresses.len() * workers));
    std::thread::Builder::new()
        .name("cds-sink".into())
        .spawn(move || {
            let state = match share {
                Some((first, of)) => KpiState::new(network).only_workers(first, workers, of),
                None => KpiState::new(network),
            };
            sink_loop(rx, writer, state, workers, interval)
        })
        .map_err(|e| PipelineError::Dataflow(e.into()))
}
