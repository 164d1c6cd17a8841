//! Resident memory per admitted patient: the whole pipeline (Silver, facts, Gold dataflow,
//! KPI state, SQLite sink) admits N patients, each with a history of vitals readings, and
//! holds them; the process's RSS is read before the run and again once every event is
//! written, while the pipeline still holds its state.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cds_engine::gold::micros;
use cds_engine::metrics::Metrics;
use cds_engine::model::{parse_time, HospitalId, Network, Pseudonymiser, Timestamp};
use cds_engine::pipeline::{self, PipelineConfig, Until};
use cds_engine::sink::sqlite::{SqliteConfig, SqliteSink};
use cds_engine::source::{Poll, RawBatch, Source, SourceError};

use crate::machine::rss_bytes;
use crate::observe::{latest, ObservedSink, WriteLog};
use crate::report::Report;
use crate::synth;

/// Admits `patients` patients, then gives each `readings` vitals readings (round by round);
/// once the sink has written the last event's watermark, reads RSS and ends.
struct Admit {
    network_places: Vec<(HospitalId, &'static str)>,
    start: Timestamp,
    patients: u64,
    readings: u64,
    seq: u64,
    line: String,
    log: WriteLog,
    rss_after: Arc<Mutex<Option<u64>>>,
    finished: Option<Instant>,
    /// When the last event was handed over.
    emitted: Option<Instant>,
}

impl Admit {
    fn total(&self) -> u64 {
        self.patients * (1 + self.readings)
    }
}

impl Source for Admit {
    fn name(&self) -> &str {
        "bench-admit"
    }

    fn poll(
        &mut self,
        batch: &mut RawBatch,
        max: usize,
        wait: Duration,
    ) -> Result<Poll, SourceError> {
        let total = self.total();
        if self.seq >= total {
            let last = micros(&synth::event_time(self.start, total - 1));
            if latest(&self.log).is_some_and(|w| w >= last) {
                // Everything is written; let the sink thread settle, then read.
                let since = *self.finished.get_or_insert_with(Instant::now);
                if since.elapsed() >= Duration::from_millis(500) {
                    if let Ok(mut slot) = self.rss_after.lock() {
                        *slot = rss_bytes();
                    }
                    return Ok(Poll::End);
                }
            }
            let waiting = *self.emitted.get_or_insert_with(Instant::now);
            if waiting.elapsed() > Duration::from_secs(120) {
                return Err(SourceError::Config(
                    "the last events were not written within 120 s".into(),
                ));
            }
            std::thread::sleep(wait.min(Duration::from_millis(20)));
            return Ok(Poll::Idle);
        }
        let n = self.network_places.len() as u64;
        while self.seq < total && batch.len() < max {
            let seq = self.seq;
            self.seq += 1;
            let at = synth::event_time(self.start, seq);
            let patient = seq % self.patients;
            let place = self.network_places[(patient % n) as usize];
            self.line.clear();
            if seq < self.patients {
                synth::admission(&mut self.line, seq, at, patient, place);
            } else {
                synth::vitals(&mut self.line, seq, at, patient, place);
            }
            batch.push(self.line.as_bytes(), 0, seq as i64);
        }
        Ok(Poll::Ready)
    }
}

/// What one measurement found.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    pub events: u64,
    pub before: u64,
    pub after: u64,
}

/// Measures RSS before and after admitting `patients` with `readings` each, in this process
/// (run it in a fresh process: memory freed by earlier work would be reused and hide growth).
pub fn measure(
    scratch: &Path,
    network: &Network,
    patients: u64,
    readings: u64,
) -> anyhow::Result<Measured> {
    let data = scratch.join(format!("memory-{patients}"));
    let _ = std::fs::remove_dir_all(&data);
    let log: WriteLog = Arc::default();
    let rss_after = Arc::new(Mutex::new(None));
    let source = Admit {
        network_places: synth::places(network),
        start: parse_time("2026-03-02T00:00:00Z").context("start time")?,
        patients,
        readings,
        seq: 0,
        line: String::new(),
        log: log.clone(),
        rss_after: rss_after.clone(),
        finished: None,
        emitted: None,
    };
    let mut config = PipelineConfig::new(data.clone(), network.clone());
    config.until = Until::End;
    let sink = ObservedSink {
        inner: Box::new(SqliteSink::open(&SqliteConfig::in_data_dir(&data))?),
        log,
        alerts: None,
    };
    let before = rss_bytes().context("no /proc/self/status: cannot read RSS")?;
    let summary = pipeline::run(
        config,
        pipeline::Parts {
            source: Box::new(source),
            sink: Box::new(sink),
            rules: None,
            pseudonyms: Pseudonymiser::new(b"bench"),
            metrics: Arc::new(Metrics::new()),
            shutdown: Arc::new(AtomicBool::new(false)),
        },
    )?;
    let after = rss_after
        .lock()
        .ok()
        .and_then(|s| *s)
        .context("the run ended before RSS was read")?;
    let _ = std::fs::remove_dir_all(&data);
    if summary.occupied != patients as i64 {
        bail!(
            "{} patients located after admitting {patients}",
            summary.occupied
        );
    }
    Ok(Measured {
        events: summary.events,
        before,
        after,
    })
}

/// Runs [`measure`] in a child process (`cds-bench --memory-child N R`) and reports it.
pub fn report(report: &mut Report, patients: u64, readings: u64) -> anyhow::Result<()> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--memory-child",
            &patients.to_string(),
            &readings.to_string(),
        ])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "memory measurement failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let fields: Vec<u64> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("memory-child "))
        .context("no result from the memory child")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let [events, before, after] = fields[..] else {
        bail!("unexpected memory child output {stdout:?}");
    };
    let per = after.saturating_sub(before) as f64 / patients as f64;
    report.figure(
        "memory",
        &format!(
            "{patients} patients admitted, {readings} vitals readings each ({events} events; RSS {:.0} MB before, {:.0} MB after): RSS per admitted patient",
            before as f64 / 1e6,
            after as f64 / 1e6
        ),
        per,
        "bytes",
    );
    Ok(())
}
