//! Length of stay: finished stays summed per department and per patient.

use crate::model::HospitalId;
use differential_dataflow::VecCollection;

use crate::model::DepartmentId;

use super::facts::StayFact;
use super::tally::Tally;
use super::StayTally;

/// Sums finished stays as `[discharges, total seconds]`: the average length of stay is their
/// quotient, and a cancelled discharge retracts its stay exactly.
///
/// ```
/// use cds_engine::gold::{LengthOfStay, StayFact};
/// use cds_engine::model::DepartmentId;
/// use differential_dataflow::input::Input;
///
/// timely::example(|scope| {
///     let (mut input, stays) = scope.new_collection::<StayFact, isize>();
///     stays.stays_by_department().inspect(|(place, _time, tally)| {
///         assert_eq!((*place, tally.get(0), tally.get(1)), ((1, DepartmentId(3)), 2, 3 * 3600));
///     });
///     let stay = |patient, seconds| StayFact { hospital: 1, department: DepartmentId(3), patient, seconds };
///     input.insert(stay(7, 3600));
///     input.insert(stay(8, 2 * 3600));
/// });
/// ```
pub trait LengthOfStay<'scope> {
    /// Per `(hospital, department)` the stay ended in.
    fn stays_by_department(
        self,
    ) -> VecCollection<'scope, u64, (HospitalId, DepartmentId), StayTally>;
    /// Per `(hospital, department, patient)`.
    fn stays_by_patient(
        self,
    ) -> VecCollection<'scope, u64, (HospitalId, DepartmentId, u64), StayTally>;
}

impl<'scope> LengthOfStay<'scope> for VecCollection<'scope, u64, StayFact, isize> {
    fn stays_by_department(
        self,
    ) -> VecCollection<'scope, u64, (HospitalId, DepartmentId), StayTally> {
        self.explode(|s| Some(((s.hospital, s.department), Tally::new([1, s.seconds]))))
            .consolidate()
    }

    fn stays_by_patient(
        self,
    ) -> VecCollection<'scope, u64, (HospitalId, DepartmentId, u64), StayTally> {
        self.explode(|s| {
            Some((
                (s.hospital, s.department, s.patient),
                Tally::new([1, s.seconds]),
            ))
        })
        .consolidate()
    }
}
