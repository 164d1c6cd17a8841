//! Incremental Gold against the recompute baseline, on the same Silver records and the same
//! batch boundaries; the final documents of both must be equal or the run fails.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use cds_engine::model::SourcePosition;
use cds_engine::model::{Network, Pseudonymiser};
use cds_engine::silver::{Outcome, Silver, SilverRecord};

use crate::report::Report;
use crate::{baseline, incremental};

/// Silver records of the first `limit` lines of a JSON-lines file (duplicates and dead
/// letters dropped, quarantined records kept: Gold excludes them on both sides).
pub fn silver_prefix(
    file: &Path,
    network: &Network,
    limit: usize,
) -> anyhow::Result<Vec<SilverRecord>> {
    let mut silver = Silver::new(network.clone());
    let mut reader = BufReader::with_capacity(1 << 20, std::fs::File::open(file)?);
    let mut line = Vec::new();
    let mut records = Vec::new();
    let mut n = 0usize;
    while n < limit && reader.read_until(b'\n', &mut line)? > 0 {
        n += 1;
        let payload = line.strip_suffix(b"\n").unwrap_or(&line);
        let position = || SourcePosition {
            source: "bench".into(),
            partition: 0,
            offset: n as i64,
        };
        if let Outcome::Record(r) = silver.admit(cds_engine::decode::json(payload, position)) {
            records.push(*r);
        }
        line.clear();
    }
    Ok(records)
}

fn mean(v: &[Duration]) -> Duration {
    v.iter().sum::<Duration>() / (v.len().max(1) as u32)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Only the incremental side, for a profiler (`--profile-incremental B:PREFIX`): no baseline,
/// no equality check, no figures.
pub fn profile_incremental(
    file: &Path,
    network: &Network,
    prefix: usize,
    batch: usize,
) -> anyhow::Result<()> {
    let records = Arc::new(silver_prefix(file, network, prefix)?);
    let t = Instant::now();
    let ours = incremental::run(network, b"bench", records, batch);
    println!(
        "incremental only, B = {batch}, {prefix} events: {:.3} s ({} updates)",
        t.elapsed().as_secs_f64(),
        ours.latencies.len()
    );
    Ok(())
}

/// Runs both on the first `prefix` events of `file`, `batch` Silver records per update.
pub fn compare(
    report: &mut Report,
    file: &Path,
    network: &Network,
    prefix: usize,
    batch: usize,
) -> anyhow::Result<()> {
    let key = b"bench";
    let records = Arc::new(silver_prefix(file, network, prefix)?);
    let n = records.len();
    let updates = n.div_ceil(batch);

    let ours = incremental::run(network, key, records.clone(), batch);

    let ps = Pseudonymiser::new(key);
    let mut latencies = Vec::with_capacity(updates);
    let mut last = Default::default();
    let started = Instant::now();
    for end in (1..=updates).map(|i| (i * batch).min(n)) {
        let t = Instant::now();
        last = baseline::recompute(network, &ps, &records[..end]);
        latencies.push(t.elapsed());
    }
    let total = started.elapsed();
    let expected = baseline::comparable(last);
    if expected != ours.documents {
        bail!(
            "B = {batch}: the incremental KPIs differ from the recomputation:\n{}",
            baseline::differences(&expected, &ours.documents)
        );
    }

    let base_rate = n as f64 / total.as_secs_f64();
    let our_rate = n as f64 / ours.total.as_secs_f64();
    let (base_mean, our_mean) = (mean(&latencies), mean(&ours.latencies));
    // The baseline's cost grows with the data: its latency at the end of the prefix, over the
    // last tenth of the updates (one update alone is too noisy), is what a job would see there.
    let tail = (updates / 10).max(1);
    let base_last = mean(&latencies[latencies.len().saturating_sub(tail)..]);
    let our_last = mean(&ours.latencies[ours.latencies.len().saturating_sub(tail)..]);
    let what =
        format!("B = {batch}, first {prefix} events ({n} Silver records, {updates} updates)");
    report.line(
        "baseline",
        &format!("{what}: {} documents equal", expected.len()),
        "",
    );
    report.figure(
        "baseline",
        &format!("recompute baseline, {what}: throughput"),
        base_rate,
        "records/s",
    );
    report.figure(
        "baseline",
        &format!("incremental Gold, {what}: throughput"),
        our_rate,
        "records/s",
    );
    report.figure(
        "baseline",
        &format!("B = {batch}: throughput ratio incremental / recompute"),
        our_rate / base_rate,
        "x",
    );
    report.figure(
        "baseline",
        &format!("recompute baseline, {what}: mean update latency"),
        ms(base_mean),
        "ms",
    );
    report.figure(
        "baseline",
        &format!("incremental Gold, {what}: mean update latency"),
        ms(our_mean),
        "ms",
    );
    report.figure(
        "baseline",
        &format!("B = {batch}: mean update latency ratio recompute / incremental"),
        base_mean.as_secs_f64() / our_mean.as_secs_f64().max(1e-12),
        "x",
    );
    report.figure(
        "baseline",
        &format!(
            "B = {batch}: mean update latency over the last {tail} updates, recompute / incremental ({:.3} ms / {:.3} ms)",
            ms(base_last),
            ms(our_last)
        ),
        base_last.as_secs_f64() / our_last.as_secs_f64().max(1e-12),
        "x",
    );
    Ok(())
}
