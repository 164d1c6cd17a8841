//! Acting on alerts through the real binary: a clinician accepts, overrides and snoozes alerts
//! of their department (others may not), the acknowledgement travels with the alert, the
//! per-rule accept and override rates appear in `/api/rules/stats` and `/metrics`, and the CDS
//! Hooks `patient-view` service returns a patient's active alerts as cards.

mod common;

use cds_engine::model::Pseudonymiser;
use serde_json::Value;

use common::http::{get, json, post, start};

fn object(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:.200}"))
}

fn ack_path(alert: &Value) -> String {
    format!(
        "/api/alerts/{}/ack",
        alert["id"].as_str().expect("alert id")
    )
}

/// A patient of the stream (raw id) with an alert in hospital 1 that `pick` accepts, and it.
fn patient_with_alert(
    engine: &common::http::Engine,
    patients: &[String],
    pick: impl Fn(&Value) -> bool,
) -> (String, Value) {
    let pseudonyms = Pseudonymiser::new(b"http-test");
    let (_, body) = get(engine, "/api/alerts", Some("tok-admin"));
    let every = json(&body);
    patients
        .iter()
        .find_map(|p| {
            let key = pseudonyms.pseudonym(p);
            every
                .iter()
                .find(|a| a["patient"] == key.as_str() && a["hospital_id"] == 1 && pick(a))
                .map(|a| (p.clone(), a.clone()))
        })
        .expect("a patient with such an alert in hospital 1")
}

#[test]
fn clinicians_act_on_alerts_and_the_ehr_sees_active_ones() {
    let (engine, patients) = start();

    // tok-ward: a clinician of every department of hospital 1. Wait for the whole file.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mine = loop {
        let (s, body) = get(&engine, "/api/alerts", Some("tok-ward"));
        assert_eq!(s, 200);
        let mine = json(&body);
        if mine.len() >= 10 {
            break mine;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "hospital 1 has alerts to act on: {}",
            mine.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let (first, second) = (&mine[0], &mine[1]);
    let accept = r#"{"action": "accepted", "reason": "treated"}"#;

    // Who may act: a clinician in scope, no one else.
    assert_eq!(post(&engine, &ack_path(first), None, accept).0, 401);
    assert_eq!(
        post(&engine, &ack_path(first), Some("tok-bed"), accept).0,
        403
    );
    assert_eq!(
        post(&engine, &ack_path(first), Some("tok-admin"), accept).0,
        403,
        "acting on an alert is a clinical act"
    );
    let (_, all) = get(&engine, "/api/alerts", Some("tok-admin"));
    let elsewhere = json(&all)
        .into_iter()
        .find(|a| a["hospital_id"] != 1)
        .expect("an alert in another hospital");
    assert_eq!(
        post(&engine, &ack_path(&elsewhere), Some("tok-ward"), accept).0,
        403,
        "out of scope"
    );
    assert_eq!(
        post(&engine, "/api/alerts/nope/ack", Some("tok-ward"), accept).0,
        404
    );

    // Bad requests say what is wrong.
    for bad in [
        "not json",
        r#"{"action": "ignored", "reason": "x"}"#,
        r#"{"action": "accepted", "reason": "free text with spaces"}"#,
        r#"{"action": "snoozed", "reason": "busy"}"#,
        r#"{"action": "accepted", "reason": "x", "extra": 1}"#,
    ] {
        let (s, body) = post(&engine, &ack_path(first), Some("tok-ward"), bad);
        assert_eq!(s, 400, "{bad}: {body}");
        assert!(object(&body)["error"].is_string(), "{body}");
    }

    // Accept one, override another: stored with who, when and why, shown with the alert.
    let (s, body) = post(&engine, &ack_path(first), Some("tok-ward"), accept);
    assert_eq!(s, 200, "{body}");
    let acked = object(&body);
    assert_eq!(acked["ack"]["action"], "accepted");
    assert_eq!(acked["ack"]["by"], "dr-h1");
    assert_eq!(acked["ack"]["reason"], "treated");
    assert!(acked["ack"]["at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    let (s, _) = post(
        &engine,
        &ack_path(second),
        Some("tok-ward"),
        r#"{"action": "overridden", "reason": "not-clinically-relevant"}"#,
    );
    assert_eq!(s, 200);
    let (_, body) = get(&engine, "/api/alerts", Some("tok-ward"));
    let listed = json(&body);
    let shown = |a: &Value| {
        listed
            .iter()
            .find(|x| x["id"] == a["id"])
            .map(|x| x["ack"]["action"].clone())
    };
    assert_eq!(shown(first), Some(Value::from("accepted")));
    assert_eq!(shown(second), Some(Value::from("overridden")));

    // The committee's numbers.
    let (s, body) = get(&engine, "/api/rules/stats", Some("tok-ward"));
    assert_eq!(s, 200);
    let stats = object(&body);
    let rules = stats["rules"].as_object().expect("rules");
    let accepted: u64 = rules
        .values()
        .map(|r| r["accepted"].as_u64().unwrap_or(0))
        .sum();
    let overridden: u64 = rules
        .values()
        .map(|r| r["overridden"].as_u64().unwrap_or(0))
        .sum();
    let alerts: u64 = rules
        .values()
        .map(|r| r["alerts"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!((accepted, overridden), (1, 1));
    assert_eq!(
        alerts as usize,
        mine.len(),
        "counts only the caller's scope"
    );
    let rule = first["mlmname"].as_str().expect("mlmname");
    assert!(rules[rule]["evaluations"].as_u64().unwrap_or(0) > 0);
    assert_eq!(get(&engine, "/api/rules/stats", Some("tok-bed")).0, 403);
    let metrics = get(&engine, "/metrics", None).1;
    assert!(
        metrics.contains(&format!(
            "cds_alert_acks_total{{action=\"accepted\",rule=\"{rule}\"}} 1"
        )),
        "acks counted per rule"
    );
    assert!(metrics.contains("cds_rule_override_ratio{rule="));
    assert!(metrics.contains("cds_rule_accept_ratio{rule="));

    // CDS Hooks: discovery, then the active alerts of one patient as cards.
    let (s, body) = get(&engine, "/cds-services", Some("tok-admin"));
    assert_eq!(s, 200);
    let services = object(&body);
    assert_eq!(services["services"][0]["hook"], "patient-view");
    let service = format!(
        "/cds-services/{}",
        services["services"][0]["id"].as_str().expect("service id")
    );
    assert_eq!(get(&engine, "/cds-services", None).0, 401);
    let (patient, alert) = patient_with_alert(&engine, &patients, |a| a["ack"].is_null());
    let hook = |patient: &str, hook: &str| {
        format!(
            r#"{{"hook": "{hook}", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
                "context": {{"userId": "Practitioner/1", "patientId": "{patient}"}}}}"#
        )
    };
    let (s, body) = post(
        &engine,
        &service,
        Some("tok-admin"),
        &hook(&patient, "patient-view"),
    );
    assert_eq!(s, 200, "{body}");
    assert!(
        !body.contains(patient.as_str()),
        "the identifier is not echoed"
    );
    let cards = object(&body)["cards"].as_array().cloned().expect("cards");
    let uuid = alert["card"]["uuid"].clone();
    assert!(
        cards.iter().any(|c| c["uuid"] == uuid),
        "the alert is a card"
    );
    for c in &cards {
        assert!(c["summary"]
            .as_str()
            .is_some_and(|s| s.chars().count() <= 140));
        assert!(["info", "warning", "critical"].contains(&c["indicator"].as_str().unwrap_or("")));
    }
    let (s, body) = post(
        &engine,
        &service,
        Some("tok-admin"),
        &hook("someone-else", "patient-view"),
    );
    assert_eq!(
        (s, object(&body)["cards"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    assert_eq!(
        post(
            &engine,
            &service,
            Some("tok-admin"),
            &hook(&patient, "order-sign")
        )
        .0,
        400
    );
    assert_eq!(
        post(
            &engine,
            &service,
            Some("tok-bed"),
            &hook(&patient, "patient-view")
        )
        .0,
        403
    );

    // Feedback from the EHR: the card overridden with a reason is the clinician's override of
    // the alert, counted in the rule's rates; a bed manager may not send it.
    let feedback = format!(
        r#"{{"feedback": [{{"card": {uuid}, "outcome": "overridden",
            "overrideReason": {{"reason": {{"code": "already-treated"}}, "userComment": "free text"}},
            "outcomeTimestamp": "2026-03-02T10:00:00Z"}}]}}"#
    );
    let feedback_path = format!("{service}/feedback");
    assert_eq!(
        post(&engine, &feedback_path, Some("tok-bed"), &feedback).0,
        403
    );
    let (s, body) = post(&engine, &feedback_path, Some("tok-ward"), &feedback);
    assert_eq!(
        (s, object(&body)["recorded"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    let (_, body) = get(&engine, "/api/alerts", Some("tok-admin"));
    let acted = json(&body)
        .into_iter()
        .find(|a| a["id"] == alert["id"])
        .expect("the alert");
    assert_eq!(acted["ack"]["action"], "overridden");
    assert_eq!(acted["ack"]["reason"], "already-treated");
    assert!(!body.contains("free text"), "the comment is not kept");
    let rule = alert["mlmname"].as_str().expect("rule").to_owned();
    let (_, body) = get(&engine, "/api/rules/stats", Some("tok-admin"));
    assert!(
        object(&body)["rules"][rule.as_str()]["overridden"].as_u64() >= Some(1),
        "{body}"
    );

    // Snoozed, the alert leaves the chart for its minutes; accepted, for good.
    for action in [
        r#"{"action": "snoozed", "reason": "busy", "minutes": 30}"#,
        accept,
    ] {
        let (s, body) = post(&engine, &ack_path(&alert), Some("tok-ward"), action);
        assert_eq!(s, 200, "{body}");
        let (_, body) = post(
            &engine,
            &service,
            Some("tok-admin"),
            &hook(&patient, "patient-view"),
        );
        assert!(
            !body.contains(uuid.as_str().unwrap_or("-")),
            "{action}: no longer active"
        );
    }

    let log = std::fs::read_to_string(&engine.stderr).unwrap_or_default();
    for p in &patients {
        assert!(!log.contains(p.as_str()), "patient id in the log");
    }
}

/// A P-384 key pair of an EHR and its JWK Set.
fn ehr_key() -> (ring::signature::EcdsaKeyPair, String) {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).expect("key");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .expect("key pair");
    let (x, y) = pair.public_key().as_ref()[1..].split_at(48);
    let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-384", "kid": "ehr-1",
        "use": "sig", "alg": "ES384", "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}]});
    (pair, jwks.to_string())
}

/// A client JWT as the CDS Hooks specification has the EHR sign it.
fn client_jwt(
    pair: &ring::signature::EcdsaKeyPair,
    aud: &str,
    jti: &str,
    expires_in: i64,
) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let header = serde_json::json!({"alg": "ES384", "typ": "JWT", "kid": "ehr-1"});
    let claims = serde_json::json!({"iss": "https://ehr.example.org", "sub": "ehr-client",
        "aud": aud, "iat": now, "exp": now + expires_in, "jti": jti});
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = pair
        .sign(&ring::rand::SystemRandom::new(), signed.as_bytes())
        .expect("sign");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

/// CDS Hooks client authentication: an EHR configured with its public keys signs each call;
/// a valid token is accepted (and only on the CDS Hooks routes), an expired one, one for another
/// audience, one signed by an unknown key and a replayed one are refused and counted; the
/// prefetched Patient's identifier finds the patient when `patientId` is a FHIR id; the EHR's
/// feedback through its own token changes the rule's rates.
#[test]
fn an_ehr_signs_its_calls_with_its_own_key() {
    let (pair, jwks) = ehr_key();
    let client = format!(
        "\n[[hooks_client]]\nname = \"ehr\"\niss = \"https://ehr.example.org\"\n\
         jwks = '{jwks}'\naudience = [\"https://cds.example.org\"]\nrole = \"clinician\"\n\
         hospitals = [1]\n"
    );
    let (engine, patients) =
        common::http::start_with(&["--hooks-patient-system", "urn:mrn"], &client);
    let service = "/cds-services/cds-patient-alerts";
    let aud = format!("https://cds.example.org{service}");
    let (patient, alert) = patient_with_alert(&engine, &patients, |_| true);
    let view = |patient_id: &str, prefetch: &str| {
        format!(
            r#"{{"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
                "context": {{"userId": "Practitioner/1", "patientId": "{patient_id}"}}{prefetch}}}"#
        )
    };
    let cards = |body: &str| -> Vec<Value> {
        object(body)["cards"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let uuid = alert["card"]["uuid"].clone();

    let jwt = client_jwt(&pair, &aud, "call-1", 120);
    let (s, body) = post(&engine, service, Some(&jwt), &view(&patient, ""));
    assert_eq!(s, 200, "{body}");
    assert!(cards(&body).iter().any(|c| c["uuid"] == uuid), "{body}");
    assert_eq!(
        post(&engine, service, Some(&jwt), &view(&patient, "")).0,
        401,
        "a token id is used once"
    );
    let refused = [
        client_jwt(&pair, &aud, "call-2", -120),
        client_jwt(
            &pair,
            "https://other.example.org/cds-services",
            "call-3",
            120,
        ),
        client_jwt(&ehr_key().0, &aud, "call-4", 120),
        client_jwt(&pair, &aud, "call-5", 3600),
    ];
    for jwt in &refused {
        assert_eq!(
            post(&engine, service, Some(jwt), &view(&patient, "")).0,
            401
        );
    }
    assert_eq!(
        get(
            &engine,
            "/api/alerts",
            Some(&client_jwt(&pair, &aud, "call-6", 120))
        )
        .0,
        401,
        "a client JWT opens the CDS Hooks routes only"
    );
    let metrics = get(&engine, "/metrics", None).1;
    for reason in ["replayed", "expired", "audience", "signature", "lifetime"] {
        assert!(
            metrics.contains(&format!(
                "cds_http_hooks_jwt_refused_total{{reason=\"{reason}\"}} 1"
            )),
            "{reason} counted"
        );
    }

    // The EHR names the patient by its FHIR id; the prefetched Patient carries the MRN.
    let prefetch = format!(
        r#", "prefetch": {{"patient": {{"resourceType": "Patient", "id": "f-1",
            "identifier": [{{"system": "urn:mrn", "value": "{patient}"}}]}}}}"#
    );
    let jwt = client_jwt(&pair, &aud, "call-7", 120);
    let (s, body) = post(&engine, service, Some(&jwt), &view("f-1", &prefetch));
    assert_eq!(s, 200, "{body}");
    assert!(
        cards(&body).iter().any(|c| c["uuid"] == uuid),
        "found by the MRN"
    );
    let jwt = client_jwt(&pair, &aud, "call-8", 120);
    let (_, body) = post(&engine, service, Some(&jwt), &view("f-1", ""));
    assert!(cards(&body).is_empty(), "the FHIR id alone names no one");
    // The same value under another identifier system (an insurance number, say) is not taken
    // for the streams' patient id.
    let elsewhere = prefetch.replace("urn:mrn", "urn:insurance");
    let jwt = client_jwt(&pair, &aud, "call-10", 120);
    let (_, body) = post(&engine, service, Some(&jwt), &view("f-1", &elsewhere));
    assert!(
        cards(&body).is_empty(),
        "another system's value names no one"
    );

    // Feedback through the EHR's token counts in the rule's rates.
    let rule = alert["mlmname"].as_str().expect("rule").to_owned();
    let feedback = format!(r#"{{"feedback": [{{"card": {uuid}, "outcome": "accepted"}}]}}"#);
    let path = format!("{service}/feedback");
    let jwt = client_jwt(
        &pair,
        &format!("https://cds.example.org{path}"),
        "call-9",
        120,
    );
    let (s, body) = post(&engine, &path, Some(&jwt), &feedback);
    assert_eq!(
        (s, object(&body)["recorded"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    let metrics = get(&engine, "/metrics", None).1;
    assert!(
        metrics.contains(&format!(
            "cds_alert_acks_total{{action=\"accepted\",rule=\"{rule}\"}} 1"
        )),
        "the EHR's feedback is counted"
    );
    assert!(metrics.contains(&format!("cds_rule_accept_ratio{{rule=\"{rule}\"}} 1")));
}
