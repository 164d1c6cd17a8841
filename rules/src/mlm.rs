//! The `MLM` constant of a rule file: the Arden Syntax categories (maintenance, library,
//! knowledge) as a rhai map, checked on load so that a mistake is reported with its line
//! instead of surfacing as a wrong alert later.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::error::{LoadError, Location};

/// Event types a rule can be evoked by.
pub const EVENT_TYPES: [&str; 4] = ["ADMISSION", "DISCHARGE", "TRANSFER", "VITALS"];

/// When a rule is evaluated.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Evoke {
    /// On every event of these types.
    Events(Vec<String>),
    /// Once, `hours` of event time after an `after` event, while the patient is still admitted.
    Delayed { after: String, hours: f64 },
}

impl Evoke {
    /// Whether an event of `event_type` evokes the rule directly (delayed evokes never do).
    pub fn lists(&self, event_type: &str) -> bool {
        matches!(self, Evoke::Events(types) if types.iter().any(|t| t == event_type))
    }
}

/// What the suppression key is made of besides the MLM name and severity band.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertScope {
    /// One alert stream per patient (the default).
    Patient,
    /// One alert stream per (hospital, department), e.g. capacity.
    Department,
}

/// A literature reference; `url` becomes the CDS Hooks card's `source.url`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Citation {
    pub text: String,
    pub url: String,
}

/// The validated `MLM` map.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mlm {
    pub title: String,
    pub mlmname: String,
    pub version: String,
    pub institution: String,
    pub author: String,
    pub date: String,
    pub validation: String,
    pub purpose: String,
    pub explanation: String,
    pub keywords: Vec<String>,
    pub citations: Vec<Citation>,
    pub kind: String,
    pub priority: i64,
    pub urgency: i64,
    pub evoke: Evoke,
    pub suppress_minutes: i64,
    pub scope: AlertScope,
    /// `knowledge.keep_score`: `true` keeps the numeric `score` of every `data()` this rule
    /// returns, a field name (`"complete_score"`) keeps that field instead (a `()` there keeps
    /// nothing: the rule decides which scores a trend may compare);
    /// (fired or not) is kept per patient, and later events' rules read it in
    /// `ctx.patient.scores[mlmname]` (trends).
    pub keep_score: Option<String>,
}

/// Arden's validation codes.
const VALIDATIONS: [&str; 4] = ["production", "research", "testing", "expired"];

/// Line (1-based) of the `MLM` declaration, or 0.
pub(crate) fn mlm_line(src: &str) -> usize {
    src.lines()
        .position(|l| {
            let t = l.trim_start();
            t.starts_with("const MLM") || t.starts_with("let MLM")
        })
        .map_or(0, |i| i + 1)
}

/// Line of `key:` (or `"key":`) at or after the `MLM` declaration, else the declaration's.
fn key_line(src: &str, key: &str) -> usize {
    let start = mlm_line(src).max(1);
    for (i, l) in src.lines().enumerate().skip(start - 1) {
        let t = l.trim_start();
        for prefix in [format!("{key}:"), format!("{key} :"), format!("\"{key}\":")] {
            if t.starts_with(&prefix)
                || t.contains(&format!(" {prefix}"))
                || t.contains(&format!("{{{prefix}"))
            {
                return i + 1;
            }
        }
    }
    start
}

struct Checker<'a> {
    file: &'a Path,
    src: &'a str,
    errors: Vec<LoadError>,
}

impl Checker<'_> {
    fn err(&mut self, key: &str, message: String) {
        self.errors.push(LoadError {
            location: Location::line(self.file, key_line(self.src, key)),
            message,
        });
    }

    fn section<'v>(
        &mut self,
        root: &'v Value,
        name: &str,
    ) -> Option<&'v serde_json::Map<String, Value>> {
        match root.get(name) {
            Some(Value::Object(m)) => Some(m),
            Some(_) => {
                self.err(name, format!("MLM.{name} must be a map"));
                None
            }
            None => {
                self.err(name, format!("MLM.{name} is missing"));
                None
            }
        }
    }

    fn string(&mut self, sec: &str, m: &serde_json::Map<String, Value>, key: &str) -> String {
        match m.get(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(Value::String(_)) => {
                self.err(key, format!("MLM.{sec}.{key} must not be empty"));
                String::new()
            }
            Some(v) => {
                self.err(
                    key,
                    format!("MLM.{sec}.{key} must be a string, not {}", kind(v)),
                );
                String::new()
            }
            None => {
                self.err(key, format!("MLM.{sec}.{key} is missing"));
                String::new()
            }
        }
    }

    fn int(
        &mut self,
        sec: &str,
        m: &serde_json::Map<String, Value>,
        key: &str,
        range: (i64, i64),
    ) -> i64 {
        match m.get(key) {
            Some(Value::Number(n)) if n.is_i64() => {
                let v = n.as_i64().unwrap_or(0);
                if v < range.0 || v > range.1 {
                    self.err(
                        key,
                        format!(
                            "MLM.{sec}.{key} must be in {}..={}, is {v}",
                            range.0, range.1
                        ),
                    );
                }
                v
            }
            Some(v) => {
                self.err(
                    key,
                    format!("MLM.{sec}.{key} must be an integer, not {}", kind(v)),
                );
                0
            }
            None => {
                self.err(key, format!("MLM.{sec}.{key} is missing"));
                0
            }
        }
    }

    fn event_type(&mut self, v: &Value, what: &str) -> String {
        match v {
            Value::String(s) if EVENT_TYPES.contains(&s.as_str()) => s.clone(),
            other => {
                self.err(
                    "evoke",
                    format!(
                        "{what}: unknown event type {other} (known: {})",
                        EVENT_TYPES.join(", ")
                    ),
                );
                String::new()
            }
        }
    }

    fn evoke(&mut self, k: &serde_json::Map<String, Value>) -> Evoke {
        match k.get("evoke") {
            Some(Value::Array(a)) if !a.is_empty() => Evoke::Events(
                a.iter()
                    .map(|v| self.event_type(v, "MLM.knowledge.evoke"))
                    .collect(),
            ),
            Some(Value::Object(m)) => {
                let after = match m.get("after") {
                    Some(v) => self.event_type(v, "MLM.knowledge.evoke.after"),
                    None => {
                        self.err("evoke", "MLM.knowledge.evoke.after is missing".into());
                        String::new()
                    }
                };
                let hours = match m.get("hours").and_then(Value::as_f64) {
                    Some(h) if h > 0.0 => h,
                    _ => {
                        self.err(
                            "evoke",
                            "MLM.knowledge.evoke.hours must be a positive number".into(),
                        );
                        0.0
                    }
                };
                Evoke::Delayed { after, hours }
            }
            Some(_) => {
                self.err(
                    "evoke",
                    "MLM.knowledge.evoke must be a non-empty list of event types or #{ after: TYPE, hours: N }"
                        .into(),
                );
                Evoke::Events(Vec::new())
            }
            None => {
                self.err("evoke", "MLM.knowledge.evoke is missing".into());
                Evoke::Events(Vec::new())
            }
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "()",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a map",
    }
}

/// Checks the `MLM` map (as JSON) and returns it typed, or every problem found.
pub(crate) fn validate(file: &Path, src: &str, root: &Value) -> Result<Mlm, Vec<LoadError>> {
    let mut c = Checker {
        file,
        src,
        errors: Vec::new(),
    };
    if !root.is_object() {
        c.err("MLM", "MLM must be a map".into());
        return Err(c.errors);
    }
    let empty = serde_json::Map::new();
    let m = c.section(root, "maintenance").unwrap_or(&empty);
    let l = c.section(root, "library").unwrap_or(&empty);
    let k = c.section(root, "knowledge").unwrap_or(&empty);

    let title = c.string("maintenance", m, "title");
    let mlmname = c.string("maintenance", m, "mlmname");
    if !mlmname.is_empty()
        && !mlmname
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-' || ch == '.')
    {
        c.err(
            "mlmname",
            format!(
                "MLM.maintenance.mlmname '{mlmname}' may use only letters, digits, '_', '-', '.'"
            ),
        );
    }
    let version = c.string("maintenance", m, "version");
    let institution = c.string("maintenance", m, "institution");
    let author = c.string("maintenance", m, "author");
    let date = c.string("maintenance", m, "date");
    let validation = c.string("maintenance", m, "validation");
    if !validation.is_empty() && !VALIDATIONS.contains(&validation.as_str()) {
        c.err(
            "validation",
            format!(
                "MLM.maintenance.validation must be one of {}",
                VALIDATIONS.join(", ")
            ),
        );
    }

    let purpose = c.string("library", l, "purpose");
    let explanation = c.string("library", l, "explanation");
    let keywords = match l.get("keywords") {
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(_) => {
            c.err(
                "keywords",
                "MLM.library.keywords must be a list of strings".into(),
            );
            Vec::new()
        }
        None => {
            c.err("keywords", "MLM.library.keywords is missing".into());
            Vec::new()
        }
    };
    let mut citations = Vec::new();
    match l.get("citations") {
        Some(Value::Array(a)) if !a.is_empty() => {
            for (i, v) in a.iter().enumerate() {
                match (v.get("text").and_then(Value::as_str), v.get("url").and_then(Value::as_str)) {
                    (Some(text), Some(url)) if url.starts_with("http://") || url.starts_with("https://") => {
                        citations.push(Citation { text: text.to_string(), url: url.to_string() });
                    }
                    _ => c.err(
                        "citations",
                        format!("MLM.library.citations[{i}] must be #{{ text: \"...\", url: \"https://...\" }}"),
                    ),
                }
            }
        }
        _ => c.err(
            "citations",
            "MLM.library.citations must be a non-empty list".into(),
        ),
    }

    let kind_ = c.string("knowledge", k, "type");
    let priority = c.int("knowledge", k, "priority", (1, 99));
    let urgency = c.int("knowledge", k, "urgency", (1, 99));
    let evoke = c.evoke(k);
    let suppress_minutes = c.int("knowledge", k, "suppress_minutes", (0, 60 * 24 * 30));
    let scope = match k.get("scope") {
        None => AlertScope::Patient,
        Some(Value::String(s)) if s == "patient" => AlertScope::Patient,
        Some(Value::String(s)) if s == "department" => AlertScope::Department,
        Some(_) => {
            c.err(
                "scope",
                "MLM.knowledge.scope must be \"patient\" or \"department\"".into(),
            );
            AlertScope::Patient
        }
    };
    let keep_score = match k.get("keep_score") {
        None | Some(Value::Bool(false)) => None,
        Some(Value::Bool(true)) => Some("score".to_owned()),
        Some(Value::String(field)) if !field.is_empty() => Some(field.clone()),
        Some(_) => {
            c.err(
                "keep_score",
                "MLM.knowledge.keep_score must be true, false or the name of a field of data()"
                    .into(),
            );
            None
        }
    };
    // Scores are kept per patient, where the patient's rules run.
    if keep_score.is_some() && scope == AlertScope::Department {
        c.err(
            "keep_score",
            "MLM.knowledge.keep_score is for patient rules; a department rule keeps no score"
                .into(),
        );
    }

    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    Ok(Mlm {
        title,
        mlmname,
        version,
        institution,
        author,
        date,
        validation,
        purpose,
        explanation,
        keywords,
        citations,
        kind: kind_,
        priority,
        urgency,
        evoke,
        suppress_minutes,
        scope,
        keep_score,
    })
}
