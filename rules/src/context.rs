//! The `ctx` a rule sees: one Rust type, filled by the engine and read from JSON by
//! `cds rules eval --ctx`, so a fixture and production see exactly the same shape.
//!
//! Times are RFC 3339 strings (what the event model carries); rules turn them into numbers
//! with the helpers `parse_time`, `hours_between` and `minutes_between` (see the sandbox).
//! Missing values are `None` here and `()` in rhai. The texts a context repeats on every
//! event (a reading's and a kept score's time, a reading's consciousness) are rhai's shared
//! strings: the engine copies a patient's recent readings into every context, and a shared
//! string is copied by a reference count, not by its bytes, there and when a rule reads it.

use std::collections::BTreeMap;

use rhai::ImmutableString;
use serde::{Deserialize, Serialize};

/// Everything a rule may look at for one evaluation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Context {
    /// The Silver event that evoked the rules (for a delayed evoke: the ADMISSION event).
    pub event: CtxEvent,
    /// The patient's current admission and recent vitals.
    #[serde(default)]
    pub patient: CtxPatient,
    /// Occupancy of the event's (hospital, department).
    #[serde(default)]
    pub department: CtxDepartment,
    /// Event time of this evaluation (RFC 3339): the event's timestamp, or the due time of a
    /// delayed evoke. Suppression windows are measured in it, never in wall-clock time.
    pub now: String,
}

/// The Silver event (after data-quality repair), without the raw patient id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CtxEvent {
    pub event_id: String,
    /// `ADMISSION`, `DISCHARGE`, `TRANSFER` or `VITALS`.
    pub event_type: String,
    pub event_timestamp: String,
    #[serde(default)]
    pub hospital_id: Option<i64>,
    #[serde(default)]
    pub department: Option<String>,
    #[serde(default)]
    pub gender: Option<String>,
    #[serde(default)]
    pub age: Option<i64>,
    #[serde(default)]
    pub admission_time: Option<String>,
    #[serde(default)]
    pub discharge_time: Option<String>,
    #[serde(default)]
    pub admission_priority: Option<String>,
    #[serde(default)]
    pub diagnosis_code: Option<String>,
    #[serde(default)]
    pub vitals: Option<CtxVitals>,
}

/// Bedside observations (units of the event model: bpm, mmHg, Celsius, %, breaths/min).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CtxVitals {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heart_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bp_systolic: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bp_diastolic: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oxygen_saturation: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub respiratory_rate: Option<f64>,
    /// ACVPU: `A`, `C`, `V`, `P` or `U`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consciousness: Option<ImmutableString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplemental_o2: Option<bool>,
}

/// One earlier vitals reading of the patient: its event time plus the vitals fields, flat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CtxReading {
    pub time: ImmutableString,
    #[serde(flatten)]
    pub vitals: CtxVitals,
}

/// The patient's current admission as the engine knows it at `ctx.now`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CtxPatient {
    /// Pseudonymised patient key (keyed HMAC); never the raw id.
    #[serde(default)]
    pub patient: String,
    /// Whether the patient is currently admitted (located in a department).
    #[serde(default)]
    pub admitted: bool,
    #[serde(default)]
    pub hospital_id: Option<i64>,
    #[serde(default)]
    pub department: Option<String>,
    #[serde(default)]
    pub admission_time: Option<String>,
    #[serde(default)]
    pub age: Option<i64>,
    #[serde(default)]
    pub gender: Option<String>,
    /// Readings of the last 6 hours before this event, newest first (the triggering VITALS
    /// event itself is not included: it is `ctx.event.vitals`).
    #[serde(default)]
    pub recent_vitals: Vec<CtxReading>,
    /// Discharge time of the patient's previous admission, if any.
    #[serde(default)]
    pub last_discharge_time: Option<String>,
    /// Scores that rules with `keep_score: true` computed on the patient's events of the last 6
    /// hours, by rule name, newest first (`ctx.patient.scores.news2`): the earlier events', and
    /// first this event's (time `now`) when the rule ran before the reading one (rules run in
    /// file-name order).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scores: BTreeMap<String, Vec<CtxScore>>,
    /// The patient's admissions of the last year before this event, newest first (the current
    /// stay's among them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admissions: Vec<CtxAdmission>,
    /// Diagnosis codes recorded on the patient's events of the last year before this event,
    /// each once with the time it was last seen, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnoses: Vec<CtxDiagnosis>,
}

/// One score a rule computed on an earlier event (see [`CtxPatient::scores`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CtxScore {
    /// Event time of the evaluation (RFC 3339).
    pub time: ImmutableString,
    pub score: f64,
}

/// One earlier admission of the patient.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CtxAdmission {
    /// Admission time (RFC 3339).
    pub time: String,
    #[serde(default)]
    pub hospital_id: Option<i64>,
    #[serde(default)]
    pub department: Option<String>,
    /// The department's kind (`emergency`, `icu`, …), when it is still configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `Emergency`, `Urgent` or `Elective`, as the admission said.
    #[serde(default)]
    pub admission_priority: Option<String>,
}

/// One diagnosis code of the patient and when it was last recorded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CtxDiagnosis {
    pub time: String,
    pub code: String,
}

/// Occupancy of a department at `ctx.now`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CtxDepartment {
    #[serde(default)]
    pub hospital_id: Option<i64>,
    #[serde(default)]
    pub department: Option<String>,
    /// What sort of department it is, from the departments file (`icu`, `emergency`, `ward`,
    /// …; lower case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub occupied: i64,
    #[serde(default)]
    pub bed_capacity: i64,
    #[serde(default)]
    pub occupancy_pct: f64,
    /// The department's occupancy forecast at `now` (on admissions, transfers and delayed
    /// evokes, in the department the patient is placed in; empty on readings and discharges),
    /// one entry per horizon (4, 8 and 24 hours), once the department's forecast has learned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forecast: Vec<CtxHorizon>,
}

/// One horizon of an occupancy forecast: beds expected taken `hours` after `now`, the 10th and
/// 90th percentiles, and the probability of more patients than beds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CtxHorizon {
    pub hours: i64,
    pub expected: f64,
    pub p10: f64,
    pub p90: f64,
    pub p_over_capacity: f64,
}
