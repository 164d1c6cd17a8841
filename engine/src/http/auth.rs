//! Bearer tokens, roles and scopes.
//!
//! Tokens are never stored in clear: the tokens file holds the hex SHA-256 of each token, and a
//! request's token is hashed and compared in constant time with every entry.
//!
//! The file is read again when it changes ([`Tokens::watch`]), so removing a line revokes a
//! token within seconds, without a restart; a file that does not parse keeps the tokens in
//! force. The dashboard trades its `?token=` for a session cookie ([`Sessions`]) that holds a
//! random id, never the token, and is checked against the current tokens on every request.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::jwt::{HooksClient, Refusal, SeenIds};

/// The environment variable naming the tokens file.
pub const TOKENS_FILE_ENV: &str = "CDS_TOKENS_FILE";

/// What a token may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Alerts and KPIs of their departments.
    Clinician,
    /// Occupancy and other non-patient KPIs of their hospitals; no patient-level data.
    BedManager,
    /// Everything.
    Admin,
}

/// One entry of the tokens file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    pub name: String,
    /// Hex SHA-256 of the bearer token.
    pub sha256: String,
    pub role: Role,
    /// Hospital ids in scope (empty for an admin means all).
    #[serde(default)]
    pub hospitals: Vec<i64>,
    /// Canonical department names in scope; empty means every department of the hospitals.
    #[serde(default)]
    pub departments: Vec<String>,
}

impl Token {
    /// Whether a document of this hospital and department is in the token's scope.
    pub fn sees(&self, hospital: i64, department: Option<&str>) -> bool {
        if self.role == Role::Admin {
            return true;
        }
        let hospital_ok = self.hospitals.contains(&hospital);
        let department_ok = self.departments.is_empty()
            || department.is_none_or(|d| self.departments.iter().any(|x| x == d));
        hospital_ok && department_ok
    }

    /// Whether the token reads whole hospitals (not some of their departments).
    pub fn sees_every_department(&self) -> bool {
        self.role == Role::Admin || self.departments.is_empty()
    }

    /// Whether the token may see patient-level documents (alerts, per-patient stays).
    pub fn sees_patients(&self) -> bool {
        self.role != Role::BedManager
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokensFile {
    #[serde(default)]
    token: Vec<Token>,
    /// EHRs that authenticate to CDS Hooks with signed JWTs ([`super::jwt`]).
    #[serde(default, skip_serializing)]
    hooks_client: Vec<super::jwt::HooksClientEntry>,
}

/// What a tokens file holds, loaded.
#[derive(Debug, Default)]
struct Loaded {
    tokens: Vec<Token>,
    hooks_clients: Vec<HooksClient>,
}

/// Why tokens could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the tokens file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the tokens file {path} is not valid: {message}")]
    Invalid { path: String, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("no randomness for a new token: {0}")]
    Random(String),
}

/// The configured tokens, and the file they come from (read again when it changes).
#[derive(Debug, Default)]
pub struct Tokens {
    tokens: RwLock<Arc<Loaded>>,
    /// The CDS Hooks client tokens' ids seen, so that none is used twice.
    seen: SeenIds,
    /// The file and the text last loaded from it.
    source: Option<(PathBuf, Mutex<String>)>,
}

/// Hex SHA-256 of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Equal in time that does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses the text of a tokens file (`path` names it and places its clients' key files).
fn parse(path: &Path, text: &str) -> Result<Loaded, AuthError> {
    let p = path.display().to_string();
    let invalid = |message: String| AuthError::Invalid {
        path: p.clone(),
        message,
    };
    let file: TokensFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    for t in &file.token {
        if t.sha256.len() != 64 || !t.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(invalid(format!(
                "token {:?}: sha256 must be 64 hex digits",
                t.name
            )));
        }
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let hooks_clients = file
        .hooks_client
        .into_iter()
        .map(|entry| HooksClient::load(entry, dir))
        .collect::<Result<_, _>>()
        .map_err(invalid)?;
    Ok(Loaded {
        tokens: file.token,
        hooks_clients,
    })
}

impl Tokens {
    pub fn new(tokens: Vec<Token>) -> Self {
        Tokens {
            tokens: RwLock::new(Arc::new(Loaded {
                tokens,
                hooks_clients: Vec::new(),
            })),
            seen: SeenIds::default(),
            source: None,
        }
    }

    /// Loads a tokens file (TOML, `[[token]]` entries).
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let tokens = parse(path, &text)?;
        Ok(Tokens {
            tokens: RwLock::new(Arc::new(tokens)),
            seen: SeenIds::default(),
            source: Some((path.to_path_buf(), Mutex::new(text))),
        })
    }

    fn current(&self) -> Arc<Loaded> {
        match self.tokens.read() {
            Ok(t) => t.clone(),
            // A panic while swapping cannot leave a half-written list: the Arc is replaced whole.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reads the file again if its text changed. `Ok(true)`: new tokens in force; an error
    /// keeps the previous tokens (a half-saved or mistyped file must not lock everyone out,
    /// nor let anyone in).
    pub fn reload(&self) -> Result<bool, AuthError> {
        let Some((path, last)) = &self.source else {
            return Ok(false);
        };
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
        if *last == text {
            return Ok(false);
        }
        let tokens = parse(path, &text)?;
        *last = text;
        let mut current = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        *current = Arc::new(tokens);
        Ok(true)
    }

    /// Polls the tokens file every `every` until the runtime stops, so that a revoked token
    /// stops working without a restart. A failed reload is logged once per distinct failure
    /// (a fixed line: the file may hold anything).
    pub fn watch(tokens: &Arc<Self>, every: Duration) {
        if tokens.source.is_none() {
            return;
        }
        let me = Arc::downgrade(tokens);
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::time::sleep(every).await;
                let Some(tokens) = me.upgrade() else { return };
                match tokens.reload() {
                    Ok(changed) => {
                        if changed {
                            tracing::info!("the tokens file changed; its tokens are in force");
                        }
                        failing = false;
                    }
                    Err(_) if failing => {}
                    Err(_) => {
                        tracing::error!(
                            "the tokens file changed but cannot be read or parsed; the previous tokens stay in force"
                        );
                        failing = true;
                    }
                }
            }
        });
    }

    /// The token a bearer string belongs to.
    pub fn authenticate(&self, bearer: &str) -> Option<Token> {
        self.by_hash(&hash_token(bearer))
    }

    /// The token of a CDS Hooks client's signed JWT, for a call to `path` at `now` (seconds
    /// since the epoch); `Err` says why it was refused.
    pub fn hooks_client(&self, jwt: &str, path: &str, now: i64) -> Result<Token, Refusal> {
        super::jwt::verify(jwt, &self.current().hooks_clients, path, now, &self.seen)
    }

    /// The token of a hex SHA-256 (a session remembers the hash, never the token).
    pub fn by_hash(&self, hash: &str) -> Option<Token> {
        let mut found = None;
        // Compare with every entry, so timing does not tell which one matched.
        for t in &self.current().tokens {
            if constant_time_eq(t.sha256.to_ascii_lowercase().as_bytes(), hash.as_bytes()) {
                found = Some(t.clone());
            }
        }
        found
    }

    /// The embedded default's tokens: `DATA_DIR/tokens.toml`, created on first start with one
    /// admin token. Returns the tokens and, only when just created, the clear token to print.
    pub fn bootstrap(data_dir: &Path) -> Result<(Self, Option<String>), AuthError> {
        let path = data_dir.join("tokens.toml");
        if path.exists() {
            return Ok((Self::load(&path)?, None));
        }
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| AuthError::Random(e.to_string()))?;
        let token = hex::encode(raw);
        let admin = Token {
            name: "admin".into(),
            sha256: hash_token(&token),
            role: Role::Admin,
            hospitals: Vec::new(),
            departments: Vec::new(),
        };
        let text = toml::to_string(&TokensFile {
            token: vec![admin.clone()],
            hooks_client: Vec::new(),
        })
        .map_err(|e| AuthError::Invalid {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        crate::support::private::write_new_private(&path, text.as_bytes()).map_err(|source| {
            AuthError::Write {
                path: path.display().to_string(),
                source,
            }
        })?;
        Ok((
            Tokens {
                tokens: RwLock::new(Arc::new(Loaded {
                    tokens: vec![admin],
                    hooks_clients: Vec::new(),
                })),
                seen: SeenIds::default(),
                source: Some((path, Mutex::new(text))),
            },
            Some(token),
        ))
    }
}

/// The name of the dashboard's session cookie.
pub const SESSION_COOKIE: &str = "cds_session";

/// How long a dashboard session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// At most this many sessions are kept; the oldest goes first (bounded memory whatever the
/// number of page loads).
const MAX_SESSIONS: usize = 10_000;

/// Dashboard sessions: a random id (the cookie) mapped to the hash of the token that opened
/// it. The token itself is never kept, and each request looks the hash up in the current
/// tokens, so revoking the token ends its sessions.
#[derive(Debug, Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<String, (String, Instant)>>>,
}

impl Sessions {
    /// A new session for the token of hash `sha256`; returns the cookie value.
    pub fn open(&self, sha256: &str) -> Result<String, AuthError> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| AuthError::Random(e.to_string()))?;
        let id = hex::encode(raw);
        let now = Instant::now();
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (_, expires)| *expires > now);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (_, expires))| *expires)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(id.clone(), (sha256.to_owned(), now + SESSION_TTL));
        Ok(id)
    }

    /// The token hash of a live session.
    pub fn hash_of(&self, id: &str) -> Option<String> {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(hash, _)| hash.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(role: Role, hospitals: Vec<i64>, departments: Vec<&str>) -> Token {
        Token {
            name: "t".into(),
            sha256: hash_token("secret"),
            role,
            hospitals,
            departments: departments.into_iter().map(str::to_owned).collect(),
        }
    }

    #[test]
    fn scopes() {
        let c = token(Role::Clinician, vec![3], vec!["ICU"]);
        assert!(c.sees(3, Some("ICU")));
        assert!(!c.sees(3, Some("Surgery")));
        assert!(!c.sees(2, Some("ICU")));
        let b = token(Role::BedManager, vec![3], vec![]);
        assert!(b.sees(3, Some("Surgery")) && !b.sees_patients());
        assert!(token(Role::Admin, vec![], vec![]).sees(7, None));
    }

    #[test]
    fn authenticates_by_hash_only() {
        let tokens = Tokens::new(vec![token(Role::Admin, vec![], vec![])]);
        assert!(tokens.authenticate("secret").is_some());
        assert!(tokens.authenticate("secreT").is_none());
        assert!(tokens.authenticate("").is_none());
    }

    #[test]
    fn reload_revokes_and_a_broken_file_keeps_the_old_tokens() {
        let dir = std::env::temp_dir().join(format!("cds-auth-reload-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("tokens.toml");
        let entry = |name: &str, secret: &str| {
            format!(
                "[[token]]\nname = \"{name}\"\nsha256 = \"{}\"\nrole = \"admin\"\n",
                hash_token(secret)
            )
        };
        std::fs::write(&path, format!("{}{}", entry("a", "one"), entry("b", "two")))
            .expect("write");
        let tokens = Tokens::load(&path).expect("load");
        assert!(tokens.authenticate("two").is_some());
        assert!(!tokens.reload().expect("unchanged"));
        std::fs::write(&path, entry("a", "one")).expect("write");
        assert!(tokens.reload().expect("changed"));
        assert!(tokens.authenticate("two").is_none(), "revoked");
        assert!(tokens.authenticate("one").is_some());
        std::fs::write(&path, "[[token]\nname = ").expect("write");
        assert!(tokens.reload().is_err());
        assert!(tokens.authenticate("one").is_some(), "old tokens stay");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn sessions_hold_the_hash_only() {
        let sessions = Sessions::default();
        let id = sessions.open(&hash_token("secret")).expect("open");
        assert_eq!(id.len(), 64);
        assert!(!id.contains("secret"));
        assert_eq!(sessions.hash_of(&id), Some(hash_token("secret")));
        assert_eq!(sessions.hash_of("nope"), None);
    }

    #[test]
    fn bootstrap_stores_only_the_hash() {
        let dir = std::env::temp_dir().join(format!("cds-auth-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let (tokens, clear) = Tokens::bootstrap(&dir).expect("bootstrap");
        let clear = clear.expect("first start prints the token");
        assert!(tokens.authenticate(&clear).is_some());
        let file = std::fs::read_to_string(dir.join("tokens.toml")).expect("file");
        assert!(!file.contains(&clear) && file.contains(&hash_token(&clear)));
        let (again, none) = Tokens::bootstrap(&dir).expect("second start");
        assert!(none.is_none() && again.authenticate(&clear).is_some());
        let _ = std::fs::remove_dir_all(dir);
    }
}
