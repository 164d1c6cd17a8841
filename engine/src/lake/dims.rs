//! The Delta encoding of the SCD type 2 dimensions (`gold/dim_patient`, `gold/dim_department`):
//! their schema, a dimension as one record batch, and a table read back into a dimension.
//!
//! The versions themselves are kept by [`crate::dims::Scd2`]. A dimension is small next to the
//! facts; the writer keeps it in memory (loaded from the table when the writer starts) and
//! rewrites the table in one Delta commit when it changed.

use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use deltalake::arrow::datatypes::{
    DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use deltalake::arrow::error::ArrowError;

use crate::dims::{Dimension, Kind, Row, Scd2, Value};

/// The table's columns: the surrogate key, the natural key, the tracked attributes, then the
/// validity interval.
pub fn schema(dimension: Dimension) -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let (key, attrs) = dimension.columns();
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

/// Every row of a dimension, as one record batch.
pub fn batch(scd: &Scd2) -> Result<RecordBatch, ArrowError> {
    let dimension = scd.dimension();
    let (key, attrs) = dimension.columns();
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
    for (natural, r) in scd.members() {
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
        current.append_value(r.to.is_none());
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
    RecordBatch::try_new(schema(dimension), columns)
}

/// Adds the rows of a batch read from the table (a restart continues its history).
pub fn load(scd: &mut Scd2, batch: &RecordBatch) -> Result<(), String> {
    let dimension = scd.dimension();
    let (key, attrs) = dimension.columns();
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| format!("{}: no column {name}", dimension.path()))
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
    let rows = (0..batch.num_rows()).map(|i| {
        let natural: Vec<Value> = keys.iter().map(|(c, k)| value(c, *k, i)).collect();
        let row = Row {
            surrogate: surrogate.value(i),
            attributes: values.iter().map(|(c, k)| value(c, *k, i)).collect(),
            from: from.value(i),
            to: (!to.is_null(i)).then(|| to.value(i)),
        };
        (natural, row)
    });
    scd.restore(rows);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dims::{patient_version, surrogate_key};

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
        let batch = batch(&d).expect("batch");
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
        load(&mut again, &batch).expect("load");
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
        assert_eq!(super::batch(&again).expect("batch"), batch);
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
