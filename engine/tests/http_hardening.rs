//! The HTTP server against clients that do not play by the rules (issue 17, "never silent,
//! never leaking"), through the real binary: half-sent requests time out and cannot crowd out
//! a normal one, the connection limit refuses beyond it, the live stream is capped per token,
//! `Bearer` is read in any case, `?token=` works only where a header cannot be set and the
//! dashboard trades it for an HttpOnly cookie, a revoked token stops working without a
//! restart, a department-scoped clinician sees only the stays of their department, CDS Hooks
//! errors never echo the input, and unauthenticated floods do not fill the audit log.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cds_engine::http::auth::hash_token;
use common::http::{get, json, post, send, start_with, Engine};

/// Sends a raw request and returns the response head and body (the connection is closed by
/// the request's `Connection: close`).
fn raw(engine: &Engine, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut s = send(&engine.addr, method, path, headers, body);
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn metric(engine: &Engine, name: &str) -> u64 {
    let (s, text) = get(engine, "/metrics", None);
    assert_eq!(s, 200);
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Opens a live stream and returns the connection and its status.
fn open_stream(engine: &Engine, token: &str) -> (u16, TcpStream) {
    let mut s = TcpStream::connect(&engine.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let req = format!(
        "GET /api/alerts/stream HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\r\n",
        engine.addr
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut line = String::new();
    BufReader::new(s.try_clone().expect("clone"))
        .read_line(&mut line)
        .expect("status line");
    (status(&line), s)
}

const REVOKED: &str = r#"
[[token]]
name = "leaving"
sha256 = "LEAVING"
role = "admin"
"#;

#[test]
fn the_http_server_is_bounded_and_leaks_nothing() {
    let more = REVOKED.replace("LEAVING", &hash_token("tok-leaving"));
    let (engine, _) = start_with(
        &[
            "--http-max-connections",
            "600",
            // Long enough that the 500 half-open connections are all still held while the
            // connections over the limit are made, even on a loaded machine.
            "--http-header-timeout",
            "8",
            "--http-streams-per-token",
            "2",
        ],
        &more,
    );

    // The bearer scheme is case-insensitive (RFC 7235).
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let auth = format!("{scheme} tok-admin");
        let r = raw(&engine, "GET", "/api/kpis", &[("Authorization", &auth)], "");
        assert_eq!(status(&r), 200, "scheme {scheme}");
    }

    // `?token=` only where a header cannot be set.
    assert_eq!(get(&engine, "/api/kpis?token=tok-admin", None).0, 401);
    assert_eq!(get(&engine, "/api/alerts?token=tok-admin", None).0, 401);
    let r = raw(&engine, "GET", "/?token=tok-admin&live=0", &[], "");
    assert_eq!(status(&r), 303, "{r}");
    let head = r.split("\r\n\r\n").next().unwrap_or_default().to_owned();
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("\r\nlocation: /?live=0"), "{head}");
    let cookie_line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {head}"));
    assert!(cookie_line.contains("HttpOnly"), "{cookie_line}");
    assert!(cookie_line.contains("SameSite=Strict"), "{cookie_line}");
    assert!(!head.contains("tok-admin"), "the token is not sent back");
    let cookie = cookie_line
        .split_once(':')
        .map(|(_, v)| v.trim())
        .and_then(|v| v.split(';').next())
        .expect("cookie value")
        .to_owned();
    assert!(cookie.starts_with("cds_session="), "{cookie}");
    let r = raw(&engine, "GET", "/api/kpis", &[("Cookie", &cookie)], "");
    assert_eq!(status(&r), 200, "the API accepts the session cookie");
    let r = raw(&engine, "GET", "/", &[("Cookie", &cookie)], "");
    assert_eq!(status(&r), 200);
    let r = raw(
        &engine,
        "GET",
        "/api/kpis",
        &[("Cookie", "cds_session=forged")],
        "",
    );
    assert_eq!(status(&r), 401);

    // An ICU clinician sees the lengths of stay of ICU patients only.
    let (s, body) = get(&engine, "/api/kpis?type=patient_los", Some("tok-admin"));
    assert_eq!(s, 200);
    let all = json(&body);
    assert!(
        all.iter().all(|d| d.get("department").is_some()),
        "{body:.300}"
    );
    let (s, body) = get(&engine, "/api/kpis?type=patient_los", Some("tok-clin"));
    assert_eq!(s, 200);
    let seen = json(&body);
    for d in &seen {
        assert_eq!(
            (d["hospital_id"].as_i64(), d["department"].as_str()),
            (Some(3), Some("ICU")),
            "{d}"
        );
    }
    let expected = all
        .iter()
        .filter(|d| d["hospital_id"] == 3 && d["department"] == "ICU")
        .count();
    assert_eq!(seen.len(), expected);

    // CDS Hooks: a 400 never echoes the input (a numeric MRN, a wrong hook).
    let mrn = "9876543210123";
    let path = "/cds-services/cds-patient-alerts";
    for body in [
        format!(r#"{{"hook":"patient-view","hookInstance":"x","context":{{"patientId":{mrn}}}}}"#),
        format!(r#"{{"hook":"{mrn}","hookInstance":"x","context":{{"patientId":"{mrn}"}}}}"#),
        format!(r#"{{"hook":"patient-view","context":{{"patientId":"{mrn}"}}"#),
    ] {
        let (s, answer) = post(&engine, path, Some("tok-clin"), &body);
        assert_eq!(s, 400, "{answer}");
        assert!(!answer.contains(mrn), "the MRN is echoed: {answer}");
    }

    // The live stream: at most 2 per token; another token still gets one.
    let (s1, a) = open_stream(&engine, "tok-admin");
    let (s2, b) = open_stream(&engine, "tok-admin");
    assert_eq!((s1, s2), (200, 200));
    let (s3, c) = open_stream(&engine, "tok-admin");
    assert_eq!(s3, 429, "the third stream of one token");
    let (s4, d) = open_stream(&engine, "tok-ward");
    assert_eq!(s4, 200, "another token");
    assert!(metric(&engine, "cds_http_streams_refused_total") >= 1);
    drop((a, b, c, d));

    // An unauthenticated flood writes a bounded number of audit lines; the metric counts the
    // rest.
    let audit_path = engine.dir.join("data/audit.jsonl");
    let unauthenticated_lines = || {
        std::fs::read_to_string(&audit_path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"status\":401") && l.contains("\"route\""))
            .count() as u64
    };
    let (lines_before, suppressed_before) = (
        unauthenticated_lines(),
        metric(&engine, "cds_audit_suppressed_total"),
    );
    let started = Instant::now();
    for _ in 0..1_000 {
        assert_eq!(get(&engine, "/api/kpis", Some("wrong")).0, 401);
    }
    let seconds = started.elapsed().as_secs() + 2;
    std::thread::sleep(Duration::from_millis(1_100));
    assert_eq!(get(&engine, "/api/kpis", Some("tok-admin")).0, 200);
    let written = unauthenticated_lines() - lines_before;
    let suppressed = metric(&engine, "cds_audit_suppressed_total") - suppressed_before;
    assert!(
        written <= 10 * seconds,
        "{written} lines in about {seconds} s"
    );
    assert_eq!(written + suppressed, 1_000);
    let audit = std::fs::read_to_string(&audit_path).expect("audit");
    assert!(audit.contains("\"suppressed\":"), "a summary entry");
    assert!(!audit.contains("wrong") && !audit.contains("tok-admin"));

    // 500 half-sent requests: a normal request still succeeds, and they are closed after the
    // header-read timeout.
    let mut half_open = Vec::new();
    for _ in 0..500 {
        let mut s = TcpStream::connect(&engine.addr).expect("connect");
        s.write_all(b"GET /api/kpis HTTP/1.1\r\nHost: x")
            .expect("partial");
        half_open.push(s);
    }
    let opened = Instant::now();
    let (s, _) = get(&engine, "/api/kpis", Some("tok-admin"));
    assert_eq!(s, 200, "a normal request beside 500 half-open ones");
    // Beyond the limit (600), connections are refused at once.
    let mut over = Vec::new();
    for _ in 0..150 {
        over.push(TcpStream::connect(&engine.addr).expect("connect"));
    }
    for s in &over {
        s.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
    }
    // The refusals come as fast as the accept loop gets to them: on a loaded machine that can
    // take a while, so the sockets are read again until 40 of them have their 503 (or 15 s).
    let mut answered = vec![false; over.len()];
    let mut refused = 0;
    let deadline = Instant::now() + Duration::from_secs(15);
    while refused < 40 && Instant::now() < deadline {
        for (s, done) in over.iter().zip(answered.iter_mut()).filter(|(_, d)| !**d) {
            let mut stream: &TcpStream = s;
            let mut buf = [0u8; 64];
            if let Ok(n) = stream.read(&mut buf) {
                *done = true;
                if n > 0 && buf[..n].starts_with(b"HTTP/1.1 503") {
                    refused += 1;
                }
            }
        }
    }
    assert!(refused >= 40, "{refused} of 150 refused over the limit");
    drop(over);
    for s in &mut half_open {
        s.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        let mut rest = Vec::new();
        // Closed (EOF or reset), after an error answer or none; never left hanging.
        match s.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) => assert!(
                !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "a half-open connection still open after {:?}",
                opened.elapsed()
            ),
        }
    }
    assert!(
        opened.elapsed() < Duration::from_secs(20),
        "closed after the header-read timeout"
    );
    drop(half_open);
    assert!(metric(&engine, "cds_http_connections_refused_total") >= 40);
    assert_eq!(get(&engine, "/api/kpis", Some("tok-admin")).0, 200);

    // Revoking a token (removing its entry) takes effect without a restart.
    assert_eq!(get(&engine, "/api/kpis", Some("tok-leaving")).0, 200);
    let tokens_path = engine.dir.join("tokens.toml");
    let tokens = std::fs::read_to_string(&tokens_path).expect("tokens");
    std::fs::write(&tokens_path, tokens.replace(&more, "")).expect("revoke");
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&engine, "/api/kpis", Some("tok-leaving")).0 != 401 {
        assert!(Instant::now() < deadline, "the revoked token still works");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A broken file keeps the tokens in force.
    std::fs::write(&tokens_path, "[[token]\nname = ").expect("break");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(get(&engine, "/api/kpis", Some("tok-admin")).0, 200);
    assert_eq!(get(&engine, "/api/kpis", Some("tok-leaving")).0, 401);
}

/// Kills the engine when the test ends, passed or not.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn https_with_the_given_certificate() {
    use std::process::{Command, Stdio};
    let dir = common::scratch("https");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-days", "1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (Debian: apt-get install openssl)");
    assert!(made.status.success(), "{made:?}");
    let tokens = format!(
        "[[token]]\nname = \"ops\"\nsha256 = \"{}\"\nrole = \"admin\"\n",
        hash_token("tok-admin")
    );
    std::fs::write(dir.join("tokens.toml"), tokens).expect("tokens");
    std::fs::write(dir.join("events.jsonl"), "").expect("events");
    let log = dir.join("engine.log");
    let _engine = Child(
        common::cds()
            .args(["run", "--http", "127.0.0.1:0", "--rules", "off", "--source"])
            .arg(format!("file:{}", dir.join("events.jsonl").display()))
            .arg("--tokens")
            .arg(dir.join("tokens.toml"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .env("CDS_PSEUDONYM_KEY", "http-test")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("engine"),
    );
    let addr = common::http::address_in_log(&log, "https");
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "10"])
            .args(args)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl(&["-k", &format!("https://{addr}/healthz")]), "ok\n");
    let head = curl(&[
        "-k",
        "-o",
        "/dev/null",
        "-D",
        "-",
        &format!("https://{addr}/?token=tok-admin"),
    ]);
    assert!(head.starts_with("HTTP/1.1 303"), "{head}");
    assert!(
        head.contains("HttpOnly") && head.contains("; Secure"),
        "{head}"
    );
    assert_ne!(
        curl(&[&format!("http://{addr}/healthz")]),
        "ok\n",
        "plain HTTP is not served on the HTTPS port"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
