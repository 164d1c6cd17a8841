//! Silver: data-quality rules that flag and repair, never silently drop.
//!
//! The rules of docs/design.md apply in the order of its table, each to the record as the rules above
//! it left it. Duplicates are the one thing dropped (and counted); quarantined records stay in
//! Silver with their flags and are kept out of Gold. A payload that is not an event at all never
//! reaches the rules: it becomes a [`DeadLetter`] with the reason.

mod dedup;
mod flags;

use std::borrow::Cow;

use chrono::Duration;
use serde::Serialize;

use crate::checkpoint::Checkpointed;
use crate::model::{
    DeadLetter, DepartmentId, DepartmentMatch, Event, EventType, LiveNetwork, Network, NetworkView,
    Vitals,
};

pub use dedup::DedupWindow;
pub use flags::{DqFlag, DqFlags};

/// A cleaned event: the repaired event, its typed category fields, and its flags.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SilverRecord {
    #[serde(flatten)]
    pub event: Event,
    #[serde(skip)]
    pub kind: Option<EventType>,
    /// The configured department the record maps to (its name is in `event.department`).
    #[serde(skip)]
    pub department: Option<DepartmentId>,
    pub dq_flags: DqFlags,
}

impl SilverRecord {
    /// Quarantined records stay in Silver and never reach Gold.
    pub fn quarantined(&self) -> bool {
        self.dq_flags.quarantined()
    }
}

/// What Silver made of one payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A Silver record (possibly quarantined). Boxed: it is large and the other outcomes small.
    Record(Box<SilverRecord>),
    /// The event id was seen before: dropped and counted. Its id and event time stay, for the
    /// rules' reorder window (a second copy from another partition may be the one in order).
    Duplicate(Duplicate),
    /// Not an event.
    DeadLetter(DeadLetter),
}

/// What is left of a duplicate: its event id and event time.
#[derive(Debug, Clone, PartialEq)]
pub struct Duplicate {
    pub event_id: String,
    pub event_time: crate::model::Timestamp,
}

/// Physiological bounds of docs/design.md; a reading outside them is nulled. Diastolic pressure is
/// not in docs/design.md's list but a diastolic of 900 would distort the census as much as any other
/// vital, so it gets a bound too.
const VITAL_BOUNDS: VitalBounds = VitalBounds {
    heart_rate: (20.0, 300.0),
    bp_systolic: (40.0, 300.0),
    bp_diastolic: (20.0, 200.0),
    oxygen_saturation: (50.0, 100.0),
    respiratory_rate: (0.0, 80.0),
    temperature_c: (25.0, 45.0),
};

struct VitalBounds {
    heart_rate: (f64, f64),
    bp_systolic: (f64, f64),
    bp_diastolic: (f64, f64),
    oxygen_saturation: (f64, f64),
    respiratory_rate: (f64, f64),
    temperature_c: (f64, f64),
}

/// How far an admission time may lie after the event before it counts as in the future.
const FUTURE_TOLERANCE_SECS: i64 = 60;

/// The Silver stage: stateful only through its duplicate window.
#[derive(Debug)]
pub struct Silver {
    network: NetworkView,
    dedup: DedupWindow,
}

/// A checkpoint keeps the duplicate window: a restarted run still drops what this one saw.
impl Checkpointed for Silver {
    type State<'a> = Cow<'a, DedupWindow>;

    fn snapshot(&self) -> Cow<'_, DedupWindow> {
        Cow::Borrowed(&self.dedup)
    }

    fn restore(&mut self, state: Cow<'static, DedupWindow>) {
        self.dedup = state.into_owned();
    }
}

impl Silver {
    pub fn new(network: Network) -> Self {
        Silver {
            network: NetworkView::fixed(network),
            dedup: DedupWindow::default(),
        }
    }

    /// Silver that checks against the network in force, departments added or removed while
    /// running included.
    pub fn following(live: LiveNetwork) -> Self {
        Silver {
            network: NetworkView::following(live),
            dedup: DedupWindow::default(),
        }
    }

    /// The hospital network the rules check against.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// What Silver makes of one decoded payload: a dead letter stays one; an event is
    /// cleaned.
    pub fn admit(&mut self, decoded: Result<Event, DeadLetter>) -> Outcome {
        match decoded {
            Ok(event) => self.clean(event),
            Err(letter) => Outcome::DeadLetter(letter),
        }
    }

    /// Applies the rules of docs/design.md, in order, to a parsed event.
    pub fn clean(&mut self, mut event: Event) -> Outcome {
        if !self.dedup.first_sighting(&event.event_id) {
            return Outcome::Duplicate(Duplicate {
                event_id: event.event_id,
                event_time: event.event_timestamp,
            });
        }
        self.network.refresh();
        let mut flags = DqFlags::default();
        let kind = event.event_type.as_deref().and_then(EventType::parse);

        // FUTURE_ADMISSION
        if let Some(at) = event.admission_time {
            if at > event.event_timestamp + Duration::seconds(FUTURE_TOLERANCE_SECS) {
                flags.insert(DqFlag::FutureAdmission);
                event.admission_time = Some(event.event_timestamp);
            }
        }
        // MISSING_ADMISSION_TIME
        if kind == Some(EventType::Admission) && event.admission_time.is_none() {
            flags.insert(DqFlag::MissingAdmissionTime);
            event.admission_time = Some(event.event_timestamp);
        }
        // INVALID_AGE
        if event.age.is_some_and(|a| !(0..=120).contains(&a)) {
            flags.insert(DqFlag::InvalidAge);
            event.age = None;
        }
        // DISCHARGE_BEFORE_ADMIT
        if let (Some(d), Some(a)) = (event.discharge_time, event.admission_time) {
            if d < a {
                flags.insert(DqFlag::DischargeBeforeAdmit);
                event.discharge_time = Some(event.event_timestamp);
            }
        }
        // DEPT_TYPO (and, below, MISSING_DEPARTMENT when nothing matches): onto the names
        // of the record's hospital.
        let matched = event
            .department
            .as_deref()
            .map(|raw| self.network.match_department(event.hospital_id, raw));
        let department = match matched {
            Some(DepartmentMatch::Configured(d)) => {
                if event.department.as_deref() != Some(d.name.as_str()) {
                    // The name in another letter case: the configured spelling, not a typo.
                    event.department = Some(d.name.clone());
                }
                Some(d.id)
            }
            Some(DepartmentMatch::Repaired(d)) => {
                flags.insert(DqFlag::DeptTypo);
                event.department = Some(d.name.clone());
                Some(d.id)
            }
            Some(DepartmentMatch::Unknown) | None => None,
        };
        // A demographic update names a patient, not a place: its hospital and department are
        // checked only when it gives them.
        let update = kind == Some(EventType::PatientUpdate);
        // INVALID_HOSPITAL_ID
        if !(update && event.hospital_id.is_none())
            && event
                .hospital_id
                .and_then(|h| self.network.hospital(h))
                .is_none()
        {
            flags.insert(DqFlag::InvalidHospitalId);
        }
        // MISSING_PATIENT_ID / MISSING_EVENT_TYPE / MISSING_DEPARTMENT
        if event
            .patient_id
            .as_deref()
            .is_none_or(|p| p.trim().is_empty())
        {
            flags.insert(DqFlag::MissingPatientId);
        }
        if kind.is_none() {
            flags.insert(DqFlag::MissingEventType);
        }
        if department.is_none() && !(update && event.department.is_none()) {
            flags.insert(DqFlag::MissingDepartment);
        }
        // VITALS_OUT_OF_RANGE
        if let Some(v) = event.vitals.as_mut() {
            if null_out_of_range(v) {
                flags.insert(DqFlag::VitalsOutOfRange);
            }
        }
        Outcome::Record(Box::new(SilverRecord {
            event,
            kind,
            department,
            dq_flags: flags,
        }))
    }
}

/// Nulls every vital outside its bounds; true if any was.
fn null_out_of_range(v: &mut Vitals) -> bool {
    let b = &VITAL_BOUNDS;
    let mut any = false;
    for (value, (lo, hi)) in [
        (&mut v.heart_rate, b.heart_rate),
        (&mut v.bp_systolic, b.bp_systolic),
        (&mut v.bp_diastolic, b.bp_diastolic),
        (&mut v.oxygen_saturation, b.oxygen_saturation),
        (&mut v.respiratory_rate, b.respiratory_rate),
        (&mut v.temperature_c, b.temperature_c),
    ] {
        if value.is_some_and(|x| !(lo..=hi).contains(&x)) {
            *value = None;
            any = true;
        }
    }
    any
}

#[cfg(test)]
mod tests;
