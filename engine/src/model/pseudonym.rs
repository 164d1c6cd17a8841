//! Pseudonymisation of patient identifiers.
//!
//! Inside the engine a patient is a `u64` key: the first 8 bytes of HMAC-SHA256(key, patient_id).
//! That key is what the dataflow joins on (a small integer, not a string) and, written as 16 hex
//! digits, it is the only patient reference that leaves the engine. Without the secret key the
//! mapping cannot be reversed or recomputed from a guessed identifier.

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The environment variable that holds the pseudonymisation key.
pub const PSEUDONYM_KEY_ENV: &str = "CDS_PSEUDONYM_KEY";

/// Why no key could be had.
#[derive(Debug, thiserror::Error)]
pub enum PseudonymError {
    #[error("cannot read or create the pseudonym key file {path}: {source}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the pseudonym key file {path} is readable by other users (mode {mode:03o}); \
         make it private with `chmod 600 {path}`"
    )]
    KeyFileShared { path: String, mode: u32 },
    #[error("no randomness available for a new pseudonym key: {0}")]
    Random(String),
}

/// Keyed HMAC-SHA256 of patient identifiers. Cloning is cheap (the keyed state is precomputed).
#[derive(Clone)]
pub struct Pseudonymiser {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymiser(<secret>)")
    }
}

impl Pseudonymiser {
    /// A pseudonymiser with this secret key.
    pub fn new(key: &[u8]) -> Self {
        // HMAC accepts keys of any length.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        Pseudonymiser { mac }
    }

    /// The key from `CDS_PSEUDONYM_KEY`, or else from `DIR/pseudonym.key`, created with a fresh
    /// random key (mode 0600) on first use, so that pseudonyms stay stable across restarts.
    pub fn from_env_or_dir(dir: &Path) -> Result<Self, PseudonymError> {
        if let Ok(key) = std::env::var(PSEUDONYM_KEY_ENV) {
            if !key.is_empty() {
                return Ok(Self::new(key.as_bytes()));
            }
        }
        let path = dir.join("pseudonym.key");
        let io = |source| PseudonymError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read(&path) {
            Ok(key) if !key.is_empty() => {
                let mode = crate::support::private::shared_mode_bits(&path).map_err(io)?;
                if mode != 0 {
                    return Err(PseudonymError::KeyFileShared {
                        path: path.display().to_string(),
                        mode,
                    });
                }
                return Ok(Self::new(&key));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| PseudonymError::Random(e.to_string()))?;
        let hex_key = hex::encode(key);
        crate::support::private::create_private_dir(dir).map_err(io)?;
        crate::support::private::write_new_private(&path, hex_key.as_bytes()).map_err(io)?;
        Ok(Self::new(hex_key.as_bytes()))
    }

    /// The patient key of an identifier.
    pub fn key(&self, patient_id: &str) -> u64 {
        let mut mac = self.mac.clone();
        mac.update(patient_id.as_bytes());
        let out = mac.finalize().into_bytes();
        let mut first = [0u8; 8];
        first.copy_from_slice(&out[..8]);
        u64::from_be_bytes(first)
    }

    /// The pseudonym of an identifier, as it appears outside the engine.
    pub fn pseudonym(&self, patient_id: &str) -> String {
        display(self.key(patient_id))
    }

    /// A 128-bit keyed digest (32 hex digits) of an identity that may hold a patient
    /// identifier: the event id a decoder derives from a FHIR resource id or a CSV row. Wide
    /// enough that two events never share one by chance, keyed so that it cannot be reversed
    /// by guessing identifiers, and stable across restarts so that re-deliveries stay duplicates.
    pub fn digest(&self, identity: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(identity.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }
}

/// How a patient key is written outside the engine.
pub fn display(key: u64) -> String {
    format!("{key:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_and_stable() {
        let a = Pseudonymiser::new(b"k1");
        let b = Pseudonymiser::new(b"k2");
        assert_eq!(a.key("P1"), a.key("P1"));
        assert_ne!(a.key("P1"), a.key("P2"));
        assert_ne!(a.key("P1"), b.key("P1"));
        assert_eq!(a.pseudonym("P1").len(), 16);
        assert!(!a.pseudonym("P1").contains("P1"));
    }
}
