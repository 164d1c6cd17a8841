//! `dim_department`: the history of each department's bed capacity and staff as a slowly
//! changing dimension of type 2.
//!
//! Each version of a department is one row with a surrogate key, `effective_from`,
//! `effective_to` (open while current) and `is_current`. A change of capacity or staff closes
//! the current row and opens a new one; a department that leaves the departments file is
//! closed. [`changes`] is pure: it takes the current rows and the new network and says what
//! to close and what to add, so the SQLite store and a lake table writer can apply the same
//! rows. Surrogate keys continue from the largest key ever stored, so they are unique across
//! restarts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::Network;

/// One version of one department.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// What a new departments file changes in the dimension.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Surrogate keys of current rows to close at `at`.
    pub close: Vec<i64>,
    /// New current rows.
    pub open: Vec<DepartmentRow>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.close.is_empty() && self.open.is_empty()
    }
}

/// Compares the current rows with a network; `next_key` is one more than the largest key
/// stored so far, `at` the time the change takes effect (RFC 3339).
pub fn changes(current: &[DepartmentRow], network: &Network, at: &str, next_key: i64) -> Changes {
    let mut now: BTreeMap<(i64, &str), &DepartmentRow> = BTreeMap::new();
    for row in current.iter().filter(|r| r.is_current) {
        now.insert((row.hospital_id, row.department.as_str()), row);
    }
    let mut out = Changes::default();
    let mut key = next_key;
    let mut seen = std::collections::BTreeSet::new();
    for (h, dept, cap) in network.departments() {
        let id = (i64::from(h), dept.name());
        seen.insert(id);
        let name = network
            .hospital(i64::from(h))
            .map(|x| x.name.clone())
            .unwrap_or_default();
        let same = now.get(&id).is_some_and(|r| {
            r.bed_capacity == i64::from(cap.bed_capacity)
                && r.staff_count == i64::from(cap.staff_count)
                && r.hospital_name == name
        });
        if same {
            continue;
        }
        if let Some(r) = now.get(&id) {
            out.close.push(r.department_key);
        }
        out.open.push(DepartmentRow {
            department_key: key,
            hospital_id: id.0,
            hospital_name: name,
            department: id.1.to_owned(),
            bed_capacity: i64::from(cap.bed_capacity),
            staff_count: i64::from(cap.staff_count),
            effective_from: at.to_owned(),
            effective_to: None,
            is_current: true,
        });
        key += 1;
    }
    for (id, r) in &now {
        if !seen.contains(id) {
            out.close.push(r.department_key);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "hospital_id,hospital_name,department,bed_capacity,staff_count\n1,North,ICU,10,20\n1,North,Surgery,30,40\n";

    #[test]
    fn a_capacity_change_closes_one_row_and_opens_another() {
        let first = Network::parse(CSV).expect("network");
        let initial = changes(&[], &first, "2026-03-02T00:00:00Z", 1);
        assert_eq!(initial.open.len(), 2);
        assert!(initial.close.is_empty());
        let rows = initial.open;
        assert!(
            changes(&rows, &first, "later", 3).is_empty(),
            "no change, no rows"
        );
        let second = Network::parse(&CSV.replace("1,North,ICU,10,20", "1,North,ICU,12,20"))
            .expect("network");
        let c = changes(&rows, &second, "2026-03-03T00:00:00Z", 3);
        let icu = rows.iter().find(|r| r.department == "ICU").expect("icu");
        assert_eq!(c.close, vec![icu.department_key]);
        assert_eq!(c.open.len(), 1);
        assert_eq!((c.open[0].department_key, c.open[0].bed_capacity), (3, 12));
    }
}
