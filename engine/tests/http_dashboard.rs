//! The dashboard in a real headless Chromium: load the page with a token (snapshot mode,
//! `live=0`: a headless browser waits for the network to go quiet, which a live stream never
//! does; the live stream itself is covered by `http_access.rs`), let the data
//! arrive, and check the DOM against `/api/kpis`; a screenshot is kept as a test artefact in
//! `target/test-artifacts/dashboard.png`. `tests/run.sh` installs Debian's chromium when
//! missing; without it this test fails with a clear message (it is never skipped).

mod common;

use std::process::Command;

use common::http::{get, json, start};

fn chromium() -> String {
    for candidate in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(candidate)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return candidate.to_owned();
        }
    }
    panic!("no chromium on this machine: run the suite with `bash tests/run.sh`, which installs Debian's chromium");
}

fn browser(chromium: &str, profile: &std::path::Path, args: &[&str], url: &str) -> String {
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=6000",
        ])
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
    for h in 1..=7 {
        assert!(
            dom.contains(&format!("<span>Hospital {h}</span>")),
            "hospital {h} on the page"
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
