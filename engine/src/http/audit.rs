//! The access audit: who (token name) read which route with which scope, when. JSON lines in
//! the data directory; never the token itself, never a patient identifier (routes and queries
//! carry only pseudonyms).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use serde_json::json;

use crate::model::format_time;

/// Appends audit records.
#[derive(Debug, Clone)]
pub struct Audit {
    out: Option<Arc<Mutex<File>>>,
}

impl Audit {
    /// The audit log at `DATA_DIR/audit.jsonl`; `None` path disables it (tests of the router).
    pub fn open(path: Option<&Path>) -> std::io::Result<Self> {
        let out = match path {
            Some(p) => Some(Arc::new(Mutex::new(
                OpenOptions::new().create(true).append(true).open(p)?,
            ))),
            None => None,
        };
        Ok(Audit { out })
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
        let line = json!({
            "time": format_time(&Utc::now().fixed_offset()),
            "token": who,
            "role": role,
            "method": method,
            "route": route,
            "query": query,
            "status": status,
        });
        if let Ok(mut f) = out.lock() {
            let _ = writeln!(f, "{line}");
        }
    }
}
