//! Scale-out: two processes with two workers each form one timely dataflow over a real Kafka
//! broker (`tests/run.sh` starts it) and end with the same KPI documents and alerts as one
//! process with one worker on the same data.
//!
//! By default every process reads every partition and cleans the records of its own patients,
//! so the producers need no key: a stream written without keys (a patient's events over all
//! four partitions, duplicates in two of them) gives the KPIs, alerts, dead letters and
//! quarantine of one process and of a file. With `--partitions-by-patient` each process reads
//! only its own partitions (partition p belongs to worker p mod 4), for producers that key by
//! patient. Each process writes its own share of the documents into its own data directory,
//! and the union of the stores is compared with the single process's store. Alerts are
//! compared for every rule, but with `--partitions-by-patient` for the patient rules only: the
//! department rules (capacity) of a process that reads its own partitions see only their
//! patients (docs/cluster.md, a known limit).
//!
//! A process killed with SIGKILL mid-stream: the other stops with its own exit code and a clear
//! message, and when both are started again each continues from its newest checkpoint, with
//! the outputs of an uninterrupted run.
//!
//! Rescaling: one stream read in turn by 1 × 1, 2 × 2 and 1 × 2, each layout continuing from
//! the checkpoints of the one before (`--rescale`), ends with the outputs of one uninterrupted
//! process.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Instant;

use common::kafka::{broker, produce, produce_lines_unbatched, topic_with_deadletters};
use common::{cds, differences, events_processed, free_port, ok, rules_dir, scratch, unique};
use serde_json::Value;

/// Rules that read a whole department: run by the process that owns the hospital, over every
/// patient's placements when every process reads every partition; over only its own
/// partitions' patients with `--partitions-by-patient`.
const DEPARTMENT_SCOPE: [&str; 2] = ["capacity", "capacity_forecast"];

/// Which alerts two layouts must share.
#[derive(Clone, Copy, PartialEq)]
enum Rules {
    All,
    PatientScope,
}

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
fn round(
    source: &str,
    dir: &Path,
    hosts: &Path,
    groups: (&str, &str),
    extra: &[&str],
) -> (u64, Vec<u64>) {
    let started = Instant::now();
    let summary = finish(start(source, &dir.join("single"), groups.0, extra), "1 × 1");
    eprintln!("1 process × 1 worker: {summary} ({:?})", started.elapsed());
    let single = events_processed(&summary);
    let hosts = hosts.display().to_string();
    let started = Instant::now();
    let cluster: Vec<Child> = ["0", "1"]
        .into_iter()
        .map(|index| start_process(source, dir, groups.1, &hosts, index, extra))
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

/// The alerts of a set of stores (of every rule, or of the patient-scope rules), and how many
/// stores held each.
fn alerts(stores: &[&Path], rules: Rules) -> (BTreeMap<String, Value>, BTreeMap<String, usize>) {
    let (docs, seen) = export(stores, "alerts");
    let docs = docs
        .into_iter()
        .filter(|(_, v)| {
            rules == Rules::All || !DEPARTMENT_SCOPE.contains(&v["mlmname"].as_str().unwrap_or(""))
        })
        .collect();
    (docs, seen)
}

fn assert_equal(what: &str, expected: &BTreeMap<String, Value>, got: &BTreeMap<String, Value>) {
    assert!(
        expected == got,
        "{what} differ ({} vs {}):\n{}",
        expected.len(),
        got.len(),
        differences(expected, got)
    );
}

/// The union of the processes' stores against the single process's store.
fn assert_same_outputs(dir: &Path, rules: Rules) {
    let (single, a, b) = (dir.join("single"), dir.join("p0"), dir.join("p1"));
    let (mut expected, _) = export(&[&single], "kpis");
    let (got, seen) = export(&[&a, &b], "kpis");
    assert!(expected.len() > 100);
    if rules == Rules::PatientScope {
        // A process that reads only its own partitions sees some patients of each department:
        // it makes no occupancy forecast (one of part of a department would be wrong).
        expected.retain(|id, _| !id.starts_with("forecast:"));
        assert!(
            got.keys().all(|id| !id.starts_with("forecast:")),
            "no forecast from a process that sees only its own partitions"
        );
    }
    assert!(
        seen.values().all(|n| *n == 1),
        "each KPI document is written by one process"
    );
    assert_equal("KPIs of the cluster and of one process", &expected, &got);
    let (expected, _) = alerts(&[&single], rules);
    let (got, seen) = alerts(&[&a, &b], rules);
    assert!(seen.values().all(|n| *n == 1), "each alert is raised once");
    assert!(!expected.is_empty(), "the rules fired");
    if rules == Rules::All {
        assert!(
            expected.values().any(|a| a["mlmname"] == "capacity"),
            "the department rule fired"
        );
    }
    assert_equal("alerts of the cluster and of one process", &expected, &got);
}

/// The positions of the payloads a run kept as dead letters and of the records it
/// quarantined, sorted.
fn kept_aside(stores: &[&Path]) -> (Vec<String>, Vec<String>) {
    let read = |file: &str| -> Vec<String> {
        let mut positions: Vec<String> = stores
            .iter()
            .flat_map(|data| {
                std::fs::read_to_string(data.join("lake").join(file))
                    .unwrap_or_default()
                    .lines()
                    .map(|row| {
                        let v: Value = serde_json::from_str(row).expect("a lake row");
                        v["position"].to_string()
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        positions.sort();
        positions
    };
    (
        read("deadletter/deadletter.jsonl"),
        read("silver/quarantine/quarantine.jsonl"),
    )
}

/// Producers that key by patient (`cds simulate --to kafka`), and a cluster told so: each
/// process reads only its own partitions.
#[test]
fn two_processes_of_two_workers_equal_one_process_of_one() {
    let brokers = broker();
    let topic = topic_with_deadletters(&brokers, "cluster", 4);
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

    let keyed = ["--partitions-by-patient"];
    let (single, per_process) = round(&source, &dir, &hosts, (&one, &two), &keyed);
    assert_eq!(single, events);
    assert!(
        per_process.iter().all(|n| *n > 0),
        "each process reads its own partitions: {per_process:?}"
    );
    assert_eq!(per_process.iter().sum::<u64>(), events);
    assert_same_outputs(&dir, Rules::PatientScope);

    // A restart of the whole cluster: every process continues from its own newest checkpoint
    // (written at the clean stop) and reads only what is new.
    produce_seed("42", more);
    let (single, per_process) = round(&source, &dir, &hosts, (&one, &two), &keyed);
    assert_eq!(
        single, more,
        "the single process continues where it stopped"
    );
    assert_eq!(
        per_process.iter().sum::<u64>(),
        more,
        "the cluster continues where it stopped: {per_process:?}"
    );
    assert_same_outputs(&dir, Rules::PatientScope);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_process_killed_stops_the_other_and_the_restarted_cluster_continues_from_checkpoints() {
    let brokers = broker();
    let topic = topic_with_deadletters(&brokers, "cluster-kill", 4);
    // One message per record batch: the test broker answers a fetch from inside a batch with
    // the next batch, and restarts fetch from checkpointed offsets (tests/recovery.rs). Without
    // keys: each patient's events spread over the four partitions.
    let events = common::simulate(&[
        "--seed",
        "43",
        "--max-events",
        "12000",
        "--dirty-rate",
        "0.02",
    ]);
    let lines = common::lines(&events);
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
    produce_lines_unbatched(&brokers, &topic, first);
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
    produce_lines_unbatched(&brokers, &topic, rest);
    let again: Vec<Child> = ["0", "1"].into_iter().map(process).collect();
    for (i, c) in again.into_iter().enumerate() {
        finish(c, &format!("process {i}, restarted"));
    }
    let single = finish(start(&source, &dir.join("single"), &one, &[]), "1 × 1");
    assert_eq!(events_processed(&single), lines.len() as u64);
    assert_same_outputs(&dir, Rules::All);
    let _ = std::fs::remove_dir_all(dir);
}

/// A stream written without keys (each patient's events over all four partitions), with
/// duplicates, out-of-order events, malformed payloads and records to quarantine: one process
/// and a cluster of two give the same KPI documents, alerts (their late flags too), dead
/// letters and quarantine, with the default reorder window; with a window no event of it
/// exceeds, so does a file of the same stream, read in its own order.
#[test]
fn a_stream_without_keys_gives_the_same_outputs_from_a_file_one_process_and_a_cluster() {
    let brokers = broker();
    let topic = topic_with_deadletters(&brokers, "cluster-unkeyed", 4);
    let stream = common::simulate(&[
        "--seed",
        "44",
        "--max-events",
        "12000",
        "--dirty-rate",
        "0.02",
    ]);
    let lines = common::lines(&stream);
    produce_lines_unbatched(&brokers, &topic, &lines);
    let source = format!("kafka://{brokers}/{topic}");

    for window in ["0.25", "3600"] {
        let (dir, hosts) = two_processes(&format!("cluster-unkeyed-{window}"));
        let reorder = ["--reorder-window", window];
        let single = finish(
            start(&source, &dir.join("single"), &unique("one"), &reorder),
            "1 × 1",
        );
        assert_eq!(events_processed(&single), lines.len() as u64);
        let group = unique("two");
        let hosts = hosts.display().to_string();
        let cluster: Vec<Child> = ["0", "1"]
            .into_iter()
            .map(|index| start_process(&source, &dir, &group, &hosts, index, &reorder))
            .collect();
        for (i, c) in cluster.into_iter().enumerate() {
            let summary = finish(c, &format!("process {i} of 2 × 2"));
            assert_eq!(
                events_processed(&summary),
                lines.len() as u64,
                "every process reads every partition: {summary}"
            );
            assert!(summary.contains("records of the other processes' patients"));
        }
        assert_same_outputs(&dir, Rules::All);
        let (single_store, a, b) = (dir.join("single"), dir.join("p0"), dir.join("p1"));
        let (dead, quarantined) = kept_aside(&[&single_store]);
        assert!(!dead.is_empty() && !quarantined.is_empty());
        assert_eq!(
            kept_aside(&[&a, &b]),
            (dead, quarantined),
            "the cluster keeps each dead letter and quarantined record once"
        );
        let (late, _) = alerts(&[&single_store], Rules::All);
        let late = late.values().filter(|a| a["late"] == true).count();
        if window == "0.25" {
            assert!(
                late > 0,
                "out-of-order events beyond the window alert as late"
            );
            let _ = std::fs::remove_dir_all(dir);
            continue;
        }
        assert_eq!(late, 0, "no event is later than an hour");
        // The file: one partition, the stream's own order.
        let file = dir.join("stream.jsonl");
        std::fs::write(&file, &stream).expect("stream file");
        let data = dir.join("file");
        ok(
            cds()
                .args(["run", "--http", "off", "--until-end", "--rules"])
                .arg(rules_dir())
                .args(["--source", &format!("file:{}", file.display())])
                .args(reorder)
                .arg("--data-dir")
                .arg(&data)
                .output()
                .expect("run the file"),
            "file run",
        );
        assert_equal(
            "KPIs of the file and of one process",
            &export(&[&single_store], "kpis").0,
            &export(&[&data], "kpis").0,
        );
        assert_equal(
            "alerts of the file and of one process",
            &export(&[&single_store], "alerts").0,
            &export(&[&data], "alerts").0,
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The newest version of every document of a container over the stores of several layouts
/// run one after the other (a hospital's documents move to the process that owns it in the
/// next layout), by the time each was written (a forecast, which says only when in event time
/// it was made, by that).
fn newest(stores: &[&Path], container: &str) -> BTreeMap<String, Value> {
    let mut docs: BTreeMap<String, Value> = BTreeMap::new();
    for data in stores {
        for (id, v) in common::exported(data, container) {
            let written = |d: &Value| (d["updated_at"].to_string(), d["as_of"].to_string());
            if docs.get(&id).is_none_or(|old| written(old) < written(&v)) {
                docs.insert(id, v);
            }
        }
    }
    common::comparable(docs)
}

/// Rescaling: one stream read in three parts by three layouts in turn, 1 process × 1 worker,
/// then 2 × 2, then 1 × 2, each started with `--rescale` on the checkpoints the one before it
/// left in one shared location, ends with the KPIs and alerts (every rule) of one process
/// that read the whole stream uninterrupted, and no alert raised twice.
#[test]
fn a_cluster_rescaled_from_one_process_to_two_and_back_equals_one_uninterrupted_process() {
    let brokers = broker();
    let topic = topic_with_deadletters(&brokers, "cluster-rescale", 4);
    // Without keys: each patient's events over the four partitions.
    let events = common::simulate(&[
        "--seed",
        "45",
        "--max-events",
        "12000",
        "--dirty-rate",
        "0.02",
    ]);
    let lines = common::lines(&events);
    let third = lines.len() / 3;
    let parts = [
        &lines[..third],
        &lines[third..2 * third],
        &lines[2 * third..],
    ];
    let source = format!("kafka://{brokers}/{topic}");
    let (dir, hosts) = two_processes("cluster-rescale");
    let hosts = hosts.display().to_string();
    let group = unique("rescaled");
    let checkpoints = dir.join("checkpoints").display().to_string();
    let shared = ["--checkpoints", checkpoints.as_str(), "--rescale"];

    // 1 × 1 reads the first part.
    produce_lines_unbatched(&brokers, &topic, parts[0]);
    let first = finish(start(&source, &dir.join("a"), &group, &shared), "1 × 1");
    assert_eq!(events_processed(&first), parts[0].len() as u64);

    // 2 × 2 continues from its checkpoint with the second part: each process reads every
    // partition, from where the single process stopped.
    produce_lines_unbatched(&brokers, &topic, parts[1]);
    let cluster: Vec<Child> = ["0", "1"]
        .into_iter()
        .map(|index| start_process(&source, &dir, &group, &hosts, index, &shared))
        .collect();
    for (i, c) in cluster.into_iter().enumerate() {
        let summary = finish(c, &format!("process {i} of 2 × 2, rescaled"));
        assert_eq!(
            events_processed(&summary),
            parts[1].len() as u64,
            "process {i} continues where the single process stopped: {summary}"
        );
    }

    // 1 × 2 continues from the two processes' checkpoints with the last part.
    produce_lines_unbatched(&brokers, &topic, parts[2]);
    let mut again = shared.to_vec();
    again.extend(["--workers", "2"]);
    let last = finish(start(&source, &dir.join("c"), &group, &again), "1 × 2");
    assert_eq!(events_processed(&last), parts[2].len() as u64);

    // One process over the whole stream, uninterrupted.
    let single = finish(
        start(&source, &dir.join("single"), &unique("one"), &[]),
        "1 × 1",
    );
    assert_eq!(events_processed(&single), lines.len() as u64);

    let layouts = [dir.join("a"), dir.join("p0"), dir.join("p1"), dir.join("c")];
    let layouts: Vec<&Path> = layouts.iter().map(PathBuf::as_path).collect();
    let expected = newest(&[&dir.join("single")], "kpis");
    assert!(expected.len() > 100);
    assert_equal(
        "KPIs of the rescaled layouts and of one process",
        &expected,
        &newest(&layouts, "kpis"),
    );
    let (expected, _) = alerts(&[&dir.join("single")], Rules::All);
    let (got, seen) = alerts(&layouts, Rules::All);
    assert!(
        expected.values().any(|a| a["mlmname"] == "capacity"),
        "the department rule fired"
    );
    assert!(seen.values().all(|n| *n == 1), "each alert is raised once");
    assert_equal(
        "alerts of the rescaled layouts and of one process",
        &expected,
        &got,
    );

    // A layout started on another's checkpoints without --rescale is refused, naming both.
    let refused = start(
        &source,
        &dir.join("c"),
        &group,
        &["--checkpoints", &format!("{checkpoints}/process-0")],
    )
    .wait_with_output()
    .expect("wait");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("--rescale"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}
