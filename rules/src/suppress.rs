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

    /// Whether an alert at `now` would be suppressed by the rule's windows of `minutes` (does
    /// not record anything). A window covers `[end - minutes, end)` of event time: a window
    /// opened by a later reading does not suppress an earlier one that arrived late.
    pub fn is_suppressed(
        &self,
        mlmname: &str,
        scope_key: &str,
        band: Severity,
        now: i64,
        minutes: i64,
    ) -> bool {
        let span = minutes.saturating_mul(60);
        self.windows
            .get(&key(mlmname, scope_key))
            .is_some_and(|bands| {
                bands.iter().any(|(b, until)| {
                    *b >= band && now < *until && now >= until.saturating_sub(span)
                })
            })
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
        if self.is_suppressed(mlmname, scope_key, band, now, minutes) {
            return true;
        }
        if minutes > 0 {
            // A late alert (earlier in event time than the window open for its band) never
            // shortens that window.
            let until = now.saturating_add(minutes.saturating_mul(60));
            let end = self
                .windows
                .entry(key(mlmname, scope_key))
                .or_default()
                .entry(band)
                .or_insert(until);
            *end = (*end).max(until);
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

    /// Keeps only the windows of the (mlmname, scope key) pairs `keep` accepts: when the engine
    /// splits the rules over threads, each thread keeps the windows of the keys it owns.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        self.windows.retain(|k, _| {
            let (mlmname, scope_key) = k.split_once('\u{1f}').unwrap_or((k.as_str(), ""));
            keep(mlmname, scope_key)
        });
    }

    /// Adds another thread's windows (for a checkpoint of the whole stage); a band open in
    /// both keeps the later end.
    pub fn merge(&mut self, other: &Suppressor) {
        for (k, bands) in &other.windows {
            let mine = self.windows.entry(k.clone()).or_default();
            for (band, until) in bands {
                let end = mine.entry(*band).or_insert(*until);
                *end = (*end).max(*until);
            }
        }
    }

    /// Number of (rule, key) pairs with an open window.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_covers_its_own_stretch_of_event_time() {
        let mut s = Suppressor::new();
        assert!(!s.check_and_record("news2", "a1", Severity::Warning, 10_000, 60));
        // Inside the hour after it: suppressed.
        assert!(s.check_and_record("news2", "a1", Severity::Warning, 10_000 + 600, 60));
        // A reading from before it that arrived late: not suppressed, and the window it opens
        // does not shorten the later one.
        assert!(!s.check_and_record("news2", "a1", Severity::Warning, 10_000 - 600, 60));
        assert!(s.check_and_record("news2", "a1", Severity::Warning, 10_000 + 3000, 60));
        // After the window: alerts again.
        assert!(!s.check_and_record("news2", "a1", Severity::Warning, 10_000 + 3600, 60));
    }

    #[test]
    fn split_by_key_and_merged_back_is_the_same() {
        let mut whole = Suppressor::new();
        assert!(!whole.check_and_record("news2", "a1", Severity::Warning, 100, 60));
        assert!(!whole.check_and_record("news2", "b2", Severity::Critical, 100, 60));
        assert!(!whole.check_and_record("capacity", "1:ICU", Severity::Warning, 100, 60));
        let mut first = whole.clone();
        first.retain(|_, key| key.starts_with('a'));
        let mut second = whole.clone();
        second.retain(|_, key| !key.starts_with('a'));
        assert_eq!((first.len(), second.len()), (1, 2));
        first.merge(&second);
        assert_eq!(first, whole);
    }
}
