//! What the rules need to know about each patient and department, kept by event time.
//!
//! The Gold dataflow answers "where is everyone now"; a rule asks "where was this patient, and
//! how full was their ward, when this event happened", together with the patient's recent
//! readings. This state answers that in O(1) per event: the latest ADT event by event time
//! places the patient (the same rule as Gold), readings of the last six hours are kept per
//! patient, and department occupancy follows the placements.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use cds_rules::{
    Context, CtxAdmission, CtxDepartment, CtxDiagnosis, CtxEvent, CtxHorizon, CtxPatient,
    CtxReading, CtxScore, CtxVitals, ImmutableString, KeptScore,
};

use super::forecast::{Forecaster, Horizon};

use crate::gold::micros;
use crate::model::{
    format_time, patient_ref, EventType, LiveNetwork, Network, NetworkView, Timestamp, Vitals,
};
use crate::silver::SilverRecord;

/// How far back `ctx.patient.recent_vitals` and `ctx.patient.scores` reach.
const RECENT_MICROS: i64 = 6 * 3600 * 1_000_000;

/// How far back `ctx.patient.admissions` and `ctx.patient.diagnoses` reach (a year and a day:
/// readmission indices look back six months to a year).
const HISTORY_MICROS: i64 = 366 * 24 * 3600 * 1_000_000;

/// At most this many admissions and this many diagnosis codes are kept per patient.
const HISTORY_ENTRIES: usize = 16;

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
    /// Admissions, newest first: (admission time, its RFC 3339 text, hospital, department,
    /// priority).
    admissions: VecDeque<(i64, String, i64, String, Option<String>)>,
    /// Distinct diagnosis codes, newest first: (time last recorded, its text, code).
    diagnoses: VecDeque<(i64, String, String)>,
}

/// The scores one `keep_score` rule computed for a patient, newest first: (event time, its
/// RFC 3339 text, score).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeptScores {
    rule: String,
    entries: VecDeque<(i64, ImmutableString, f64)>,
}

/// What of a patient's history a context shows: what the state held before the event.
#[derive(Debug, Default)]
struct History {
    recent_vitals: Vec<CtxReading>,
    last_discharge_time: Option<String>,
    scores: std::collections::BTreeMap<String, Vec<CtxScore>>,
    admissions: Vec<CtxAdmission>,
    diagnoses: Vec<CtxDiagnosis>,
}

impl PatientState {
    /// The history as a context at event time `at` sees it: entries not after `at` and within
    /// their windows behind it (`at == i64::MAX`: everything, for a delayed evoke).
    fn history(&self, scores: Option<&Vec<KeptScores>>, at: i64) -> History {
        let within = |t: i64, window: i64| t <= at && (at == i64::MAX || at - t <= window);
        History {
            recent_vitals: self
                .readings
                .iter()
                .filter(|(t, _)| within(*t, RECENT_MICROS))
                .map(|(_, r)| r.clone())
                .collect(),
            last_discharge_time: self.last_discharge.as_ref().map(format_time),
            scores: scores
                .into_iter()
                .flatten()
                .filter_map(|k| {
                    let list: Vec<CtxScore> = k
                        .entries
                        .iter()
                        .filter(|(t, _, _)| within(*t, RECENT_MICROS))
                        .map(|(_, time, score)| CtxScore {
                            time: time.clone(),
                            score: *score,
                        })
                        .collect();
                    (!list.is_empty()).then(|| (k.rule.clone(), list))
                })
                .collect(),
            admissions: self
                .admissions
                .iter()
                .filter(|a| within(a.0, HISTORY_MICROS))
                .map(|(_, time, hospital, department, priority)| CtxAdmission {
                    time: time.clone(),
                    hospital_id: Some(*hospital),
                    department: Some(department.clone()),
                    kind: None,
                    admission_priority: priority.clone(),
                })
                .collect(),
            diagnoses: self
                .diagnoses
                .iter()
                .filter(|d| within(d.0, HISTORY_MICROS))
                .map(|(_, time, code)| CtxDiagnosis {
                    time: time.clone(),
                    code: code.clone(),
                })
                .collect(),
        }
    }

    /// Keeps an admission (once per admission time), newest first.
    fn admitted_at(
        &mut self,
        time: &Timestamp,
        hospital: i64,
        department: &str,
        priority: Option<&str>,
    ) {
        let at = micros(time);
        if self.admissions.iter().any(|a| a.0 == at) {
            return;
        }
        let pos = self
            .admissions
            .iter()
            .position(|a| a.0 < at)
            .unwrap_or(self.admissions.len());
        self.admissions.insert(
            pos,
            (
                at,
                format_time(time),
                hospital,
                department.to_owned(),
                priority.map(str::to_owned),
            ),
        );
        self.admissions.truncate(HISTORY_ENTRIES);
    }

    /// Keeps a diagnosis code with the newest time it was recorded at.
    fn diagnosed(&mut self, at: i64, time: &str, code: &str) {
        if let Some(i) = self.diagnoses.iter().position(|d| d.2 == code) {
            if self.diagnoses[i].0 >= at {
                return;
            }
            self.diagnoses.remove(i);
        }
        let pos = self
            .diagnoses
            .iter()
            .position(|d| d.0 < at)
            .unwrap_or(self.diagnoses.len());
        self.diagnoses
            .insert(pos, (at, time.to_owned(), code.to_owned()));
        self.diagnoses.truncate(HISTORY_ENTRIES);
    }
}

/// Readings in a checkpoint: plain positional fields (the rule-facing shape flattens and skips
/// fields, which only self-describing formats can read back).
mod stored_readings {
    use std::collections::VecDeque;

    use cds_rules::{CtxReading, CtxVitals, ImmutableString};
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
                    r.time.to_string(),
                    [
                        v.heart_rate,
                        v.bp_systolic,
                        v.bp_diastolic,
                        v.temperature_c,
                        v.oxygen_saturation,
                        v.respiratory_rate,
                    ],
                    v.consciousness.as_ref().map(ImmutableString::to_string),
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
                    consciousness: consciousness.map(ImmutableString::from),
                    supplemental_o2,
                };
                let time = time.into();
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
    pub(super) scores: std::borrow::Cow<'a, HashMap<u64, Vec<KeptScores>>>,
    forecaster: std::borrow::Cow<'a, Forecaster>,
}

impl ContextSnapshot<'static> {
    /// The snapshots of every process of another cluster layout, taken at one position of the
    /// stream, as the snapshot of one process of this layout: the placements, readings and
    /// history every process follows alike (from the first), and the kept scores of the
    /// patients `owns` (each kept by its old owner alone).
    pub(super) fn rescaled(snapshots: Vec<Self>, owns: impl Fn(u64) -> bool) -> Option<Self> {
        let mut snapshots = snapshots.into_iter();
        let mut merged = snapshots.next()?;
        let mut scores = merged.scores.into_owned();
        for other in snapshots {
            scores.extend(other.scores.into_owned());
        }
        scores.retain(|patient, _| owns(*patient));
        merged.scores = std::borrow::Cow::Owned(scores);
        Some(merged)
    }

    /// The hospital the patient is placed in, if any.
    pub(super) fn hospital_of(&self, patient: u64) -> Option<i64> {
        let placement = self.patients.get(&patient)?.placement.as_ref()?;
        Some(placement.hospital)
    }
}

/// Per-patient and per-department state for building rule contexts.
#[derive(Debug, Clone)]
pub struct ContextState {
    network: NetworkView,
    patients: HashMap<u64, PatientState>,
    occupied: HashMap<(i64, String), i64>,
    /// Kept scores per patient, apart from [`PatientState`]: they exist only in the rules
    /// share that owns the patient (which runs the patient's rules), so a checkpoint gathers
    /// them from every share.
    scores: HashMap<u64, Vec<KeptScores>>,
    /// Occupancy forecasts, learned from the placements (the same in every share).
    forecaster: Forecaster,
    /// Departments whose occupancy changed since [`ContextState::take_touched`].
    touched: Vec<(i64, String)>,
    /// Whether forecasts are made (not in a process that sees only some patients).
    forecasts: bool,
}

/// The rule-facing copy of a forecast horizon.
fn ctx_horizon(h: &Horizon) -> CtxHorizon {
    CtxHorizon {
        hours: i64::from(h.hours),
        expected: h.expected,
        p10: h.p10,
        p90: h.p90,
        p_over_capacity: h.p_over_capacity,
    }
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
        consciousness: v.consciousness.as_deref().map(ImmutableString::from),
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
            network: NetworkView::fixed(network),
            patients: HashMap::new(),
            occupied: HashMap::new(),
            scores: HashMap::new(),
            forecaster: Forecaster::default(),
            touched: Vec::new(),
            forecasts: true,
        }
    }

    /// Makes no forecasts (see [`super::RulesStage::without_forecasts`]).
    pub fn disable_forecasts(&mut self) {
        self.forecasts = false;
    }

    /// Forgets the kept scores of the patients `keep` does not accept.
    pub fn forget_scores(&mut self, keep: impl Fn(u64) -> bool) {
        self.scores.retain(|patient, _| keep(*patient));
    }

    /// The per-patient and per-department state, for a checkpoint.
    pub fn snapshot(&self) -> ContextSnapshot<'_> {
        ContextSnapshot {
            patients: std::borrow::Cow::Borrowed(&self.patients),
            occupied: std::borrow::Cow::Borrowed(&self.occupied),
            scores: std::borrow::Cow::Borrowed(&self.scores),
            forecaster: std::borrow::Cow::Borrowed(&self.forecaster),
        }
    }

    /// Replaces the state with a checkpoint's.
    pub fn restore(&mut self, snapshot: ContextSnapshot<'static>) {
        self.patients = snapshot.patients.into_owned();
        self.occupied = snapshot.occupied.into_owned();
        self.scores = snapshot.scores.into_owned();
        self.forecaster = snapshot.forecaster.into_owned();
    }

    /// The departments whose occupancy changed since the last call.
    pub fn take_touched(&mut self) -> Vec<(i64, String)> {
        std::mem::take(&mut self.touched)
    }

    /// Every department the forecaster knows.
    pub fn forecast_wards(&self) -> Vec<(i64, String)> {
        self.forecaster.wards()
    }

    /// A department's occupancy forecast at event time `now` (µs), with its beds and the
    /// patients there now; `None` for a department without configured beds or while it learns.
    pub fn forecast(&self, ward: &(i64, String), now: i64) -> Option<(Vec<Horizon>, u32, usize)> {
        if !self.forecasts {
            return None;
        }
        let beds = self.beds(ward.0, &ward.1)?;
        Some((
            self.forecaster.forecast(ward, now, beds)?,
            beds,
            self.forecaster.present(ward),
        ))
    }

    /// Follows the network in force from now on.
    pub fn follow_network(&mut self, live: LiveNetwork) {
        self.network = NetworkView::following(live);
    }

    /// Takes the network in force if it changed (one atomic load when it did not).
    pub fn refresh_network(&mut self) {
        self.network.refresh();
    }

    /// Configured beds of a department.
    fn beds(&self, hospital: i64, department: &str) -> Option<u32> {
        self.network
            .department_named(hospital, department)
            .map(|d| d.capacity.bed_capacity)
    }

    /// Forgets the readings and kept scores of the patients `keep` does not accept (a rules
    /// share that never builds their context).
    pub fn forget_readings(&mut self, keep: impl Fn(u64) -> bool) {
        for (patient, state) in &mut self.patients {
            if !keep(*patient) {
                state.readings.clear();
            }
        }
        self.scores.retain(|patient, _| keep(*patient));
    }

    /// Every patient's kept scores (for tests that compare states).
    #[cfg(test)]
    pub(crate) fn kept_scores(&self) -> &HashMap<u64, Vec<KeptScores>> {
        &self.scores
    }

    /// A copy of the kept scores of the patients `keep` accepts (a share's own, for a
    /// checkpoint written by another share).
    pub fn scores_of(&self, keep: impl Fn(u64) -> bool) -> HashMap<u64, Vec<KeptScores>> {
        self.scores
            .iter()
            .filter(|(patient, _)| keep(**patient))
            .map(|(patient, kept)| (*patient, kept.clone()))
            .collect()
    }

    /// The kept scores with another share's added (each patient is in one share only).
    pub fn scores_with(
        &self,
        parts: impl IntoIterator<Item = HashMap<u64, Vec<KeptScores>>>,
    ) -> HashMap<u64, Vec<KeptScores>> {
        let mut all = self.scores.clone();
        for part in parts {
            all.extend(part);
        }
        all
    }

    /// Takes another share's kept scores (for the final checkpoint of the whole stage).
    pub fn adopt_scores(&mut self, scores: HashMap<u64, Vec<KeptScores>>) {
        self.scores.extend(scores);
    }

    /// Keeps the scores `keep_score` rules computed on the patient's event at `at` (event
    /// time, microseconds; each score carries its RFC 3339 text), newest first, six hours
    /// behind the newest.
    pub fn keep_scores(&mut self, patient: u64, at: i64, scores: impl Iterator<Item = KeptScore>) {
        for KeptScore {
            mlmname,
            score,
            time,
        } in scores
        {
            let kept = self.scores.entry(patient).or_default();
            let i = match kept.iter().position(|k| k.rule == mlmname) {
                Some(i) => i,
                None => {
                    kept.push(KeptScores {
                        rule: mlmname,
                        entries: VecDeque::new(),
                    });
                    kept.len() - 1
                }
            };
            let entries = &mut kept[i].entries;
            let pos = entries
                .iter()
                .position(|(t, _, _)| *t < at)
                .unwrap_or(entries.len());
            entries.insert(pos, (at, time, score));
            let newest = entries.front().map_or(at, |(t, _, _)| *t);
            while entries
                .back()
                .is_some_and(|(t, _, _)| newest - *t > RECENT_MICROS)
            {
                entries.pop_back();
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
        self.forecaster.saw(at);
        let state = self.patients.entry(patient).or_default();
        let before = want_context.then(|| state.history(self.scores.get(&patient), at));
        if let Some(code) = e.diagnosis_code.as_deref().filter(|c| !c.is_empty()) {
            state.diagnosed(at, &format_time(&e.event_timestamp), code);
        }
        if r.kind == Some(EventType::Admission) {
            state.admitted_at(
                e.admission_time.as_ref().unwrap_or(&e.event_timestamp),
                e.hospital_id.unwrap_or_default(),
                e.department.as_deref().unwrap_or_default(),
                e.admission_priority.as_deref(),
            );
        }

        match r.kind {
            Some(EventType::Vitals) => {
                if let Some(v) = e.vitals.as_ref().filter(|_| keep_readings) {
                    let reading = CtxReading {
                        time: format_time(&e.event_timestamp).into(),
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
            Some(EventType::PatientUpdate) => {
                // New demographics: the placement takes what the update states, if it is the
                // later of the two.
                if let Some(p) = state
                    .placement
                    .as_mut()
                    .filter(|p| (p.at, p.event_id.as_str()) < (at, e.event_id.as_str()))
                {
                    if e.gender.is_some() {
                        p.gender = e.gender.clone();
                    }
                    if e.age.is_some() {
                        p.age = e.age;
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
                    let was = old
                        .filter(|o| !o.discharged)
                        .map(|o| (o.hospital, o.department));
                    let is =
                        (!place.discharged).then(|| (place.hospital, place.department.clone()));
                    if was != is {
                        if let Some(ward) = &was {
                            self.forecaster.left(ward, patient, at);
                            self.touched.push(ward.clone());
                        }
                        if let Some(ward) = &is {
                            // An admission's stay began at its admission time (a patient
                            // already admitted when the feed starts has stayed a while).
                            let since = match kind {
                                EventType::Admission => {
                                    e.admission_time.as_ref().map_or(at, micros).min(at)
                                }
                                _ => at,
                            };
                            self.forecaster.entered(ward.clone(), patient, since);
                            self.touched.push(ward.clone());
                        }
                    }
                    if let Some(ward) = was {
                        *self.occupied.entry(ward).or_default() -= 1;
                    }
                    if let Some(ward) = is {
                        *self.occupied.entry(ward).or_default() += 1;
                    }
                    state.placement = Some(place);
                }
            }
            None => {}
        }
        let history = before?;
        let now = format_time(&e.event_timestamp);
        Some(self.context(patient, ctx_event(r, &now), history, now))
    }

    /// Adds the forecast of the context's department at event time `at` (µs) to
    /// `ctx.department.forecast` (the rules stage asks for it on admissions, transfers and
    /// delayed evokes: readings, most of the stream, do without).
    pub fn add_forecast(&self, ctx: &mut Context, at: i64) {
        let d = &mut ctx.department;
        let (Some(hospital), Some(department)) = (d.hospital_id, d.department.clone()) else {
            return;
        };
        if let Some((horizons, _, _)) = self.forecast(&(hospital, department), at) {
            d.forecast = horizons.iter().map(ctx_horizon).collect();
        }
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
        let history = state
            .map(|s| s.history(self.scores.get(&patient), i64::MAX))
            .unwrap_or_default();
        self.context(patient, event, history, now.to_owned())
    }

    fn context(&self, patient: u64, event: CtxEvent, history: History, now: String) -> Context {
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
            let configured = self.network.department_named(p.hospital, &p.department);
            let capacity = configured.map_or(0, |d| i64::from(d.capacity.bed_capacity));
            CtxDepartment {
                forecast: Vec::new(),
                hospital_id: Some(p.hospital),
                department: Some(p.department.clone()),
                kind: configured.map(|d| d.kind.clone()),
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
                recent_vitals: history.recent_vitals,
                last_discharge_time: history.last_discharge_time,
                scores: history.scores,
                admissions: history
                    .admissions
                    .into_iter()
                    .map(|a| CtxAdmission {
                        kind: a
                            .hospital_id
                            .zip(a.department.as_deref())
                            .and_then(|(h, d)| self.network.department_named(h, d))
                            .map(|d| d.kind.clone()),
                        ..a
                    })
                    .collect(),
                diagnoses: history.diagnoses,
            },
            department: department.unwrap_or_default(),
            now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Event;
    use crate::silver::{Outcome, Silver};

    /// Rules read the kind and beds of the hospital's own wards, and a file changed while
    /// running (the ward's beds) once the stage follows the network in force.
    #[test]
    fn rules_see_the_wards_kind_and_beds_from_the_file_in_force() {
        let header = "hospital_id,hospital_name,department,bed_capacity,staff_count,kind,aliases";
        let network = |beds: u32| {
            Network::parse(&format!(
                "{header}\n1042,Royal,Critical Care Unit,{beds},30,ICU,ITU\n1042,Royal,Renal,12,20,,\n"
            ))
            .expect("parses")
        };
        let live = LiveNetwork::new(network(8));
        let mut state = ContextState::new(network(8));
        state.follow_network(live.clone());
        let mut silver = Silver::new(network(8));
        let mut context = |state: &mut ContextState, id: &str, ward: &str| {
            let line = format!(
                r#"{{"event_id":"{id}","event_type":"ADMISSION","event_timestamp":"2026-03-02T10:00:00Z","patient_id":"P{id}","hospital_id":1042,"department":"{ward}"}}"#
            );
            let event = Event::from_json(line.as_bytes()).expect("event");
            let Outcome::Record(r) = silver.clean(event) else {
                panic!("a record")
            };
            state.refresh_network();
            state.observe(1, &r, true, true).expect("a context")
        };
        let ctx = context(&mut state, "1", "itu");
        assert_eq!(
            ctx.department.department.as_deref(),
            Some("Critical Care Unit")
        );
        assert_eq!(ctx.department.kind.as_deref(), Some("icu"));
        assert_eq!(ctx.department.bed_capacity, 8);
        live.publish(network(10));
        let ctx = context(&mut state, "2", "Renal");
        assert_eq!(
            ctx.department.kind.as_deref(),
            Some(crate::model::DEFAULT_KIND)
        );
        let ctx = context(&mut state, "3", "ITU");
        assert_eq!(ctx.department.bed_capacity, 10, "the new file's beds");
    }
}
