use std::path::PathBuf;

use serde::Deserialize;

use crate::source::SourceError;

/// Configuration of the MLLP listener source.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MllpConfig {
    /// `HOST:PORT` to listen on.
    pub listen: String,
    /// Where the durable log of received messages lives (`DATA_DIR/mllp`).
    pub log_dir: PathBuf,
    /// Most connections served at once; further ones are closed at once.
    #[serde(default = "default_connections")]
    pub max_connections: usize,
    /// Largest message taken; a longer frame is answered AR and dropped.
    #[serde(default = "default_message_bytes")]
    pub max_message_bytes: usize,
}

fn default_connections() -> usize {
    32
}

fn default_message_bytes() -> usize {
    1 << 20
}

impl MllpConfig {
    /// Parses `mllp://HOST:PORT`.
    pub fn from_url(url: &str, log_dir: PathBuf) -> Result<Self, SourceError> {
        let listen = url
            .strip_prefix("mllp://")
            .filter(|a| !a.is_empty() && a.contains(':'))
            .ok_or_else(|| SourceError::Config(format!("{url:?}: expected mllp://HOST:PORT")))?;
        Ok(MllpConfig {
            listen: listen.trim_end_matches('/').to_owned(),
            log_dir,
            max_connections: default_connections(),
            max_message_bytes: default_message_bytes(),
        })
    }
}
