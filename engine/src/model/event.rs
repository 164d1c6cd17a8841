//! The input event as it arrives: one JSON object per Kafka message or JSON line.
//!
//! Parsing is deliberately lenient about *content* (an unknown department or event type is a
//! Silver data-quality matter, not a parse failure) and strict about *shape*: a payload that is
//! not a JSON object, has no `event_id`, or has no valid `event_timestamp` is not an event and
//! goes to the dead-letter store with the reason.

use std::fmt;

use chrono::{DateTime, FixedOffset, SecondsFormat};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// An RFC 3339 instant that keeps the offset it was written with (weekdays are taken in it).
pub type Timestamp = DateTime<FixedOffset>;

/// Why a payload could not become an [`Event`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// Not JSON, or not a JSON object, or a field of the wrong type.
    #[error("malformed JSON: {0}")]
    Malformed(String),
    /// A JSON object without `event_id`.
    #[error("missing event_id")]
    MissingEventId,
    /// A JSON object without a valid RFC 3339 `event_timestamp`.
    #[error("missing or invalid event_timestamp")]
    MissingTimestamp,
}

/// The kinds of event of the event model: the four of docs/design.md, and the two cancels that
/// registration systems send when an admission or a discharge was entered by mistake (HL7 v2
/// A11 and A13, a FHIR Encounter `cancelled` or `entered-in-error`). A cancel retracts the
/// patient's latest admission or discharge, so that every KPI comes out as if it had never
/// happened. And demographic updates, which need no hospital or department.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    Admission,
    Discharge,
    Transfer,
    Vitals,
    CancelAdmission,
    CancelDischarge,
    /// New demographics of a patient (HL7 ADT^A08, a FHIR Patient that changed): the gender
    /// and age it states replace those of the patient's placement from its time on.
    PatientUpdate,
}

impl EventType {
    /// All event types, in the order of the event model.
    pub const ALL: [EventType; 7] = [
        Self::Admission,
        Self::Discharge,
        Self::Transfer,
        Self::Vitals,
        Self::CancelAdmission,
        Self::CancelDischarge,
        Self::PatientUpdate,
    ];

    /// The wire name (`ADMISSION`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admission => "ADMISSION",
            Self::Discharge => "DISCHARGE",
            Self::Transfer => "TRANSFER",
            Self::Vitals => "VITALS",
            Self::CancelAdmission => "CANCEL_ADMISSION",
            Self::CancelDischarge => "CANCEL_DISCHARGE",
            Self::PatientUpdate => "PATIENT_UPDATE",
        }
    }

    /// Parses a wire name, ignoring ASCII case and surrounding blanks.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }

    /// ADMISSION, TRANSFER and DISCHARGE move patients; VITALS and the cancels do not.
    pub fn is_adt(self) -> bool {
        matches!(self, Self::Admission | Self::Transfer | Self::Discharge)
    }

    /// CANCEL_ADMISSION and CANCEL_DISCHARGE retract an earlier event.
    pub fn is_cancel(self) -> bool {
        matches!(self, Self::CancelAdmission | Self::CancelDischarge)
    }
}

/// Bedside observations. Values are in the units of the event model; a temperature sent in
/// Fahrenheit (`temperature_f`) is converted to Celsius when parsed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Vitals {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heart_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bp_systolic: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bp_diastolic: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<f64>,
    /// Fahrenheit as sent by some monitors; parsing moves it into `temperature_c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_f: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oxygen_saturation: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub respiratory_rate: Option<f64>,
    /// ACVPU: `A`lert, new `C`onfusion, responds to `V`oice, to `P`ain, `U`nresponsive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consciousness: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplemental_o2: Option<bool>,
}

impl Vitals {
    /// Moves a Fahrenheit reading into `temperature_c` when no Celsius one was sent.
    fn normalise(&mut self) {
        if let Some(f) = self.temperature_f.take() {
            if self.temperature_c.is_none() {
                self.temperature_c = Some((f - 32.0) * 5.0 / 9.0);
            }
        }
    }
}

/// One event of the event model, as parsed (Bronze shape). Silver repairs it in place.
///
/// Categorical fields stay strings here: mapping them to the canonical vocabulary, and
/// deciding what to do when that fails, is Silver's job (see `silver`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Event {
    pub event_id: String,
    pub event_type: Option<String>,
    pub event_timestamp: Timestamp,
    pub patient_id: Option<String>,
    pub hospital_id: Option<i64>,
    pub department: Option<String>,
    pub bed_id: Option<String>,
    pub gender: Option<String>,
    pub age: Option<i64>,
    pub admission_time: Option<Timestamp>,
    pub discharge_time: Option<Timestamp>,
    pub admission_priority: Option<String>,
    pub diagnosis_code: Option<String>,
    pub insurance_type: Option<String>,
    pub vitals: Option<Vitals>,
    /// Attributes the model does not know yet (schema evolution): kept, never a failure.
    pub extra: Map<String, Value>,
}

impl Event {
    /// Parses one payload (a JSON object) into an event.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ParseError> {
        let parsed: Parsed = serde_json::from_slice(bytes).map_err(|e| {
            let text = e.to_string();
            if text.starts_with(MISSING_ID) {
                ParseError::MissingEventId
            } else if text.starts_with(MISSING_TS) {
                ParseError::MissingTimestamp
            } else {
                ParseError::Malformed(text)
            }
        })?;
        Ok(parsed.0)
    }

    /// The event as one JSON line (the simulator's output and the Silver store's format).
    pub fn to_json(&self) -> String {
        // Serialising plain data into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl ParseError {
    /// A fixed label for metrics (`cds_dead_letters_total{reason=...}`).
    pub fn class(&self) -> &'static str {
        match self {
            ParseError::Malformed(_) => "malformed_json",
            ParseError::MissingEventId => "missing_event_id",
            ParseError::MissingTimestamp => "missing_event_timestamp",
        }
    }
}

const MISSING_ID: &str = "missing event_id";
const MISSING_TS: &str = "missing or invalid event_timestamp";

/// Formats a timestamp the way the event model writes them.
pub fn format_time(t: &Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Parses an RFC 3339 timestamp.
pub fn parse_time(s: &str) -> Option<Timestamp> {
    DateTime::parse_from_rfc3339(s.trim()).ok()
}

struct Parsed(Event);

impl<'de> Deserialize<'de> for Parsed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EventVisitor)
    }
}

/// A hand-written visitor instead of `#[serde(flatten)]`: flatten buffers every field into an
/// intermediate tree, which costs about half the parse time on this hot path.
struct EventVisitor;

fn time_field<E: de::Error>(raw: Option<String>) -> Result<Option<Timestamp>, E> {
    match raw {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => parse_time(&s)
            .map(Some)
            .ok_or_else(|| E::custom(format!("invalid RFC 3339 time {s:?}"))),
    }
}

/// Accepts a JSON integer, a float with no fraction, or a numeric string (some feeds quote ids).
fn int_field<'de, A: MapAccess<'de>>(map: &mut A, name: &str) -> Result<Option<i64>, A::Error> {
    let v: Value = map.next_value()?;
    match &v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| de::Error::custom(format!("{name}: expected an integer"))),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| de::Error::custom(format!("{name}: expected an integer"))),
        _ => Err(de::Error::custom(format!("{name}: expected an integer"))),
    }
}

impl<'de> Visitor<'de> for EventVisitor {
    type Value = Parsed;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parsed, A::Error> {
        let mut e = Event::default();
        let mut id: Option<String> = None;
        let mut ts: Option<String> = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "event_id" => id = map.next_value::<Option<StringOrNumber>>()?.map(|s| s.0),
                "event_type" => e.event_type = map.next_value()?,
                "event_timestamp" => ts = map.next_value()?,
                "patient_id" => {
                    e.patient_id = map.next_value::<Option<StringOrNumber>>()?.map(|s| s.0)
                }
                "hospital_id" => e.hospital_id = int_field(&mut map, "hospital_id")?,
                "department" => e.department = map.next_value()?,
                "bed_id" => e.bed_id = map.next_value()?,
                "gender" => e.gender = map.next_value()?,
                "age" => e.age = int_field(&mut map, "age")?,
                "admission_time" => e.admission_time = time_field(map.next_value()?)?,
                "discharge_time" => e.discharge_time = time_field(map.next_value()?)?,
                "admission_priority" => e.admission_priority = map.next_value()?,
                "diagnosis_code" => e.diagnosis_code = map.next_value()?,
                "insurance_type" => e.insurance_type = map.next_value()?,
                "vitals" => {
                    e.vitals = map.next_value::<Option<Vitals>>()?.map(|mut v| {
                        v.normalise();
                        v
                    })
                }
                _ => {
                    let v: Value = map.next_value()?;
                    e.extra.insert(key.into_owned(), v);
                }
            }
        }
        e.event_id = match id {
            Some(id) if !id.trim().is_empty() => id,
            _ => return Err(de::Error::custom(MISSING_ID)),
        };
        e.event_timestamp = ts
            .as_deref()
            .and_then(parse_time)
            .ok_or_else(|| de::Error::custom(MISSING_TS))?;
        Ok(Parsed(e))
    }
}

/// Identifiers are strings in the model, but numeric ids are common in feeds.
struct StringOrNumber(String);

impl<'de> Deserialize<'de> for StringOrNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StringOrNumber;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<StringOrNumber, E> {
                Ok(StringOrNumber(s.to_owned()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<StringOrNumber, E> {
                Ok(StringOrNumber(s))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<StringOrNumber, E> {
                Ok(StringOrNumber(n.to_string()))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<StringOrNumber, E> {
                Ok(StringOrNumber(n.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("event_id", &self.event_id)?;
        m.serialize_entry("event_type", &self.event_type)?;
        m.serialize_entry("event_timestamp", &format_time(&self.event_timestamp))?;
        m.serialize_entry("patient_id", &self.patient_id)?;
        m.serialize_entry("hospital_id", &self.hospital_id)?;
        m.serialize_entry("department", &self.department)?;
        if self.bed_id.is_some() {
            m.serialize_entry("bed_id", &self.bed_id)?;
        }
        m.serialize_entry("gender", &self.gender)?;
        m.serialize_entry("age", &self.age)?;
        let at = self.admission_time.as_ref().map(format_time);
        if at.is_some() || self.event_type.as_deref() != Some("VITALS") {
            m.serialize_entry("admission_time", &at)?;
        }
        if self.discharge_time.is_some() || self.event_type.as_deref() == Some("DISCHARGE") {
            m.serialize_entry(
                "discharge_time",
                &self.discharge_time.as_ref().map(format_time),
            )?;
        }
        for (k, v) in [
            ("admission_priority", &self.admission_priority),
            ("diagnosis_code", &self.diagnosis_code),
            ("insurance_type", &self.insurance_type),
        ] {
            if v.is_some() {
                m.serialize_entry(k, v)?;
            }
        }
        if let Some(v) = &self.vitals {
            m.serialize_entry("vitals", v)?;
        }
        for (k, v) in &self.extra {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_event_and_keeps_unknown_fields() {
        let raw =
            br#"{"event_id":"e1","event_type":"VITALS","event_timestamp":"2026-03-02T10:00:00Z",
            "patient_id":"P1","hospital_id":3,"department":"ICU","gender":"F","age":71,
            "vitals":{"heart_rate":110,"temperature_f":101.3,"consciousness":"A"},
            "triage_score":4}"#;
        let e = Event::from_json(raw).expect("valid event");
        assert_eq!(e.event_id, "e1");
        assert_eq!(e.hospital_id, Some(3));
        let v = e.vitals.as_ref().expect("vitals");
        assert!((v.temperature_c.expect("converted") - 38.5).abs() < 1e-9);
        assert_eq!(e.extra.get("triage_score"), Some(&Value::from(4)));
        let again = Event::from_json(e.to_json().as_bytes()).expect("round trip");
        assert_eq!(again, e);
    }

    #[test]
    fn shape_errors_are_reported() {
        assert!(matches!(
            Event::from_json(b"not json"),
            Err(ParseError::Malformed(_))
        ));
        assert!(matches!(
            Event::from_json(b"[1,2]"),
            Err(ParseError::Malformed(_))
        ));
        assert_eq!(
            Event::from_json(br#"{"event_timestamp":"2026-03-02T10:00:00Z"}"#),
            Err(ParseError::MissingEventId)
        );
        assert_eq!(
            Event::from_json(br#"{"event_id":"x","event_timestamp":"yesterday"}"#),
            Err(ParseError::MissingTimestamp)
        );
        assert!(matches!(
            Event::from_json(
                br#"{"event_id":"x","event_timestamp":"2026-03-02T10:00:00Z","age":"old"}"#
            ),
            Err(ParseError::Malformed(_))
        ));
    }

    #[test]
    fn quoted_numbers_and_numeric_ids_are_accepted() {
        let e = Event::from_json(
            br#"{"event_id":17,"event_timestamp":"2026-03-02T10:00:00+01:00","hospital_id":"4","age":"80"}"#,
        )
        .expect("lenient numbers");
        assert_eq!(e.event_id, "17");
        assert_eq!(e.hospital_id, Some(4));
        assert_eq!(e.age, Some(80));
    }
}
