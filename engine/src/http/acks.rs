//! What clinicians did with alerts: accepted, overridden (with a reason code) or snoozed.
//!
//! Acknowledgements are kept apart from the alert documents: the engine rewrites an alert
//! document whenever its events are replayed, and a replay must never erase what a clinician
//! decided. They go where the configured sink keeps them, so that every process of a
//! deployment agrees: with `--sink sqlite` their own SQLite file beside the store
//! (`DATA_DIR/acks.sqlite`), with `--sink cosmos` the `acks` container (partition key
//! `/hospital_id`). Every acknowledgement is kept (a snooze followed by an accept is two);
//! the newest is the alert's current state (in Cosmos DB: by the clock of the process that
//! recorded it, so pods' clocks should agree, as NTP keeps them). Each process reads only what
//! is new since its last read (in Cosmos DB, the last minute again). Rows carry the token name
//! (who), never the bearer token, and the alert's pseudonymous id.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sink::cosmos::CosmosAcks;

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

/// One stored acknowledgement, as shown with its alert (and as a Cosmos DB item carries it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub action: Action,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minutes: Option<u32>,
    /// The token name of the clinician.
    pub by: String,
    /// Wall-clock time of the acknowledgement (RFC 3339, UTC).
    pub at: String,
    /// For a snooze: until when (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// One acknowledgement as the store keeps it: the alert it is about, the alert's rule and
/// hospital, and what was done.
#[derive(Debug, Clone, PartialEq)]
pub struct Acknowledged {
    pub mlmname: String,
    pub ack: Ack,
    /// Which of two acknowledgements of one alert is the newer: the SQLite row number, or the
    /// time it was made and its id (Cosmos DB).
    order: (i64, String),
}

/// The newest acknowledgement of each alert, by alert id.
pub type Latest = BTreeMap<String, Acknowledged>;

/// Per rule: how many alerts were last accepted, overridden and snoozed, over the alerts
/// `counted` says to count (the caller's scope).
pub fn by_rule(latest: &Latest, counted: impl Fn(&str) -> bool) -> BTreeMap<String, RuleAcks> {
    let mut out: BTreeMap<String, RuleAcks> = BTreeMap::new();
    for (id, a) in latest {
        if !counted(id) {
            continue;
        }
        let entry = out.entry(a.mlmname.clone()).or_default();
        match a.ack.action {
            Action::Accepted => entry.accepted += 1,
            Action::Overridden => entry.overridden += 1,
            Action::Snoozed => entry.snoozed += 1,
        }
    }
    out
}

/// Why the acknowledgement store failed.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error("acknowledgement store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("acknowledgement store (Cosmos DB): {0}")]
    Cosmos(#[from] azure_data_cosmos::CosmosError),
    #[error("cannot create {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("acknowledgement store is unavailable (a writer panicked)")]
    Poisoned,
    #[error("the acknowledgement store did not answer in time")]
    Timeout,
}

/// Where acknowledgements are kept: the configured sink's place for them, so that every
/// process of a deployment records into and reads from the same one. Cheap to clone, safe to
/// share between requests.
#[derive(Debug, Clone)]
pub struct AckStore {
    backend: Backend,
    cache: Arc<Mutex<Cache>>,
}

#[derive(Debug, Clone)]
enum Backend {
    /// `DATA_DIR/acks.sqlite` (`--sink sqlite`), beside the store of the one engine that may
    /// run on a data directory.
    Sqlite(Arc<Mutex<Connection>>),
    /// The `acks` container (`--sink cosmos`).
    Cosmos(Arc<CosmosAcks>),
}

/// What this process has read of the store: the newest acknowledgement of each alert and how
/// far it has read (a row number, or the server's stamp in seconds).
#[derive(Debug, Default)]
struct Cache {
    latest: Arc<Latest>,
    mark: i64,
    refreshed: Option<Instant>,
}

impl Cache {
    fn merge(&mut self, alert_id: String, entry: Acknowledged) {
        if self
            .latest
            .get(&alert_id)
            .is_none_or(|old| old.order < entry.order)
        {
            Arc::make_mut(&mut self.latest).insert(alert_id, entry);
        }
    }
}

/// How often the shared Cosmos DB container is read again for other processes' acknowledgements.
const REMOTE_REFRESH: Duration = Duration::from_millis(500);

/// How far back each read of the Cosmos DB container reaches before the newest stamp it saw: a
/// query across partitions may return one partition's newer item before another partition shows
/// an older one, so a read takes the last minute again (acknowledgements are few; merging one
/// twice changes nothing).
const REMOTE_OVERLAP_SECS: i64 = 60;

/// The longest wait for one read of the Cosmos DB container.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(5);

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

/// An acknowledgement item of the Cosmos DB container.
#[derive(Debug, Serialize, Deserialize)]
struct AckItem {
    id: String,
    hospital_id: i64,
    alert_id: String,
    mlmname: String,
    #[serde(flatten)]
    ack: Ack,
    /// When it was made (microseconds since the epoch): the newer of two wins.
    at_micros: i64,
}

impl AckStore {
    /// Opens (creating if needed) `DIR/acks.sqlite`: the store of `--sink sqlite`.
    pub fn open(data_dir: &Path) -> Result<Self, AckError> {
        std::fs::create_dir_all(data_dir).map_err(|source| AckError::Io {
            path: data_dir.display().to_string(),
            source,
        })?;
        let conn = Connection::open(data_dir.join("acks.sqlite"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self::with(Backend::Sqlite(Arc::new(Mutex::new(conn)))))
    }

    /// The `acks` container of Cosmos DB: the store of `--sink cosmos`.
    pub fn cosmos(acks: CosmosAcks) -> Self {
        Self::with(Backend::Cosmos(Arc::new(acks)))
    }

    fn with(backend: Backend) -> Self {
        AckStore {
            backend,
            cache: Arc::default(),
        }
    }

    /// Stores an acknowledgement of `alert` (its id, rule and hospital) by `by`, made at
    /// wall-clock time `now`, and returns it as stored.
    pub async fn record(
        &self,
        alert: &Value,
        request: &AckRequest,
        by: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Ack, AckError> {
        let alert_id = alert["id"].as_str().unwrap_or_default().to_owned();
        let mlmname = alert["mlmname"].as_str().unwrap_or("unknown").to_owned();
        let at = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let until = request
            .minutes
            .filter(|_| request.action == Action::Snoozed)
            .map(|m| {
                (now + chrono::Duration::minutes(i64::from(m)))
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            });
        let ack = Ack {
            action: request.action,
            reason: request.reason.clone(),
            minutes: request.minutes,
            by: by.to_owned(),
            at,
            until,
        };
        match &self.backend {
            Backend::Sqlite(conn) => {
                let (conn, row) = (conn.clone(), (alert_id, mlmname, ack.clone()));
                tokio::task::spawn_blocking(move || {
                    let (alert_id, mlmname, ack) = row;
                    let conn = conn.lock().map_err(|_| AckError::Poisoned)?;
                    conn.execute(
                        "INSERT INTO acks (alert_id, mlmname, action, reason, minutes, by, at, until)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                        params![
                            alert_id,
                            mlmname,
                            ack.action.as_str(),
                            ack.reason,
                            ack.minutes,
                            ack.by,
                            ack.at,
                            ack.until
                        ],
                    )?;
                    Ok::<_, AckError>(())
                })
                .await
                .map_err(|_| AckError::Poisoned)??;
                self.refresh(true).await?;
            }
            Backend::Cosmos(acks) => {
                let hospital_id = alert["hospital_id"].as_i64().unwrap_or(0);
                let at_micros = now.timestamp_micros();
                let item = AckItem {
                    id: format!("{alert_id}.{at_micros}.{}", random_suffix()),
                    hospital_id,
                    alert_id: alert_id.clone(),
                    mlmname: mlmname.clone(),
                    ack: ack.clone(),
                    at_micros,
                };
                acks.insert(hospital_id, &item.id, &item).await?;
                let mut cache = self.cache.lock().map_err(|_| AckError::Poisoned)?;
                cache.merge(
                    alert_id,
                    Acknowledged {
                        mlmname,
                        ack: ack.clone(),
                        order: (at_micros, item.id),
                    },
                );
            }
        }
        Ok(ack)
    }

    /// The newest acknowledgement of every acknowledged alert, this process's and every other's
    /// (the shared Cosmos DB container is read again at most every half second). When the store
    /// cannot be read, what was read before is served (the failure is logged): alerts with
    /// acknowledgements a moment old are better than no alerts.
    pub async fn latest(&self) -> Result<Arc<Latest>, AckError> {
        if let Err(e) = self.refresh(false).await {
            tracing::warn!(error = %e, "reading new acknowledgements failed; serving those read before");
        }
        let cache = self.cache.lock().map_err(|_| AckError::Poisoned)?;
        Ok(cache.latest.clone())
    }

    /// Reads what was recorded since the last read (`now`: whatever the time since).
    async fn refresh(&self, now: bool) -> Result<(), AckError> {
        let mark = {
            let mut cache = self.cache.lock().map_err(|_| AckError::Poisoned)?;
            let remote = matches!(self.backend, Backend::Cosmos(_));
            if remote
                && !now
                && cache
                    .refreshed
                    .is_some_and(|t| t.elapsed() < REMOTE_REFRESH)
            {
                return Ok(());
            }
            // Taken before the read: concurrent requests within the interval use the cache
            // instead of reading too, and an outage brings no storm of queries.
            cache.refreshed = Some(Instant::now());
            cache.mark
        };
        let (read, mark) = match &self.backend {
            Backend::Sqlite(conn) => {
                let conn = conn.clone();
                tokio::task::spawn_blocking(move || rows_after(&conn, mark))
                    .await
                    .map_err(|_| AckError::Poisoned)??
            }
            Backend::Cosmos(acks) => {
                let since = mark.saturating_sub(REMOTE_OVERLAP_SECS);
                let items = tokio::time::timeout(REMOTE_TIMEOUT, acks.stamped_since(since))
                    .await
                    .map_err(|_| AckError::Timeout)??;
                let newest = items.iter().map(|(t, _)| *t).max().unwrap_or(mark);
                let read = items
                    .into_iter()
                    .filter_map(|(_, item)| serde_json::from_value::<AckItem>(item).ok())
                    .map(|i| {
                        let order = (i.at_micros, i.id);
                        let entry = Acknowledged {
                            mlmname: i.mlmname,
                            ack: i.ack,
                            order,
                        };
                        (i.alert_id, entry)
                    })
                    .collect();
                (read, newest)
            }
        };
        let mut cache = self.cache.lock().map_err(|_| AckError::Poisoned)?;
        for (alert_id, entry) in read {
            cache.merge(alert_id, entry);
        }
        cache.mark = cache.mark.max(mark);
        Ok(())
    }
}

/// The SQLite rows after row `mark`, and the last row read.
#[allow(clippy::type_complexity)]
fn rows_after(
    conn: &Mutex<Connection>,
    mark: i64,
) -> Result<(Vec<(String, Acknowledged)>, i64), AckError> {
    let conn = conn.lock().map_err(|_| AckError::Poisoned)?;
    let mut stmt = conn.prepare_cached(
        "SELECT seq, alert_id, mlmname, action, reason, minutes, by, at, until FROM acks
         WHERE seq > ?1 ORDER BY seq",
    )?;
    let rows = stmt.query_map([mark], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, String>(3)?,
            Ack {
                action: Action::Accepted,
                reason: row.get(4)?,
                minutes: row.get(5)?,
                by: row.get(6)?,
                at: row.get(7)?,
                until: row.get(8)?,
            },
        ))
    })?;
    let (mut out, mut last) = (Vec::new(), mark);
    for row in rows {
        let (seq, alert_id, mlmname, action, mut ack) = row?;
        last = last.max(seq);
        // Rows are only written by `record`; an unknown action cannot occur, skip it if so.
        if let Some(action) = Action::parse(&action) {
            ack.action = action;
            let order = (seq, String::new());
            out.push((
                alert_id,
                Acknowledged {
                    mlmname,
                    ack,
                    order,
                },
            ));
        }
    }
    Ok((out, last))
}

/// Eight random hex digits: two acknowledgements of one alert in the same microsecond by two
/// processes still get two items.
fn random_suffix() -> String {
    let mut bytes = [0u8; 4];
    if getrandom::fill(&mut bytes).is_err() {
        return "00000000".to_owned();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
    fn the_newest_acknowledgement_counts_in_every_process() {
        let dir = std::env::temp_dir().join(format!("cds-acks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let store = AckStore::open(&dir).expect("open");
            // A second process on the same data directory.
            let other = AckStore::open(&dir).expect("open again");
            let alert =
                |id: &str| serde_json::json!({"id": id, "mlmname": "news2", "hospital_id": 1});
            let now = chrono::Utc::now();
            let snooze = store
                .record(
                    &alert("a1"),
                    &request(Action::Snoozed, "busy", Some(15)),
                    "dr",
                    now,
                )
                .await
                .expect("snooze");
            assert!(snooze.is_resolved_at(now), "snoozed for now");
            assert!(
                !snooze.is_resolved_at(now + chrono::Duration::minutes(16)),
                "back once the snooze runs out"
            );
            other
                .record(
                    &alert("a1"),
                    &request(Action::Accepted, "treated", None),
                    "dr",
                    now,
                )
                .await
                .expect("accept");
            store
                .record(
                    &alert("a2"),
                    &request(Action::Overridden, "known", None),
                    "dr",
                    now,
                )
                .await
                .expect("override");
            for reader in [&store, &other] {
                let latest = reader.latest().await.expect("latest");
                assert_eq!(latest["a1"].ack.action, Action::Accepted);
                assert_eq!(
                    by_rule(&latest, |_| true)["news2"],
                    RuleAcks {
                        accepted: 1,
                        overridden: 1,
                        snoozed: 0
                    }
                );
            }
        });
        let _ = std::fs::remove_dir_all(dir);
    }
}
