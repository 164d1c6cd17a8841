//! The daily EHR extract: CSV with a header line, one event per row.
//!
//! Columns are matched by name, case-insensitively, through [`COLUMNS`] (the mapping table of
//! the README); a column the mapping does not know is kept in the event's `extra` map, as event
//! JSON keeps unknown fields. A row becomes event JSON and is parsed by the event model's own
//! parser, so that an extract row and a JSON event with the same values are the same event.
//!
//! Rows are read as RFC 4180 records (`csv-core`: the extract arrives a line at a time). A
//! quoted cell may go on over the next lines (a note typed with line breaks, an Excel cell
//! with several lines): the row is kept open until its quote closes, and decoded with the line
//! that closes it. A line that is a whole row on its own, while a row is open, shows that the
//! open row's quote was a stray one: that row becomes a dead letter ("unterminated quoted
//! field", as a one-line row with a stray quote always was) and the line is read as the next
//! row. An open row is not part of a checkpoint, and one still open when the stream ends is
//! dead-lettered only through [`super::Decoder::finish`].

use chrono::{NaiveDateTime, TimeZone, Utc};
use serde_json::{Map, Value};

use super::{Decoded, FormatError};
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

/// The most one row may hold when a quoted cell goes on over several lines; beyond it the row
/// is a dead letter (a stray quote must not hold every later line).
const MAX_ROW_BYTES: usize = 1 << 20;

/// One CSV record, as far as the text goes.
#[derive(Debug, PartialEq)]
enum Record {
    Complete(Vec<String>),
    /// The text ends inside a quoted cell: the record goes on over the next line.
    Open,
}

fn unterminated() -> FormatError {
    FormatError::Csv("unterminated quoted field".into())
}

/// Reads the text (one line, or the lines of one row joined by `\n`) as one CSV record.
fn read_record(text: &str) -> Result<Record, FormatError> {
    use csv_core::ReadRecordResult;
    let mut input = Vec::with_capacity(text.len() + 1);
    input.extend_from_slice(text.as_bytes());
    // The line's own end: a complete record ends with it, an open quoted cell takes it in.
    input.push(b'\n');
    // A record's text is never longer than its input, nor are its fields more than its bytes.
    let mut output = vec![0u8; input.len()];
    let mut ends = vec![0usize; input.len() + 1];
    let (result, read, _, fields) =
        csv_core::Reader::new().read_record(&input, &mut output, &mut ends);
    match result {
        ReadRecordResult::Record if read == input.len() => {
            let mut start = 0;
            let mut out = Vec::with_capacity(fields);
            for &end in ends.iter().take(fields) {
                // Only ASCII quotes are taken out of UTF-8 text: every field is UTF-8.
                let field = output.get(start..end).unwrap_or_default();
                out.push(String::from_utf8_lossy(field).into_owned());
                start = end;
            }
            Ok(Record::Complete(out))
        }
        ReadRecordResult::Record => Err(FormatError::Csv(
            "a line break outside quotes: more than one row in the line".into(),
        )),
        // Nothing but line breaks (an empty line is one empty field, as it always was).
        ReadRecordResult::InputEmpty if !text.contains('"') => {
            Ok(Record::Complete(vec![String::new()]))
        }
        ReadRecordResult::InputEmpty => Ok(Record::Open),
        ReadRecordResult::OutputFull | ReadRecordResult::OutputEndsFull | ReadRecordResult::End => {
            Err(FormatError::Csv("the line could not be read".into()))
        }
    }
}

/// Decodes one line: the first line of a stream is the header (no event); every further one
/// is a row. A row without an event id gets one derived from its identity, keyed by
/// `pseudonyms` (see `derived_id`). The line is a whole row: a quote left open is an error.
pub fn decode_line(
    line: &[u8],
    header: &mut Option<Vec<String>>,
    pseudonyms: Option<&Pseudonymiser>,
) -> Result<Option<Event>, FormatError> {
    match read_record(line_text(line)?)? {
        Record::Complete(fields) => decode_fields(fields, header, pseudonyms),
        Record::Open => Err(unterminated()),
    }
}

/// The text of a line, without a byte-order mark and its line end.
fn line_text(line: &[u8]) -> Result<&str, FormatError> {
    Ok(std::str::from_utf8(line)
        .map_err(|_| FormatError::Csv("the line is not UTF-8 text".into()))?
        .trim_start_matches('\u{feff}')
        .trim_end_matches(['\r', '\n']))
}

/// Decodes one line of a stream, where a quoted cell may go on over the next lines (`open`
/// holds the row so far). An error of this line alone is the `Err`; a row of several lines
/// that cannot be read is a `Rejected` part, with all its lines.
pub fn decode_stream_line(
    line: &[u8],
    header: &mut Option<Vec<String>>,
    open: &mut Option<String>,
    pseudonyms: Option<&Pseudonymiser>,
) -> Result<Vec<Decoded>, FormatError> {
    let text = line_text(line)?;
    let mut out = Vec::new();
    let whole_row = |fields: &[String]| header.as_ref().is_some_and(|h| h.len() == fields.len());
    let (fields, row) = match open.take() {
        None => match read_record(text)? {
            Record::Complete(fields) => (fields, None),
            Record::Open if text.len() > MAX_ROW_BYTES => return Err(unterminated()),
            Record::Open => {
                *open = Some(text.to_owned());
                return Ok(out);
            }
        },
        Some(start) => {
            let joined = format!("{start}\n{text}");
            match read_record(&joined) {
                Ok(Record::Complete(fields)) if header.is_none() || whole_row(&fields) => {
                    (fields, Some(joined))
                }
                merged => match read_record(text) {
                    Ok(Record::Complete(fields)) if whole_row(&fields) => {
                        out.push(Decoded::Rejected {
                            error: unterminated(),
                            part: start,
                        });
                        (fields, None)
                    }
                    _ => match merged {
                        Ok(Record::Complete(fields)) => (fields, Some(joined)),
                        Ok(Record::Open) if joined.len() <= MAX_ROW_BYTES => {
                            *open = Some(joined);
                            return Ok(out);
                        }
                        Ok(Record::Open) => {
                            out.push(Decoded::Rejected {
                                error: unterminated(),
                                part: joined,
                            });
                            return Ok(out);
                        }
                        Err(error) => {
                            out.push(Decoded::Rejected {
                                error,
                                part: joined,
                            });
                            return Ok(out);
                        }
                    },
                },
            }
        }
    };
    match (decode_fields(fields, header, pseudonyms), row) {
        (Ok(event), _) => out.extend(event.map(|e| Decoded::Event(Box::new(e)))),
        (Err(error), Some(part)) => out.push(Decoded::Rejected { error, part }),
        (Err(error), None) if out.is_empty() => return Err(error),
        (Err(error), None) => out.push(Decoded::Rejected {
            error,
            part: text.to_owned(),
        }),
    }
    Ok(out)
}

/// A row still open when its stream ends (its quote was never closed), with why it is no row.
pub fn finish(open: &mut Option<String>) -> Option<(FormatError, String)> {
    open.take().map(|part| (unterminated(), part))
}

/// The header (no event) or a row.
fn decode_fields(
    fields: Vec<String>,
    header: &mut Option<Vec<String>>,
    pseudonyms: Option<&Pseudonymiser>,
) -> Result<Option<Event>, FormatError> {
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

    #[test]
    fn a_quoted_cell_may_go_on_over_the_next_lines() {
        let (mut header, mut open) = (None, None);
        let mut read = |line: &str| {
            decode_stream_line(line.as_bytes(), &mut header, &mut open, None).expect("lines")
        };
        assert!(read("MRN,Movement,Event_Time,Ward,Note,Bed\r\n").is_empty());
        assert!(read("P7,ADMISSION,2026-03-02 10:00,ICU,\"first line\r\n").is_empty());
        assert!(read("\r\n").is_empty());
        let decoded = read("said \"\"hi\"\", left\",ICU-03\r\n");
        let [Decoded::Event(e)] = decoded.as_slice() else {
            panic!("one event: {decoded:?}");
        };
        assert_eq!(e.patient_id.as_deref(), Some("P7"));
        assert_eq!(e.bed_id.as_deref(), Some("ICU-03"));
        assert_eq!(
            e.extra.get("note"),
            Some(&Value::from("first line\n\nsaid \"hi\", left"))
        );

        // A stray quote: the next whole row shows it, and only its own row is lost.
        assert!(read("P8,ADMISSION,2026-03-02 11:00,ICU,\"oops,ICU-04").is_empty());
        let decoded = read("P9,ADMISSION,2026-03-02 12:00,ICU,fine,ICU-05");
        let [Decoded::Rejected { error, part }, Decoded::Event(e)] = decoded.as_slice() else {
            panic!("a dead letter and an event: {decoded:?}");
        };
        assert_eq!(
            error.to_string(),
            FormatError::Csv("unterminated quoted field".into()).to_string()
        );
        assert_eq!(part, "P8,ADMISSION,2026-03-02 11:00,ICU,\"oops,ICU-04");
        assert_eq!(e.patient_id.as_deref(), Some("P9"));

        // Still open at the end of the stream: a dead letter, not nothing.
        assert!(read("P10,ADMISSION,2026-03-02 13:00,ICU,\"never closed").is_empty());
        let (error, part) = finish(&mut open).expect("the open row");
        assert!(matches!(error, FormatError::Csv(_)));
        assert_eq!(part, "P10,ADMISSION,2026-03-02 13:00,ICU,\"never closed");
        assert!(finish(&mut open).is_none());
    }
}
