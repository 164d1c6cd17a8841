//! `cds-bench`: throughput, event-to-KPI latency, memory and rule-evaluation benchmarks of the
//! engine, each against a baseline measured in the same run on the same machine (these machines
//! are shared and noisy, so ratios are the figures to compare across runs).
//!
//! Sections (all by default, or `--sections a,b`):
//!
//! - **throughput**: the whole pipeline in process (read, parse, Silver, Gold dataflow, SQLite
//!   sink) on simulated events from a file, per worker count; and a parse-only pass with the
//!   engine's own parser over the same file, whose time is subtracted to give the rate with
//!   parsing excluded.
//! - **rules**: the rule pack's evaluation rate on one rules thread.
//! - **baseline**: incremental Gold against a job that recomputes every KPI from scratch after
//!   each batch of B records; the final documents of both must be equal.
//! - **memory**: RSS per admitted patient, each size in a fresh child process.
//! - **latency**: produce → KPI written through a Kafka-protocol broker (`--kafka HOST:PORT`,
//!   or `CDS_TEST_KAFKA`), HDR histogram measured from the intended send times.
//! - **recovery**: checkpoint size and restart time (a fresh process restoring from the newest
//!   checkpoint) with N patients admitted.
//! - **cluster**: a 4-partition Kafka topic read by 1 process × 1 and 2 workers and by timely
//!   clusters of 2 processes (the `cds` binary beside this one, over loopback TCP).
//!
//! `--quick` is the smoke test of the test suite: small sizes; it checks that everything runs
//! and that the outputs agree (including the baseline equality), and asserts no timing.

mod baseline;
mod cluster;
mod compare;
mod incremental;
mod latency;
mod machine;
mod memory;
mod observe;
mod plot;
mod recovery;
mod report;
mod rules_rate;
mod synth;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cds_engine::metrics::Metrics;
use cds_engine::model::{parse_time, Event, Network, Pseudonymiser};
use cds_engine::pipeline::{self, PipelineConfig, Until};
use cds_engine::rules::RulesStage;
use cds_engine::sink::sqlite::{SqliteConfig, SqliteSink};
use cds_engine::sink::Container;
use cds_engine::source::file::{FileConfig, FileSource};
use cds_engine::source::simulator::{write_jsonl, SimulatorConfig};

use report::Report;

const SECTIONS: [&str; 7] = [
    "throughput",
    "rules",
    "baseline",
    "memory",
    "latency",
    "recovery",
    "cluster",
];

struct Options {
    events: u64,
    workers: Vec<usize>,
    quick: bool,
    rules: String,
    sections: Vec<String>,
    kafka: Option<String>,
    rates: Vec<u64>,
    latency_secs: f64,
    latency_configs: Vec<latency::Tuning>,
    patients: Vec<u64>,
    readings: Vec<u64>,
    /// (B, prefix in events) per baseline comparison.
    baseline: Vec<(usize, usize)>,
    plots: Option<PathBuf>,
    memory_child: Option<(u64, u64)>,
    /// Vitals readings per patient before the recovery checkpoint.
    recovery_readings: u64,
    recovery_child: Option<(PathBuf, u64, u64)>,
    /// Only the incremental side of one baseline comparison, for a profiler.
    profile_incremental: bool,
}

fn list<T: std::str::FromStr>(s: Option<String>, what: &str) -> anyhow::Result<Vec<T>> {
    s.with_context(|| format!("{what} needs a value"))?
        .split(',')
        .map(|x| x.trim().parse::<T>().ok())
        .collect::<Option<Vec<T>>>()
        .with_context(|| format!("{what}: expected a comma-separated list"))
}

fn one<T: std::str::FromStr>(s: Option<String>, what: &str) -> anyhow::Result<T> {
    s.with_context(|| format!("{what} needs a value"))?
        .parse()
        .ok()
        .with_context(|| format!("{what}: not a valid value"))
}

const HELP: &str = "cds-bench [--quick] [--sections throughput,rules,baseline,memory,latency,recovery,cluster]
  [--events N] [--workers N[,N]] [--rules DIR|off]
  [--baseline B:PREFIX[,B:PREFIX]] [--patients N[,N]] [--readings R[,R]] [--recovery-readings R]
  [--kafka HOST:PORT] [--rates R[,R]] [--latency-secs S] [--latency-configs FLUSH_MS/FETCH_WAIT_MS|default[,...]]
  [--plots DIR] [--profile-incremental (with --sections baseline: only the incremental side)]";

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        events: 1_000_000,
        workers: vec![1, 2],
        quick: false,
        rules: "cds-rules".into(),
        sections: SECTIONS.iter().map(|s| s.to_string()).collect(),
        kafka: std::env::var("CDS_TEST_KAFKA")
            .ok()
            .filter(|s| !s.is_empty()),
        rates: vec![1_000, 10_000, 50_000],
        latency_secs: 10.0,
        latency_configs: vec![
            latency::Tuning {
                flush_ms: 20,
                fetch_wait_ms: Some(500),
                checkpoint_secs: Some(10),
            },
            latency::Tuning {
                flush_ms: 5,
                fetch_wait_ms: Some(10),
                checkpoint_secs: Some(10),
            },
        ],
        patients: vec![100_000, 1_000_000],
        readings: vec![0, 3],
        baseline: vec![(1, 5_000), (100, 100_000), (10_000, 1_000_000)],
        plots: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("plots")),
        memory_child: None,
        recovery_readings: 3,
        recovery_child: None,
        profile_incremental: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => {
                o.quick = true;
                o.events = 20_000;
                o.workers = vec![1, 2];
                o.rates = vec![1_000];
                o.latency_secs = 1.0;
                o.patients = vec![2_000];
                o.baseline = vec![(1, 300), (100, 3_000), (10_000, 20_000)];
                o.plots = None;
            }
            "--events" => o.events = one(args.next(), "--events")?,
            "--workers" => o.workers = list(args.next(), "--workers")?,
            "--rules" => o.rules = args.next().context("--rules DIR")?,
            "--sections" => {
                o.sections = list(args.next(), "--sections")?;
                if let Some(s) = o.sections.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
                    bail!("unknown section {s:?}; sections: {}", SECTIONS.join(","));
                }
            }
            "--kafka" => o.kafka = Some(args.next().context("--kafka HOST:PORT")?),
            "--rates" => o.rates = list(args.next(), "--rates")?,
            "--latency-secs" => o.latency_secs = one(args.next(), "--latency-secs")?,
            "--latency-configs" => o.latency_configs = list(args.next(), "--latency-configs")?,
            "--patients" => o.patients = list(args.next(), "--patients")?,
            "--readings" => o.readings = list(args.next(), "--readings")?,
            "--recovery-readings" => o.recovery_readings = one(args.next(), "--recovery-readings")?,
            "--recovery-child" => {
                o.recovery_child = Some((
                    args.next().context("--recovery-child DATA_DIR N R")?.into(),
                    one(args.next(), "--recovery-child")?,
                    one(args.next(), "--recovery-child")?,
                ))
            }
            "--baseline" => {
                let pairs: Vec<String> = list(args.next(), "--baseline")?;
                o.baseline = pairs
                    .iter()
                    .map(|p| {
                        let (b, n) = p.split_once(':')?;
                        Some((b.parse().ok()?, n.parse().ok()?))
                    })
                    .collect::<Option<_>>()
                    .context("--baseline B:PREFIX[,B:PREFIX]")?;
            }
            "--profile-incremental" => o.profile_incremental = true,
            "--plots" => o.plots = Some(args.next().context("--plots DIR")?.into()),
            "--memory-child" => {
                o.memory_child = Some((
                    one(args.next(), "--memory-child")?,
                    one(args.next(), "--memory-child")?,
                ))
            }
            "-h" | "--help" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{HELP}"),
        }
    }
    if o.workers.is_empty() || o.rates.contains(&0) || o.baseline.iter().any(|(b, _)| *b == 0) {
        bail!("worker lists, rates and batch sizes must be non-empty and positive");
    }
    Ok(o)
}

fn main() -> anyhow::Result<()> {
    let o = options()?;
    let network = Network::default_network();
    let dir = std::env::temp_dir().join(format!("cds-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    if let Some((patients, readings)) = o.memory_child {
        let m = memory::measure(&dir, &network, patients, readings);
        let _ = std::fs::remove_dir_all(&dir);
        let m = m?;
        println!("memory-child {} {} {}", m.events, m.before, m.after);
        return Ok(());
    }

    if let Some((data, patients, readings)) = &o.recovery_child {
        let _ = std::fs::remove_dir_all(&dir);
        return recovery::child(data, &network, *patients, *readings);
    }

    let result = run(&o, &network, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(o: &Options, network: &Network, dir: &Path) -> anyhow::Result<()> {
    let mut report = Report::default();
    let on = |s: &str| o.sections.iter().any(|x| x == s);
    report.line("machine", &machine::describe(), "");
    report.line(
        "machine",
        "note",
        "shared machine: other builds may run on the same cores; compare ratios measured in one run",
    );

    let needs_file = on("throughput") || on("rules") || on("baseline");
    let file = dir.join("events.jsonl");
    let mut lines = 0;
    if needs_file {
        let t = Instant::now();
        let config = SimulatorConfig {
            seed: 42,
            max_events: Some(o.events),
            rate: None,
            dirty_rate: 0.02,
            start: parse_time("2026-03-02T00:00:00Z").context("start time")?,
        };
        let out = std::io::BufWriter::new(std::fs::File::create(&file)?);
        lines = write_jsonl(config, network, out)?;
        let bytes = std::fs::metadata(&file)?.len();
        report.line(
            "input",
            &format!(
                "{lines} simulated events (seed 42, 2 % dirty), {:.1} MB of JSON lines, generated in {:.1} s",
                bytes as f64 / 1e6,
                t.elapsed().as_secs_f64()
            ),
            "",
        );
    }

    if on("throughput") {
        throughput(&mut report, o, network, dir, &file, lines)?;
    }
    if on("rules") {
        if Path::new(&o.rules).is_dir() {
            let records =
                compare::silver_prefix(&file, network, if o.quick { 3_000 } else { 50_000 })?;
            rules_rate::measure(&mut report, Path::new(&o.rules), network, &records)?;
        } else {
            report.line(
                "rules",
                "skipped",
                &format!("no rule directory {:?}", o.rules),
            );
        }
    }
    if on("baseline") && o.profile_incremental {
        for &(batch, prefix) in &o.baseline {
            compare::profile_incremental(&file, network, prefix.min(lines as usize), batch)?;
        }
        return Ok(());
    }
    if on("baseline") {
        for &(batch, prefix) in &o.baseline {
            let prefix = prefix.min(lines as usize);
            compare::compare(&mut report, &file, network, prefix, batch)?;
        }
    }
    if on("memory") {
        for &patients in &o.patients {
            for &readings in &o.readings {
                memory::report(&mut report, patients, readings)?;
            }
        }
    }
    if on("latency") {
        match o.kafka.as_deref() {
            None if o.quick => report.line(
                "latency",
                "skipped",
                "no broker given (--kafka HOST:PORT or CDS_TEST_KAFKA)",
            ),
            None => bail!("the latency benchmark needs a broker: --kafka HOST:PORT (or leave it out of --sections)"),
            Some(brokers) => {
                for &tuning in &o.latency_configs {
                    let results = latency::measure(
                        &mut report,
                        dir,
                        network,
                        brokers,
                        &o.rates,
                        o.latency_secs,
                        tuning,
                    )?;
                    if let Some(plots) = &o.plots {
                        std::fs::create_dir_all(plots)?;
                        let path = plots.join(format!(
                            "latency-flush-{}ms-fetch-{}.svg",
                            tuning.flush_ms,
                            tuning
                                .fetch_wait_ms
                                .map_or("default".to_owned(), |ms| format!("{ms}ms"))
                        ));
                        let title = format!("produce → KPI written via Kafka (loopback): {tuning}");
                        std::fs::write(&path, plot::latency_svg(&results, &title))?;
                        report.line("latency", "plot written", &path.display().to_string());
                    }
                }
            }
        }
    }

    if on("cluster") {
        match o.kafka.as_deref() {
            None if o.quick => report.line(
                "cluster",
                "skipped",
                "no broker given (--kafka HOST:PORT or CDS_TEST_KAFKA)",
            ),
            None => bail!("the cluster benchmark needs a broker: --kafka HOST:PORT (or leave it out of --sections)"),
            Some(brokers) => {
                let events = if o.quick { 20_000 } else { o.events.min(500_000) };
                cluster::report(&mut report, dir, brokers, events)?;
            }
        }
    }
    if on("recovery") {
        for &patients in &o.patients {
            recovery::report(&mut report, dir, network, patients, o.recovery_readings)?;
        }
    }

    if o.quick {
        println!("quick mode: every section ran and the outputs agree (no timing is asserted)");
    }
    println!("\n{}", report.markdown());
    Ok(())
}

/// The whole pipeline per worker count, with a parse-only pass of the same file in between.
fn throughput(
    report: &mut Report,
    o: &Options,
    network: &Network,
    dir: &Path,
    file: &Path,
    lines: u64,
) -> anyhow::Result<()> {
    let parse = parse_only(file)?;
    report.figure(
        "throughput",
        &format!("parse only (Event::from_json, the engine's parser), 1 thread, {lines} events"),
        lines as f64 / parse.as_secs_f64(),
        "events/s",
    );
    let mut runs: Vec<(usize, bool)> = o.workers.iter().map(|w| (*w, false)).collect();
    if Path::new(&o.rules).is_dir() && o.quick {
        // The rule pack is far slower than the rest; its rate has its own section, and a
        // whole-pipeline run with rules is only a smoke test here.
        runs.push((1, true));
    }
    for (workers, with_rules) in runs {
        let data = dir.join(format!("data-{workers}-{with_rules}"));
        let _ = std::fs::remove_dir_all(&data);
        let mut config = PipelineConfig::new(data.clone(), network.clone());
        config.workers = workers;
        config.until = Until::End;
        let source = FileSource::open(&FileConfig {
            path: file.to_path_buf(),
            follow: false,
        })?;
        let sink_config = SqliteConfig::in_data_dir(&data);
        let sink = SqliteSink::open(&sink_config)?;
        let metrics = Arc::new(Metrics::new());
        let rules = if with_rules {
            Some(RulesStage::load(
                Path::new(&o.rules),
                network.clone(),
                metrics.clone(),
            )?)
        } else {
            None
        };
        let summary = pipeline::run(
            config,
            Box::new(source),
            Box::new(sink),
            rules,
            Pseudonymiser::new(b"bench"),
            metrics.clone(),
            Arc::new(AtomicBool::new(false)),
        )?;
        if summary.events != lines {
            bail!("the pipeline read {} events of {lines}", summary.events);
        }
        let docs = SqliteSink::read_all(&sink_config, Container::Kpis)?;
        let occupancy = docs.iter().filter(|d| d["type"] == "occupancy").count();
        if occupancy != network.departments().count() {
            bail!("{occupancy} occupancy documents, expected one per configured department");
        }
        let what = format!(
            "pipeline, {workers} worker{}{}, {lines} events in {:.2} s",
            if workers == 1 { "" } else { "s" },
            if with_rules {
                ", with the rule pack"
            } else {
                ""
            },
            summary.elapsed.as_secs_f64(),
        );
        report.figure("throughput", &what, summary.events_per_second(), "events/s");
        if with_rules {
            let alerts = SqliteSink::read_all(&sink_config, Container::Alerts)?.len() as u64;
            let written = metrics.alerts_written.get();
            if alerts == 0 || alerts > written {
                bail!("{alerts} alert documents after {written} writes");
            }
            report.line(
                "throughput",
                "with the rule pack",
                &format!("{alerts} alert documents"),
            );
        } else {
            let rest = summary.elapsed.saturating_sub(parse);
            report.figure(
                "throughput",
                &format!(
                    "pipeline, {workers} worker{}, parsing excluded (run time minus the parse-only time, {:.2} s - {:.2} s)",
                    if workers == 1 { "" } else { "s" },
                    summary.elapsed.as_secs_f64(),
                    parse.as_secs_f64()
                ),
                lines as f64 / rest.as_secs_f64().max(1e-9),
                "events/s",
            );
        }
        let _ = std::fs::remove_dir_all(&data);
    }
    Ok(())
}

/// Reads and parses every line with the engine's parser, nothing else: the time the pipeline's
/// ingest thread spends reading and parsing.
fn parse_only(file: &Path) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let mut reader = BufReader::with_capacity(1 << 20, std::fs::File::open(file)?);
    let mut line = Vec::new();
    let mut ok = 0u64;
    while reader.read_until(b'\n', &mut line)? > 0 {
        let payload = line.strip_suffix(b"\n").unwrap_or(&line);
        if let Ok(e) = Event::from_json(payload) {
            ok += std::hint::black_box(e).event_id.len() as u64 & 1;
        }
        line.clear();
    }
    std::hint::black_box(ok);
    Ok(t.elapsed())
}
