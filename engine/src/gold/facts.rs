//! Gold facts: the compact, interned records that enter the dataflow.
//!
//! Strings stay at the edge: hospitals are their `HospitalId` (`u32`), departments their [`DepartmentId`], categories
//! `u8`, patients the `u64` pseudonym key. Times are microseconds since the Unix epoch (event time, never arrival).

use crate::model::HospitalId;
use std::borrow::Cow;
use std::collections::HashMap;

use chrono::Datelike;
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpointed;
use crate::model::{AgeBand, DepartmentId, EventType, Gender, Priority, Pseudonymiser, Timestamp};
use crate::silver::SilverRecord;

/// Event time in microseconds since the Unix epoch.
pub type Micros = i64;

/// The kind of an ADT event, ordered so that nothing depends on it but ties are total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AdtKind {
    Admission,
    Transfer,
    Discharge,
}

/// One ADMISSION, TRANSFER or DISCHARGE, keyed by patient in the dataflow.
///
/// Field order matters: the derived `Ord` sorts by event time, then event id, which is exactly
/// docs/design.md's "latest event decides; ties: larger event_id".
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AdtFact {
    pub at: Micros,
    pub event_id: String,
    pub kind: AdtKind,
    pub hospital: HospitalId,
    pub department: DepartmentId,
    pub gender: u8,
    pub age_band: u8,
}

/// Where a patient is now, with the demographics of the event that put them there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Placement {
    pub hospital: HospitalId,
    pub department: DepartmentId,
    pub gender: u8,
    pub age_band: u8,
}

/// The six numeric vitals in hundredths (exact sums), `None` where not measured or nulled by
/// Silver. Order: heart rate, systolic, diastolic, temperature °C, SpO2, respiratory rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VitalsValues(pub [Option<i32>; 6]);

/// Names of [`VitalsValues`] slots as they appear in documents (`avg_<name>`).
pub const VITAL_NAMES: [&str; 6] = [
    "heart_rate",
    "bp_systolic",
    "bp_diastolic",
    "temperature_c",
    "oxygen_saturation",
    "respiratory_rate",
];

/// A completed stay: one DISCHARGE with both times.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StayFact {
    pub hospital: HospitalId,
    pub department: DepartmentId,
    pub patient: u64,
    pub seconds: i64,
}

/// One ADMISSION, for the admissions and diagnoses KPIs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AdmissionFact {
    pub hospital: HospitalId,
    pub priority: Option<u8>,
    /// 0 = Monday, in the offset the admission time was written with.
    pub weekday: u8,
    pub diagnosis: Option<String>,
}

/// The facts of one batch for one worker.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct GoldBatch {
    pub adt: Vec<(u64, AdtFact)>,
    /// Changes to the latest reading per patient: `+1` new, `-1` the one it replaces.
    pub vitals: Vec<((u64, VitalsValues), isize)>,
    pub stays: Vec<StayFact>,
    pub admissions: Vec<AdmissionFact>,
    /// Facts taken back by a cancel (CANCEL_ADMISSION, CANCEL_DISCHARGE): each enters the
    /// dataflow with difference `-1`, so every KPI is as if the cancelled event never came.
    pub retracted: Retracted,
}

/// Facts that a cancel takes back.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Retracted {
    pub adt: Vec<(u64, AdtFact)>,
    pub stays: Vec<StayFact>,
    pub admissions: Vec<AdmissionFact>,
}

impl GoldBatch {
    pub fn is_empty(&self) -> bool {
        self.adt.is_empty()
            && self.vitals.is_empty()
            && self.stays.is_empty()
            && self.admissions.is_empty()
            && self.retracted.adt.is_empty()
            && self.retracted.stays.is_empty()
            && self.retracted.admissions.is_empty()
    }
}

/// How many ADT facts per patient the compacted state keeps: the latest decides the location,
/// the ones before it take over when a cancel retracts the latest.
const ADT_HISTORY: usize = 4;

/// What a cancel of a patient's latest admission or discharge has to take back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cancellable {
    admission: Option<(AdtFact, AdmissionFact)>,
    discharge: Option<(AdtFact, Option<StayFact>)>,
}

/// A patient's latest demographic statements of updates (HL7 ADT^A08, a changed FHIR
/// Patient): each with the event time and id that made it. A placement takes them over from
/// the movement that made it when they are later than the movement.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Demographics {
    gender: Option<((Micros, String), u8)>,
    age_band: Option<((Micros, String), u8)>,
}

impl Demographics {
    /// Takes the statements of an update at `key`; true when one of them is the newest.
    fn state(&mut self, key: &(Micros, String), gender: Option<u8>, age_band: Option<u8>) -> bool {
        let mut newer = false;
        for (slot, value) in [(&mut self.gender, gender), (&mut self.age_band, age_band)] {
            if let Some(value) = value {
                if slot.as_ref().is_none_or(|(known, _)| known < key) {
                    *slot = Some((key.clone(), value));
                    newer = true;
                }
            }
        }
        newer
    }

    /// The placement fact with the demographics of the updates later than it.
    fn restate(&self, mut fact: AdtFact) -> AdtFact {
        let later = |known: &(Micros, String)| {
            (known.0, known.1.as_str()) > (fact.at, fact.event_id.as_str())
        };
        let gender = self
            .gender
            .as_ref()
            .filter(|(k, _)| later(k))
            .map(|(_, g)| *g);
        let age_band = self
            .age_band
            .as_ref()
            .filter(|(k, _)| later(k))
            .map(|(_, b)| *b);
        if let Some(g) = gender {
            fact.gender = g;
        }
        if let Some(b) = age_band {
            fact.age_band = b;
        }
        fact
    }
}

/// Microseconds since the epoch.
pub fn micros(t: &Timestamp) -> Micros {
    t.timestamp_micros()
}

fn hundredths(x: Option<f64>) -> Option<i32> {
    x.map(|v| (v * 100.0).round() as i32)
}

/// Turns Silver records into Gold facts, keeping the latest vitals reading per patient.
///
/// "Latest reading" is decided here rather than by a `reduce` in the dataflow: a reduce would
/// keep every reading ever taken in its input arrangement, so memory would grow with history.
/// This upsert keeps one reading per patient and emits the retraction of the one it replaces;
/// a late (older) reading changes nothing, exactly as the reduce would have decided.
#[derive(Debug)]
pub struct FactBuilder {
    pseudonyms: Pseudonymiser,
    latest: HashMap<u64, (Micros, String, VitalsValues)>,
    workers: usize,
    /// What the dataflow's inputs add up to, compacted, so that a checkpoint can hand a new
    /// dataflow the same state: the latest ADT fact per patient (the location reduce decides
    /// on it alone, as every input is an insertion), and every stay and admission with its
    /// multiplicity.
    /// The latest ADT facts per patient, oldest first, at most [`ADT_HISTORY`].
    latest_adt: HashMap<u64, Vec<AdtFact>>,
    stays: HashMap<StayFact, u32>,
    admissions: HashMap<AdmissionFact, u64>,
    /// Per patient, the facts of the latest admission and discharge, for a cancel to take
    /// back: two small records per patient, whatever the length of the history.
    cancellable: HashMap<u64, Cancellable>,
    /// Per patient who had one, the latest demographic updates.
    updates: HashMap<u64, Demographics>,
}

/// The Gold inputs as a checkpoint keeps them (borrowed when written, owned when read).
#[derive(Debug, Serialize, Deserialize)]
pub struct GoldState<'a> {
    latest_vitals: Cow<'a, HashMap<u64, (Micros, String, VitalsValues)>>,
    latest_adt: Cow<'a, HashMap<u64, Vec<AdtFact>>>,
    stays: Cow<'a, HashMap<StayFact, u32>>,
    admissions: Cow<'a, HashMap<AdmissionFact, u64>>,
    cancellable: Cow<'a, HashMap<u64, Cancellable>>,
    updates: Cow<'a, HashMap<u64, Demographics>>,
}

impl GoldState<'static> {
    /// The Gold inputs of every process of another cluster layout as one process's of this
    /// layout: the facts of the patients `owns`. Admissions carry no patient (they are counted
    /// per hospital): the first process (`first`) takes them all, but for each other patient's
    /// admission that a cancel may still take back, which goes to that patient's process, so
    /// that a cancel always finds its admission where it is read.
    pub(crate) fn rescaled(states: Vec<Self>, owns: impl Fn(u64) -> bool, first: bool) -> Self {
        let mut merged = GoldState {
            latest_vitals: Cow::Owned(HashMap::new()),
            latest_adt: Cow::Owned(HashMap::new()),
            stays: Cow::Owned(HashMap::new()),
            admissions: Cow::Owned(HashMap::new()),
            cancellable: Cow::Owned(HashMap::new()),
            updates: Cow::Owned(HashMap::new()),
        };
        let mut total: HashMap<AdmissionFact, u64> = HashMap::new();
        for state in states {
            let vitals = state.latest_vitals.into_owned().into_iter();
            (merged.latest_vitals.to_mut()).extend(vitals.filter(|(p, _)| owns(*p)));
            let adt = state.latest_adt.into_owned().into_iter();
            (merged.latest_adt.to_mut()).extend(adt.filter(|(p, _)| owns(*p)));
            let updates = state.updates.into_owned().into_iter();
            (merged.updates.to_mut()).extend(updates.filter(|(p, _)| owns(*p)));
            for (stay, n) in state.stays.into_owned() {
                if owns(stay.patient) {
                    *merged.stays.to_mut().entry(stay).or_default() += n;
                }
            }
            for (admission, n) in state.admissions.into_owned() {
                *total.entry(admission).or_default() += n;
            }
            let cancellable = merged.cancellable.to_mut();
            for (patient, c) in state.cancellable.into_owned() {
                let Some((_, admission)) = &c.admission else {
                    if owns(patient) {
                        cancellable.insert(patient, c);
                    }
                    continue;
                };
                if let Some(n) = total.get_mut(admission) {
                    *n = n.saturating_sub(1);
                }
                if owns(patient) {
                    *merged
                        .admissions
                        .to_mut()
                        .entry(admission.clone())
                        .or_default() += 1;
                    cancellable.insert(patient, c);
                }
            }
        }
        if first {
            let admissions = merged.admissions.to_mut();
            for (admission, n) in total.into_iter().filter(|(_, n)| *n > 0) {
                *admissions.entry(admission).or_default() += n;
            }
        }
        merged
    }
}

/// A checkpoint keeps the compacted inputs; [`FactBuilder::restored_facts`] hands them to the
/// new dataflow.
impl Checkpointed for FactBuilder {
    type State<'a> = GoldState<'a>;

    fn snapshot(&self) -> GoldState<'_> {
        GoldState {
            latest_vitals: Cow::Borrowed(&self.latest),
            latest_adt: Cow::Borrowed(&self.latest_adt),
            stays: Cow::Borrowed(&self.stays),
            admissions: Cow::Borrowed(&self.admissions),
            cancellable: Cow::Borrowed(&self.cancellable),
            updates: Cow::Borrowed(&self.updates),
        }
    }

    fn restore(&mut self, state: GoldState<'static>) {
        self.latest = state.latest_vitals.into_owned();
        self.latest_adt = state.latest_adt.into_owned();
        self.stays = state.stays.into_owned();
        self.admissions = state.admissions.into_owned();
        self.cancellable = state.cancellable.into_owned();
        self.updates = state.updates.into_owned();
    }
}

impl FactBuilder {
    pub fn new(pseudonyms: Pseudonymiser, workers: usize) -> Self {
        FactBuilder {
            pseudonyms,
            latest: HashMap::new(),
            workers: workers.max(1),
            latest_adt: HashMap::new(),
            stays: HashMap::new(),
            admissions: HashMap::new(),
            cancellable: HashMap::new(),
            updates: HashMap::new(),
        }
    }

    /// After [`Checkpointed::restore`]: adds to `batches` the facts that bring a new, empty
    /// dataflow to the same KPIs as the run the checkpoint was taken from.
    pub fn restored_facts(&self, batches: &mut [GoldBatch]) {
        let workers = self.workers.min(batches.len()).max(1);
        let owner = |patient: u64| crate::cluster::patient_worker(patient, workers);
        for (patient, facts) in &self.latest_adt {
            if let Some(b) = batches.get_mut(owner(*patient)) {
                b.adt
                    .extend(facts.iter().map(|fact| (*patient, fact.clone())));
            }
        }
        for (patient, (_, _, values)) in &self.latest {
            if let Some(b) = batches.get_mut(owner(*patient)) {
                b.vitals.push(((*patient, *values), 1));
            }
        }
        for (stay, n) in &self.stays {
            if let Some(b) = batches.get_mut(owner(stay.patient)) {
                b.stays
                    .extend(std::iter::repeat_n(stay.clone(), *n as usize));
            }
        }
        if let Some(b) = batches.first_mut() {
            for (admission, n) in &self.admissions {
                b.admissions
                    .extend(std::iter::repeat_n(admission.clone(), *n as usize));
            }
        }
    }

    /// The patient key of a raw identifier.
    pub fn patient_key(&self, patient_id: &str) -> u64 {
        self.pseudonyms.key(patient_id)
    }

    /// What Gold reads of a record that reaches it (quarantined records and records without a
    /// type, department, hospital or patient do not).
    fn gold_fields(r: &SilverRecord) -> Option<(EventType, DepartmentId, HospitalId, &str)> {
        if r.quarantined() {
            return None;
        }
        let e = &r.event;
        if r.kind == Some(EventType::PatientUpdate) {
            // An update names a patient, not a place.
            return Some((
                EventType::PatientUpdate,
                DepartmentId::default(),
                0,
                e.patient_id.as_deref()?,
            ));
        }
        Some((
            r.kind?,
            r.department?,
            HospitalId::try_from(e.hospital_id?).ok()?,
            e.patient_id.as_deref()?,
        ))
    }

    /// The patient key of a record that would reach Gold, without adding its facts: a record
    /// of a patient whose facts another process of the cluster adds.
    pub fn key_of(&self, r: &SilverRecord) -> Option<u64> {
        Self::gold_fields(r).map(|(_, _, _, patient_id)| self.patient_key(patient_id))
    }

    /// Adds the facts of one record to the batch of the worker that owns its patient. Returns
    /// the patient key and the record's event time when it reached Gold (quarantined records
    /// do not).
    pub fn add(&mut self, r: &SilverRecord, batches: &mut [GoldBatch]) -> Option<(u64, Micros)> {
        let e = &r.event;
        let (kind, department, hospital, patient_id) = Self::gold_fields(r)?;
        let patient = self.patient_key(patient_id);
        let batch = batches.get_mut(crate::cluster::patient_worker(patient, self.workers))?;
        let at = micros(&e.event_timestamp);
        let dept = department;
        // Nearly every patient never had an update: no lookup, no copy, while none had.
        let updates = match self.updates.is_empty() {
            true => None,
            false => self.updates.get(&patient).cloned(),
        };
        let adt = |kind| {
            let fact = AdtFact {
                at,
                event_id: e.event_id.clone(),
                kind,
                hospital,
                department: dept,
                gender: Gender::parse(e.gender.as_deref()).index(),
                age_band: AgeBand::of(e.age).index(),
            };
            match &updates {
                Some(u) => u.restate(fact),
                None => fact,
            }
        };
        let adt_kind = match kind {
            EventType::Admission => Some(AdtKind::Admission),
            EventType::Transfer => Some(AdtKind::Transfer),
            EventType::Discharge => Some(AdtKind::Discharge),
            EventType::Vitals
            | EventType::CancelAdmission
            | EventType::CancelDischarge
            | EventType::PatientUpdate => None,
        };
        if let Some(k) = adt_kind {
            let fact = adt(k);
            let history = self.latest_adt.entry(patient).or_default();
            if let Err(i) = history.binary_search(&fact) {
                history.insert(i, fact);
                if history.len() > ADT_HISTORY {
                    history.remove(0);
                }
            }
        }
        match kind {
            EventType::PatientUpdate => {
                let key = (at, e.event_id.clone());
                let gender = e.gender.as_deref().map(|g| Gender::parse(Some(g)).index());
                let age_band = e.age.map(|a| AgeBand::of(Some(a)).index());
                let stated = self.updates.entry(patient).or_default();
                if stated.state(&key, gender, age_band) {
                    let stated = stated.clone();
                    self.restate(patient, &stated, batch);
                }
            }
            EventType::CancelAdmission | EventType::CancelDischarge => {
                let cancellable = self.cancellable.entry(patient).or_default();
                let (fact, stay, admission) = if kind == EventType::CancelAdmission {
                    match cancellable.admission.take() {
                        Some((fact, admission)) => (fact, None, Some(admission)),
                        None => return None,
                    }
                } else {
                    match cancellable.discharge.take() {
                        Some((fact, stay)) => (fact, stay, None),
                        None => return None,
                    }
                };
                if let Some(history) = self.latest_adt.get_mut(&patient) {
                    history.retain(|f| *f != fact);
                }
                if let Some(stay) = stay {
                    if let Some(n) = self.stays.get_mut(&stay) {
                        *n -= 1;
                        if *n == 0 {
                            self.stays.remove(&stay);
                        }
                    }
                    batch.retracted.stays.push(stay);
                }
                if let Some(admission) = admission {
                    if let Some(n) = self.admissions.get_mut(&admission) {
                        *n -= 1;
                        if *n == 0 {
                            self.admissions.remove(&admission);
                        }
                    }
                    batch.retracted.admissions.push(admission);
                }
                batch.retracted.adt.push((patient, fact));
            }
            EventType::Admission => {
                batch.adt.push((patient, adt(AdtKind::Admission)));
                let admitted = e.admission_time.unwrap_or(e.event_timestamp);
                let admission = AdmissionFact {
                    hospital,
                    priority: e
                        .admission_priority
                        .as_deref()
                        .and_then(Priority::parse)
                        .map(|p| p as u8),
                    weekday: admitted.weekday().num_days_from_monday() as u8,
                    diagnosis: e
                        .diagnosis_code
                        .as_deref()
                        .map(str::trim)
                        .filter(|c| !c.is_empty())
                        .map(str::to_owned),
                };
                *self.admissions.entry(admission.clone()).or_insert(0) += 1;
                self.remember_admission(patient, adt(AdtKind::Admission), &admission);
                batch.admissions.push(admission);
            }
            EventType::Transfer => batch.adt.push((patient, adt(AdtKind::Transfer))),
            EventType::Discharge => {
                batch.adt.push((patient, adt(AdtKind::Discharge)));
                let stay = match (e.admission_time, e.discharge_time) {
                    (Some(a), Some(d)) => {
                        let stay = StayFact {
                            hospital,
                            department: dept,
                            patient,
                            seconds: (d - a).num_seconds(),
                        };
                        *self.stays.entry(stay.clone()).or_insert(0) += 1;
                        batch.stays.push(stay.clone());
                        Some(stay)
                    }
                    _ => None,
                };
                let fact = adt(AdtKind::Discharge);
                let slot = &mut self.cancellable.entry(patient).or_default().discharge;
                if slot.as_ref().is_none_or(|(known, _)| *known < fact) {
                    *slot = Some((fact, stay));
                }
            }
            EventType::Vitals => {
                let v = e.vitals.clone().unwrap_or_default();
                let values = VitalsValues([
                    hundredths(v.heart_rate),
                    hundredths(v.bp_systolic),
                    hundredths(v.bp_diastolic),
                    hundredths(v.temperature_c),
                    hundredths(v.oxygen_saturation),
                    hundredths(v.respiratory_rate),
                ]);
                let newer = (at, e.event_id.as_str());
                match self.latest.get_mut(&patient) {
                    Some(slot) if (slot.0, slot.1.as_str()) >= newer => {}
                    Some(slot) => {
                        batch.vitals.push(((patient, slot.2), -1));
                        batch.vitals.push(((patient, values), 1));
                        *slot = (at, e.event_id.clone(), values);
                    }
                    None => {
                        batch.vitals.push(((patient, values), 1));
                        self.latest
                            .insert(patient, (at, e.event_id.clone(), values));
                    }
                }
            }
        }
        Some((patient, at))
    }

    /// Gives the patient's placement facts the demographics of newer updates: each fact that
    /// changes is retracted and inserted again, and what a cancel would take back follows.
    fn restate(&mut self, patient: u64, updates: &Demographics, batch: &mut GoldBatch) {
        let Some(history) = self.latest_adt.get_mut(&patient) else {
            return;
        };
        let cancellable = self.cancellable.entry(patient).or_default();
        for fact in history.iter_mut() {
            let restated = updates.restate(fact.clone());
            if restated == *fact {
                continue;
            }
            if let Some((f, _)) = cancellable.admission.as_mut().filter(|(f, _)| f == fact) {
                *f = restated.clone();
            }
            if let Some((f, _)) = cancellable.discharge.as_mut().filter(|(f, _)| f == fact) {
                *f = restated.clone();
            }
            batch.retracted.adt.push((patient, fact.clone()));
            batch.adt.push((patient, restated.clone()));
            *fact = restated;
        }
        history.sort();
    }

    /// Remembers a patient's admission for a later cancel, if it is their latest.
    fn remember_admission(&mut self, patient: u64, fact: AdtFact, admission: &AdmissionFact) {
        let slot = &mut self.cancellable.entry(patient).or_default().admission;
        if slot.as_ref().is_none_or(|(known, _)| *known < fact) {
            *slot = Some((fact, admission.clone()));
        }
    }
}
