//! Recovery: checkpoint size and restart time with N patients admitted.
//!
//! A first run admits N patients, each followed by R vitals readings, with checkpoints on; it
//! ends cleanly and writes its final checkpoint (the state of every admitted patient). A
//! second process is then started on the same data directory and source: it restores from the
//! newest checkpoint. Two times are taken from the moment the process is spawned:
//!
//! - **ready**: the pipeline asks its source for input for the first time (the checkpoint is
//!   read, checked and decoded, the threads and the dataflow are up, the restored facts are
//!   handed to the dataflow); new events are accepted from here on, queued behind the restore;
//! - **restored**: the first KPI write returns, i.e. the dataflow has rebuilt its arrangements
//!   from the restored facts and the sink has written the KPI documents they give.
//!
//! The restarted run must locate every admitted patient (its occupancy adds up to N), so a
//! restore that lost state fails the benchmark.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cds_engine::checkpoint::CheckpointStore;
use cds_engine::metrics::Metrics;
use cds_engine::model::Document;
use cds_engine::model::{parse_time, HospitalId, Network, Pseudonymiser, Timestamp};
use cds_engine::pipeline::{self, PipelineConfig, Until};
use cds_engine::sink::sqlite::{SqliteConfig, SqliteSink};
use cds_engine::sink::{Container, Sink, SinkError};
use cds_engine::source::{Poll, RawBatch, Source, SourceError};

use crate::machine::cpu_time;
use crate::report::Report;
use crate::synth;

/// Long enough that only the first (empty) and the final checkpoint are written.
const INTERVAL: Duration = Duration::from_secs(3600);

fn identity(patients: u64, readings: u64) -> String {
    format!("bench-recovery:{patients}:{readings}")
}

/// N admissions, then R vitals readings per patient round by round; ends when all are read.
struct Admissions {
    identity: String,
    places: Vec<(HospitalId, &'static str)>,
    start: Timestamp,
    patients: u64,
    readings: u64,
    seq: u64,
    line: String,
}

impl Source for Admissions {
    fn name(&self) -> &str {
        "bench-recovery"
    }

    fn identity(&self) -> String {
        self.identity.clone()
    }

    fn poll(
        &mut self,
        batch: &mut RawBatch,
        max: usize,
        _wait: Duration,
    ) -> Result<Poll, SourceError> {
        let total = self.patients * (1 + self.readings);
        if self.seq >= total {
            return Ok(Poll::End);
        }
        let n = self.places.len().max(1) as u64;
        while self.seq < total && batch.len() < max {
            let seq = self.seq;
            self.seq += 1;
            let at = synth::event_time(self.start, seq);
            let patient = seq % self.patients;
            let place = self.places[(patient % n) as usize];
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

/// The restarted run's source: says when it is first asked for input, then (once the
/// restored KPIs are written) ends the run.
struct Restarted {
    identity: String,
    asked: bool,
    restored: Arc<Mutex<Option<Instant>>>,
}

impl Source for Restarted {
    fn name(&self) -> &str {
        "bench-recovery"
    }

    fn identity(&self) -> String {
        self.identity.clone()
    }

    fn poll(
        &mut self,
        _batch: &mut RawBatch,
        _max: usize,
        wait: Duration,
    ) -> Result<Poll, SourceError> {
        if !self.asked {
            self.asked = true;
            say(&format!("recovery-ready {}", cpu_ms()));
        }
        if self.restored.lock().map(|r| r.is_some()).unwrap_or(true) {
            return Ok(Poll::End);
        }
        std::thread::sleep(wait.min(Duration::from_millis(1)));
        Ok(Poll::Idle)
    }
}

/// Notes (and announces on stdout) the return of the first KPI write.
struct FirstWrite {
    inner: Box<dyn Sink>,
    at: Arc<Mutex<Option<Instant>>>,
}

impl Sink for FirstWrite {
    fn upsert(&mut self, container: Container, documents: &[Document]) -> Result<(), SinkError> {
        self.inner.upsert(container, documents)?;
        if container == Container::Kpis {
            if let Ok(mut at) = self.at.lock() {
                if at.is_none() {
                    *at = Some(Instant::now());
                    say(&format!("recovery-restored {}", cpu_ms()));
                }
            }
        }
        Ok(())
    }
}

/// CPU time of this process so far in milliseconds (0 where unknown).
fn cpu_ms() -> u128 {
    cpu_time().map_or(0, |d| d.as_millis())
}

/// One line to the parent process, flushed at once (the parent takes the time it reads it).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn config(data: &Path, network: &Network) -> PipelineConfig {
    let mut config = PipelineConfig::new(data.to_path_buf(), network.clone());
    config.until = Until::End;
    config.checkpoint_interval = Some(INTERVAL);
    config
}

/// The restarted process (`cds-bench --recovery-child DATA_DIR N R`): restores, reports when
/// it is ready and when the restored KPIs are written, and how many patients it located.
pub fn child(data: &Path, network: &Network, patients: u64, readings: u64) -> anyhow::Result<()> {
    let restored = Arc::new(Mutex::new(None));
    let source = Restarted {
        identity: identity(patients, readings),
        asked: false,
        restored: restored.clone(),
    };
    let sink = FirstWrite {
        inner: Box::new(SqliteSink::open(&SqliteConfig::in_data_dir(data))?),
        at: restored,
    };
    let summary = pipeline::run(
        config(data, network),
        pipeline::Parts {
            source: Box::new(source),
            sink: Box::new(sink),
            rules: None,
            pseudonyms: Pseudonymiser::new(b"bench"),
            metrics: Arc::new(Metrics::new()),
            shutdown: Arc::new(AtomicBool::new(false)),
        },
    )?;
    say(&format!("recovery-child occupied {}", summary.occupied));
    Ok(())
}

/// Builds the state, then restarts from its checkpoint in a fresh process and reports.
pub fn report(
    report: &mut Report,
    scratch: &Path,
    network: &Network,
    patients: u64,
    readings: u64,
) -> anyhow::Result<()> {
    let data = scratch.join(format!("recovery-{patients}"));
    let _ = std::fs::remove_dir_all(&data);
    let source = Admissions {
        identity: identity(patients, readings),
        places: synth::places(network),
        start: parse_time("2026-03-02T00:00:00Z").context("start time")?,
        patients,
        readings,
        seq: 0,
        line: String::new(),
    };
    let summary = pipeline::run(
        config(&data, network),
        pipeline::Parts {
            source: Box::new(source),
            sink: Box::new(SqliteSink::open(&SqliteConfig::in_data_dir(&data))?),
            rules: None,
            pseudonyms: Pseudonymiser::new(b"bench"),
            metrics: Arc::new(Metrics::new()),
            shutdown: Arc::new(AtomicBool::new(false)),
        },
    )?;
    if summary.occupied != patients as i64 {
        bail!(
            "{} patients located after admitting {patients}",
            summary.occupied
        );
    }
    let store = CheckpointStore::in_data_dir(&data);
    let (_, newest) = store
        .list()
        .into_iter()
        .next()
        .context("the run wrote no checkpoint")?;
    let size = std::fs::metadata(data.join("lake/checkpoints").join(&newest))?.len();
    let what = format!(
        "{patients} patients admitted, {readings} vitals readings each ({} events)",
        summary.events
    );
    report.figure(
        "recovery",
        &format!("{what}: checkpoint size"),
        size as f64 / 1e6,
        "MB",
    );
    report.figure(
        "recovery",
        &format!("{what}: checkpoint bytes per admitted patient"),
        size as f64 / patients as f64,
        "bytes",
    );

    let spawned = Instant::now();
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--recovery-child",
            &data.display().to_string(),
            &patients.to_string(),
            &readings.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout from the child")?;
    let (mut ready, mut restored, mut occupied) = (None, None, None);
    let cpu = |s: &str| s.trim().parse::<f64>().unwrap_or(0.0);
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(ms) = line.strip_prefix("recovery-ready ") {
            ready = Some((spawned.elapsed(), cpu(ms)));
        } else if let Some(ms) = line.strip_prefix("recovery-restored ") {
            restored = Some((spawned.elapsed(), cpu(ms)));
        } else if let Some(n) = line.strip_prefix("recovery-child occupied ") {
            occupied = n.trim().parse::<i64>().ok();
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("the restarted process failed ({status})");
    }
    let (Some(ready), Some(restored)) = (ready, restored) else {
        bail!("the restarted process did not report when it was ready and restored");
    };
    if occupied != Some(patients as i64) {
        bail!("the restarted run located {occupied:?} patients of {patients}");
    }
    // Reading and checking the file alone (from the page cache, as the restart read it).
    let t = Instant::now();
    store
        .read(&newest)
        .map_err(|e| anyhow::anyhow!("checkpoint: {e}"))?;
    let read = t.elapsed();
    let _ = std::fs::remove_dir_all(&data);
    report.figure(
        "recovery",
        &format!(
            "{what}: restart, process spawned -> ready to take input (first poll of the source)"
        ),
        ready.0.as_secs_f64() * 1000.0,
        "ms",
    );
    report.figure(
        "recovery",
        &format!("{what}: restart, CPU time of the process until ready"),
        ready.1,
        "ms",
    );
    report.figure(
        "recovery",
        &format!("{what}: restart, process spawned -> restored KPIs written (dataflow rebuilt, {patients} patients located)"),
        restored.0.as_secs_f64() * 1000.0,
        "ms",
    );
    report.figure(
        "recovery",
        &format!("{what}: restart, CPU time of the process until the restored KPIs are written"),
        restored.1,
        "ms",
    );
    report.figure(
        "recovery",
        &format!("{what}: of which reading, checking (SHA-256) and decoding the checkpoint file's envelope"),
        read.as_secs_f64() * 1000.0,
        "ms",
    );
    Ok(())
}
