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
    /// A surge of arrivals (a mass-casualty afternoon), if any. Set by the forecast backtest;
    /// not a configuration key.
    #[serde(skip)]
    pub surge: Option<Surge>,
    /// Discharges happen on day rounds, 09:00-17:00 (a stay that ends outside them waits for
    /// the next), as in most hospitals: occupancy then rises overnight and falls by day. Set by
    /// the forecast backtest; not a configuration key (the default stream keeps its shape).
    #[serde(skip)]
    pub daytime_discharges: bool,
}

/// A period of simulated time with `factor` times the usual arrivals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Surge {
    pub start: Timestamp,
    pub hours: f64,
    pub factor: f64,
}

impl Surge {
    /// Whether `at` falls in the surge.
    pub fn covers(&self, at: &Timestamp) -> bool {
        let since = at.signed_duration_since(self.start).num_seconds() as f64 / 3600.0;
        (0.0..self.hours).contains(&since)
    }
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            seed: 1,
            max_events: None,
            rate: None,
            dirty_rate: 0.0,
            start: parse_time("2026-03-02T00:00:00Z").unwrap_or_default(),
            surge: None,
            daytime_discharges: false,
        }
    }
}
