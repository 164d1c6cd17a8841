//! The dashboard in a real headless Chromium: load the page with a token (snapshot mode,
//! `live=0`: a headless browser waits for the network to go quiet, which a live stream never
//! does; the live stream itself is covered by `http_access.rs`), let the data
//! arrive, and check the DOM against `/api/kpis`; a screenshot is kept as a test artefact in
//! `target/test-artifacts/dashboard.png`. `tests/run.sh` installs Debian's chromium when
//! missing; without it this test fails with a clear message (it is never skipped).

mod common;

use std::process::Command;

use common::browser::chromium;
use common::http::{get, json, start};

fn browser(chromium: &str, profile: &std::path::Path, args: &[&str], url: &str) -> String {
    let out = Command::new(chromium)
        .args(common::browser::HEADLESS)
        .arg("--virtual-time-budget=6000")
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_dashboard_shows_every_department_with_the_api_numbers() {
    let chromium = chromium();
    let (engine, _) = start();
    let url = format!("http://{}/?token=tok-admin&live=0", engine.addr);
    let profile = engine.dir.join("chromium-profile");

    let dom = browser(&chromium, &profile, &["--dump-dom"], &url);
    let (status, body) = get(&engine, "/api/kpis?type=occupancy", Some("tok-admin"));
    assert_eq!(status, 200);
    let occupancy = json(&body);
    assert_eq!(occupancy.len(), 49, "7 hospitals x 7 departments");
    let (_, body) = get(&engine, "/api/hospitals", Some("tok-admin"));
    let hospitals = json(&body);
    assert_eq!(hospitals.len(), 7);
    for h in &hospitals {
        let name = h["name"].as_str().expect("a hospital name");
        assert!(
            dom.contains(&format!("<span class=\"hospital-name\">{name}</span>")),
            "{name} on the page"
        );
    }
    for d in &occupancy {
        let id = d["id"].as_str().unwrap_or_default();
        let row = dom
            .split(&format!("data-id=\"{id}\""))
            .nth(1)
            .unwrap_or_else(|| panic!("{id} is on the page"));
        let shown = row
            .split("<b class=\"occupied\">")
            .nth(1)
            .and_then(|r| r.split('<').next())
            .unwrap_or_default();
        assert_eq!(
            shown,
            d["occupied"].to_string(),
            "{id}: the page shows what /api/kpis says"
        );
    }
    assert!(dom.contains("class=\"alert "), "the alert feed is filled");

    let artefacts =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artefacts).expect("artefact dir");
    let shot = artefacts.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    browser(
        &chromium,
        &profile,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1400,1000",
        ],
        &url,
    );
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
        "a screenshot was saved"
    );

    // Without a token the page cannot load data.
    assert_eq!(get(&engine, "/", None).0, 401);
}

/// Where a browser test keeps its screenshots.
fn artefact(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("artefact dir");
    dir.join(name)
}

/// A person at the dashboard, in headless Chromium over the DevTools protocol: signs in with a
/// clinician's token typed into the form, filters to one department and back, sees a tile
/// change when an admission arrives over the live stream, and accepts an alert by clicking,
/// after which it leaves the open list (and the API records it). Screenshots of each step are
/// kept in `target/test-artifacts/`.
#[test]
fn a_clinician_signs_in_filters_watches_a_tile_change_and_accepts_an_alert() {
    use common::browser::Browser;
    let (engine, _) = start();
    let mut browser = Browser::start(&engine.dir.join("devtools-profile"));
    let page = format!("http://{}/", engine.addr);

    // Sign in: the form, the token typed, the button clicked.
    browser.open(&page);
    browser.wait_for("the sign-in form", "!!document.getElementById('token')");
    browser.screenshot(&artefact("signin.png"));
    browser.click("#token");
    browser.type_text("tok-ward");
    browser.click("#signin");
    browser.wait_for(
        "the live dashboard",
        "document.querySelectorAll('.dept').length === 7 \
         && document.getElementById('status').textContent.startsWith('live')",
    );
    assert_eq!(
        browser.eval("location.search"),
        "",
        "no token in the address bar"
    );
    assert_eq!(
        browser.eval("document.cookie"),
        "",
        "the session cookie is out of scripts' reach"
    );
    let (_, body) = get(&engine, "/api/hospitals", Some("tok-ward"));
    let name = json(&body)[0]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        browser.eval("[...document.querySelectorAll('.hospital-name')].map(e => e.textContent)"),
        serde_json::json!([name]),
        "the clinician's one hospital, by name"
    );
    browser.screenshot(&artefact("dashboard-clinician.png"));

    // Filter to one department, then back to all.
    browser.click("[data-filter='department:ICU']");
    browser.wait_for(
        "only ICU",
        "[...document.querySelectorAll('.dept .name')].map(e => e.textContent).join() === 'ICU'",
    );
    browser.click("[data-filter='department:all']");
    browser.wait_for(
        "every department again",
        "document.querySelectorAll('.dept').length === 7",
    );

    // An admission into ICU arrives on the stream: the tile counts it.
    let tile = "document.querySelector(\"[data-id='occupancy:1:ICU'] .occupied\").textContent";
    let before: i64 = browser
        .eval(tile)
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("the ICU tile");
    let events = engine.dir.join("events.jsonl");
    let newest = std::fs::read_to_string(&events)
        .expect("events")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| chrono::DateTime::parse_from_rfc3339(v["event_timestamp"].as_str()?).ok())
        .max()
        .expect("a newest event");
    let at = (newest + chrono::Duration::minutes(1)).to_rfc3339();
    let admission = serde_json::json!({"event_id": "EV-BROWSER-1", "event_type": "ADMISSION",
        "event_timestamp": at, "patient_id": "P-BROWSER-1", "hospital_id": 1,
        "department": "ICU", "bed_id": "ICU-99", "gender": "F", "age": 70,
        "admission_time": at, "admission_priority": "Emergency"});
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&events)
        .expect("the events file");
    std::io::Write::write_all(&mut file, format!("{admission}\n").as_bytes()).expect("append");
    browser.wait_for(
        "the ICU tile to count the admission",
        &format!("{tile} === '{}'", before + 1),
    );

    // Accept the newest open alert: it leaves the open list, and the API has the ack.
    browser.wait_for(
        "open alerts",
        "document.querySelectorAll('#feed .alert').length > 0",
    );
    let open = browser.eval("document.querySelectorAll('#feed .alert').length");
    let id = browser
        .eval("document.querySelector('#feed .alert').dataset.alert")
        .as_str()
        .expect("an alert id")
        .to_owned();
    browser.click("#feed .alert button.accept");
    browser.wait_for(
        "the accepted alert to leave the open list",
        &format!("!document.querySelector('[data-alert=\"{id}\"]')"),
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('#feed .alert').length"),
        serde_json::json!(open.as_u64().unwrap_or(1) - 1)
    );
    assert!(browser
        .eval("document.getElementById('acted').textContent")
        .as_str()
        .is_some_and(|t| t.starts_with("accepted")));
    browser.screenshot(&artefact("dashboard-after-accept.png"));
    let (_, body) = get(&engine, "/api/alerts", Some("tok-ward"));
    let acted = json(&body)
        .into_iter()
        .find(|a| a["id"] == id.as_str())
        .expect("the alert");
    assert_eq!(acted["ack"]["action"], "accepted");
    assert_eq!(acted["ack"]["by"], "dr-h1");

    // A sign-in posted from another site is refused: no page elsewhere signs a browser in.
    let mut s = common::http::send(
        &engine.addr,
        "POST",
        "/signin",
        &[("Origin", "https://elsewhere.example")],
        "token=tok-ward",
    );
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut s, &mut answer).expect("answer");
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer:.200}");
    assert!(!answer.to_ascii_lowercase().contains("set-cookie"));
}
