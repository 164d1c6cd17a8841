//! The reference: every KPI document recomputed from scratch over all Silver records, in
//! plain Rust that follows docs/design.md's KPI definitions literally and shares nothing with the
//! incremental dataflow ([`super::build`]).
//!
//! Two users: the integration tests, whose oracle it is (the incremental output must equal it
//! after every batch), and the benchmarks, where it is the scheduled micro-batch job the
//! engine is compared with. It is deliberately straightforward (hash maps over the records,
//! then the documents), not a strawman: one pass over the data, no JSON in the inner loop.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::model::{
    patient_ref, AgeBand, EventType, Gender, Network, Priority, Pseudonymiser, WEEKDAYS,
};
use crate::silver::SilverRecord;
use chrono::Datelike;
use serde_json::{json, Value};

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn hundredths(x: Option<f64>) -> Option<i64> {
    x.map(|v| (v * 100.0).round() as i64)
}

/// Every KPI document by id (without `as_of` / `updated_at`), recomputed from scratch over
/// all Silver records so far: plain Rust following docs/design.md literally, independent of the
/// engine's Gold code (the same logic as the integration tests' oracle).
pub fn recompute(
    network: &Network,
    ps: &Pseudonymiser,
    records: &[SilverRecord],
) -> BTreeMap<String, Value> {
    // Demographic updates: per patient, the updates with what they state.
    let mut updates: HashMap<&str, Vec<&SilverRecord>> = HashMap::new();
    for r in records.iter().filter(|r| !r.quarantined()) {
        if let (Some(EventType::PatientUpdate), Some(p)) = (r.kind, r.event.patient_id.as_deref()) {
            updates.entry(p).or_default().push(r);
        }
    }
    let gold: Vec<&SilverRecord> = records
        .iter()
        .filter(|r| !r.quarantined())
        .filter(|r| r.kind != Some(EventType::PatientUpdate))
        .filter(|r| {
            r.kind.is_some()
                && r.department.is_some()
                && r.event.hospital_id.is_some()
                && r.event.patient_id.is_some()
        })
        .collect();
    let key = |r: &SilverRecord| (r.event.event_timestamp, r.event.event_id.clone());
    let mut docs = BTreeMap::new();

    // Location: the latest ADT event per patient decides.
    let mut latest_adt: HashMap<&str, &SilverRecord> = HashMap::new();
    let mut latest_vitals: HashMap<&str, &SilverRecord> = HashMap::new();
    for r in &gold {
        let p = r.event.patient_id.as_deref().unwrap_or_default();
        let slot = if r.kind == Some(EventType::Vitals) {
            &mut latest_vitals
        } else {
            &mut latest_adt
        };
        if slot.get(p).is_none_or(|old| key(old) < key(r)) {
            slot.insert(p, r);
        }
    }
    // A placement's gender and age: those of the latest update after its event that states
    // them, else the event's own.
    let demographics = |p: &str, r: &SilverRecord| {
        let later: Vec<&&SilverRecord> = updates
            .get(p)
            .map(|u| u.iter().filter(|u| key(u) > key(r)).collect())
            .unwrap_or_default();
        let newest = |stated: &dyn Fn(&SilverRecord) -> bool| {
            later
                .iter()
                .filter(|u| stated(u))
                .max_by_key(|u| key(u))
                .map(|u| **u)
        };
        let gender = newest(&|u| u.event.gender.is_some())
            .map_or(r.event.gender.as_deref(), |u| u.event.gender.as_deref());
        let age = newest(&|u| u.event.age.is_some()).map_or(r.event.age, |u| u.event.age);
        (Gender::parse(gender).name(), AgeBand::of(age).label())
    };
    let located: Vec<(&str, &SilverRecord)> = latest_adt
        .iter()
        .filter(|(_, r)| r.kind != Some(EventType::Discharge))
        .map(|(p, r)| (*p, *r))
        .collect();
    // The department as Silver spelled it (the configured name).
    fn place(r: &SilverRecord) -> (i64, &str) {
        (
            r.event.hospital_id.unwrap_or_default(),
            r.event.department.as_deref().unwrap_or_default(),
        )
    }

    for (h, d) in network.departments() {
        let cap = d.capacity;
        let here: Vec<(&str, &SilverRecord)> = located
            .iter()
            .filter(|(_, r)| place(r) == (i64::from(h), d.name.as_str()))
            .copied()
            .collect();
        let mut by_gender = json!({"M": 0, "F": 0, "O": 0, "U": 0});
        let mut by_age =
            json!({"0-17": 0, "18-39": 0, "40-64": 0, "65-79": 0, "80+": 0, "unknown": 0});
        for (p, r) in &here {
            let (g, b) = demographics(p, r);
            by_gender[g] = json!(by_gender[g].as_i64().unwrap_or(0) + 1);
            by_age[b] = json!(by_age[b].as_i64().unwrap_or(0) + 1);
        }
        let n = here.len() as f64;
        docs.insert(
            format!("occupancy:{h}:{}", d.name.as_str()),
            json!({"type": "occupancy", "hospital_id": h, "department": d.name.as_str(), "occupied": here.len(),
                   "bed_capacity": cap.bed_capacity, "occupancy_pct": round2(100.0 * n / f64::from(cap.bed_capacity)),
                   "by_gender": by_gender, "by_age_band": by_age}),
        );
    }

    // Vitals census over the latest reading of every located patient.
    let mut census: BTreeMap<(i64, &str), Vec<[Option<i64>; 6]>> = BTreeMap::new();
    for (p, r) in &located {
        if let Some(v) = latest_vitals.get(p) {
            let x = v.event.vitals.clone().unwrap_or_default();
            census.entry(place(r)).or_default().push([
                hundredths(x.heart_rate),
                hundredths(x.bp_systolic),
                hundredths(x.bp_diastolic),
                hundredths(x.temperature_c),
                hundredths(x.oxygen_saturation),
                hundredths(x.respiratory_rate),
            ]);
        }
    }
    let names = [
        "heart_rate",
        "bp_systolic",
        "bp_diastolic",
        "temperature_c",
        "oxygen_saturation",
        "respiratory_rate",
    ];
    for ((h, d), readings) in census {
        let mut doc = json!({"type": "vitals", "hospital_id": h, "department": d, "patients": readings.len()});
        for (i, name) in names.iter().enumerate() {
            let vals: Vec<i64> = readings.iter().filter_map(|r| r[i]).collect();
            let avg = (!vals.is_empty())
                .then(|| round2(vals.iter().sum::<i64>() as f64 / vals.len() as f64 / 100.0));
            doc[format!("avg_{name}")] = json!(avg);
        }
        docs.insert(format!("vitals:{h}:{d}"), doc);
    }

    // Length of stay: every discharge with both times.
    let mut by_dept: BTreeMap<(i64, &str), Vec<i64>> = BTreeMap::new();
    let mut by_patient: BTreeMap<(i64, String), StaysAndDepartments> = BTreeMap::new();
    for r in gold.iter().filter(|r| r.kind == Some(EventType::Discharge)) {
        if let (Some(a), Some(d)) = (r.event.admission_time, r.event.discharge_time) {
            let secs = (d - a).num_seconds();
            by_dept.entry(place(r)).or_default().push(secs);
            let who = patient_ref(ps.key(r.event.patient_id.as_deref().unwrap_or_default()));
            let entry = by_patient.entry((place(r).0, who)).or_default();
            entry.0.push(secs);
            entry.1.insert(place(r).1);
        }
    }
    let avg_hours = |v: &[i64]| round2(v.iter().sum::<i64>() as f64 / v.len() as f64 / 3600.0);
    for ((h, d), v) in by_dept {
        docs.insert(
            format!("los:{h}:{d}"),
            json!({"type": "los", "hospital_id": h, "department": d, "discharges": v.len(), "avg_los_hours": avg_hours(&v)}),
        );
    }
    for ((h, who), (v, departments)) in by_patient {
        let department = match (departments.first(), departments.len()) {
            (Some(d), 1) => json!(d),
            _ => Value::Null,
        };
        docs.insert(
            format!("patient_los:{h}:{who}"),
            json!({"type": "patient_los", "hospital_id": h, "department": department, "patient": who, "discharges": v.len(), "avg_los_hours": avg_hours(&v)}),
        );
    }

    // Admissions by priority and weekday, and the top diagnoses.
    let mut admissions: BTreeMap<(i64, &str, &str), i64> = BTreeMap::new();
    let mut diagnoses: BTreeMap<i64, BTreeMap<String, i64>> = BTreeMap::new();
    for r in gold.iter().filter(|r| r.kind == Some(EventType::Admission)) {
        let h = place(r).0;
        if let Some(p) = r
            .event
            .admission_priority
            .as_deref()
            .and_then(Priority::parse)
        {
            let at = r.event.admission_time.unwrap_or(r.event.event_timestamp);
            let day = WEEKDAYS[at.weekday().num_days_from_monday() as usize];
            *admissions.entry((h, p.name(), day)).or_default() += 1;
        }
        if let Some(code) = r
            .event
            .diagnosis_code
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
        {
            *diagnoses
                .entry(h)
                .or_default()
                .entry(code.to_owned())
                .or_default() += 1;
        }
    }
    for ((h, p, day), n) in admissions {
        docs.insert(
            format!("admissions:{h}:{p}:{day}"),
            json!({"type": "admissions", "hospital_id": h, "admission_priority": p, "weekday": day, "admissions": n}),
        );
    }
    for (h, codes) in diagnoses {
        let mut ranked: Vec<(String, i64)> = codes.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let top: Vec<Value> = ranked
            .into_iter()
            .take(10)
            .map(|(c, n)| json!({"diagnosis_code": c, "admissions": n}))
            .collect();
        docs.insert(
            format!("diagnoses:{h}"),
            json!({"type": "diagnoses", "hospital_id": h, "top": top}),
        );
    }
    docs
}

/// A patient's stays (seconds each) and the departments they ended in.
type StaysAndDepartments<'a> = (Vec<i64>, BTreeSet<&'a str>);

/// Drops what a recomputation cannot know (`id`, `as_of`, `updated_at`) and the documents
/// of groups whose every contribution was retracted (a vitals census of zero patients, a
/// length of stay of zero discharges after a cancelled discharge, zero admissions after a
/// cancelled admission), which a recomputation has no group for.
pub fn comparable(docs: impl IntoIterator<Item = (String, Value)>) -> BTreeMap<String, Value> {
    docs.into_iter()
        .map(|(id, mut body)| {
            if let Some(o) = body.as_object_mut() {
                o.remove("id");
                o.remove("as_of");
                o.remove("updated_at");
            }
            (id, body)
        })
        .filter(|(id, body)| {
            let emptied = |field: &str| body[field] == json!(0);
            !((id.starts_with("vitals:") && emptied("patients"))
                || ((id.starts_with("los:") || id.starts_with("patient_los:"))
                    && emptied("discharges"))
                || (id.starts_with("admissions:") && emptied("admissions")))
        })
        .collect()
}

/// The first few differences between two document sets, for a readable failure.
pub fn differences(expected: &BTreeMap<String, Value>, got: &BTreeMap<String, Value>) -> String {
    expected
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}: expected {v}, got {:?}", got.get(k)))
        .chain(
            got.keys()
                .filter(|k| !expected.contains_key(*k))
                .map(|k| format!("{k}: unexpected {}", got[k])),
        )
        .take(5)
        .collect::<Vec<_>>()
        .join("\n")
}
