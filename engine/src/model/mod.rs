//! The event model of docs/design.md: what an event is, the canonical vocabulary, the hospital
//! network, and the pseudonymisation of patient identifiers.

mod dead_letter;
mod document;
mod event;
mod network;
mod pseudonym;
mod vocabulary;

pub use dead_letter::{DeadLetter, SourcePosition};
pub use document::Document;
pub use event::{format_time, parse_time, Event, EventType, ParseError, Timestamp, Vitals};
pub use network::{
    Capacity, Department, DepartmentId, DepartmentMatch, Hospital, HospitalId, LiveNetwork,
    Network, NetworkError, NetworkView, DEFAULT_DEPARTMENTS_CSV, DEFAULT_KIND,
};
pub use pseudonym::{display as patient_ref, PseudonymError, Pseudonymiser, PSEUDONYM_KEY_ENV};
pub use vocabulary::{AgeBand, Gender, Priority, WEEKDAYS};
