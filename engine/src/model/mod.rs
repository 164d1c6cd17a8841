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
pub use network::{Capacity, Hospital, Network, NetworkError, DEFAULT_DEPARTMENTS_CSV};
pub use pseudonym::{display as patient_ref, PseudonymError, Pseudonymiser, PSEUDONYM_KEY_ENV};
pub use vocabulary::{AgeBand, Department, Gender, Priority, WEEKDAYS};
