//! The baseline: a scheduled micro-batch job that recomputes every KPI from scratch over the
//! Silver data after each batch, as a Spark/Databricks job over a Delta table would. It is the
//! engine's reference implementation ([`cds_engine::gold::reference`]), also the oracle of the
//! integration tests, so the comparison is between two programs that produce the same
//! documents.

pub use cds_engine::gold::reference::{comparable, differences, recompute};
