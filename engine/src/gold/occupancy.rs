//! Occupancy per department: the located patients, counted with their gender and age band.

use crate::model::HospitalId;
use differential_dataflow::VecCollection;

use crate::model::DepartmentId;

use super::facts::Placement;
use super::tally::Tally;
use super::OccupancyTally;

/// Counts located patients per `(hospital, department)`.
///
/// One [`OccupancyTally`] per patient (`[1, gender one-hot (4), age band one-hot (6)]`), summed
/// by differential's consolidation: a transfer retracts the old department's tally and asserts
/// the new one's, so the counts follow without re-reading any group.
///
/// ```
/// use cds_engine::gold::{Occupancy, Placement};
/// use cds_engine::model::DepartmentId;
/// use differential_dataflow::input::Input;
///
/// timely::example(|scope| {
///     let (mut located, patients) = scope.new_collection::<(u64, Placement), isize>();
///     patients.occupancy().inspect(|(place, _time, tally)| {
///         // Two patients in hospital 1, department 3 (the tally is the difference: it is
///         // what adds up); one of them a woman (gender index 1).
///         assert_eq!((*place, tally.get(0), tally.get(2)), ((1, DepartmentId(3)), 2, 1));
///     });
///     let place = |gender| Placement { hospital: 1, department: DepartmentId(3), gender, age_band: 2 };
///     located.insert((7, place(0)));
///     located.insert((8, place(1)));
/// });
/// ```
pub trait Occupancy<'scope> {
    fn occupancy(self) -> VecCollection<'scope, u64, (HospitalId, DepartmentId), OccupancyTally>;
}

impl<'scope> Occupancy<'scope> for VecCollection<'scope, u64, (u64, Placement), isize> {
    fn occupancy(self) -> VecCollection<'scope, u64, (HospitalId, DepartmentId), OccupancyTally> {
        self.explode(|(_, p)| {
            let mut t = [0i64; 11];
            t[0] = 1;
            t[1 + usize::from(p.gender)] = 1;
            t[5 + usize::from(p.age_band)] = 1;
            Some(((p.hospital, p.department), Tally::new(t)))
        })
        .consolidate()
    }
}
