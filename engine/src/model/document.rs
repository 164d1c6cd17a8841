//! The unit every output carries: a KPI or alert document, the same JSON whichever sink, lake
//! table or HTTP route takes it.

use serde::Serialize;
use serde_json::Value;

/// One document for the `kpis` or `alerts` container: the same JSON for every sink.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Document {
    pub id: String,
    /// The partition key value (`/hospital_id`).
    pub hospital_id: i64,
    pub body: Value,
}
