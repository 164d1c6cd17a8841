//! Bearer tokens, roles and scopes.
//!
//! Tokens are never stored in clear: the tokens file holds the hex SHA-256 of each token, and a
//! request's token is hashed and compared in constant time with every entry.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

    /// Whether the token may see patient-level documents (alerts, per-patient stays).
    pub fn sees_patients(&self) -> bool {
        self.role != Role::BedManager
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokensFile {
    #[serde(default)]
    token: Vec<Token>,
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

/// The configured tokens.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    tokens: Vec<Token>,
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

impl Tokens {
    pub fn new(tokens: Vec<Token>) -> Self {
        Tokens { tokens }
    }

    /// Loads a tokens file (TOML, `[[token]]` entries).
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: p.clone(),
            source,
        })?;
        let file: TokensFile = toml::from_str(&text).map_err(|e| AuthError::Invalid {
            path: p.clone(),
            message: e.to_string(),
        })?;
        for t in &file.token {
            if t.sha256.len() != 64 || !t.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(AuthError::Invalid {
                    path: p,
                    message: format!("token {:?}: sha256 must be 64 hex digits", t.name),
                });
            }
        }
        Ok(Tokens { tokens: file.token })
    }

    /// The token a bearer string belongs to.
    pub fn authenticate(&self, bearer: &str) -> Option<&Token> {
        let hash = hash_token(bearer);
        let mut found = None;
        // Compare with every entry, so timing does not tell which one matched.
        for t in &self.tokens {
            if constant_time_eq(t.sha256.to_ascii_lowercase().as_bytes(), hash.as_bytes()) {
                found = Some(t);
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
        })
        .map_err(|e| AuthError::Invalid {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        write_private(&path, text.as_bytes()).map_err(|source| AuthError::Write {
            path: path.display().to_string(),
            source,
        })?;
        Ok((
            Tokens {
                tokens: vec![admin],
            },
            Some(token),
        ))
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
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
