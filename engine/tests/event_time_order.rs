//! The rules read event-time order (the reorder window, `--reorder-window`): the same events
//! in any arrival order within the window, from a file or from a Kafka topic written without
//! keys over four partitions, give the same alerts; an event later than the window is still
//! evaluated, and its alert says `"late": true`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use chrono::DateTime;
use common::kafka::{broker, produce_lines_unbatched, topic_with_deadletters};
use common::{cds, comparable, differences, exported, ok, rules_dir, scratch, simulate, unique};
use serde_json::Value;

/// The window of these runs: one hour of event time (the simulated stream has few events per
/// minute, so its arrival orders are shuffled over minutes).
const WINDOW_SECS: i64 = 3600;

/// A simulated stream without dirt, sorted by event time, as JSON lines with their times.
fn stream() -> Vec<(i64, String)> {
    let out = simulate(&["--seed", "23", "--max-events", "12000", "--dirty-rate", "0"]);
    let mut events: Vec<(i64, String)> = String::from_utf8_lossy(&out)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a simulated event");
            let at = v["event_timestamp"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .expect("an event time")
                .timestamp();
            (at, l.to_owned())
        })
        .collect();
    events.sort_by_key(|(at, _)| *at);
    events
}

/// `events` shuffled within ten-minute buckets of event time (well inside the window) by
/// `place`: the index a bucket's `i`-th event of `n` goes to.
fn shuffled(events: &[(i64, String)], place: impl Fn(usize, usize) -> usize) -> Vec<String> {
    let mut buckets: BTreeMap<i64, Vec<&String>> = BTreeMap::new();
    for (at, line) in events {
        buckets.entry(at.div_euclid(600)).or_default().push(line);
    }
    let mut out = Vec::with_capacity(events.len());
    for bucket in buckets.values() {
        let n = bucket.len();
        let mut slots: Vec<Option<&String>> = vec![None; n];
        let mut free: Vec<usize> = (0..n).collect();
        for (i, line) in bucket.iter().enumerate() {
            // The wanted place, or the next free one after it.
            let want = place(i, n) % n;
            let at = free.iter().position(|s| *s >= want).unwrap_or(0);
            slots[free.remove(at)] = Some(line);
        }
        out.extend(slots.into_iter().flatten().cloned());
    }
    out
}

/// Runs the pack over `source` until `until` says, into `data`.
fn run(source: &str, data: &Path, until: &[&str]) {
    ok(
        cds()
            .args([
                "run",
                "--http",
                "off",
                "--lake",
                "off",
                "--checkpoint-interval",
                "0",
            ])
            .args(until)
            .args(["--source", source, "--rules"])
            .arg(rules_dir())
            .args(["--reorder-window", &WINDOW_SECS.to_string(), "--data-dir"])
            .arg(data)
            .output()
            .expect("run"),
        "cds run",
    );
}

fn run_file(
    dir: &Path,
    name: &str,
    lines: &[String],
) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    let file = dir.join(format!("{name}.jsonl"));
    std::fs::write(&file, lines.join("\n") + "\n").expect("stream");
    let data = dir.join(name);
    run(&format!("file:{}", file.display()), &data, &["--until-end"]);
    outputs(&data)
}

/// The alerts and the KPI documents of a run, comparable.
fn outputs(data: &Path) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    (
        comparable(exported(data, "alerts")),
        comparable(exported(data, "kpis")),
    )
}

fn assert_same(what: &str, want: &BTreeMap<String, Value>, got: &BTreeMap<String, Value>) {
    assert!(
        want == got,
        "{what} differ ({} vs {}):\n{}",
        want.len(),
        got.len(),
        differences(want, got)
    );
}

#[test]
fn three_arrival_orders_give_the_same_alerts_and_a_late_event_is_flagged() {
    let dir = scratch("orders");
    let events = stream();
    let in_order: Vec<String> = events.iter().map(|(_, l)| l.clone()).collect();
    let (alerts, kpis) = run_file(&dir, "in-order", &in_order);
    assert!(alerts.len() > 20, "the pack fired: {}", alerts.len());
    assert!(alerts.values().any(|a| a["mlmname"] == "news2"));
    assert!(alerts.values().all(|a| a.get("late").is_none()));

    let reversed = shuffled(&events, |i, n| n - 1 - i);
    let strided = shuffled(&events, |i, n| i * 7 + n / 3);
    assert_ne!(reversed, in_order);
    assert_ne!(strided, in_order);
    for (name, lines) in [("reversed", reversed), ("strided", strided)] {
        let (got_alerts, got_kpis) = run_file(&dir, name, &lines);
        assert_same(&format!("alerts of the {name} order"), &alerts, &got_alerts);
        assert_same(&format!("KPIs of the {name} order"), &kpis, &got_kpis);
    }

    // A reading that alerted, of a patient with no other event for the next 75 minutes, moved
    // to arrive after the events of the next 70 minutes: beyond the window, evaluated, flagged.
    let patient_of = |line: &str| -> String {
        let v: Value = serde_json::from_str(line).expect("event");
        v["patient_id"].as_str().unwrap_or_default().to_owned()
    };
    let candidate = alerts.iter().find_map(|(alert_id, a)| {
        let id = a["event_id"].as_str()?;
        let i = events
            .iter()
            .position(|(_, l)| l.contains(&format!("\"{id}\"")))?;
        let (at, line) = &events[i];
        let patient = patient_of(line);
        let quiet = events[i + 1..]
            .iter()
            .take_while(|(t, _)| *t <= at + WINDOW_SECS + 900)
            .all(|(_, l)| patient_of(l) != patient);
        let room = events
            .last()
            .is_some_and(|(last, _)| *last > at + WINDOW_SECS + 900);
        (quiet && room).then(|| (i, alert_id.clone(), a.clone()))
    });
    let (i, id, moved_alert) = candidate.expect("an alerting reading of a quiet patient");
    let mut late_order = in_order.clone();
    let line = late_order.remove(i);
    let at = events[i].0;
    let after = events
        .iter()
        .position(|(t, _)| *t > at + WINDOW_SECS + 600)
        .expect("events 70 minutes later")
        - 1;
    late_order.insert(after, line);
    let (got_alerts, got_kpis) = run_file(&dir, "late", &late_order);
    assert_same("KPIs with a late event", &kpis, &got_kpis);
    let late = got_alerts
        .get(&id)
        .unwrap_or_else(|| panic!("the late reading no longer alerts: {moved_alert:#}"));
    assert_eq!(
        late["late"],
        Value::Bool(true),
        "its alert says it was late"
    );
    let mut want = alerts.clone();
    if let Some(a) = want.get_mut(&id).and_then(Value::as_object_mut) {
        a.insert("late".into(), Value::Bool(true));
    }
    assert_same("alerts with a late event", &want, &got_alerts);

    // Through Kafka: the in-order stream written without keys over four partitions, read by
    // one process: the alerts and KPIs of the file.
    let brokers = broker();
    let topic = topic_with_deadletters(&brokers, "unkeyed", 4);
    let lines: Vec<&[u8]> = in_order.iter().map(|l| l.as_bytes()).collect();
    produce_lines_unbatched(&brokers, &topic, &lines);
    let data = dir.join("kafka");
    run(
        &format!("kafka://{brokers}/{topic}"),
        &data,
        &["--until-idle", "5", "--group", &unique("order")],
    );
    let (got_alerts, got_kpis) = outputs(&data);
    assert_same("alerts through Kafka without keys", &alerts, &got_alerts);
    assert_same("KPIs through Kafka without keys", &kpis, &got_kpis);
    let _ = std::fs::remove_dir_all(dir);
}
