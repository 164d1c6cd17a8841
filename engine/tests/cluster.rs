//! Scale-out: two processes with two workers each form one timely dataflow over a real Kafka
//! broker (`tests/run.sh` starts it) and end with the same KPI documents and alerts as one
//! process with one worker on the same data.
//!
//! Each process reads its own partitions (partition p belongs to worker p mod 4), writes its
//! own share of the documents into its own data directory, and the union of the two stores is
//! compared with the single process's store. Alerts are compared for the patient-scope rules:
//! department-scope rules (capacity) and delayed evokes follow the order in which records of
//! different partitions arrive, which differs from run to run even on one process (docs/cluster.md,
//! a known limit).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Instant;

use common::kafka::{broker, create_topics, produce};
use common::{cds, differences, events_processed, free_port, ok, rules_dir, scratch, unique};
use serde_json::Value;

/// Rules whose alerts depend only on one patient's events (one partition, in order).
const PATIENT_SCOPE: [&str; 4] = ["news2", "qsofa", "sirs", "hypoxia"];

fn start(source: &str, data: &Path, group: &str, extra: &[&str]) -> Child {
    cds()
        .args(["run", "--http", "off", "--rules"])
        .arg(rules_dir())
        .args(["--source", source])
        .args(["--group", group, "--until-idle", "10", "--data-dir"])
        .arg(data)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cds run")
}

/// Waits for a run; its summary line (stdout).
fn finish(child: Child, what: &str) -> String {
    let out = ok(child.wait_with_output().expect("wait"), what);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The documents of a container by id, and how many stores held each id.
fn export(stores: &[&Path], container: &str) -> (BTreeMap<String, Value>, BTreeMap<String, usize>) {
    let mut docs = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for data in stores {
        for (id, v) in common::exported(data, container) {
            *seen.entry(id.clone()).or_default() += 1;
            docs.push((id, v));
        }
    }
    (common::comparable(docs), seen)
}

/// One round: the single process and the cluster each read what is new on the topic (from
/// their own checkpoints and committed offsets); returns the events each read.
fn round(source: &str, dir: &Path, hosts: &Path, groups: (&str, &str)) -> (u64, Vec<u64>) {
    let started = Instant::now();
    let summary = finish(start(source, &dir.join("single"), groups.0, &[]), "1 × 1");
    eprintln!("1 process × 1 worker: {summary} ({:?})", started.elapsed());
    let single = events_processed(&summary);
    let hosts = hosts.display().to_string();
    let started = Instant::now();
    let cluster: Vec<Child> = ["0", "1"]
        .into_iter()
        .map(|index| {
            let data = dir.join(format!("p{index}"));
            let cluster = [
                "--workers",
                "2",
                "--processes",
                "2",
                "--process",
                index,
                "--hosts",
                &hosts,
            ];
            start(source, &data, groups.1, &cluster)
        })
        .collect();
    let summaries: Vec<String> = cluster
        .into_iter()
        .enumerate()
        .map(|(i, c)| finish(c, &format!("process {i} of 2 × 2")))
        .collect();
    eprintln!(
        "2 processes × 2 workers: {summaries:?} ({:?})",
        started.elapsed()
    );
    (
        single,
        summaries.iter().map(|s| events_processed(s)).collect(),
    )
}

/// The union of the processes' stores against the single process's store.
fn assert_same_outputs(dir: &Path) {
    let (single, a, b) = (dir.join("single"), dir.join("p0"), dir.join("p1"));
    let (expected, _) = export(&[&single], "kpis");
    let (got, seen) = export(&[&a, &b], "kpis");
    assert!(expected.len() > 100);
    assert!(
        seen.values().all(|n| *n == 1),
        "each KPI document is written by one process"
    );
    assert!(
        expected == got,
        "KPIs of the cluster differ from one process ({} vs {} documents):\n{}",
        expected.len(),
        got.len(),
        differences(&expected, &got)
    );
    let patient_scope = |docs: BTreeMap<String, Value>| -> BTreeMap<String, Value> {
        docs.into_iter()
            .filter(|(_, v)| PATIENT_SCOPE.contains(&v["mlmname"].as_str().unwrap_or("")))
            .collect()
    };
    let (expected, _) = export(&[&single], "alerts");
    let (got, seen) = export(&[&a, &b], "alerts");
    assert!(seen.values().all(|n| *n == 1), "each alert is raised once");
    let (expected, got) = (patient_scope(expected), patient_scope(got));
    assert!(!expected.is_empty(), "the patient-scope rules fired");
    assert!(
        expected == got,
        "alerts of the cluster differ from one process ({} vs {}):\n{}",
        expected.len(),
        got.len(),
        differences(&expected, &got)
    );
}

#[test]
fn two_processes_of_two_workers_equal_one_process_of_one() {
    let brokers = broker();
    let topic = unique("cluster");
    create_topics(
        &brokers,
        &[(&topic, 4), (&format!("{topic}.deadletter"), 1)],
    );
    let events = 40_000u64;
    let more = 10_000u64;
    let produce_seed = |seed: &str, n: u64| {
        let n = n.to_string();
        let args = ["--seed", seed, "--max-events", &n, "--dirty-rate", "0.02"];
        produce(&brokers, &topic, &args);
    };
    produce_seed("41", events);
    let source = format!("kafka://{brokers}/{topic}");
    let dir = scratch("cluster");
    let hosts = dir.join("hosts");
    std::fs::write(
        &hosts,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port()),
    )
    .expect("hosts file");
    let (one, two) = (unique("one"), unique("two"));

    let (single, per_process) = round(&source, &dir, &hosts, (&one, &two));
    assert_eq!(single, events);
    assert!(
        per_process.iter().all(|n| *n > 0),
        "each process reads its own partitions: {per_process:?}"
    );
    assert_eq!(per_process.iter().sum::<u64>(), events);
    assert_same_outputs(&dir);

    // A restart of the whole cluster: every process continues from its own newest checkpoint
    // (written at the clean stop) and reads only what is new.
    produce_seed("42", more);
    let (single, per_process) = round(&source, &dir, &hosts, (&one, &two));
    assert_eq!(
        single, more,
        "the single process continues where it stopped"
    );
    assert_eq!(
        per_process.iter().sum::<u64>(),
        more,
        "the cluster continues where it stopped: {per_process:?}"
    );
    assert_same_outputs(&dir);
    let _ = std::fs::remove_dir_all(dir);
}
