use std::path::PathBuf;

use serde::Deserialize;

/// Configuration of the embedded SQLite store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteConfig {
    /// The database file; by default `DATA_DIR/cds.sqlite`.
    pub path: PathBuf,
}

impl SqliteConfig {
    /// The default store inside a data directory.
    pub fn in_data_dir(data_dir: &std::path::Path) -> Self {
        SqliteConfig {
            path: data_dir.join("cds.sqlite"),
        }
    }
}
