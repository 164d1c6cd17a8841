//! The simulator as a [`Source`] of `cds run`: the same lines `cds simulate` writes, paced in
//! real time when a rate is set.

use std::time::{Duration, Instant};

use super::{Pacer, Simulator, SimulatorConfig};
use crate::model::Network;
use crate::source::{Poll, RawBatch, Source, SourceError};

/// Feeds the engine from the built-in hospital network simulator.
pub struct SimulatorSource {
    simulator: Simulator,
    pacer: Pacer,
    rate: Option<f64>,
    identity: String,
    /// Lines regenerated to continue from a checkpoint (not paced).
    skipped: u64,
}

impl SimulatorSource {
    pub fn new(config: SimulatorConfig, network: &Network) -> Self {
        let rate = config.rate;
        let identity = format!(
            "simulator seed={} start={} dirty_rate={}",
            config.seed,
            crate::model::format_time(&config.start),
            config.dirty_rate
        );
        SimulatorSource {
            identity,
            skipped: 0,
            pacer: Pacer::new(rate),
            simulator: Simulator::new(config, network),
            rate,
        }
    }
}

impl Source for SimulatorSource {
    fn name(&self) -> &str {
        "simulator"
    }

    fn identity(&self) -> String {
        self.identity.clone()
    }

    fn skip_to(&mut self, upto: &[crate::source::Position]) -> Result<(), SourceError> {
        // The same seed gives the same events: regenerate the processed ones, unpaced.
        let last = upto.iter().map(|p| p.offset).max().unwrap_or(0);
        while (self.simulator.produced() as i64) < last {
            if self.simulator.next_line().is_none() {
                break;
            }
        }
        // Pace what comes next from here, not from the start of the regenerated stream.
        self.pacer = Pacer::new(self.rate);
        self.skipped = self.simulator.produced();
        Ok(())
    }

    fn poll(
        &mut self,
        batch: &mut RawBatch,
        max: usize,
        wait: Duration,
    ) -> Result<Poll, SourceError> {
        // When paced, a poll returns what the rate allows within `wait`, so batches stay small
        // and latency low; unpaced, it fills the batch.
        let budget = match self.rate {
            Some(r) => ((r * wait.as_secs_f64()).ceil() as usize).clamp(1, max),
            None => max,
        };
        let started = Instant::now();
        let before = batch.len();
        while batch.len() - before < budget {
            let Some(line) = self.simulator.next_line() else {
                return Ok(if batch.len() > before {
                    Poll::Ready
                } else {
                    Poll::End
                });
            };
            let n = self.simulator.produced();
            batch.push(&line, 0, n as i64);
            self.pacer.pace(n - self.skipped);
            if self.rate.is_some() && started.elapsed() >= wait {
                break;
            }
        }
        Ok(Poll::Ready)
    }
}
