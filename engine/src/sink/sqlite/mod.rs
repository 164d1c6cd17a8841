//! The embedded default store: one SQLite file, one table per container, `(id, partition_key,
//! doc)` with the document JSON exactly as Cosmos DB would hold it.

mod config;

use std::time::Duration;

use prometheus::IntCounter;
use rusqlite::{params, Connection, OpenFlags};
use serde_json::Value;

pub use config::SqliteConfig;

use super::{Container, Sink, SinkError};
use crate::model::Document;
use crate::support::Backoff;

/// The SQLite sink.
#[derive(Debug)]
pub struct SqliteSink {
    conn: Connection,
    retry: Backoff,
    /// Counts retried writes (`cds_sink_retries_total`).
    retries: Option<IntCounter>,
}

/// Retries of a failed write: a locked or busy database (a reader holding a long transaction, a
/// backup), a full disk or an I/O error often pass within seconds; only after these does the
/// failure count as final and raise the operational alert.
pub const WRITE_RETRY: Backoff = Backoff {
    first: Duration::from_millis(100),
    max: Duration::from_secs(5),
    retries: 6,
};

/// Whether a failed write may succeed when tried again.
fn transient(e: &SinkError) -> bool {
    use rusqlite::ErrorCode::*;
    matches!(
        e,
        SinkError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
            if matches!(
                f.code,
                DatabaseBusy | DatabaseLocked | SystemIoFailure | DiskFull | CannotOpen
            )
    )
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS kpis (id TEXT PRIMARY KEY, partition_key INTEGER NOT NULL, doc TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS alerts (id TEXT PRIMARY KEY, partition_key INTEGER NOT NULL, doc TEXT NOT NULL);
";

impl SqliteSink {
    /// Opens (creating if needed) the store.
    pub fn open(config: &SqliteConfig) -> Result<Self, SinkError> {
        if let Some(dir) = config.path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| SinkError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let conn = Connection::open(&config.path)?;
        // WAL lets readers (`cds export`, the HTTP API) read while the engine writes.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteSink {
            conn,
            retry: WRITE_RETRY,
            retries: None,
        })
    }

    /// Counts each retried write in `counter`.
    pub fn counting_retries(mut self, counter: IntCounter) -> Self {
        self.retries = Some(counter);
        self
    }

    /// Replaces the retry policy (tests, and stores that must fail fast).
    pub fn with_retry(mut self, retry: Backoff) -> Self {
        self.retry = retry;
        self
    }

    /// Every document of a container, ordered by id, from a read-only connection.
    pub fn read_all(config: &SqliteConfig, container: Container) -> Result<Vec<Value>, SinkError> {
        let conn = Connection::open_with_flags(&config.path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        documents(&conn, container)
    }

    /// One document by id, if the container holds it.
    pub fn read_one(
        config: &SqliteConfig,
        container: Container,
        id: &str,
    ) -> Result<Option<Value>, SinkError> {
        let conn = Connection::open_with_flags(&config.path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let sql = format!("SELECT doc FROM {} WHERE id = ?1", container.name());
        let doc: Option<String> = conn
            .query_row(&sql, [id], |row| row.get(0))
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?;
        Ok(doc.map(|d| serde_json::from_str(&d).unwrap_or(Value::String(d))))
    }
}

/// Every document of a container, ordered by id.
fn documents(conn: &Connection, container: Container) -> Result<Vec<Value>, SinkError> {
    let sql = format!("SELECT doc FROM {} ORDER BY id", container.name());
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
    let mut out = Vec::new();
    for doc in rows {
        // A document that is not JSON cannot come from this engine; keep it visible as text.
        let doc = doc?;
        out.push(serde_json::from_str(&doc).unwrap_or(Value::String(doc)));
    }
    Ok(out)
}

impl Sink for SqliteSink {
    fn read_back(&mut self, container: Container) -> Result<Vec<Value>, SinkError> {
        documents(&self.conn, container)
    }

    fn upsert(&mut self, container: Container, documents: &[Document]) -> Result<(), SinkError> {
        let (retry, retries) = (self.retry, self.retries.clone());
        retry.retry(
            || self.try_upsert(container, documents),
            transient,
            |_| {
                tracing::warn!("a SQLite write failed; retrying with backoff");
                if let Some(c) = &retries {
                    c.inc();
                }
            },
        )
    }
}

impl SqliteSink {
    /// One attempt: every document in one transaction, all or nothing.
    fn try_upsert(
        &mut self,
        container: Container,
        documents: &[Document],
    ) -> Result<(), SinkError> {
        let tx = self.conn.transaction()?;
        {
            let sql = format!(
                "INSERT INTO {} (id, partition_key, doc) VALUES (?1, ?2, ?3)
                 ON CONFLICT(id) DO UPDATE SET partition_key = excluded.partition_key, doc = excluded.doc",
                container.name()
            );
            let mut stmt = tx.prepare_cached(&sql)?;
            for d in documents {
                stmt.execute(params![d.id, d.hospital_id, d.body.to_string()])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn upserts_by_id_and_reads_back() {
        let dir = std::env::temp_dir().join(format!("cds-sqlite-test-{}", std::process::id()));
        let config = SqliteConfig::in_data_dir(&dir);
        let mut sink = SqliteSink::open(&config).expect("open");
        let doc = |v: i64| Document {
            id: "occupancy:1:ICU".into(),
            hospital_id: 1,
            body: json!({ "occupied": v }),
        };
        sink.upsert(Container::Kpis, &[doc(1)])
            .expect("first write");
        sink.upsert(Container::Kpis, &[doc(2)])
            .expect("second write");
        let docs = SqliteSink::read_all(&config, Container::Kpis).expect("read");
        assert_eq!(docs, vec![json!({ "occupied": 2 })]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_locked_store_is_retried_with_backoff() {
        let dir = std::env::temp_dir().join(format!("cds-sqlite-retry-{}", std::process::id()));
        let config = SqliteConfig::in_data_dir(&dir);
        let counter = IntCounter::new("retries", "retries").expect("counter");
        let mut sink = SqliteSink::open(&config)
            .expect("open")
            .counting_retries(counter.clone());
        sink.conn
            .busy_timeout(Duration::from_millis(10))
            .expect("timeout");
        // Another process holds the write lock for 400 ms: a backup, a long reader.
        let locker = Connection::open(&config.path).expect("second connection");
        locker.execute_batch("BEGIN EXCLUSIVE").expect("lock");
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            locker.execute_batch("COMMIT").expect("unlock");
        });
        let doc = Document {
            id: "occupancy:1:ICU".into(),
            hospital_id: 1,
            body: json!({ "occupied": 7 }),
        };
        sink.upsert(Container::Kpis, &[doc])
            .expect("written after retries");
        release.join().expect("locker");
        assert!(counter.get() >= 1, "the write was retried");
        let docs = SqliteSink::read_all(&config, Container::Kpis).expect("read");
        assert_eq!(docs, vec![json!({ "occupied": 7 })]);
        // Without retries the same lock fails at once: what the backoff is for.
        let locker = Connection::open(&config.path).expect("second connection");
        locker.execute_batch("BEGIN EXCLUSIVE").expect("lock");
        let mut fast = sink.with_retry(Backoff {
            retries: 0,
            ..WRITE_RETRY
        });
        let doc = Document {
            id: "occupancy:1:ICU".into(),
            hospital_id: 1,
            body: json!({ "occupied": 8 }),
        };
        assert!(fast.upsert(Container::Kpis, &[doc]).is_err());
        drop(locker);
        let _ = std::fs::remove_dir_all(dir);
    }
}
