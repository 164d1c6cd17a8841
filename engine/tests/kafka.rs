//! The Kafka source against a real Kafka-protocol broker on 127.0.0.1 (`tests/run.sh` starts
//! tansu and exports `CDS_TEST_KAFKA=HOST:PORT` and `CDS_TEST_TANSU=PATH`). Without them these
//! tests fail with a clear message: a missing broker is never a skipped test.
//!
//! The broker keeps its state in memory, so every test uses its own topics and groups.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::http::response;
use common::kafka::{
    broker, create_topics, produce, produce_lines_unbatched, produce_unbatched,
    topic_with_deadletters,
};
use common::servers::{metric, Tansu};
use common::{cds, differences, documents, events_processed, free_port, scratch, simulate, unique};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::Message;

fn run(data: &Path, source: &str, extra: &[&str]) -> String {
    let out = cds()
        .args([
            "run",
            "--http",
            "off",
            "--rules",
            "off",
            "--source",
            source,
            "--data-dir",
        ])
        .arg(data)
        .args(extra)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "cds run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn four_partitions_give_the_same_kpis_as_a_file() {
    let brokers = broker();
    let topic = topic_with_deadletters(&brokers, "adt", 4);
    let args = [
        "--seed",
        "7",
        "--max-events",
        "100000",
        "--dirty-rate",
        "0.02",
    ];
    let dir = scratch("equal");
    let file = dir.join("events.jsonl");
    std::fs::write(&file, simulate(&args)).expect("write file");
    produce(&brokers, &topic, &args);

    let from_file = dir.join("file");
    run(
        &from_file,
        &format!("file:{}", file.display()),
        &["--until-end"],
    );
    let from_kafka = dir.join("kafka");
    let started = Instant::now();
    let summary = run(
        &from_kafka,
        &format!("kafka://{brokers}/{topic}"),
        &["--group", &unique("g"), "--until-idle", "5"],
    );
    assert_eq!(events_processed(&summary), 100_000, "{summary}");
    eprintln!(
        "consumed 100,000 events from 4 partitions in {:.1} s (5 s idle included)",
        started.elapsed().as_secs_f64()
    );
    let (a, b) = (
        documents(&from_file, "kpis"),
        documents(&from_kafka, "kpis"),
    );
    assert!(a.len() > 100);
    assert_eq!(
        a,
        b,
        "KPIs from Kafka differ from the file:\n{}",
        differences(&a, &b)
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The payloads that are not events, in the middle of a clean stream.
const BAD: [&[u8]; 3] = [
    b"not json at all",
    b"{\"event_id\": \"x\"}",
    b"{\"truncated\": ",
];

/// Produces 100 clean events, `bad`, then 100 more clean events to `topic`, unkeyed.
fn produce_mixed(brokers: &str, topic: &str, bad: &[Vec<u8>]) {
    let good = simulate(&["--seed", "3", "--max-events", "200", "--dirty-rate", "0"]);
    let mut lines: Vec<&[u8]> = good
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let tail = lines.split_off(100);
    lines.extend(bad.iter().map(Vec::as_slice));
    lines.extend(tail);
    let producer: rdkafka::producer::BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("producer");
    for l in &lines {
        producer
            .send(rdkafka::producer::BaseRecord::<(), [u8]>::to(topic).payload(*l))
            .expect("send");
        producer.poll(Duration::ZERO);
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10)).expect("flush");
}

#[test]
fn malformed_messages_land_on_the_deadletter_topic_and_the_run_goes_on() {
    let brokers = broker();
    let topic = unique("bad");
    let dlq = format!("{topic}.deadletter");
    // Only the source topic: the engine creates its dead-letter topic at start, so brokers that
    // do not create topics on first write still receive dead letters.
    create_topics(&brokers, &[(&topic, 1)]);
    let dir = scratch("dlq");
    let bad = BAD;
    produce_mixed(&brokers, &topic, &bad.map(<[u8]>::to_vec));

    let data = dir.join("data");
    let summary = run(
        &data,
        &format!("kafka://{brokers}/{topic}"),
        &["--group", &unique("g"), "--until-idle", "4"],
    );
    assert_eq!(events_processed(&summary), 203, "{summary}");
    assert!(summary.contains("3 dead letters"), "{summary}");

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", unique("dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&dlq]).expect("subscribe");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 3 && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) {
            let headers: BTreeMap<String, String> = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            got.push((m.payload().unwrap_or_default().to_vec(), headers));
        }
    }
    assert_eq!(got.len(), 3, "three dead letters on {dlq}");
    for (payload, headers) in &got {
        assert!(
            bad.contains(&payload.as_slice()),
            "{:?}",
            String::from_utf8_lossy(payload)
        );
        assert!(
            headers.get("cds.reason").is_some_and(|r| !r.is_empty()),
            "{headers:?}"
        );
        assert_eq!(
            headers.get("cds.source").map(String::as_str),
            Some(format!("kafka:{topic}").as_str())
        );
        assert!(headers.contains_key("cds.offset") && headers.contains_key("cds.partition"));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_restarted_consumer_resumes_where_the_outputs_stopped() {
    // What is asserted: nothing is skipped and nothing is read twice across a restart with the
    // same group (the engine commits only offsets whose outputs are written). That the KPIs
    // after a restart equal an uninterrupted run is the crash tests' part (recovery.rs).
    let brokers = broker();
    let topic = topic_with_deadletters(&brokers, "restart", 4);
    let group = unique("g");
    let source = format!("kafka://{brokers}/{topic}");
    let dir = scratch("restart");
    produce(&brokers, &topic, &["--seed", "11", "--max-events", "30000"]);
    let first = run(
        &dir.join("a"),
        &source,
        &["--group", &group, "--until-idle", "4"],
    );
    produce(&brokers, &topic, &["--seed", "12", "--max-events", "20000"]);
    let second = run(
        &dir.join("b"),
        &source,
        &["--group", &group, "--until-idle", "4"],
    );
    assert_eq!(events_processed(&first), 30_000, "{first}");
    assert_eq!(
        events_processed(&second),
        20_000,
        "the second run reads only what came after: {second}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_engine_survives_a_broker_restart_and_catches_up() {
    // 20,000 events are read, the broker goes away for a few seconds and comes back with its
    // log; then 10,000 more arrive. The engine must keep running through the outage, count
    // it, reconnect, and end with the KPIs of the 30,000 events read exactly once.
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let topic = unique("outage");
    let dir = scratch("outage");
    let stream = simulate(&["--seed", "21", "--max-events", "30000"]);
    let file = dir.join("all.jsonl");
    std::fs::write(&file, &stream).expect("file");
    run(
        &dir.join("file"),
        &format!("file:{}", file.display()),
        &["--until-end"],
    );
    let lines = common::lines(&stream);
    let (before, after) = lines.split_at(20_000);

    let broker = Tansu::start(port, &dir);
    create_topics(
        &brokers,
        &[(&topic, 4), (&format!("{topic}.deadletter"), 1)],
    );
    produce_lines_unbatched(&brokers, &topic, before);
    let data = dir.join("kafka");
    let http = format!("127.0.0.1:{}", free_port());
    let mut engine: Child = cds()
        .args([
            "run",
            "--rules",
            "off",
            "--until-idle",
            "20",
            "--http",
            &http,
        ])
        .args(["--group", &unique("outage")])
        .args([
            "--source",
            &format!("kafka://{brokers}/{topic}"),
            "--kafka-config",
            "reconnect.backoff.max.ms=1000",
        ])
        .arg("--data-dir")
        .arg(&data)
        .env("CDS_LOG", "info,librdkafka=warn")
        .stdout(Stdio::piped())
        .stderr(
            std::fs::File::create(dir.join("engine.log"))
                .map(Stdio::from)
                .unwrap_or(Stdio::null()),
        )
        .spawn()
        .expect("engine");
    let engine_log = || std::fs::read_to_string(dir.join("engine.log")).unwrap_or_default();
    // Wait until the first part is read, then take the broker away.
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&http, "cds_events_in_total").unwrap_or(0.0) < 20_000.0 {
        assert!(
            Instant::now() < deadline,
            "the first 20,000 events were not read:\n{}",
            engine_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    broker.stop();
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&http, "cds_source_outages_total").unwrap_or(0.0) < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the outage was not counted:\n{}",
            engine_log()
        );
        assert!(
            engine.try_wait().expect("engine state").is_none(),
            "the engine keeps running while the broker is down:\n{}",
            engine_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        metric(&http, "cds_source_unavailable_seconds").is_some(),
        "the outage's length is exported"
    );
    let broker = Tansu::start(port, &dir);
    produce_lines_unbatched(&brokers, &topic, after);
    let out = engine.wait_with_output().expect("engine output");
    let log = engine_log();
    assert!(
        out.status.success(),
        "the engine failed ({}):\n{log}",
        out.status
    );
    broker.stop();
    assert!(
        log.contains("kafka available again"),
        "the reconnection is logged:\n{log}"
    );
    assert_eq!(
        events_processed(&String::from_utf8_lossy(&out.stdout)),
        30_000,
        "every event is read once: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (a, b) = (
        documents(&dir.join("file"), "kpis"),
        documents(&data, "kpis"),
    );
    assert_eq!(
        a,
        b,
        "KPIs after the outage differ:\n{}\nengine log:\n{log}",
        differences(&a, &b)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn consumer_lag_counts_the_messages_not_yet_read() {
    use cds_engine::source::kafka::{KafkaConfig, KafkaSource};
    use cds_engine::source::{RawBatch, Source};
    let brokers = broker();
    let topic = unique("lag");
    create_topics(&brokers, &[(&topic, 1)]);
    let produced = produce_unbatched(&brokers, &topic, &["--seed", "8", "--max-events", "300"]);
    let mut config =
        KafkaConfig::from_url(&format!("kafka://{brokers}/{topic}")).expect("source url");
    config.group = unique("lag");
    let mut source = KafkaSource::open(config).expect("kafka source");
    let mut batch = RawBatch::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while batch.len() < 100 {
        assert!(Instant::now() < deadline, "no messages read");
        let want = 100 - batch.len();
        source
            .poll(&mut batch, want, Duration::from_secs(1))
            .expect("poll");
    }
    // tansu reports the base offset of the last record batch as the end of the log, one short
    // of the true end when every message is its own batch; a real broker reports the end.
    // The lag is measured beside the ingest loop: the first readings may predate the reads.
    let behind = (produced - 100) as u64;
    let settled = |source: &mut KafkaSource, ok: &dyn Fn(u64) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let lag = source.lag();
            if lag.is_some_and(ok) || Instant::now() > deadline {
                return lag;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let lag = settled(&mut source, &|l| l == behind || l + 1 == behind);
    assert!(
        lag.is_some_and(|l| l == behind || l + 1 == behind),
        "lag {lag:?} after reading 100 of {produced}"
    );
    while batch.len() < produced {
        assert!(Instant::now() < deadline, "not every message was read");
        let want = produced - batch.len();
        source
            .poll(&mut batch, want, Duration::from_secs(1))
            .expect("poll");
    }
    let lag = settled(&mut source, &|l| l == 0);
    assert_eq!(lag, Some(0), "nothing is left behind at the end");
}

#[test]
fn a_deadletter_topic_that_cannot_be_written_is_counted_logged_once_and_kept_locally() {
    let brokers = broker();
    let topic = unique("bad-dlq");
    create_topics(&brokers, &[(&topic, 1)]);
    // Three payloads that are not events and are larger than the producer may send: the
    // dead-letter topic refuses each of them.
    let big: Vec<Vec<u8>> = (0..3u8).map(|i| vec![b'a' + i; 60_000]).collect();
    produce_mixed(&brokers, &topic, &big);
    let dir = scratch("dlq-refused");
    let data = dir.join("data");
    let port = common::free_port();
    let mut child = cds()
        .args([
            "run",
            "--http",
            &format!("127.0.0.1:{port}"),
            "--rules",
            "off",
        ])
        .args(["--source", &format!("kafka://{brokers}/{topic}")])
        .args(["--group", &unique("g"), "--until-idle", "6"])
        .args(["--kafka-config", "message.max.bytes=20000"])
        .arg("--data-dir")
        .arg(&data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    let mut metrics = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if let Some(body) = response(
            &format!("127.0.0.1:{port}"),
            "/metrics",
            &[],
            Duration::from_secs(2),
        ) {
            if body.contains("cds_deadletter_publish_failures_total 3") {
                metrics = body;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "a refused dead-letter topic stopped the run: {stderr}"
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert_eq!(events_processed(&summary), 203, "{summary}");
    assert!(
        metrics.contains("cds_deadletter_publish_failures_total 3"),
        "failed publishes not counted:\n{stderr}"
    );
    assert!(
        metrics.contains("cds_ops_condition_active{condition=\"deadletter_topic_unavailable\"} 1"),
        "no operational alert raised"
    );
    let warned = stderr
        .lines()
        .filter(|l| l.contains("could not be published to the dead-letter topic"))
        .count();
    assert_eq!(warned, 1, "logged once per outage:\n{stderr}");
    // The letters themselves are in the local dead-letter store.
    let local = std::fs::read_to_string(data.join("lake/deadletter/deadletter.jsonl"))
        .expect("local dead letters");
    assert_eq!(local.lines().count(), 3, "{local}");
    let _ = std::fs::remove_dir_all(dir);
}

/// `--departments kafka://…/TOPIC`: the network is what the topic holds (CSV rows and JSON
/// objects, the latest per department winning), and a department added or removed on the topic
/// while the engine runs takes effect like a changed file.
#[test]
fn departments_come_from_a_topic_and_follow_it() {
    let brokers = broker();
    let topic = unique("departments");
    create_topics(&brokers, &[(&topic, 1)]);
    let csv_rows: [&[u8]; 4] = [
        b"hospital_id,hospital_name,department,bed_capacity,staff_count,kind,aliases",
        b"1042,Royal Infirmary,Ward 7B,20,40,ward,W7B",
        b"1042,Royal Infirmary,Renal,12,20,,",
        // The latest row of a department wins: Ward 7B has 28 beds.
        b"1042,Royal Infirmary,Ward 7B,28,40,ward,W7B",
    ];
    produce_lines_unbatched(&brokers, &topic, &csv_rows);
    let dir = scratch("departments-topic");
    let admission = |n: usize, ward: &str| {
        format!(
            "{{\"event_id\":\"A{n}\",\"event_type\":\"ADMISSION\",\"event_timestamp\":\"2026-03-02T10:{n:02}:00Z\",\
             \"patient_id\":\"P{n}\",\"hospital_id\":1042,\"department\":\"{ward}\",\"gender\":\"F\",\"age\":70,\
             \"admission_time\":\"2026-03-02T10:{n:02}:00Z\"}}\n"
        )
    };
    let file = dir.join("events.jsonl");
    let first: String = [(1, "w7b"), (2, "Renal")]
        .iter()
        .map(|(n, w)| admission(*n, w))
        .collect();
    std::fs::write(&file, first).expect("write");
    let data = dir.join("data");
    let departments = format!("kafka://{brokers}/{topic}");
    let child = cds()
        .args(["--departments", &departments, "run", "--source"])
        .arg(format!("file:{}", file.display()))
        .args([
            "--until-idle",
            "4",
            "--http",
            "off",
            "--rules",
            "off",
            "--data-dir",
        ])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cds run");
    std::thread::sleep(Duration::from_millis(1500));
    // Geriatrics opens (a JSON object), Renal closes.
    let changes: [&[u8]; 2] = [
        br#"{"hospital_id": 1042, "hospital_name": "Royal Infirmary", "department": "Geriatrics", "bed_capacity": 30, "staff_count": 44, "aliases": ["COTE"]}"#,
        br#"{"hospital_id": 1042, "department": "Renal", "removed": true}"#,
    ];
    produce_lines_unbatched(&brokers, &topic, &changes);
    std::thread::sleep(Duration::from_millis(2000));
    let second: String = [(3, "cote"), (4, "Renal")]
        .iter()
        .map(|(n, w)| admission(*n, w))
        .collect();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, second.as_bytes()))
        .expect("append");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "cds run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = documents(&data, "kpis");
    let occupancy = |ward: &str| &got[&format!("occupancy:1042:{ward}")];
    assert_eq!(occupancy("Ward 7B")["bed_capacity"], serde_json::json!(28));
    assert_eq!(occupancy("Ward 7B")["occupied"], serde_json::json!(1));
    assert_eq!(occupancy("Geriatrics")["occupied"], serde_json::json!(1));
    assert_eq!(
        occupancy("Renal")["occupied"],
        serde_json::json!(1),
        "only the one before"
    );
    assert_eq!(occupancy("Renal")["bed_capacity"], serde_json::Value::Null);
    let store =
        cds_engine::dims::store::DimDepartmentStore::open(&data.join("cds.sqlite")).expect("store");
    let rows = store.rows().expect("rows");
    let current = |ward: &str| {
        rows.iter()
            .filter(|r| r.department == ward)
            .map(|r| r.is_current)
            .collect::<Vec<_>>()
    };
    assert_eq!(current("Renal"), [false], "Renal closed");
    assert_eq!(current("Geriatrics"), [true], "Geriatrics open");
    let _ = std::fs::remove_dir_all(dir);
}
