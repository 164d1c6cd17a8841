//! Operational alerts end to end: the real engine binary, a webhook receiver in the test (a
//! plain HTTP/1.1 listener that records every body), and the failures made for real: a Kafka
//! broker that is not there yet, rules that always fail, a checkpoint directory that cannot be
//! created, a Cosmos DB server that goes away. Each outage must give exactly one "raised"
//! notification, and its end exactly one "recovered" notice.
//!
//! The Kafka test needs `CDS_TEST_TANSU` and the Cosmos DB test needs the server launcher
//! (`CDS_TEST_COSMOS_SERVER`, else `tests/cosmos/server.js`), as `tests/run.sh` provides.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::servers::{metric, CosmosServer, Tansu};
use common::{cds, scratch, simulate};
use serde_json::Value;

/// The test's ports: each test has its own block of ten.
fn port(test: u16, n: u16) -> u16 {
    18600 + test * 10 + n
}

/// A webhook receiver: answers 200 to every POST and keeps the JSON bodies.
struct Receiver {
    bodies: Arc<Mutex<Vec<Value>>>,
    port: u16,
}

impl Receiver {
    fn start(port: u16) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the receiver");
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Some(body) = read_request(stream) {
                    if let Ok(mut b) = kept.lock() {
                        b.push(body);
                    }
                }
            }
        });
        Receiver { bodies, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// The notices received so far for a condition in a state.
    fn notices(&self, condition: &str, state: &str) -> Vec<Value> {
        self.bodies
            .lock()
            .map(|b| {
                b.iter()
                    .filter(|v| v["cds"]["condition"] == condition && v["cds"]["state"] == state)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn all(&self) -> Vec<Value> {
        self.bodies.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

/// Reads one HTTP/1.1 request, answers 200 and closes; returns the body as JSON.
fn read_request(stream: TcpStream) -> Option<Value> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut length = 0usize;
    let mut first = String::new();
    reader.read_line(&mut first).ok()?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    let mut stream = stream;
    let _ =
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    assert!(first.starts_with("POST /hook "), "request line {first:?}");
    serde_json::from_slice(&body).ok()
}

/// Waits up to `secs` for `done`, with the engine log in the failure message.
fn wait_for(secs: u64, what: &str, log: &Path, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} (waited {secs} s); engine log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn alerts_total(http: &str, condition: &str, state: &str) -> Option<f64> {
    metric(
        http,
        &format!("cds_ops_alerts_total{{condition=\"{condition}\",state=\"{state}\"}}"),
    )
}

/// The engine as a child that is killed when the test ends, whatever happens.
struct Engine(Child);

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(mut command: Command, log: &Path) -> Engine {
    let child = command
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).map_or(Stdio::null(), Stdio::from))
        .spawn()
        .expect("start cds run");
    Engine(child)
}

fn events(dir: &Path, n: u32) -> PathBuf {
    let out = simulate(&["--seed", "5", "--max-events", &n.to_string()]);
    let file = dir.join("events.jsonl");
    std::fs::write(&file, out).expect("events file");
    file
}

/// Every notice has the fields both Teams and Slack read, and the structured ones.
fn assert_shape(notice: &Value, condition: &str, state: &str) {
    let text = notice["text"].as_str().expect("a top-level text");
    assert!(text.contains(condition), "{text}");
    assert!(text.contains(&state.to_uppercase()), "{text}");
    assert_eq!(notice["@type"], "MessageCard");
    assert_eq!(notice["type"], "message");
    assert_eq!(
        notice["attachments"][0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(notice["cds"]["condition"], condition);
    assert_eq!(notice["cds"]["state"], state);
    assert!(notice["cds"]["since"]
        .as_str()
        .is_some_and(|s| s.len() >= 20));
    assert!(notice["cds"]["host"]
        .as_str()
        .is_some_and(|h| !h.is_empty()));
}

#[test]
fn an_unreachable_source_is_one_notice_and_its_return_one_more() {
    let dir = scratch("source");
    let receiver = Receiver::start(port(0, 0));
    let kafka = port(0, 1);
    let http = format!("127.0.0.1:{}", port(0, 2));
    let log = dir.join("engine.log");
    let mut command = cds();
    command
        .args(["run", "--rules", "off", "--http", &http])
        .args(["--source", &format!("kafka://127.0.0.1:{kafka}/ops-outage")])
        .args(["--kafka-config", "reconnect.backoff.max.ms=1000"])
        .args(["--ops-source-outage", "2", "--ops-webhook", &receiver.url()])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("CDS_LOG", "info,librdkafka=off");
    let mut engine = spawn(command, &log);
    wait_for(60, "source_unreachable was not raised", &log, || {
        !receiver.notices("source_unreachable", "raised").is_empty()
    });
    // The outage goes on: still one notice.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(receiver.notices("source_unreachable", "raised").len(), 1);
    assert!(
        engine.0.try_wait().expect("state").is_none(),
        "keeps running"
    );
    assert_eq!(
        alerts_total(&http, "source_unreachable", "raised"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &http,
            "cds_ops_condition_active{condition=\"source_unreachable\"}"
        ),
        Some(1.0)
    );

    let broker = Tansu::start(kafka, &dir);
    common::kafka::create_topics(&format!("127.0.0.1:{kafka}"), &[("ops-outage", 1)]);
    wait_for(60, "source_unreachable did not recover", &log, || {
        !receiver
            .notices("source_unreachable", "recovered")
            .is_empty()
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(receiver.notices("source_unreachable", "raised").len(), 1);
    let recovered = receiver.notices("source_unreachable", "recovered");
    assert_eq!(recovered.len(), 1, "{:#?}", receiver.all());
    assert_shape(
        &receiver.notices("source_unreachable", "raised")[0],
        "source_unreachable",
        "raised",
    );
    assert_shape(&recovered[0], "source_unreachable", "recovered");
    assert!(recovered[0]["cds"]["duration_secs"].as_u64().is_some());
    assert_eq!(
        alerts_total(&http, "source_unreachable", "recovered"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &http,
            "cds_ops_condition_active{condition=\"source_unreachable\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &http,
            "cds_ops_webhook_notifications_total{result=\"delivered\"}"
        ),
        Some(2.0)
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("operational alert raised"), "{text}");
    assert!(text.contains("operational alert recovered"), "{text}");
    drop(engine);
    drop(broker);
    let _ = std::fs::remove_dir_all(dir);
}

/// A rule that fails on every evaluation.
const FAILING_RULE: &str = r#"
const MLM = #{
    maintenance: #{
        title: "Always fails",
        mlmname: "always_fails",
        version: "1.0.0",
        institution: "cds project",
        author: "cds tests",
        date: "2026-01-01",
        validation: "testing",
    },
    library: #{
        purpose: "Fail on every evaluation.",
        explanation: "Exercises the rule error alert.",
        keywords: ["test"],
        citations: [ #{ text: "none", url: "https://example.org/" } ],
    },
    knowledge: #{
        type: "data_driven",
        priority: 50,
        urgency: 50,
        evoke: ["VITALS"],
        suppress_minutes: 60,
    },
};

fn data(ctx) {
    throw "this rule always fails";
}

fn logic(ctx, data) {
    true
}

fn action(ctx, data) {
    #{ summary: "never", detail: "never", severity: "info" }
}
"#;

/// Runs a rule pack whose one rule always throws over `events` events, with this webhook;
/// returns the run's log (it must succeed).
fn run_failing_rule(dir: &Path, events_n: u32, webhook: &str) -> String {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    std::fs::write(rules.join("always_fails.rhai"), FAILING_RULE).expect("rule");
    let file = events(dir, events_n);
    let out = cds()
        .args(["run", "--http", "off", "--until-end", "--rules"])
        .arg(&rules)
        .arg("--source")
        .arg(format!("file:{}", file.display()))
        .args(["--ops-webhook", webhook])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .output()
        .expect("run");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    log
}

#[test]
fn rules_that_keep_failing_raise_one_notice() {
    let dir = scratch("rules");
    let receiver = Receiver::start(port(1, 0));
    let log = run_failing_rule(&dir, 3000, &receiver.url());
    let raised = receiver.notices("rule_errors", "raised");
    assert_eq!(raised.len(), 1, "{:#?}\n{log}", receiver.all());
    assert_shape(&raised[0], "rule_errors", "raised");
    assert_eq!(receiver.all().len(), 1, "{:#?}", receiver.all());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_unreachable_webhook_is_never_fatal() {
    // Nothing listens on the webhook's port: the alert is still raised, logged and counted,
    // and the run ends normally (the queue gets a bounded time to drain at the end).
    let dir = scratch("nowebhook");
    let webhook = format!("http://127.0.0.1:{}/hook", port(4, 0));
    let log = run_failing_rule(&dir, 2000, &webhook);
    assert!(log.contains("operational alert raised"), "{log}");
    assert!(
        !log.contains(&format!("{}", port(4, 0))),
        "the URL is never logged:\n{log}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_checkpoint_that_cannot_be_written_is_raised_and_the_run_goes_on() {
    let dir = scratch("checkpoint");
    let receiver = Receiver::start(port(2, 0));
    let http = format!("127.0.0.1:{}", port(2, 1));
    let data = dir.join("data");
    // The checkpoint directory is a regular file: it cannot be created (as root too).
    let blocked = data.join("lake").join("checkpoints");
    std::fs::create_dir_all(data.join("lake")).expect("lake dir");
    std::fs::write(&blocked, b"not a directory").expect("blocking file");
    let file = events(&dir, 3000);
    let log = dir.join("engine.log");
    let mut command = cds();
    command
        .args(["run", "--rules", "off", "--http", &http])
        .arg("--source")
        .arg(format!("file:{}", file.display()))
        .args(["--checkpoint-interval", "1"])
        .args(["--ops-webhook", &receiver.url()])
        .arg("--data-dir")
        .arg(&data);
    let mut engine = spawn(command, &log);
    wait_for(60, "checkpoint_failed was not raised", &log, || {
        !receiver.notices("checkpoint_failed", "raised").is_empty()
    });
    wait_for(60, "the events were not all read", &log, || {
        metric(&http, "cds_gold_records_total").unwrap_or(0.0) > 0.0
    });
    // Several checkpoint intervals pass: the run goes on, and the outage is still one notice.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        engine.0.try_wait().expect("state").is_none(),
        "keeps running"
    );
    assert_eq!(receiver.notices("checkpoint_failed", "raised").len(), 1);
    assert_shape(
        &receiver.notices("checkpoint_failed", "raised")[0],
        "checkpoint_failed",
        "raised",
    );
    assert_eq!(
        metric(
            &http,
            "cds_ops_condition_active{condition=\"checkpoint_failed\"}"
        ),
        Some(1.0)
    );
    // The directory can be created again: the next checkpoint is written and recovers.
    std::fs::remove_file(&blocked).expect("unblock");
    wait_for(60, "checkpoint_failed did not recover", &log, || {
        !receiver
            .notices("checkpoint_failed", "recovered")
            .is_empty()
    });
    assert_eq!(receiver.notices("checkpoint_failed", "recovered").len(), 1);
    assert!(
        std::fs::read_dir(&blocked).map(|d| d.count()).unwrap_or(0) > 0,
        "a checkpoint was written"
    );
    assert_eq!(
        alerts_total(&http, "checkpoint_failed", "recovered"),
        Some(1.0)
    );
    drop(engine);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn cosmos_writes_that_fail_after_the_retries_raise_and_recover() {
    let dir = scratch("cosmos");
    let receiver = Receiver::start(port(3, 0));
    let cosmos_port = port(3, 1);
    let http = format!("127.0.0.1:{}", port(3, 2));
    let mut server = CosmosServer::start(cosmos_port, dir.join("cosmos.log"));
    let config = dir.join("cosmos.toml");
    std::fs::write(
        &config,
        "http2 = false\nbinary_encoding = false\nmax_retries = 1\nbase_backoff_ms = 10\nmax_backoff_ms = 50\nrequest_timeout_ms = 2000\n",
    )
    .expect("cosmos config");
    let log = dir.join("engine.log");
    let mut command = cds();
    command
        .args(["run", "--rules", "off", "--http", &http, "--sink", "cosmos"])
        .arg("--cosmos-config")
        .arg(&config)
        .args(["--source", "simulator", "--rate", "200", "--seed", "9"])
        .args(["--checkpoint-interval", "0"])
        .args(["--ops-webhook", &receiver.url()])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env(
            "COSMOS_ENDPOINT",
            format!("http://127.0.0.1:{cosmos_port}/"),
        )
        .env("COSMOS_KEY", EMULATOR_KEY)
        .env("COSMOS_DATABASE", "ops");
    let mut engine = spawn(command, &log);
    wait_for(60, "nothing was written to Cosmos DB", &log, || {
        metric(
            &http,
            "cds_cosmos_documents_written_total{container=\"kpis\"}",
        )
        .unwrap_or(0.0)
            > 0.0
    });
    server.stop();
    wait_for(60, "sink_retries_exhausted was not raised", &log, || {
        !receiver
            .notices("sink_retries_exhausted", "raised")
            .is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        receiver.notices("sink_retries_exhausted", "raised").len(),
        1
    );
    assert!(
        engine.0.try_wait().expect("state").is_none(),
        "keeps running"
    );
    server.restart();
    wait_for(90, "sink_retries_exhausted did not recover", &log, || {
        !receiver
            .notices("sink_retries_exhausted", "recovered")
            .is_empty()
    });
    assert_eq!(
        receiver.notices("sink_retries_exhausted", "raised").len(),
        1
    );
    assert_eq!(
        receiver
            .notices("sink_retries_exhausted", "recovered")
            .len(),
        1
    );
    assert_shape(
        &receiver.notices("sink_retries_exhausted", "recovered")[0],
        "sink_retries_exhausted",
        "recovered",
    );
    assert!(
        metric(&http, "cds_cosmos_dead_lettered_total{container=\"kpis\"}").unwrap_or(0.0) > 0.0
    );
    drop(engine);
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

/// The published key of the Cosmos DB emulators, which the test server accepts.
const EMULATOR_KEY: &str =
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==";
