use serde::Deserialize;

use crate::model::{parse_time, Timestamp};

/// Configuration of the hospital network simulator.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatorConfig {
    /// The same seed always gives the same events.
    pub seed: u64,
    /// Stop after this many lines (`None`: never).
    pub max_events: Option<u64>,
    /// Lines per second in real time (`None`: as fast as possible).
    pub rate: Option<f64>,
    /// Probability that an emitted event gets one dirty-data scenario (0 to 1).
    pub dirty_rate: f64,
    /// Start of the simulated clock.
    pub start: Timestamp,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            seed: 1,
            max_events: None,
            rate: None,
            dirty_rate: 0.0,
            start: parse_time("2026-03-02T00:00:00Z").unwrap_or_default(),
        }
    }
}
