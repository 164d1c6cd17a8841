//! Hospital interoperability end to end through the `cds` binary: the same simulated events,
//! sent as FHIR R4 Bundles (a file), as HL7 v2 messages over MLLP (with cancels, across a
//! restart) and as a daily CSV extract (`cds ingest`), must give the same Gold KPIs as the
//! events in the model's own JSON, and as the from-scratch recomputation.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use cds_engine::model::Network;
use cds_engine::model::SourcePosition;
use cds_engine::silver::{Outcome, Silver};
use cds_engine::source::mllp;
use common::formats::{self, cancel_message, encounter_ids, fhir_bundle, hl7_message};
use common::{cds, differences, documents, ok, recompute, scratch, simulate};
use serde_json::{json, Value};

/// Clean simulated events (JSON values, in file order).
fn simulated(n: usize) -> Vec<Value> {
    let out = simulate(&[
        "--seed",
        "11",
        "--max-events",
        &n.to_string(),
        "--dirty-rate",
        "0",
    ]);
    String::from_utf8_lossy(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON event"))
        .collect()
}

/// The recomputation over events in the model's JSON.
fn expected(events: &[Value]) -> std::collections::BTreeMap<String, Value> {
    let network = Network::default_network();
    let mut silver = Silver::new(network.clone());
    let mut records = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let pos = || SourcePosition {
            source: "test".into(),
            partition: 0,
            offset: i as i64,
        };
        if let Outcome::Record(r) =
            silver.admit(cds_engine::decode::json(e.to_string().as_bytes(), pos))
        {
            records.push(*r);
        }
    }
    recompute(&network, &records)
}

fn run_on(source: &str, format: &str, data_dir: &Path) {
    ok(
        cds()
            .args([
                "run",
                "--source",
                source,
                "--format",
                format,
                "--until-end",
                "--http",
                "off",
                "--rules",
                "off",
                "--data-dir",
                data_dir.to_str().expect("utf-8"),
            ])
            .output()
            .expect("run"),
        &format!("cds run --format {format}"),
    );
}

fn assert_same(
    what: &str,
    expected: &std::collections::BTreeMap<String, Value>,
    got: &std::collections::BTreeMap<String, Value>,
) {
    assert!(
        expected
            .iter()
            .any(|(k, v)| k.starts_with("occupancy:") && v["occupied"].as_i64() > Some(0)),
        "the events fill beds"
    );
    assert!(expected.keys().any(|k| k.starts_with("vitals:")));
    assert!(expected.keys().any(|k| k.starts_with("los:")));
    assert!(
        expected == got,
        "{what}: KPIs differ from the JSON events':\n{}",
        differences(expected, got)
    );
}

#[test]
fn fhir_bundles_give_the_same_kpis_as_json() {
    let dir = scratch("fhir");
    let events = simulated(4_000);
    let encounters = encounter_ids(&events);
    let json_file = dir.join("events.jsonl");
    let fhir_file = dir.join("bundles.ndjson");
    let mut j = std::fs::File::create(&json_file).expect("create");
    let mut f = std::fs::File::create(&fhir_file).expect("create");
    for (e, enc) in events.iter().zip(&encounters) {
        writeln!(j, "{e}").expect("write");
        writeln!(f, "{}", fhir_bundle(e, enc)).expect("write");
    }
    // A resource we do not use and a broken line go to the dead-letter store.
    writeln!(f, r#"{{"resourceType":"Practitioner","id":"D1"}}"#).expect("write");
    writeln!(
        f,
        r#"{{"resourceType":"Bundle","type":"transaction","entry":[{{"resource":"#
    )
    .expect("write");
    drop((j, f));

    let json_data = dir.join("json");
    run_on(&format!("file:{}", json_file.display()), "json", &json_data);
    let fhir_data = dir.join("fhir");
    run_on(&format!("file:{}", fhir_file.display()), "fhir", &fhir_data);

    let want = expected(&events);
    assert_same("JSON", &want, &documents(&json_data, "kpis"));
    assert_same("FHIR", &want, &documents(&fhir_data, "kpis"));

    let letters = std::fs::read_to_string(fhir_data.join("lake/deadletter/deadletter.jsonl"))
        .unwrap_or_default();
    let letters: Vec<Value> = letters
        .lines()
        .map(|l| serde_json::from_str(l).expect("dead letter"))
        .collect();
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert_eq!(letters[0]["reason_code"], "unsupported_payload");
    assert_eq!(letters[1]["reason_code"], "malformed_fhir");

    // `auto` tells the same lines apart.
    let auto_data = dir.join("auto");
    run_on(&format!("file:{}", fhir_file.display()), "auto", &auto_data);
    assert_same("FHIR (auto)", &want, &documents(&auto_data, "kpis"));
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------
// HL7 v2 over MLLP

fn free_port() -> u16 {
    let base: u16 = std::env::var("CDS_TEST_MLLP_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    if base != 0 {
        return base;
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `cds GLOBAL run --source SOURCE --until-idle IDLE EXTRA` without HTTP and rules; its
/// stderr is kept for [`finish`].
fn spawn_until_idle(
    global: &[&str],
    source: &str,
    idle: &str,
    extra: &[&str],
    data_dir: &Path,
) -> Child {
    cds()
        .args(global)
        .args(["run", "--source", source, "--until-idle", idle])
        .args(["--http", "off", "--rules", "off"])
        .args(extra)
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cds run")
}

fn start_listener(port: u16, data_dir: &Path) -> Child {
    let source = format!("mllp://127.0.0.1:{port}");
    spawn_until_idle(&[], &source, "2", &["--checkpoint-interval", "1"], data_dir)
}

fn connect(port: u16) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("the MLLP listener does not accept: {e}"),
        }
    }
}

fn finish(child: Child) {
    ok(child.wait_with_output().expect("wait"), "cds run");
}

fn send_all(stream: &mut TcpStream, messages: &[String]) -> Vec<String> {
    messages
        .iter()
        .map(|m| {
            String::from_utf8(mllp::send(stream, m.as_bytes()).expect("ACK")).expect("utf-8 ACK")
        })
        .collect()
}

#[test]
fn hl7v2_over_mllp_with_cancels_and_a_restart_gives_the_same_kpis() {
    let dir = scratch("mllp");
    let data = dir.join("data");
    let mut events = simulated(3_000);
    let port = free_port();
    let messages: Vec<String> = events
        .iter()
        .enumerate()
        .map(|(i, e)| hl7_message(e, &format!("M{i}")))
        .collect();

    // A patient whose last ADT event is an admission gets it cancelled (A11); one whose last
    // is a discharge gets the discharge cancelled (A13).
    let mut last_adt: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, e) in events.iter().enumerate() {
        if e["event_type"] != "VITALS" {
            last_adt.insert(e["patient_id"].as_str().unwrap_or_default(), i);
        }
    }
    let mut lasts: Vec<usize> = last_adt.values().copied().collect();
    lasts.sort_unstable();
    let admitted = *lasts
        .iter()
        .find(|&&i| {
            events[i]["event_type"] == "ADMISSION" && events[i]["diagnosis_code"].is_string()
        })
        .expect("an admission to cancel");
    let discharged = *lasts
        .iter()
        .find(|&&i| events[i]["event_type"] == "DISCHARGE")
        .expect("a discharge to cancel");
    let cancels = vec![
        cancel_message(&events[admitted], "A11", "C1"),
        cancel_message(&events[discharged], "A13", "C2"),
    ];
    let half = messages.len() / 2;

    // First run: half the stream, then a clean stop after two idle seconds.
    let child = start_listener(port, &data);
    let mut stream = connect(port);
    let acks = send_all(&mut stream, &messages[..half]);
    assert!(
        acks.iter().all(|a| a.contains("\rMSA|AA|")),
        "{:?}",
        acks.first()
    );
    drop(stream);
    finish(child);

    // Second run continues from the checkpoint: the rest, an A08, a broken message, cancels.
    let child = start_listener(port, &data);
    let mut stream = connect(port);
    let acks = send_all(&mut stream, &messages[half..]);
    assert!(acks.iter().all(|a| a.contains("\rMSA|AA|")));
    let a08 = messages[admitted]
        .replacen("ADT^A01", "ADT^A08", 1)
        .replacen("|M", "|U", 1);
    let bad = "MSH|^~\\&|SIM|H1|CDS|H1|20260302||ADT^A01|B1|P|2.5.1\rEVN|A01|yesterday\rPID|1||X^^^SIM^MR\r".to_owned();
    let other = "MSH|^~\\&|SIM|H1|CDS|H1|20260302||SIU^S12|B2|P|2.5.1\r".to_owned();
    let acks = send_all(&mut stream, &[a08, bad, other]);
    assert!(acks[0].contains("\rMSA|AA|"), "A08 is taken: {}", acks[0]);
    assert!(
        acks[1].contains("\rMSA|AE|B1") && acks[1].contains("\rERR|"),
        "{}",
        acks[1]
    );
    assert!(acks[2].contains("\rMSA|AR|B2"), "{}", acks[2]);
    let acks = send_all(&mut stream, &cancels);
    assert!(acks.iter().all(|a| a.contains("\rMSA|AA|")), "{acks:?}");
    drop(stream);
    finish(child);

    // The equivalent JSON events: without the cancelled admission and discharge.
    let mut cancelled = [admitted, discharged];
    cancelled.sort_unstable();
    for i in cancelled.iter().rev() {
        events.remove(*i);
    }
    let want = expected(&events);
    assert_same("HL7 v2 over MLLP", &want, &documents(&data, "kpis"));

    // Every message was logged once; the two that could not be taken are dead letters.
    let letters =
        std::fs::read_to_string(data.join("lake/deadletter/deadletter.jsonl")).unwrap_or_default();
    let codes: Vec<String> = letters
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("dead letter")["reason_code"].to_string())
        .collect();
    assert_eq!(
        codes,
        vec!["\"malformed_hl7v2\"", "\"unsupported_payload\""],
        "{letters}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------
// The daily EHR extract

#[test]
fn a_csv_extract_gives_the_same_kpis_as_json() {
    let dir = scratch("ehr");
    let events = simulated(3_000);
    let csv = formats::csv_extract(&events, true);
    let path = dir.join("extract.csv");
    std::fs::write(&path, csv).expect("write");
    let data = dir.join("data");
    ingest(&path, &data, "cds ingest");
    assert_same("CSV extract", &expected(&events), &documents(&data, "kpis"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_quoted_cell_over_several_lines_stays_in_its_row() {
    let dir = scratch("multiline");
    let events = simulated(3_000);
    // Every row gains a last column, a note; every third note has line breaks, a comma and
    // quotes, as a cell typed in the EHR (or an Excel cell of several lines) is exported.
    let csv = formats::csv_extract(&events, true);
    let mut rows = csv.split("\r\n").filter(|l| !l.is_empty());
    let mut extract = format!("{},note\r\n", rows.next().expect("a header"));
    for (i, row) in rows.enumerate() {
        let note = if i % 3 == 0 {
            "\"seen by the night team,\r\nsaid \"\"better\"\"\r\n\r\nreview at 8\""
        } else {
            "stable"
        };
        extract.push_str(&format!("{row},{note}\r\n"));
    }
    let path = dir.join("extract.csv");
    std::fs::write(&path, extract).expect("write");
    let data = dir.join("data");
    ingest(&path, &data, "cds ingest");
    let dead = data.join("lake/deadletter/deadletter.jsonl");
    let dead = std::fs::read_to_string(dead).unwrap_or_default();
    assert!(dead.is_empty(), "no row is a dead letter: {dead}");
    assert_same(
        "CSV extract with notes over several lines",
        &expected(&events),
        &documents(&data, "kpis"),
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `cds ingest --kind ehr` of an extract, without rules.
fn ingest(extract: &Path, data: &Path, what: &str) {
    ok(
        cds()
            .args(["ingest", "--kind", "ehr"])
            .arg(extract)
            .args(["--rules", "off", "--data-dir"])
            .arg(data)
            .output()
            .expect("ingest"),
        what,
    );
}

// ---------------------------------------------------------------------------------------
// Department metadata

/// `cds --departments DEPARTMENTS run` on the event file `events` until it is idle for 4 s,
/// so that the test can change the departments file (and add events) while it runs.
fn watching_departments(departments: &Path, events: &Path, data: &Path) -> Child {
    spawn_until_idle(
        &["--departments", departments.to_str().expect("utf-8")],
        &format!("file:{}", events.display()),
        "4",
        &[],
        data,
    )
}

#[test]
fn a_capacity_change_updates_occupancy_live_and_keeps_history() {
    let dir = scratch("departments");
    let events = simulated(2_000);
    let file = dir.join("events.jsonl");
    std::fs::write(
        &file,
        events.iter().map(|e| format!("{e}\n")).collect::<String>(),
    )
    .expect("write");
    let departments = dir.join("departments.csv");
    std::fs::write(&departments, cds_engine::model::DEFAULT_DEPARTMENTS_CSV).expect("write");
    let data = dir.join("data");
    let child = watching_departments(&departments, &file, &data);
    // Once the events are in, Emergency of hospital 1 gets twice the beds.
    std::thread::sleep(Duration::from_millis(1500));
    let original = cds_engine::model::DEFAULT_DEPARTMENTS_CSV;
    let line = original
        .lines()
        .find(|l| l.starts_with("1,") && l.contains(",Emergency,"))
        .expect("hospital 1 has an Emergency department");
    let cells: Vec<&str> = line.split(',').collect();
    let beds: u32 = cells[3].trim().parse().expect("beds");
    let mut changed_cells: Vec<String> = cells.iter().map(|c| (*c).to_owned()).collect();
    changed_cells[3] = (beds * 2).to_string();
    let changed = original.replace(line, &changed_cells.join(","));
    std::fs::write(&departments, &changed).expect("write");
    finish(child);

    let network = Network::parse(&changed).expect("changed network");
    let mut silver = Silver::new(network.clone());
    let records: Vec<_> = events
        .iter()
        .filter_map(|e| {
            let position = || SourcePosition {
                source: "t".into(),
                partition: 0,
                offset: 0,
            };
            match silver.admit(cds_engine::decode::json(e.to_string().as_bytes(), position)) {
                Outcome::Record(r) => Some(*r),
                _ => None,
            }
        })
        .collect();
    let want = recompute(&network, &records);
    let got = documents(&data, "kpis");
    let id = "occupancy:1:Emergency";
    assert_eq!(want[id], got[id], "occupancy with the new capacity");
    assert_eq!(got[id]["bed_capacity"], json!(beds * 2));

    let conn = rusqlite_rows(&data.join("cds.sqlite"));
    let emergency: Vec<&(i64, i64, i64, bool, bool)> =
        conn.iter().filter(|r| r.0 == 1 && r.1 == 0).collect();
    assert_eq!(
        emergency.len(),
        2,
        "two versions of Emergency at hospital 1"
    );
    assert!(!emergency[0].3 && emergency[0].4, "the first is closed");
    assert!(
        emergency[1].3 && !emergency[1].4,
        "the second is current and open"
    );
    assert_eq!(emergency[1].2, i64::from(beds * 2));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_department_added_and_one_removed_while_running() {
    let dir = scratch("departments-added-removed");
    let header = "hospital_id,hospital_name,department,bed_capacity,staff_count,kind,aliases";
    let departments = dir.join("departments.csv");
    let before = format!(
        "{header}\n1042,Royal Infirmary,Ward 7B,28,40,ward,W7B\n1042,Royal Infirmary,Renal,12,20,,\n"
    );
    let after = format!(
        "{header}\n1042,Royal Infirmary,Ward 7B,28,40,ward,W7B\n\
         1042,Royal Infirmary,Geriatrics,30,44,ward,COTE\n"
    );
    std::fs::write(&departments, &before).expect("write");
    let admission = |n: usize, ward: &str| {
        format!(
            "{{\"event_id\":\"A{n}\",\"event_type\":\"ADMISSION\",\
             \"event_timestamp\":\"2026-03-02T10:{n:02}:00Z\",\"patient_id\":\"P{n}\",\
             \"hospital_id\":1042,\"department\":\"{ward}\",\"gender\":\"F\",\"age\":70,\
             \"admission_time\":\"2026-03-02T10:{n:02}:00Z\"}}\n"
        )
    };
    let file = dir.join("events.jsonl");
    // Before the change: two in Ward 7B (one by its alias), three in Renal.
    let first: String = [
        (1, "Ward 7B"),
        (2, "w7b"),
        (3, "Renal"),
        (4, "Renal"),
        (5, "renal"),
    ]
    .iter()
    .map(|(n, w)| admission(*n, w))
    .collect();
    std::fs::write(&file, first).expect("write");
    let data = dir.join("data");
    // With the HTTP API on: `/api/hospitals` follows the file too.
    let tokens = dir.join("tokens.toml");
    std::fs::write(
        &tokens,
        format!(
            "[[token]]\nname = \"ops\"\nsha256 = \"{}\"\nrole = \"admin\"\n",
            cds_engine::http::auth::hash_token("tok-ops")
        ),
    )
    .expect("tokens");
    let log = dir.join("engine.log");
    let child = cds()
        .args(["--departments", departments.to_str().expect("utf-8")])
        .args(["run", "--source", &format!("file:{}", file.display())])
        .args([
            "--until-idle",
            "4",
            "--rules",
            "off",
            "--http",
            "127.0.0.1:0",
        ])
        .arg("--tokens")
        .arg(&tokens)
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("cds run");
    let addr = common::http::address_in_log(&log, "http");
    let wards = || -> Vec<String> {
        let auth = [("Authorization", "Bearer tok-ops")];
        let text = common::http::response(&addr, "/api/hospitals", &auth, Duration::from_secs(5))
            .unwrap_or_default();
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let hospitals: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        hospitals
            .as_array()
            .into_iter()
            .flatten()
            .filter(|h| h["hospital_id"] == 1042)
            .flat_map(|h| h["departments"].as_array().cloned().unwrap_or_default())
            .filter_map(|d| d["department"].as_str().map(str::to_owned))
            .collect()
    };
    let listed = |expected: &[&str]| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while wards() != expected && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(wards(), expected, "/api/hospitals");
    };
    listed(&["Ward 7B", "Renal"]);
    std::thread::sleep(Duration::from_millis(1500));
    // Renal closes (its patients stay until they move), Geriatrics opens.
    std::fs::write(&departments, &after).expect("write");
    listed(&["Ward 7B", "Geriatrics"]);
    std::thread::sleep(Duration::from_millis(1500));
    let mut more = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .expect("append");
    let second: String = [(6, "Geriatrics"), (7, "cote"), (8, "Renal")]
        .iter()
        .map(|(n, w)| admission(*n, w))
        .collect();
    more.write_all(second.as_bytes()).expect("append");
    drop(more);
    finish(child);

    let got = documents(&data, "kpis");
    let occupancy = |ward: &str| &got[&format!("occupancy:1042:{ward}")];
    assert_eq!(occupancy("Ward 7B")["occupied"], json!(2));
    assert_eq!(occupancy("Ward 7B")["bed_capacity"], json!(28));
    assert_eq!(
        occupancy("Geriatrics")["occupied"],
        json!(2),
        "the added ward counts"
    );
    assert_eq!(occupancy("Geriatrics")["bed_capacity"], json!(30));
    assert_eq!(
        occupancy("Renal")["occupied"],
        json!(3),
        "the removed ward keeps the patients it had, and takes no one after"
    );
    assert_eq!(occupancy("Renal")["bed_capacity"], Value::Null);

    let store =
        cds_engine::dims::store::DimDepartmentStore::open(&data.join("cds.sqlite")).expect("store");
    let rows = store.rows().expect("rows");
    let versions = |ward: &str| -> Vec<(bool, bool)> {
        rows.iter()
            .filter(|r| r.hospital_id == 1042 && r.department == ward)
            .map(|r| (r.is_current, r.effective_to.is_some()))
            .collect()
    };
    assert_eq!(versions("Renal"), [(false, true)], "Renal closed");
    assert_eq!(versions("Geriatrics"), [(true, false)], "Geriatrics open");
    assert_eq!(versions("Ward 7B"), [(true, false)], "Ward 7B unchanged");
    let _ = std::fs::remove_dir_all(dir);
}

/// (hospital_id, 0 for Emergency else 1, bed_capacity, is_current, has effective_to)
fn rusqlite_rows(path: &Path) -> Vec<(i64, i64, i64, bool, bool)> {
    let store = cds_engine::dims::store::DimDepartmentStore::open(path).expect("store");
    store
        .rows()
        .expect("rows")
        .into_iter()
        .map(|r| {
            (
                r.hospital_id,
                i64::from(r.department != "Emergency"),
                r.bed_capacity,
                r.is_current,
                r.effective_to.is_some(),
            )
        })
        .collect()
}

/// An ADT^A08 that corrects a patient's sex moves them between the `by_gender` counts of the
/// department they lie in, and opens a new version of them in `gold/dim_patient`; a FHIR
/// Patient that changes does the same.
#[test]
fn demographic_updates_move_patients_between_gender_counts() {
    let dir = scratch("a08");
    let data = dir.join("data");
    let admission = |id: &str, patient: &str, sex: &str, at: &str| {
        format!(
            "MSH|^~\\&|SIM|H1|CDS|H1|{at}||ADT^A01|{id}|P|2.5.1\r\
             EVN|A01|{at}\r\
             PID|1||{patient}^^^SIM^MR||DOE^J||19500601|{sex}\r\
             PV1|1|I|ICU^^ICU-1^H1||||||||||||||||||||||||||||||||||||||||{at}\r\n"
        )
    };
    // P1 is admitted as female, P2 as male; an A08 an hour later says P1 is male and gives
    // no birth date (not stated: the age band stays).
    let a08 = "MSH|^~\\&|SIM|H1|CDS|H1|20260302110000||ADT^A08|U1|P|2.5.1\r\
               EVN|A08|20260302110000\r\
               PID|1||P1^^^SIM^MR||DOE^J|||M\r\
               PV1|1|I|ICU^^ICU-1^H1\r\n";
    let file = dir.join("messages.hl7");
    let write = |messages: &[String]| std::fs::write(&file, messages.concat()).expect("write");
    let both = vec![
        admission("M1", "P1", "F", "20260302100000"),
        admission("M2", "P2", "M", "20260302100500"),
    ];
    write(&both);
    run_on(&format!("file:{}", file.display()), "hl7v2", &data);
    let icu = |data: &Path| documents(data, "kpis")["occupancy:1:ICU"].clone();
    let before = icu(&data);
    assert_eq!(before["occupied"], json!(2));
    assert_eq!(before["by_gender"]["F"], json!(1));
    assert_eq!(before["by_gender"]["M"], json!(1));

    let data = dir.join("data-a08");
    let mut with_update = both.clone();
    with_update.push(a08.to_owned());
    write(&with_update);
    run_on(&format!("file:{}", file.display()), "hl7v2", &data);
    let after = icu(&data);
    assert_eq!(after["occupied"], json!(2), "an update moves no one");
    assert_eq!(after["by_gender"]["F"], json!(0), "{after}");
    assert_eq!(after["by_gender"]["M"], json!(2), "{after}");
    assert_eq!(
        after["by_age_band"], before["by_age_band"],
        "no birth date stated"
    );
    let patients = common::delta::read_local(&data.join("lake"), "gold/dim_patient");
    let genders: Vec<(Option<String>, Option<bool>)> = patients
        .strings("gender")
        .into_iter()
        .zip(patients.bools("is_current"))
        .collect();
    assert_eq!(
        patients.rows(),
        3,
        "P1 twice (female, then male), P2 once: {genders:?}"
    );
    assert!(
        genders.contains(&(Some("F".into()), Some(false))),
        "{genders:?}"
    );

    // The same through FHIR: a Patient already known whose gender changes.
    let data = dir.join("data-fhir");
    let bundle = |gender: &str, updated: &str, encounter: bool| {
        let mut entries = vec![json!({"resource": {"resourceType": "Patient", "id": "P9",
            "gender": gender, "birthDate": "1950-06-01", "meta": {"lastUpdated": updated}}})];
        if encounter {
            entries.push(json!({"resource": {"resourceType": "Encounter", "id": "E9",
                "status": "in-progress", "subject": {"reference": "Patient/P9"},
                "serviceProvider": {"identifier": {"value": "1"}},
                "location": [{"location": {"display": "ICU"},
                    "period": {"start": "2026-03-02T10:00:00Z"}}],
                "period": {"start": "2026-03-02T10:00:00Z"}}}));
        }
        json!({"resourceType": "Bundle", "type": "message", "entry": entries}).to_string() + "\n"
    };
    let fhir = dir.join("bundles.ndjson");
    std::fs::write(
        &fhir,
        bundle("female", "2026-03-02T09:00:00Z", true)
            + bundle("male", "2026-03-02T12:00:00Z", false).as_str(),
    )
    .expect("write");
    run_on(&format!("file:{}", fhir.display()), "fhir", &data);
    let icu = icu(&data);
    assert_eq!(icu["occupied"], json!(1), "{icu}");
    assert_eq!(icu["by_gender"]["M"], json!(1), "{icu}");
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------
// Public HL7 v2 samples (the `hl7` package's test fixtures, see tests/fixtures/hl7v2)

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hl7v2")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn public_hl7v2_samples_parse_and_map() {
    use cds_engine::decode::{hl7v2, Census, FormatError};

    // An ADT^A01 from a hospital feed: PID-3 repetitions (the MR one is taken), PV1, DG1, IN1.
    let msh = fixture("sample_msh.hl7");
    let events = hl7v2::to_events(&msh, &mut Census::default()).expect("sample_msh maps");
    let e = &events[0];
    assert_eq!(e.event_type.as_deref(), Some("ADMISSION"));
    assert_eq!(e.event_id, "hl7:HNAM_PM:Q150084616T145947960");
    assert_eq!(e.patient_id.as_deref(), Some("2148790"));
    assert_eq!(e.gender.as_deref(), Some("F"));
    assert_eq!(e.department.as_deref(), Some("MBN1"));
    assert_eq!(e.bed_id.as_deref(), Some("MBN1-06"));
    assert_eq!(e.diagnosis_code.as_deref(), Some("440.21"));
    assert_eq!(e.insurance_type.as_deref(), Some("A10A"));
    assert_eq!(
        e.admission_priority, None,
        "PV1-4 is 4, not an admission type we map"
    );
    assert_eq!(
        e.event_timestamp.to_rfc3339(),
        "2013-10-17T14:00:41+00:00",
        "no EVN: MSH-7"
    );
    assert_eq!(e.age, Some(60), "born 1952-11-29, event 2013-10-17");

    // Components, subcomponents and repetitions.
    let rep = hl7v2::parse(&fixture("rep_sample_hl7.hl7")).expect("rep sample parses");
    let pid = rep.segment("PID").expect("PID");
    assert_eq!(pid.get(1, 1), "Field1");
    assert_eq!((pid.get(2, 1), pid.get(2, 2)), ("Component1", "Component2"));
    assert_eq!(pid.sub(3, 0, 2, 2), "Sub-Component2");
    assert_eq!(pid.repetitions(4), 2);
    assert_eq!(pid.sub(4, 1, 1, 1), "Repeat2");

    // A laboratory ORU^R01 carries no vital sign: a clear error, which MLLP answers with AE.
    match hl7v2::to_events(&fixture("sample_hl7.hl7"), &mut Census::default()) {
        Err(FormatError::Hl7(reason)) => assert!(reason.contains("vital"), "{reason}"),
        other => panic!("expected an error, got {other:?}"),
    }

    // Batch and file wrappers around ADT^A04 registrations (an outpatient with no location).
    for (name, n) in [("sample_batch1.hl7", 2), ("sample_file.hl7", 1)] {
        let dir = scratch(&format!("fixture-{n}"));
        let data = dir.join("data");
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/hl7v2")
            .join(name);
        run_on(&format!("file:{}", path.display()), "hl7v2", &data);
        let quarantined =
            std::fs::read_to_string(data.join("lake/silver/quarantine/quarantine.jsonl"))
                .unwrap_or_default();
        let records: Vec<Value> = quarantined
            .lines()
            .map(|l| serde_json::from_str(l).expect("quarantined record"))
            .collect();
        assert_eq!(records.len(), n, "{name}: every A04 reaches Silver");
        for r in &records {
            assert_eq!(r["event_type"], "ADMISSION");
            assert_eq!(r["patient_id"], "0000112234");
            assert!(r["dq_flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "MISSING_DEPARTMENT")));
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn an_excel_extract_equals_its_csv() {
    let dir = scratch("xlsx");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ehr");
    let mut kpis = Vec::new();
    for name in ["extract.csv", "extract.xlsx"] {
        let data = dir.join(name.replace('.', "-"));
        ingest(&fixtures.join(name), &data, &format!("cds ingest {name}"));
        assert!(
            !data.join("lake/deadletter/deadletter.jsonl").exists()
                || std::fs::read_to_string(data.join("lake/deadletter/deadletter.jsonl"))
                    .unwrap_or_default()
                    .is_empty(),
            "{name}: every row is an event"
        );
        kpis.push(documents(&data, "kpis"));
    }
    assert!(kpis[0]
        .iter()
        .any(|(k, v)| k.starts_with("occupancy:") && v["occupied"].as_i64() > Some(0)));
    assert!(
        kpis[0] == kpis[1],
        "the workbook's KPIs differ from the CSV's:\n{}",
        differences(&kpis[0], &kpis[1])
    );
    let _ = std::fs::remove_dir_all(dir);
}
