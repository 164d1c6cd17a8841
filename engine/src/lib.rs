//! `cds`: a real-time clinical decision support stream processor.
//!
//! # Layout
//!
//! One module per stage, in data-flow order, so that one event can be followed by opening them
//! in turn:
//!
//! - [`model`]: the event model, the canonical vocabulary, the hospital network, pseudonyms.
//! - `source`: where events come from (simulator, JSON-lines files).

pub mod model;
pub mod source;
pub mod silver;
pub mod gold;
pub mod sink;
pub mod lake;
pub mod metrics;
pub mod pipeline;
pub mod http;
