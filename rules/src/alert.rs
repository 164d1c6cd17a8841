//! The alert document (container `alerts`) and its CDS Hooks card.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Severity bands, ordered. They are also the CDS Hooks card `indicator` values.
/// A rule's `action` may say `info`/`warning`/`critical` or, equivalently,
/// `low`/`medium`/`high`. Suppression is per band; a higher band is an escalation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    /// Parses a band name as a rule writes it.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "info" | "low" => Some(Self::Info),
            "warning" | "medium" => Some(Self::Warning),
            "critical" | "high" => Some(Self::Critical),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// `source` of a CDS Hooks card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardSource {
    pub label: String,
    pub url: String,
}

/// An HL7 CDS Hooks card (the subset an alert carries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Card {
    pub uuid: String,
    /// At most 140 characters, as the CDS Hooks specification requires.
    pub summary: String,
    pub detail: String,
    pub indicator: Severity,
    pub source: CardSource,
}

/// One alert document. Its `id` depends only on (mlmname, version, scope key, triggering
/// event id), so replaying the same events writes the same document again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    #[serde(rename = "type")]
    pub doc_type: String,
    pub mlmname: String,
    pub version: String,
    pub title: String,
    pub priority: i64,
    pub urgency: i64,
    pub severity: Severity,
    /// What made the rule fire: the map returned by `data(ctx)`.
    pub evidence: serde_json::Value,
    pub hospital_id: Option<i64>,
    pub department: Option<String>,
    /// Pseudonymised patient key; `None` for department-scope rules (e.g. capacity).
    pub patient: Option<String>,
    pub event_id: String,
    /// Event time of the evaluation (`ctx.now`).
    pub event_time: String,
    pub card: Card,
}

/// Hex SHA-256 of the parts (NUL-separated), truncated to 32 hex digits.
pub(crate) fn alert_id(mlmname: &str, version: &str, key: &str, event_id: &str) -> String {
    let mut h = Sha256::new();
    for (i, part) in [mlmname, version, key, event_id].into_iter().enumerate() {
        if i > 0 {
            h.update([0u8]);
        }
        h.update(part.as_bytes());
    }
    let mut s = hex::encode(h.finalize());
    s.truncate(32);
    s
}

/// The 32-hex id written as a UUID (8-4-4-4-12), so the card uuid is deterministic too; an id
/// that is not 32 hex digits stays as it is.
pub(crate) fn as_uuid(id: &str) -> String {
    id.get(..32)
        .and_then(|hex| uuid::Uuid::try_parse(hex).ok())
        .map_or_else(|| id.to_string(), |u| u.hyphenated().to_string())
}

/// Cuts to at most `max` characters (not bytes), ending with an ellipsis when cut.
pub(crate) fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_id_is_written_as_its_uuid() {
        let id = alert_id("news2", "1.0", "patient-key", "event-1");
        let uuid = as_uuid(&id);
        assert_eq!(uuid.len(), 36);
        assert_eq!(uuid.replace('-', ""), id);
        assert_eq!(
            as_uuid("0123456789abcdef0123456789abcdef"),
            "01234567-89ab-cdef-0123-456789abcdef"
        );
        assert_eq!(as_uuid("short"), "short");
    }
}
