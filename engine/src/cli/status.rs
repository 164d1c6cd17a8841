//! The live status line of `cds run` in a terminal, and the final summary.
//!
//! With a finite input of known size (a file, `cds ingest`, `cds replay --from-bronze`) the
//! line starts with a progress bar, the share read and the time left at the rate so far.

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
            // The share already read when progress was first seen (a resumed run skips what it
            // read before) and when: the time left is measured on what this run reads.
            let mut start: Option<(Instant, f64)> = None;
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
                let ratio = metrics.source.input_read_ratio.get();
                let (since, at_start) = *start.get_or_insert((Instant::now(), ratio));
                let progress = progress(ratio, at_start, since.elapsed());
                let line = format!(
                    "{progress}events {events:>10} | {rate:>9.0} ev/s | dead letters {:>6} | dq flags {:>7} | dup {:>6} | occupied {occupied}/{total_beds} beds ({pct:.1}%) | docs {:>8}",
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

/// `[#####-----]  52.3% ETA 1m04s | ` for a finite input of which `ratio` is read, `from` of it
/// `elapsed` ago; empty for a stream (ratio 0).
fn progress(ratio: f64, from: f64, elapsed: Duration) -> String {
    if ratio.is_nan() || ratio <= 0.0 {
        return String::new();
    }
    let ratio = ratio.min(1.0);
    const WIDTH: usize = 20;
    let filled = ((ratio * WIDTH as f64).round() as usize).min(WIDTH);
    let done = ratio - from.clamp(0.0, ratio);
    let left = if done > 0.0 {
        elapsed.as_secs_f64() * (1.0 - ratio) / done
    } else {
        0.0
    };
    let eta = if left >= 3600.0 {
        format!(
            "{}h{:02}m",
            (left / 3600.0) as u64,
            (left % 3600.0 / 60.0) as u64
        )
    } else {
        format!("{}m{:02}s", (left / 60.0) as u64, (left % 60.0) as u64)
    };
    format!(
        "[{}{}] {:>5.1}% ETA {eta} | ",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled),
        100.0 * ratio
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_shows_the_share_read_and_the_time_left_at_the_rate_so_far() {
        assert_eq!(progress(0.0, 0.0, Duration::from_secs(5)), "");
        assert_eq!(
            progress(0.25, 0.0, Duration::from_secs(30)),
            "[#####---------------]  25.0% ETA 1m30s | "
        );
        assert_eq!(
            progress(0.5, 0.0, Duration::from_secs(4000)),
            "[##########----------]  50.0% ETA 1h06m | "
        );
        assert_eq!(
            progress(1.0, 0.0, Duration::from_secs(9)),
            "[####################] 100.0% ETA 0m00s | "
        );
        // A resumed run that started at 40 % and read 10 % more in 30 s: 50 % left, 2m30s.
        assert_eq!(
            progress(0.5, 0.4, Duration::from_secs(30)),
            "[##########----------]  50.0% ETA 2m30s | "
        );
    }
}
