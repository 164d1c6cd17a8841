//! Bronze replay: the lake's `bronze/events` table as a source, for `cds replay --from-bronze`.
//!
//! Bronze keeps every payload as it arrived, with its source stream, partition and offset, so
//! running the pipeline over it again rebuilds every piece of state and every output. Each
//! payload keeps its original position and stream name: the dead-letter store, the lake's
//! exactly-once records and the document ids come out as they did the first time, so a replay
//! into the same lake adds no row that is already there.
//!
//! Order: within a partition by offset, as it was read; partitions are interleaved in the order
//! they were ingested (`ingested_at`), the closest record Bronze has of the original arrival.
//! The table is read whole into memory (the payload bytes plus a few dozen bytes per row).

mod config;

use std::time::Duration;

use deltalake::arrow::array::{
    Array, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use deltalake::DeltaTable;

pub use config::BronzeConfig;

use super::{Poll, Position, RawBatch, Source, SourceError};
use crate::lake::tables::{read_data_file, Table};
use crate::lake::writer::table_url;

/// One Bronze row, ready to hand out again (the data-quality report reads them too).
pub(crate) struct Row {
    pub ingested_at: i64,
    pub position: Position,
    pub payload: Vec<u8>,
}

/// Replays the payloads of a Bronze table.
pub struct BronzeSource {
    name: String,
    /// Stream names as Bronze recorded them (`kafka:adt`, `file:/…`), indexed by stream.
    streams: Vec<String>,
    rows: std::vec::IntoIter<Row>,
    /// Rows the table held when it was read (for progress).
    total: usize,
}

fn bronze(message: impl std::fmt::Display) -> SourceError {
    SourceError::Config(format!("bronze table: {message}"))
}

impl BronzeSource {
    /// Reads the whole Bronze table of `config.lake`.
    pub fn open(config: &BronzeConfig) -> Result<Self, SourceError> {
        let (streams, rows) = read_table(&config.lake)?;
        Ok(BronzeSource {
            name: format!("bronze:{}", config.lake),
            streams,
            total: rows.len(),
            rows: rows.into_iter(),
        })
    }

    /// How many payloads are left to replay.
    pub fn remaining(&self) -> usize {
        self.rows.len()
    }
}

/// Every row of the Bronze table of the lake at `lake`, in the order they were ingested
/// (within a partition by offset), and the stream names their positions index.
pub(crate) fn read_table(lake: &str) -> Result<(Vec<String>, Vec<Row>), SourceError> {
    let url = table_url(lake, Table::Bronze.path()).map_err(bronze)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(bronze)?;
    let mut streams: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    runtime.block_on(async {
        let table = DeltaTable::try_from_url(url).await.map_err(bronze)?;
        if table.version().is_none() {
            return Err(bronze("no Bronze table at this lake location"));
        }
        let store = table.object_store();
        let files: Vec<String> = table
            .snapshot()
            .map_err(bronze)?
            .log_data()
            .iter()
            .map(|f| f.path().into_owned())
            .collect();
        for path in files {
            for batch in read_data_file(&store, &path).await.map_err(bronze)? {
                read_rows(&batch, &mut streams, &mut rows)?;
            }
        }
        Ok(())
    })?;
    rows.sort_by_key(|r| (r.ingested_at, r.position));
    Ok((streams, rows))
}

/// The rows of one record batch; unknown stream names get the next stream index.
fn read_rows(
    batch: &RecordBatch,
    streams: &mut Vec<String>,
    out: &mut Vec<Row>,
) -> Result<(), SourceError> {
    fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, SourceError> {
        crate::lake::tables::column(batch, name).map_err(bronze)
    }
    let payload = column::<BinaryArray>(batch, "payload")?;
    let source = column::<StringArray>(batch, "source")?;
    let partition = column::<Int32Array>(batch, "partition")?;
    let offset = column::<Int64Array>(batch, "offset")?;
    let ingested = column::<TimestampMicrosecondArray>(batch, "ingested_at")?;
    for i in 0..batch.num_rows() {
        let name = source.value(i);
        let stream = match streams.iter().position(|s| s == name) {
            Some(s) => s,
            None => {
                streams.push(name.to_owned());
                streams.len() - 1
            }
        };
        let stream = u16::try_from(stream).map_err(|_| bronze("more than 65,536 streams"))?;
        out.push(Row {
            ingested_at: if ingested.is_null(i) {
                i64::MIN
            } else {
                ingested.value(i)
            },
            position: Position {
                stream,
                partition: partition.value(i),
                offset: offset.value(i),
            },
            payload: payload.value(i).to_vec(),
        });
    }
    Ok(())
}

impl Source for BronzeSource {
    fn input_progress(&self) -> Option<(u64, u64)> {
        Some(((self.total - self.rows.len()) as u64, self.total as u64))
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn stream_name(&self, stream: u16) -> String {
        self.streams
            .get(usize::from(stream))
            .cloned()
            .unwrap_or_else(|| self.name.clone())
    }

    fn poll(
        &mut self,
        batch: &mut RawBatch,
        max: usize,
        _wait: Duration,
    ) -> Result<Poll, SourceError> {
        for row in self.rows.by_ref().take(max) {
            batch.push_at(&row.payload, row.position);
        }
        Ok(if self.rows.len() == 0 {
            Poll::End
        } else {
            Poll::Ready
        })
    }
}
