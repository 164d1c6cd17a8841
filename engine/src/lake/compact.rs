//! `cds lake compact`: merges each partition's small Parquet files into one.
//!
//! The writer commits a file per table and partition every few seconds, so a day's partition
//! of a busy table collects hundreds of files, and readers pay for each one. Compaction reads
//! a partition's files and commits, in one Delta version, one new file with the same rows and
//! the old files removed (`dataChange: false`, operation `OPTIMIZE`): readers see the same
//! table before and after, the exactly-once records (`txn`) stay as they were, and time travel
//! still reaches the old files until they are vacuumed. The dimensions are rewritten whole on
//! every change and are already one file.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::NaiveDate;
use deltalake::arrow::array::{Date32Array, RecordBatch};
use deltalake::arrow::datatypes::{DataType, Field, Schema};

use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::Action;
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::DeltaTable;

use super::tables::{read_data_file, Table};
use super::writer::{table_url, LakeWriteError};

/// What compaction did to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compacted {
    pub table: &'static str,
    /// Data files before and after.
    pub files_before: usize,
    pub files_after: usize,
    /// Rows rewritten (those of the partitions that were merged).
    pub rows: u64,
}

fn err(table: Table, e: impl std::fmt::Display) -> LakeWriteError {
    LakeWriteError::Table {
        table: table.path(),
        message: e.to_string(),
    }
}

/// Compacts every fact table of the lake at `location`: each partition with at least
/// `min_files` data files becomes one file. Tables that do not exist yet are skipped.
/// `starting(i, n, table)` is called before the i-th of the n tables (for progress).
pub fn compact(
    location: &str,
    min_files: usize,
    mut starting: impl FnMut(usize, usize, &str),
) -> Result<Vec<Compacted>, LakeWriteError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LakeWriteError::Start(e.to_string()))?;
    let mut done = Vec::new();
    let facts: Vec<Table> = Table::ALL
        .into_iter()
        .filter(|t| t.dimension().is_none())
        .collect();
    for (i, table) in facts.iter().copied().enumerate() {
        starting(i + 1, facts.len(), table.path());
        let url = table_url(location, table.path())?;
        if let Some(c) = runtime.block_on(compact_table(table, url, min_files.max(2)))? {
            done.push(c);
        }
    }
    Ok(done)
}

async fn compact_table(
    table: Table,
    url: url::Url,
    min_files: usize,
) -> Result<Option<Compacted>, LakeWriteError> {
    let mut t = DeltaTable::try_from_url(url)
        .await
        .map_err(|e| err(table, e))?;
    if t.version().is_none() {
        return Ok(None);
    }
    let snapshot = t.snapshot().map_err(|e| err(table, e))?.clone();
    // Files by partition directory (`event_date=2026-11-27/part-….parquet`).
    let mut partitions: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for f in snapshot.log_data().iter() {
        let path = f.path().into_owned();
        let dir = path
            .rsplit_once('/')
            .map(|(d, _)| d.to_owned())
            .unwrap_or_default();
        partitions.entry(dir).or_default().push(f);
    }
    let files_before: usize = partitions.values().map(Vec::len).sum();
    let store = t.object_store();
    let mut actions = Vec::new();
    let mut writer = RecordBatchWriter::for_table(&t).map_err(|e| err(table, e))?;
    let (mut rows, mut kept) = (0u64, 0usize);
    for files in partitions.values() {
        if files.len() < min_files {
            kept += files.len();
            continue;
        }
        for f in files {
            let batches = read_data_file(&store, &f.path())
                .await
                .map_err(|e| err(table, e))?;
            for batch in batches {
                // The partition column lives in the path, not in the file: the writer puts
                // it back from the row, so it is added here from the file's partition values.
                let batch = with_event_date(table, batch, &f.partition_values_map())?;
                rows += batch.num_rows() as u64;
                writer.write(batch).await.map_err(|e| err(table, e))?;
            }
            actions.push(Action::Remove(f.remove_action(false)));
        }
    }
    if actions.is_empty() {
        return Ok(Some(Compacted {
            table: table.path(),
            files_before,
            files_after: files_before,
            rows: 0,
        }));
    }
    let adds = writer.flush().await.map_err(|e| err(table, e))?;
    let added = adds.len();
    actions.extend(adds.into_iter().map(|mut a| {
        a.data_change = false;
        Action::Add(a)
    }));
    let operation = DeltaOperation::Optimize {
        predicate: None,
        target_size: 0,
    };
    CommitBuilder::from(CommitProperties::default())
        .with_actions(actions)
        .build(Some(&snapshot), t.log_store(), operation)
        .await
        .map_err(|e| err(table, e))?;
    t.update_state().await.map_err(|e| err(table, e))?;
    Ok(Some(Compacted {
        table: table.path(),
        files_before,
        files_after: kept + added,
        rows,
    }))
}

/// The batch with its `event_date` partition column put back (a data file does not hold it),
/// as the last column, where the table's schema has it.
fn with_event_date(
    table: Table,
    batch: RecordBatch,
    partition: &HashMap<String, Option<String>>,
) -> Result<RecordBatch, LakeWriteError> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    let day = partition
        .get("event_date")
        .and_then(|v| v.as_deref())
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .map(|d| (d - epoch).num_days() as i32)
        .ok_or_else(|| err(table, "a data file without an event_date partition value"))?;
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(Date32Array::from(vec![day; batch.num_rows()])));
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("event_date", DataType::Date32, false));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| err(table, e))
}
