//! One SCD type 2 implementation, in memory: the lake's `gold/dim_*` tables and the SQLite
//! store's `dim_department` are both written from it, so a version has the same surrogate key in
//! both.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::model::{AgeBand, Network};

/// One attribute value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    Text(Option<String>),
    Int(Option<i64>),
}

/// A column's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    Int,
}

/// Column names and kinds.
pub(crate) type Columns = &'static [(&'static str, Kind)];

/// The two dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dimension {
    Patient,
    Department,
}

impl Dimension {
    pub fn path(self) -> &'static str {
        match self {
            Dimension::Patient => "gold/dim_patient",
            Dimension::Department => "gold/dim_department",
        }
    }

    /// Natural-key columns, then tracked attributes.
    pub(crate) fn columns(self) -> (Columns, Columns) {
        match self {
            Dimension::Patient => (
                &[("patient_key", Kind::Text)],
                &[
                    ("gender", Kind::Text),
                    // The band, never the exact age: with gender and dates, an exact age
                    // narrows a pseudonymous patient down to a person.
                    ("age_band", Kind::Text),
                    ("insurance_type", Kind::Text),
                ],
            ),
            Dimension::Department => (
                &[("hospital_id", Kind::Int), ("department", Kind::Text)],
                &[
                    ("hospital_name", Kind::Text),
                    ("bed_capacity", Kind::Int),
                    ("staff_count", Kind::Int),
                ],
            ),
        }
    }
}

/// One version of a dimension member, as handed to [`Scd2::apply`].
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    pub key: Vec<Value>,
    pub attributes: Vec<Value>,
    /// Microseconds since the Unix epoch.
    pub effective_from: i64,
}

/// A stored version of one member.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub surrogate: i64,
    pub attributes: Vec<Value>,
    /// Microseconds since the Unix epoch.
    pub from: i64,
    /// `None` while the version is current.
    pub to: Option<i64>,
}

/// A dimension's rows, by natural key, oldest version first.
#[derive(Debug)]
pub struct Scd2 {
    dimension: Dimension,
    members: BTreeMap<Vec<Value>, Vec<Row>>,
    changed: bool,
}

/// The surrogate key of a version.
pub fn surrogate_key(dimension: Dimension, key: &[Value], from: i64) -> i64 {
    let mut h = Sha256::new();
    h.update(dimension.path().as_bytes());
    for v in key {
        match v {
            Value::Text(t) => {
                h.update([1]);
                h.update(t.as_deref().unwrap_or("\u{0}").as_bytes());
            }
            Value::Int(i) => {
                h.update([2]);
                h.update(i.unwrap_or(i64::MIN).to_le_bytes());
            }
        }
    }
    h.update(from.to_le_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(b) >> 1) as i64
}

impl Scd2 {
    pub fn new(dimension: Dimension) -> Self {
        Scd2 {
            dimension,
            members: BTreeMap::new(),
            changed: false,
        }
    }

    pub fn dimension(&self) -> Dimension {
        self.dimension
    }

    /// Applies one version; true when it changed the dimension. An attribute the version
    /// leaves null is not stated (a vitals event carries no insurance), so the current value
    /// stays.
    pub fn apply(&mut self, mut v: Version) -> bool {
        // The key is copied only for a member not seen before (the lake applies a version
        // for every Gold record, nearly all of known patients).
        if !self.members.contains_key(&v.key) {
            self.members.insert(v.key.clone(), Vec::new());
        }
        let Some(rows) = self.members.get_mut(&v.key) else {
            return false;
        };
        if let Some(current) = rows.last_mut().filter(|r| r.to.is_none()) {
            for (new, old) in v.attributes.iter_mut().zip(&current.attributes) {
                if matches!(new, Value::Text(None) | Value::Int(None)) {
                    *new = old.clone();
                }
            }
            if current.attributes == v.attributes {
                return false;
            }
            current.to = Some(v.effective_from.max(current.from));
        }
        rows.push(Row {
            surrogate: surrogate_key(self.dimension, &v.key, v.effective_from),
            attributes: v.attributes,
            from: v.effective_from,
            to: None,
        });
        self.changed = true;
        true
    }

    /// Closes the current version of `key` at `at` with no successor (a department that left
    /// the departments file); true when there was one.
    pub fn retire(&mut self, key: &[Value], at: i64) -> bool {
        let Some(current) = self
            .members
            .get_mut(key)
            .and_then(|rows| rows.last_mut())
            .filter(|r| r.to.is_none())
        else {
            return false;
        };
        current.to = Some(at.max(current.from));
        self.changed = true;
        true
    }

    /// Makes `versions` the whole current state as of `at`: each is applied, and every current
    /// member they do not name is retired. True when the dimension changed.
    pub fn sync(&mut self, versions: Vec<Version>, at: i64) -> bool {
        let named: std::collections::BTreeSet<Vec<Value>> =
            versions.iter().map(|v| v.key.clone()).collect();
        let mut changed = false;
        for v in versions {
            changed |= self.apply(v);
        }
        let gone: Vec<Vec<Value>> = self
            .members
            .iter()
            .filter(|(k, rows)| !named.contains(*k) && rows.last().is_some_and(|r| r.to.is_none()))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            changed |= self.retire(&key, at);
        }
        changed
    }

    /// Every stored version, by natural key, oldest first.
    pub fn members(&self) -> impl Iterator<Item = (&[Value], &Row)> {
        self.members
            .iter()
            .flat_map(|(k, rows)| rows.iter().map(move |r| (k.as_slice(), r)))
    }

    /// Adds stored versions read back from a table (a restart continues its history).
    pub fn restore(&mut self, rows: impl IntoIterator<Item = (Vec<Value>, Row)>) {
        for (key, row) in rows {
            self.members.entry(key).or_default().push(row);
        }
        for rows in self.members.values_mut() {
            rows.sort_by_key(|r| (r.to.is_none(), r.from));
        }
    }

    /// Whether rows changed since the last [`Scd2::written`].
    pub fn changed(&self) -> bool {
        self.changed
    }

    pub fn written(&mut self) {
        self.changed = false;
    }

    pub fn rows(&self) -> usize {
        self.members.values().map(Vec::len).sum()
    }
}

/// The departments of the hospital network as SCD2 versions effective from `at`: how
/// `config/departments.csv` enters `gold/dim_department` (live capacity updates hand their own
/// versions to the same place).
pub fn department_versions(network: &Network, at: i64) -> Vec<Version> {
    let mut out = Vec::new();
    for (hospital, department) in network.departments() {
        let capacity = department.capacity;
        let name = network
            .hospital(i64::from(hospital))
            .map(|h| h.name.clone());
        out.push(Version {
            key: vec![
                Value::Int(Some(i64::from(hospital))),
                Value::Text(Some(department.name.clone())),
            ],
            attributes: vec![
                Value::Text(name),
                Value::Int(Some(i64::from(capacity.bed_capacity))),
                Value::Int(Some(i64::from(capacity.staff_count))),
            ],
            effective_from: at,
        });
    }
    out
}

/// A patient's tracked attributes, as a version effective from the event time. The age is
/// kept as its band (docs/design.md's bands); an unknown age is no statement, like a missing gender.
pub fn patient_version(
    patient_key: &str,
    gender: Option<&str>,
    age: Option<i64>,
    insurance: Option<&str>,
    at: i64,
) -> Version {
    let band = age.map(|a| AgeBand::of(Some(a)).label().to_owned());
    Version {
        key: vec![Value::Text(Some(patient_key.to_owned()))],
        attributes: vec![
            Value::Text(gender.map(str::to_owned)),
            Value::Text(band),
            Value::Text(insurance.map(str::to_owned)),
        ],
        effective_from: at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn department(capacity: i64) -> Version {
        Version {
            key: vec![Value::Int(Some(1)), Value::Text(Some("ICU".into()))],
            attributes: vec![
                Value::Text(Some("North".into())),
                Value::Int(Some(capacity)),
                Value::Int(Some(20)),
            ],
            effective_from: 10,
        }
    }

    #[test]
    fn sync_retires_what_left_and_reopens_what_came_back() {
        let mut d = Scd2::new(Dimension::Department);
        assert!(d.sync(vec![department(10)], 10));
        assert!(
            !d.sync(vec![department(10)], 20),
            "the same file changes nothing"
        );
        assert!(d.sync(Vec::new(), 30), "a department that left is closed");
        let rows: Vec<&Row> = d.members().map(|(_, r)| r).collect();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].to, Some(30));
        let mut back = department(10);
        back.effective_from = 40;
        assert!(d.sync(vec![back], 40), "it comes back as a new version");
        let rows: Vec<&Row> = d.members().map(|(_, r)| r).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[1].from, rows[1].to), (40, None));
    }
}
