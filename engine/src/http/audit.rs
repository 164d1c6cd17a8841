//! The access audit: who (token name) read which route with which scope, when. JSON lines in
//! the data directory; never the token itself, never a patient identifier (routes and queries
//! carry only pseudonyms).
//!
//! Bounded: the file rotates at [`AuditLimits::max_bytes`] keeping [`AuditLimits::keep`] old
//! files (`audit.jsonl.1` the newest), and unauthenticated requests, which anyone can send in
//! any number, are written at most [`AuditLimits::unauthenticated_per_second`] a second; the
//! rest are counted in `cds_audit_suppressed_total` and summed up in one entry per second.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use prometheus::IntCounter;
use serde_json::json;

use crate::model::format_time;

/// How large the audit may grow.
#[derive(Debug, Clone, Copy)]
pub struct AuditLimits {
    /// Rotate when the file would exceed this size.
    pub max_bytes: u64,
    /// Rotated files kept (`audit.jsonl.1` … `audit.jsonl.N`).
    pub keep: usize,
    /// Unauthenticated (401) entries written per second at most.
    pub unauthenticated_per_second: u32,
}

impl Default for AuditLimits {
    fn default() -> Self {
        AuditLimits {
            max_bytes: 16 * 1024 * 1024,
            keep: 5,
            unauthenticated_per_second: 10,
        }
    }
}

#[derive(Debug)]
struct Log {
    path: PathBuf,
    file: File,
    size: u64,
    limits: AuditLimits,
    window_start: Instant,
    written_in_window: u32,
    suppressed_in_window: u64,
}

/// Appends audit records.
#[derive(Debug, Clone)]
pub struct Audit {
    out: Option<Arc<Mutex<Log>>>,
    suppressed: IntCounter,
}

impl Audit {
    /// The audit log at `DATA_DIR/audit.jsonl`; `None` path disables it (tests of the router).
    pub fn open(path: Option<&Path>) -> std::io::Result<Self> {
        Self::open_with(path, AuditLimits::default())
    }

    pub fn open_with(path: Option<&Path>, limits: AuditLimits) -> std::io::Result<Self> {
        let out = match path {
            Some(p) => {
                let file = OpenOptions::new().create(true).append(true).open(p)?;
                let size = file.metadata()?.len();
                Some(Arc::new(Mutex::new(Log {
                    path: p.to_path_buf(),
                    file,
                    size,
                    limits,
                    window_start: Instant::now(),
                    written_in_window: 0,
                    suppressed_in_window: 0,
                })))
            }
            None => None,
        };
        let suppressed = IntCounter::new(
            "cds_audit_suppressed_total",
            "Unauthenticated requests not written to the audit log (over the rate limit)",
        )
        .unwrap_or_else(|e| unreachable!("metric: {e}"));
        Ok(Audit { out, suppressed })
    }

    /// The counter of unauthenticated requests left out of the log (for `/metrics`).
    pub fn suppressed_counter(&self) -> IntCounter {
        self.suppressed.clone()
    }

    pub fn record(
        &self,
        who: &str,
        role: &str,
        method: &str,
        route: &str,
        query: &str,
        status: u16,
    ) {
        let Some(out) = &self.out else { return };
        let Ok(mut log) = out.lock() else { return };
        let now = Instant::now();
        if now.duration_since(log.window_start) >= Duration::from_secs(1) {
            log.close_window(now);
        }
        if status == 401 {
            if log.written_in_window >= log.limits.unauthenticated_per_second {
                log.suppressed_in_window += 1;
                self.suppressed.inc();
                return;
            }
            log.written_in_window += 1;
        }
        let line = json!({
            "time": format_time(&Utc::now().fixed_offset()),
            "token": who,
            "role": role,
            "method": method,
            "route": route,
            "query": query,
            "status": status,
        });
        log.write(&line.to_string());
    }
}

impl Log {
    /// Starts a new one-second window, first writing how many entries the last one left out.
    fn close_window(&mut self, now: Instant) {
        if self.suppressed_in_window > 0 {
            let line = json!({
                "time": format_time(&Utc::now().fixed_offset()),
                "token": "-",
                "status": 401,
                "suppressed": self.suppressed_in_window,
                "note": "unauthenticated requests over the rate limit, not written one by one",
            });
            self.write(&line.to_string());
        }
        self.window_start = now;
        self.written_in_window = 0;
        self.suppressed_in_window = 0;
    }

    fn write(&mut self, line: &str) {
        let len = line.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.limits.max_bytes {
            if let Err(e) = self.rotate() {
                tracing::error!(error = %e, "rotating the audit log failed; appending to the current file");
            }
        }
        if writeln!(self.file, "{line}").is_ok() {
            self.size += len;
        }
    }

    /// `audit.jsonl.{k}` becomes `.{k+1}` (the oldest is dropped), the current file `.1`.
    fn rotate(&mut self) -> std::io::Result<()> {
        let name = |k: usize| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{k}"));
            PathBuf::from(p)
        };
        if self.limits.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(name(self.limits.keep));
            for k in (1..self.limits.keep).rev() {
                let from = name(k);
                if from.exists() {
                    std::fs::rename(&from, name(k + 1))?;
                }
            }
            std::fs::rename(&self.path, name(1))?;
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cds-audit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    #[test]
    fn rotates_and_keeps_n_files() {
        let d = dir("rotate");
        let path = d.join("audit.jsonl");
        let limits = AuditLimits {
            max_bytes: 1_000,
            keep: 2,
            unauthenticated_per_second: 10,
        };
        let audit = Audit::open_with(Some(&path), limits).expect("open");
        for _ in 0..100 {
            audit.record("ops", "admin", "GET", "/api/kpis", "", 200);
        }
        for f in ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"] {
            let len = std::fs::metadata(d.join(f)).expect(f).len();
            assert!(len > 0 && len <= 1_000, "{f}: {len}");
        }
        assert!(!d.join("audit.jsonl.3").exists());
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn unauthenticated_entries_are_rate_limited_and_counted() {
        let d = dir("rate");
        let path = d.join("audit.jsonl");
        let audit = Audit::open(Some(&path)).expect("open");
        for _ in 0..1_000 {
            audit.record("-", "-", "GET", "/api/kpis", "", 401);
        }
        audit.record("ops", "admin", "GET", "/api/kpis", "", 200);
        let text = std::fs::read_to_string(&path).expect("read");
        let unauthenticated = text
            .lines()
            .filter(|l| l.contains("\"status\":401") && l.contains("\"route\""))
            .count();
        assert!(unauthenticated <= 30, "{unauthenticated} lines");
        assert_eq!(
            unauthenticated as u64 + audit.suppressed_counter().get(),
            1_000
        );
        assert!(
            text.contains("\"token\":\"ops\""),
            "authenticated entries always"
        );
        let _ = std::fs::remove_dir_all(d);
    }
}
