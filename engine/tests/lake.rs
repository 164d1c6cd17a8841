//! The lake's Delta tables, read back by a reader that shares nothing with the writer
//! (`common::delta`: the Delta log by hand, data files with the `parquet` crate), once from the
//! local directory and once from Azure Blob Storage (the Azurite emulator that `tests/run.sh`
//! starts, reached with `--lake az://...`).
//!
//! - Row counts: Bronze holds every input line, Silver every event that is not a duplicate
//!   (quarantined ones included), the patient-flow facts every Gold ADT event.
//! - A KPI: the length-of-stay documents the engine wrote equal the ones recomputed from the
//!   `gold/fact_patient_flow` table; the newest `gold/kpi_snapshots` row of each document
//!   equals the document in the sink.
//! - Schema evolution: an attribute that appears in the middle of the stream lands in Bronze
//!   (the payload) and in Silver's `extra` column; the schema and every reader stay the same.
//! - Gold holds no patient identifier: only pseudonymous keys.
//! - Checkpoints in Blob Storage (`--checkpoints az://...`): a run continues from them, with
//!   nothing of them on the local disk, and ends where an uninterrupted run ends.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::delta::{self, TableRead};
use common::{cds, ok, scratch, simulate, unique};
use serde_json::Value;

/// Simulated events, with `new_attribute` added to every line from the middle on.
fn input(dir: &Path, events: usize) -> (PathBuf, usize) {
    let out = simulate(&[
        "--seed",
        "31",
        "--max-events",
        &events.to_string(),
        "--dirty-rate",
        "0.03",
    ]);
    let text = String::from_utf8_lossy(&out);
    let mut lines = Vec::new();
    let mut evolved = 0;
    for (i, line) in text.lines().enumerate() {
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(mut m)) if i >= events / 2 => {
                m.insert("ward_acuity".into(), Value::from(i % 5));
                evolved += 1;
                lines.push(Value::Object(m).to_string());
            }
            _ => lines.push(line.to_owned()),
        }
    }
    let file = dir.join("events.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").expect("write events");
    (file, evolved)
}

fn run(file: &Path, data: &Path, lake: Option<&str>, env: &[(&str, &str)]) {
    let mut c = cds();
    c.args(["run", "--http", "off", "--rules", "off", "--until-end"])
        .arg("--source")
        .arg(format!("file:{}", file.display()))
        .arg("--data-dir")
        .arg(data);
    if let Some(l) = lake {
        c.args(["--lake", l]);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    ok(c.output().expect("run"), "cds run");
}

fn export(data: &Path, container: &str) -> BTreeMap<String, Value> {
    common::exported(data, container).into_iter().collect()
}

struct Lake {
    bronze: TableRead,
    silver: TableRead,
    flow: TableRead,
    kpis: TableRead,
    patients: TableRead,
    departments: TableRead,
}

fn read_all(read: impl Fn(&str) -> TableRead) -> Lake {
    Lake {
        bronze: read("bronze/events"),
        silver: read("silver/events"),
        flow: read("gold/fact_patient_flow"),
        kpis: read("gold/kpi_snapshots"),
        patients: read("gold/dim_patient"),
        departments: read("gold/dim_department"),
    }
}

/// What both tests check of one lake.
fn check(lake: &Lake, data: &Path, lines: usize, evolved: usize) {
    // Bronze: every line once, raw.
    assert_eq!(lake.bronze.rows(), lines, "bronze holds every input line");
    assert_eq!(
        delta::distinct(&lake.bronze.positions()).len(),
        lines,
        "each line once"
    );
    assert_eq!(lake.bronze.partition_columns, ["event_date"]);
    assert!(lake.bronze.partitions.iter().all(|p| p
        .get("event_date")
        .is_some_and(|d| d.as_ref().is_some_and(|d| d.len() == 10))));

    // Silver: every event but duplicates and dead letters; quarantined included.
    let dead = std::fs::read_to_string(data.join("lake/deadletter/deadletter.jsonl"))
        .unwrap_or_default()
        .lines()
        .count();
    let quarantined = std::fs::read_to_string(data.join("lake/silver/quarantine/quarantine.jsonl"))
        .unwrap_or_default()
        .lines()
        .count();
    let silver_ids = lake.silver.strings("event_id");
    let distinct_ids = delta::distinct(&silver_ids);
    assert_eq!(
        distinct_ids.len(),
        silver_ids.len(),
        "no duplicate in Silver"
    );
    assert!(dead > 0 && quarantined > 0, "the dirty input has both");
    assert!(silver_ids.len() + dead <= lines);
    let q = lake
        .silver
        .batches
        .iter()
        .map(|b| {
            use deltalake::arrow::array::AsArray;
            let c = b.column_by_name("quarantined").expect("quarantined");
            c.as_boolean().true_count()
        })
        .sum::<usize>();
    assert_eq!(q, quarantined, "quarantined records are in Silver, flagged");

    // Schema evolution: the new attribute is in `extra` from the middle on, and in Bronze's
    // payloads; the Silver schema never changed.
    let with_attribute = lake
        .silver
        .strings("extra")
        .into_iter()
        .flatten()
        .filter(|e| {
            serde_json::from_str::<Value>(e)
                .ok()
                .is_some_and(|v| v.get("ward_acuity").is_some())
        })
        .count();
    assert!(
        with_attribute > evolved / 2 && with_attribute <= evolved,
        "{with_attribute} Silver rows carry the new attribute of {evolved} lines"
    );
    assert!(lake.silver.schema_columns.contains(&"extra".to_owned()));
    assert!(!lake
        .silver
        .schema_columns
        .contains(&"ward_acuity".to_owned()));

    // Gold: pseudonymous keys only.
    let inputs = std::fs::read_to_string(data.join("../events.jsonl")).unwrap_or_default();
    let patient_ids: std::collections::BTreeSet<String> = inputs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["patient_id"].as_str().map(str::to_owned))
        .collect();
    let keys = lake.flow.strings("patient_key");
    assert!(!keys.is_empty());
    for k in keys.iter().flatten() {
        assert_eq!(k.len(), 16, "a pseudonymous key");
        assert!(!patient_ids.contains(k), "a patient id in Gold");
    }

    // SCD2 dimensions: unique surrogate keys, one current version per member.
    let departments = lake.departments.rows();
    assert_eq!(
        departments, 49,
        "7 hospitals x 7 departments from departments.csv"
    );
    assert!(lake
        .departments
        .bools("is_current")
        .iter()
        .all(|c| *c == Some(true)));
    for dim in [&lake.patients, &lake.departments] {
        let keys = dim.ints("surrogate_key");
        assert_eq!(
            delta::distinct(&keys).len(),
            keys.len(),
            "surrogate keys are unique"
        );
    }
    let members = lake.patients.strings("patient_key");
    let current = lake.patients.bools("is_current");
    let current_members: Vec<&Option<String>> = members
        .iter()
        .zip(&current)
        .filter(|(_, c)| **c == Some(true))
        .map(|(m, _)| m)
        .collect();
    assert_eq!(
        current_members.len(),
        delta::distinct(&members).len(),
        "one current version per patient"
    );
    let flow_patients = delta::distinct(&keys);
    let dim_patients = delta::distinct(&members);
    assert!(
        flow_patients.is_subset(&dim_patients),
        "every patient of the facts has a version"
    );
    for k in dim_patients.iter().flatten() {
        assert!(!patient_ids.contains(k), "a patient id in dim_patient");
    }
    // The age only as its band: an exact age narrows a pseudonymous patient down to a person.
    let bands = ["0-17", "18-39", "40-64", "65-79", "80+"];
    let ages = lake.patients.strings("age_band");
    assert!(
        ages.iter().flatten().count() > 0,
        "dim_patient has age bands"
    );
    for a in ages.iter().flatten() {
        assert!(bands.contains(&a.as_str()), "not an age band: {a}");
    }
    assert!(
        lake.patients
            .batches
            .iter()
            .all(|b| b.column_by_name("age").is_none()),
        "an exact age in dim_patient"
    );

    // A KPI from the facts: discharges and mean length of stay per department.
    let mut stays: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    {
        use deltalake::arrow::array::{Array, AsArray};
        use deltalake::arrow::datatypes::{Float64Type, Int64Type};
        for b in &lake.flow.batches {
            let kind = b
                .column_by_name("event_type")
                .expect("type")
                .as_string::<i32>();
            let hospital = b
                .column_by_name("hospital_id")
                .expect("hospital")
                .as_primitive::<Int64Type>();
            let dept = b
                .column_by_name("department")
                .expect("dept")
                .as_string::<i32>();
            let los = b
                .column_by_name("los_hours")
                .expect("los")
                .as_primitive::<Float64Type>();
            for i in 0..b.num_rows() {
                if kind.value(i) == "DISCHARGE" && !los.is_null(i) {
                    let id = format!("los:{}:{}", hospital.value(i), dept.value(i));
                    let e = stays.entry(id).or_default();
                    e.0 += 1;
                    e.1 += los.value(i);
                }
            }
        }
    }
    let docs = export(data, "kpis");
    let los_docs: BTreeMap<&String, &Value> = docs
        .iter()
        .filter(|(id, _)| id.starts_with("los:"))
        .filter(|(_, d)| d["discharges"].as_u64().unwrap_or(0) > 0)
        .collect();
    assert!(!los_docs.is_empty());
    assert_eq!(
        los_docs.len(),
        stays.len(),
        "departments with discharges: {:?} vs {:?}",
        los_docs.keys().collect::<Vec<_>>(),
        stays.keys().collect::<Vec<_>>()
    );
    for (id, doc) in &los_docs {
        let (n, sum) = stays[*id];
        assert_eq!(doc["discharges"].as_u64(), Some(n), "{id}: discharges");
        let avg = doc["avg_los_hours"].as_f64().expect("avg_los_hours");
        assert!(
            (avg - sum / n as f64).abs() < 0.01,
            "{id}: {avg} vs {}",
            sum / n as f64
        );
    }

    // The newest snapshot of each document equals the sink's document.
    let mut newest: BTreeMap<String, (i64, Value)> = BTreeMap::new();
    {
        use deltalake::arrow::array::AsArray;
        use deltalake::arrow::datatypes::TimestampMicrosecondType;
        for b in &lake.kpis.batches {
            let id = b.column_by_name("id").expect("id").as_string::<i32>();
            let at = b
                .column_by_name("written_at")
                .expect("written_at")
                .as_primitive::<TimestampMicrosecondType>();
            let doc = b
                .column_by_name("document")
                .expect("doc")
                .as_string::<i32>();
            for i in 0..b.num_rows() {
                let e = newest
                    .entry(id.value(i).to_owned())
                    .or_insert((i64::MIN, Value::Null));
                if at.value(i) >= e.0 {
                    *e = (
                        at.value(i),
                        serde_json::from_str(doc.value(i)).expect("doc"),
                    );
                }
            }
        }
    }
    assert_eq!(newest.len(), docs.len(), "a snapshot of every document");
    for (id, doc) in &docs {
        let snap = &newest[id].1;
        for field in ["occupied", "discharges", "avg_los_hours", "patients"] {
            assert_eq!(snap.get(field), doc.get(field), "{id}.{field}");
        }
    }
}

#[test]
fn local_lake_is_read_back_by_an_independent_reader() {
    let dir = scratch("local");
    let lines = 6_000;
    let (file, evolved) = input(&dir, lines);
    let data = dir.join("data");
    let started = std::time::Instant::now();
    run(&file, &data, None, &[]);
    eprintln!("run with the local lake: {:?}", started.elapsed());
    let lake = read_all(|t| delta::read_local(&data.join("lake"), t));
    check(&lake, &data, lines, evolved);
    eprintln!(
        "bronze {} rows in {} files / {} versions; silver {}; facts {}; kpi snapshots {}",
        lake.bronze.rows(),
        lake.bronze.files,
        lake.bronze.versions,
        lake.silver.rows(),
        lake.flow.rows(),
        lake.kpis.rows()
    );

    // A second run over the same input and lake writes nothing twice (the tables' txn record).
    let again = dir.join("again");
    std::fs::create_dir_all(&again).expect("dir");
    run(
        &file,
        &again,
        Some(&data.join("lake").display().to_string()),
        &[],
    );
    let bronze = delta::read_local(&data.join("lake"), "bronze/events");
    assert_eq!(bronze.rows(), lines, "a rerun adds no Bronze row");
    for table in [
        "silver/events",
        "gold/fact_patient_flow",
        "gold/dim_patient",
        "gold/dim_department",
    ] {
        let before = match table {
            "silver/events" => lake.silver.rows(),
            "gold/fact_patient_flow" => lake.flow.rows(),
            "gold/dim_patient" => lake.patients.rows(),
            _ => lake.departments.rows(),
        };
        let after = delta::read_local(&data.join("lake"), table).rows();
        assert_eq!(after, before, "a rerun adds no row to {table}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// `cds replay --from-bronze` rebuilds every output from Bronze alone: the KPI documents, the
/// alerts and the dead-letter store of a fresh data directory equal those of the original run,
/// and the lake (the one Bronze is read from) gains no row. `cds lake compact` then merges each
/// partition's files into one, and the independent reader sees the same rows.
#[test]
fn replay_from_bronze_rebuilds_every_output_and_compaction_keeps_every_row() {
    let dir = scratch("replay");
    let (file, _) = input(&dir, 4_000);
    let (original, replayed) = (dir.join("original"), dir.join("replayed"));
    let lake = original.join("lake").display().to_string();
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/../cds-rules");
    ok(
        cds()
            .args(["run", "--http", "off", "--until-end", "--batch-size", "500"])
            .args(["--rules", rules, "--data-dir"])
            .arg(&original)
            .arg("--source")
            .arg(format!("file:{}", file.display()))
            .output()
            .expect("run"),
        "cds run",
    );
    let before: Vec<(&str, usize)> = ["bronze/events", "silver/events", "gold/fact_patient_flow"]
        .into_iter()
        .map(|t| (t, delta::read_local(Path::new(&lake), t).rows()))
        .collect();

    ok(
        cds()
            .args(["replay", "--from-bronze", "--http", "off", "--rules", rules])
            .args(["--lake", &lake, "--data-dir"])
            .arg(&replayed)
            .output()
            .expect("replay"),
        "cds replay",
    );
    for container in ["kpis", "alerts"] {
        // Without the times of writing and the watermark at writing (`as_of`): the replay
        // cuts the input into other epochs than the original run did.
        let (expected, got) = (
            common::comparable(export(&original, container)),
            common::comparable(export(&replayed, container)),
        );
        assert!(!expected.is_empty(), "the original run wrote {container}");
        assert!(
            expected == got,
            "{container} of the replay differ from the original run ({} vs {} documents):\n{}",
            expected.len(),
            got.len(),
            common::differences(&expected, &got)
        );
    }
    let dead = |data: &Path| {
        std::fs::read_to_string(data.join("lake/deadletter/deadletter.jsonl")).unwrap_or_default()
    };
    assert!(!dead(&original).is_empty());
    assert_eq!(
        dead(&replayed),
        dead(&original),
        "the same dead letters, once"
    );
    for (table, rows) in &before {
        let after = delta::read_local(Path::new(&lake), table).rows();
        assert_eq!(after, *rows, "the replay adds no row to {table}");
    }

    // A second input into the same lake: its partitions now hold several files each.
    let second = dir.join("second.jsonl");
    let out = simulate(&["--seed", "32", "--max-events", "3000"]);
    std::fs::write(&second, out).expect("second input");
    run(&second, &dir.join("second"), Some(&lake), &[]);
    let before: Vec<(&str, usize)> = ["bronze/events", "silver/events", "gold/fact_patient_flow"]
        .into_iter()
        .map(|t| (t, delta::read_local(Path::new(&lake), t).rows()))
        .collect();
    let compact = ok(
        cds()
            .args(["lake", "compact", "--lake", &lake])
            .output()
            .expect("compact"),
        "cds lake compact",
    );
    eprintln!("{}", String::from_utf8_lossy(&compact.stdout));
    for (table, rows) in &before {
        let read = delta::read_local(Path::new(&lake), table);
        assert_eq!(read.rows(), *rows, "compaction keeps every row of {table}");
        let partitions = delta::distinct(&read.partitions).len();
        assert!(
            read.files <= partitions,
            "{table}: {} files for {partitions} partitions after compaction",
            read.files
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The emulator's well-known development account.
const ACCOUNT: &str = "devstoreaccount1";
const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn azurite() -> String {
    std::env::var("CDS_TEST_AZURITE")
        .expect("CDS_TEST_AZURITE=http://127.0.0.1:PORT (tests/run.sh starts the Azurite emulator)")
}

#[test]
fn azure_lake_on_the_emulator_is_read_back_by_an_independent_reader() {
    let endpoint = azurite();
    let container = unique("lake").to_ascii_lowercase().replace('_', "-");
    let container: String = container
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(60)
        .collect();
    create_container(&endpoint, &container);

    let dir = scratch("azure");
    let lines = 4_000;
    let (file, evolved) = input(&dir, lines);
    let data = dir.join("data");
    let env = [
        ("AZURE_STORAGE_USE_EMULATOR", "true"),
        ("AZURITE_BLOB_STORAGE_URL", endpoint.as_str()),
        ("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT),
        ("AZURE_STORAGE_ACCOUNT_KEY", ACCOUNT_KEY),
    ];
    let location = format!("az://{container}/cds");
    let started = std::time::Instant::now();
    run(&file, &data, Some(&location), &env);
    eprintln!("run with the lake on Azurite: {:?}", started.elapsed());
    assert!(
        !data.join("lake/bronze").exists(),
        "the tables went to Blob Storage, not the local directory"
    );

    // object_store's emulator settings come from the environment of this process.
    std::env::set_var("AZURITE_BLOB_STORAGE_URL", &endpoint);
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(
        object_store::azure::MicrosoftAzureBuilder::new()
            .with_use_emulator(true)
            .with_container_name(&container)
            .build()
            .expect("an Azure store on the emulator"),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let lake = read_all(|t| rt.block_on(delta::read_table(store.clone(), &format!("cds/{t}"))));
    check(&lake, &data, lines, evolved);
    let _ = std::fs::remove_dir_all(dir);
}

/// A container of a unique name on the emulator, created.
fn emulator_container(prefix: &str) -> String {
    let container: String = unique(prefix)
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(60)
        .collect();
    create_container(&azurite(), &container);
    container
}

#[test]
fn checkpoints_in_blob_storage_carry_a_run_on() {
    let endpoint = azurite();
    let container = emulator_container("ckpt");
    let env = [
        ("AZURE_STORAGE_USE_EMULATOR", "true"),
        ("AZURITE_BLOB_STORAGE_URL", endpoint.as_str()),
        ("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT),
        ("AZURE_STORAGE_ACCOUNT_KEY", ACCOUNT_KEY),
    ];
    let dir = scratch("ckpt-blob");
    let events = simulate(&[
        "--seed",
        "37",
        "--max-events",
        "4000",
        "--dirty-rate",
        "0.03",
    ]);
    let text = String::from_utf8_lossy(&events).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let (first, second) = lines.split_at(lines.len() / 2);
    let file = dir.join("events.jsonl");
    let location = format!("az://{container}/cds/checkpoints");
    let run = |data: &Path, checkpoints: Option<&str>| -> u64 {
        let mut c = cds();
        c.args([
            "run",
            "--http",
            "off",
            "--rules",
            "off",
            "--lake",
            "off",
            "--until-end",
        ])
        .args(["--checkpoint-interval", "3600"])
        .arg("--source")
        .arg(format!("file:{}", file.display()))
        .arg("--data-dir")
        .arg(data);
        if let Some(at) = checkpoints {
            c.args(["--checkpoints", at]);
        }
        c.envs(env);
        let out = ok(c.output().expect("run"), "cds run");
        common::events_processed(&String::from_utf8_lossy(&out.stdout))
    };

    // The first half, then the whole file: the second run continues from the checkpoint that
    // the first left in Blob Storage.
    let data = dir.join("data");
    std::fs::write(&file, first.join("\n") + "\n").expect("write");
    assert_eq!(run(&data, Some(&location)), first.len() as u64);
    assert!(
        !data.join("lake/checkpoints").exists(),
        "the checkpoints went to Blob Storage, not the data directory"
    );
    std::fs::write(&file, lines.join("\n") + "\n").expect("write");
    assert_eq!(
        run(&data, Some(&location)),
        second.len() as u64,
        "continued from the checkpoint: only the second half was read"
    );

    // The checkpoints in Blob Storage, listed with object_store: at least one per run, and
    // no more than the newest three.
    std::env::set_var("AZURITE_BLOB_STORAGE_URL", &endpoint);
    let store = object_store::azure::MicrosoftAzureBuilder::new()
        .with_use_emulator(true)
        .with_container_name(&container)
        .build()
        .expect("an Azure store on the emulator");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let names: Vec<String> = rt.block_on(async {
        use futures_util::TryStreamExt;
        use object_store::ObjectStore;
        store
            .list(Some(&object_store::path::Path::from("cds/checkpoints")))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .expect("listed")
    });
    assert!((2..=3).contains(&names.len()), "{names:?}");
    assert!(names
        .iter()
        .all(|n| n.starts_with("cds/checkpoints/checkpoint-")));

    // The same events in one uninterrupted run, checkpoints on the local disk.
    let whole = dir.join("whole");
    assert_eq!(run(&whole, None), lines.len() as u64);
    assert_eq!(
        common::documents(&data, "kpis"),
        common::documents(&whole, "kpis"),
        "the continued run ends where the uninterrupted one does"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Creates a Blob container through the REST API (Shared Key signed with the emulator's
/// account key): object_store cannot create containers.
fn create_container(endpoint: &str, name: &str) {
    use hmac::{Hmac, Mac};
    use std::io::{Read, Write};
    let host = endpoint
        .strip_prefix("http://")
        .expect("an http:// endpoint")
        .trim_end_matches('/');
    let date = chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let version = "2021-08-06";
    let to_sign = format!(
        "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{ACCOUNT}/{ACCOUNT}/{name}\nrestype:container"
    );
    let key = base64_decode(ACCOUNT_KEY);
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).expect("key");
    mac.update(to_sign.as_bytes());
    let signature = base64_encode(&mac.finalize().into_bytes());
    let request = format!(
        "PUT /{ACCOUNT}/{name}?restype=container HTTP/1.1\r\nHost: {host}\r\nx-ms-date: {date}\r\nx-ms-version: {version}\r\nAuthorization: SharedKey {ACCOUNT}:{signature}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let mut stream = std::net::TcpStream::connect(host).expect("connect to Azurite");
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.lines().next().unwrap_or_default().to_owned();
    assert!(
        status.contains(" 201 ") || status.contains(" 409 "),
        "creating container {name}: {response}"
    );
}

const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = B64.iter().position(|b| *b == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
