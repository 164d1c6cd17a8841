//! Shared by the integration tests: the `cds` binary as they run it, their scratch
//! directories, what `cds simulate` and `cds export` give, the pseudonymisation key they run
//! with and the oracle, [`cds_engine::gold::reference`] (KPIs recomputed from scratch,
//! independent of the engine's incremental Gold code).
//!
//! Each test binary compiles this module on its own and uses a part of it, hence the
//! `dead_code` allowance.

#![allow(dead_code)]

pub mod browser;
pub mod delta;
pub mod formats;
pub mod http;
pub mod kafka;
pub mod servers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cds_engine::model::{Network, Pseudonymiser};
use cds_engine::silver::SilverRecord;
use serde_json::Value;

#[allow(unused_imports)] // each test binary uses its own part
pub use cds_engine::gold::reference::{comparable, differences};

/// The pseudonymisation key the tests run with.
pub const KEY: &[u8] = b"test-key";

/// Expected KPI documents by id, without `as_of` / `updated_at`.
pub fn recompute(network: &Network, records: &[SilverRecord]) -> BTreeMap<String, Value> {
    cds_engine::gold::reference::recompute(network, &Pseudonymiser::new(KEY), records)
}

/// The `cds` binary with the tests' pseudonym key and quiet logs.
pub fn cds() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_cds"));
    c.env(
        "CDS_PSEUDONYM_KEY",
        std::str::from_utf8(KEY).unwrap_or_default(),
    );
    c.env("CDS_LOG", "warn");
    c
}

/// A name no other test run uses at the same time: `name-PID-NANOS`.
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{name}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

/// A new, empty directory under the system's temporary directory, named after the test
/// binary and `name`.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(&format!(
        "cds-{}-{name}",
        env!("CARGO_CRATE_NAME").replace('_', "-")
    )));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The rule pack shipped with the engine.
pub fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../cds-rules")
}

/// The non-empty lines of `bytes` (JSON lines as `cds simulate` prints them).
pub fn lines(bytes: &[u8]) -> Vec<&[u8]> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect()
}

/// What `cds simulate ARGS` prints (JSON lines), which must have succeeded.
pub fn simulate(args: &[&str]) -> Vec<u8> {
    let out = cds().arg("simulate").args(args).output().expect("simulate");
    ok(out, "cds simulate").stdout
}

/// The output of a command that must have succeeded, with its stderr when it did not.
pub fn ok(out: std::process::Output, what: &str) -> std::process::Output {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The documents of a container as `cds export` prints them, each with its id, in the order
/// printed (an id twice stays twice).
pub fn exported(data: &Path, container: &str) -> Vec<(String, Value)> {
    let out = ok(
        cds()
            .args(["export", container, "--data-dir"])
            .arg(data)
            .output()
            .expect("export"),
        "export",
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("an exported JSON document");
            (v["id"].as_str().unwrap_or_default().to_owned(), v)
        })
        .collect()
}

/// The documents of a container by id, without what depends on when they were written.
pub fn documents(data: &Path, container: &str) -> BTreeMap<String, Value> {
    comparable(exported(data, container))
}

/// The event count of a run's summary line (`processed N events …` on stdout; a process of a
/// cluster prints timely's connection progress before it).
pub fn events_processed(summary: &str) -> u64 {
    summary
        .lines()
        .find(|l| l.starts_with("processed "))
        .unwrap_or_default()
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no event count in {summary:?}"))
}

/// Every number as a double: Cosmos DB keeps JSON numbers as IEEE 754 doubles and gives `50.0`
/// back as `50`; the value is the same.
pub fn as_doubles(v: Value) -> Value {
    match v {
        Value::Number(n) => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Number(n), Value::Number),
        Value::Array(a) => Value::Array(a.into_iter().map(as_doubles).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, as_doubles(v))).collect()),
        other => other,
    }
}
