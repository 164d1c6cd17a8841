use std::path::PathBuf;

use serde::Deserialize;

/// Configuration of a JSON-lines file source.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The file; `-` reads standard input.
    pub path: PathBuf,
    /// Keep reading lines appended after the end (like `tail -f`) instead of ending there.
    #[serde(default)]
    pub follow: bool,
}
