//! The lake writer: Bronze, Silver and Gold rows into Delta tables, on a thread of its own.
//!
//! The pipeline hands rows over a bounded channel and goes on; this thread buffers them and
//! commits one Delta version per table when enough rows are waiting, when the flush interval
//! has passed, or when a checkpoint asks for it. So files are few and large, and the dataflow
//! never waits for object storage (unless storage falls so far behind that the channel fills:
//! then the source slows down, and nothing is dropped).
//!
//! Exactly once across crashes: every commit carries one Delta application transaction
//! (`txn`) per source stream and partition, `cds:<source>:<partition>`, whose version is the
//! highest source offset in the table after that commit. A checkpoint is written only after
//! the lake has committed everything up to it ([`LakeHandle::durable`]); a restart replays the
//! source from the checkpoint, and rows at or below an offset the table has already recorded
//! are not written again. Rows of a partition arrive in offset order, so each table holds
//! every position exactly once.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use deltalake::arrow::array::RecordBatch;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, StructType, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::DeltaTable;
use tracing::{info, warn};

use super::dims;
use super::patients::CurrentPatients;
use super::tables::{self, EpochRows, KpiRow, Positioned, Span, Table};
use crate::dims::{Dimension, Scd2};
use crate::metrics::Metrics;
use crate::support::{Backoff, Stage};

/// The waits between lake commits that failed in a row (while running the writer keeps trying;
/// at the end it gives up after `retries` more).
const COMMIT_RETRY: Backoff = Backoff {
    first: Duration::from_millis(200),
    max: Duration::from_secs(10),
    retries: 5,
};

/// Why the lake could not be written.
#[derive(Debug, thiserror::Error)]
pub enum LakeWriteError {
    #[error("lake location {0:?}: expected a directory, az://CONTAINER/PATH or abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH")]
    Location(String),
    #[error("lake table {table}: {message}")]
    Table {
        table: &'static str,
        message: String,
    },
    #[error("the lake writer stopped")]
    Stopped,
    #[error("the lake writer could not start: {0}")]
    Start(String),
}

/// Where the lake's tables live and how writes are batched.
#[derive(Debug, Clone)]
pub struct LakeConfig {
    /// A local directory, `az://container/path` or
    /// `abfss://container@account.dfs.core.windows.net/path`.
    pub location: String,
    /// Commit once this many rows wait (all tables together).
    pub flush_rows: usize,
    /// Commit at least this often while rows wait.
    pub flush_interval: Duration,
    /// In a cluster whose every process reads every partition and writes its own patients'
    /// rows, this process's index: its commits record their progress under names of their own
    /// (`cds:<source>:<partition>:process-<I>`), so that processes sharing one lake do not
    /// take each other's progress for theirs.
    pub writer: Option<usize>,
}

impl LakeConfig {
    /// The name a commit records a source partition's progress under.
    pub fn app_id(&self, source: &str, partition: i32) -> String {
        match self.writer {
            Some(process) => format!("{}:process-{process}", app_id(source, partition)),
            None => app_id(source, partition),
        }
    }

    pub fn new(location: impl Into<String>) -> Self {
        LakeConfig {
            location: location.into(),
            flush_rows: 100_000,
            flush_interval: Duration::from_secs(5),
            writer: None,
        }
    }

    /// The URL of one table; a local directory is created.
    pub fn table_url(&self, table: Table) -> Result<url::Url, LakeWriteError> {
        table_url(&self.location, table.path())
    }
}

/// The URL of the table at `path` under the lake root `location`.
pub fn table_url(location: &str, path: &str) -> Result<url::Url, LakeWriteError> {
    let bad = || LakeWriteError::Location(location.to_owned());
    let remote = [
        "az://", "abfss://", "abfs://", "azure://", "adl://", "file://",
    ]
    .iter()
    .any(|p| location.starts_with(p));
    let joined = format!("{}/{path}", location.trim_end_matches('/'));
    if !remote {
        std::fs::create_dir_all(&joined).map_err(|_| bad())?;
    }
    deltalake::ensure_table_uri(&joined).map_err(|_| bad())
}

/// What the pipeline sends to the lake.
#[derive(Debug)]
pub enum LakeMessage {
    /// The rows of one epoch, in columns.
    Events { epoch: u64, rows: Box<EpochRows> },
    /// KPI documents as the sink wrote them.
    Kpis(Vec<KpiRow>),
    /// Commit everything up to and including this epoch now (a checkpoint waits for it).
    Flush { epoch: u64 },
    /// Department versions for `gold/dim_department` (SCD type 2).
    Departments(Vec<crate::dims::Version>),
    /// Asks how far the lake holds each of these (source, partition): the highest offset that
    /// the Bronze, Silver or patient-flow table records (each holds rows of some payloads
    /// only: Silver none of a dead letter, the facts none of a reading), or `i64::MIN` when
    /// none holds any.
    Held {
        partitions: Vec<(Arc<str>, i32)>,
        reply: SyncSender<Vec<i64>>,
    },
}

/// The pipeline's end of the lake writer.
#[derive(Debug)]
pub struct LakeHandle {
    tx: Option<SyncSender<LakeMessage>>,
    durable: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<LakeStats, LakeWriteError>>>,
}

/// What the writer did.
#[derive(Debug, Clone, Default)]
pub struct LakeStats {
    pub rows: BTreeMap<&'static str, u64>,
    pub commits: u64,
}

impl LakeHandle {
    /// Starts the writer thread.
    pub fn start(config: LakeConfig, metrics: Arc<Metrics>) -> Result<Self, LakeWriteError> {
        for t in Table::ALL {
            config.table_url(t)?;
        }
        let (tx, rx) = sync_channel(64);
        let durable = Arc::new(AtomicU64::new(0));
        let d = durable.clone();
        let thread = std::thread::Builder::new()
            .name("cds-lake".into())
            .spawn(move || LakeWriter::new(config, metrics, d)?.run(rx))
            .map_err(|e| LakeWriteError::Start(e.to_string()))?;
        Ok(LakeHandle {
            tx: Some(tx),
            durable,
            thread: Some(thread),
        })
    }

    /// A sender for another thread (the sink's KPI snapshots).
    pub fn sender(&self) -> Option<SyncSender<LakeMessage>> {
        self.tx.clone()
    }

    /// Hands rows to the writer; waits only when its channel is full.
    pub fn send(&self, message: LakeMessage) -> Result<(), LakeWriteError> {
        match &self.tx {
            Some(tx) => tx.send(message).map_err(|_| LakeWriteError::Stopped),
            None => Err(LakeWriteError::Stopped),
        }
    }

    /// How far the lake holds each source partition (see [`LakeMessage::Held`]), once the
    /// writer has taken what was sent before.
    pub fn held(&self, partitions: Vec<(Arc<str>, i32)>) -> Result<Vec<i64>, LakeWriteError> {
        let (reply, answer) = sync_channel(1);
        self.send(LakeMessage::Held { partitions, reply })?;
        answer.recv().map_err(|_| LakeWriteError::Stopped)
    }

    /// Epochs below this number are committed to every table.
    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Commits what is left and stops the writer (every other sender must be dropped).
    pub fn finish(mut self) -> Result<LakeStats, LakeWriteError> {
        self.tx = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(LakeWriteError::Stopped),
            None => Ok(LakeStats::default()),
        }
    }
}

/// The writer thread's state.
struct LakeWriter {
    config: LakeConfig,
    metrics: Arc<Metrics>,
    durable: Arc<AtomicU64>,
    runtime: tokio::runtime::Runtime,
    tables: HashMap<Table, DeltaTable>,
    /// The highest offset each table holds per (source, partition), as its `txn` records.
    committed: HashMap<(Table, Arc<str>, i32), i64>,
    /// Rows waiting for the next commit of Bronze, Silver and the patient-flow facts.
    pending: BTreeMap<Table, Pending>,
    kpis: Vec<KpiRow>,
    /// The dimensions, loaded from their tables on first use.
    dims: HashMap<Dimension, Scd2>,
    /// The current version of each patient in `gold/dim_patient`, once it is loaded.
    patients: Option<CurrentPatients>,
    /// The highest position per (source, partition) whose patient version is applied but not
    /// committed.
    dim_positions: BTreeMap<(Arc<str>, i32), i64>,
    /// The newest epoch received (its rows are buffered or committed).
    received: Option<u64>,
    stats: LakeStats,
}

/// The application id of a source partition in the Delta log.
pub fn app_id(source: &str, partition: i32) -> String {
    format!("cds:{source}:{partition}")
}

impl LakeWriter {
    fn new(
        config: LakeConfig,
        metrics: Arc<Metrics>,
        durable: Arc<AtomicU64>,
    ) -> Result<Self, LakeWriteError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| LakeWriteError::Start(e.to_string()))?;
        Ok(LakeWriter {
            config,
            metrics,
            durable,
            runtime,
            tables: HashMap::new(),
            committed: HashMap::new(),
            pending: BTreeMap::new(),
            kpis: Vec::new(),
            dims: HashMap::new(),
            patients: None,
            dim_positions: BTreeMap::new(),
            received: None,
            stats: LakeStats::default(),
        })
    }

    fn waiting(&self) -> usize {
        let dims = self.dims.values().filter(|d| d.changed()).count();
        let rows: usize = self.pending.values().map(|p| p.rows).sum();
        rows + self.kpis.len() + dims
    }

    fn run(mut self, rx: Receiver<LakeMessage>) -> Result<LakeStats, LakeWriteError> {
        let mut last_commit = Instant::now();
        // Commits failed in a row; the next waits COMMIT_RETRY's delay for that many.
        let mut failures = 0u32;
        let mut backoff = Duration::ZERO;
        let mut flush_asked = false;
        let stages = self.metrics.stages.clone();
        loop {
            let due = if self.waiting() == 0 {
                Duration::from_millis(500)
            } else {
                (self.config.flush_interval.max(backoff))
                    .saturating_sub(last_commit.elapsed())
                    .max(Duration::from_millis(1))
            };
            let mut closed = false;
            let received = rx.recv_timeout(due);
            let _busy = stages.busy(Stage::Lake);
            if received.is_ok() {
                crate::support::fault::drill(Stage::Lake);
            }
            match received {
                Ok(message) => flush_asked |= self.receive(message),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => closed = true,
            }
            let time_due = self.waiting() > 0
                && last_commit.elapsed() >= self.config.flush_interval.max(backoff);
            if closed || flush_asked || time_due || self.waiting() >= self.config.flush_rows {
                if !backoff.is_zero() && last_commit.elapsed() < backoff && !closed {
                    continue;
                }
                last_commit = Instant::now();
                match self.commit() {
                    Ok(()) => {
                        failures = 0;
                        backoff = Duration::ZERO;
                        flush_asked = false;
                    }
                    Err(e) => {
                        self.metrics.lake.lake_errors.inc();
                        warn!(error = %e, "lake commit failed; retrying");
                        backoff = COMMIT_RETRY.delay(failures);
                        failures = failures.saturating_add(1);
                        if closed {
                            return self.finish_after_failure(e);
                        }
                    }
                }
            }
            if closed {
                info!(commits = self.stats.commits, "lake writer finished");
                return Ok(self.stats);
            }
        }
    }

    /// At the end, a few more tries before giving up.
    fn finish_after_failure(mut self, first: LakeWriteError) -> Result<LakeStats, LakeWriteError> {
        let mut last = first;
        for attempt in 0..COMMIT_RETRY.retries {
            std::thread::sleep(COMMIT_RETRY.delay(attempt));
            match self.commit() {
                Ok(()) => return Ok(self.stats),
                Err(e) => {
                    self.metrics.lake.lake_errors.inc();
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Takes one message; true when it asks for a commit now.
    fn receive(&mut self, message: LakeMessage) -> bool {
        match message {
            LakeMessage::Events { epoch, rows } => {
                self.received = Some(epoch);
                let EpochRows {
                    bronze,
                    silver,
                    facts,
                    patients,
                    patient_spans,
                } = *rows;
                // Each table keeps its own record: after a crash between two commits one table
                // may hold rows that another does not.
                self.take(Table::Bronze, bronze);
                self.take(Table::FactPatientFlow, facts);
                if !patients.is_empty() {
                    self.patient_versions(&silver, &patients, &patient_spans);
                }
                self.take(Table::Silver, silver);
                false
            }
            LakeMessage::Departments(versions) => {
                match self.dim(Dimension::Department) {
                    Ok(d) => {
                        if let Some(at) = versions.first().map(|v| v.effective_from) {
                            d.sync(versions, at);
                        }
                    }
                    Err(e) => warn!(error = %e, "cannot read gold/dim_department"),
                }
                false
            }
            LakeMessage::Kpis(rows) => {
                self.kpis.extend(rows);
                false
            }
            LakeMessage::Flush { epoch } => {
                self.received = Some(self.received.map_or(epoch, |r| r.max(epoch)));
                true
            }
            LakeMessage::Held { partitions, reply } => {
                let held = partitions
                    .iter()
                    .map(|(source, partition)| {
                        [Table::Bronze, Table::Silver, Table::FactPatientFlow]
                            .into_iter()
                            .map(|t| self.recorded(t, source, *partition))
                            .max()
                            .unwrap_or(i64::MIN)
                    })
                    .collect();
                // The asking thread may have stopped meanwhile; nothing to do then.
                let _ = reply.send(held);
                false
            }
        }
    }

    /// Keeps the rows of a batch that `table` does not hold yet for its next commit.
    fn take(&mut self, table: Table, rows: Positioned) {
        let Some(rows) = self.fresh(table, rows) else {
            return;
        };
        let pending = self.pending.entry(table).or_default();
        pending.rows += rows.batch.num_rows();
        pending.batches.push(rows.batch);
        for s in rows.spans {
            let high = pending
                .high
                .entry((s.source, s.partition))
                .or_insert(s.last);
            *high = (*high).max(s.last);
        }
    }

    /// The rows of a batch that `table` does not hold yet (all of them, but after a restart),
    /// with their spans; None when there are none.
    fn fresh(&mut self, table: Table, rows: Positioned) -> Option<Positioned> {
        if rows.batch.num_rows() == 0 {
            return None;
        }
        let recorded: Vec<i64> = rows
            .spans
            .iter()
            .map(|s| self.recorded(table, &s.source, s.partition))
            .collect();
        if rows.spans.iter().zip(&recorded).all(|(s, r)| s.first > *r) {
            return Some(rows);
        }
        if rows.spans.iter().zip(&recorded).all(|(s, r)| s.last <= *r) {
            return None;
        }
        let keep = rows
            .spans
            .iter()
            .zip(&recorded)
            .map(|(s, r)| ((s.source.clone(), s.partition), *r))
            .collect::<HashMap<_, _>>();
        match tables::rows_after(&rows.batch, |source, partition, offset| {
            keep.get(&(Arc::from(source), partition))
                .is_none_or(|r| offset > *r)
        }) {
            Ok(batch) => {
                let spans = rows
                    .spans
                    .into_iter()
                    .zip(recorded)
                    .filter(|(s, r)| s.last > *r)
                    .map(|(s, r)| Span {
                        first: s.first.max(r.saturating_add(1)),
                        ..s
                    })
                    .collect();
                Some(Positioned { batch, spans })
            }
            Err(e) => {
                warn!(error = %e, table = table.path(), "cannot select the rows the lake lacks; writing all");
                Some(rows)
            }
        }
    }

    /// Applies the patient attributes of Gold records to `gold/dim_patient`: `patients` are
    /// the rows of the Silver batch with a patient key.
    fn patient_versions(&mut self, silver: &Positioned, patients: &[(u32, u64)], spans: &[Span]) {
        let recorded: Vec<i64> = spans
            .iter()
            .map(|s| self.recorded(Table::DimPatient, &s.source, s.partition))
            .collect();
        if spans.iter().zip(&recorded).all(|(s, r)| s.last <= *r) {
            return;
        }
        let all_new = spans.iter().zip(&recorded).all(|(s, r)| s.first > *r);
        let columns = match tables::PatientColumns::of(&silver.batch) {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot read the patients of a Silver batch");
                return;
            }
        };
        if let Err(e) = self.dim(Dimension::Patient) {
            warn!(error = %e, "cannot read gold/dim_patient");
            return;
        }
        let Some(d) = self.dims.get_mut(&Dimension::Patient) else {
            return;
        };
        let current = self.patients.get_or_insert_with(|| CurrentPatients::of(d));
        for &(row, patient) in patients {
            let row = row as usize;
            if !all_new {
                let (source, partition, offset) = columns.position(row);
                let r = spans
                    .iter()
                    .zip(&recorded)
                    .find(|(s, _)| s.partition == partition && &*s.source == source)
                    .map_or(i64::MIN, |(_, r)| *r);
                if offset <= r {
                    continue;
                }
            }
            let stated = columns.stated(row);
            if !current.changes(patient, &stated) {
                continue;
            }
            let (gender, age, insurance, at) = columns.version(row);
            d.apply(crate::dims::patient_version(
                &crate::model::patient_ref(patient),
                gender,
                age,
                insurance,
                at,
            ));
            current.applied(patient, &stated);
        }
        for (s, r) in spans.iter().zip(recorded) {
            if s.last > r {
                let high = self
                    .dim_positions
                    .entry((s.source.clone(), s.partition))
                    .or_insert(s.last);
                *high = (*high).max(s.last);
            }
        }
    }

    /// A dimension, loaded from its table on first use.
    fn dim(&mut self, d: Dimension) -> Result<&mut Scd2, LakeWriteError> {
        if !self.dims.contains_key(&d) {
            let table = match d {
                Dimension::Patient => Table::DimPatient,
                Dimension::Department => Table::DimDepartment,
            };
            let mut scd = Scd2::new(d);
            let t = self.table(table)?;
            let store = t.object_store();
            let paths: Vec<String> = t
                .snapshot()
                .map_err(|e| err(table, e))?
                .log_data()
                .iter()
                .map(|f| f.path().into_owned())
                .collect();
            for path in paths {
                let batches = self
                    .runtime
                    .block_on(tables::read_data_file(&store, &path))
                    .map_err(|e| err(table, e))?;
                for batch in batches {
                    dims::load(&mut scd, &batch).map_err(|e| err(table, e))?;
                }
            }
            self.dims.insert(d, scd);
        }
        self.dims.get_mut(&d).ok_or(LakeWriteError::Stopped)
    }

    /// Rewrites a changed dimension in one commit (its old files removed, one new file).
    fn write_dimension(&mut self, d: Dimension) -> Result<(), LakeWriteError> {
        let table = match d {
            Dimension::Patient => Table::DimPatient,
            Dimension::Department => Table::DimDepartment,
        };
        let Some(scd) = self.dims.get(&d) else {
            return Ok(());
        };
        if !scd.changed() {
            return Ok(());
        }
        let batch = dims::batch(scd).map_err(|e| err(table, e))?;
        let rows = batch.num_rows() as u64;
        let txns = match d {
            Dimension::Patient => self
                .dim_positions
                .iter()
                .map(|((s, p), v)| (s.clone(), *p, *v))
                .collect(),
            Dimension::Department => Vec::new(),
        };
        let properties = commit_properties(&self.config, &txns);
        self.table(table)?;
        let runtime = &self.runtime;
        let t = self.tables.get_mut(&table).ok_or(LakeWriteError::Stopped)?;
        runtime.block_on(async {
            let snapshot = t.snapshot().map_err(|e| err(table, e))?;
            let mut actions: Vec<Action> = snapshot
                .log_data()
                .iter()
                .map(|f| Action::Remove(f.remove_action(true)))
                .collect();
            let mut writer = RecordBatchWriter::for_table(t).map_err(|e| err(table, e))?;
            writer.write(batch).await.map_err(|e| err(table, e))?;
            let adds = writer.flush().await.map_err(|e| err(table, e))?;
            actions.extend(adds.into_iter().map(Action::Add));
            let operation = DeltaOperation::Write {
                mode: SaveMode::Overwrite,
                partition_by: None,
                predicate: None,
            };
            CommitBuilder::from(properties)
                .with_actions(actions)
                .build(Some(snapshot), t.log_store(), operation)
                .await
                .map_err(|e| err(table, e))?;
            t.update_state().await.map_err(|e| err(table, e))
        })?;
        for (s, p, v) in txns {
            let entry = self.committed.entry((table, s, p)).or_insert(i64::MIN);
            *entry = (*entry).max(v);
        }
        if d == Dimension::Patient {
            self.dim_positions.clear();
        }
        if let Some(scd) = self.dims.get_mut(&d) {
            scd.written();
        }
        self.metrics
            .lake
            .lake_rows
            .with_label_values(&[table.path()])
            .inc_by(rows);
        self.stats.commits += 1;
        Ok(())
    }

    /// The highest offset of this source partition that the table holds (i64::MIN for none).
    fn recorded(&mut self, table: Table, source: &Arc<str>, partition: i32) -> i64 {
        let key = (table, source.clone(), partition);
        if let Some(v) = self.committed.get(&key) {
            return *v;
        }
        let v = match self.recorded_version(table, source, partition) {
            Ok(v) => v.unwrap_or(i64::MIN),
            Err(e) => {
                // Without the table's record every row is written; a duplicate then
                // is possible only if the lake was unreadable here but not before.
                warn!(error = %e, "cannot read the lake's transaction record");
                i64::MIN
            }
        };
        self.committed.insert(key, v);
        v
    }

    fn recorded_version(
        &mut self,
        table: Table,
        source: &str,
        partition: i32,
    ) -> Result<Option<i64>, LakeWriteError> {
        let app = self.config.app_id(source, partition);
        self.table(table)?;
        let t = self.tables.get(&table).ok_or(LakeWriteError::Stopped)?;
        let log_store = t.log_store();
        let snapshot = t.snapshot().map_err(|e| err(table, e))?;
        self.runtime
            .block_on(snapshot.transaction_version(log_store.as_ref(), app))
            .map_err(|e| err(table, e))
    }

    /// The open table, created on first use.
    fn table(&mut self, table: Table) -> Result<&mut DeltaTable, LakeWriteError> {
        if !self.tables.contains_key(&table) {
            let url = self.config.table_url(table)?;
            let opened = self.runtime.block_on(async {
                let t = DeltaTable::try_from_url(url)
                    .await
                    .map_err(|e| err(table, e))?;
                if t.version().is_some() {
                    return Ok(t);
                }
                let schema: StructType = table
                    .schema()
                    .as_ref()
                    .try_into_kernel()
                    .map_err(|e| err(table, e))?;
                t.create()
                    .with_table_name(table.path().replace('/', "_"))
                    .with_columns(schema.fields().cloned())
                    .with_partition_columns(table.partition_columns())
                    .await
                    .map_err(|e| err(table, e))
            })?;
            self.tables.insert(table, opened);
        }
        self.tables.get_mut(&table).ok_or(LakeWriteError::Stopped)
    }

    /// Commits every buffered row, one Delta version per table; on failure the rows stay
    /// buffered for the next try.
    fn commit(&mut self) -> Result<(), LakeWriteError> {
        // The facts before Silver: a crash between the two commits leaves Silver behind, and
        // the replay writes Silver while the facts' own record skips what they hold.
        for table in [Table::Bronze, Table::FactPatientFlow, Table::Silver] {
            let Some(pending) = self.pending.get(&table) else {
                continue;
            };
            let batches = pending.batches.clone();
            let txns: Vec<(Arc<str>, i32, i64)> = pending
                .high
                .iter()
                .map(|((s, p), v)| (s.clone(), *p, *v))
                .collect();
            self.write(table, batches, &txns)?;
            self.pending.remove(&table);
        }
        if !self.kpis.is_empty() {
            let batch = tables::kpi_batch(&self.kpis).map_err(|e| err(Table::KpiSnapshots, e))?;
            self.write(Table::KpiSnapshots, vec![batch], &[])?;
            self.kpis.clear();
        }
        self.write_dimension(Dimension::Patient)?;
        self.write_dimension(Dimension::Department)?;
        if let Some(epoch) = self.received {
            self.durable.store(epoch + 1, Ordering::Release);
        }
        Ok(())
    }

    /// One Delta version of `table` with these rows and application transactions.
    fn write(
        &mut self,
        table: Table,
        batches: Vec<RecordBatch>,
        txns: &[(Arc<str>, i32, i64)],
    ) -> Result<(), LakeWriteError> {
        if table.positioned() {
            // Make sure the table's record of each partition is known before it moves on.
            for (source, partition, _) in txns {
                let key = (table, source.clone(), *partition);
                if !self.committed.contains_key(&key) {
                    let v = self
                        .recorded_version(table, source, *partition)?
                        .unwrap_or(i64::MIN);
                    self.committed.insert(key, v);
                }
            }
        }
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        let properties = commit_properties(&self.config, txns);
        self.table(table)?;
        let runtime = &self.runtime;
        let t = self.tables.get_mut(&table).ok_or(LakeWriteError::Stopped)?;
        runtime.block_on(async {
            let mut writer = RecordBatchWriter::for_table(t)
                .map_err(|e| err(table, e))?
                .with_writer_properties(file_properties())
                .with_commit_properties(properties);
            for batch in batches {
                writer.write(batch).await.map_err(|e| err(table, e))?;
            }
            writer.flush_and_commit(t).await.map_err(|e| err(table, e))
        })?;
        for (s, p, v) in txns {
            let entry = self
                .committed
                .entry((table, s.clone(), *p))
                .or_insert(i64::MIN);
            *entry = (*entry).max(*v);
        }
        self.metrics
            .lake
            .lake_rows
            .with_label_values(&[table.path()])
            .inc_by(rows);
        *self.stats.rows.entry(table.path()).or_default() += rows;
        self.stats.commits += 1;
        Ok(())
    }
}

/// How data files are encoded: Snappy, as Delta writers do by default, but without dictionary
/// pages and page statistics for the columns that differ in every row (the raw payload, event
/// ids, source offsets). Those cost the writer more than a third of its time and help no reader:
/// a dictionary of unique values is the values again, and min/max of payloads skip nothing.
fn file_properties() -> deltalake::parquet::file::properties::WriterProperties {
    use deltalake::parquet::basic::Compression;
    use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
    use deltalake::parquet::schema::types::ColumnPath;
    let mut b = WriterProperties::builder().set_compression(Compression::SNAPPY);
    for column in ["payload", "event_id", "offset"] {
        b = b
            .set_column_dictionary_enabled(ColumnPath::from(column), false)
            .set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::None);
    }
    b.build()
}

/// A commit's properties: one application transaction per (source, partition) it covers.
fn commit_properties(config: &LakeConfig, txns: &[(Arc<str>, i32, i64)]) -> CommitProperties {
    CommitProperties::default().with_application_transactions(
        txns.iter()
            .map(|(s, p, v)| Transaction::new(config.app_id(s, *p), *v))
            .collect(),
    )
}

fn err(table: Table, e: impl std::fmt::Display) -> LakeWriteError {
    LakeWriteError::Table {
        table: table.path(),
        message: e.to_string(),
    }
}

/// Rows of Bronze, Silver or the facts that wait for their table's next commit.
#[derive(Debug, Default)]
struct Pending {
    batches: Vec<RecordBatch>,
    rows: usize,
    /// The highest offset per (source, partition) among them: the commit's `txn` versions.
    high: BTreeMap<(Arc<str>, i32), i64>,
}
