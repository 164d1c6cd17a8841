//! Typed errors. Every error names the file and, where rhai knows it, the line and column,
//! because the reader is a rule author who has to find the mistake.

use std::fmt;
use std::path::PathBuf;

use rhai::{EvalAltResult, Position};

/// Where in a rule file something happened (line/column 0 when unknown).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl Location {
    pub(crate) fn new(file: impl Into<PathBuf>, pos: Position) -> Self {
        Self {
            file: file.into(),
            line: pos.line().unwrap_or(0),
            column: pos.position().unwrap_or(0),
        }
    }

    pub(crate) fn line(file: impl Into<PathBuf>, line: usize) -> Self {
        Self {
            file: file.into(),
            line,
            column: 0,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
            if self.column > 0 {
                write!(f, ":{}", self.column)?;
            }
        }
        Ok(())
    }
}

/// A rule file that could not be loaded (read, compiled or validated).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct LoadError {
    pub location: Location,
    pub message: String,
}

/// Loading a directory found problems. The files that did load are in `partial`, so the
/// engine can run them and report the rest (one broken file must not stop the others).
#[derive(Debug, thiserror::Error)]
#[error("{} rule file(s) failed to load: {}", errors.len(), summary(errors))]
pub struct LoadErrors {
    pub errors: Vec<LoadError>,
    /// The pack with every file that loaded; `None` if the directory itself was unreadable.
    pub partial: Option<Box<crate::RulePack>>,
}

fn summary(errors: &[LoadError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// What kind of failure stopped a rule evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleErrorKind {
    /// The per-evaluation CPU-time budget ran out.
    Timeout,
    /// An operation, call-depth, variable or data-size limit was hit.
    Limit,
    /// A runtime error in the script (type mismatch, missing function, `throw` ...).
    Script,
    /// The script returned something of the wrong shape (e.g. `action` without `summary`).
    Contract,
}

/// A rule evaluation that failed; the other rules still ran.
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize)]
#[error("{mlmname} ({location}) on event {event_id}: {kind:?}: {message}")]
pub struct RuleError {
    pub mlmname: String,
    pub location: Location,
    pub event_id: String,
    pub kind: RuleErrorKind,
    pub message: String,
}

impl RuleError {
    /// Builds the report for a rhai error, pointing at the innermost position (inside the
    /// rule's function, not the call site in the engine).
    pub(crate) fn from_rhai(
        mlmname: &str,
        file: &std::path::Path,
        event_id: &str,
        err: &EvalAltResult,
        called: &str,
        fn_line: impl Fn(&str) -> usize,
    ) -> Self {
        let mut inner = err;
        let mut last_fn = called;
        let mut last_pos = err.position();
        loop {
            match inner {
                EvalAltResult::ErrorInFunctionCall(name, _, e, pos) => {
                    last_fn = name.as_str();
                    if !pos.is_none() {
                        last_pos = *pos;
                    }
                    inner = e;
                }
                EvalAltResult::ErrorInModule(_, e, _) => inner = e,
                _ => break,
            }
        }
        // Some limit errors carry no position: point at the function that was running.
        let location = if !inner.position().is_none() {
            Location::new(file, inner.position())
        } else if !last_fn.is_empty() && fn_line(last_fn) > 0 {
            Location::line(file, fn_line(last_fn))
        } else {
            Location::new(file, last_pos)
        };
        let kind = match inner {
            EvalAltResult::ErrorTerminated(..) => RuleErrorKind::Timeout,
            EvalAltResult::ErrorTooManyOperations(_)
            | EvalAltResult::ErrorTooManyVariables(_)
            | EvalAltResult::ErrorTooManyModules(_)
            | EvalAltResult::ErrorStackOverflow(_)
            | EvalAltResult::ErrorDataTooLarge(..) => RuleErrorKind::Limit,
            _ => RuleErrorKind::Script,
        };
        let message = match inner {
            EvalAltResult::ErrorTerminated(..) => "evaluation time budget exceeded".to_string(),
            other => other.to_string(),
        };
        Self {
            mlmname: mlmname.to_string(),
            location,
            event_id: event_id.to_string(),
            kind,
            message,
        }
    }
}

/// rhai's messages end in "(line N, position M)"; we print the location ourselves.
pub(crate) fn strip_position(msg: String) -> String {
    match msg.rfind(" (line ") {
        Some(i) if msg.ends_with(')') => msg[..i].to_string(),
        _ => msg,
    }
}
