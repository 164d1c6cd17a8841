//! The live status line of `cds run` in a terminal, and the final summary.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;
use crate::pipeline::RunSummary;

/// Redraws one status line on stderr every second while `stop` is unset; nothing when stderr
/// is not a terminal (logs and CI output stay clean).
pub fn spawn(
    metrics: Arc<Metrics>,
    total_beds: u64,
    stop: Arc<AtomicBool>,
) -> Option<std::thread::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    std::thread::Builder::new()
        .name("cds-status".into())
        .spawn(move || {
            let mut last = (Instant::now(), 0u64);
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                if last.0.elapsed() < Duration::from_secs(1) {
                    continue;
                }
                let events = Metrics::total(&metrics.source.events_in);
                let rate = (events - last.1) as f64 / last.0.elapsed().as_secs_f64();
                last = (Instant::now(), events);
                let occupied = metrics.gold.occupied_beds.get();
                let pct = if total_beds > 0 { 100.0 * occupied as f64 / total_beds as f64 } else { 0.0 };
                let line = format!(
                    "events {events:>10} | {rate:>9.0} ev/s | dead letters {:>6} | dq flags {:>7} | dup {:>6} | occupied {occupied}/{total_beds} beds ({pct:.1}%) | docs {:>8}",
                    Metrics::total(&metrics.silver.dead_letters),
                    Metrics::total(&metrics.silver.dq_flags),
                    metrics.silver.duplicates.get(),
                    Metrics::total(&metrics.sink.documents_written),
                );
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[2K{line}");
                let _ = err.flush();
            }
            let _ = writeln!(std::io::stderr());
        })
        .ok()
}

/// The summary printed when a run ends.
pub fn summary(s: &RunSummary, total_beds: u64) -> String {
    // In a cluster whose processes read every partition, each reads every event.
    let elsewhere = match s.elsewhere {
        0 => String::new(),
        n => format!("; {n} records of the other processes' patients"),
    };
    format!(
        "processed {} events in {:.2} s ({:.0} events/s{elsewhere}): {} to Gold, {} quarantined, {} duplicates, {} dead letters; {} documents written; {} of {} beds occupied",
        s.events,
        s.elapsed.as_secs_f64(),
        s.events_per_second(),
        s.gold_records,
        s.quarantined,
        s.duplicates,
        s.dead_letters,
        s.documents_written,
        s.occupied,
        total_beds,
    )
}
