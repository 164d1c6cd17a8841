//! Evaluation rate of the whole rule pack: the `RulesStage` the pipeline's rules threads run,
//! fed the Silver records of the simulated input in pipeline-sized batches, on one thread and
//! split into one share per core (each share reading every record, as in the pipeline).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use cds_engine::gold::FactBuilder;
use cds_engine::metrics::Metrics;
use cds_engine::model::{EventType, Network, Pseudonymiser};
use cds_engine::rules::{RuleInput, RulesStage};
use cds_engine::silver::SilverRecord;

use crate::report::Report;

/// Evaluates the pack over `records` (Gold-eligible ones, as the pipeline sends them).
pub fn measure(
    report: &mut Report,
    dir: &Path,
    network: &Network,
    records: &[SilverRecord],
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let mut stage = RulesStage::load(dir, network.clone(), metrics.clone())?;
    let facts = FactBuilder::new(Pseudonymiser::new(b"bench"), 1);
    let eligible: Vec<RuleInput> = records
        .iter()
        .filter(|r| !r.quarantined() && r.kind.is_some() && r.department.is_some())
        .filter_map(|r| {
            let p = r.event.patient_id.as_deref()?;
            Some(RuleInput::new(facts.patient_key(p), Box::new(r.clone())))
        })
        .collect();
    let vitals = eligible
        .iter()
        .filter(|input| input.record.kind == Some(EventType::Vitals))
        .count();
    let t = Instant::now();
    let mut alerts = 0usize;
    for chunk in eligible.chunks(16_384) {
        alerts += stage.process(chunk).len();
    }
    let secs = t.elapsed().as_secs_f64();
    let what = format!(
        "whole rule pack, one rules thread, {} events ({vitals} VITALS), {alerts} alerts",
        eligible.len()
    );
    report.figure(
        "rules",
        &format!("{what}: events/s"),
        eligible.len() as f64 / secs,
        "events/s",
    );
    report.figure(
        "rules",
        &format!("{what}: VITALS events/s"),
        vitals as f64 / secs,
        "events/s",
    );

    // Where the time goes: each rule's own evaluation time (its `data`, `logic` and, when it
    // fires, `action`), from the stage's per-rule counters.
    for mlm in stage.rules() {
        let labels = [mlm.as_str()];
        let evaluations = metrics
            .rules
            .rule_evaluations
            .with_label_values(&labels)
            .get();
        let seconds = metrics
            .rules
            .rule_eval_seconds
            .with_label_values(&labels)
            .get();
        if evaluations > 0 {
            report.figure(
                "rules",
                &format!("{mlm}: time per evaluation ({evaluations} evaluations)"),
                seconds * 1e6 / evaluations as f64,
                "µs",
            );
        }
    }

    let threads = cds_engine::pipeline::auto_rules_threads();
    let shares =
        RulesStage::load(dir, network.clone(), Arc::new(Metrics::new()))?.into_shares(threads)?;
    let t = Instant::now();
    let shared_alerts: usize = std::thread::scope(|scope| {
        let running: Vec<_> = shares
            .into_iter()
            .map(|mut share| {
                let eligible = &eligible;
                scope.spawn(move || {
                    eligible
                        .chunks(16_384)
                        .map(|chunk| share.process(chunk).len())
                        .sum::<usize>()
                })
            })
            .collect();
        running.into_iter().map(|t| t.join().unwrap_or(0)).sum()
    });
    let secs = t.elapsed().as_secs_f64();
    if shared_alerts != alerts {
        anyhow::bail!("{threads} rules threads gave {shared_alerts} alerts, one thread {alerts}");
    }
    report.figure(
        "rules",
        &format!(
            "whole rule pack, {threads} rules threads (one share of the patients each), {} events, {alerts} alerts: events/s",
            eligible.len()
        ),
        eligible.len() as f64 / secs,
        "events/s",
    );
    Ok(())
}
