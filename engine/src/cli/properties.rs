//! Kafka client settings from a properties file (`--kafka-config-file`), the format that
//! Kafka's own tools and Event Hubs samples hand out, so that SASL passwords and connection
//! strings live in a mounted secret rather than on the command line.

use std::path::{Path, PathBuf};

/// A properties file that cannot be used; it names the file and line, never a value.
#[derive(Debug, thiserror::Error)]
pub enum PropertiesError {
    #[error("reading the Kafka settings file {}: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}, line {line}: {problem}", file.display())]
    Line {
        file: PathBuf,
        line: usize,
        problem: &'static str,
    },
}

/// The settings of `file`, in file order.
pub fn read(file: &Path) -> Result<Vec<(String, String)>, PropertiesError> {
    let text = std::fs::read_to_string(file).map_err(|source| PropertiesError::Read {
        file: file.to_owned(),
        source,
    })?;
    parse(&text, file)
}

/// `key=value` lines; blank lines and lines starting with `#` or `!` are skipped. The key is
/// trimmed, the value loses its leading blanks only (as Java reads properties) and may itself
/// hold `=`.
pub fn parse(text: &str, file: &Path) -> Result<Vec<(String, String)>, PropertiesError> {
    let mut settings = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('!') {
            continue;
        }
        let refused = |problem| PropertiesError::Line {
            file: file.to_owned(),
            line: index + 1,
            problem,
        };
        let (key, value) = trimmed
            .split_once('=')
            .ok_or_else(|| refused("not `key=value`"))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(refused("no key before `=`"));
        }
        settings.push((key.to_owned(), value.trim_start().to_owned()));
    }
    Ok(settings)
}

/// The file's settings overridden by the flag's (`--kafka-config KEY=VALUE`), each key once,
/// in the order first seen.
pub fn merge(file: Vec<(String, String)>, flags: &[(String, String)]) -> Vec<(String, String)> {
    let mut merged: Vec<(String, String)> = Vec::new();
    for (key, value) in file.into_iter().chain(flags.iter().cloned()) {
        match merged.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => merged.push((key, value)),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn comments_and_blank_lines_are_skipped_and_values_keep_their_equals_signs() {
        let text = "# Event Hubs\n! also a comment\n\n  security.protocol = SASL_SSL\r\n\
                    sasl.jaas.config=org.Login required username=\"$ConnectionString\" password=\"Endpoint=sb://x/;Key=abc=\";\n\
                    empty=\n";
        let settings = parse(text, Path::new("kafka.properties")).expect("valid");
        assert_eq!(
            settings,
            pairs(&[
                ("security.protocol", "SASL_SSL"),
                (
                    "sasl.jaas.config",
                    "org.Login required username=\"$ConnectionString\" password=\"Endpoint=sb://x/;Key=abc=\";"
                ),
                ("empty", ""),
            ])
        );
    }

    #[test]
    fn a_bad_line_is_refused_with_the_file_and_line_and_without_its_value() {
        let e = parse(
            "a=1\nsasl.password secret\n",
            Path::new("/etc/kafka.properties"),
        )
        .expect_err("no `=`");
        let message = e.to_string();
        assert!(
            message.contains("/etc/kafka.properties, line 2"),
            "{message}"
        );
        assert!(!message.contains("secret"), "{message}");
        let e = parse("=x\n", Path::new("k")).expect_err("no key");
        assert!(e.to_string().contains("line 1: no key"), "{e}");
    }

    #[test]
    fn a_flag_wins_over_the_file_for_the_same_key() {
        let merged = merge(
            pairs(&[("a", "file"), ("b", "file")]),
            &pairs(&[("b", "flag"), ("c", "flag")]),
        );
        assert_eq!(
            merged,
            pairs(&[("a", "file"), ("b", "flag"), ("c", "flag")])
        );
    }
}
