//! The current attributes of every patient in `gold/dim_patient`, kept beside the dimension.
//!
//! Every Gold record states the patient's gender, age and insurance, and nearly every one
//! states what the current version already says. Building a version (the key formatted, each
//! attribute copied) and comparing it inside the dimension's ordered map cost the lake writer
//! more than Parquet encoding of the facts; one hash lookup on the pseudonym and a comparison of
//! borrowed text tells the same: whether the record would start a new version.

use std::collections::HashMap;

use crate::dims::{Scd2, Value};

/// Gender, age band, insurance type: the tracked attributes, in the dimension's order.
pub(crate) type Stated<'a> = [Option<&'a str>; 3];

/// The attributes of each patient's current version, by pseudonymous key.
#[derive(Debug, Default)]
pub(crate) struct CurrentPatients {
    by_key: HashMap<u64, [Option<Box<str>>; 3]>,
}

impl CurrentPatients {
    /// The current versions of a dimension as loaded from its table.
    pub(crate) fn of(scd: &Scd2) -> Self {
        let mut by_key = HashMap::new();
        for (key, row) in scd.members() {
            let Some(patient) = key_of(key) else {
                continue;
            };
            if row.to.is_some() {
                // Rows are stored oldest first: a closed row is no longer current.
                by_key.remove(&patient);
                continue;
            }
            let mut current: [Option<Box<str>>; 3] = Default::default();
            for (slot, value) in current.iter_mut().zip(&row.attributes) {
                if let Value::Text(Some(t)) = value {
                    *slot = Some(t.as_str().into());
                }
            }
            by_key.insert(patient, current);
        }
        CurrentPatients { by_key }
    }

    /// Whether a record stating these attributes starts a new version: the patient is new,
    /// or an attribute it states differs from the current one (one it leaves out keeps its
    /// value, as [`Scd2::apply`] does).
    pub(crate) fn changes(&self, patient: u64, stated: &Stated<'_>) -> bool {
        match self.by_key.get(&patient) {
            None => true,
            Some(current) => stated
                .iter()
                .zip(current)
                .any(|(new, old)| new.is_some() && *new != old.as_deref()),
        }
    }

    /// Records the version just applied for a record stating these attributes.
    pub(crate) fn applied(&mut self, patient: u64, stated: &Stated<'_>) {
        let current = self.by_key.entry(patient).or_default();
        for (old, new) in current.iter_mut().zip(stated) {
            if let Some(v) = new {
                *old = Some((*v).into());
            }
        }
    }
}

/// The pseudonym behind a `gold/dim_patient` key (its 16 hex digits).
fn key_of(key: &[Value]) -> Option<u64> {
    match key {
        [Value::Text(Some(k))] => u64::from_str_radix(k, 16).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dims::{patient_version, Dimension};
    use crate::model::patient_ref;

    /// The cache answers as the dimension does, record after record.
    #[test]
    fn says_what_the_dimension_would_do() {
        let mut d = Scd2::new(Dimension::Patient);
        d.apply(patient_version(
            &patient_ref(7),
            Some("F"),
            Some(40),
            None,
            1,
        ));
        let mut cache = CurrentPatients::of(&d);
        // (patient, gender, age, insurance)
        type Record<'a> = (u64, Option<&'a str>, Option<i64>, Option<&'a str>);
        let records: [Record; 7] = [
            (7, Some("F"), Some(41), None),
            (7, None, None, Some("A")),
            (7, Some("F"), None, Some("A")),
            (9, None, None, None),
            (9, Some("M"), None, None),
            (7, Some("F"), Some(70), Some("A")),
            (9, Some("M"), Some(20), None),
        ];
        for (at, (patient, gender, age, insurance)) in records.into_iter().enumerate() {
            let band = age.map(|a| crate::model::AgeBand::of(Some(a)).label());
            let stated = [gender, band, insurance];
            let expected = cache.changes(patient, &stated);
            let version =
                patient_version(&patient_ref(patient), gender, age, insurance, at as i64 + 2);
            assert_eq!(d.apply(version), expected, "record {at}");
            if expected {
                cache.applied(patient, &stated);
            }
        }
        // Loaded again from the dimension, the cache knows the same.
        let again = CurrentPatients::of(&d);
        assert!(!again.changes(7, &[Some("F"), Some("65-79"), Some("A")]));
        assert!(again.changes(7, &[Some("M"), None, None]));
        assert!(!again.changes(9, &[Some("M"), Some("18-39"), None]));
    }
}
