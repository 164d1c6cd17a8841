//! A heartbeat per pipeline stage, so that a stage that stops advancing is seen: `/readyz`
//! answers 503 naming it, and `/metrics` exports how many threads of each stage are busy and the time of its
//! last progress.
//!
//! A stage is *busy* from the moment it takes input until it is done with it; it is *stalled*
//! when it has been busy without progress for longer than the stall limit (a hung write, a
//! decoder in an endless loop, a deadlock). An idle stage (blocked on an empty input) is never
//! stalled, however long it waits: silence on an empty input is health, silence with input in
//! hand is not.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};

/// The stages of the pipeline, in data-flow order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reads, decodes and cleans payloads (busy: a polled batch in hand).
    Ingest,
    /// The differential dataflow workers (busy: an epoch's batch in hand).
    Gold,
    /// The clinical rules thread (busy: an epoch's records in hand).
    Rules,
    /// Writes documents to the sink (busy: KPI changes or alerts in hand).
    Sink,
    /// Writes the lake's tables (busy: rows in hand or a commit under way).
    Lake,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Ingest,
        Stage::Gold,
        Stage::Rules,
        Stage::Sink,
        Stage::Lake,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Ingest => "ingest",
            Stage::Gold => "gold",
            Stage::Rules => "rules",
            Stage::Sink => "sink",
            Stage::Lake => "lake",
        }
    }
}

#[derive(Debug)]
struct Beat {
    /// Threads of the stage that are busy now.
    busy: AtomicI64,
    /// Milliseconds since `StageHealth::started` of the last progress.
    last_ms: AtomicU64,
    busy_gauge: IntGauge,
    progress_gauge: IntGauge,
}

/// The heartbeats of every stage of one run.
#[derive(Debug)]
pub struct StageHealth {
    started: Instant,
    beats: [Beat; 5],
    stall_after: AtomicU64,
}

/// A stage that has stopped advancing with input in hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    pub stage: &'static str,
    /// Its threads that are busy.
    pub busy: i64,
    pub silent_for: Duration,
}

/// Marks a stage busy while it lives; dropping it (also on an error path) is progress.
#[must_use = "the stage is busy only while the guard lives"]
#[derive(Debug)]
pub struct Busy<'a> {
    health: &'a StageHealth,
    stage: Stage,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let b = self.health.beat(self.stage);
        let busy = b.busy.fetch_sub(1, Ordering::AcqRel) - 1;
        b.busy_gauge.set(busy.max(0));
        self.health.progress(self.stage);
    }
}

impl StageHealth {
    /// The default stall limit: far above any healthy pause (a checkpoint, a lake commit, a
    /// sink retry with backoff), far below what an operator would tolerate.
    pub const DEFAULT_STALL_AFTER: Duration = Duration::from_secs(30);

    /// Registers `cds_stage_busy{stage}` and `cds_stage_last_progress_timestamp_seconds{stage}`.
    pub fn new(registry: &Registry) -> Arc<Self> {
        let vec = |name: &str, help: &str| {
            let v = IntGaugeVec::new(Opts::new(name, help), &["stage"])
                .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
            let _ = registry.register(Box::new(v.clone()));
            v
        };
        let busy = vec(
            "cds_stage_busy",
            "Threads of a pipeline stage working on input now",
        );
        let progress = vec(
            "cds_stage_last_progress_timestamp_seconds",
            "Unix time of a pipeline stage's last progress",
        );
        let now = unix_seconds();
        let beats = Stage::ALL.map(|s| {
            let progress_gauge = progress.with_label_values(&[s.name()]);
            progress_gauge.set(now);
            Beat {
                busy: AtomicI64::new(0),
                last_ms: AtomicU64::new(0),
                busy_gauge: busy.with_label_values(&[s.name()]),
                progress_gauge,
            }
        });
        Arc::new(StageHealth {
            started: Instant::now(),
            beats,
            stall_after: AtomicU64::new(Self::DEFAULT_STALL_AFTER.as_millis() as u64),
        })
    }

    /// Sets the stall limit.
    pub fn set_stall_after(&self, limit: Duration) {
        let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        self.stall_after.store(ms, Ordering::Relaxed);
    }

    fn beat(&self, stage: Stage) -> &Beat {
        &self.beats[stage as usize]
    }

    /// `stage` took input; it is busy until the guard drops.
    pub fn busy(&self, stage: Stage) -> Busy<'_> {
        let b = self.beat(stage);
        let busy = b.busy.fetch_add(1, Ordering::AcqRel) + 1;
        b.busy_gauge.set(busy);
        self.progress(stage);
        Busy {
            health: self,
            stage,
        }
    }

    /// `stage` advanced without taking input (a poll that found nothing, a finished commit).
    pub fn progress(&self, stage: Stage) {
        let b = self.beat(stage);
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        b.last_ms.store(ms, Ordering::Release);
        b.progress_gauge.set(unix_seconds());
    }

    /// The stages stalled now, in data-flow order.
    pub fn stalls(&self) -> Vec<Stall> {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let limit = self.stall_after.load(Ordering::Relaxed);
        Stage::ALL
            .iter()
            .filter_map(|&s| {
                let b = self.beat(s);
                let busy = b.busy.load(Ordering::Acquire);
                let silent = now.saturating_sub(b.last_ms.load(Ordering::Acquire));
                (busy > 0 && silent > limit).then(|| Stall {
                    stage: s.name(),
                    busy,
                    silent_for: Duration::from_millis(silent),
                })
            })
            .collect()
    }
}

/// Now, in whole seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalled_only_while_busy_without_progress() {
        let health = StageHealth::new(&Registry::new());
        health.set_stall_after(Duration::from_millis(20));
        let sink = health.busy(Stage::Sink);
        assert!(health.stalls().is_empty(), "fresh input is not a stall");
        std::thread::sleep(Duration::from_millis(40));
        // Rules waited as long with nothing in hand: idle, not stalled.
        let stalls = health.stalls();
        assert_eq!(stalls.len(), 1);
        assert_eq!((stalls[0].stage, stalls[0].busy), ("sink", 1));
        drop(sink);
        assert!(health.stalls().is_empty());
        // Progress inside a long piece of work resets the clock.
        let _gold = health.busy(Stage::Gold);
        std::thread::sleep(Duration::from_millis(40));
        health.progress(Stage::Gold);
        assert!(health.stalls().is_empty());
    }
}
