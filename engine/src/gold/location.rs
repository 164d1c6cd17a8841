//! Where each patient is now: the latest ADT event by event time decides.

use differential_dataflow::VecCollection;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use differential_dataflow::lattice::Lattice;

use super::facts::{AdtFact, AdtKind, Placement};

/// Locates patients from their ADT events.
///
/// The values of a patient's group are sorted by [`AdtFact`]'s `Ord` (event time, then event
/// id), so the last one is the event that decides. A late event lands in the group and the
/// reduce retracts and re-asserts exactly the placement it changes; arrival order never matters.
///
/// ```
/// use cds_engine::gold::{AdtFact, AdtKind, LatestLocation, Placement};
/// use cds_engine::model::DepartmentId;
/// use differential_dataflow::input::Input;
///
/// timely::example(|scope| {
///     let (mut adt, events) = scope.new_collection::<(u64, AdtFact), isize>();
///     let at = |at, kind, department| AdtFact {
///         at, event_id: format!("e{at}"), kind, hospital: 1, department: DepartmentId(department), gender: 0, age_band: 2,
///     };
///     events.latest_location().inspect(|((patient, place), _time, diff)| {
///         // Only the transfer to department 2 survives: the admission was superseded.
///         assert_eq!((*patient, place.department, *diff), (7, DepartmentId(2), 1));
///     });
///     // The transfer arrives before the admission it follows: the answer is the same.
///     adt.insert((7, at(20, AdtKind::Transfer, 2)));
///     adt.insert((7, at(10, AdtKind::Admission, 0)));
/// });
/// ```
pub trait LatestLocation<'scope, T: Timestamp> {
    /// `(patient, placement)` for every patient whose latest ADT event is not a discharge.
    fn latest_location(self) -> VecCollection<'scope, T, (u64, Placement), isize>;
}

impl<'scope, T> LatestLocation<'scope, T> for VecCollection<'scope, T, (u64, AdtFact), isize>
where
    T: Timestamp + Lattice + TotalOrder,
{
    fn latest_location(self) -> VecCollection<'scope, T, (u64, Placement), isize> {
        self.reduce_named("LatestLocation", |_patient, events, output| {
            // `events` is non-empty and sorted; the last value is the latest event.
            if let Some((latest, _)) = events.last() {
                if latest.kind != AdtKind::Discharge {
                    output.push((
                        Placement {
                            hospital: latest.hospital,
                            department: latest.department,
                            gender: latest.gender,
                            age_band: latest.age_band,
                        },
                        1,
                    ));
                }
            }
        })
    }
}
