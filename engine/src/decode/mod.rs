//! Payload formats: how the bytes a source hands over become events of the model.
//!
//! `--format json` (the default) is the event model's own JSON; `fhir` takes FHIR R4 resources
//! and Bundles, `hl7v2` HL7 v2 messages, `ehr-csv` the lines of a daily EHR extract, and `auto`
//! tells FHIR, HL7 v2 and event JSON apart per payload. Each mapper is a pure function from
//! bytes to zero or more events plus the little state a stream needs (the [`Census`] of where
//! each patient lies, FHIR's open encounters and patients' demographics, a CSV header); what a
//! mapper cannot take becomes a dead letter with the reason, and the rest of the payload goes on.
//!
//! The state is part of a checkpoint ([`DecoderState`]) and is keyed by pseudonym keys, never by
//! raw patient identifiers.

pub mod ehr;
pub mod fhir;
pub mod hl7v2;

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpointed;
use crate::model::{DeadLetter, Event, Pseudonymiser, SourcePosition, Vitals};

/// Why a payload (or one resource of a Bundle) could not become events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("malformed FHIR: {0}")]
    Fhir(String),
    #[error("malformed HL7 v2: {0}")]
    Hl7(String),
    #[error("malformed CSV: {0}")]
    Csv(String),
    /// Well-formed, but nothing the event model uses (a resource type, a message type).
    #[error("not used: {0}")]
    Unsupported(String),
    /// `auto` could not tell what the payload is.
    #[error("unknown payload format: neither FHIR, HL7 v2 nor event JSON")]
    Unknown,
}

impl FormatError {
    /// A fixed label for metrics and dead letters.
    pub fn class(&self) -> &'static str {
        match self {
            FormatError::Fhir(_) => "malformed_fhir",
            FormatError::Hl7(_) => "malformed_hl7v2",
            FormatError::Csv(_) => "malformed_csv",
            FormatError::Unsupported(_) => "unsupported_payload",
            FormatError::Unknown => "unknown_format",
        }
    }
}

/// The `--format` of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    #[default]
    Json,
    Fhir,
    Hl7v2,
    EhrCsv,
    Auto,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Format::Json),
            "fhir" => Ok(Format::Fhir),
            "hl7v2" => Ok(Format::Hl7v2),
            "ehr-csv" | "csv" => Ok(Format::EhrCsv),
            "auto" => Ok(Format::Auto),
            other => Err(format!(
                "unknown format {other:?}: expected json, fhir, hl7v2, ehr-csv or auto"
            )),
        }
    }
}

/// What one payload decoded into: events, and parts that could not be taken (with the text
/// of the part, for the dead-letter store).
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Event(Box<Event>),
    Rejected { error: FormatError, part: String },
}

/// Where a patient lies, as the last ADT message or resource said.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    pub hospital_id: Option<i64>,
    pub department: Option<String>,
    pub bed_id: Option<String>,
}

/// Where each patient currently lies, by pseudonym key: one small entry per patient in a bed,
/// dropped at discharge. HL7 ORU^R01 and FHIR Observations often do not say where the patient
/// is; the event model's VITALS do, so the mappers take it from here.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Census {
    #[serde(skip)]
    pseudonyms: Option<Pseudonymiser>,
    places: HashMap<u64, Place>,
}

/// The key a decoder keeps a patient's state under: the pseudonym key, never the raw
/// identifier (only unit tests, which give no pseudonymiser, get a stable hash instead).
fn patient_key(pseudonyms: Option<&Pseudonymiser>, patient: &str) -> u64 {
    match pseudonyms {
        Some(p) => p.key(patient),
        None => {
            use std::hash::{BuildHasher, BuildHasherDefault};
            BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
                .hash_one(patient)
        }
    }
}

impl Census {
    fn key(&self, patient: &str) -> u64 {
        patient_key(self.pseudonyms.as_ref(), patient)
    }

    /// Where the patient lies, if known.
    pub fn place_of(&self, patient: &str) -> Option<&Place> {
        self.places.get(&self.key(patient))
    }

    /// Follows an event: admissions, transfers and cancelled discharges place the patient;
    /// discharges and cancelled admissions take them out.
    pub fn observe(&mut self, patient: &str, event_type: &str, place: Option<&Place>) {
        let key = self.key(patient);
        match event_type {
            "ADMISSION" | "TRANSFER" | "CANCEL_DISCHARGE" => {
                if let Some(p) = place {
                    self.places.insert(key, p.clone());
                }
            }
            "DISCHARGE" | "CANCEL_ADMISSION" => {
                self.places.remove(&key);
            }
            _ => {}
        }
    }
}

/// The dead-letter reason of a payload that panicked a decoder.
pub const DECODER_PANIC: &str = "decoder_panic";

/// The event id a decoder derives when a message carries none of the event model's: `KIND:` and
/// a keyed digest of the source's own identity for the event (a FHIR resource id with its
/// status and time, a CSV row's patient, type and time). Those identities can hold patient
/// identifiers (a resource id `enc-<MRN>`, an MRN column), and an event id leaves the engine
/// with every alert, so only the digest may. The digest is stable across restarts (the key is),
/// which keeps a re-delivered message a duplicate.
pub(super) fn derived_id(pseudonyms: Option<&Pseudonymiser>, kind: &str, identity: &str) -> String {
    match pseudonyms {
        Some(p) => format!("{kind}:{}", p.digest(identity)),
        // Only in unit tests: a stable hash stands in for the keyed digest.
        None => {
            use std::hash::{BuildHasher, BuildHasherDefault};
            let hash = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
                .hash_one(identity);
            format!("{kind}:{hash:016x}")
        }
    }
}

/// The state of a decoder, for a checkpoint (borrowed when written, owned when read).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DecoderState<'a> {
    census: Cow<'a, Census>,
    fhir: Cow<'a, fhir::State>,
    csv_header: Cow<'a, Option<Vec<String>>>,
}

/// Turns payloads into events (and dead letters), in the source's format.
#[derive(Debug)]
pub struct Decoder {
    format: Format,
    census: Census,
    fhir: fhir::State,
    csv_header: Option<Vec<String>>,
    /// An extract row whose quoted cell goes on over the next line (not in a checkpoint).
    csv_open_row: Option<String>,
}

/// A checkpoint keeps what the decoder remembers (FHIR encounters, where patients lie); the
/// pseudonymiser stays this run's.
impl Checkpointed for Decoder {
    type State<'a> = DecoderState<'a>;

    fn snapshot(&self) -> DecoderState<'_> {
        DecoderState {
            census: Cow::Borrowed(&self.census),
            fhir: Cow::Borrowed(&self.fhir),
            csv_header: Cow::Borrowed(&self.csv_header),
        }
    }

    fn restore(&mut self, state: DecoderState<'static>) {
        let pseudonyms = self.census.pseudonyms.take();
        self.census = state.census.into_owned();
        self.census.pseudonyms = pseudonyms.clone();
        self.fhir = state.fhir.into_owned();
        self.fhir.set_pseudonyms(pseudonyms);
        self.csv_header = state.csv_header.into_owned();
        self.csv_open_row = None;
    }
}

impl Decoder {
    pub fn new(format: Format, pseudonyms: Pseudonymiser) -> Self {
        Decoder {
            format,
            census: Census {
                pseudonyms: Some(pseudonyms.clone()),
                places: HashMap::new(),
            },
            fhir: fhir::State::new(Some(pseudonyms)),
            csv_header: None,
            csv_open_row: None,
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// At the end of a stream: an extract row still open (its quote never closed) becomes a
    /// dead letter, for it is no event and must not vanish.
    pub fn finish(&mut self, position: impl Fn() -> SourcePosition) -> Option<DeadLetter> {
        ehr::finish(&mut self.csv_open_row).map(|(error, part)| DeadLetter {
            reason_code: error.class(),
            reason: error.to_string(),
            position: position(),
            payload: part,
        })
    }

    /// Decodes one payload of a mapped format (not event JSON) into events or rejected parts.
    pub fn decode(&mut self, payload: &[u8]) -> Result<Vec<Decoded>, FormatError> {
        let format = match self.format {
            Format::Auto => detect(payload)?,
            f => f,
        };
        match format {
            Format::Fhir => Ok(fhir::to_events(payload, &mut self.fhir, &mut self.census)),
            Format::Hl7v2 => hl7v2::to_events(payload, &mut self.census).map(|events| {
                events
                    .into_iter()
                    .map(|e| Decoded::Event(Box::new(e)))
                    .collect()
            }),
            Format::EhrCsv => ehr::decode_stream_line(
                payload,
                &mut self.csv_header,
                &mut self.csv_open_row,
                self.census.pseudonyms.as_ref(),
            ),
            Format::Json | Format::Auto => Err(FormatError::Unknown),
        }
    }

    /// Decodes one payload into its events, and dead letters for what is not one (Silver
    /// cleans the events; the decoder never judges them). A panic on the way is this payload's
    /// fault, not the stream's (the failure contract): the payload becomes a dead letter
    /// `decoder_panic`, kept whole for a fix and a replay, and the next one goes on.
    pub fn decode_payload(
        &mut self,
        payload: &[u8],
        position: impl Fn() -> SourcePosition,
    ) -> Vec<Result<Event, DeadLetter>> {
        let mut out = Vec::new();
        self.decode_into(payload, position, &mut out);
        out
    }

    /// [`Decoder::decode_payload`] into a buffer the caller reuses: the ingest loop decodes
    /// every payload, most into one event, and allocates nothing for the list.
    pub fn decode_into(
        &mut self,
        payload: &[u8],
        position: impl Fn() -> SourcePosition,
        out: &mut Vec<Result<Event, DeadLetter>>,
    ) {
        let start = out.len();
        if crate::support::fault::isolate(|| self.decode_isolated(payload, &position, out)).is_err()
        {
            out.truncate(start);
            out.push(Err(DeadLetter {
                reason_code: DECODER_PANIC,
                reason: "the decoder failed on this payload (a defect of the engine; the \
                         payload is kept to be replayed once it is fixed)"
                    .into(),
                position: position(),
                payload: String::from_utf8_lossy(payload).into_owned(),
            }));
        }
    }

    fn decode_isolated(
        &mut self,
        payload: &[u8],
        position: &impl Fn() -> SourcePosition,
        out: &mut Vec<Result<Event, DeadLetter>>,
    ) {
        crate::support::fault::drill_payload(payload);
        let format = match self.format {
            Format::Auto => detect(payload).unwrap_or(Format::Json),
            f => f,
        };
        if format == Format::Json {
            out.push(json(payload, position));
            return;
        }
        let letter = |error: FormatError, part: String| DeadLetter {
            reason_code: error.class(),
            reason: error.to_string(),
            position: position(),
            payload: part,
        };
        match self.decode(payload) {
            Ok(decoded) => out.extend(decoded.into_iter().map(|d| match d {
                Decoded::Event(e) => Ok(*e),
                Decoded::Rejected { error, part } => Err(letter(error, part)),
            })),
            Err(error) => out.push(Err(letter(
                error,
                String::from_utf8_lossy(payload).into_owned(),
            ))),
        }
    }
}

/// One payload of the event model's own JSON: the event, or a dead letter saying why not.
pub fn json(
    payload: &[u8],
    position: impl FnOnce() -> SourcePosition,
) -> Result<Event, DeadLetter> {
    Event::from_json(payload).map_err(|e| DeadLetter {
        reason_code: e.class(),
        reason: e.to_string(),
        position: position(),
        payload: String::from_utf8_lossy(payload).into_owned(),
    })
}

/// Tells FHIR (a JSON object with `resourceType`), HL7 v2 (`MSH`) and event JSON apart.
pub fn detect(payload: &[u8]) -> Result<Format, FormatError> {
    let start = payload
        .iter()
        .position(|b| !b.is_ascii_whitespace() && *b != 0x0b)
        .unwrap_or(payload.len());
    let body = &payload[start..];
    if body.starts_with(b"MSH") {
        Ok(Format::Hl7v2)
    } else if body.starts_with(b"{") {
        let fhir = body.windows(14).any(|w| w == b"\"resourceType\"");
        Ok(if fhir { Format::Fhir } else { Format::Json })
    } else {
        Err(FormatError::Unknown)
    }
}

/// The hospital number in a facility or organisation identifier: `3`, `H3`, `hospital-3`,
/// `Organization/3`.
pub fn hospital_number(s: &str) -> Option<i64> {
    let digits: String = s
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().ok()
}

/// The vitals slot of a LOINC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VitalSlot {
    HeartRate,
    Systolic,
    Diastolic,
    Temperature,
    OxygenSaturation,
    RespiratoryRate,
}

/// LOINC codes of the vital signs the model knows.
pub fn loinc_vital(code: &str) -> Option<VitalSlot> {
    Some(match code.trim() {
        "8867-4" => VitalSlot::HeartRate,
        "8480-6" => VitalSlot::Systolic,
        "8462-4" => VitalSlot::Diastolic,
        "8310-5" | "8331-1" | "8332-9" | "8333-7" => VitalSlot::Temperature,
        "59408-5" | "2708-6" | "20564-1" => VitalSlot::OxygenSaturation,
        "9279-1" => VitalSlot::RespiratoryRate,
        _ => return None,
    })
}

/// Sets one vital, converting a temperature in degrees Fahrenheit (UCUM `[degF]`).
pub fn set_vital(v: &mut Vitals, slot: VitalSlot, value: f64, unit: &str) {
    let unit = unit.trim();
    match slot {
        VitalSlot::HeartRate => v.heart_rate = Some(value),
        VitalSlot::Systolic => v.bp_systolic = Some(value),
        VitalSlot::Diastolic => v.bp_diastolic = Some(value),
        VitalSlot::Temperature => {
            let fahrenheit = matches!(unit, "[degF]" | "degF" | "F" | "°F");
            v.temperature_c = Some(if fahrenheit {
                (value - 32.0) * 5.0 / 9.0
            } else {
                value
            });
        }
        VitalSlot::OxygenSaturation => v.oxygen_saturation = Some(value),
        VitalSlot::RespiratoryRate => v.respiratory_rate = Some(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_formats() {
        assert_eq!(detect(b"\x0bMSH|^~\\&|"), Ok(Format::Hl7v2));
        assert_eq!(detect(br#" {"resourceType":"Bundle"}"#), Ok(Format::Fhir));
        assert_eq!(detect(br#"{"event_id":"1"}"#), Ok(Format::Json));
        assert_eq!(detect(b"hello"), Err(FormatError::Unknown));
        assert_eq!(hospital_number("Organization/hospital-12"), Some(12));
        assert_eq!(hospital_number("H3"), Some(3));
        assert_eq!(hospital_number("GOOD"), None);
    }
}
