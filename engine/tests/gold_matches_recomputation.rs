//! The core correctness guarantee: for random event streams, arriving in random order and in
//! random batches (late events included), the KPIs the dataflow maintains incrementally equal,
//! after every batch, a from-scratch recomputation over the Silver records received so far.
//!
//! The recomputation below is written independently of the engine's Gold code: plain Rust over
//! the Silver records, following DESIGN.md's KPI definitions literally.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{sync_channel, Receiver};

use cds_engine::gold::{self, FactBuilder, GoldBatch, GoldOutput, KpiState};
use cds_engine::model::{
    format_time, parse_time, patient_ref, AgeBand, Department, Event, EventType, Gender, Network, Priority, Pseudonymiser,
    Vitals, WEEKDAYS,
};
use cds_engine::silver::{Outcome, Silver, SilverRecord};
use chrono::{Datelike, Duration};
use proptest::prelude::*;
use serde_json::{json, Value};

const KEY: &[u8] = b"test-key";

/// One generated event, before Silver.
#[derive(Debug, Clone)]
struct Spec {
    patient: u8,
    kind: u8,
    hospital: i64,
    department: &'static str,
    minute: i64,
    gender: &'static str,
    age: Option<i64>,
    stay_hours: Option<i64>,
    priority: &'static str,
    diagnosis: &'static str,
    vitals: [Option<i32>; 6],
    duplicate: bool,
}

fn spec() -> impl Strategy<Value = Spec> {
    let dept = prop::sample::select(vec![
        "Emergency", "Surgery", "ICU", "Pediatrics", "Maternity", "Oncology", "Cardiology", "Emergancy", "PEDS",
        "Pharmacy",
    ]);
    let vital = prop::option::weighted(0.8, 0..4000i32);
    (
        (0u8..8, 0u8..4, prop::sample::select(vec![1i64, 2, 3, 3, 99]), dept, 0i64..3000),
        (
            prop::sample::select(vec!["M", "F", "O", "U", "X"]),
            prop::option::weighted(0.9, -5i64..130),
            prop::option::weighted(0.8, -10i64..300),
            prop::sample::select(vec!["Emergency", "Urgent", "Elective", "urgent", "Unknown"]),
            prop::sample::select(vec!["I21.4", "J18.9", "A41.9", "O80", "C50.9", "S72.0", "K35.8", "N39.0", "I50.9", "E11.9", "F10.2", "R07.4", ""]),
        ),
        [vital.clone(), vital.clone(), vital.clone(), vital.clone(), vital.clone(), vital],
        prop::bool::weighted(0.05),
    )
        .prop_map(|((patient, kind, hospital, department, minute), (gender, age, stay_hours, priority, diagnosis), vitals, duplicate)| Spec {
            patient,
            kind,
            hospital,
            department,
            minute,
            gender,
            age,
            stay_hours,
            priority,
            diagnosis,
            vitals,
            duplicate,
        })
}

fn to_event(i: usize, s: &Spec) -> Event {
    let t0 = parse_time("2026-03-02T00:00:00Z").expect("time");
    let at = t0 + Duration::minutes(s.minute);
    let kind = ["ADMISSION", "TRANSFER", "DISCHARGE", "VITALS"][usize::from(s.kind)];
    // Vitals in tenths: exact in hundredths, like most monitors' output.
    let v = |k: usize, scale: f64| s.vitals[k].map(|x| f64::from(x) / 10.0 * scale);
    Event {
        event_id: format!("E{i:05}"),
        event_type: Some(kind.into()),
        event_timestamp: at,
        patient_id: Some(format!("P{}", s.patient)),
        hospital_id: Some(s.hospital),
        department: Some(s.department.into()),
        gender: Some(s.gender.into()),
        age: s.age,
        admission_time: (kind != "VITALS").then(|| at - Duration::hours(s.stay_hours.unwrap_or(0).abs())),
        discharge_time: (kind == "DISCHARGE").then(|| at - Duration::hours(s.stay_hours.unwrap_or(0))),
        admission_priority: Some(s.priority.into()),
        diagnosis_code: Some(s.diagnosis.into()),
        vitals: (kind == "VITALS").then(|| Vitals {
            heart_rate: v(0, 1.0),
            bp_systolic: v(1, 1.0),
            bp_diastolic: v(2, 1.0),
            temperature_c: v(3, 0.1),
            oxygen_saturation: v(4, 0.5),
            respiratory_rate: v(5, 0.2),
            ..Vitals::default()
        }),
        ..Event::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The from-scratch recomputation (plain Rust, no dataflow).
// ---------------------------------------------------------------------------------------------

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn hundredths(x: Option<f64>) -> Option<i64> {
    x.map(|v| (v * 100.0).round() as i64)
}

/// Expected KPI documents by id, without `as_of` / `updated_at`.
fn recompute(network: &Network, records: &[SilverRecord]) -> BTreeMap<String, Value> {
    let ps = Pseudonymiser::new(KEY);
    let gold: Vec<&SilverRecord> = records
        .iter()
        .filter(|r| !r.quarantined())
        .filter(|r| r.kind.is_some() && r.department.is_some() && r.event.hospital_id.is_some() && r.event.patient_id.is_some())
        .collect();
    let key = |r: &SilverRecord| (r.event.event_timestamp, r.event.event_id.clone());
    let mut docs = BTreeMap::new();

    // Location: the latest ADT event per patient decides.
    let mut latest_adt: HashMap<&str, &SilverRecord> = HashMap::new();
    let mut latest_vitals: HashMap<&str, &SilverRecord> = HashMap::new();
    for r in &gold {
        let p = r.event.patient_id.as_deref().unwrap_or_default();
        let slot = if r.kind == Some(EventType::Vitals) { &mut latest_vitals } else { &mut latest_adt };
        if slot.get(p).is_none_or(|old| key(old) < key(r)) {
            slot.insert(p, r);
        }
    }
    let located: Vec<(&str, &SilverRecord)> =
        latest_adt.iter().filter(|(_, r)| r.kind != Some(EventType::Discharge)).map(|(p, r)| (*p, *r)).collect();
    let place = |r: &SilverRecord| (r.event.hospital_id.unwrap_or_default(), r.department.map(Department::name).unwrap_or_default());

    for (h, d, cap) in network.departments() {
        let here: Vec<&SilverRecord> = located.iter().map(|(_, r)| *r).filter(|r| place(r) == (i64::from(h), d.name())).collect();
        let mut by_gender = json!({"M": 0, "F": 0, "O": 0, "U": 0});
        let mut by_age = json!({"0-17": 0, "18-39": 0, "40-64": 0, "65-79": 0, "80+": 0, "unknown": 0});
        for r in &here {
            let g = Gender::parse(r.event.gender.as_deref()).name();
            by_gender[g] = json!(by_gender[g].as_i64().unwrap_or(0) + 1);
            let b = AgeBand::of(r.event.age).label();
            by_age[b] = json!(by_age[b].as_i64().unwrap_or(0) + 1);
        }
        let n = here.len() as f64;
        docs.insert(
            format!("occupancy:{h}:{}", d.name()),
            json!({"type": "occupancy", "hospital_id": h, "department": d.name(), "occupied": here.len(),
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
    let names = ["heart_rate", "bp_systolic", "bp_diastolic", "temperature_c", "oxygen_saturation", "respiratory_rate"];
    for ((h, d), readings) in census {
        let mut doc = json!({"type": "vitals", "hospital_id": h, "department": d, "patients": readings.len()});
        for (i, name) in names.iter().enumerate() {
            let vals: Vec<i64> = readings.iter().filter_map(|r| r[i]).collect();
            let avg = (!vals.is_empty()).then(|| round2(vals.iter().sum::<i64>() as f64 / vals.len() as f64 / 100.0));
            doc[format!("avg_{name}")] = json!(avg);
        }
        docs.insert(format!("vitals:{h}:{d}"), doc);
    }

    // Length of stay: every discharge with both times.
    let mut by_dept: BTreeMap<(i64, &str), Vec<i64>> = BTreeMap::new();
    let mut by_patient: BTreeMap<(i64, String), Vec<i64>> = BTreeMap::new();
    for r in gold.iter().filter(|r| r.kind == Some(EventType::Discharge)) {
        if let (Some(a), Some(d)) = (r.event.admission_time, r.event.discharge_time) {
            let secs = (d - a).num_seconds();
            by_dept.entry(place(r)).or_default().push(secs);
            let who = patient_ref(ps.key(r.event.patient_id.as_deref().unwrap_or_default()));
            by_patient.entry((place(r).0, who)).or_default().push(secs);
        }
    }
    let avg_hours = |v: &[i64]| round2(v.iter().sum::<i64>() as f64 / v.len() as f64 / 3600.0);
    for ((h, d), v) in by_dept {
        docs.insert(
            format!("los:{h}:{d}"),
            json!({"type": "los", "hospital_id": h, "department": d, "discharges": v.len(), "avg_los_hours": avg_hours(&v)}),
        );
    }
    for ((h, who), v) in by_patient {
        docs.insert(
            format!("patient_los:{h}:{who}"),
            json!({"type": "patient_los", "hospital_id": h, "patient": who, "discharges": v.len(), "avg_los_hours": avg_hours(&v)}),
        );
    }

    // Admissions by priority and weekday, and the top diagnoses.
    let mut admissions: BTreeMap<(i64, &str, &str), i64> = BTreeMap::new();
    let mut diagnoses: BTreeMap<i64, BTreeMap<String, i64>> = BTreeMap::new();
    for r in gold.iter().filter(|r| r.kind == Some(EventType::Admission)) {
        let h = place(r).0;
        if let Some(p) = r.event.admission_priority.as_deref().and_then(Priority::parse) {
            let at = r.event.admission_time.unwrap_or(r.event.event_timestamp);
            let day = WEEKDAYS[at.weekday().num_days_from_monday() as usize];
            *admissions.entry((h, p.name(), day)).or_default() += 1;
        }
        if let Some(code) = r.event.diagnosis_code.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
            *diagnoses.entry(h).or_default().entry(code.to_owned()).or_default() += 1;
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
        let top: Vec<Value> =
            ranked.into_iter().take(10).map(|(c, n)| json!({"diagnosis_code": c, "admissions": n})).collect();
        docs.insert(format!("diagnoses:{h}"), json!({"type": "diagnoses", "hospital_id": h, "top": top}));
    }
    docs
}

// ---------------------------------------------------------------------------------------------
// The engine side: Silver -> facts -> dataflow, one epoch per batch.
// ---------------------------------------------------------------------------------------------

fn incremental_documents(state: &KpiState) -> BTreeMap<String, Value> {
    state
        .all_documents("", "")
        .into_iter()
        .map(|d| {
            let mut body = d.body;
            if let Some(o) = body.as_object_mut() {
                o.remove("id");
                o.remove("as_of");
                o.remove("updated_at");
            }
            (d.id, body)
        })
        // Groups whose every contribution was retracted (e.g. a vitals census of a department
        // that emptied) hold zero tallies: the recomputation has no such group at all.
        .filter(|(id, body)| !(id.starts_with("vitals:") && body["patients"] == json!(0)))
        .collect()
}

fn drain(rx: &Receiver<GoldOutput>, state: &mut KpiState) {
    while let Ok(msg) = rx.try_recv() {
        if let GoldOutput::Changes(changes) = msg {
            for c in changes {
                state.apply(c);
            }
        }
    }
}

/// Runs the stream in the given arrival order and batches; checks after every batch.
fn check(arrival: Vec<Event>, batch_sizes: Vec<usize>) -> Result<(), TestCaseError> {
    let network = Network::default_network();
    let result = timely::execute_directly(move |worker| -> Result<(), String> {
        let (tx, rx) = sync_channel(1 << 20);
        let (mut inputs, probe) = worker.dataflow::<u64, _, _>(|scope| gold::build(scope, tx));
        let mut silver = Silver::new(network.clone());
        let mut facts = FactBuilder::new(Pseudonymiser::new(KEY), 1);
        let mut state = KpiState::new(network.clone());
        let mut received: Vec<SilverRecord> = Vec::new();
        let mut rest = arrival.as_slice();
        let mut sizes = batch_sizes.iter().cycle();
        let mut epoch = 0u64;
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
            let (now, later) = rest.split_at(n);
            rest = later;
            let mut batch = [GoldBatch::default()];
            for e in now {
                if let Outcome::Record(r) = silver.clean(e.clone()) {
                    facts.add(&r, &mut batch);
                    received.push(r);
                }
            }
            let [batch] = batch;
            inputs.insert(batch);
            epoch += 1;
            inputs.advance_to(epoch);
            while probe.less_than(&epoch) {
                worker.step();
            }
            drain(&rx, &mut state);
            let expected = recompute(&network, &received);
            let got = incremental_documents(&state);
            if expected != got {
                let diff: Vec<String> = expected
                    .iter()
                    .filter(|(k, v)| got.get(*k) != Some(*v))
                    .map(|(k, v)| format!("{k}: expected {v}, got {:?}", got.get(k)))
                    .chain(got.keys().filter(|k| !expected.contains_key(*k)).map(|k| format!("{k}: unexpected {}", got[k])))
                    .take(5)
                    .collect();
                return Err(format!("after epoch {epoch}:\n{}", diff.join("\n")));
            }
        }
        Ok(())
    });
    result.map_err(TestCaseError::fail)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    #[test]
    fn incremental_kpis_equal_recomputation(
        specs in prop::collection::vec(spec(), 1..120),
        order in any::<prop::sample::Index>(),
        batch_sizes in prop::collection::vec(1usize..12, 1..6),
    ) {
        let mut events: Vec<Event> = Vec::new();
        for (i, s) in specs.iter().enumerate() {
            let e = to_event(i, s);
            if s.duplicate {
                events.push(e.clone());
            }
            events.push(e);
        }
        // A random arrival order: rotate and interleave, so late events are everywhere.
        let k = order.index(events.len());
        events.rotate_left(k);
        let (even, odd): (Vec<_>, Vec<_>) = events.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
        let arrival: Vec<Event> = odd.into_iter().rev().chain(even).map(|(_, e)| e).collect();
        check(arrival, batch_sizes)?;
    }
}

/// A hand-written case: a late admission must not move a patient who was already discharged,
/// and a late transfer moves the patient retroactively.
#[test]
fn late_events_correct_the_kpis() {
    let t = |m: i64| format_time(&(parse_time("2026-03-02T08:00:00Z").expect("time") + Duration::minutes(m)));
    let line = |id: &str, kind: &str, minute: i64, dept: &str| {
        Event::from_json(
            json!({"event_id": id, "event_type": kind, "event_timestamp": t(minute), "patient_id": "P1",
                   "hospital_id": 1, "department": dept, "gender": "F", "age": 50, "admission_time": t(0),
                   "discharge_time": if kind == "DISCHARGE" { Some(t(minute)) } else { None }})
            .to_string()
            .as_bytes(),
        )
        .expect("event")
    };
    let arrival = vec![
        line("a", "ADMISSION", 0, "Emergency"),
        line("c", "DISCHARGE", 120, "Surgery"),
        line("b", "TRANSFER", 60, "Surgery"),
        line("d", "ADMISSION", 200, "ICU"),
        line("e", "TRANSFER", 190, "Cardiology"),
    ];
    check(arrival, vec![1]).expect("equal after every step");
}
