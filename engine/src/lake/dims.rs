//! SCD type 2 dimensions: `gold/dim_patient` and `gold/dim_department`.
//!
//! Each row is one version of a thing (a patient under its pseudonymous key, a hospital
//! department): its tracked attributes, `effective_from`, `effective_to` (null while current)
//! and `is_current`. A version that differs from the current one closes it and becomes current;
//! an unchanged one changes nothing, so re-applying the same versions (a replay after a crash,
//! a restart with the same `config/departments.csv`) adds no row. The surrogate key is a hash of
//! the dimension, the natural key and `effective_from`: the same version gets the same key in
//! every run and on every worker, and two versions never share one.
//!
//! A dimension is small next to the facts; the writer keeps it in memory (loaded from the table
//! when the writer starts) and rewrites the table in one Delta commit when it changed.

use std::collections::BTreeMap;
use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use deltalake::arrow::datatypes::{
    DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use deltalake::arrow::error::ArrowError;
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
enum Kind {
    Text,
    Int,
}

/// Column names and kinds.
type Columns = &'static [(&'static str, Kind)];

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
    fn columns(self) -> (Columns, Columns) {
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

    pub fn schema(self) -> SchemaRef {
        let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let (key, attrs) = self.columns();
        let mut fields = vec![Field::new("surrogate_key", DataType::Int64, false)];
        for (name, kind) in key.iter().chain(attrs) {
            let t = match kind {
                Kind::Text => DataType::Utf8,
                Kind::Int => DataType::Int64,
            };
            fields.push(Field::new(*name, t, true));
        }
        fields.push(Field::new("effective_from", ts(), false));
        fields.push(Field::new("effective_to", ts(), true));
        fields.push(Field::new("is_current", DataType::Boolean, false));
        Arc::new(Schema::new(fields))
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

/// A stored row.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    surrogate: i64,
    attributes: Vec<Value>,
    from: i64,
    to: Option<i64>,
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
        let rows = self.members.entry(v.key.clone()).or_default();
        if let Some(current) = rows.last_mut() {
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

    /// Every row, as one record batch.
    pub fn batch(&self) -> Result<RecordBatch, ArrowError> {
        let (key, attrs) = self.dimension.columns();
        let mut surrogate = Int64Builder::new();
        let mut texts: Vec<StringBuilder> = Vec::new();
        let mut ints: Vec<Int64Builder> = Vec::new();
        let kinds: Vec<Kind> = key.iter().chain(attrs).map(|(_, k)| *k).collect();
        for k in &kinds {
            match k {
                Kind::Text => texts.push(StringBuilder::new()),
                Kind::Int => ints.push(Int64Builder::new()),
            }
        }
        let mut from = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        let mut to = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        let mut current = BooleanBuilder::new();
        for (natural, rows) in &self.members {
            let last = rows.len().saturating_sub(1);
            for (i, r) in rows.iter().enumerate() {
                surrogate.append_value(r.surrogate);
                let (mut t, mut n) = (0, 0);
                for v in natural.iter().chain(&r.attributes) {
                    match v {
                        Value::Text(s) => {
                            if let Some(b) = texts.get_mut(t) {
                                b.append_option(s.as_deref());
                            }
                            t += 1;
                        }
                        Value::Int(x) => {
                            if let Some(b) = ints.get_mut(n) {
                                b.append_option(*x);
                            }
                            n += 1;
                        }
                    }
                }
                from.append_value(r.from);
                to.append_option(r.to);
                current.append_value(i == last);
            }
        }
        let mut columns: Vec<ArrayRef> = vec![Arc::new(surrogate.finish())];
        let (mut t, mut n) = (texts.into_iter(), ints.into_iter());
        for k in kinds {
            let column: Option<ArrayRef> = match k {
                Kind::Text => t.next().map(|mut b| Arc::new(b.finish()) as ArrayRef),
                Kind::Int => n.next().map(|mut b| Arc::new(b.finish()) as ArrayRef),
            };
            if let Some(c) = column {
                columns.push(c);
            }
        }
        columns.push(Arc::new(from.finish()));
        columns.push(Arc::new(to.finish()));
        columns.push(Arc::new(current.finish()));
        RecordBatch::try_new(self.dimension.schema(), columns)
    }

    /// Adds the rows of a batch read from the table (a restart continues its history).
    pub fn load(&mut self, batch: &RecordBatch) -> Result<(), String> {
        let (key, attrs) = self.dimension.columns();
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| format!("{}: no column {name}", self.dimension.path()))
        };
        let value = |c: &ArrayRef, kind: Kind, i: usize| match kind {
            Kind::Text => {
                let a = c.as_string::<i32>();
                Value::Text((!a.is_null(i)).then(|| a.value(i).to_owned()))
            }
            Kind::Int => {
                let a = c.as_primitive::<Int64Type>();
                Value::Int((!a.is_null(i)).then(|| a.value(i)))
            }
        };
        let keys = key
            .iter()
            .map(|(n, k)| column(n).map(|c| (c, *k)))
            .collect::<Result<Vec<_>, _>>()?;
        let values = attrs
            .iter()
            .map(|(n, k)| column(n).map(|c| (c, *k)))
            .collect::<Result<Vec<_>, _>>()?;
        let surrogate = column("surrogate_key")?;
        let surrogate = surrogate.as_primitive::<Int64Type>();
        let from = column("effective_from")?;
        let from = from.as_primitive::<TimestampMicrosecondType>();
        let to = column("effective_to")?;
        let to = to.as_primitive::<TimestampMicrosecondType>();
        for i in 0..batch.num_rows() {
            let natural: Vec<Value> = keys.iter().map(|(c, k)| value(c, *k, i)).collect();
            let attributes: Vec<Value> = values.iter().map(|(c, k)| value(c, *k, i)).collect();
            self.members.entry(natural).or_default().push(Row {
                surrogate: surrogate.value(i),
                attributes,
                from: from.value(i),
                to: (!to.is_null(i)).then(|| to.value(i)),
            });
        }
        for rows in self.members.values_mut() {
            rows.sort_by_key(|r| (r.to.is_none(), r.from));
        }
        Ok(())
    }
}

/// The departments of the hospital network as SCD2 versions effective from `at`: how
/// `config/departments.csv` enters `gold/dim_department` (live capacity updates hand their own
/// versions to the same place).
pub fn department_versions(network: &Network, at: i64) -> Vec<Version> {
    let mut out = Vec::new();
    for (hospital, department, capacity) in network.departments() {
        let name = network
            .hospital(i64::from(hospital))
            .map(|h| h.name.clone());
        out.push(Version {
            key: vec![
                Value::Int(Some(i64::from(hospital))),
                Value::Text(Some(department.name().to_owned())),
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
/// kept as its band (DESIGN.md's bands); an unknown age is no statement, like a missing gender.
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

    #[test]
    fn a_change_closes_the_current_version_and_a_repeat_changes_nothing() {
        let mut d = Scd2::new(Dimension::Patient);
        assert!(d.apply(patient_version("p", Some("F"), Some(40), Some("A"), 10)));
        assert!(!d.apply(patient_version("p", Some("F"), Some(40), Some("A"), 20)));
        assert!(
            !d.apply(patient_version("p", Some("F"), Some(41), Some("A"), 25)),
            "the same age band is no new version"
        );
        assert!(d.apply(patient_version("p", Some("F"), Some(70), Some("A"), 30)));
        assert!(
            !d.apply(patient_version("p", None, None, None, 35)),
            "nothing stated"
        );
        assert_eq!(d.rows(), 2);
        let batch = d.batch().expect("batch");
        let current = batch
            .column_by_name("is_current")
            .expect("col")
            .as_boolean();
        assert_eq!(current.true_count(), 1);
        let to = batch
            .column_by_name("effective_to")
            .expect("col")
            .as_primitive::<TimestampMicrosecondType>();
        assert_eq!(to.value(0), 30);
        assert!(to.is_null(1));

        // Loaded back, the history continues; the same version again adds nothing.
        let mut again = Scd2::new(Dimension::Patient);
        again.load(&batch).expect("load");
        assert!(!again.apply(patient_version("p", Some("F"), Some(71), Some("A"), 40)));
        let bands = batch
            .column_by_name("age_band")
            .expect("col")
            .as_string::<i32>();
        assert_eq!((bands.value(0), bands.value(1)), ("40-64", "65-79"));
        assert!(
            batch.column_by_name("age").is_none(),
            "no exact age in Gold"
        );
        assert_eq!(again.batch().expect("batch"), batch);
        let keys = batch
            .column_by_name("surrogate_key")
            .expect("col")
            .as_primitive::<Int64Type>();
        assert_ne!(keys.value(0), keys.value(1));
        assert_eq!(
            keys.value(1),
            surrogate_key(Dimension::Patient, &[Value::Text(Some("p".into()))], 30)
        );
    }
}
