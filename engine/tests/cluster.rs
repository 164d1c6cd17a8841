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
//!
//! A process killed with SIGKILL mid-stream: the other stops with its own exit code and a clear
//! message, and when both are started again each continues from its newest checkpoint, with
//! the outputs of an uninterrupted run.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Instant;

use common::kafka::{broker, create_topics, produce, produce_lines_unbatched_keyed};
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

/// Process `index` of a cluster of two, with two workers, in `dir/pINDEX`.
fn start_process(
    source: &str,
    dir: &Path,
    group: &str,
    hosts: &str,
    index: &str,
    extra: &[&str],
) -> Child {
    let mut args = vec![
        "--workers",
        "2",
        "--processes",
        "2",
        "--process",
        index,
        "--hosts",
        hosts,
    ];
    args.extend_from_slice(extra);
    start(source, &dir.join(format!("p{index}")), group, &args)
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
        .map(|index| start_process(source, dir, groups.1, &hosts, index, &[]))
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

/// A scratch directory and, in it, the hosts file of a cluster of two processes on free
/// loopback ports.
fn two_processes(name: &str) -> (PathBuf, PathBuf) {
    let dir = scratch(name);
    let hosts = dir.join("hosts");
    std::fs::write(
        &hosts,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port()),
    )
    .expect("hosts file");
    (dir, hosts)
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
    let (dir, hosts) = two_processes("cluster");
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

#[test]
fn a_process_killed_stops_the_other_and_the_restarted_cluster_continues_from_checkpoints() {
    let brokers = broker();
    let topic = unique("cluster-kill");
    create_topics(
        &brokers,
        &[(&topic, 4), (&format!("{topic}.deadletter"), 1)],
    );
    // One message per record batch: the test broker answers a fetch from inside a batch with
    // the next batch, and restarts fetch from checkpointed offsets (tests/recovery.rs). Keyed
    // by patient, as a cluster needs today (docs/cluster.md: a patient's events in one
    // partition).
    let events = common::simulate(&[
        "--seed",
        "43",
        "--max-events",
        "12000",
        "--dirty-rate",
        "0.02",
    ]);
    let lines: Vec<&[u8]> = events
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let (first, rest) = lines.split_at(lines.len() / 2);
    let source = format!("kafka://{brokers}/{topic}");
    let (dir, hosts) = two_processes("cluster-kill");
    let hosts = hosts.display().to_string();
    let (one, two) = (unique("one"), unique("two"));
    let process = |index: &str| -> Child {
        let checkpoints = ["--checkpoint-interval", "0.5"];
        start_process(&source, &dir, &two, &hosts, index, &checkpoints)
    };

    let p0 = process("0");
    let mut p1 = process("1");
    let by_patient = |line: &[u8]| {
        serde_json::from_slice::<Value>(line)
            .ok()?
            .get("patient_id")?
            .as_str()
            .map(str::to_owned)
    };
    produce_lines_unbatched_keyed(&brokers, &topic, first, by_patient);
    // Killed once it has written a checkpoint or two of the first half.
    let checkpoints = dir.join("p1/lake/checkpoints");
    let waited = Instant::now();
    while std::fs::read_dir(&checkpoints).map_or(0, |d| d.count()) < 2 {
        assert!(
            waited.elapsed().as_secs() < 120,
            "process 1 wrote no checkpoint"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    p1.kill().expect("SIGKILL process 1");
    let _ = p1.wait();
    let out = p0.wait_with_output().expect("process 0 ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(69),
        "the survivor stops with the peer-lost exit code: {stderr}"
    );
    assert!(
        stderr.contains("the connection to process 1 of the cluster broke"),
        "{stderr}"
    );

    // The rest of the stream, then the whole cluster started again: each process continues
    // from its own newest checkpoint, and the single process reads everything uninterrupted.
    produce_lines_unbatched_keyed(&brokers, &topic, rest, by_patient);
    let again: Vec<Child> = ["0", "1"].into_iter().map(process).collect();
    for (i, c) in again.into_iter().enumerate() {
        finish(c, &format!("process {i}, restarted"));
    }
    let single = finish(start(&source, &dir.join("single"), &one, &[]), "1 × 1");
    assert_eq!(events_processed(&single), lines.len() as u64);
    assert_same_outputs(&dir);
    let _ = std::fs::remove_dir_all(dir);
}
