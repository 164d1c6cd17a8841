//! The failure contract (docs/design.md) through the real binary: a thread of the engine that
//! panics ends the process with a non-zero exit and one log line without the payload; a stage
//! that stops advancing with input in hand turns `/readyz` to 503 naming it. The failures are
//! injected with the `chaos` drills (`CDS_CHAOS`), which only test builds have.
//!
//! Also the files the engine leaves behind: a private data directory, private files, a shared
//! key refused; and a repository that tracks no run data.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::http::response;
use common::{cds, free_port, ok, rules_dir, scratch, simulate};

/// Waits for the child to exit, at most `limit`; kills it after that.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Status and body of `GET path`, or `None` while nothing answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let text = response(
        &format!("127.0.0.1:{port}"),
        path,
        &[],
        Duration::from_secs(5),
    )?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

#[test]
fn a_panic_in_any_stage_ends_the_process_with_one_line_and_a_non_zero_exit() {
    for stage in ["ingest", "gold", "rules", "sink", "lake"] {
        let dir = scratch(&format!("panic-{stage}"));
        let stderr = dir.join("stderr.log");
        let mut child = cds()
            .args(["run", "--source", "simulator", "--max-events", "5000"])
            .args(["--seed", "3", "--until-end", "--http", "off"])
            .arg("--rules")
            .arg(rules_dir())
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("CDS_CHAOS", format!("panic:{stage}"))
            .env("CDS_LOG", "error")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start cds");
        let status = wait_exit(&mut child, Duration::from_secs(60));
        let log = std::fs::read_to_string(&stderr).unwrap_or_default();
        let status = status.unwrap_or_else(|| panic!("{stage}: the process hung after a panic"));
        assert_eq!(status.code(), Some(70), "{stage}: exit {status}\n{log}");
        assert!(log.contains("panicked"), "{stage}: no log line\n{log}");
        assert!(
            !log.contains("chaos drill"),
            "{stage}: the panic's message (which may quote a payload) reached the log\n{log}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// `cds run` on the simulator at `rate` events per second with HTTP on `port`; a stage that
/// makes no progress for `stall_after` seconds turns readiness to 503.
fn simulator_run(rate: &str, seed: &str, stall_after: &str, port: u16, dir: &Path) -> Command {
    let mut c = cds();
    c.args([
        "run",
        "--source",
        "simulator",
        "--rate",
        rate,
        "--seed",
        seed,
    ])
    .args([
        "--rules",
        "off",
        "--lake",
        "off",
        "--stall-after",
        stall_after,
    ])
    .arg("--http")
    .arg(format!("127.0.0.1:{port}"))
    .arg("--data-dir")
    .arg(dir.join("data"))
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    c
}

#[test]
fn a_stalled_stage_turns_readiness_to_503_naming_it() {
    for stage in ["sink", "gold", "ingest"] {
        let dir = scratch(&format!("stall-{stage}"));
        let port = free_port();
        let mut child = simulator_run("500", "4", "1", port, &dir)
            .env("CDS_CHAOS", format!("stall:{stage}"))
            .spawn()
            .expect("start cds");
        let start = Instant::now();
        let mut last = None;
        while start.elapsed() < Duration::from_secs(30) {
            last = http_get(port, "/readyz");
            if matches!(&last, Some((503, body)) if body.contains("stalled")) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let health = http_get(port, "/healthz");
        let metrics = http_get(port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default();
        let _ = child.kill();
        let _ = child.wait();
        let (status, body) = last.unwrap_or_else(|| panic!("{stage}: /readyz never answered"));
        assert_eq!(status, 503, "{stage}: {body}");
        assert!(
            body.contains(&format!("stalled: {stage}")),
            "{stage}: /readyz names another stage: {body}"
        );
        assert_eq!(
            health.map(|h| h.0),
            Some(200),
            "liveness is a separate question"
        );
        let busy = format!("cds_stage_busy{{stage=\"{stage}\"}} 1");
        assert!(metrics.contains(&busy), "{stage}: no {busy} in /metrics");
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A payload that panics its decoder is that payload's fault: it becomes a dead letter
/// `decoder_panic` with the payload kept, and the run goes on to the end with the events around
/// it (through the real binary; the drill marker panics the decoder as a parser defect would).
#[test]
fn a_payload_that_panics_its_decoder_is_a_dead_letter_and_the_run_goes_on() {
    let dir = scratch("decoder-panic");
    let event = |n: u32, extra: &str| {
        format!(
            r#"{{"event_id":"dp-{n}","event_type":"ADMISSION","event_timestamp":"2026-03-02T10:0{n}:00Z","patient_id":"PDP{n}","hospital_id":1,"department":"ICU","bed_id":"ICU-0{n}","admission_time":"2026-03-02T10:0{n}:00Z"{extra}}}"#
        )
    };
    let marker = String::from_utf8_lossy(cds_engine::support::fault::DECODER_PANIC_MARKER);
    let lines = [
        event(1, ""),
        event(2, &format!(r#","note":"{marker}""#)),
        event(3, ""),
    ];
    let input = dir.join("events.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").expect("input");
    let out = cds()
        .args(["run", "--until-end", "--http", "off", "--rules", "off"])
        .arg("--source")
        .arg(format!("file:{}", input.display()))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("CDS_LOG", "warn")
        .output()
        .expect("run cds");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "exit {}\n{log}", out.status);
    assert!(
        !log.contains("chaos drill"),
        "the panic's message reached the log\n{log}"
    );
    let letters = std::fs::read_to_string(dir.join("data/lake/deadletter/deadletter.jsonl"))
        .expect("the dead-letter store");
    let letters: Vec<serde_json::Value> = letters
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["reason_code"], "decoder_panic", "{letters:?}");
    assert_eq!(letters[0]["payload"].as_str(), Some(lines[1].as_str()));
    let kpis = common::exported(&dir.join("data"), "kpis");
    let occupied: f64 = kpis
        .iter()
        .filter(|(id, _)| id.starts_with("occupancy"))
        .filter_map(|(_, d)| d["occupied"].as_f64())
        .sum();
    assert_eq!(
        occupied, 2.0,
        "the events around the bad payload count: {kpis:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_healthy_run_stays_ready() {
    let dir = scratch("healthy");
    let port = free_port();
    let mut child = simulator_run("2000", "5", "5", port, &dir)
        .spawn()
        .expect("start cds");
    let start = Instant::now();
    let mut answers = Vec::new();
    while start.elapsed() < Duration::from_secs(8) {
        if let Some((status, _)) = http_get(port, "/readyz") {
            answers.push(status);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let _ = child.kill();
    let _ = child.wait();
    let ready_from = answers.iter().position(|s| *s == 200);
    let ready_from = ready_from.expect("ready at some point");
    assert!(
        answers[ready_from..].iter().all(|s| *s == 200),
        "readiness flapped in a healthy run: {answers:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(unix)]
#[test]
fn the_data_directory_and_its_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("private");
    let data = dir.join("data");
    // An existing data directory open to everyone is narrowed.
    std::fs::create_dir_all(&data).expect("data dir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let events = dir.join("events.jsonl");
    let out = simulate(&["--seed", "6", "--max-events", "3000", "--dirty-rate", "0.2"]);
    std::fs::write(&events, out).expect("events");
    // The key comes from the data directory this time, so that its file is checked too.
    ok(
        cds()
            .env_remove("CDS_PSEUDONYM_KEY")
            .args(["run", "--until-end", "--http", "off"])
            .arg("--rules")
            .arg(rules_dir())
            .arg("--source")
            .arg(format!("file:{}", events.display()))
            .arg("--data-dir")
            .arg(&data)
            .output()
            .expect("run"),
        "run",
    );
    let mut shared = Vec::new();
    let mut files = 0;
    let mut stack = vec![data.clone()];
    while let Some(d) = stack.pop() {
        let mode = std::fs::metadata(&d).expect("meta").permissions().mode();
        if mode & 0o077 != 0 {
            shared.push(format!("{} {:o}", d.display(), mode & 0o777));
        }
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            let meta = entry.metadata().expect("meta");
            if meta.is_dir() {
                stack.push(path);
            } else {
                files += 1;
                if meta.permissions().mode() & 0o077 != 0 {
                    shared.push(format!(
                        "{} {:o}",
                        path.display(),
                        meta.permissions().mode() & 0o777
                    ));
                }
            }
        }
    }
    assert!(files > 10, "the run wrote its stores ({files} files)");
    assert!(shared.is_empty(), "readable by others: {shared:#?}");

    // A key file that others can read is refused, with the fix in the message.
    let key = data.join("pseudonym.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod key");
    let out = cds()
        .env_remove("CDS_PSEUDONYM_KEY")
        .args(["run", "--until-end", "--http", "off", "--rules", "off"])
        .arg("--source")
        .arg(format!("file:{}", events.display()))
        .arg("--data-dir")
        .arg(&data)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a shared key was used");
    assert!(stderr.contains("chmod 600"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_repository_tracks_no_run_data() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["ls-files"])
        .output()
        .expect("git runs");
    assert!(out.status.success(), "not a git checkout");
    let tracked = String::from_utf8_lossy(&out.stdout);
    let run_data: Vec<&str> = tracked
        .lines()
        .filter(|f| !f.starts_with("engine/tests/fixtures/"))
        .filter(|f| {
            f.ends_with(".key")
                || f.ends_with(".sqlite")
                || f.ends_with(".sqlite-wal")
                || f.contains("checkpoints/")
                || f.starts_with("cds-data/")
                || f.starts_with("d/")
                || (!f.contains('/') && f.ends_with(".jsonl"))
        })
        .collect();
    assert!(
        run_data.is_empty(),
        "run data in the repository: {run_data:?}"
    );
    let ignore = std::fs::read_to_string(root.join(".gitignore")).expect(".gitignore");
    for pattern in ["/cds-data", "*.key", "*.sqlite"] {
        assert!(ignore.contains(pattern), ".gitignore lacks {pattern}");
    }
}
