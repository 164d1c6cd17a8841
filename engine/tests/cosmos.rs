//! The Cosmos DB sink against a real Cosmos DB API server on loopback (`tests/cosmos/server.js`,
//! started by `bash tests/run.sh`, which exports `CDS_TEST_COSMOS_ENDPOINT`).
//!
//! 1. The same events written with `--sink sqlite` and with `--sink cosmos` give the same
//!    documents.
//! 2. Injected throttling and server errors: every document still arrives, once, and the
//!    retries are counted.
//! 3. The server killed and restarted during a run: the run recovers, re-creates the database
//!    and containers, and every document written from then on is there.
//! 4. A slow server: upserts stay within the concurrency bound, memory stays bounded and
//!    nothing is lost.

mod common;

use common::servers::CosmosServer;
use common::{as_doubles, cds, free_port, ok, rules_dir, scratch};

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cds_engine::metrics::Metrics;
use cds_engine::model::{Network, Pseudonymiser};
use cds_engine::pipeline::{self, PipelineConfig, RunSummary, Until};
use cds_engine::rules::RulesStage;
use cds_engine::sink::cosmos::fault_injection::{
    FaultInjectionConditionBuilder, FaultInjectionErrorType, FaultInjectionResultBuilder,
    FaultInjectionRule, FaultInjectionRuleBuilder, FaultOperationType,
};
use cds_engine::sink::cosmos::{AccountKey, CosmosConfig, CosmosSink, EMULATOR_KEY};
use cds_engine::sink::sqlite::{SqliteConfig, SqliteSink};
use cds_engine::sink::{Container, Sink};
use cds_engine::source::file::{FileConfig, FileSource};
use serde_json::Value;

/// One test at a time: they measure time, memory and retries, and the rule pack's time budget
/// per evaluation must not be starved by a neighbour test.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the sink confirmed as written: the last version of each id and when it was confirmed.
type Confirmed = Arc<Mutex<BTreeMap<String, (Instant, Container, Value)>>>;

/// Subscribes to the pipeline's feed of written documents.
fn record() -> (
    cds_engine::sink::Feed,
    Confirmed,
    std::thread::JoinHandle<()>,
) {
    let (feed, mut announced) = tokio::sync::broadcast::channel(1 << 20);
    let confirmed: Confirmed = Arc::default();
    let recorder = {
        let confirmed = confirmed.clone();
        std::thread::spawn(move || {
            while let Ok(w) = announced.blocking_recv() {
                let w: Arc<cds_engine::sink::Written> = w;
                if let Ok(mut m) = confirmed.lock() {
                    m.insert(
                        w.document.id.clone(),
                        (Instant::now(), w.container, w.document.body.clone()),
                    );
                }
            }
        })
    };
    (feed, confirmed, recorder)
}

/// The confirmed documents of a container, normalised like what is read back.
fn confirmed_in(confirmed: &Confirmed, container: Container) -> BTreeMap<String, Value> {
    let m = confirmed.lock().map(|m| m.clone()).unwrap_or_default();
    by_id(
        m.into_values()
            .filter(|(_, c, _)| *c == container)
            .map(|(_, _, body)| body)
            .collect(),
    )
}

/// The test server's endpoint; the tests never skip silently.
fn endpoint() -> String {
    std::env::var("CDS_TEST_COSMOS_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "CDS_TEST_COSMOS_ENDPOINT is not set: the Cosmos DB tests need the Cosmos DB test \
             server on loopback; run them with `bash tests/run.sh`"
        )
    })
}

/// A database of its own for each test, so tests never see each other's documents.
fn database(name: &str) -> String {
    format!("cds-test-{name}-{}", std::process::id())
}

/// Settings for the test server: it speaks HTTP/1.1 and text JSON only.
fn cosmos_config(endpoint: &str, database: &str) -> CosmosConfig {
    CosmosConfig {
        endpoint: endpoint.to_owned(),
        key: Some(AccountKey::new(EMULATOR_KEY)),
        database: database.to_owned(),
        http2: Some(false),
        binary_encoding: Some(false),
        ..CosmosConfig::default()
    }
}

/// Simulated events (with dirty data) as a JSON-lines file.
fn simulate(dir: &Path, seed: u64, events: u64) -> PathBuf {
    let out = common::simulate(&[
        "--seed",
        &seed.to_string(),
        "--max-events",
        &events.to_string(),
        "--dirty-rate",
        "0.05",
    ]);
    let path = dir.join("events.jsonl");
    std::fs::write(&path, out).expect("write events");
    path
}

/// Runs the pipeline in this process on a file, as `cds run --source file:… --until-end` does.
fn run_file(
    events: &Path,
    follow: Option<Duration>,
    sink: Box<dyn Sink>,
    data_dir: &Path,
    metrics: Arc<Metrics>,
    tune: impl FnOnce(&mut PipelineConfig),
) -> RunSummary {
    let network = Network::default_network();
    let source = FileSource::open(&FileConfig {
        path: events.to_path_buf(),
        follow: follow.is_some(),
    })
    .expect("open events");
    let rules =
        RulesStage::load(&rules_dir(), network.clone(), metrics.clone()).expect("rule pack");
    let mut config = PipelineConfig::new(data_dir.to_path_buf(), network);
    config.until = follow.map_or(Until::End, Until::Idle);
    tune(&mut config);
    pipeline::run(
        config,
        pipeline::Parts {
            source: Box::new(source),
            sink,
            rules: Some(rules),
            pseudonyms: Pseudonymiser::new(common::KEY),
            metrics,
            shutdown: Arc::new(AtomicBool::new(false)),
        },
    )
    .expect("pipeline run")
}

/// Documents by id from the embedded store, the reference every Cosmos DB result must equal.
/// `batch_size` cuts the input as the run under test does: alerts of the `long_stay` rule fire
/// from the event-time watermark and so depend on where the batches end.
fn reference(
    events: &Path,
    dir: &Path,
    batch_size: Option<usize>,
) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    let data = dir.join("reference");
    let config = SqliteConfig::in_data_dir(&data);
    let sink = SqliteSink::open(&config).expect("open sqlite");
    run_file(
        events,
        None,
        Box::new(sink),
        &data,
        Arc::new(Metrics::new()),
        |c| {
            if let Some(n) = batch_size {
                c.batch_size = n;
            }
        },
    );
    let read = |c| by_id(SqliteSink::read_all(&config, c).expect("read sqlite"));
    (read(Container::Kpis), read(Container::Alerts))
}

/// Documents by id, without what depends on when they were written: `updated_at` is the wall
/// clock, and `as_of` the watermark of the flush that wrote them, which depends on the flush
/// interval (20 ms for SQLite, 250 ms for Cosmos DB).
fn by_id(docs: Vec<Value>) -> BTreeMap<String, Value> {
    docs.into_iter()
        .map(|mut d| {
            if let Some(o) = d.as_object_mut() {
                o.remove("updated_at");
                o.remove("as_of");
            }
            (
                d["id"].as_str().unwrap_or_default().to_owned(),
                as_doubles(d),
            )
        })
        .collect()
}

fn cosmos_docs(
    config: CosmosConfig,
    dir: &Path,
) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    let sink = CosmosSink::open(config, Arc::new(Metrics::new()), &dir.join("reader"))
        .expect("open Cosmos DB for reading");
    let read = |c| by_id(sink.read_all(c).expect("read Cosmos DB"));
    (read(Container::Kpis), read(Container::Alerts))
}

fn assert_same(what: &str, expected: &BTreeMap<String, Value>, got: &BTreeMap<String, Value>) {
    assert!(
        !expected.is_empty(),
        "{what}: the reference has no documents"
    );
    assert!(
        expected == got,
        "{what}: {} expected, {} in Cosmos DB; first differences:\n{}",
        expected.len(),
        got.len(),
        common::differences(expected, got)
    );
}

/// Nothing was dead-lettered, Cosmos DB holds the reference KPIs and every alert the sink
/// confirmed; returns the alerts it holds.
fn assert_all_arrived(
    metrics: &Metrics,
    endpoint: &str,
    db: &str,
    dir: &Path,
    kpis: &BTreeMap<String, Value>,
    confirmed: &Confirmed,
) -> BTreeMap<String, Value> {
    assert_eq!(dead_lettered(metrics), 0, "nothing may be dead-lettered");
    let (got_kpis, got_alerts) = cosmos_docs(cosmos_config(endpoint, db), dir);
    assert_same("kpis", kpis, &got_kpis);
    assert_same(
        "alerts",
        &confirmed_in(confirmed, Container::Alerts),
        &got_alerts,
    );
    got_alerts
}

fn retries(metrics: &Metrics) -> BTreeMap<String, u64> {
    use prometheus::core::Collector;
    metrics
        .sink
        .cosmos_retries
        .collect()
        .iter()
        .flat_map(|mf| {
            mf.get_metric()
                .iter()
                .map(|m| {
                    let label = m
                        .get_label()
                        .iter()
                        .map(|l| l.value().to_owned())
                        .collect::<String>();
                    (label, m.get_counter().get_value() as u64)
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn dead_lettered(metrics: &Metrics) -> u64 {
    Metrics::total(&metrics.sink.cosmos_dead_lettered)
}

#[test]
fn sqlite_and_cosmos_hold_the_same_documents() {
    let _serial = serial();
    let endpoint = endpoint();
    let dir = scratch("same");
    let events = simulate(&dir, 1, 20_000);
    let db = database("same");
    let source = format!("file:{}", events.display());

    // Both through the binary, as an operator runs them.
    let sqlite_dir = dir.join("sqlite");
    ok(
        cds()
            .args(["run", "--source", &source, "--until-end", "--http", "off"])
            .arg("--rules")
            .arg(rules_dir())
            .arg("--data-dir")
            .arg(&sqlite_dir)
            .output()
            .expect("run sqlite"),
        "cds run --sink sqlite",
    );
    let settings = dir.join("cosmos.toml");
    std::fs::write(&settings, "http2 = false\nbinary_encoding = false\n").expect("settings");
    let cosmos_dir = dir.join("cosmos");
    let run = ok(
        cds()
            .args([
                "run",
                "--sink",
                "cosmos",
                "--source",
                &source,
                "--until-end",
            ])
            .args(["--http", "off"])
            .arg("--rules")
            .arg(rules_dir())
            .arg("--cosmos-config")
            .arg(&settings)
            .arg("--data-dir")
            .arg(&cosmos_dir)
            .env("COSMOS_ENDPOINT", &endpoint)
            .env("COSMOS_KEY", EMULATOR_KEY)
            .env("COSMOS_DATABASE", &db)
            .output()
            .expect("run cosmos"),
        "cds run --sink cosmos",
    );
    assert!(
        !String::from_utf8_lossy(&run.stderr).contains(EMULATOR_KEY),
        "the account key must never be logged"
    );
    assert!(
        !cosmos_dir.join("lake/deadletter/cosmos.jsonl").exists(),
        "nothing may be dead-lettered"
    );

    let config = SqliteConfig::in_data_dir(&sqlite_dir);
    let kpis = by_id(SqliteSink::read_all(&config, Container::Kpis).expect("sqlite kpis"));
    let alerts = by_id(SqliteSink::read_all(&config, Container::Alerts).expect("sqlite alerts"));
    let (got_kpis, got_alerts) = cosmos_docs(cosmos_config(&endpoint, &db), &dir);
    assert_same("kpis", &kpis, &got_kpis);
    assert_same("alerts", &alerts, &got_alerts);
    let _ = std::fs::remove_dir_all(&dir);
}

fn upsert_fault(
    name: &str,
    error: FaultInjectionErrorType,
    probability: f32,
    hits: u32,
) -> Arc<FaultInjectionRule> {
    Arc::new(
        FaultInjectionRuleBuilder::new(
            name,
            FaultInjectionResultBuilder::new()
                .with_error(error)
                .with_probability(probability)
                .build(),
        )
        .with_condition(
            FaultInjectionConditionBuilder::new()
                .with_operation_type(FaultOperationType::UpsertItem)
                .build(),
        )
        .with_hit_limit(hits)
        .build(),
    )
}

#[test]
fn throttling_and_server_errors_are_retried_and_every_document_arrives_once() {
    let _serial = serial();
    let endpoint = endpoint();
    let dir = scratch("faults");
    let events = simulate(&dir, 2, 10_000);
    let (kpis, _) = reference(&events, &dir, None);

    // The SDK applies the first rule that matches, so each rule gets a budget of hits and the
    // next one takes over once it is spent.
    let faults = vec![
        upsert_fault(
            "throttled",
            FaultInjectionErrorType::TooManyRequests,
            0.5,
            120,
        ),
        upsert_fault(
            "unavailable",
            FaultInjectionErrorType::ServiceUnavailable,
            0.5,
            60,
        ),
        upsert_fault("timeout", FaultInjectionErrorType::Timeout, 0.5, 40),
        upsert_fault("retry-with", FaultInjectionErrorType::RetryWith, 0.5, 20),
    ];
    let db = database("faults");
    let mut config = cosmos_config(&endpoint, &db);
    config.base_backoff_ms = 10;
    config.max_backoff_ms = 200;
    let metrics = Arc::new(Metrics::new());
    let data = dir.join("cosmos");
    let sink = CosmosSink::open_with_faults(config.clone(), metrics.clone(), &data, faults)
        .expect("open Cosmos DB");
    let (feed, confirmed, recorder) = record();
    run_file(&events, None, Box::new(sink), &data, metrics.clone(), |c| {
        c.flush_interval = config.flush_interval();
        c.feed = Some(feed);
    });
    let _ = recorder.join();

    let retried = retries(&metrics);
    eprintln!("retries by status: {retried:?}");
    assert!(
        retried.values().sum::<u64>() > 0,
        "the injected faults must reach the sink's retries: {retried:?}"
    );
    // KPIs equal a run without faults; alerts are what the rules stage produced in this run
    // (its time budget per evaluation makes alerts depend on the machine's load, not on the
    // sink), and each of them is in Cosmos DB as confirmed.
    let got_alerts = assert_all_arrived(&metrics, &endpoint, &db, &dir, &kpis, &confirmed);
    // Once: every alert handed to the sink was written by exactly one successful upsert.
    let alerts_written = metrics.rules.alerts_written.get();
    let alert_upserts = metrics
        .sink
        .cosmos_documents
        .with_label_values(&["alerts"])
        .get();
    assert_eq!(alert_upserts, alerts_written);
    assert_eq!(alert_upserts, got_alerts.len() as u64);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_restarted_server_is_recovered_from_and_every_later_document_arrives() {
    let _serial = serial();
    // The launcher and node come with the test server; the shared one must be running too.
    let _ = endpoint();
    let dir = scratch("restart");
    let all = simulate(&dir, 3, 24_000);
    let (kpis, _) = reference(&all, &dir, None);
    let lines: Vec<String> = std::fs::read_to_string(&all)
        .expect("events")
        .lines()
        .map(str::to_owned)
        .collect();

    let mut server = CosmosServer::start(free_port(), dir.join("server.log"));
    let db = database("restart");
    let mut config = cosmos_config(&server.endpoint(), &db);
    config.request_timeout_ms = 2_000;
    config.max_backoff_ms = 1_000;
    config.max_retries = 30;
    let metrics = Arc::new(Metrics::new());
    let data = dir.join("cosmos");
    let sink = CosmosSink::open(config.clone(), metrics.clone(), &data).expect("open Cosmos DB");

    // The events arrive over about six seconds; the server dies after two and comes back a
    // second and a half later (empty: it keeps everything in memory).
    let live = dir.join("live.jsonl");
    std::fs::write(&live, "").expect("live file");
    let (feed, mut announced) = tokio::sync::broadcast::channel(1 << 20);
    // What the sink confirmed as written, last version and time per id.
    let written: Arc<Mutex<BTreeMap<String, (Instant, Value)>>> = Arc::default();
    let recorder = {
        let written = written.clone();
        std::thread::spawn(move || {
            while let Ok(w) = announced.blocking_recv() {
                let w: Arc<cds_engine::sink::Written> = w;
                if let Ok(mut m) = written.lock() {
                    m.insert(
                        w.document.id.clone(),
                        (Instant::now(), w.document.body.clone()),
                    );
                }
            }
        })
    };
    let run = {
        let (live, metrics, data) = (live.clone(), metrics.clone(), data.clone());
        let interval = config.flush_interval();
        std::thread::spawn(move || {
            run_file(
                &live,
                Some(Duration::from_secs(3)),
                Box::new(sink),
                &data,
                metrics,
                |c| {
                    c.flush_interval = interval;
                    c.feed = Some(feed);
                },
            )
        })
    };
    // The outage runs beside the input, which keeps arriving meanwhile.
    let chaos = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        server.stop();
        std::thread::sleep(Duration::from_millis(1_500));
        server.restart();
        (server, Instant::now())
    });
    let mut out = std::fs::OpenOptions::new()
        .append(true)
        .open(&live)
        .expect("append");
    for chunk in lines.chunks(1_000) {
        for l in chunk {
            writeln!(out, "{l}").expect("append events");
        }
        out.flush().expect("flush events");
        std::thread::sleep(Duration::from_millis(250));
    }
    let (server, restarted_at) = chaos.join().expect("the server was restarted");
    eprintln!("events written; waiting for the run to finish");
    let summary = run.join().expect("the run must not panic");
    let _ = recorder.join();
    assert_eq!(summary.events, lines.len() as u64);

    let retried = retries(&metrics);
    eprintln!("retries by status: {retried:?}");
    assert!(
        retried.get("404").copied().unwrap_or(0) > 0,
        "the sink must have found the containers gone and created them again: {retried:?}"
    );
    assert_eq!(dead_lettered(&metrics), 0, "nothing may be dead-lettered");

    let (got_kpis, got_alerts) = cosmos_docs(cosmos_config(&server.endpoint(), &db), &dir);
    // The KPIs the server holds are final: equal to the reference, whatever the batching.
    // (Alerts are compared with what the sink wrote instead: the `long_stay` rule fires from
    // the event-time watermark, which depends on how the input was cut into batches.)
    for (id, doc) in &got_kpis {
        assert_eq!(
            kpis.get(id),
            Some(doc),
            "kpis: {id} differs from the reference"
        );
    }
    let written = written.lock().map(|m| m.clone()).unwrap_or_default();
    let last = |id: &String| {
        written
            .get(id)
            .map(|(_, body)| by_id(vec![body.clone()]).into_values().next())
    };
    for (id, doc) in got_kpis.iter().chain(&got_alerts) {
        assert_eq!(
            last(id).flatten().as_ref(),
            Some(doc),
            "{id}: the server holds another version than the sink wrote last"
        );
    }
    // Every document whose last write was confirmed after the restart is there. Those written
    // only before it were lost with the server's memory, which a real account keeps.
    let after: Vec<&String> = written
        .iter()
        .filter(|(_, (at, _))| *at > restarted_at)
        .map(|(id, _)| id)
        .collect();
    assert!(
        !after.is_empty(),
        "documents were written after the restart"
    );
    let missing: Vec<&&String> = after
        .iter()
        .filter(|id| !got_kpis.contains_key(**id) && !got_alerts.contains_key(**id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} documents written after the restart are missing, e.g. {:?}",
        missing.len(),
        after.len(),
        missing.iter().take(3).collect::<Vec<_>>()
    );
    eprintln!(
        "{} documents written after the restart, all present; {} written only before it",
        after.len(),
        written.len() - after.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Resident memory of this process now and at its peak, in bytes.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[test]
fn a_slow_server_holds_the_stream_back_without_losing_anything() {
    let _serial = serial();
    let endpoint = endpoint();
    let dir = scratch("slow");
    let events = simulate(&dir, 4, 30_000);
    let (kpis, _) = reference(&events, &dir, Some(500));

    // Every upsert waits 20 ms before it reaches the server; four in flight at most.
    let delay = Arc::new(
        FaultInjectionRuleBuilder::new(
            "slow",
            FaultInjectionResultBuilder::new()
                .with_delay(Duration::from_millis(20))
                .build(),
        )
        .with_condition(
            FaultInjectionConditionBuilder::new()
                .with_operation_type(FaultOperationType::UpsertItem)
                .build(),
        )
        .build(),
    );
    let db = database("slow");
    let mut config = cosmos_config(&endpoint, &db);
    config.max_in_flight = 4;
    let metrics = Arc::new(Metrics::new());
    let data = dir.join("cosmos");
    let sink = CosmosSink::open_with_faults(config.clone(), metrics.clone(), &data, vec![delay])
        .expect("open Cosmos DB");

    let (before, _) = memory();
    let peak = Arc::new(Mutex::new(before));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let (now, _) = memory();
                if let Ok(mut p) = peak.lock() {
                    *p = (*p).max(now);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let (feed, confirmed, recorder) = record();
    let started = Instant::now();
    run_file(&events, None, Box::new(sink), &data, metrics.clone(), |c| {
        c.flush_interval = config.flush_interval();
        // Small batches, so that the source would run far ahead if nothing held it back.
        c.batch_size = 500;
        c.feed = Some(feed);
    });
    let _ = recorder.join();
    let elapsed = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sampler.join();
    let peak = peak.lock().map(|p| *p).unwrap_or(0);

    let requests = metrics.sink.cosmos_request_seconds.get_sample_count();
    let busy = metrics.sink.cosmos_request_seconds.get_sample_sum();
    let concurrency = busy / elapsed.as_secs_f64();
    eprintln!(
        "{requests} upserts in {:.1} s, mean concurrency {concurrency:.2}, memory {} -> peak {} MiB",
        elapsed.as_secs_f64(),
        before >> 20,
        peak >> 20
    );
    // The slow server was the bottleneck, and never more than four upserts were in flight.
    assert!(requests as f64 * 0.020 / 4.0 <= elapsed.as_secs_f64());
    assert!(concurrency <= 4.0 + 1e-6, "mean concurrency {concurrency}");
    // Bounded channels keep what waits for the sink small: far below the size of the input.
    assert!(
        peak.saturating_sub(before) < 256 << 20,
        "memory grew by {} MiB",
        peak.saturating_sub(before) >> 20
    );
    let got_alerts = assert_all_arrived(&metrics, &endpoint, &db, &dir, &kpis, &confirmed);
    assert_eq!(got_alerts.len() as u64, metrics.rules.alerts_written.get());
    let _ = std::fs::remove_dir_all(&dir);
}
