//! Alert suppression in event time, serializable so it survives a restart (checkpointed).
//!
//! Key: (mlmname, scope key (patient key, or `hospital:department` for department rules)).
//! Per key we keep, for each severity band, until when (epoch seconds) an alert of that band
//! suppresses further ones. A new alert is suppressed while an alert of the same **or a higher**
//! band is still inside its window (a de-escalation is not news); a higher band than every
//! open window (escalation) alerts at once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::alert::Severity;

/// Open suppression windows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Suppressor {
    /// `"mlmname\u{1f}key"` -> band -> window end (epoch seconds).
    windows: BTreeMap<String, BTreeMap<Severity, i64>>,
}

fn key(mlmname: &str, scope_key: &str) -> String {
    format!("{mlmname}\u{1f}{scope_key}")
}

impl Suppressor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether an alert at `now` would be suppressed (does not record anything).
    pub fn is_suppressed(&self, mlmname: &str, scope_key: &str, band: Severity, now: i64) -> bool {
        self.windows
            .get(&key(mlmname, scope_key))
            .is_some_and(|bands| bands.iter().any(|(b, until)| *b >= band && now < *until))
    }

    /// Decides and records: returns `true` if the alert must be suppressed, otherwise opens a
    /// window of `minutes` for this band and returns `false`.
    pub fn check_and_record(
        &mut self,
        mlmname: &str,
        scope_key: &str,
        band: Severity,
        now: i64,
        minutes: i64,
    ) -> bool {
        if self.is_suppressed(mlmname, scope_key, band, now) {
            return true;
        }
        if minutes > 0 {
            self.windows
                .entry(key(mlmname, scope_key))
                .or_default()
                .insert(band, now.saturating_add(minutes.saturating_mul(60)));
        }
        false
    }

    /// Drops windows that ended before the event-time `watermark` (keeps state small).
    pub fn prune(&mut self, watermark: i64) {
        self.windows.retain(|_, bands| {
            bands.retain(|_, until| *until > watermark);
            !bands.is_empty()
        });
    }

    /// Number of (rule, key) pairs with an open window.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}
