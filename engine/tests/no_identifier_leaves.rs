//! No raw patient identifier leaves the engine, whatever the input format: the same patients
//! sent as event JSON (a dirty stream), FHIR R4 Bundles, HL7 v2 from a file and over MLLP, a
//! CSV extract without an event id column (through `cds run` and `cds ingest`) and an Excel
//! workbook. Every output is searched for the raw identifiers: the stored documents and alerts
//! (SQLite), the acknowledgement store, the lake's Gold tables (read back as tables), the
//! checkpoints, the audit log, the logs, and the HTTP and SSE bodies.
//!
//! The stores that keep the payload as it came, on purpose (docs/security.md), are not
//! searched: the dead-letter store, quarantined and clean Silver records, Bronze, the MLLP log and
//! converted extracts.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use cds_engine::http::auth::hash_token;
use cds_engine::source::mllp;
use common::formats::{csv_extract, encounter_ids, fhir_bundle, hl7_message};
use common::http::response;
use common::{cds, free_port, ok, rules_dir, scratch, simulate};
use serde_json::Value;

const ADMIN: &str = "leak-test-admin-token";

/// Directories (relative to the data directory) that keep raw payloads on purpose.
const RAW_STORES: [&str; 5] = [
    "lake/deadletter",
    "lake/silver",
    "lake/bronze",
    "mllp",
    "ingest",
];

fn simulated(n: usize, dirty: &str) -> Vec<Value> {
    let out = simulate(&[
        "--seed",
        "21",
        "--max-events",
        &n.to_string(),
        "--dirty-rate",
        dirty,
    ]);
    String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Every patient identifier of the events, as sent.
fn patient_ids(events: &[Value]) -> BTreeSet<String> {
    events
        .iter()
        .filter_map(|e| e["patient_id"].as_str())
        .filter(|p| p.len() >= 4)
        .map(str::to_owned)
        .collect()
}

/// The raw identifiers found in `text`: split at every character that is not a letter or a
/// digit, so that an identifier inside a derived id (`ehr:P1000001:…`, `enc-P1000001-1`) is
/// found as well.
fn leaks(text: &str, ids: &BTreeSet<String>) -> BTreeSet<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| ids.contains(*t))
        .map(str::to_owned)
        .collect()
}

fn tokens_file(dir: &Path) -> PathBuf {
    let path = dir.join("tokens.toml");
    let text = format!(
        "[[token]]\nname = \"ops\"\nsha256 = \"{}\"\nrole = \"admin\"\n",
        hash_token(ADMIN)
    );
    std::fs::write(&path, text).expect("tokens");
    path
}

/// A running engine with an HTTP port, and what it said on stderr.
struct Engine {
    child: Child,
    port: u16,
    stderr: PathBuf,
    sse: std::thread::JoinHandle<String>,
}

fn start(dir: &Path, source: &str, format: &str) -> Engine {
    let port = free_port();
    let stderr = dir.join("stderr.log");
    let child = cds()
        .env("CDS_LOG", "info")
        .args(["run", "--source", source, "--format", format])
        .args(["--until-idle", "4", "--checkpoint-interval", "1"])
        .arg("--http")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--tokens")
        .arg(tokens_file(dir))
        .arg("--rules")
        .arg(rules_dir())
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("cds run");
    // The live feed, read from the start until the engine stops.
    let sse = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut stream = loop {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
                break s;
            }
            if Instant::now() > deadline {
                return String::new();
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let _ = write!(
            stream,
            "GET /api/alerts/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n\r\n"
        );
        let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
        let mut text = String::new();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            text.push_str(&line);
            line.clear();
        }
        text
    });
    Engine {
        child,
        port,
        stderr,
        sse,
    }
}

fn get(port: u16, path: &str) -> Option<String> {
    let auth = format!("Bearer {ADMIN}");
    let headers = [("Authorization", auth.as_str())];
    response(
        &format!("127.0.0.1:{port}"),
        path,
        &headers,
        Duration::from_secs(10),
    )
}

/// Polls the API while the engine runs; returns every body seen, the logs and the feed.
fn finish(mut engine: Engine) -> (Vec<String>, String) {
    let mut bodies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(Some(status)) = engine.child.try_wait() {
            assert!(status.success(), "cds run failed ({status})");
            break;
        }
        assert!(Instant::now() < deadline, "the run did not stop");
        for path in ["/api/kpis", "/api/alerts", "/api/rules/stats"] {
            if let Some(body) = get(engine.port, path) {
                bodies.push(body);
            }
        }
        std::thread::sleep(Duration::from_millis(400));
    }
    bodies.push(engine.sse.join().unwrap_or_default());
    let log = std::fs::read_to_string(&engine.stderr).unwrap_or_default();
    (bodies, log)
}

/// Every raw identifier found in the data directory's files (outside the raw stores) and in
/// its lake's Gold tables, with where.
fn scan_data_dir(data: &Path, ids: &BTreeSet<String>) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![data.to_path_buf()];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(data)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            if RAW_STORES.iter().any(|r| rel.starts_with(r)) {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if rel.ends_with(".parquet") {
                continue; // compressed: read as tables below
            }
            files += 1;
            let bytes = std::fs::read(&path).expect("read");
            let text = String::from_utf8_lossy(&bytes);
            for id in leaks(&text, ids) {
                found.push(format!("{rel}: {id}"));
            }
        }
    }
    assert!(files > 3, "the run left its stores in {}", data.display());
    let lake = data.join("lake");
    for table in [
        "gold/fact_patient_flow",
        "gold/kpi_snapshots",
        "gold/dim_patient",
        "gold/dim_department",
    ] {
        if !lake.join(table).exists() {
            continue;
        }
        let read = common::delta::read_local(&lake, table);
        for batch in &read.batches {
            for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
                use deltalake::arrow::array::{Array, AsArray};
                use deltalake::arrow::datatypes::DataType;
                if field.data_type() != &DataType::Utf8 {
                    continue;
                }
                let strings = column.as_string::<i32>();
                for i in 0..strings.len() {
                    if strings.is_null(i) {
                        continue;
                    }
                    for id in leaks(strings.value(i), ids) {
                        found.push(format!("{table}.{}: {id}", field.name()));
                    }
                }
            }
        }
    }
    found
}

fn check(name: &str, data: &Path, outputs: &[String], ids: &BTreeSet<String>) {
    assert!(!ids.is_empty());
    let mut found = scan_data_dir(data, ids);
    for (i, text) in outputs.iter().enumerate() {
        for id in leaks(text, ids) {
            found.push(format!("output {i}: {id}"));
        }
    }
    found.sort();
    found.dedup();
    assert!(
        found.is_empty(),
        "{name}: raw patient identifiers left the engine:\n{}",
        found
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// `cds ingest --kind ehr` of an extract with the rule pack; what it printed (stdout, stderr).
fn ingest(extract: &Path, data: &Path, what: &str) -> [String; 2] {
    let out = ok(
        cds()
            .env("CDS_LOG", "info")
            .args(["ingest", "--kind", "ehr"])
            .arg(extract)
            .arg("--rules")
            .arg(rules_dir())
            .arg("--data-dir")
            .arg(data)
            .output()
            .expect("ingest"),
        what,
    );
    [
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ]
}

/// A file source with the HTTP API and feed read while it runs.
fn through_file(name: &str, file_name: &str, content: &str, format: &str, ids: &BTreeSet<String>) {
    let dir = scratch(name);
    let file = dir.join(file_name);
    std::fs::write(&file, content).expect("write input");
    let engine = start(&dir, &format!("file:{}", file.display()), format);
    let (mut outputs, log) = finish(engine);
    assert!(
        outputs.iter().any(|b| b.contains("\"occupancy\"")),
        "{name}: the API served KPIs"
    );
    outputs.push(log);
    check(name, &dir.join("data"), &outputs, ids);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn event_json_with_dirty_data() {
    let events = simulated(3_000, "0.3");
    let ids = patient_ids(&events);
    let text: String = events.iter().map(|e| format!("{e}\n")).collect();
    through_file("json", "events.jsonl", &text, "json", &ids);
}

#[test]
fn fhir_bundles() {
    let events = simulated(2_000, "0");
    let ids = patient_ids(&events);
    let encounters = encounter_ids(&events);
    let text: String = events
        .iter()
        .zip(&encounters)
        .map(|(e, enc)| format!("{}\n", fhir_bundle(e, enc)))
        .collect();
    through_file("fhir", "bundles.ndjson", &text, "fhir", &ids);
}

#[test]
fn hl7v2_from_a_file() {
    let events = simulated(2_000, "0");
    let ids = patient_ids(&events);
    let text: String = events
        .iter()
        .enumerate()
        .map(|(i, e)| format!("{}\n", hl7_message(e, &format!("C{i}"))))
        .collect();
    through_file("hl7-file", "messages.hl7", &text, "hl7v2", &ids);
}

#[test]
fn a_csv_extract_without_event_ids_through_run_and_ingest() {
    let events = simulated(2_000, "0");
    let ids = patient_ids(&events);
    let csv = csv_extract(&events, false);
    through_file("csv-run", "extract.csv", &csv, "ehr-csv", &ids);

    let dir = scratch("csv-ingest");
    let file = dir.join("extract.csv");
    std::fs::write(&file, &csv).expect("write");
    let data = dir.join("data");
    let outputs = ingest(&file, &data, "cds ingest");
    check("csv-ingest", &data, &outputs, &ids);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_excel_workbook() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ehr");
    let csv = std::fs::read_to_string(fixtures.join("extract.csv")).expect("fixture");
    let ids: BTreeSet<String> = csv
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(3))
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    let dir = scratch("xlsx");
    let data = dir.join("data");
    let outputs = ingest(&fixtures.join("extract.xlsx"), &data, "cds ingest xlsx");
    check("xlsx", &data, &outputs, &ids);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn hl7v2_over_mllp() {
    let events = simulated(1_500, "0");
    let ids = patient_ids(&events);
    let dir = scratch("mllp");
    let listen = free_port();
    let engine = start(&dir, &format!("mllp://127.0.0.1:{listen}"), "hl7v2");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stream = loop {
        match TcpStream::connect(("127.0.0.1", listen)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("the MLLP listener does not accept: {e}"),
        }
    };
    let mut acks = String::new();
    for (i, e) in events.iter().enumerate() {
        let ack =
            mllp::send(&mut stream, hl7_message(e, &format!("M{i}")).as_bytes()).expect("ACK");
        acks.push_str(&String::from_utf8_lossy(&ack));
    }
    drop(stream);
    let (mut outputs, log) = finish(engine);
    outputs.push(log);
    outputs.push(acks);
    check("mllp", &dir.join("data"), &outputs, &ids);
    let _ = std::fs::remove_dir_all(dir);
}
