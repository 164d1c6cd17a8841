//! Slowly changing dimensions of type 2: patients (under their pseudonymous key) and hospital
//! departments, and the watcher that turns departments-file changes into department versions.
//!
//! Each row is one version of a thing: its tracked attributes, `effective_from`, `effective_to`
//! (null while current) and `is_current`. A version that differs from the current one closes it
//! and becomes current; an unchanged one changes nothing, so re-applying the same versions (a
//! replay after a crash, a restart with the same `config/departments.csv`) adds no row; a
//! department that leaves the file is closed. The surrogate key is a hash of the dimension, the
//! natural key and `effective_from`: the same version gets the same key in every run, on every
//! worker, in the lake and in the SQLite store.
//!
//! - [`Scd2`] keeps the versions in memory; the lake encodes them as Delta tables
//!   (`crate::lake::dims`), [`store`] as the SQLite store's `dim_department` table.
//! - [`watcher`] reads the departments file (or [`topic`], a Kafka topic) while the engine
//!   runs.

mod scd2;
pub mod store;
pub mod topic;
pub mod watcher;

pub(crate) use scd2::Kind;
pub use scd2::{
    department_versions, patient_version, surrogate_key, Dimension, Row, Scd2, Value, Version,
};
