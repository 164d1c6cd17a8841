//! Dirty-data scenarios: what real registration systems and monitors send now and then.
//! Each is applied to the event as emitted; the simulator's own state stays clean.

use chrono::Duration;
use serde_json::json;

use super::rng::Rng;
use crate::model::Event;

/// One dirty-data scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    InvalidAge,
    FutureAdmission,
    MissingAdmissionTime,
    MissingCriticalField,
    DischargeBeforeAdmission,
    DepartmentTypo,
    InvalidHospitalId,
    Duplicate,
    OutOfOrder,
    UnknownAttribute,
    Malformed,
    VitalsOutOfRange,
}

impl Scenario {
    pub const ALL: [Scenario; 12] = [
        Self::InvalidAge,
        Self::FutureAdmission,
        Self::MissingAdmissionTime,
        Self::MissingCriticalField,
        Self::DischargeBeforeAdmission,
        Self::DepartmentTypo,
        Self::InvalidHospitalId,
        Self::Duplicate,
        Self::OutOfOrder,
        Self::UnknownAttribute,
        Self::Malformed,
        Self::VitalsOutOfRange,
    ];

    /// Whether the scenario makes sense for this event.
    fn applies(self, e: &Event) -> bool {
        let kind = e.event_type.as_deref();
        match self {
            Self::FutureAdmission => e.admission_time.is_some(),
            Self::MissingAdmissionTime => kind == Some("ADMISSION"),
            Self::DischargeBeforeAdmission => kind == Some("DISCHARGE"),
            Self::VitalsOutOfRange => kind == Some("VITALS"),
            _ => true,
        }
    }

    /// A scenario that applies to `e`, chosen uniformly.
    pub fn choose(rng: &mut Rng, e: &Event) -> Option<Scenario> {
        let fits: Vec<Scenario> = Self::ALL.into_iter().filter(|s| s.applies(e)).collect();
        rng.pick(&fits).copied()
    }
}

/// A misspelling of a department name, as registration desks make them: a letter dropped, two
/// letters swapped, or blanks around it (each within edit distance 2, so Silver repairs it
/// unless another department of the hospital is as close).
fn misspelling(name: &str, rng: &mut Rng) -> String {
    // One draw, whatever the name: the rest of the stream of a seed stays as it was.
    let draw = rng.range(0, 1 << 40) as usize;
    let chars: Vec<char> = name.chars().collect();
    if chars.len() < 4 {
        return format!("{name} ");
    }
    let at = 1 + draw % (chars.len() - 2);
    let mut typo = chars.clone();
    match (draw / (chars.len() - 2)) % 3 {
        1 if chars[at] != chars[at + 1] => typo.swap(at, at + 1),
        0 | 1 => {
            typo.remove(at);
        }
        _ => return format!(" {name}"),
    }
    typo.into_iter().collect()
}

/// Applies a scenario that changes the event itself (duplicates, reordering and truncation
/// are done on the line by the simulator).
pub fn apply(scenario: Scenario, e: &mut Event, rng: &mut Rng) {
    match scenario {
        Scenario::InvalidAge => e.age = Some(if rng.chance(0.5) { -3 } else { 150 }),
        Scenario::FutureAdmission => {
            e.admission_time = Some(e.event_timestamp + Duration::hours(rng.range(48, 120)));
        }
        Scenario::MissingAdmissionTime => e.admission_time = None,
        Scenario::MissingCriticalField => match rng.range(0, 3) {
            0 => e.patient_id = None,
            1 => e.patient_id = Some(String::new()),
            2 => e.event_type = None,
            _ => e.department = None,
        },
        Scenario::DischargeBeforeAdmission => {
            if let Some(a) = e.admission_time {
                e.discharge_time = Some(a - Duration::hours(rng.range(1, 48)));
            }
        }
        Scenario::DepartmentTypo => {
            let name = e.department.clone().unwrap_or_default();
            e.department = Some(misspelling(&name, rng));
        }
        Scenario::InvalidHospitalId => e.hospital_id = Some(99),
        Scenario::UnknownAttribute => {
            if rng.chance(0.5) {
                e.extra
                    .insert("triage_score".into(), json!(rng.range(1, 5)));
            } else {
                e.extra.insert(
                    "ward_round".into(),
                    json!({ "consultant": "on call", "round": rng.range(1, 3) }),
                );
            }
        }
        Scenario::VitalsOutOfRange => {
            if let Some(v) = e.vitals.as_mut() {
                match rng.range(0, 2) {
                    0 => v.heart_rate = Some(400.0),
                    1 => v.oxygen_saturation = Some(0.0),
                    _ => v.temperature_c = Some(60.0),
                }
            }
        }
        Scenario::Duplicate | Scenario::OutOfOrder | Scenario::Malformed => {}
    }
}
