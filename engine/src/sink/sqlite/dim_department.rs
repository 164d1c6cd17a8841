//! The `dim_department` table of the SQLite store: the SCD type 2 rows of
//! [`crate::gold::dim_department`], written when the departments file changes.

use rusqlite::{params, Connection};

use crate::gold::dim_department::{changes, Changes, DepartmentRow};
use crate::model::Network;
use crate::sink::SinkError;

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

/// The department dimension in the SQLite store.
#[derive(Debug)]
pub struct DimDepartmentStore {
    conn: Connection,
}

impl DimDepartmentStore {
    /// Opens (creating if needed) the table in the store at `path`.
    pub fn open(path: &std::path::Path) -> Result<Self, SinkError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| SinkError::Io {
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

    /// Every row, oldest key first.
    pub fn rows(&self) -> Result<Vec<DepartmentRow>, SinkError> {
        let mut stmt = self.conn.prepare(
            "SELECT department_key, hospital_id, hospital_name, department, bed_capacity, staff_count,
                    effective_from, effective_to, is_current
             FROM dim_department ORDER BY department_key",
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
        let mut out = Vec::new();
        for row in rows {
            out.push(row?);
        }
        Ok(out)
    }

    /// Brings the dimension in line with `network` as of `at`, in one transaction; returns
    /// what changed.
    pub fn apply(&mut self, network: &Network, at: &str) -> Result<Changes, SinkError> {
        let rows = self.rows()?;
        let next = rows.iter().map(|r| r.department_key).max().unwrap_or(0) + 1;
        let c = changes(&rows, network, at, next);
        if c.is_empty() {
            return Ok(c);
        }
        let tx = self.conn.transaction()?;
        for key in &c.close {
            tx.execute(
                "UPDATE dim_department SET effective_to = ?1, is_current = 0 WHERE department_key = ?2",
                params![at, key],
            )?;
        }
        for r in &c.open {
            tx.execute(
                "INSERT INTO dim_department VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, 1)",
                params![
                    r.department_key,
                    r.hospital_id,
                    r.hospital_name,
                    r.department,
                    r.bed_capacity,
                    r.staff_count,
                    r.effective_from
                ],
            )?;
        }
        tx.commit()?;
        Ok(c)
    }
}
