//! End to end through the `cds` binary: simulate a file, add malformed lines, run the engine on
//! it until the end, export the KPI documents, and compare them with a from-scratch
//! recomputation over the same file. Dead letters must hold the malformed lines.

mod common;

use std::path::Path;

use cds_engine::model::Network;
use cds_engine::model::SourcePosition;
use cds_engine::silver::{Outcome, Silver};
use common::{cds, differences, documents, ok, recompute, scratch, simulate};
use serde_json::Value;

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// `cds run --until-end` of a source without HTTP.
fn run_until_end(source: &str, data_dir: &str) -> std::process::Output {
    cds()
        .args(["run", "--source", source, "--until-end", "--http", "off"])
        .args(["--data-dir", data_dir])
        .output()
        .expect("run")
}

#[test]
fn simulate_run_export_equals_recomputation() {
    let dir = scratch("sim");
    let events = dir.join("events.jsonl");
    let data = dir.join("data");

    let mut file = simulate(&[
        "--seed",
        "1",
        "--max-events",
        "20000",
        "--dirty-rate",
        "0.05",
    ]);
    // Three lines that are not events, in the middle of the stream.
    let bad = [
        "this is not json",
        "{\"event_id\": \"x1\", \"event_type\": \"VITALS\"}",
        "{\"truncated\": ",
    ];
    let cut = file
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(9_999)
        .map(|(i, _)| i + 1)
        .unwrap_or(0);
    let mut tail = file.split_off(cut);
    for b in bad {
        file.extend_from_slice(b.as_bytes());
        file.push(b'\n');
    }
    file.append(&mut tail);
    std::fs::write(&events, &file).expect("write events");

    let source = format!("file:{}", events.display());
    let data_dir = data.to_str().expect("utf-8 path");
    let run = ok(run_until_end(&source, data_dir), "cds run");
    let summary = String::from_utf8_lossy(&run.stdout);
    assert!(
        summary.contains("events/s"),
        "the run prints its throughput: {summary}"
    );

    let got = documents(&data, "kpis");

    // The recomputation reads the same file through a fresh Silver stage.
    let network = Network::default_network();
    let mut silver = Silver::new(network.clone());
    let mut records = Vec::new();
    let mut dead = 0;
    for (i, line) in file
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
    {
        let pos = || SourcePosition {
            source: "test".into(),
            partition: 0,
            offset: i as i64 + 1,
        };
        match silver.admit(cds_engine::decode::json(line, pos)) {
            Outcome::Record(r) => records.push(*r),
            Outcome::DeadLetter(_) => dead += 1,
            Outcome::Duplicate(_) => {}
        }
    }
    let expected = recompute(&network, &records);
    assert!(
        expected.keys().any(|k| k.starts_with("occupancy:")),
        "occupancy documents exist"
    );
    assert!(
        expected
            .iter()
            .filter(|(k, _)| k.starts_with("occupancy:"))
            .any(|(_, v)| v["occupied"].as_i64() > Some(0)),
        "the simulation fills beds"
    );
    assert_eq!(
        expected,
        got,
        "exported KPIs differ from the recomputation:\n{}",
        differences(&expected, &got)
    );

    let letters = read_jsonl(&data.join("lake/deadletter/deadletter.jsonl"));
    assert!(
        letters.len() >= bad.len(),
        "dead letters: {}",
        letters.len()
    );
    assert_eq!(
        letters.len(),
        dead,
        "one dead letter per payload that is not an event"
    );
    for b in bad {
        let letter = letters
            .iter()
            .find(|l| l["payload"] == b)
            .unwrap_or_else(|| panic!("{b:?} is in the dead-letter store"));
        assert!(letter["reason"].as_str().is_some_and(|r| !r.is_empty()));
        assert!(letter["position"]["offset"].as_i64() > Some(10_000));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let dir = scratch("missing");
    let data_dir = dir.to_str().expect("utf-8 path");
    let out = run_until_end("file:/nonexistent/events.jsonl", data_dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot open /nonexistent/events.jsonl"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = scratch("jsonlog");
    let events = simulate(&["--seed", "2", "--max-events", "500"]);
    std::fs::write(dir.join("events.jsonl"), &events).expect("events");
    let out = ok(
        cds()
            .args([
                "--log-format",
                "json",
                "run",
                "--until-end",
                "--http",
                "off",
                "--source",
            ])
            .arg(format!("file:{}", dir.join("events.jsonl").display()))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("CDS_LOG", "debug")
            .output()
            .expect("run"),
        "run with JSON logs",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let logs: Vec<Value> = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(!logs.is_empty(), "{err}");
    for l in &logs {
        assert!(l["timestamp"].is_string() && l["level"].is_string(), "{l}");
        assert!(l["fields"]["message"].is_string(), "{l}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
