//! FHIR R4 (JSON): Encounter, vital-signs Observation, Patient, and Bundles of them.
//!
//! An Encounter is a state that changes; the event model wants movements. The mapping keeps,
//! per open encounter, where the patient lies (so that `in-progress` at a new location is a
//! TRANSFER, and the same location again is no event), and per patient the gender and birth
//! date of the last Patient resource (so that events carry gender and an age at event time).
//! Both are small: one entry per open encounter (dropped when it finishes or is cancelled) and
//! one per patient seen in a Patient resource, keyed by pseudonym key.

use std::collections::HashMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::hl7v2::age_at;
use super::{hospital_number, loinc_vital, set_vital, Census, Decoded, FormatError, Place};
use crate::model::{format_time, parse_time, Event, Pseudonymiser, Timestamp, Vitals};

/// What the mapping remembers between resources.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    #[serde(skip)]
    pseudonyms: Option<Pseudonymiser>,
    /// Open encounters (in progress) by a keyed digest of their logical id (which may hold an
    /// MRN, and this map goes into checkpoints): the patient's key and their place.
    encounters: HashMap<String, (u64, Place)>,
    /// Gender (model code) and birth date per patient key, from Patient resources.
    patients: HashMap<u64, (Option<String>, Option<NaiveDate>)>,
}

impl State {
    pub fn new(pseudonyms: Option<Pseudonymiser>) -> Self {
        State {
            pseudonyms,
            ..State::default()
        }
    }

    pub(super) fn set_pseudonyms(&mut self, pseudonyms: Option<Pseudonymiser>) {
        self.pseudonyms = pseudonyms;
    }

    /// How an encounter's logical id is kept: a keyed digest, never the id itself.
    fn encounter_key(&self, id: &str) -> String {
        super::derived_id(self.pseudonyms.as_ref(), "Encounter", id)
    }

    fn key(&self, patient: &str) -> u64 {
        super::patient_key(self.pseudonyms.as_ref(), patient)
    }
}

/// Maps one payload (a resource or a Bundle) onto events. A Bundle's Patients are read first,
/// then its Encounters, then its Observations; vital-signs Observations of one patient at one
/// time are one reading (one VITALS event). Entries that cannot be taken are rejected one by
/// one; the rest of the Bundle goes on.
pub fn to_events(payload: &[u8], state: &mut State, census: &mut Census) -> Vec<Decoded> {
    let root: Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => {
            return vec![reject(
                FormatError::Fhir(format!("not JSON: {e}")),
                String::from_utf8_lossy(payload).into_owned(),
            )]
        }
    };
    let mut resources: Vec<Value> = Vec::new();
    let mut out = Vec::new();
    let mut whole = false;
    match root.get("resourceType").and_then(Value::as_str) {
        Some("Bundle") => {
            let kind = root.get("type").and_then(Value::as_str).unwrap_or_default();
            if !matches!(
                kind,
                "transaction"
                    | "batch"
                    | "collection"
                    | "message"
                    | "searchset"
                    | "history"
                    | "transaction-response"
                    | "batch-response"
            ) {
                return vec![reject(
                    FormatError::Fhir(format!("Bundle.type {kind:?} is not a known bundle type")),
                    String::from_utf8_lossy(payload).into_owned(),
                )];
            }
            // A Bundle that holds nothing to take is a dead letter, not silence: a sender whose
            // Bundles lost their entries must see it.
            let entries = match root.get("entry") {
                Some(Value::Array(entries)) if !entries.is_empty() => entries,
                Some(Value::Array(_)) | None => {
                    return vec![reject(
                        FormatError::Fhir("Bundle without entries".into()),
                        String::from_utf8_lossy(payload).into_owned(),
                    )]
                }
                Some(_) => {
                    return vec![reject(
                        FormatError::Fhir("Bundle.entry is not an array".into()),
                        String::from_utf8_lossy(payload).into_owned(),
                    )]
                }
            };
            for entry in entries {
                match entry.get("resource") {
                    Some(r) => resources.push(r.clone()),
                    None => out.push(reject(
                        FormatError::Fhir("Bundle entry without a resource".into()),
                        entry.to_string(),
                    )),
                }
            }
        }
        Some(_) => {
            // A lone resource refused is kept as received, byte for byte, for a replay.
            whole = true;
            resources.push(root)
        }
        None => {
            return vec![reject(
                FormatError::Fhir("no resourceType".into()),
                String::from_utf8_lossy(payload).into_owned(),
            )]
        }
    }
    let kind_of = |r: &Value| {
        r.get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let order = |k: &str| match k {
        "Patient" => 0,
        "Encounter" => 1,
        _ => 2,
    };
    resources.sort_by_key(|r| order(&kind_of(r)));
    let mut readings: Vec<(String, Timestamp, String, Vitals, Option<Place>)> = Vec::new();
    for r in resources {
        let kind = kind_of(&r);
        let result = match kind.as_str() {
            "Patient" => patient(&r, state),
            "Encounter" => encounter(&r, state, census),
            "Observation" => observation(&r, state, census).map(|reading| {
                merge_reading(&mut readings, reading);
                Vec::new()
            }),
            "MessageHeader" => Ok(Vec::new()),
            other => Err(FormatError::Unsupported(format!(
                "FHIR resource type {other:?}"
            ))),
        };
        match result {
            Ok(events) => out.extend(events.into_iter().map(|e| Decoded::Event(Box::new(e)))),
            Err(e) if whole => out.push(reject(e, String::from_utf8_lossy(payload).into_owned())),
            Err(e) => out.push(reject(e, r.to_string())),
        }
    }
    for (patient, at, id, vitals, place) in readings {
        let mut e = Event {
            event_id: super::derived_id(
                state.pseudonyms.as_ref(),
                "fhir",
                &format!("Observation/{id}"),
            ),
            event_type: Some("VITALS".into()),
            event_timestamp: at,
            patient_id: Some(patient.clone()),
            vitals: Some(vitals),
            ..Event::default()
        };
        let place = place.or_else(|| census.place_of(&patient).cloned());
        if let Some(p) = place {
            e.hospital_id = p.hospital_id;
            e.department = p.department;
            e.bed_id = p.bed_id;
        }
        demographics(&mut e, state);
        out.push(Decoded::Event(Box::new(e)));
    }
    out
}

fn reject(error: FormatError, part: String) -> Decoded {
    Decoded::Rejected { error, part }
}

fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_str().map(str::trim).filter(|s| !s.is_empty())
}

fn time(v: &Value, path: &[&str]) -> Result<Option<Timestamp>, FormatError> {
    match text(v, path) {
        None => Ok(None),
        Some(s) => parse_time(s).map(Some).ok_or_else(|| {
            FormatError::Fhir(format!("{} is not a dateTime: {s:?}", path.join(".")))
        }),
    }
}

/// The logical id in a reference (`Patient/123` → `123`), or the identifier's value.
fn reference_id(v: Option<&Value>) -> Option<String> {
    let v = v?;
    if let Some(r) = text(v, &["reference"]) {
        let id = r.rsplit('/').next().unwrap_or(r);
        if !id.is_empty() {
            return Some(id.to_owned());
        }
    }
    text(v, &["identifier", "value"]).map(str::to_owned)
}

/// Remembers a Patient's gender and birth date for the events that follow. A Patient already
/// known whose demographics changed is also a `PATIENT_UPDATE` at its `meta.lastUpdated`
/// (without that time there is no moment to date it by, and only later events take it).
fn patient(r: &Value, state: &mut State) -> Result<Vec<Event>, FormatError> {
    let id = text(r, &["id"]).ok_or_else(|| FormatError::Fhir("Patient without id".into()))?;
    let gender = text(r, &["gender"]).map(|g| {
        match g {
            "male" => "M",
            "female" => "F",
            "other" => "O",
            _ => "U",
        }
        .to_owned()
    });
    let born =
        match text(r, &["birthDate"]) {
            None => None,
            Some(s) => Some(birth_date(s).ok_or_else(|| {
                FormatError::Fhir(format!("Patient.birthDate is not a date: {s:?}"))
            })?),
        };
    let key = state.key(id);
    let changed = state
        .patients
        .get(&key)
        .is_some_and(|known| *known != (gender.clone(), born));
    state.patients.insert(key, (gender.clone(), born));
    if !changed {
        return Ok(Vec::new());
    }
    // Only a change needs the time; a bad one leaves the change to the later events.
    let Ok(Some(at)) = time(r, &["meta", "lastUpdated"]) else {
        return Ok(Vec::new());
    };
    Ok(vec![Event {
        event_id: super::derived_id(
            state.pseudonyms.as_ref(),
            "fhir",
            &format!("Patient/{id}/{}", format_time(&at)),
        ),
        event_type: Some("PATIENT_UPDATE".into()),
        event_timestamp: at,
        patient_id: Some(id.to_owned()),
        gender,
        age: born.map(|b| age_at(b, &at)),
        ..Event::default()
    }])
}

/// A FHIR date (`YYYY`, `YYYY-MM` or `YYYY-MM-DD`); partial dates take the first day.
fn birth_date(s: &str) -> Option<NaiveDate> {
    let mut parts = s.split('-');
    let y: i32 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next().map_or(Some(1), |p| p.parse().ok())?;
    let d: u32 = parts.next().map_or(Some(1), |p| p.parse().ok())?;
    NaiveDate::from_ymd_opt(y, m, d)
}

fn demographics(e: &mut Event, state: &State) {
    let Some(patient) = e.patient_id.as_deref() else {
        return;
    };
    if let Some((gender, born)) = state.patients.get(&state.key(patient)) {
        e.gender = gender.clone();
        e.age = born.map(|b| age_at(b, &e.event_timestamp));
    }
}

/// The location entries of an Encounter that are current (status `active`, or no status).
/// The ward is the one with physicalType `wa` (or else the first current one), the bed the
/// one with `bd`.
fn place_of(r: &Value) -> Option<(Place, Option<Timestamp>)> {
    let hospital = r.get("serviceProvider").and_then(|s| {
        text(s, &["identifier", "value"])
            .and_then(hospital_number)
            .or_else(|| text(s, &["reference"]).and_then(hospital_number))
    });
    let locations = r.get("location").and_then(Value::as_array)?;
    let current: Vec<&Value> = locations
        .iter()
        .filter(|l| matches!(text(l, &["status"]), None | Some("active")))
        .collect();
    let physical = |l: &Value| {
        l.get("physicalType")
            .and_then(|p| p.get("coding"))
            .and_then(Value::as_array)
            .and_then(|c| c.iter().find_map(|c| text(c, &["code"])))
            .map(str::to_owned)
    };
    let name = |l: &Value| {
        text(l, &["location", "display"])
            .map(str::to_owned)
            .or_else(|| reference_id(l.get("location")))
    };
    let ward = current
        .iter()
        .find(|l| physical(l).as_deref() == Some("wa"))
        .or_else(|| {
            current
                .iter()
                .find(|l| !matches!(physical(l).as_deref(), Some("bd" | "ro")))
        })?;
    let bed = current
        .iter()
        .find(|l| physical(l).as_deref() == Some("bd"))
        .and_then(|l| name(l));
    let since = text(ward, &["period", "start"]).and_then(parse_time);
    Some((
        Place {
            hospital_id: hospital,
            department: name(ward),
            bed_id: bed,
        },
        since,
    ))
}

/// v3-ActPriority codes (and `hospitalization.admitSource` `emd`) to the model's priority.
fn priority(r: &Value) -> Option<&'static str> {
    let code = r
        .get("priority")
        .and_then(|p| p.get("coding"))
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find_map(|c| text(c, &["code"])));
    match code {
        Some("EM" | "S" | "CS" | "EM-URG") => Some("Emergency"),
        Some("UR" | "A" | "CR" | "PRN") => Some("Urgent"),
        Some("EL" | "R" | "RR" | "P") => Some("Elective"),
        _ => {
            let source = r
                .get("hospitalization")
                .and_then(|h| h.get("admitSource"))
                .and_then(|s| s.get("coding"))
                .and_then(Value::as_array)
                .and_then(|c| c.iter().find_map(|c| text(c, &["code"])));
            (source == Some("emd")).then_some("Emergency")
        }
    }
}

fn first_code(v: Option<&Value>) -> Option<String> {
    let list = v?.as_array()?;
    list.iter().find_map(|c| {
        c.get("coding")
            .and_then(Value::as_array)
            .and_then(|codes| codes.iter().find_map(|c| text(c, &["code"])))
            .map(str::to_owned)
    })
}

fn encounter(r: &Value, state: &mut State, census: &mut Census) -> Result<Vec<Event>, FormatError> {
    let id = text(r, &["id"]).ok_or_else(|| FormatError::Fhir("Encounter without id".into()))?;
    let status =
        text(r, &["status"]).ok_or_else(|| FormatError::Fhir("Encounter without status".into()))?;
    let patient = reference_id(r.get("subject"))
        .ok_or_else(|| FormatError::Fhir("Encounter without subject".into()))?;
    let start = time(r, &["period", "start"])?;
    let end = time(r, &["period", "end"])?;
    let updated = time(r, &["meta", "lastUpdated"])?;
    let located = place_of(r);
    let encounter_key = state.encounter_key(id);
    let open = state.encounters.get(&encounter_key).cloned();
    let patient_key = state.key(&patient);
    let (event_type, at, place) = match status {
        "in-progress" => {
            let Some((place, since)) = located else {
                return Err(FormatError::Fhir(
                    "Encounter in-progress without a current location".into(),
                ));
            };
            let kind = match &open {
                None => "ADMISSION",
                // A resource that names no bed keeps the bed it had.
                Some((_, before))
                    if before.hospital_id != place.hospital_id
                        || before.department != place.department
                        || place
                            .bed_id
                            .as_ref()
                            .is_some_and(|b| before.bed_id.as_ref() != Some(b)) =>
                {
                    "TRANSFER"
                }
                Some(_) => return Ok(Vec::new()),
            };
            // The time the patient came to this location; the admission's own start is
            // `admission_time`.
            let at = match kind {
                "ADMISSION" => since.or(start).or(updated),
                _ => since.or(updated),
            }
            .ok_or_else(|| FormatError::Fhir("Encounter without a time".into()))?;
            state
                .encounters
                .insert(encounter_key, (patient_key, place.clone()));
            (kind, at, place)
        }
        "finished" => {
            let place = located
                .map(|(p, _)| p)
                .or_else(|| open.as_ref().map(|(_, p)| p.clone()))
                .unwrap_or_default();
            let at = end
                .or(updated)
                .ok_or_else(|| FormatError::Fhir("Encounter finished without period.end".into()))?;
            state.encounters.remove(&encounter_key);
            ("DISCHARGE", at, place)
        }
        "cancelled" | "entered-in-error" => {
            let Some((_, place)) = state.encounters.remove(&encounter_key) else {
                return Ok(Vec::new());
            };
            let at = updated
                .or(start)
                .ok_or_else(|| FormatError::Fhir("cancelled Encounter without a time".into()))?;
            ("CANCEL_ADMISSION", at, place)
        }
        "planned" | "arrived" | "triaged" | "onleave" | "unknown" => return Ok(Vec::new()),
        other => {
            return Err(FormatError::Fhir(format!(
                "Encounter.status {other:?} is not an R4 status"
            )))
        }
    };
    let mut e = Event {
        event_id: super::derived_id(
            state.pseudonyms.as_ref(),
            "fhir",
            &format!("Encounter/{id}:{event_type}:{}", format_time(&at)),
        ),
        event_type: Some(event_type.to_owned()),
        event_timestamp: at,
        patient_id: Some(patient.clone()),
        hospital_id: place.hospital_id,
        department: place.department.clone(),
        bed_id: place.bed_id.clone(),
        admission_time: start,
        discharge_time: if event_type == "DISCHARGE" { end } else { None },
        admission_priority: priority(r).map(str::to_owned),
        diagnosis_code: first_code(r.get("reasonCode")),
        ..Event::default()
    };
    let mut extra = Map::new();
    if let Some(class) = text(r, &["class", "code"]) {
        extra.insert("encounter_class".into(), Value::from(class));
    }
    if let Some(d) = r
        .get("hospitalization")
        .and_then(|h| h.get("dischargeDisposition"))
        .and_then(|d| d.get("coding"))
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find_map(|c| text(c, &["code"])))
    {
        extra.insert("discharge_disposition".into(), Value::from(d));
    }
    e.extra = extra;
    demographics(&mut e, state);
    census.observe(&patient, event_type, Some(&place));
    Ok(vec![e])
}

/// One vital-signs Observation: the patient, the time, the id, the values, and its
/// encounter's place when the encounter is open.
type Reading = (String, Timestamp, String, Vitals, Option<Place>);

fn observation(r: &Value, state: &State, _census: &Census) -> Result<Reading, FormatError> {
    let id = text(r, &["id"]).unwrap_or("anonymous");
    match text(r, &["status"]) {
        Some("final" | "amended" | "corrected" | "preliminary" | "registered") | None => {}
        Some(other) => {
            return Err(FormatError::Unsupported(format!(
                "Observation with status {other:?}"
            )))
        }
    }
    let vital_sign = r
        .get("category")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("coding").and_then(Value::as_array))
        .flatten()
        .any(|c| text(c, &["code"]) == Some("vital-signs"));
    if !vital_sign {
        return Err(FormatError::Unsupported(
            "Observation outside the vital-signs category".into(),
        ));
    }
    let patient = reference_id(r.get("subject"))
        .ok_or_else(|| FormatError::Fhir("Observation without subject".into()))?;
    let at = time(r, &["effectiveDateTime"])?
        .or(time(r, &["effectiveInstant"])?)
        .or(time(r, &["effectivePeriod", "start"])?)
        .or(time(r, &["issued"])?)
        .ok_or_else(|| FormatError::Fhir("Observation without an effective time".into()))?;
    let mut vitals = Vitals::default();
    let mut any = false;
    let mut take = |coded: &Value| -> Result<(), FormatError> {
        let codes = coded
            .get("code")
            .and_then(|c| c.get("coding"))
            .and_then(Value::as_array);
        let slot = codes
            .into_iter()
            .flatten()
            .filter(|c| text(c, &["system"]).is_none_or(|s| s == "http://loinc.org"))
            .find_map(|c| text(c, &["code"]).and_then(loinc_vital));
        let (Some(slot), Some(q)) = (slot, coded.get("valueQuantity")) else {
            return Ok(());
        };
        let value = q
            .get("value")
            .and_then(Value::as_f64)
            .ok_or_else(|| FormatError::Fhir("valueQuantity without a numeric value".into()))?;
        let unit = text(q, &["code"])
            .or(text(q, &["unit"]))
            .unwrap_or_default();
        set_vital(&mut vitals, slot, value, unit);
        any = true;
        Ok(())
    };
    take(r)?;
    for component in r
        .get("component")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        take(component)?;
    }
    if !any {
        return Err(FormatError::Unsupported(
            "vital-signs Observation without a LOINC code and value the model knows".into(),
        ));
    }
    let place = reference_id(r.get("encounter"))
        .and_then(|enc| state.encounters.get(&state.encounter_key(&enc)))
        .map(|(_, p)| p.clone());
    Ok((patient, at, id.to_owned(), vitals, place))
}

/// Adds a reading to the one of the same patient and time, or starts a new one.
fn merge_reading(readings: &mut Vec<Reading>, (patient, at, id, v, place): Reading) {
    if let Some(r) = readings.iter_mut().find(|r| r.0 == patient && r.1 == at) {
        let m = &mut r.3;
        m.heart_rate = v.heart_rate.or(m.heart_rate);
        m.bp_systolic = v.bp_systolic.or(m.bp_systolic);
        m.bp_diastolic = v.bp_diastolic.or(m.bp_diastolic);
        m.temperature_c = v.temperature_c.or(m.temperature_c);
        m.oxygen_saturation = v.oxygen_saturation.or(m.oxygen_saturation);
        m.respiratory_rate = v.respiratory_rate.or(m.respiratory_rate);
        if r.4.is_none() {
            r.4 = place;
        }
    } else {
        readings.push((patient, at, id, v, place));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(decoded: Vec<Decoded>) -> (Vec<Event>, Vec<FormatError>) {
        let mut ev = Vec::new();
        let mut errs = Vec::new();
        for d in decoded {
            match d {
                Decoded::Event(e) => ev.push(*e),
                Decoded::Rejected { error, .. } => errs.push(error),
            }
        }
        (ev, errs)
    }

    #[test]
    fn a_bundle_admits_transfers_and_measures() {
        let mut state = State::new(None);
        let mut census = Census::default();
        let bundle = r#"{"resourceType":"Bundle","type":"transaction","entry":[
          {"resource":{"resourceType":"Encounter","id":"E1","status":"in-progress",
            "class":{"code":"IMP"},"subject":{"reference":"Patient/P1"},
            "period":{"start":"2026-03-02T08:00:00Z"},
            "priority":{"coding":[{"code":"EM"}]},
            "reasonCode":[{"coding":[{"system":"http://hl7.org/fhir/sid/icd-10","code":"I21.4"}]}],
            "serviceProvider":{"reference":"Organization/hospital-3"},
            "location":[{"location":{"display":"ICU"},"physicalType":{"coding":[{"code":"wa"}]},"period":{"start":"2026-03-02T08:00:00Z"}},
                        {"location":{"display":"H3-ICU-4"},"physicalType":{"coding":[{"code":"bd"}]}}]}},
          {"resource":{"resourceType":"Patient","id":"P1","gender":"female","birthDate":"1950-06-01"}},
          {"resource":{"resourceType":"Observation","id":"O1","status":"final",
            "category":[{"coding":[{"code":"vital-signs"}]}],
            "code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}]},
            "subject":{"reference":"Patient/P1"},"encounter":{"reference":"Encounter/E1"},
            "effectiveDateTime":"2026-03-02T09:00:00Z",
            "component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"valueQuantity":{"value":120,"code":"mm[Hg]"}},
                         {"code":{"coding":[{"system":"http://loinc.org","code":"8462-4"}]},"valueQuantity":{"value":80,"code":"mm[Hg]"}}]}},
          {"resource":{"resourceType":"Observation","id":"O2","status":"final",
            "category":[{"coding":[{"code":"vital-signs"}]}],
            "code":{"coding":[{"system":"http://loinc.org","code":"8310-5"}]},
            "subject":{"reference":"Patient/P1"},
            "effectiveDateTime":"2026-03-02T09:00:00Z","valueQuantity":{"value":98.6,"code":"[degF]"}}},
          {"resource":{"resourceType":"Practitioner","id":"D1"}}]}"#;
        let (ev, errs) = events(to_events(bundle.as_bytes(), &mut state, &mut census));
        assert_eq!(errs.len(), 1, "the Practitioner is not used: {errs:?}");
        assert_eq!(ev.len(), 2, "{ev:?}");
        let adm = &ev[0];
        assert_eq!(adm.event_type.as_deref(), Some("ADMISSION"));
        assert_eq!(adm.hospital_id, Some(3));
        assert_eq!(adm.department.as_deref(), Some("ICU"));
        assert_eq!(adm.bed_id.as_deref(), Some("H3-ICU-4"));
        assert_eq!(adm.gender.as_deref(), Some("F"));
        assert_eq!(adm.age, Some(75));
        assert_eq!(adm.admission_priority.as_deref(), Some("Emergency"));
        assert_eq!(adm.diagnosis_code.as_deref(), Some("I21.4"));
        let vit = &ev[1];
        assert_eq!(vit.event_type.as_deref(), Some("VITALS"));
        assert_eq!(vit.department.as_deref(), Some("ICU"));
        let v = vit.vitals.as_ref().expect("vitals");
        assert_eq!((v.bp_systolic, v.bp_diastolic), (Some(120.0), Some(80.0)));
        assert!((v.temperature_c.unwrap_or_default() - 37.0).abs() < 1e-9);

        // The same location again is no event; a new one is a transfer; finished discharges.
        let at = |status: &str, ward: &str, extra: &str| {
            format!(
                r#"{{"resourceType":"Encounter","id":"E1","status":"{status}","subject":{{"reference":"Patient/P1"}},
                "period":{{"start":"2026-03-02T08:00:00Z"{extra}}},"serviceProvider":{{"reference":"Organization/3"}},
                "location":[{{"location":{{"display":"{ward}"}},"period":{{"start":"2026-03-03T08:00:00Z"}}}}]}}"#
            )
        };
        let (ev, _) = events(to_events(
            at("in-progress", "ICU", "").as_bytes(),
            &mut state,
            &mut census,
        ));
        assert!(ev.is_empty());
        let (ev, _) = events(to_events(
            at("in-progress", "Cardiology", "").as_bytes(),
            &mut state,
            &mut census,
        ));
        assert_eq!(ev[0].event_type.as_deref(), Some("TRANSFER"));
        assert_eq!(
            ev[0].event_timestamp.to_rfc3339(),
            "2026-03-03T08:00:00+00:00"
        );
        let (ev, _) = events(to_events(
            at("finished", "Cardiology", r#","end":"2026-03-05T10:00:00Z""#).as_bytes(),
            &mut state,
            &mut census,
        ));
        assert_eq!(ev[0].event_type.as_deref(), Some("DISCHARGE"));
        assert!(ev[0].discharge_time.is_some() && ev[0].admission_time.is_some());
    }

    #[test]
    fn invalid_resources_are_rejected_with_a_reason() {
        let mut state = State::new(None);
        let mut census = Census::default();
        let (_, errs) = events(to_events(b"{not json", &mut state, &mut census));
        assert!(matches!(errs[0], FormatError::Fhir(_)));
        let (_, errs) = events(to_events(
            br#"{"resourceType":"Encounter","id":"E9","status":"in-progress","subject":{"reference":"Patient/X"}}"#,
            &mut state,
            &mut census,
        ));
        assert!(matches!(errs[0], FormatError::Fhir(_)), "{errs:?}");
        let (_, errs) = events(to_events(
            br#"{"resourceType":"Observation","id":"L1","status":"final","category":[{"coding":[{"code":"laboratory"}]}]}"#,
            &mut state,
            &mut census,
        ));
        assert!(matches!(errs[0], FormatError::Unsupported(_)));
    }
}
