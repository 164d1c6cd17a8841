//! The same API whatever the sink: one stream through `--sink sqlite` and through
//! `--sink cosmos` (the Cosmos DB test server on loopback, `tests/cosmos/server.js`, as
//! `bash tests/run.sh` provides) gives the same answers on every route for every role, paging
//! included; a process started on the Cosmos DB database alone serves what the sink holds; and
//! an acknowledgement made through one process is seen by the other.
//!
//! Every route is compared, the live stream's replay (the last version of each document it
//! carried) and the data-quality report included. What is compared leaves out only what the
//! wall clock or the write timing decides: a KPI
//! document's `updated_at` and `as_of` (the watermark of the write that last changed it), and
//! the points of the occupancy trend (one per hour of the writes' `as_of`), and the location of
//! each process's lake in the data-quality report. Numbers are
//! compared as doubles: Cosmos DB gives `50.0` back as `50`.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::http::{get, get_page, json, post, start_full, Engine};
use common::servers::CosmosServer;
use common::{as_doubles, free_port, scratch};
use serde_json::Value;

/// The published key of the Cosmos DB emulators, which the test server accepts.
const EMULATOR_KEY: &str =
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==";

/// Every token of the test tokens file, and none.
const TOKENS: [Option<&str>; 5] = [
    None,
    Some("tok-clin"),
    Some("tok-ward"),
    Some("tok-bed"),
    Some("tok-admin"),
];

/// Every number as a double; KPI documents without what the write timing decides.
fn normalised(v: Value) -> Value {
    as_doubles(without_timing(v))
}

fn without_timing(v: Value) -> Value {
    match v {
        Value::Array(a) => Value::Array(a.into_iter().map(without_timing).collect()),
        Value::Object(mut o) => {
            let kind = o
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if kind != "alert" {
                o.remove("updated_at");
                o.remove("as_of");
            }
            if kind == "occupancy_trend" {
                o.remove("points");
            }
            // The data-quality report names where each process's own lake is.
            if o.contains_key("totals") {
                o.remove("lake");
            }
            Value::Object(o.into_iter().map(|(k, v)| (k, without_timing(v))).collect())
        }
        other => other,
    }
}

/// Status and every page of a listing (following `Link: rel="next"`), and how many pages.
fn all_pages(engine: &Engine, path: &str, token: Option<&str>) -> (u16, Vec<Value>, usize) {
    let (mut out, mut pages) = (Vec::new(), 0);
    let mut next = Some(path.to_owned());
    while let Some(path) = next {
        let (status, link, body) = get_page(engine, &path, token);
        if status != 200 {
            return (status, out, pages);
        }
        pages += 1;
        out.extend(json(&body));
        next = link;
        assert!(pages < 10_000, "the pages never end");
    }
    (200, out, pages)
}

/// The answer of a route as compared: status and normalised body.
fn answer(engine: &Engine, path: &str, token: Option<&str>) -> (u16, Value) {
    let (status, body) = get(engine, path, token);
    let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, normalised(body))
}

/// The live stream's retained events for `token` (a reconnect from id 0), read for a second:
/// the status, and the last version of each document it carried (what a client that replays
/// the stream ends up with).
fn stream(engine: &Engine, token: Option<&str>) -> Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(&engine.addr).expect("connect");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET /api/alerts/stream HTTP/1.1\r\nHost: {}\r\nLast-Event-ID: 0\r\n{auth}\r\n",
        engine.addr
    );
    s.write_all(request.as_bytes()).expect("send");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let (mut raw, mut buf) = (Vec::new(), [0u8; 65_536]);
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = common::http::dechunk(body);
    let mut last: BTreeMap<String, Value> = BTreeMap::new();
    let mut event = String::new();
    for line in body.lines() {
        if let Some(e) = line.strip_prefix("event: ").or(line.strip_prefix("event:")) {
            event = e.trim().to_owned();
        } else if let Some(data) = line.strip_prefix("data: ").or(line.strip_prefix("data:")) {
            if let Ok(doc) = serde_json::from_str::<Value>(data) {
                let id = doc["id"].as_str().unwrap_or_default().to_owned();
                last.insert(format!("{event} {id}"), normalised(doc));
            }
        }
    }
    serde_json::json!({"status": status, "documents": last})
}

/// Every listing and route the API has, for one token, from one engine.
fn answers(engine: &Engine, token: Option<&str>, patient: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for listing in [
        "/api/kpis",
        "/api/kpis?limit=7",
        "/api/kpis?type=occupancy&limit=5",
        "/api/kpis?hospital=1&limit=3",
        "/api/kpis?kind=icu",
        "/api/kpis?department=ICU&type=vitals",
        "/api/alerts",
        "/api/alerts?limit=9",
        "/api/alerts?kind=emergency&limit=4",
        "/api/alerts?min_severity=critical",
        "/api/alerts?since=2026-03-02T12:00:00Z&limit=11",
        "/api/alerts?mlmname=news2&hospital=1",
    ] {
        let (status, docs, pages) = all_pages(engine, listing, token);
        out.insert(
            listing.to_owned(),
            normalised(serde_json::json!({"status": status, "pages": pages, "documents": docs})),
        );
    }
    out.insert(
        "/api/alerts/stream".to_owned(),
        normalised(stream(engine, token)),
    );
    for route in [
        "/reports/dq?format=json",
        "/api/hospitals",
        "/api/kpis/trend",
        "/api/rules/stats",
        "/api/openapi.json",
        "/cds-services",
        "/api/kpis?limit=0",
        "/api/kpis?since=yesterday",
    ] {
        let (status, body) = answer(engine, route, token);
        out.insert(
            route.to_owned(),
            serde_json::json!({"status": status, "body": body}),
        );
    }
    let hook = format!(
        r#"{{"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "context": {{"userId": "Practitioner/1", "patientId": "{patient}"}}}}"#
    );
    let (status, body) = post(engine, "/cds-services/cds-patient-alerts", token, &hook);
    let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
    out.insert(
        "POST /cds-services/cds-patient-alerts".to_owned(),
        serde_json::json!({"status": status, "body": normalised(body)}),
    );
    out
}

fn assert_same_answers(
    what: &str,
    expected: &BTreeMap<String, Value>,
    got: &BTreeMap<String, Value>,
) {
    for (route, want) in expected {
        let have = got.get(route).unwrap_or(&Value::Null);
        if want != have {
            let (w, h) = (want.to_string(), have.to_string());
            let at = w
                .bytes()
                .zip(h.bytes())
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            let from = at.saturating_sub(200);
            panic!(
                "{what}: {route} differs at byte {at}:\n  expected …{}\n  got      …{}",
                w.get(from..(at + 200).min(w.len())).unwrap_or_default(),
                h.get(from..(at + 200).min(h.len())).unwrap_or_default()
            );
        }
    }
}

/// The alert `id` as `token` lists it, once its acknowledgement shows `action` (or the wait
/// runs out).
fn wait_for_ack(engine: &Engine, id: &str, action: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, docs, _) = all_pages(engine, "/api/alerts", Some("tok-admin"));
        let alert = docs
            .into_iter()
            .find(|a| a["id"] == id)
            .expect("the alert is listed");
        if alert["ack"]["action"] == action || Instant::now() > deadline {
            return alert;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn every_sink_serves_the_same_api_and_acknowledgements_are_shared() {
    let dir = scratch("same-api");
    let port = free_port();
    let _server = CosmosServer::start(port, dir.join("cosmos.log"));
    let tuning = dir.join("cosmos.toml");
    std::fs::write(&tuning, "http2 = false\nbinary_encoding = false\n").expect("tuning");
    let endpoint = format!("http://127.0.0.1:{port}/");
    let env = [
        ("COSMOS_ENDPOINT", endpoint.as_str()),
        ("COSMOS_KEY", EMULATOR_KEY),
        ("COSMOS_DATABASE", "same-api"),
    ];
    let tuning = tuning.display().to_string();
    let cosmos_flags = ["--sink", "cosmos", "--cosmos-config", tuning.as_str()];

    let (sqlite, patients) = start_full(&["--sink", "sqlite"], "", &[], None);
    let (cosmos, _) = start_full(&cosmos_flags, "", &env, None);

    // A patient with alerts, for CDS Hooks.
    let pseudonyms = cds_engine::model::Pseudonymiser::new(b"http-test");
    let (_, every, _) = all_pages(&sqlite, "/api/alerts", Some("tok-admin"));
    assert!(every.len() > 20, "the stream fires alerts: {}", every.len());
    let patient = patients
        .iter()
        .find(|p| {
            let key = pseudonyms.pseudonym(p);
            every
                .iter()
                .filter(|a| a["patient"] == key.as_str())
                .count()
                >= 2
        })
        .expect("a patient with two alerts");

    for token in TOKENS {
        let expected = answers(&sqlite, token, patient);
        assert_same_answers(
            &format!("cosmos, token {token:?}"),
            &expected,
            &answers(&cosmos, token, patient),
        );
        // Paging cuts the same listing into pages, nothing more.
        let whole = &expected["/api/alerts"]["documents"];
        assert_eq!(
            whole, &expected["/api/alerts?limit=9"]["documents"],
            "{token:?}"
        );
        if token.is_some_and(|t| t == "tok-admin") {
            let pages = expected["/api/alerts?limit=9"]["pages"]
                .as_f64()
                .unwrap_or(0.0);
            assert!(pages >= 3.0, "several pages of nine: {pages}");
            let replayed = expected["/api/alerts/stream"]["documents"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            let alerts = replayed.keys().filter(|k| k.starts_with("alert ")).count();
            assert!(
                alerts > 20 && replayed.len() > alerts,
                "the stream replays alerts and KPI documents: {alerts} of {}",
                replayed.len()
            );
            let kinds = &expected["/api/kpis?kind=icu"]["documents"];
            assert!(
                kinds
                    .as_array()
                    .is_some_and(|d| !d.is_empty() && d.iter().all(|d| d["department"] == "ICU")),
                "the ICU kind lists ICU documents only"
            );
        }
    }
    // The index says in /metrics how much it holds.
    let (_, metrics) = get(&sqlite, "/metrics", None);
    let held = metrics
        .lines()
        .find(|l| l.starts_with("cds_serving_index_documents{container=\"alerts\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<usize>().ok());
    assert_eq!(held, Some(every.len()), "every alert is in the index");
    let bad = answers(&sqlite, Some("tok-admin"), patient);
    assert_eq!(bad["/api/kpis?limit=0"]["status"], 400.0);
    assert_eq!(bad["/api/kpis?since=yesterday"]["status"], 400.0);

    // Restarted (SIGTERM, then the same flags and data directory), each process serves what
    // its sink holds from its first answer: nothing is left to read in the file.
    let (mut sqlite, mut cosmos) = (sqlite, cosmos);
    for (what, engine) in [("sqlite", &mut sqlite), ("cosmos", &mut cosmos)] {
        let before: Vec<BTreeMap<String, Value>> = TOKENS
            .iter()
            .map(|t| answers(engine, *t, patient))
            .collect();
        engine.restart();
        for (token, expected) in TOKENS.iter().zip(&before) {
            let mut expected = expected.clone();
            let mut got = answers(engine, *token, patient);
            // Engine counters, the trend and the live stream's backlog are a process's own
            // (the new one evaluated and wrote nothing yet).
            for a in [&mut expected, &mut got] {
                a.remove("/api/rules/stats");
                a.remove("/api/kpis/trend");
                a.remove("/api/alerts/stream");
            }
            assert_same_answers(
                &format!("{what} restarted, token {token:?}"),
                &expected,
                &got,
            );
        }
    }

    // Another process on the same database (another pod: its own data directory and wards, no
    // events) serves the alerts the sink holds.
    let wards = dir.join("departments.csv");
    std::fs::write(
        &wards,
        "hospital_id,hospital_name,department,bed_capacity,staff_count\n9,Elsewhere,Ward X,10,5\n",
    )
    .expect("departments");
    let wards = wards.display().to_string();
    let mut other_flags = cosmos_flags.to_vec();
    other_flags.extend(["--departments", wards.as_str()]);
    let (restored, _) = start_full(&other_flags, "", &env, Some(b""));
    let listed = |engine: &Engine| {
        let (_, docs, _) = all_pages(engine, "/api/alerts", Some("tok-admin"));
        normalised(Value::Array(docs))
    };
    assert_eq!(listed(&restored), listed(&cosmos), "the same alerts");

    // An acknowledgement through one process is seen by the other, both ways.
    let mine: Vec<Value> = every
        .iter()
        .filter(|a| a["hospital_id"] == 1)
        .take(2)
        .cloned()
        .collect();
    assert_eq!(mine.len(), 2, "two alerts of hospital 1");
    let ack = |engine: &Engine, alert: &Value, body: &str| {
        let path = format!("/api/alerts/{}/ack", alert["id"].as_str().unwrap_or("-"));
        let (status, answer) = post(engine, &path, Some("tok-ward"), body);
        assert_eq!(status, 200, "{answer}");
    };
    let id = |a: &Value| a["id"].as_str().unwrap_or("-").to_owned();
    ack(
        &cosmos,
        &mine[0],
        r#"{"action": "overridden", "reason": "already-treated"}"#,
    );
    let seen = wait_for_ack(&restored, &id(&mine[0]), "overridden");
    assert_eq!(seen["ack"]["by"], "dr-h1", "{seen}");
    assert_eq!(seen["ack"]["reason"], "already-treated");
    ack(
        &restored,
        &mine[1],
        r#"{"action": "snoozed", "reason": "busy", "minutes": 30}"#,
    );
    assert_eq!(
        wait_for_ack(&cosmos, &id(&mine[1]), "snoozed")["ack"]["minutes"],
        30
    );
    // The newer of two acknowledgements wins in both.
    std::thread::sleep(Duration::from_millis(5));
    ack(
        &cosmos,
        &mine[1],
        r#"{"action": "accepted", "reason": "treated"}"#,
    );
    assert_eq!(
        wait_for_ack(&restored, &id(&mine[1]), "accepted")["ack"]["action"],
        "accepted"
    );
    let stats = |engine: &Engine| {
        let (_, body) = get(engine, "/api/rules/stats", Some("tok-ward"));
        let stats: Value = serde_json::from_str(&body).expect("stats");
        let rules = stats["rules"].as_object().cloned().unwrap_or_default();
        rules
            .values()
            .map(|r| {
                (
                    r["accepted"].as_u64().unwrap_or(0),
                    r["overridden"].as_u64().unwrap_or(0),
                )
            })
            .fold((0, 0), |(a, o), (x, y)| (a + x, o + y))
    };
    assert_eq!(stats(&cosmos), (1, 1));
    assert_eq!(stats(&restored), (1, 1));
    // The SQLite process keeps its own (one process per data directory: they share a file).
    assert_eq!(stats(&sqlite), (0, 0));

    drop((sqlite, cosmos, restored));
    let _ = std::fs::remove_dir_all(dir);
}
