//! The daily EHR extract: CSV with a header line, one event per row.
//!
//! Columns are matched by name, case-insensitively, through [`COLUMNS`] (the mapping table of
//! the README); a column the mapping does not know is kept in the event's `extra` map, as event
//! JSON keeps unknown fields. A row becomes event JSON and is parsed by the event model's own
//! parser, so that an extract row and a JSON event with the same values are the same event.

use chrono::{NaiveDateTime, TimeZone, Utc};
use serde_json::{Map, Value};

use super::FormatError;
use crate::model::{format_time, parse_time, Event, Pseudonymiser};

/// Extract column names (lower case) and the event-model field each fills.
pub const COLUMNS: &[(&str, &str)] = &[
    ("event_id", "event_id"),
    ("record_id", "event_id"),
    ("event_type", "event_type"),
    ("movement", "event_type"),
    ("event_timestamp", "event_timestamp"),
    ("event_time", "event_timestamp"),
    ("patient_id", "patient_id"),
    ("mrn", "patient_id"),
    ("hospital_id", "hospital_id"),
    ("facility", "hospital_id"),
    ("department", "department"),
    ("ward", "department"),
    ("bed_id", "bed_id"),
    ("bed", "bed_id"),
    ("gender", "gender"),
    ("sex", "gender"),
    ("age", "age"),
    ("admission_time", "admission_time"),
    ("admit_time", "admission_time"),
    ("discharge_time", "discharge_time"),
    ("admission_priority", "admission_priority"),
    ("admission_type", "admission_priority"),
    ("diagnosis_code", "diagnosis_code"),
    ("primary_dx", "diagnosis_code"),
    ("insurance_type", "insurance_type"),
    ("payer", "insurance_type"),
    ("heart_rate", "vitals.heart_rate"),
    ("bp_systolic", "vitals.bp_systolic"),
    ("bp_diastolic", "vitals.bp_diastolic"),
    ("temperature_c", "vitals.temperature_c"),
    ("temperature_f", "vitals.temperature_f"),
    ("oxygen_saturation", "vitals.oxygen_saturation"),
    ("spo2", "vitals.oxygen_saturation"),
    ("respiratory_rate", "vitals.respiratory_rate"),
    ("consciousness", "vitals.consciousness"),
    ("supplemental_o2", "vitals.supplemental_o2"),
];

const TIME_FIELDS: [&str; 3] = ["event_timestamp", "admission_time", "discharge_time"];

/// Splits one CSV line (RFC 4180 quoting; a quoted field does not span lines).
pub fn split_line(line: &str) -> Result<Vec<String>, FormatError> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() && !was_quoted => {
                quoted = true;
                was_quoted = true;
            }
            (false, ',') => {
                fields.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err(FormatError::Csv("unterminated quoted field".into()));
    }
    fields.push(field);
    Ok(fields)
}

/// Decodes one line: the first line of a stream is the header (no event); every further one
/// is a row. A row without an event id gets one derived from its identity, keyed by
/// `pseudonyms` (see `derived_id`).
pub fn decode_line(
    line: &[u8],
    header: &mut Option<Vec<String>>,
    pseudonyms: Option<&Pseudonymiser>,
) -> Result<Option<Event>, FormatError> {
    let text = std::str::from_utf8(line)
        .map_err(|_| FormatError::Csv("the line is not UTF-8 text".into()))?
        .trim_start_matches('\u{feff}')
        .trim_end_matches(['\r', '\n']);
    let fields = split_line(text)?;
    let Some(names) = header.as_ref() else {
        let names: Vec<String> = fields.iter().map(|f| f.trim().to_lowercase()).collect();
        if !names.iter().any(|n| field_of(n) == Some("event_type")) {
            return Err(FormatError::Csv(
                "the header names no event_type (or movement) column".into(),
            ));
        }
        *header = Some(names);
        return Ok(None);
    };
    if fields.len() != names.len() {
        return Err(FormatError::Csv(format!(
            "{} fields where the header has {}",
            fields.len(),
            names.len()
        )));
    }
    row_to_event(names, &fields, pseudonyms).map(Some)
}

fn field_of(column: &str) -> Option<&'static str> {
    COLUMNS.iter().find(|(c, _)| *c == column).map(|(_, f)| *f)
}

/// A time as RFC 3339, or `YYYY-MM-DD HH:MM[:SS]` / `YYYY-MM-DDTHH:MM[:SS]` taken as UTC.
fn normalise_time(s: &str) -> Result<String, FormatError> {
    if let Some(t) = parse_time(s) {
        return Ok(format_time(&t));
    }
    for pattern in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, pattern) {
            return Ok(format_time(&Utc.from_utc_datetime(&t).fixed_offset()));
        }
    }
    Err(FormatError::Csv(format!("{s:?} is not a date and time")))
}

fn row_to_event(
    names: &[String],
    fields: &[String],
    pseudonyms: Option<&Pseudonymiser>,
) -> Result<Event, FormatError> {
    let mut object = Map::new();
    let mut vitals = Map::new();
    for (name, raw) in names.iter().zip(fields) {
        let value = raw.trim();
        if value.is_empty() {
            continue;
        }
        match field_of(name) {
            Some(f) if TIME_FIELDS.contains(&f) => {
                object.insert(f.into(), Value::from(normalise_time(value)?));
            }
            Some(f) => match f.strip_prefix("vitals.") {
                Some("consciousness") => {
                    vitals.insert("consciousness".into(), Value::from(value));
                }
                Some("supplemental_o2") => {
                    let yes = matches!(value.to_lowercase().as_str(), "true" | "yes" | "y" | "1");
                    vitals.insert("supplemental_o2".into(), Value::from(yes));
                }
                Some(v) => {
                    let n: f64 = value.parse().map_err(|_| {
                        FormatError::Csv(format!("{name}: {value:?} is not a number"))
                    })?;
                    vitals.insert(v.into(), Value::from(n));
                }
                None => {
                    object.insert(f.into(), Value::from(value));
                }
            },
            None => {
                object.insert(name.clone(), Value::from(value));
            }
        }
    }
    if !vitals.is_empty() {
        object.insert("vitals".into(), Value::Object(vitals));
    }
    if !object.contains_key("event_id") {
        // Extracts often carry no event id: one derived from the row's identity makes a
        // re-delivered extract a duplicate instead of a second event.
        let part = |k: &str| object.get(k).and_then(Value::as_str).unwrap_or_default();
        let identity = format!(
            "{}:{}:{}",
            part("patient_id"),
            part("event_type"),
            part("event_timestamp")
        );
        let id = super::derived_id(pseudonyms, "ehr", &identity);
        object.insert("event_id".into(), Value::from(id));
    }
    let json = Value::Object(object).to_string();
    Event::from_json(json.as_bytes()).map_err(|e| FormatError::Csv(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_columns_and_quotes() {
        let mut header = None;
        assert!(decode_line(
            b"MRN,Movement,Event_Time,Facility,Ward,Sex,Age,Admit_Time,Primary_Dx,Heart_Rate,Temperature_F,Note\r\n",
            &mut header,
            None
        )
        .expect("header")
        .is_none());
        let e = decode_line(
            b"P7,ADMISSION,2026-03-02 10:00,3,ICU,F,71,2026-03-02 09:58,I21.4,110,101.3,\"said \"\"hi\"\", left\"",
            &mut header,
            Some(&Pseudonymiser::new(b"k")),
        )
        .expect("row")
        .expect("event");
        assert_eq!(e.patient_id.as_deref(), Some("P7"));
        assert_eq!(e.hospital_id, Some(3));
        // The derived id is a keyed digest of the row's identity: it holds no MRN.
        assert_eq!(
            e.event_id,
            format!(
                "ehr:{}",
                Pseudonymiser::new(b"k").digest("P7:ADMISSION:2026-03-02T10:00:00Z")
            )
        );
        let v = e.vitals.as_ref().expect("vitals");
        assert!((v.temperature_c.unwrap_or_default() - 38.5).abs() < 1e-9);
        assert_eq!(e.extra.get("note"), Some(&Value::from("said \"hi\", left")));
        assert!(matches!(
            decode_line(b"P8,ADMISSION", &mut header, None),
            Err(FormatError::Csv(_))
        ));
    }
}
