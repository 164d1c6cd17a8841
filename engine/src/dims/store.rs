//! The `dim_department` table of the SQLite store: the department versions of [`Scd2`], written
//! when the departments file changes. The table is small; a change rewrites it in one
//! transaction, with the same surrogate keys as the lake's `gold/dim_department`.

use std::path::Path;

use chrono::DateTime;
use rusqlite::{params, Connection};

use super::{department_versions, Dimension, Row, Scd2, Value};
use crate::model::{format_time, parse_time, Network};

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS dim_department (
        department_key INTEGER PRIMARY KEY,
        hospital_id INTEGER NOT NULL,
        hospital_name TEXT NOT NULL,
        department TEXT NOT NULL,
        bed_capacity INTEGER NOT NULL,
        staff_count INTEGER NOT NULL,
        effective_from TEXT NOT NULL,
        effective_to TEXT,
        is_current INTEGER NOT NULL
    );
";

/// Why the table could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DimStoreError {
    #[error("dim_department: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("dim_department: cannot create {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("dim_department: row {key} has a time that is not RFC 3339")]
    Time { key: i64 },
}

/// One row of the table, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepartmentRow {
    pub department_key: i64,
    pub hospital_id: i64,
    pub hospital_name: String,
    pub department: String,
    pub bed_capacity: i64,
    pub staff_count: i64,
    pub effective_from: String,
    pub effective_to: Option<String>,
    pub is_current: bool,
}

/// The department dimension in the SQLite store.
#[derive(Debug)]
pub struct DimDepartmentStore {
    conn: Connection,
}

impl DimDepartmentStore {
    /// Opens (creating if needed) the table in the store at `path`.
    pub fn open(path: &Path) -> Result<Self, DimStoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| DimStoreError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(DimDepartmentStore { conn })
    }

    /// Every row, by hospital and department, each department's oldest version first (the
    /// surrogate keys are hashes: their order says nothing).
    pub fn rows(&self) -> Result<Vec<DepartmentRow>, DimStoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT department_key, hospital_id, hospital_name, department, bed_capacity,
                    staff_count, effective_from, effective_to, is_current
             FROM dim_department ORDER BY hospital_id, department, effective_from, is_current",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(DepartmentRow {
                department_key: r.get(0)?,
                hospital_id: r.get(1)?,
                hospital_name: r.get(2)?,
                department: r.get(3)?,
                bed_capacity: r.get(4)?,
                staff_count: r.get(5)?,
                effective_from: r.get(6)?,
                effective_to: r.get(7)?,
                is_current: r.get::<_, i64>(8)? != 0,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The stored versions.
    pub fn load(&self) -> Result<Scd2, DimStoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT department_key, hospital_id, hospital_name, department, bed_capacity,
                    staff_count, effective_from, effective_to
             FROM dim_department ORDER BY department_key",
        )?;
        let mut rows = stmt.query([])?;
        let mut stored = Vec::new();
        while let Some(r) = rows.next()? {
            let key: i64 = r.get(0)?;
            let micros = |t: Option<String>| match t {
                None => Ok(None),
                Some(t) => parse_time(&t)
                    .map(|t| Some(t.timestamp_micros()))
                    .ok_or(DimStoreError::Time { key }),
            };
            let from = micros(Some(r.get(6)?))?.unwrap_or_default();
            let natural = vec![Value::Int(Some(r.get(1)?)), Value::Text(Some(r.get(3)?))];
            let row = Row {
                surrogate: key,
                attributes: vec![
                    Value::Text(Some(r.get(2)?)),
                    Value::Int(Some(r.get(4)?)),
                    Value::Int(Some(r.get(5)?)),
                ],
                from,
                to: micros(r.get(7)?)?,
            };
            stored.push((natural, row));
        }
        let mut scd = Scd2::new(Dimension::Department);
        scd.restore(stored);
        Ok(scd)
    }

    /// Brings the dimension in line with `network` as of `at` (microseconds since the Unix
    /// epoch), in one transaction; true when it changed.
    pub fn apply(&mut self, network: &Network, at: i64) -> Result<bool, DimStoreError> {
        let mut scd = self.load()?;
        if !scd.sync(department_versions(network, at), at) {
            return Ok(false);
        }
        let time = |micros: i64| {
            DateTime::from_timestamp_micros(micros).map(|t| format_time(&t.fixed_offset()))
        };
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM dim_department", [])?;
        for (natural, row) in scd.members() {
            let text = |i: usize, v: &[Value]| match v.get(i) {
                Some(Value::Text(Some(t))) => t.clone(),
                _ => String::new(),
            };
            let int = |i: usize, v: &[Value]| match v.get(i) {
                Some(Value::Int(Some(n))) => *n,
                _ => 0,
            };
            let from = time(row.from).ok_or(DimStoreError::Time { key: row.surrogate })?;
            tx.execute(
                "INSERT INTO dim_department VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    row.surrogate,
                    int(0, natural),
                    text(0, &row.attributes),
                    text(1, natural),
                    int(1, &row.attributes),
                    int(2, &row.attributes),
                    from,
                    row.to.and_then(time),
                    row.to.is_none(),
                ],
            )?;
        }
        tx.commit()?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "hospital_id,hospital_name,department,bed_capacity,staff_count\n1,North,ICU,10,20\n1,North,Surgery,30,40\n";

    fn current(store: &DimDepartmentStore) -> Vec<(i64, i64, bool)> {
        let scd = store.load().expect("load");
        scd.members()
            .map(|(_, r)| (r.surrogate, r.from, r.to.is_none()))
            .collect()
    }

    #[test]
    fn a_capacity_change_closes_one_row_and_opens_another() {
        let dir = std::env::temp_dir().join(format!("cds-dim-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = DimDepartmentStore::open(&dir.join("store.db")).expect("open");
        let first = Network::parse(CSV).expect("network");
        assert!(store.apply(&first, 1_000_000).expect("apply"));
        assert_eq!(current(&store).len(), 2);
        assert!(
            !store.apply(&first, 2_000_000).expect("apply"),
            "no change, no rows"
        );
        let second = Network::parse(&CSV.replace("1,North,ICU,10,20", "1,North,ICU,12,20"))
            .expect("network");
        assert!(store.apply(&second, 3_000_000).expect("apply"));
        let rows = current(&store);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows.iter().filter(|r| r.2).count(), 2, "two current rows");
        let key = super::super::surrogate_key(
            Dimension::Department,
            &[Value::Int(Some(1)), Value::Text(Some("ICU".into()))],
            3_000_000,
        );
        assert!(
            rows.contains(&(key, 3_000_000, true)),
            "the lake's surrogate key"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
