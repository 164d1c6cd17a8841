use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::model::Event;

fn sim(seed: u64, max: u64, dirty: f64) -> Simulator {
    let config = SimulatorConfig {
        seed,
        max_events: Some(max),
        dirty_rate: dirty,
        ..SimulatorConfig::default()
    };
    Simulator::new(config, &Network::default_network())
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let a: Vec<Vec<u8>> = sim(5, 5_000, 0.1).collect();
    let b: Vec<Vec<u8>> = sim(5, 5_000, 0.1).collect();
    let c: Vec<Vec<u8>> = sim(6, 5_000, 0.1).collect();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.len(), 5_000, "max_events is respected");
}

#[test]
fn a_clean_stream_is_consistent() {
    let mut admitted: BTreeMap<String, String> = BTreeMap::new();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let network = Network::default_network();
    let beds = network.total_beds() as f64;
    let mut peak: BTreeMap<(i64, String), usize> = BTreeMap::new();
    let mut occupancy_after_warmup = Vec::new();
    for (i, line) in sim(3, 100_000, 0.0).enumerate() {
        let e = Event::from_json(&line).expect("every clean line parses");
        let kind = e.event_type.clone().expect("type");
        let patient = e.patient_id.clone().expect("patient");
        *kinds.entry(kind.clone()).or_default() += 1;
        let dept = e.department.clone().expect("department");
        match kind.as_str() {
            "ADMISSION" => {
                assert!(
                    admitted.insert(patient, dept).is_none(),
                    "admitted twice at once"
                );
            }
            "TRANSFER" => {
                assert!(
                    admitted.contains_key(&patient),
                    "transfer of a patient not admitted"
                );
                admitted.insert(patient, dept);
            }
            "DISCHARGE" => assert!(
                admitted.remove(&patient).is_some(),
                "discharge of a patient not admitted"
            ),
            "VITALS" => assert_eq!(
                admitted.get(&patient),
                Some(&dept),
                "vitals only where the patient is"
            ),
            other => panic!("unknown type {other}"),
        }
        let hospital = e.hospital_id.expect("hospital");
        let here = admitted
            .values()
            .filter(|d| **d == e.department.clone().unwrap_or_default())
            .count();
        let slot = peak
            .entry((hospital, e.department.clone().unwrap_or_default()))
            .or_default();
        *slot = (*slot).max(here);
        if i > 20_000 && i % 1000 == 0 {
            occupancy_after_warmup.push(admitted.len() as f64 / beds);
        }
    }
    for k in ["ADMISSION", "TRANSFER", "DISCHARGE", "VITALS"] {
        assert!(kinds.get(k).copied().unwrap_or(0) > 0, "{k} events appear");
    }
    for occ in occupancy_after_warmup {
        assert!(
            (0.4..=1.1).contains(&occ),
            "network occupancy {occ:.2} stays plausible"
        );
    }
}

#[test]
fn every_dirty_scenario_appears() {
    let network = Network::default_network();
    let mut seen = BTreeSet::new();
    let mut ids = BTreeSet::new();
    let mut lines = 0;
    for line in sim(9, 100_000, 0.2) {
        lines += 1;
        let Ok(e) = Event::from_json(&line) else {
            seen.insert("malformed");
            continue;
        };
        if !ids.insert(e.event_id.clone()) {
            seen.insert("duplicate");
        }
        if e.age.is_some_and(|a| !(0..=120).contains(&a)) {
            seen.insert("invalid age");
        }
        if e.admission_time
            .is_some_and(|a| a > e.event_timestamp + chrono::Duration::hours(1))
        {
            seen.insert("future admission");
        }
        if e.event_type.as_deref() == Some("ADMISSION") && e.admission_time.is_none() {
            seen.insert("missing admission time");
        }
        if e.patient_id.as_deref().is_none_or(str::is_empty)
            || e.event_type.is_none()
            || e.department.is_none()
        {
            seen.insert("missing critical field");
        }
        if let (Some(a), Some(d)) = (e.admission_time, e.discharge_time) {
            if d < a {
                seen.insert("discharge before admission");
            }
        }
        if e.department
            .as_deref()
            .is_some_and(|d| network.departments().all(|(_, c)| c.name != d))
        {
            seen.insert("department typo");
        }
        if e.hospital_id == Some(99) {
            seen.insert("invalid hospital");
        }
        if !e.extra.is_empty() {
            seen.insert("unknown attribute");
        }
        if let Some(v) = &e.vitals {
            if v.heart_rate == Some(400.0)
                || v.oxygen_saturation == Some(0.0)
                || v.temperature_c == Some(60.0)
            {
                seen.insert("vitals out of range");
            }
        }
    }
    assert_eq!(lines, 100_000);
    let all = [
        "malformed",
        "duplicate",
        "invalid age",
        "future admission",
        "missing admission time",
        "missing critical field",
        "discharge before admission",
        "department typo",
        "invalid hospital",
        "unknown attribute",
        "vitals out of range",
    ];
    for s in all {
        assert!(seen.contains(s), "scenario {s:?} appears");
    }
}

#[test]
fn out_of_order_events_arrive_late() {
    let mut latest = None;
    let mut late = 0;
    for line in sim(4, 50_000, 0.2) {
        if let Ok(e) = Event::from_json(&line) {
            if latest.is_some_and(|t| e.event_timestamp + chrono::Duration::minutes(10) < t) {
                late += 1;
            }
            latest = latest.max(Some(e.event_timestamp));
        }
    }
    assert!(late > 10, "{late} events arrive well after later ones");
}

#[test]
fn deterioration_episodes_happen_but_rarely() {
    let mut readings = 0;
    let mut abnormal = 0;
    for line in sim(2, 100_000, 0.0) {
        let e = Event::from_json(&line).expect("parses");
        if let Some(v) = e.vitals {
            readings += 1;
            if v.respiratory_rate.is_some_and(|r| r >= 22.0)
                && v.bp_systolic.is_some_and(|s| s <= 100.0)
            {
                abnormal += 1;
            }
        }
    }
    let share = abnormal as f64 / readings as f64;
    assert!(
        abnormal > 0 && share < 0.05,
        "{abnormal} of {readings} readings deteriorated"
    );
}

#[test]
fn pacer_keeps_the_rate() {
    let mut p = Pacer::new(Some(2_000.0));
    let t = Instant::now();
    for i in 1..=1_000 {
        p.pace(i);
    }
    let s = t.elapsed().as_secs_f64();
    assert!(
        (0.4..2.0).contains(&s),
        "1,000 lines at 2,000/s took {s:.2} s"
    );
}

/// The simulator fills the wards of the departments file it is given, whatever their names.
#[test]
fn the_simulator_fills_the_hospitals_own_wards() {
    let network = Network::parse(
        "hospital_id,hospital_name,department,bed_capacity,staff_count,kind\n\
         1042,Royal Infirmary,Ward 7B,28,40,ward\n\
         1042,Royal Infirmary,A&E,20,40,emergency\n\
         1042,Royal Infirmary,Critical Care Unit,8,30,icu\n",
    )
    .expect("parses");
    let config = SimulatorConfig {
        max_events: Some(3_000),
        dirty_rate: 0.0,
        ..SimulatorConfig::default()
    };
    let mut seen = BTreeMap::new();
    for line in Simulator::new(config, &network) {
        let e = Event::from_json(&line).expect("clean events");
        assert_eq!(e.hospital_id, Some(1042));
        *seen.entry(e.department.expect("a department")).or_insert(0) += 1;
    }
    let names: Vec<&str> = seen.keys().map(String::as_str).collect();
    assert_eq!(names, ["A&E", "Critical Care Unit", "Ward 7B"], "{seen:?}");
}
