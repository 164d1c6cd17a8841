//! The HTTP API through the real binary: an access matrix (every role x route x scope, the
//! data-quality report's included), the
//! live stream resumed with `Last-Event-ID`, and a leak test (no raw patient id in any
//! response, the audit log, the store or the logs).

mod common;

use std::collections::BTreeSet;

use common::http::{get, json, start, stream_ids};

#[test]
fn access_matrix_stream_resume_and_no_leaks() {
    let (engine, patients) = start();
    let mut bodies = Vec::new();

    // Unauthenticated: only health and metrics.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(get(&engine, path, None).0, 200, "{path} needs no token");
    }
    for path in [
        "/",
        "/api/kpis",
        "/api/alerts",
        "/api/alerts/stream",
        "/api/openapi.json",
    ] {
        assert_eq!(get(&engine, path, None).0, 401, "{path} without a token");
        assert_eq!(
            get(&engine, path, Some("not-a-token")).0,
            401,
            "{path} with an unknown token"
        );
    }

    // The API's description, for every role.
    for token in ["tok-admin", "tok-clin", "tok-bed"] {
        let (s, body) = get(&engine, "/api/openapi.json", Some(token));
        assert_eq!(s, 200, "{token}");
        let doc: serde_json::Value = serde_json::from_str(&body).expect("OpenAPI JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"]["/api/alerts/{id}/ack"]["post"].is_object());
    }

    // Admin: everything.
    let (s, body) = get(&engine, "/api/kpis", Some("tok-admin"));
    assert_eq!(s, 200);
    let all = json(&body);
    let hospitals: BTreeSet<i64> = all
        .iter()
        .filter_map(|d| d["hospital_id"].as_i64())
        .collect();
    assert_eq!(hospitals.len(), 7, "an admin sees every hospital");
    assert!(all.iter().any(|d| d["type"] == "patient_los"));
    bodies.push(body);
    let (s, body) = get(
        &engine,
        "/api/alerts?min_severity=warning",
        Some("tok-admin"),
    );
    assert_eq!(s, 200);
    assert!(json(&body).iter().all(|a| a["severity"] != "info"));
    bodies.push(body);
    assert_eq!(
        get(&engine, "/?token=tok-admin", None).0,
        303,
        "the dashboard trades the token in the query for a session cookie"
    );

    // Clinician of ICU in hospital 3: only that department (and hospital-level documents).
    let (s, body) = get(&engine, "/api/kpis", Some("tok-clin"));
    assert_eq!(s, 200);
    let docs = json(&body);
    assert!(!docs.is_empty());
    for d in &docs {
        assert_eq!(d["hospital_id"], 3, "{d}");
        assert!(d["department"].is_null() || d["department"] == "ICU", "{d}");
    }
    assert!(docs.iter().any(|d| d["id"] == "occupancy:3:ICU"));
    bodies.push(body);
    let (s, body) = get(&engine, "/api/alerts", Some("tok-clin"));
    assert_eq!(s, 200);
    for a in json(&body) {
        assert_eq!(
            (a["hospital_id"].as_i64(), a["department"].as_str()),
            (Some(3), Some("ICU")),
            "{a}"
        );
    }
    bodies.push(body);
    let (s, body) = get(&engine, "/api/kpis?hospital=2", Some("tok-clin"));
    assert_eq!(
        (s, json(&body).len()),
        (200, 0),
        "out of scope is filtered out"
    );

    // Bed manager of hospital 3: KPIs of the hospital, no patient-level data.
    let (s, body) = get(&engine, "/api/kpis", Some("tok-bed"));
    assert_eq!(s, 200);
    let docs = json(&body);
    assert!(docs
        .iter()
        .all(|d| d["hospital_id"] == 3 && d["type"] != "patient_los"));
    assert_eq!(docs.iter().filter(|d| d["type"] == "occupancy").count(), 7);
    bodies.push(body);
    assert_eq!(get(&engine, "/api/alerts", Some("tok-bed")).0, 403);
    assert_eq!(get(&engine, "/api/kpis?hospital=x", Some("tok-bed")).0, 400);

    // The dashboard's hospital names and trends, per scope.
    let (s, body) = get(&engine, "/api/hospitals", Some("tok-bed"));
    assert_eq!(s, 200);
    let names = json(&body);
    assert_eq!(names.len(), 1);
    assert_eq!(names[0]["hospital_id"], 3);
    assert_eq!(
        json(&get(&engine, "/api/hospitals", Some("tok-admin")).1).len(),
        7
    );
    let (s, body) = get(&engine, "/api/kpis/trend", Some("tok-clin"));
    assert_eq!(s, 200);
    let trends = json(&body);
    assert!(
        !trends.is_empty()
            && trends
                .iter()
                .all(|t| t["hospital_id"] == 3 && t["department"] == "ICU"),
        "a clinician of ICU in hospital 3 sees that trend only: {body:.300}"
    );
    assert!(trends[0]["points"]
        .as_array()
        .is_some_and(|p| !p.is_empty()));
    assert_eq!(get(&engine, "/api/kpis/trend", None).0, 401);
    bodies.push(body);

    // The data-quality report: admins only, HTML by default, JSON on request, no identifier.
    assert_eq!(get(&engine, "/reports/dq", None).0, 401);
    for token in ["tok-clin", "tok-bed", "tok-ward"] {
        assert_eq!(get(&engine, "/reports/dq", Some(token)).0, 403, "{token}");
    }
    // The lake commits every few seconds: the report shows what it holds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (s, body) = get(&engine, "/reports/dq?format=json", Some("tok-admin"));
        assert_eq!(s, 200, "{body}");
        let report: serde_json::Value = serde_json::from_str(&body).expect("a JSON report");
        if report["totals"]["events_in"].as_u64() > Some(1000) {
            bodies.push(body);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lake holds events"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let (s, body) = get(&engine, "/reports/dq", Some("tok-admin"));
    assert_eq!(s, 200, "{body}");
    assert!(
        body.contains("<svg") && body.contains("Data-quality report"),
        "{body:.3000}"
    );
    bodies.push(body);
    assert_eq!(
        get(&engine, "/reports/dq?format=pdf", Some("tok-admin")).0,
        400
    );

    // The live stream: reconnecting with Last-Event-ID continues exactly after it.
    let first = stream_ids(&engine, "tok-admin", None, 40);
    assert_eq!(first.len(), 40);
    let resumed = stream_ids(&engine, "tok-admin", Some(first[19]), 20);
    assert_eq!(
        resumed,
        first[20..].to_vec(),
        "every event after the last one seen, once, in order"
    );
    let mut all_ids = first.clone();
    all_ids.dedup();
    assert_eq!(all_ids.len(), first.len(), "no duplicates");

    // No raw patient identifier anywhere a person can read.
    let audit = std::fs::read_to_string(engine.dir.join("data/audit.jsonl")).expect("audit log");
    assert!(
        audit.contains("\"token\":\"dr-icu-3\"") && !audit.contains("tok-clin"),
        "audit names tokens, never their value"
    );
    bodies.push(audit);
    bodies.push(std::fs::read_to_string(&engine.stderr).unwrap_or_default());
    let store = common::exported(&engine.dir.join("data"), "alerts");
    bodies.extend(store.into_iter().map(|(_, alert)| alert.to_string()));
    assert!(patients.len() > 100);
    for p in &patients {
        for b in &bodies {
            assert!(!b.contains(p.as_str()), "patient id {p} leaked");
        }
    }
}
