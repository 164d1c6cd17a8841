//! The core correctness guarantee: for random event streams, arriving in random order and in
//! random batches (late events included), the KPIs the dataflow maintains incrementally equal,
//! after every batch, a from-scratch recomputation over the Silver records received so far.
//!
//! The recomputation below is written independently of the engine's Gold code: plain Rust over
//! the Silver records, following docs/design.md's KPI definitions literally.

mod common;

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver};

use cds_engine::gold::{self, FactBuilder, GoldBatch, GoldOutput, KpiState};
use cds_engine::model::{format_time, parse_time, Event, Network, Pseudonymiser, Vitals};
use cds_engine::silver::{Outcome, Silver, SilverRecord};
use chrono::Duration;
use common::{comparable, differences, recompute, KEY};
use proptest::prelude::*;
use serde_json::{json, Value};

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

/// The default network's departments, a typo, an alias and a name it does not have.
const DEFAULT_WARDS: [&str; 10] = [
    "Emergency",
    "Surgery",
    "ICU",
    "Pediatrics",
    "Maternity",
    "Oncology",
    "Cardiology",
    "Emergancy",
    "PEDS",
    "Pharmacy",
];

/// A hospital's own wards: other names, aliases, kinds, hospital ids like 1042 and one beyond
/// 32-bit signed numbers.
const OWN_NETWORK: &str = "\
hospital_id,hospital_name,department,bed_capacity,staff_count,kind,aliases
1042,Royal Infirmary,Ward 7B,28,40,ward,W7B|Seven B
1042,Royal Infirmary,Geriatrics,30,44,ward,COTE|Care of the Elderly
1042,Royal Infirmary,Critical Care Unit,8,30,icu,ITU
1042,Royal Infirmary,Renal,12,20,,
4000000003,\"St Anne, North\",Ward 7A,20,30,ward,
4000000003,\"St Anne, North\",Ward 7B,20,30,ward,
4000000003,\"St Anne, North\",A&E,16,40,emergency,ED|Emergency
";

/// The wards of [`OWN_NETWORK`] as records name them: exact, another case, aliases, typos,
/// one name between two (`Ward 7` of hospital 4000000003), one of another hospital, and unknown.
const OWN_WARDS: [&str; 12] = [
    "Ward 7B",
    "geriatrics",
    "Critical Care Unit",
    "Renal",
    "Ward 7A",
    "A&E",
    "COTE",
    "ITU",
    "Renl",
    "Ward 7",
    "ED",
    "Pharmacy",
];

fn spec() -> impl Strategy<Value = Spec> {
    spec_of(DEFAULT_WARDS.to_vec(), vec![1i64, 2, 3, 3, 99])
}

fn own_spec() -> impl Strategy<Value = Spec> {
    spec_of(
        OWN_WARDS.to_vec(),
        vec![1042i64, 1042, 4_000_000_003, 4_000_000_003, 7],
    )
}

fn spec_of(wards: Vec<&'static str>, hospitals: Vec<i64>) -> impl Strategy<Value = Spec> {
    let dept = prop::sample::select(wards);
    let vital = prop::option::weighted(0.8, 0..4000i32);
    (
        (
            0u8..8,
            0u8..5,
            prop::sample::select(hospitals),
            dept,
            0i64..3000,
        ),
        (
            prop::sample::select(vec!["M", "F", "O", "U", "X"]),
            prop::option::weighted(0.9, -5i64..130),
            prop::option::weighted(0.8, -10i64..300),
            prop::sample::select(vec!["Emergency", "Urgent", "Elective", "urgent", "Unknown"]),
            prop::sample::select(vec![
                "I21.4", "J18.9", "A41.9", "O80", "C50.9", "S72.0", "K35.8", "N39.0", "I50.9",
                "E11.9", "F10.2", "R07.4", "",
            ]),
        ),
        [
            vital.clone(),
            vital.clone(),
            vital.clone(),
            vital.clone(),
            vital.clone(),
            vital,
        ],
        prop::bool::weighted(0.05),
    )
        .prop_map(
            |(
                (patient, kind, hospital, department, minute),
                (gender, age, stay_hours, priority, diagnosis),
                vitals,
                duplicate,
            )| Spec {
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
            },
        )
}

fn to_event(i: usize, s: &Spec) -> Event {
    let t0 = parse_time("2026-03-02T00:00:00Z").expect("time");
    let at = t0 + Duration::minutes(s.minute);
    let kind = [
        "ADMISSION",
        "TRANSFER",
        "DISCHARGE",
        "VITALS",
        "PATIENT_UPDATE",
    ][usize::from(s.kind)];
    // A demographic update names no place.
    let update = kind == "PATIENT_UPDATE";
    // Vitals in tenths: exact in hundredths, like most monitors' output.
    let v = |k: usize, scale: f64| s.vitals[k].map(|x| f64::from(x) / 10.0 * scale);
    Event {
        event_id: format!("E{i:05}"),
        event_type: Some(kind.into()),
        event_timestamp: at,
        patient_id: Some(format!("P{}", s.patient)),
        hospital_id: (!update).then_some(s.hospital),
        department: (!update).then(|| s.department.into()),
        gender: Some(s.gender.into()),
        age: s.age,
        admission_time: (kind != "VITALS" && !update)
            .then(|| at - Duration::hours(s.stay_hours.unwrap_or(0).abs())),
        discharge_time: (kind == "DISCHARGE")
            .then(|| at - Duration::hours(s.stay_hours.unwrap_or(0))),
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
// The engine side: Silver -> facts -> dataflow, one epoch per batch.
// ---------------------------------------------------------------------------------------------

fn incremental_documents(state: &KpiState) -> BTreeMap<String, Value> {
    comparable(
        state
            .all_documents("", "")
            .into_iter()
            .map(|d| (d.id, d.body)),
    )
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
    check_in(Network::default_network(), arrival, batch_sizes)
}

fn check_in(
    network: Network,
    arrival: Vec<Event>,
    batch_sizes: Vec<usize>,
) -> Result<(), TestCaseError> {
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
                    received.push(*r);
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
                return Err(format!(
                    "after epoch {epoch}:\n{}",
                    differences(&expected, &got)
                ));
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
        check(arrival_of(&specs, order), batch_sizes)?;
    }

    /// The same with a hospital's own ward names, aliases and ids.
    #[test]
    fn incremental_kpis_equal_recomputation_with_the_hospitals_own_wards(
        specs in prop::collection::vec(own_spec(), 1..120),
        order in any::<prop::sample::Index>(),
        batch_sizes in prop::collection::vec(1usize..12, 1..6),
    ) {
        let network = Network::parse(OWN_NETWORK).expect("the test network parses");
        check_in(network, arrival_of(&specs, order), batch_sizes)?;
    }
}

/// The events of `specs` (duplicates twice) in a random arrival order: rotated and
/// interleaved, so late events are everywhere.
fn arrival_of(specs: &[Spec], order: prop::sample::Index) -> Vec<Event> {
    let mut events: Vec<Event> = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let e = to_event(i, s);
        if s.duplicate {
            events.push(e.clone());
        }
        events.push(e);
    }
    let k = order.index(events.len());
    events.rotate_left(k);
    let (even, odd): (Vec<_>, Vec<_>) = events
        .into_iter()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    odd.into_iter().rev().chain(even).map(|(_, e)| e).collect()
}

/// A hand-written case: a late admission must not move a patient who was already discharged,
/// and a late transfer moves the patient retroactively.
#[test]
fn late_events_correct_the_kpis() {
    let t = |m: i64| {
        format_time(&(parse_time("2026-03-02T08:00:00Z").expect("time") + Duration::minutes(m)))
    };
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
