//! Prometheus metrics of the whole pipeline, one registry per run, one struct per stage.
//!
//! Stages hold an `Arc<Metrics>` and add per batch (not per event) where they can, so the
//! counters cost nothing measurable on the hot path. `/metrics` renders the registry.
//!
//! Names follow Prometheus' conventions: a Unix time ends in `_timestamp_seconds`, a share in
//! `_ratio`, a counter in `_total`; `cds_build_info` carries the version as a label, and the
//! standard `process_*` metrics (CPU, memory, open files, start time) come with it on Linux.

mod checkpoint;
mod gold;
mod http;
mod lake;
mod ops;
mod rules;
mod silver;
mod sink;
mod source;

use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use checkpoint::CheckpointMetrics;
pub use gold::GoldMetrics;
pub use http::HttpMetrics;
pub use lake::LakeMetrics;
pub use ops::OpsMetrics;
pub use rules::RulesMetrics;
pub use silver::SilverMetrics;
pub use sink::SinkMetrics;
pub use source::SourceMetrics;

/// Every metric the engine exports, by the stage that writes it.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub source: SourceMetrics,
    pub silver: SilverMetrics,
    pub gold: GoldMetrics,
    pub rules: RulesMetrics,
    pub sink: SinkMetrics,
    pub checkpoint: CheckpointMetrics,
    pub lake: LakeMetrics,
    pub http: HttpMetrics,
    pub ops: OpsMetrics,
    /// The heartbeat of each pipeline stage (`/readyz`, `cds_stage_*`).
    pub stages: std::sync::Arc<crate::support::StageHealth>,
}

pub(super) fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    let _ = registry.register(Box::new(c.clone()));
    c
}

pub(super) fn gauge_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    let _ = registry.register(Box::new(g.clone()));
    g
}

pub(super) fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    let _ = registry.register(Box::new(c.clone()));
    c
}

pub(super) fn float_gauge(registry: &Registry, name: &str, help: &str) -> prometheus::Gauge {
    let g =
        prometheus::Gauge::new(name, help).unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    let _ = registry.register(Box::new(g.clone()));
    g
}

pub(super) fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    let _ = registry.register(Box::new(g.clone()));
    g
}

/// `cds_build_info{version} 1`: which build runs, for joins in queries and dashboards.
fn register_build_info(r: &Registry) {
    let info = IntGaugeVec::new(
        Opts::new("cds_build_info", "The engine's build; always 1"),
        &["version"],
    )
    .unwrap_or_else(|e| unreachable!("cds_build_info: {e}"));
    info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    let _ = r.register(Box::new(info));
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        register_build_info(&r);
        #[cfg(target_os = "linux")]
        {
            let _ = r.register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ));
        }
        Metrics {
            source: SourceMetrics::new(&r),
            silver: SilverMetrics::new(&r),
            gold: GoldMetrics::new(&r),
            rules: RulesMetrics::new(&r),
            sink: SinkMetrics::new(&r),
            checkpoint: CheckpointMetrics::new(&r),
            lake: LakeMetrics::new(&r),
            http: HttpMetrics::new(&r),
            ops: OpsMetrics::new(&r),
            stages: crate::support::StageHealth::new(&r),
            registry: r,
        }
    }

    /// Adds a metric owned by another part of the engine (a source's
    /// ([`crate::source::Source::collectors`]), the HTTP server's), so that `/metrics` shows it;
    /// a second registration of the same name is ignored.
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        match self.registry.register(collector) {
            Ok(()) | Err(prometheus::Error::AlreadyReg) => {}
            Err(e) => tracing::warn!(error = %e, "a metric is not exported"),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Sum over every label of a counter vector.
    pub fn total(vec: &IntCounterVec) -> u64 {
        use prometheus::core::Collector;
        vec.collect()
            .iter()
            .flat_map(|mf| {
                mf.get_metric()
                    .iter()
                    .map(|m| m.get_counter().get_value() as u64)
                    .collect::<Vec<_>>()
            })
            .sum()
    }
}
