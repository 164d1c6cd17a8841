//! The rule pack inside the engine: alerts reach the sink, a runaway rule is stopped by the
//! sandbox while the engine and the other rules go on, and a broken edit during a run keeps
//! the previous version of the rule running.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cds_engine::metrics::Metrics;
use cds_engine::model::Network;
use cds_engine::rules::{RuleInput, RulesStage};
use cds_engine::silver::{Outcome, Silver};
use common::{cds, exported, rules_dir, scratch, simulate};
use serde_json::{json, Value};

/// A private copy of the shipped rule pack (rules, shared lib, fixtures).
fn copy_pack(name: &str) -> PathBuf {
    let dir = scratch(name);
    copy_dir(&rules_dir(), &dir);
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read pack").flatten() {
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

/// A rule made from qSOFA whose `data` never returns (or allocates without bound).
fn runaway(dir: &Path, name: &str, body: &str) {
    let src = std::fs::read_to_string(dir.join("qsofa.rhai")).expect("qsofa.rhai");
    let src = src
        .replace("mlmname: \"qsofa\"", &format!("mlmname: \"{name}\""))
        .replace("fn data(ctx) {", &format!("fn data(ctx) {{ {body}"));
    std::fs::write(dir.join(format!("{name}.rhai")), src).expect("write rule");
}

#[test]
fn runaway_rules_are_stopped_and_the_run_goes_on() {
    let rules = copy_pack("runaway");
    runaway(&rules, "endless", "let x = 0; loop { x += 1; }");
    runaway(&rules, "hoarder", "let s = \"xxxxxxxx\"; loop { s += s; }");
    let work = scratch("work");
    let events = work.join("events.jsonl");
    let out = simulate(&["--seed", "3", "--max-events", "1500", "--dirty-rate", "0"]);
    std::fs::write(&events, &out).expect("write events");

    let started = std::time::Instant::now();
    let run = cds()
        .env("CDS_LOG", "error")
        .args(["run", "--until-end", "--http", "off"])
        .arg("--source")
        .arg(format!("file:{}", events.display()))
        .arg("--rules")
        .arg(&rules)
        .arg("--data-dir")
        .arg(work.join("data"))
        .output()
        .expect("run");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // ~1,400 VITALS events x 2 runaway rules, each stopped by the sandbox within its budget.
    let per_evaluation = started.elapsed() / 2_800;
    assert!(
        per_evaluation < Duration::from_millis(50),
        "{per_evaluation:?} per stopped evaluation"
    );

    let alerts: Vec<Value> = exported(&work.join("data"), "alerts")
        .into_iter()
        .map(|(_, alert)| alert)
        .collect();
    let rules_fired: std::collections::BTreeSet<&str> = alerts
        .iter()
        .filter_map(|a| a["mlmname"].as_str())
        .collect();
    assert!(!rules_fired.contains("endless") && !rules_fired.contains("hoarder"));
    assert!(
        rules_fired.contains("capacity") || rules_fired.contains("news2"),
        "other rules still alert: {rules_fired:?}"
    );
    for a in &alerts {
        assert!(a["card"]["summary"]
            .as_str()
            .is_some_and(|s| !s.is_empty() && s.chars().count() < 140));
        assert!(
            a["patient"].as_str().is_none_or(|p| !p.starts_with('P')),
            "no raw patient id in alerts"
        );
    }
    let _ = std::fs::remove_dir_all(work);
    let _ = std::fs::remove_dir_all(rules);
}

fn vitals_event(id: &str, patient: &str, minute: u32) -> Vec<u8> {
    json!({"event_id": id, "event_type": "VITALS", "event_timestamp": format!("2026-03-02T10:{minute:02}:00Z"),
           "patient_id": patient, "hospital_id": 1, "department": "ICU", "gender": "F", "age": 70,
           "vitals": {"heart_rate": 120, "bp_systolic": 88, "bp_diastolic": 50, "temperature_c": 38.9,
                      "oxygen_saturation": 95, "respiratory_rate": 26, "consciousness": "A", "supplemental_o2": false}})
    .to_string()
    .into_bytes()
}

fn admission(id: &str, patient: &str) -> Vec<u8> {
    json!({"event_id": id, "event_type": "ADMISSION", "event_timestamp": "2026-03-02T09:00:00Z",
           "patient_id": patient, "hospital_id": 1, "department": "ICU", "gender": "F", "age": 70,
           "admission_time": "2026-03-02T09:00:00Z", "admission_priority": "Emergency"})
    .to_string()
    .into_bytes()
}

/// Runs payloads through Silver and the rules stage; returns the mlmnames that alerted.
fn alerts_for(
    stage: &mut RulesStage,
    silver: &mut Silver,
    payloads: &[Vec<u8>],
    key: u64,
) -> Vec<String> {
    let mut batch = Vec::new();
    for p in payloads {
        if let Outcome::Record(r) =
            silver.admit(cds_engine::decode::json(p, || unreachable!("valid events")))
        {
            batch.push(RuleInput::new(key, r));
        }
    }
    stage
        .process(&batch)
        .into_iter()
        .filter_map(|d| d.body["mlmname"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_broken_edit_keeps_the_previous_version_running() {
    let rules = copy_pack("reload");
    let network = Network::default_network();
    let mut stage =
        RulesStage::load(&rules, network.clone(), Arc::new(Metrics::new())).expect("pack loads");
    let mut silver = Silver::new(network);

    let fired = alerts_for(
        &mut stage,
        &mut silver,
        &[admission("a1", "P1"), vitals_event("v1", "P1", 5)],
        1,
    );
    assert!(
        fired.iter().any(|r| r == "qsofa"),
        "qSOFA fires on RR 26 + SBP 88: {fired:?}"
    );

    // A clinician saves a half-finished edit: it does not compile.
    std::fs::write(
        rules.join("qsofa.rhai"),
        "const MLM = #{ maintenance: ; fn data(ctx) {",
    )
    .expect("break");
    std::thread::sleep(Duration::from_millis(300));
    stage.maybe_reload();
    let fired = alerts_for(
        &mut stage,
        &mut silver,
        &[admission("a2", "P2"), vitals_event("v2", "P2", 6)],
        2,
    );
    assert!(
        fired.iter().any(|r| r == "qsofa"),
        "the previous qSOFA still runs: {fired:?}"
    );

    // Removing the file takes the rule out within the reload interval.
    std::fs::remove_file(rules.join("qsofa.rhai")).expect("remove");
    std::thread::sleep(Duration::from_millis(300));
    stage.maybe_reload();
    let fired = alerts_for(
        &mut stage,
        &mut silver,
        &[admission("a3", "P3"), vitals_event("v3", "P3", 7)],
        3,
    );
    assert!(
        !fired.iter().any(|r| r == "qsofa"),
        "qSOFA removed: {fired:?}"
    );
    let _ = std::fs::remove_dir_all(rules);
}
