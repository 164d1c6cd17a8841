//! Admissions: counts by priority and weekday, and each hospital's most frequent diagnoses.

use crate::model::HospitalId;
use differential_dataflow::VecCollection;

use super::facts::AdmissionFact;
use super::tally::Tally;

/// How many diagnoses the `diagnoses` document lists per hospital.
pub const TOP_DIAGNOSES: usize = 10;

/// A hospital's most frequent diagnoses: `(code, admissions)`, most frequent first.
pub type TopDiagnoses = Vec<(String, i64)>;

/// The admission KPIs.
///
/// ```
/// use cds_engine::gold::{AdmissionCounts, AdmissionFact};
/// use differential_dataflow::input::Input;
///
/// timely::example(|scope| {
///     let (mut input, admissions) = scope.new_collection::<AdmissionFact, isize>();
///     admissions.top_diagnoses().inspect(|((hospital, top), _time, diff)| {
///         if *diff > 0 {
///             // The most frequent first; a tie goes to the smaller code.
///             assert_eq!(*hospital, 1);
///             assert_eq!(top[0], ("I21".to_string(), 2));
///         }
///     });
///     let admission = |code: &str| AdmissionFact {
///         hospital: 1, priority: Some(0), weekday: 2, diagnosis: Some(code.to_string()),
///     };
///     input.insert(admission("I21"));
///     input.insert(admission("I21"));
///     input.insert(admission("J18"));
/// });
/// ```
pub trait AdmissionCounts<'scope> {
    /// Admissions per `(hospital, priority, weekday)`.
    fn admissions_by_priority(self) -> VecCollection<'scope, u64, (HospitalId, u8, u8), Tally<1>>;
    /// Per hospital, the [`TOP_DIAGNOSES`] most frequent diagnosis codes with their counts.
    fn top_diagnoses(self) -> VecCollection<'scope, u64, (HospitalId, TopDiagnoses), isize>;
}

impl<'scope> AdmissionCounts<'scope> for VecCollection<'scope, u64, AdmissionFact, isize> {
    fn admissions_by_priority(self) -> VecCollection<'scope, u64, (HospitalId, u8, u8), Tally<1>> {
        self.flat_map(|a| a.priority.map(|p| (a.hospital, p, a.weekday)))
            .explode(|key| Some((key, Tally::new([1]))))
            .consolidate()
    }

    fn top_diagnoses(self) -> VecCollection<'scope, u64, (HospitalId, TopDiagnoses), isize> {
        self.flat_map(|a| a.diagnosis.map(|d| (a.hospital, d)))
            .count()
            .map(|((hospital, code), n)| (hospital, (n as i64, code)))
            .reduce_named("TopDiagnoses", |_hospital, counts, output| {
                // Sorted ascending by (count, code): take from the end, most frequent first,
                // and break count ties by the smaller code.
                let mut ranked: Vec<(i64, &String)> =
                    counts.iter().map(|((n, c), _)| (*n, c)).collect();
                ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
                let top: TopDiagnoses = ranked
                    .into_iter()
                    .take(TOP_DIAGNOSES)
                    .map(|(n, c)| (c.clone(), n))
                    .collect();
                output.push((top, 1));
            })
    }
}
