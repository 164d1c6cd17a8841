//! One test per rule of docs/design.md's Silver table, with the boundary values.

#![allow(clippy::type_complexity)]

use super::*;
use crate::model::{parse_time, SourcePosition};

fn silver() -> Silver {
    Silver::new(Network::default_network())
}

const T0: &str = "2026-03-02T10:00:00Z";

fn event(kind: &str) -> Event {
    Event {
        event_id: format!("{kind}-1"),
        event_type: Some(kind.to_owned()),
        event_timestamp: parse_time(T0).expect("time"),
        patient_id: Some("P0000001".into()),
        hospital_id: Some(3),
        department: Some("ICU".into()),
        gender: Some("F".into()),
        age: Some(70),
        admission_time: Some(parse_time("2026-03-01T08:00:00Z").expect("time")),
        ..Event::default()
    }
}

fn clean(e: Event) -> SilverRecord {
    match silver().clean(e) {
        Outcome::Record(r) => *r,
        other => panic!("expected a record, got {other:?}"),
    }
}

fn flags(r: &SilverRecord) -> Vec<&'static str> {
    r.dq_flags.iter().map(DqFlag::name).collect()
}

#[test]
fn a_clean_event_has_no_flags() {
    let r = clean(event("ADMISSION"));
    assert!(r.dq_flags.is_empty());
    assert_eq!(r.kind, Some(EventType::Admission));
    assert_eq!(r.department, Some(crate::model::DepartmentId::of("ICU")));
    assert!(!r.quarantined());
}

#[test]
fn duplicate_event_is_dropped() {
    let mut s = silver();
    assert!(matches!(s.clean(event("VITALS")), Outcome::Record(_)));
    assert!(matches!(s.clean(event("VITALS")), Outcome::Duplicate(_)));
}

#[test]
fn future_admission_boundary_is_sixty_seconds() {
    let ts = parse_time(T0).expect("time");
    let mut e = event("ADMISSION");
    e.admission_time = Some(ts + Duration::seconds(60));
    assert!(
        clean(e).dq_flags.is_empty(),
        "exactly 60 s ahead is tolerated"
    );

    let mut e = event("ADMISSION");
    e.admission_time = Some(ts + Duration::seconds(61));
    let r = clean(e);
    assert_eq!(flags(&r), ["FUTURE_ADMISSION"]);
    assert_eq!(r.event.admission_time, Some(ts));
}

#[test]
fn missing_admission_time_only_on_admissions() {
    let ts = parse_time(T0).expect("time");
    let mut e = event("ADMISSION");
    e.admission_time = None;
    let r = clean(e);
    assert_eq!(flags(&r), ["MISSING_ADMISSION_TIME"]);
    assert_eq!(r.event.admission_time, Some(ts));

    let mut e = event("VITALS");
    e.admission_time = None;
    assert!(clean(e).dq_flags.is_empty());
}

#[test]
fn invalid_age_bounds() {
    for (age, valid) in [(-1, false), (0, true), (120, true), (121, false)] {
        let mut e = event("VITALS");
        e.age = Some(age);
        let r = clean(e);
        if valid {
            assert!(r.dq_flags.is_empty(), "age {age}");
            assert_eq!(r.event.age, Some(age));
        } else {
            assert_eq!(flags(&r), ["INVALID_AGE"], "age {age}");
            assert_eq!(r.event.age, None);
        }
    }
}

#[test]
fn discharge_before_admit_is_set_to_the_event_time() {
    let ts = parse_time(T0).expect("time");
    let admitted = parse_time("2026-03-01T08:00:00Z").expect("time");
    let mut e = event("DISCHARGE");
    e.discharge_time = Some(admitted);
    assert!(clean(e).dq_flags.is_empty(), "equal times are not before");

    let mut e = event("DISCHARGE");
    e.discharge_time = Some(admitted - Duration::seconds(1));
    let r = clean(e);
    assert_eq!(flags(&r), ["DISCHARGE_BEFORE_ADMIT"]);
    assert_eq!(r.event.discharge_time, Some(ts));
}

#[test]
fn rules_see_earlier_repairs() {
    // A future admission is moved to the event time first; a discharge before that repaired
    // admission is then caught by DISCHARGE_BEFORE_ADMIT.
    let ts = parse_time(T0).expect("time");
    let mut e = event("DISCHARGE");
    e.admission_time = Some(ts + Duration::days(2));
    e.discharge_time = Some(ts - Duration::hours(1));
    let r = clean(e);
    assert_eq!(flags(&r), ["FUTURE_ADMISSION", "DISCHARGE_BEFORE_ADMIT"]);
    assert_eq!(r.event.discharge_time, Some(ts));
}

#[test]
fn department_typos_are_mapped_and_flagged() {
    for (raw, canonical) in [
        ("Emergancy", "Emergency"),
        ("Cardiolgy", "Cardiology"),
        ("PEDS", "Pediatrics"),
    ] {
        let mut e = event("VITALS");
        e.department = Some(raw.into());
        let r = clean(e);
        assert_eq!(flags(&r), ["DEPT_TYPO"], "{raw}");
        assert_eq!(r.event.department.as_deref(), Some(canonical));
        assert!(!r.quarantined());
    }
    // Another letter case is the configured name, not a typo: spelled as configured.
    let mut e = event("VITALS");
    e.department = Some("icu".into());
    let r = clean(e);
    assert!(r.dq_flags.is_empty());
    assert_eq!(r.event.department.as_deref(), Some("ICU"));
}

#[test]
fn departments_are_the_hospitals_own_and_follow_the_file() {
    let header = "hospital_id,hospital_name,department,bed_capacity,staff_count,aliases";
    let network = |rows: &str| Network::parse(&format!("{header}\n{rows}")).expect("parses");
    let live = LiveNetwork::new(network(
        "1042,Royal,Ward 7B,20,30,W7B\n1042,Royal,Renal,10,12,\n",
    ));
    let mut silver = Silver::following(live.clone());
    let mut n = 0;
    let mut clean = |department: &str| {
        n += 1;
        let mut e = event("VITALS");
        e.event_id = format!("E{n}");
        e.hospital_id = Some(1042);
        e.department = Some(department.into());
        match silver.clean(e) {
            Outcome::Record(r) => (flags(&r), r.event.department),
            other => panic!("expected a record, got {other:?}"),
        }
    };
    assert_eq!(clean("Ward 7B"), (vec![], Some("Ward 7B".into())));
    assert_eq!(clean("w7b"), (vec!["DEPT_TYPO"], Some("Ward 7B".into())));
    assert_eq!(clean("ICU").0, ["MISSING_DEPARTMENT"]);
    // Geriatrics added, Renal removed, while running.
    live.publish(network(
        "1042,Royal,Ward 7B,20,30,W7B\n1042,Royal,Geriatrics,30,40,\n",
    ));
    assert_eq!(clean("Geriatrics"), (vec![], Some("Geriatrics".into())));
    assert_eq!(clean("Renal").0, ["MISSING_DEPARTMENT"]);
}

#[test]
fn quarantine_rules() {
    let cases: [(fn(&mut Event), &str); 6] = [
        (|e| e.hospital_id = Some(99), "INVALID_HOSPITAL_ID"),
        (|e| e.hospital_id = None, "INVALID_HOSPITAL_ID"),
        (|e| e.patient_id = Some("  ".into()), "MISSING_PATIENT_ID"),
        (|e| e.event_type = None, "MISSING_EVENT_TYPE"),
        (
            |e| e.event_type = Some("ADMIT".into()),
            "MISSING_EVENT_TYPE",
        ),
        (
            |e| e.department = Some("Pharmacy".into()),
            "MISSING_DEPARTMENT",
        ),
    ];
    for (mutate, flag) in cases {
        let mut e = event("TRANSFER");
        mutate(&mut e);
        let r = clean(e);
        assert_eq!(flags(&r), [flag]);
        assert!(r.quarantined(), "{flag} quarantines");
    }
}

#[test]
fn vitals_out_of_range_are_nulled_at_the_bounds() {
    let bounds: [(fn(&mut Vitals) -> &mut Option<f64>, f64, f64); 6] = [
        (|v| &mut v.heart_rate, 20.0, 300.0),
        (|v| &mut v.bp_systolic, 40.0, 300.0),
        (|v| &mut v.bp_diastolic, 20.0, 200.0),
        (|v| &mut v.oxygen_saturation, 50.0, 100.0),
        (|v| &mut v.respiratory_rate, 0.0, 80.0),
        (|v| &mut v.temperature_c, 25.0, 45.0),
    ];
    for (field, lo, hi) in bounds {
        for (x, ok) in [(lo, true), (hi, true), (lo - 0.1, false), (hi + 0.1, false)] {
            let mut e = event("VITALS");
            let mut v = Vitals {
                heart_rate: Some(80.0),
                ..Vitals::default()
            };
            *field(&mut v) = Some(x);
            e.vitals = Some(v);
            let mut r = clean(e);
            let got = *field(r.event.vitals.as_mut().expect("vitals"));
            if ok {
                assert_eq!(got, Some(x));
                assert!(r.dq_flags.is_empty());
            } else {
                assert_eq!(got, None, "{x} nulled");
                assert_eq!(flags(&r), ["VITALS_OUT_OF_RANGE"]);
            }
        }
    }
}

#[test]
fn not_an_event_is_a_dead_letter_with_its_position() {
    let mut s = silver();
    let pos = || SourcePosition {
        source: "file:x".into(),
        partition: 0,
        offset: 7,
    };
    match s.admit(crate::decode::json(b"{\"event_id\": \"x\"", pos)) {
        Outcome::DeadLetter(d) => {
            assert!(d.reason.starts_with("malformed JSON"), "{}", d.reason);
            assert_eq!(d.position.offset, 7);
            assert_eq!(d.payload, "{\"event_id\": \"x\"");
        }
        other => panic!("expected a dead letter, got {other:?}"),
    }
}
