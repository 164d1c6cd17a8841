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

/// How a file is cut into payloads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Framing {
    /// One payload per line (JSON lines, FHIR NDJSON, CSV rows).
    #[default]
    Lines,
    /// HL7 v2 messages: each starts at a segment line beginning with `MSH`; segments end at
    /// CR, LF or CRLF. A payload's position is the line number of its MSH.
    Hl7,
    /// The whole file is one payload (a pretty-printed FHIR Bundle).
    Document,
}
