//! What the rules need to know about each patient and department, kept by event time.
//!
//! The Gold dataflow answers "where is everyone now"; a rule asks "where was this patient, and
//! how full was their ward, when this event happened", together with the patient's recent
//! readings. This state answers that in O(1) per event: the latest ADT event by event time
//! places the patient (the same rule as Gold), readings of the last six hours are kept per
//! patient, and department occupancy follows the placements.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use cds_rules::{Context, CtxDepartment, CtxEvent, CtxPatient, CtxReading, CtxVitals};

use crate::gold::micros;
use crate::model::{format_time, patient_ref, EventType, Network, Timestamp, Vitals};
use crate::silver::SilverRecord;

/// How far back `ctx.patient.recent_vitals` reaches.
const RECENT_MICROS: i64 = 6 * 3600 * 1_000_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Placement {
    at: i64,
    event_id: String,
    discharged: bool,
    hospital: i64,
    department: String,
    admission_time: Option<Timestamp>,
    age: Option<i64>,
    gender: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct PatientState {
    placement: Option<Placement>,
    /// Newest first, by event time.
    #[serde(with = "stored_readings")]
    readings: VecDeque<(i64, CtxReading)>,
    last_discharge: Option<Timestamp>,
}

/// Readings in a checkpoint: plain positional fields (the rule-facing shape flattens and skips
/// fields, which only self-describing formats can read back).
mod stored_readings {
    use std::collections::VecDeque;

    use cds_rules::{CtxReading, CtxVitals};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    type Stored = (i64, String, [Option<f64>; 6], Option<String>, Option<bool>);

    pub fn serialize<S: Serializer>(
        readings: &VecDeque<(i64, CtxReading)>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let stored: Vec<Stored> = readings
            .iter()
            .map(|(at, r)| {
                let v = &r.vitals;
                (
                    *at,
                    r.time.clone(),
                    [
                        v.heart_rate,
                        v.bp_systolic,
                        v.bp_diastolic,
                        v.temperature_c,
                        v.oxygen_saturation,
                        v.respiratory_rate,
                    ],
                    v.consciousness.clone(),
                    v.supplemental_o2,
                )
            })
            .collect();
        stored.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<VecDeque<(i64, CtxReading)>, D::Error> {
        let stored = Vec::<Stored>::deserialize(d)?;
        Ok(stored
            .into_iter()
            .map(|(at, time, n, consciousness, supplemental_o2)| {
                let vitals = CtxVitals {
                    heart_rate: n[0],
                    bp_systolic: n[1],
                    bp_diastolic: n[2],
                    temperature_c: n[3],
                    oxygen_saturation: n[4],
                    respiratory_rate: n[5],
                    consciousness,
                    supplemental_o2,
                };
                (at, CtxReading { time, vitals })
            })
            .collect())
    }
}

/// [`ContextState`] as it is checkpointed (borrowed when written, owned when read).
#[derive(Debug, Serialize, Deserialize)]
pub struct ContextSnapshot<'a> {
    patients: std::borrow::Cow<'a, HashMap<u64, PatientState>>,
    occupied: std::borrow::Cow<'a, HashMap<(i64, String), i64>>,
}

/// Per-patient and per-department state for building rule contexts.
#[derive(Debug, Clone)]
pub struct ContextState {
    network: Network,
    patients: HashMap<u64, PatientState>,
    occupied: HashMap<(i64, String), i64>,
}

/// The rule-facing copy of a vitals object.
pub fn ctx_vitals(v: &Vitals) -> CtxVitals {
    CtxVitals {
        heart_rate: v.heart_rate,
        bp_systolic: v.bp_systolic,
        bp_diastolic: v.bp_diastolic,
        temperature_c: v.temperature_c,
        oxygen_saturation: v.oxygen_saturation,
        respiratory_rate: v.respiratory_rate,
        consciousness: v.consciousness.clone(),
        supplemental_o2: v.supplemental_o2,
    }
}

/// The event as rules see it: the Silver event without the raw patient identifier.
/// `event_timestamp` is the event's timestamp as [`format_time`] writes it (the caller has it
/// already: it is also `ctx.now`).
pub fn ctx_event(r: &SilverRecord, event_timestamp: &str) -> CtxEvent {
    let e = &r.event;
    CtxEvent {
        event_id: e.event_id.clone(),
        event_type: r.kind.map(EventType::as_str).unwrap_or_default().to_owned(),
        event_timestamp: event_timestamp.to_owned(),
        hospital_id: e.hospital_id,
        department: e.department.clone(),
        gender: e.gender.clone(),
        age: e.age,
        admission_time: e.admission_time.as_ref().map(format_time),
        discharge_time: e.discharge_time.as_ref().map(format_time),
        admission_priority: e.admission_priority.clone(),
        diagnosis_code: e.diagnosis_code.clone(),
        vitals: e.vitals.as_ref().map(ctx_vitals),
    }
}

impl ContextState {
    pub fn new(network: Network) -> Self {
        ContextState {
            network,
            patients: HashMap::new(),
            occupied: HashMap::new(),
        }
    }

    /// The per-patient and per-department state, for a checkpoint.
    pub fn snapshot(&self) -> ContextSnapshot<'_> {
        ContextSnapshot {
            patients: std::borrow::Cow::Borrowed(&self.patients),
            occupied: std::borrow::Cow::Borrowed(&self.occupied),
        }
    }

    /// Replaces the state with a checkpoint's.
    pub fn restore(&mut self, snapshot: ContextSnapshot<'static>) {
        self.patients = snapshot.patients.into_owned();
        self.occupied = snapshot.occupied.into_owned();
    }

    /// Forgets the readings of the patients `keep` does not accept (a rules share that never
    /// builds their context).
    pub fn forget_readings(&mut self, keep: impl Fn(u64) -> bool) {
        for (patient, state) in &mut self.patients {
            if !keep(*patient) {
                state.readings.clear();
            }
        }
    }

    /// Applies a Gold-eligible record and returns the context to evaluate it in: the patient's
    /// readings and last discharge as they were before the event, their placement and the
    /// department's occupancy as they are with it. With `want_context` false (no rule is
    /// evoked by the event and nothing is scheduled from it) only the state is updated; with
    /// `keep_readings` false a reading is not kept (a rules share that never builds this
    /// patient's context).
    pub fn observe(
        &mut self,
        patient: u64,
        r: &SilverRecord,
        want_context: bool,
        keep_readings: bool,
    ) -> Option<Context> {
        let e = &r.event;
        let at = micros(&e.event_timestamp);
        let state = self.patients.entry(patient).or_default();
        let before = want_context.then(|| {
            let recent_vitals: Vec<CtxReading> = state
                .readings
                .iter()
                .filter(|(t, _)| *t <= at && at - *t <= RECENT_MICROS)
                .map(|(_, r)| r.clone())
                .collect();
            let last_discharge_time = state.last_discharge.as_ref().map(format_time);
            (recent_vitals, last_discharge_time)
        });

        match r.kind {
            Some(EventType::Vitals) => {
                if let Some(v) = e.vitals.as_ref().filter(|_| keep_readings) {
                    let reading = CtxReading {
                        time: format_time(&e.event_timestamp),
                        vitals: ctx_vitals(v),
                    };
                    let pos = state
                        .readings
                        .iter()
                        .position(|(t, _)| *t < at)
                        .unwrap_or(state.readings.len());
                    state.readings.insert(pos, (at, reading));
                    // Keep what a later event could still need (six hours behind the newest).
                    let newest = state.readings.front().map_or(at, |(t, _)| *t);
                    while state
                        .readings
                        .back()
                        .is_some_and(|(t, _)| newest - *t > RECENT_MICROS)
                    {
                        state.readings.pop_back();
                    }
                }
            }
            Some(kind) => {
                let newer = state
                    .placement
                    .as_ref()
                    .is_none_or(|p| (p.at, p.event_id.as_str()) < (at, e.event_id.as_str()));
                if kind == EventType::Discharge {
                    let t = e.discharge_time.unwrap_or(e.event_timestamp);
                    if state.last_discharge.is_none_or(|d| d < t) {
                        state.last_discharge = Some(t);
                    }
                }
                if newer {
                    let old = state.placement.take();
                    let place = Placement {
                        at,
                        event_id: e.event_id.clone(),
                        discharged: kind == EventType::Discharge,
                        hospital: e.hospital_id.unwrap_or_default(),
                        department: e.department.clone().unwrap_or_default(),
                        admission_time: e.admission_time,
                        age: e.age,
                        gender: e.gender.clone(),
                    };
                    if let Some(o) = old.filter(|o| !o.discharged) {
                        *self.occupied.entry((o.hospital, o.department)).or_default() -= 1;
                    }
                    if !place.discharged {
                        *self
                            .occupied
                            .entry((place.hospital, place.department.clone()))
                            .or_default() += 1;
                    }
                    state.placement = Some(place);
                }
            }
            None => {}
        }
        let (recent_vitals, last_discharge_time) = before?;
        let now = format_time(&e.event_timestamp);
        Some(self.context(
            patient,
            ctx_event(r, &now),
            recent_vitals,
            last_discharge_time,
            now,
        ))
    }

    /// Whether the patient is still in the stay that began with `admission_event_id`'s
    /// admission time (for delayed evokes).
    pub fn admitted(&self, patient: u64) -> bool {
        self.patients
            .get(&patient)
            .and_then(|s| s.placement.as_ref())
            .is_some_and(|p| !p.discharged)
    }

    /// The context of a delayed evoke: the patient as they are now, at event time `now`.
    pub fn delayed(&self, patient: u64, admission_event_id: &str, now: &str) -> Context {
        let state = self.patients.get(&patient);
        let place = state.and_then(|s| s.placement.as_ref());
        let event = CtxEvent {
            event_id: admission_event_id.to_owned(),
            event_type: EventType::Admission.as_str().to_owned(),
            event_timestamp: place
                .and_then(|p| p.admission_time.as_ref())
                .map(format_time)
                .unwrap_or_default(),
            hospital_id: place.map(|p| p.hospital),
            department: place.map(|p| p.department.clone()),
            admission_time: place
                .and_then(|p| p.admission_time.as_ref())
                .map(format_time),
            ..CtxEvent::default()
        };
        let recent = state
            .map(|s| s.readings.iter().map(|(_, r)| r.clone()).collect())
            .unwrap_or_default();
        let last = state
            .and_then(|s| s.last_discharge.as_ref())
            .map(format_time);
        self.context(patient, event, recent, last, now.to_owned())
    }

    fn context(
        &self,
        patient: u64,
        event: CtxEvent,
        recent_vitals: Vec<CtxReading>,
        last_discharge_time: Option<String>,
        now: String,
    ) -> Context {
        let place = self
            .patients
            .get(&patient)
            .and_then(|s| s.placement.as_ref())
            .filter(|p| !p.discharged);
        let department = place.map(|p| {
            let occupied = self
                .occupied
                .get(&(p.hospital, p.department.clone()))
                .copied()
                .unwrap_or(0);
            let capacity = crate::model::Department::from_canonical(&p.department)
                .and_then(|d| {
                    u16::try_from(p.hospital)
                        .ok()
                        .and_then(|h| self.network.capacity(h, d))
                })
                .map_or(0, |c| i64::from(c.bed_capacity));
            CtxDepartment {
                hospital_id: Some(p.hospital),
                department: Some(p.department.clone()),
                occupied,
                bed_capacity: capacity,
                occupancy_pct: if capacity > 0 {
                    100.0 * occupied as f64 / capacity as f64
                } else {
                    0.0
                },
            }
        });
        Context {
            event,
            patient: CtxPatient {
                patient: patient_ref(patient),
                admitted: place.is_some(),
                hospital_id: place.map(|p| p.hospital),
                department: place.map(|p| p.department.clone()),
                admission_time: place
                    .and_then(|p| p.admission_time.as_ref())
                    .map(format_time),
                age: place.and_then(|p| p.age),
                gender: place.and_then(|p| p.gender.clone()),
                recent_vitals,
                last_discharge_time,
            },
            department: department.unwrap_or_default(),
            now,
        }
    }
}
