use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::decode::Format;

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

impl Framing {
    /// How a file of this format is cut into payloads: HL7 v2 by message, FHIR by line unless
    /// the file is one pretty-printed resource (its first line is not a whole JSON value).
    pub fn of_file(path: &Path, format: Format) -> Framing {
        let first_line = || -> Option<Vec<u8>> {
            use std::io::BufRead;
            let file = std::fs::File::open(path).ok()?;
            let mut line = Vec::new();
            std::io::BufReader::new(file)
                .read_until(b'\n', &mut line)
                .ok()?;
            Some(line)
        };
        let whole_json =
            |line: &[u8]| serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok();
        match format {
            Format::Hl7v2 => Framing::Hl7,
            Format::Fhir | Format::Auto => match first_line() {
                Some(l)
                    if l.iter()
                        .skip_while(|b| b.is_ascii_whitespace())
                        .take(3)
                        .eq(b"MSH".iter()) =>
                {
                    Framing::Hl7
                }
                Some(l) if !l.iter().all(u8::is_ascii_whitespace) && !whole_json(&l) => {
                    Framing::Document
                }
                _ => Framing::Lines,
            },
            Format::Json | Format::EhrCsv => Framing::Lines,
        }
    }
}
