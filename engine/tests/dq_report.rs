//! `cds report dq` against a recomputation: a dirty stream over two days (duplicates, events
//! out of order, malformed payloads, a payload that is no JSON, records to quarantine, fields
//! the event model does not know, an event without a time) runs through `cds run`; the report, made afterwards from the
//! lake and the dead-letter store, gives per day and hospital the counts this test computes
//! from the input lines with `serde_json` alone, and its totals equal the run's own summary.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{cds, ok, scratch, simulate};
use serde_json::Value;

/// The event model's fields (DESIGN.md): any other is schema drift.
const KNOWN: [&str; 15] = [
    "event_id",
    "event_type",
    "event_timestamp",
    "patient_id",
    "hospital_id",
    "department",
    "bed_id",
    "gender",
    "age",
    "admission_time",
    "discharge_time",
    "admission_priority",
    "diagnosis_code",
    "insurance_type",
    "vitals",
];

#[derive(Debug, Default, PartialEq)]
struct Row {
    events_in: u64,
    duplicates: u64,
    late: u64,
    missing_patient: u64,
}

fn hospital(v: &Value) -> Option<i64> {
    v["hospital_id"].as_i64()
}

#[test]
fn the_data_quality_report_equals_a_recomputation_of_its_counts() {
    let dir = scratch("dq-report");
    let stream = simulate(&[
        "--seed",
        "11",
        "--max-events",
        "12000",
        "--dirty-rate",
        "0.05",
        "--start",
        "2026-03-01T18:00:00Z",
    ]);
    let mut lines: Vec<String> = String::from_utf8_lossy(&stream)
        .lines()
        .map(str::to_owned)
        .collect();
    lines.insert(100, "this is no event".to_owned());
    lines.insert(200, "[1, 2, 3]".to_owned());
    lines.insert(
        300,
        r#"{"event_id": "EV-NO-TIME", "event_type": "ADMISSION"}"#.to_owned(),
    );
    let file = dir.join("events.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").expect("events");
    let data = dir.join("data");
    let out = ok(
        cds()
            .args(["run", "--http", "off", "--rules", "off", "--until-end"])
            .arg("--source")
            .arg(format!("file:{}", file.display()))
            .arg("--data-dir")
            .arg(&data)
            .output()
            .expect("run"),
        "cds run",
    );
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    let report = |extra: &[&str]| -> Value {
        let out = ok(
            cds()
                .args(["report", "dq", "--format", "json", "--data-dir"])
                .arg(&data)
                .args(extra)
                .output()
                .expect("report"),
            "cds report dq",
        );
        serde_json::from_slice(&out.stdout).expect("a JSON report")
    };
    let got = report(&[]);

    // The recomputation, line by line in the order the run read them.
    let mut expected: BTreeMap<(String, Option<i64>), Row> = BTreeMap::new();
    let mut unknown: BTreeMap<String, u64> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut newest = i64::MIN;
    let mut dead = 0u64;
    for line in &lines {
        let event = serde_json::from_str::<Value>(line).ok().and_then(|v| {
            let id = match &v["event_id"] {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return None,
            };
            let at = chrono::DateTime::parse_from_rfc3339(v["event_timestamp"].as_str()?).ok()?;
            Some((id, at, v))
        });
        let Some((id, at, v)) = event else {
            dead += 1;
            continue;
        };
        let micros = at.timestamp_micros();
        let day = at.with_timezone(&chrono::Utc).date_naive().to_string();
        let row = expected.entry((day, hospital(&v))).or_default();
        row.events_in += 1;
        row.late += u64::from(micros < newest);
        newest = newest.max(micros);
        if !seen.insert(id) {
            row.duplicates += 1;
            continue;
        }
        let patient = v["patient_id"].as_str().map(str::trim);
        row.missing_patient += u64::from(patient.is_none_or(str::is_empty));
        if let Some(fields) = v.as_object() {
            for name in fields.keys().filter(|k| !KNOWN.contains(&k.as_str())) {
                *unknown.entry(name.clone()).or_default() += 1;
            }
        }
    }
    let reported: BTreeMap<(String, Option<i64>), Row> = got["days"]
        .as_array()
        .expect("days")
        .iter()
        .map(|r| {
            let n = |k: &str| r[k].as_u64().unwrap_or_default();
            (
                (
                    r["day"].as_str().unwrap_or_default().to_owned(),
                    r["hospital_id"].as_i64(),
                ),
                Row {
                    events_in: n("events_in"),
                    duplicates: n("duplicates"),
                    late: n("late"),
                    missing_patient: r["quarantine_reasons"]["MISSING_PATIENT_ID"]
                        .as_u64()
                        .unwrap_or_default(),
                },
            )
        })
        .collect();
    assert!(
        reported
            .keys()
            .map(|(d, _)| d)
            .collect::<BTreeSet<_>>()
            .len()
            >= 2,
        "two days"
    );
    assert_eq!(reported, expected, "per day and hospital");
    assert!(expected.values().map(|r| r.duplicates).sum::<u64>() > 0);
    assert!(expected.values().map(|r| r.late).sum::<u64>() > 0);
    assert!(expected.values().map(|r| r.missing_patient).sum::<u64>() > 0);

    let unknown_reported: BTreeMap<String, u64> = got["unknown_fields"]
        .as_array()
        .expect("unknown fields")
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap_or_default().to_owned(),
                f["records"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert!(!unknown.is_empty());
    assert_eq!(unknown_reported, unknown, "schema drift");

    // Totals against the run's own summary line.
    let number_before = |what: &str| -> u64 {
        let at = summary
            .find(what)
            .unwrap_or_else(|| panic!("{what} in {summary}"));
        summary[..at]
            .split_whitespace()
            .last()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a number before {what}: {summary}"))
    };
    assert_eq!(got["dead_letters_total"].as_u64(), Some(dead));
    assert_eq!(dead, number_before(" dead letters"));
    assert_eq!(
        got["totals"]["duplicates"].as_u64(),
        Some(number_before(" duplicates"))
    );
    assert_eq!(
        got["totals"]["quarantined"].as_u64(),
        Some(number_before(" quarantined"))
    );
    let reasons: BTreeSet<&str> = got["dead_letters"]
        .as_array()
        .expect("dead letters")
        .iter()
        .filter_map(|d| d["reason"].as_str())
        .collect();
    assert!(reasons.len() >= 2, "more than one reason: {reasons:?}");

    // --since leaves out the days before it; the HTML page has its charts and no identifier.
    let first = reported
        .keys()
        .map(|(d, _)| d.clone())
        .min()
        .unwrap_or_default();
    let later = report(&["--since", "2026-03-02"]);
    assert!(later["days"]
        .as_array()
        .expect("days")
        .iter()
        .all(|r| r["day"].as_str() >= Some("2026-03-02")));
    assert!(first.as_str() < "2026-03-02");
    let page = dir.join("dq.html");
    ok(
        cds()
            .args(["report", "dq", "--data-dir"])
            .arg(&data)
            .arg("--out")
            .arg(&page)
            .output()
            .expect("html report"),
        "cds report dq --out",
    );
    let html = std::fs::read_to_string(&page).expect("the page");
    assert!(html.contains("<svg") && html.contains("Dead letters"));
    let patient = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v["patient_id"].as_str().map(str::to_owned))
        .expect("a patient id");
    assert!(!html.contains(&patient), "no patient identifier");
    let _ = std::fs::remove_dir_all(dir);
}
