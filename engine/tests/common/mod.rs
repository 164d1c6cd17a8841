//! Shared by the integration tests: the pseudonymisation key they run with and the oracle,
//! [`cds_engine::gold::reference`] (KPIs recomputed from scratch, independent of the
//! engine's incremental Gold code).

#![allow(dead_code)]

pub mod delta;
pub mod http;
pub mod kafka;

use std::collections::BTreeMap;

use cds_engine::model::{Network, Pseudonymiser};
use cds_engine::silver::SilverRecord;
use serde_json::Value;

#[allow(unused_imports)] // each test binary uses its own part
pub use cds_engine::gold::reference::{comparable, differences};

/// The pseudonymisation key the tests run with.
pub const KEY: &[u8] = b"test-key";

/// Expected KPI documents by id, without `as_of` / `updated_at`.
pub fn recompute(network: &Network, records: &[SilverRecord]) -> BTreeMap<String, Value> {
    cds_engine::gold::reference::recompute(network, &Pseudonymiser::new(KEY), records)
}
