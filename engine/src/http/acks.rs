//! What clinicians did with alerts: accepted, overridden (with a reason code) or snoozed.
//!
//! Acknowledgements live in their own SQLite file beside the store (`DATA_DIR/acks.sqlite`), not
//! inside the alert documents: the engine rewrites an alert document whenever its events are
//! replayed, and a replay must never erase what a clinician decided. Every acknowledgement is
//! kept (a snooze followed by an accept is two rows); the newest is the alert's current state.
//! Rows carry the token name (who), never the bearer token, and the alert's pseudonymous id.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

/// What a clinician did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The alert was right and acted on.
    Accepted,
    /// The alert was seen and deliberately not followed (the reason says why).
    Overridden,
    /// Put aside for some minutes.
    Snoozed,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accepted => "accepted",
            Action::Overridden => "overridden",
            Action::Snoozed => "snoozed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "accepted" => Some(Action::Accepted),
            "overridden" => Some(Action::Overridden),
            "snoozed" => Some(Action::Snoozed),
            _ => None,
        }
    }
}

/// The body of `POST /api/alerts/{id}/ack`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    pub action: Action,
    /// A short code (`not-clinically-relevant`, `already-treated`, ...), not free text: free
    /// text invites patient details into a table that is meant to hold none.
    pub reason: String,
    /// For `snoozed`: how long, 1 to 1440 minutes.
    #[serde(default)]
    pub minutes: Option<u32>,
}

impl AckRequest {
    /// Checks the request; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let reason_ok = !self.reason.is_empty()
            && self.reason.len() <= 64
            && self
                .reason
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !reason_ok {
            return Err(
                "reason must be a code of 1 to 64 letters, digits, '-', '_' or '.'".to_owned(),
            );
        }
        match (self.action, self.minutes) {
            (Action::Snoozed, Some(m)) if (1..=1440).contains(&m) => Ok(()),
            (Action::Snoozed, _) => Err("a snooze needs minutes between 1 and 1440".to_owned()),
            (_, Some(_)) => Err("minutes only go with a snooze".to_owned()),
            (_, None) => Ok(()),
        }
    }
}

/// One stored acknowledgement, as shown with its alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ack {
    pub action: Action,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minutes: Option<u32>,
    /// The token name of the clinician.
    pub by: String,
    /// Wall-clock time of the acknowledgement (RFC 3339, UTC).
    pub at: String,
    /// For a snooze: until when (RFC 3339, UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

impl Ack {
    /// Whether the alert is dealt with at wall-clock time `now`: accepted, overridden, or
    /// snoozed and the snooze has not run out.
    pub fn is_resolved_at(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        match self.action {
            Action::Accepted | Action::Overridden => true,
            Action::Snoozed => self
                .until
                .as_deref()
                .and_then(|u| chrono::DateTime::parse_from_rfc3339(u).ok())
                .is_some_and(|u| u > now),
        }
    }
}

/// How often a rule's alerts were accepted, overridden and snoozed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RuleAcks {
    pub accepted: u64,
    pub overridden: u64,
    pub snoozed: u64,
}

/// Why the acknowledgement store failed.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error("acknowledgement store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot create {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("acknowledgement store is unavailable (a writer panicked)")]
    Poisoned,
}

/// The acknowledgement store; cheap to clone, safe to share between requests.
#[derive(Debug, Clone)]
pub struct AckStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS acks (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        alert_id TEXT NOT NULL,
        mlmname TEXT NOT NULL,
        action TEXT NOT NULL,
        reason TEXT NOT NULL,
        minutes INTEGER,
        by TEXT NOT NULL,
        at TEXT NOT NULL,
        until TEXT
    );
    CREATE INDEX IF NOT EXISTS acks_alert ON acks (alert_id, seq);
";

impl AckStore {
    /// Opens (creating if needed) `DIR/acks.sqlite`.
    pub fn open(data_dir: &Path) -> Result<Self, AckError> {
        std::fs::create_dir_all(data_dir).map_err(|source| AckError::Io {
            path: data_dir.display().to_string(),
            source,
        })?;
        let path = data_dir.join("acks.sqlite");
        let conn = Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(AckStore {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores an acknowledgement of `alert_id` (an alert of rule `mlmname`) by `by`, made at
    /// wall-clock time `now`, and returns it as stored.
    pub fn record(
        &self,
        alert_id: &str,
        mlmname: &str,
        request: &AckRequest,
        by: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Ack, AckError> {
        let at = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let until = request
            .minutes
            .filter(|_| request.action == Action::Snoozed)
            .map(|m| {
                (now + chrono::Duration::minutes(i64::from(m)))
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            });
        let conn = self.conn.lock().map_err(|_| AckError::Poisoned)?;
        conn.execute(
            "INSERT INTO acks (alert_id, mlmname, action, reason, minutes, by, at, until)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                alert_id,
                mlmname,
                request.action.as_str(),
                request.reason,
                request.minutes,
                by,
                at,
                until
            ],
        )?;
        Ok(Ack {
            action: request.action,
            reason: request.reason.clone(),
            minutes: request.minutes,
            by: by.to_owned(),
            at,
            until,
        })
    }

    /// The newest acknowledgement of every acknowledged alert.
    pub fn latest(&self) -> Result<BTreeMap<String, Ack>, AckError> {
        let conn = self.conn.lock().map_err(|_| AckError::Poisoned)?;
        let mut stmt = conn.prepare(
            "SELECT alert_id, action, reason, minutes, by, at, until FROM acks ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                Ack {
                    action: Action::Accepted,
                    reason: row.get(2)?,
                    minutes: row.get(3)?,
                    by: row.get(4)?,
                    at: row.get(5)?,
                    until: row.get(6)?,
                },
            ))
        })?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (id, action, mut ack) = row?;
            // Rows are only written by `record`; an unknown action cannot occur, skip it if so.
            if let Some(action) = Action::parse(&action) {
                ack.action = action;
                out.insert(id, ack);
            }
        }
        Ok(out)
    }

    /// Per rule: how many alerts were last accepted, overridden and snoozed, over the alerts
    /// `counted` says to count (the caller's scope).
    pub fn by_rule(
        &self,
        counted: impl Fn(&str) -> bool,
    ) -> Result<BTreeMap<String, RuleAcks>, AckError> {
        let latest = self.latest()?;
        let conn = self.conn.lock().map_err(|_| AckError::Poisoned)?;
        let mut stmt = conn.prepare("SELECT DISTINCT alert_id, mlmname FROM acks")?;
        let rows = stmt.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?;
        let mut out: BTreeMap<String, RuleAcks> = BTreeMap::new();
        for row in rows {
            let (id, mlmname) = row?;
            let Some(ack) = latest.get(&id).filter(|_| counted(&id)) else {
                continue;
            };
            let entry = out.entry(mlmname).or_default();
            match ack.action {
                Action::Accepted => entry.accepted += 1,
                Action::Overridden => entry.overridden += 1,
                Action::Snoozed => entry.snoozed += 1,
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(action: Action, reason: &str, minutes: Option<u32>) -> AckRequest {
        AckRequest {
            action,
            reason: reason.to_owned(),
            minutes,
        }
    }

    #[test]
    fn validates_reason_codes_and_snooze_minutes() {
        assert!(request(Action::Accepted, "treated", None)
            .validate()
            .is_ok());
        assert!(request(Action::Overridden, "", None).validate().is_err());
        assert!(request(Action::Overridden, "has spaces", None)
            .validate()
            .is_err());
        assert!(request(Action::Snoozed, "busy", None).validate().is_err());
        assert!(request(Action::Snoozed, "busy", Some(0))
            .validate()
            .is_err());
        assert!(request(Action::Snoozed, "busy", Some(30))
            .validate()
            .is_ok());
        assert!(request(Action::Accepted, "ok", Some(30))
            .validate()
            .is_err());
    }

    #[test]
    fn the_newest_acknowledgement_counts() {
        let dir = std::env::temp_dir().join(format!("cds-acks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = AckStore::open(&dir).expect("open");
        let now = chrono::Utc::now();
        let snooze = store
            .record(
                "a1",
                "news2",
                &request(Action::Snoozed, "busy", Some(15)),
                "dr",
                now,
            )
            .expect("snooze");
        assert!(snooze.is_resolved_at(now), "snoozed for now");
        assert!(
            !snooze.is_resolved_at(now + chrono::Duration::minutes(16)),
            "back once the snooze runs out"
        );
        store
            .record(
                "a1",
                "news2",
                &request(Action::Accepted, "treated", None),
                "dr",
                now,
            )
            .expect("accept");
        store
            .record(
                "a2",
                "news2",
                &request(Action::Overridden, "known", None),
                "dr",
                now,
            )
            .expect("override");
        let latest = store.latest().expect("latest");
        assert_eq!(latest["a1"].action, Action::Accepted);
        let stats = store.by_rule(|_| true).expect("stats");
        assert_eq!(
            stats["news2"],
            RuleAcks {
                accepted: 1,
                overridden: 1,
                snoozed: 0
            }
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
