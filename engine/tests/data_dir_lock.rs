//! One engine per data directory (docs/operations.md): while `cds run` holds a data directory,
//! a second `cds run`, `cds ingest` or `cds replay` on it (or on its lake) is refused at start,
//! quickly, with the holder's pid and host and a non-zero exit; `cds export` still reads it.
//! After the holder is killed with SIGKILL, its lock file is left behind and a new engine
//! starts all the same: the lock is the operating system's and went with the process.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{cds, scratch, simulate};

/// A `cds run` on the simulator that serves until stopped.
fn service(data: &Path, log: &Path) -> Child {
    cds()
        .args([
            "run",
            "--source",
            "simulator",
            "--rate",
            "200",
            "--seed",
            "7",
        ])
        .args(["--http", "off", "--rules", "off", "--data-dir"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("start cds run")
}

/// Runs a command that must end by itself within `limit`; its output and how long it took.
fn finish_within(command: &mut Command, limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cds");
    while started.elapsed() < limit {
        if let Ok(Some(_)) = child.try_wait() {
            let out = child.wait_with_output().expect("output");
            return (out, started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    panic!(
        "still running after {limit:?} (the lock was not seen):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until the lock file of `dir` names `pid`.
fn wait_for_holder(dir: &Path, pid: u32, log: &Path) {
    let started = Instant::now();
    let wanted = format!("\"pid\":{pid},");
    while started.elapsed() < Duration::from_secs(60) {
        let text = std::fs::read_to_string(dir.join("cds.lock")).unwrap_or_default();
        if text.contains(&wanted) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "no lock file naming pid {pid} in {}:\n{}",
        dir.display(),
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Asserts a refusal: non-zero exit, within seconds, the message naming the directory, the
/// holder and the way out, and no panic.
fn assert_refused(what: &str, (out, took): (Output, Duration), dir: &Path, pid: u32, flag: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{what} ran beside the holder:\n{stderr}"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: {}\n{stderr}",
        out.status
    );
    assert!(
        took < Duration::from_secs(10),
        "{what} took {took:?} to be refused"
    );
    for part in [
        format!(
            "{} is in use by `cds run` (pid {pid} on host ",
            dir.display()
        ),
        ") since ".to_owned(),
        format!("stop that engine, or choose another {flag}"),
    ] {
        assert!(stderr.contains(&part), "{what}: {part:?} not in\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{what} panicked:\n{stderr}");
    eprintln!("{what}: refused in {took:?}: {}", stderr.trim());
}

/// A service `cds run` of the simulator without rules or HTTP; the caller adds the directories.
fn simulator_run() -> std::process::Command {
    let mut command = cds();
    command.args([
        "run",
        "--source",
        "simulator",
        "--http",
        "off",
        "--rules",
        "off",
    ]);
    command
}

#[test]
fn a_second_engine_on_a_held_data_directory_is_refused_until_the_holder_is_killed() {
    let dir = scratch("held");
    let data = dir.join("data");
    let mut holder = service(&data, &dir.join("holder.log"));
    let pid = holder.id();
    wait_for_holder(&data, pid, &dir.join("holder.log"));
    let limit = Duration::from_secs(30);

    // A second service on the same data directory.
    let second = finish_within(simulator_run().arg("--data-dir").arg(&data), limit);
    assert_refused("a second cds run", second, &data, pid, "--data-dir");

    // Another data directory but the holder's lake.
    let lake = data.join("lake");
    let other = finish_within(
        simulator_run()
            .arg("--data-dir")
            .arg(dir.join("other"))
            .arg("--lake")
            .arg(&lake),
        limit,
    );
    assert_refused("a run on the held lake", other, &lake, pid, "--lake");

    // The other commands that write a data directory.
    let extract = dir.join("extract.csv");
    std::fs::write(&extract, "encounter_id\n").expect("extract");
    let ingest = finish_within(
        cds()
            .args(["ingest", "--kind", "ehr", "--rules", "off"])
            .arg(&extract)
            .arg("--data-dir")
            .arg(&data),
        limit,
    );
    assert_refused("cds ingest", ingest, &data, pid, "--data-dir");
    let replay = finish_within(
        cds()
            .args(["replay", "--from-bronze", "--http", "off", "--rules", "off"])
            .arg("--data-dir")
            .arg(&data),
        limit,
    );
    assert_refused("cds replay", replay, &data, pid, "--data-dir");

    // Reading is not writing: the holder's documents can be exported meanwhile.
    let started = Instant::now();
    let exported = loop {
        let out = cds()
            .args(["export", "kpis", "--data-dir"])
            .arg(&data)
            .output()
            .expect("export");
        if out.status.success() && !out.stdout.is_empty() {
            break out;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "cds export never read the held store:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(String::from_utf8_lossy(&exported.stdout).contains("\"id\""));

    // The holder dies without a word; its lock file stays, naming it.
    holder.kill().expect("SIGKILL");
    let _ = holder.wait();
    let left = std::fs::read_to_string(data.join("cds.lock")).expect("the lock file stays");
    assert!(left.contains(&format!("\"pid\":{pid},")), "{left}");

    // A new engine starts on it all the same, runs to its end and leaves the file naming nobody.
    let events = dir.join("events.jsonl");
    std::fs::write(&events, simulate(&["--seed", "2", "--max-events", "500"])).expect("events");
    let (out, _) = finish_within(
        cds()
            .args([
                "run",
                "--until-end",
                "--http",
                "off",
                "--rules",
                "off",
                "--source",
            ])
            .arg(format!("file:{}", events.display()))
            .arg("--data-dir")
            .arg(&data),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "a run after the holder was killed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("processed "));
    let after = std::fs::read_to_string(data.join("cds.lock")).expect("the lock file");
    assert_eq!(after, "", "a clean stop leaves a lock file naming nobody");
    let _ = std::fs::remove_dir_all(&dir);
}
