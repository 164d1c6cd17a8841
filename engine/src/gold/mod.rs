//! Gold: live KPIs maintained incrementally with differential dataflow.
//!
//! [`FactBuilder`] turns Silver records into small interned facts; [`dataflow::build`] keeps the
//! KPIs of docs/design.md up to date and emits one [`KpiDelta`] per changed key and epoch;
//! [`KpiState`] adds those up and renders the changed documents for the sinks.
//!
//! Each operator of the dataflow is an extension trait in its own file, with a runnable example:
//! [`LatestLocation`] (where each patient is), [`Occupancy`], [`VitalsCensus`],
//! [`LengthOfStay`] and [`AdmissionCounts`].

mod admissions;
mod census;
mod dataflow;
mod documents;
mod facts;
mod location;
mod occupancy;
pub mod reference;
mod stays;
mod tally;

pub use admissions::{AdmissionCounts, TopDiagnoses, TOP_DIAGNOSES};
pub use census::VitalsCensus;
pub use dataflow::{build, GoldInputs, GoldOutput, KpiDelta};
pub use documents::KpiState;
pub use facts::{
    micros, AdmissionFact, AdtFact, AdtKind, Cancellable, FactBuilder, GoldBatch, GoldState,
    Micros, Placement, Retracted, StayFact, VitalsValues, VITAL_NAMES,
};
pub use location::LatestLocation;
pub use occupancy::Occupancy;
pub use stays::LengthOfStay;
pub use tally::Tally;

/// Occupancy of a department: `[occupied, by gender M F O U, by age band (6)]`.
pub type OccupancyTally = Tally<11>;
/// Vitals census: `[patients, readings per vital (6), sums in hundredths per vital (6)]`.
pub type VitalsTally = Tally<13>;
/// Length of stay: `[discharges, total seconds]`.
pub type StayTally = Tally<2>;
