//! The vitals census per department: each located patient's latest reading, counted and summed
//! per vital where the patient lies now.

use crate::model::HospitalId;
use differential_dataflow::VecCollection;

use crate::model::DepartmentId;

use super::facts::{Placement, VitalsValues};
use super::tally::Tally;
use super::VitalsTally;

/// Joins located patients with their latest reading and tallies it per `(hospital,
/// department)`: `[patients, readings per vital (6), sums in hundredths per vital (6)]`. The
/// mean of a vital is a division of two sums, so averages follow every change exactly.
///
/// ```
/// use cds_engine::gold::{Placement, VitalsCensus, VitalsValues};
/// use cds_engine::model::DepartmentId;
/// use differential_dataflow::input::Input;
///
/// timely::example(|scope| {
///     let (mut located, patients) = scope.new_collection::<(u64, Placement), isize>();
///     let (mut latest, readings) = scope.new_collection::<(u64, VitalsValues), isize>();
///     patients.vitals_census(readings).inspect(|(place, _time, tally)| {
///         // One patient, a heart rate of 80.00 (in hundredths) and nothing else.
///         assert_eq!((*place, tally.get(0), tally.get(1), tally.get(7)), ((1, DepartmentId(3)), 1, 1, 8000));
///     });
///     located.insert((7, Placement { hospital: 1, department: DepartmentId(3), gender: 0, age_band: 2 }));
///     latest.insert((7, VitalsValues([Some(8000), None, None, None, None, None])));
/// });
/// ```
pub trait VitalsCensus<'scope> {
    fn vitals_census(
        self,
        latest: VecCollection<'scope, u64, (u64, VitalsValues), isize>,
    ) -> VecCollection<'scope, u64, (HospitalId, DepartmentId), VitalsTally>;
}

impl<'scope> VitalsCensus<'scope> for VecCollection<'scope, u64, (u64, Placement), isize> {
    fn vitals_census(
        self,
        latest: VecCollection<'scope, u64, (u64, VitalsValues), isize>,
    ) -> VecCollection<'scope, u64, (HospitalId, DepartmentId), VitalsTally> {
        self.join(latest)
            .explode(|(_, (p, VitalsValues(values)))| {
                let mut t = [0i64; 13];
                t[0] = 1;
                for (i, v) in values.iter().enumerate() {
                    if let Some(v) = v {
                        t[1 + i] = 1;
                        t[7 + i] = i64::from(*v);
                    }
                }
                Some(((p.hospital, p.department), Tally::new(t)))
            })
            .consolidate()
    }
}
