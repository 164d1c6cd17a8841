//! A Delta table reader that shares nothing with the engine's writer: it follows the Delta
//! protocol by hand (the JSON commits in `_delta_log/`: `add` and `remove` actions, `txn`,
//! `metaData`) and decodes the data files with the `parquet` crate. It reads through
//! `object_store`, so the same code reads a local directory and Azure Blob Storage (Azurite).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::Value;

/// A table as read: its live files' rows, partition values, log entries.
#[derive(Debug, Default)]
pub struct TableRead {
    pub batches: Vec<RecordBatch>,
    /// Partition values of each live file, in the order of `batches`' files.
    pub partitions: Vec<BTreeMap<String, Option<String>>>,
    /// `txn` application id -> latest version.
    pub txns: BTreeMap<String, i64>,
    /// Column names of the newest `metaData` schema.
    pub schema_columns: Vec<String>,
    pub partition_columns: Vec<String>,
    pub versions: usize,
    pub files: usize,
}

impl TableRead {
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// The values of a string column, in row order.
    pub fn strings(&self, column: &str) -> Vec<Option<String>> {
        let mut out = Vec::new();
        for b in &self.batches {
            let Some(c) = b.column_by_name(column) else {
                continue;
            };
            let c = c.as_string::<i32>();
            for i in 0..c.len() {
                out.push((!c.is_null(i)).then(|| c.value(i).to_owned()));
            }
        }
        out
    }

    /// The values of an Int64 column.
    pub fn ints(&self, column: &str) -> Vec<Option<i64>> {
        let mut out = Vec::new();
        for b in &self.batches {
            let Some(c) = b.column_by_name(column) else {
                continue;
            };
            let c = c.as_primitive::<deltalake::arrow::datatypes::Int64Type>();
            for i in 0..c.len() {
                out.push((!c.is_null(i)).then(|| c.value(i)));
            }
        }
        out
    }

    /// The values of a Boolean column.
    pub fn bools(&self, column: &str) -> Vec<Option<bool>> {
        let mut out = Vec::new();
        for b in &self.batches {
            let Some(c) = b.column_by_name(column) else {
                continue;
            };
            let c = c.as_boolean();
            for i in 0..c.len() {
                out.push((!c.is_null(i)).then(|| c.value(i)));
            }
        }
        out
    }

    /// (source, partition, offset) of every row of a positioned table.
    pub fn positions(&self) -> Vec<(String, i32, i64)> {
        let mut out = Vec::new();
        for b in &self.batches {
            let s = b
                .column_by_name("source")
                .expect("source")
                .as_string::<i32>();
            let p = b
                .column_by_name("partition")
                .expect("partition")
                .as_primitive::<deltalake::arrow::datatypes::Int32Type>();
            let o = b
                .column_by_name("offset")
                .expect("offset")
                .as_primitive::<deltalake::arrow::datatypes::Int64Type>();
            for i in 0..b.num_rows() {
                out.push((s.value(i).to_owned(), p.value(i), o.value(i)));
            }
        }
        out
    }
}

/// Reads the table at `prefix` of `store`.
pub async fn read_table(store: Arc<dyn ObjectStore>, prefix: &str) -> TableRead {
    let log = Path::from(format!("{prefix}/_delta_log"));
    let mut commits: Vec<Path> = Vec::new();
    let mut listing = store.list(Some(&log));
    while let Some(meta) = listing.next().await {
        let meta = meta.expect("list the log");
        if meta.location.as_ref().ends_with(".json") {
            commits.push(meta.location);
        }
    }
    commits.sort();
    let mut live: BTreeMap<String, BTreeMap<String, Option<String>>> = BTreeMap::new();
    let mut read = TableRead {
        versions: commits.len(),
        ..TableRead::default()
    };
    for c in &commits {
        let bytes = store
            .get(c)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let action: Value = serde_json::from_slice(line).expect("a JSON action");
            if let Some(add) = action.get("add") {
                let path = add["path"].as_str().expect("add.path").to_owned();
                let parts = add["partitionValues"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned)))
                            .collect()
                    })
                    .unwrap_or_default();
                live.insert(path, parts);
            } else if let Some(remove) = action.get("remove") {
                live.remove(remove["path"].as_str().expect("remove.path"));
            } else if let Some(txn) = action.get("txn") {
                read.txns.insert(
                    txn["appId"].as_str().expect("appId").to_owned(),
                    txn["version"].as_i64().expect("version"),
                );
            } else if let Some(meta) = action.get("metaData") {
                let schema: Value =
                    serde_json::from_str(meta["schemaString"].as_str().expect("schemaString"))
                        .expect("schema JSON");
                read.schema_columns = schema["fields"]
                    .as_array()
                    .expect("fields")
                    .iter()
                    .map(|f| f["name"].as_str().expect("name").to_owned())
                    .collect();
                read.partition_columns = meta["partitionColumns"]
                    .as_array()
                    .expect("partitionColumns")
                    .iter()
                    .map(|f| f.as_str().expect("name").to_owned())
                    .collect();
            }
        }
    }
    read.files = live.len();
    for (path, parts) in live {
        let decoded = percent_decode(&path);
        let location = Path::from(format!("{prefix}/{decoded}"));
        let bytes = store
            .get(&location)
            .await
            .expect("get a data file")
            .bytes()
            .await
            .expect("bytes");
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .expect("a parquet file")
            .build()
            .expect("reader");
        for batch in reader {
            read.batches.push(batch.expect("a record batch"));
            read.partitions.push(parts.clone());
        }
    }
    read
}

/// Delta log paths are URL-encoded (partition values such as dates with `-` stay as they are,
/// but `%` escapes may appear).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A local lake directory as an object store rooted at `dir`.
pub fn local(dir: &std::path::Path) -> Arc<dyn ObjectStore> {
    Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir).expect("a local store"))
}

/// Reads table `path` (for example `bronze/events`) of the local lake at `dir`.
pub fn read_local(dir: &std::path::Path, path: &str) -> TableRead {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(read_table(local(dir), path))
}

/// Distinct values, for counting.
pub fn distinct<T: Ord + Clone>(v: &[T]) -> BTreeSet<T> {
    v.iter().cloned().collect()
}
