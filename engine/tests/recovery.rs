//! A crash is boring: the engine is killed with SIGKILL at random moments and restarted, and
//! at the end the KPI documents equal those of an uninterrupted run, every alert of that run
//! exists exactly once and none is extra, and the lake's dead-letter and quarantine files hold
//! each row once. Once through a file, once through a real Kafka broker (`tests/run.sh` starts
//! it), and with the newest checkpoint corrupted before the last restart.
//!
//! The moments are random; the seed is printed so that a failure can be replayed with
//! `CDS_TEST_SEED`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::kafka::{
    broker, create_topics, produce_lines_to_partition, produce_unbatched, topic_with_deadletters,
};
use common::{cds, delta, differences, rules_dir, scratch, simulate, unique};

/// A small deterministic generator for the kill moments.
struct Moments(u64);

impl Moments {
    fn new() -> Self {
        let seed = std::env::var("CDS_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(7)
            });
        eprintln!("kill moments: CDS_TEST_SEED={seed}");
        Moments(seed | 1)
    }

    /// Milliseconds in `lo..hi`.
    fn next(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo)
    }
}

fn run_args(source: &str, data: &Path) -> Vec<String> {
    vec![
        "run".into(),
        "--http".into(),
        "off".into(),
        "--rules".into(),
        rules_dir().display().to_string(),
        "--source".into(),
        source.into(),
        "--data-dir".into(),
        data.display().to_string(),
        "--checkpoint-interval".into(),
        "0.3".into(),
        "--batch-size".into(),
        "2000".into(),
    ]
}

/// Runs to the end of the input (`stop` is `--until-end` or `--until-idle N`).
fn run_to_end(source: &str, data: &Path, extra: &[&str]) {
    let out = cds()
        .env("CDS_LOG", "info")
        .args(run_args(source, data))
        .args(extra)
        .output()
        .expect("run");
    let _ = std::fs::write(data.with_extension("end.log"), &out.stderr);
    assert!(
        out.status.success(),
        "cds run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts a run; its log is kept beside its data directory (`crashed.runN.log`), for a failure.
fn start(source: &str, data: &Path, extra: &[&str]) -> std::process::Child {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log = std::fs::File::create(data.with_extension(format!("run{n}.log"))).expect("log");
    cds()
        .env("CDS_LOG", "info")
        .args(run_args(source, data))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start")
}

/// Waits until `ready` or the run's end, then kills it with SIGKILL after `after`; returns
/// whether it was still running.
fn kill_after(mut child: std::process::Child, ready: impl Fn() -> bool, after: Duration) -> bool {
    let mut deadline = None;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        let now = Instant::now();
        match deadline {
            None if ready() => deadline = Some(now + after),
            Some(d) if now >= d => break,
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    true
}

/// Starts a run and kills it with SIGKILL after `after`; returns whether it was still running.
fn run_and_kill(source: &str, data: &Path, extra: &[&str], after: Duration) -> bool {
    kill_after(start(source, data, extra), || true, after)
}

/// The newest checkpoint's file name, if any.
fn newest_checkpoint(data: &Path) -> Option<std::ffi::OsString> {
    std::fs::read_dir(data.join("lake/checkpoints"))
        .ok()?
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().ends_with(".bin"))
        .max()
}

/// Starts a run and kills it with SIGKILL `after` the first checkpoint it writes: each kill
/// then lands at a random moment of real work, with progress behind it, however long the
/// machine takes to start the process.
fn run_and_kill_after_a_checkpoint(
    source: &str,
    data: &Path,
    extra: &[&str],
    after: Duration,
) -> bool {
    let before = newest_checkpoint(data);
    kill_after(
        start(source, data, extra),
        || newest_checkpoint(data) > before,
        after,
    )
}

fn export(data: &Path, container: &str) -> BTreeMap<String, Value> {
    let docs = common::exported(data, container);
    let ids = docs.len();
    let docs = common::comparable(docs);
    if container == "alerts" {
        assert_eq!(ids, docs.len(), "an alert id appears twice");
    }
    docs
}

fn lake_rows(data: &Path) -> (Vec<String>, Vec<String>) {
    let read = |p: &str| {
        std::fs::read_to_string(data.join("lake").join(p))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    (
        read("deadletter/deadletter.jsonl"),
        read("silver/quarantine/quarantine.jsonl"),
    )
}

fn assert_same_outputs(reference: &Path, crashed: &Path) {
    for container in ["kpis", "alerts"] {
        let (expected, got) = (export(reference, container), export(crashed, container));
        assert!(!expected.is_empty(), "the reference run wrote {container}");
        assert!(
            expected == got,
            "{container} after crashes differ from an uninterrupted run ({} vs {} documents):\n{}",
            expected.len(),
            got.len(),
            differences(&expected, &got)
        );
    }
    let (dead_ref, quarantine_ref) = lake_rows(reference);
    let (dead, quarantine) = lake_rows(crashed);
    assert!(!dead_ref.is_empty() && !quarantine_ref.is_empty());
    // Sorted: over several partitions the order of arrival differs from run to run.
    let positions = |rows: &[String]| -> Vec<String> {
        let mut all: Vec<String> = rows
            .iter()
            .map(|r| {
                let v: Value = serde_json::from_str(r).expect("lake row");
                v["position"].to_string()
            })
            .collect();
        all.sort();
        all
    };
    assert_eq!(
        positions(&dead),
        positions(&dead_ref),
        "each dead letter once"
    );
    assert_eq!(
        quarantine.len(),
        quarantine_ref.len(),
        "each quarantined row once"
    );
}

/// Every Delta table of the crashed run holds each source position exactly once; Bronze holds
/// every input message, the positions of the uninterrupted run's; Silver and the patient-flow
/// facts hold each event once, the events of the uninterrupted run. (Which copy of a duplicate
/// they hold, and so its position, follows the arrival order when the two copies are in two
/// partitions, in an uninterrupted run as in a restarted one.)
fn assert_lake_exactly_once(reference: &Path, crashed: &Path, messages: usize) {
    for table in ["bronze/events", "silver/events", "gold/fact_patient_flow"] {
        let expected = delta::read_local(&reference.join("lake"), table);
        let got = delta::read_local(&crashed.join("lake"), table);
        let positions = got.positions();
        let distinct = delta::distinct(&positions);
        assert_eq!(
            distinct.len(),
            positions.len(),
            "{table}: a position written twice"
        );
        if table == "bronze/events" {
            assert_eq!(
                distinct,
                delta::distinct(&expected.positions()),
                "{table}: positions differ"
            );
            assert_eq!(
                positions.len(),
                messages,
                "bronze holds every input message once"
            );
        } else {
            let events = got.strings("event_id");
            let distinct = delta::distinct(&events);
            assert_eq!(
                distinct.len(),
                events.len(),
                "{table}: an event written twice"
            );
            assert_eq!(
                distinct,
                delta::distinct(&expected.strings("event_id")),
                "{table}: events differ"
            );
        }
        eprintln!("{table}: {} rows, each once", positions.len());
    }
}

fn corrupt_newest_checkpoint(data: &Path) {
    let dir = data.join("lake/checkpoints");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("checkpoints exist")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "at least two checkpoints kept: {files:?}");
    let newest = files.last().expect("newest");
    let mut bytes = std::fs::read(newest).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(newest, bytes).expect("corrupt");
}

#[test]
fn killed_five_times_through_a_file_ends_equal_to_an_uninterrupted_run() {
    let dir = scratch("file");
    let events = simulate(&[
        "--seed",
        "21",
        "--max-events",
        "60000",
        "--dirty-rate",
        "0.03",
    ]);
    let file = dir.join("events.jsonl");
    std::fs::write(&file, events).expect("events");
    let source = format!("file:{}", file.display());
    let (reference, crashed) = (dir.join("reference"), dir.join("crashed"));

    run_to_end(
        &source,
        &reference,
        &["--until-end", "--rules-threads", "1"],
    );

    // Each restart with another number of rules threads: a checkpoint holds the whole rules
    // stage, split again by the run that continues from it.
    let threads = ["3", "1", "2", "4", "2"];
    let mut moments = Moments::new();
    let mut kills = 0;
    while kills < 5 {
        let after = Duration::from_millis(moments.next(0, 300));
        let extra = ["--until-end", "--rules-threads", threads[kills]];
        if !run_and_kill_after_a_checkpoint(&source, &crashed, &extra, after) {
            break; // it finished before the kill: nothing left to interrupt
        }
        kills += 1;
    }
    assert!(kills >= 3, "the run was interrupted only {kills} times");
    corrupt_newest_checkpoint(&crashed);
    run_to_end(&source, &crashed, &["--until-end", "--rules-threads", "3"]);
    assert_same_outputs(&reference, &crashed);
    assert_lake_exactly_once(&reference, &crashed, 60_000);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn killed_five_times_through_kafka_ends_equal_to_an_uninterrupted_run() {
    let brokers = broker();
    // Four partitions written without keys: each patient's events spread over all four, and
    // the two copies of a duplicate may land in two of them. The rules read event-time order
    // whatever the interleaving (the reorder window); a restarted run reads again what the lake
    // holds beyond its checkpoint before newer input, so the copy the lake holds is the copy
    // kept again.
    let topic = unique("crash");
    let deadletters = format!("{topic}.deadletter");
    create_topics(&brokers, &[(&topic, 4), (&deadletters, 1)]);
    let produced = produce_unbatched(
        &brokers,
        &topic,
        &[
            "--seed",
            "22",
            "--max-events",
            "200000",
            "--dirty-rate",
            "0.02",
        ],
    );
    assert_eq!(produced, 200_000);
    let source = format!("kafka://{brokers}/{topic}");
    let dir = scratch("kafka");
    let (reference, crashed) = (dir.join("reference"), dir.join("crashed"));
    // The source assigns itself its partition (no group rebalance to wait for after a kill),
    // so a restarted run reads again at once; the idle limit only ends the last run.
    let idle = ["--until-idle", "20"];
    let reference_group = unique("reference");
    let crash_group = unique("crashed");
    run_to_end(
        &source,
        &reference,
        &[&idle[..], &["--group", &reference_group]].concat(),
    );

    let mut moments = Moments::new();
    for _ in 0..5 {
        let after = Duration::from_millis(moments.next(3000, 9000));
        run_and_kill(
            &source,
            &crashed,
            &[&idle[..], &["--group", &crash_group]].concat(),
            after,
        );
    }
    run_to_end(
        &source,
        &crashed,
        &[&idle[..], &["--group", &crash_group]].concat(),
    );
    assert_same_outputs(&reference, &crashed);
    assert_lake_exactly_once(&reference, &crashed, produced);
    let _ = std::fs::remove_dir_all(dir);
}

/// The two copies of one event in two partitions (a producer without keys sent it twice): the
/// first copy read by a run that wrote it to the lake and was killed before its next
/// checkpoint, the second produced after the kill, at the head of its partition's new
/// messages, while the first copy sits behind 6,000 others (more than one fetch: without the
/// wait the second copy is read first and kept, and the lake holds the event twice). The
/// restarted run reads the first copy again (the lake holds it) before it takes the second
/// (which waits), so Silver keeps the copy the lake holds and the lake holds the event once.
#[test]
fn a_duplicate_across_partitions_after_a_crash_is_kept_once_in_the_lake() {
    let brokers = broker();
    let topic = topic_with_deadletters(&brokers, "crash-copy", 2);
    let stream = simulate(&["--seed", "31", "--max-events", "6400", "--dirty-rate", "0"]);
    let lines = common::lines(&stream);
    let twice = lines[6350];
    let id = serde_json::from_slice::<Value>(twice).expect("an event")["event_id"]
        .as_str()
        .expect("an event id")
        .to_owned();
    let source = format!("kafka://{brokers}/{topic}");
    let dir = scratch("crash-copy");
    let data = dir.join("data");
    let group = unique("copy");
    let run = |extra: &[&str]| {
        let mut c = cds();
        c.env("CDS_LOG", "info")
            .args(["run", "--http", "off", "--rules"])
            .arg(rules_dir())
            .args([
                "--source",
                &source,
                "--group",
                &group,
                "--batch-size",
                "100",
            ])
            .args(["--checkpoint-interval", "3600", "--data-dir"])
            .arg(&data)
            .args(extra);
        c
    };
    let silver_commits =
        || std::fs::read_dir(data.join("lake/silver/events/_delta_log")).map_or(0, |d| d.count());

    // A first run reads 100 events of each partition and stops cleanly: a checkpoint.
    produce_lines_to_partition(&brokers, &topic, 0, &lines[..100]);
    produce_lines_to_partition(&brokers, &topic, 1, &lines[100..200]);
    let out = run(&["--until-idle", "3"]).output().expect("first run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The first copy behind 6,000 others in partition 0: read, written to the lake (its 5-second
    // commit), no checkpoint; killed.
    let mut first: Vec<&[u8]> = lines[200..6200].to_vec();
    first.push(twice);
    produce_lines_to_partition(&brokers, &topic, 0, &first);
    let log = std::fs::File::create(dir.join("killed.log")).expect("log");
    let mut killed = run(&[]).stderr(log).spawn().expect("second run");
    let waited = Instant::now();
    let mut commits = silver_commits();
    loop {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "the first copy reached no lake commit"
        );
        std::thread::sleep(Duration::from_millis(100));
        if silver_commits() == commits {
            continue;
        }
        commits = silver_commits();
        let silver = delta::read_local(&data.join("lake"), "silver/events");
        if silver.strings("event_id").contains(&Some(id.clone())) {
            break;
        }
    }
    killed.kill().expect("SIGKILL");
    let _ = killed.wait();

    // The second copy at the head of partition 1's new messages; the run continues from the
    // first run's checkpoint.
    let mut second: Vec<&[u8]> = vec![twice];
    second.extend_from_slice(&lines[6200..6300]);
    produce_lines_to_partition(&brokers, &topic, 1, &second);
    let out = run(&["--until-idle", "5"]).output().expect("third run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("reading again what the lake holds beyond the checkpoint"),
        "{stderr}"
    );
    let silver = delta::read_local(&data.join("lake"), "silver/events");
    let events = silver.strings("event_id");
    assert_eq!(
        events.iter().filter(|e| e.as_deref() == Some(&id)).count(),
        1,
        "the event is in the lake once"
    );
    assert_eq!(
        delta::distinct(&events).len(),
        events.len(),
        "no event twice"
    );
    assert_eq!(events.len(), 6301, "every event once");
    let _ = std::fs::remove_dir_all(dir);
}
