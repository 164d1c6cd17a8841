//! The rule pack's alerts on a fixed, checked-in stream equal the alerts recorded for it
//! (`tests/fixtures/golden/`): ids, rules, severities, evidence and cards. A faster rules stage
//! must change none of them, and neither must the number of threads the rules run on.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use common::{cds, exported, ok, rules_dir, scratch};
use serde_json::Value;

fn gunzip(path: &Path) -> Vec<u8> {
    let file = std::fs::File::open(path).expect("fixture");
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut out)
        .expect("gzip");
    out
}

#[test]
fn the_pack_gives_the_recorded_alerts_on_a_fixed_stream() {
    recorded_alerts_with(1);
}

/// Three shares of the patients, share 0 with the department rules: the same alerts.
#[test]
fn the_pack_on_three_threads_gives_the_recorded_alerts() {
    recorded_alerts_with(3);
}

fn recorded_alerts_with(rules_threads: usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let golden = root.join("tests/fixtures/golden");
    let dir = scratch(&format!("golden{rules_threads}"));
    let stream = dir.join("stream.jsonl");
    std::fs::write(&stream, gunzip(&golden.join("stream-seed7.jsonl.gz"))).expect("stream");
    let data = dir.join("data");
    ok(
        cds()
            .args(["run", "--until-end", "--http", "off", "--lake", "off"])
            .arg("--source")
            .arg(format!("file:{}", stream.display()))
            .arg("--rules")
            .arg(rules_dir())
            .arg("--rules-threads")
            .arg(rules_threads.to_string())
            .arg("--data-dir")
            .arg(&data)
            .output()
            .expect("run"),
        "cds run",
    );
    let mut got: BTreeMap<String, Value> = exported(&data, "alerts").into_iter().collect();
    // The recording predates the reorder window; its readings that arrived later than the
    // window now alert with `"late": true` and are otherwise unchanged. Each of them must be an
    // event that the stream delivers after one more than the window later in event time.
    let late = take_late_flags(&mut got);
    let delivered_late = delivered_late(&String::from_utf8_lossy(&gunzip(
        &golden.join("stream-seed7.jsonl.gz"),
    )));
    for event in &late {
        assert!(
            delivered_late.contains(event),
            "the alert of {event} says late, but the stream delivers it in order"
        );
    }
    let want: BTreeMap<String, Value> =
        String::from_utf8(gunzip(&golden.join("alerts-seed7.jsonl.gz")))
            .expect("utf-8")
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("a recorded alert");
                (v["id"].as_str().unwrap_or_default().to_owned(), v)
            })
            .collect();
    assert!(want.len() > 400, "the recording holds the alerts");
    let missing: Vec<&String> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    let changed: Vec<String> = want
        .iter()
        .filter_map(|(id, w)| {
            let g = got.get(id)?;
            (g != w).then(|| format!("{id}:\n  recorded {w}\n  now      {g}"))
        })
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && changed.is_empty(),
        "alerts on {rules_threads} thread(s) differ from the recording: {} missing {:?}, {} extra {:?}, {} changed:\n{}",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        extra.len(),
        extra.iter().take(5).collect::<Vec<_>>(),
        changed.len(),
        changed
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Removes the `late` flags of the alerts; returns the event ids of the alerts that had one.
fn take_late_flags(alerts: &mut BTreeMap<String, Value>) -> Vec<String> {
    let mut events = Vec::new();
    for alert in alerts.values_mut() {
        if let Some(fields) = alert.as_object_mut() {
            if fields.remove("late") == Some(Value::Bool(true)) {
                events.push(fields["event_id"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    events
}

/// The event ids of a JSON-lines stream delivered after an event more than the default reorder
/// window (0.25 s) later in event time.
fn delivered_late(stream: &str) -> std::collections::BTreeSet<String> {
    let mut newest = i64::MIN;
    let mut late = std::collections::BTreeSet::new();
    for line in stream.lines().filter(|l| !l.is_empty()) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let Some(at) = v["event_timestamp"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_micros())
        else {
            continue;
        };
        if at < newest.saturating_sub(250_000) {
            late.insert(v["event_id"].as_str().unwrap_or_default().to_owned());
        }
        newest = newest.max(at);
    }
    late
}
