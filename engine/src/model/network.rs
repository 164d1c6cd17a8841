//! The hospital network: which hospitals exist, their departments, bed capacities and staff.
//!
//! Loaded from `config/departments.csv` (columns `hospital_id, hospital_name, department,
//! bed_capacity, staff_count`). The binary carries a copy of the default file so that it runs
//! from any directory.

use std::collections::BTreeMap;
use std::path::Path;

use super::vocabulary::Department;

/// The default network shipped in `config/departments.csv`.
pub const DEFAULT_DEPARTMENTS_CSV: &str = include_str!("../../../config/departments.csv");

/// Why a departments file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("line {line}: {reason}")]
    Invalid { line: usize, reason: String },
    #[error("the departments file lists no department")]
    Empty,
}

/// Beds and staff of one department of one hospital.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub bed_capacity: u32,
    pub staff_count: u32,
}

/// One hospital of the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hospital {
    pub id: u16,
    pub name: String,
    /// Indexed by [`Department::index`]; `None` where the hospital has no such department.
    pub departments: [Option<Capacity>; 7],
}

/// All hospitals, by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    hospitals: BTreeMap<u16, Hospital>,
}

impl Network {
    /// The network shipped with the binary.
    pub fn default_network() -> Self {
        // The embedded file is part of the build and covered by a test.
        Self::parse(DEFAULT_DEPARTMENTS_CSV).unwrap_or_else(|_| Network {
            hospitals: BTreeMap::new(),
        })
    }

    /// Loads a departments file.
    pub fn load(path: &Path) -> Result<Self, NetworkError> {
        let text = std::fs::read_to_string(path).map_err(|source| NetworkError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses the CSV text of a departments file (a header line, then one row per department).
    pub fn parse(text: &str) -> Result<Self, NetworkError> {
        let mut hospitals: BTreeMap<u16, Hospital> = BTreeMap::new();
        // The first line is the header whatever it holds; rows are checked for their five
        // columns here, so that the error names the line.
        let mut rows = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        for row in rows.records() {
            let line_no = line_of(
                text,
                match &row {
                    Ok(r) => r.position(),
                    Err(e) => e.position(),
                },
            );
            let invalid = |reason: String| NetworkError::Invalid {
                line: line_no,
                reason,
            };
            let row = row.map_err(|e| invalid(e.to_string()))?;
            if line_no <= 1 || (row.len() == 1 && row.get(0) == Some("")) {
                continue;
            }
            let cols: Vec<&str> = row.iter().collect();
            if cols.len() != 5 {
                return Err(invalid(format!("expected 5 columns, found {}", cols.len())));
            }
            let id: u16 = cols[0]
                .parse()
                .map_err(|_| invalid(format!("hospital_id {:?} is not a number", cols[0])))?;
            let dept = Department::from_canonical(cols[2])
                .ok_or_else(|| invalid(format!("unknown department {:?}", cols[2])))?;
            let number = |s: &str, what: &str| {
                s.parse::<u32>()
                    .map_err(|_| invalid(format!("{what} {s:?} is not a whole number")))
            };
            let capacity = Capacity {
                bed_capacity: number(cols[3], "bed_capacity")?,
                staff_count: number(cols[4], "staff_count")?,
            };
            let h = hospitals.entry(id).or_insert_with(|| Hospital {
                id,
                name: cols[1].to_owned(),
                departments: [None; 7],
            });
            h.departments[usize::from(dept.index())] = Some(capacity);
        }
        if hospitals.is_empty() {
            return Err(NetworkError::Empty);
        }
        Ok(Network { hospitals })
    }

    /// The hospital with this id, if configured.
    pub fn hospital(&self, id: i64) -> Option<&Hospital> {
        u16::try_from(id)
            .ok()
            .and_then(|id| self.hospitals.get(&id))
    }

    /// Every hospital, by ascending id.
    pub fn hospitals(&self) -> impl Iterator<Item = &Hospital> {
        self.hospitals.values()
    }

    /// Capacity of one department, if configured.
    pub fn capacity(&self, hospital: u16, dept: Department) -> Option<Capacity> {
        self.hospitals.get(&hospital)?.departments[usize::from(dept.index())]
    }

    /// Every configured (hospital, department) with its capacity.
    pub fn departments(&self) -> impl Iterator<Item = (u16, Department, Capacity)> + '_ {
        self.hospitals.values().flat_map(|h| {
            Department::ALL
                .into_iter()
                .filter_map(move |d| h.departments[usize::from(d.index())].map(|c| (h.id, d, c)))
        })
    }

    /// Total beds of the network.
    pub fn total_beds(&self) -> u64 {
        self.departments()
            .map(|(_, _, c)| u64::from(c.bed_capacity))
            .sum()
    }
}

/// The line a row starts on. The reader's position of a row is where the row before it ended,
/// before the line break and any blank lines that follow.
fn line_of(text: &str, position: Option<&csv::Position>) -> usize {
    let from = position.map_or(0, |p| usize::try_from(p.byte()).unwrap_or(usize::MAX));
    let start = text.get(from..).map_or(text.len(), |rest| {
        from + rest.len() - rest.trim_start_matches(['\r', '\n']).len()
    });
    text.bytes().take(start).filter(|b| *b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_network_has_seven_hospitals_of_seven_departments() {
        let n = Network::parse(DEFAULT_DEPARTMENTS_CSV).expect("shipped file parses");
        assert_eq!(n.hospitals().count(), 7);
        assert_eq!(n.departments().count(), 49);
        assert_eq!(
            n.capacity(3, Department::Icu).map(|c| c.bed_capacity),
            Some(10)
        );
    }

    #[test]
    fn a_quoted_hospital_name_may_hold_a_comma() {
        let n = Network::parse(
            "hospital_id,hospital_name,department,bed_capacity,staff_count\r\n\
             \r\n\
             4,\"St Anne, North\",ICU, 12 ,30\r\n",
        )
        .expect("parses");
        assert_eq!(
            n.hospital(4).map(|h| h.name.as_str()),
            Some("St Anne, North")
        );
        let err = Network::parse("h\n1,A,ICU,3\n\n1,A,Surgery,3,4,5\n").expect_err("4 columns");
        assert_eq!(err.to_string(), "line 2: expected 5 columns, found 4");
        let err = Network::parse("h\n\n1,A,Surgery,3,4,5\n").expect_err("6 columns");
        assert_eq!(err.to_string(), "line 3: expected 5 columns, found 6");
        let err = Network::parse("h\r\n1,A,ICU,3,4\r\n\r\n \r\n1,A,Nowhere,3,4\r\n")
            .expect_err("bad department");
        assert_eq!(err.to_string(), "line 5: unknown department \"Nowhere\"");
    }

    #[test]
    fn errors_name_the_line() {
        let err = Network::parse("h\n1,A,Nowhere,3,4\n").expect_err("bad department");
        assert_eq!(err.to_string(), "line 2: unknown department \"Nowhere\"");
        let err = Network::parse("h\n1,A,ICU,x,4\n").expect_err("bad number");
        assert!(err.to_string().contains("bed_capacity"));
    }
}
