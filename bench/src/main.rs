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
//! - **configs**: `cds run` (the binary beside this one) on the same file with the rule pack and
//!   the lake each on and off, the configurations taking turns, with their ratios to both off.
//! - **baseline**: incremental Gold against a job that recomputes every KPI from scratch after
//!   each batch of B records; the final documents of both must be equal.
//! - **memory**: RSS per admitted patient, each size in a fresh child process.
//! - **latency**: produce → KPI written through a Kafka-protocol broker (`--kafka HOST:PORT`,
//!   or `CDS_TEST_KAFKA`), HDR histogram measured from the intended send times.
//! - **alert-latency**: a deteriorating patient's vitals reading due → its NEWS2 alert written,
//!   through the same broker, with the rule pack and the lake on; measured the same way.
//! - **recovery**: checkpoint size and restart time (a fresh process restoring from the newest
//!   checkpoint) with N patients admitted.
//! - **cluster**: a 4-partition Kafka topic read by 1 process × 1 and 2 workers and by timely
//!   clusters of 2 processes (the `cds` binary beside this one, over loopback TCP).
//! - **forecast**: the backtest of the occupancy forecast over simulated weeks with a surge:
//!   its 8-hour error against persistence's and the share of outcomes in its p10-p90 band.
//!
//! `--quick` is the smoke test of the test suite: small sizes; it checks that everything runs
//! and that the outputs agree (including the baseline equality), and asserts no timing.

mod baseline;
mod cluster;
mod compare;
mod configs;
mod forecast;
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
use clap::Parser;

use report::Report;

const SECTIONS: [&str; 10] = [
    "throughput",
    "rules",
    "configs",
    "baseline",
    "memory",
    "latency",
    "alert-latency",
    "recovery",
    "cluster",
    "forecast",
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
    alert_rates: Vec<u64>,
    alert_config: latency::Tuning,
    /// Seconds.
    alert_reorder_windows: Vec<f64>,
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

/// A comma-separated list (`1,2` or `1, 2`).
#[derive(Debug, Clone)]
struct Commas<T>(Vec<T>);

impl<T: std::str::FromStr> std::str::FromStr for Commas<T> {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(|x| x.trim().parse::<T>().ok())
            .collect::<Option<Vec<T>>>()
            .map(Commas)
            .ok_or_else(|| "expected a comma-separated list".into())
    }
}

/// One baseline comparison, `B:PREFIX`: batches of B records over the first PREFIX events.
#[derive(Debug, Clone, Copy)]
struct BaselineRun(usize, usize);

impl std::str::FromStr for BaselineRun {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.trim()
            .split_once(':')
            .and_then(|(b, n)| Some(BaselineRun(b.parse().ok()?, n.parse().ok()?)))
            .ok_or_else(|| "expected B:PREFIX[,B:PREFIX]".into())
    }
}

/// The command line; what is left out takes the full run's size, or the smoke test's with
/// `--quick`.
#[derive(Debug, Parser)]
#[command(
    name = "cds-bench",
    about = "Throughput, latency, memory and recovery benchmarks for cds"
)]
struct Args {
    /// Small sizes: checks that everything runs and that the outputs agree; asserts no timing.
    #[arg(long)]
    quick: bool,
    /// Sections to run (throughput,rules,baseline,memory,latency,alert-latency,recovery,cluster);
    /// all by default.
    #[arg(long, value_name = "S[,S]")]
    sections: Option<Commas<String>>,
    /// Simulated events of the input file (1,000,000; 20,000 with `--quick`).
    #[arg(long, value_name = "N")]
    events: Option<u64>,
    /// Worker counts of the throughput runs (1,2).
    #[arg(long, value_name = "N[,N]")]
    workers: Option<Commas<usize>>,
    /// Rule pack directory, or `off`.
    #[arg(long, value_name = "DIR|off", default_value = "cds-rules")]
    rules: String,
    /// Baseline comparisons: batch size B over the first PREFIX events
    /// (1:5000,100:100000,10000:1000000; 1:300,100:3000,10000:20000 with `--quick`).
    #[arg(long, value_name = "B:PREFIX[,B:PREFIX]")]
    baseline: Option<Commas<BaselineRun>>,
    /// Admitted patients of the memory and recovery measurements (100000,1000000; 2000 with
    /// `--quick`).
    #[arg(long, value_name = "N[,N]")]
    patients: Option<Commas<u64>>,
    /// Vitals readings per patient of the memory measurement (0,3).
    #[arg(long, value_name = "R[,R]")]
    readings: Option<Commas<u64>>,
    /// Vitals readings per patient before the recovery checkpoint.
    #[arg(long, value_name = "R", default_value_t = 3)]
    recovery_readings: u64,
    /// The Kafka-protocol broker of the latency and cluster sections (else `CDS_TEST_KAFKA`).
    #[arg(long, value_name = "HOST:PORT")]
    kafka: Option<String>,
    /// Offered loads of the latency section, events per second (1000,10000,50000; 1000 with
    /// `--quick`).
    #[arg(long, value_name = "R[,R]")]
    rates: Option<Commas<u64>>,
    /// Seconds each offered load lasts (10; 1 with `--quick`).
    #[arg(long, value_name = "S")]
    latency_secs: Option<f64>,
    /// Engine tunings of the latency section (20/500/10,5/10/10).
    #[arg(long, value_name = "FLUSH_MS/FETCH_WAIT_MS|default[,...]")]
    latency_configs: Option<Commas<latency::Tuning>>,
    /// Offered loads of the alert-latency section, events per second (1000,10000; 1000 with
    /// `--quick`); each lasts `--latency-secs`.
    #[arg(long, value_name = "R[,R]")]
    alert_rates: Option<Commas<u64>>,
    /// Engine tuning of the alert-latency section.
    #[arg(
        long,
        value_name = "FLUSH_MS/FETCH_WAIT_MS|default[/CHECKPOINT_S]",
        default_value = "5/10/10"
    )]
    alert_latency_config: latency::Tuning,
    /// Reorder windows of the alert-latency section, seconds (`cds run --reorder-window`); each
    /// is measured at every rate, the event time advancing as fast as the readings are sent.
    #[arg(long, value_name = "SECS[,SECS]", default_value = "0,0.25")]
    alert_reorder_windows: Commas<f64>,
    /// Where the plots go (`bench/plots`; none with `--quick`).
    #[arg(long, value_name = "DIR")]
    plots: Option<PathBuf>,
    /// With `--sections baseline`: only the incremental side, for a profiler.
    #[arg(long)]
    profile_incremental: bool,
    /// Internal: one memory measurement in this process (patients, readings).
    #[arg(long, num_args = 2, value_names = ["N", "R"], hide = true)]
    memory_child: Option<Vec<u64>>,
    /// Internal: one recovery measurement in this process (data directory, patients, readings).
    #[arg(long, num_args = 3, value_names = ["DATA_DIR", "N", "R"], hide = true)]
    recovery_child: Option<Vec<String>>,
}

fn options() -> anyhow::Result<Options> {
    let a = Args::parse();
    let quick = a.quick;
    let sections = match a.sections {
        Some(Commas(s)) => s,
        None => SECTIONS.iter().map(|s| s.to_string()).collect(),
    };
    if let Some(s) = sections.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
        bail!("unknown section {s:?}; sections: {}", SECTIONS.join(","));
    }
    let recovery_child = match a.recovery_child.as_deref() {
        None => None,
        Some([data, patients, readings]) => Some((
            PathBuf::from(data),
            patients
                .parse()
                .context("--recovery-child: not a valid value")?,
            readings
                .parse()
                .context("--recovery-child: not a valid value")?,
        )),
        Some(_) => bail!("--recovery-child DATA_DIR N R"),
    };
    let memory_child = match a.memory_child.as_deref() {
        None => None,
        Some(&[patients, readings]) => Some((patients, readings)),
        Some(_) => bail!("--memory-child N R"),
    };
    let o = Options {
        events: a.events.unwrap_or(if quick { 20_000 } else { 1_000_000 }),
        workers: a.workers.map_or_else(|| vec![1, 2], |w| w.0),
        quick,
        rules: a.rules,
        sections,
        kafka: a.kafka.or_else(|| {
            std::env::var("CDS_TEST_KAFKA")
                .ok()
                .filter(|s| !s.is_empty())
        }),
        rates: a.rates.map_or_else(
            || {
                if quick {
                    vec![1_000]
                } else {
                    vec![1_000, 10_000, 50_000]
                }
            },
            |r| r.0,
        ),
        latency_secs: a.latency_secs.unwrap_or(if quick { 1.0 } else { 10.0 }),
        latency_configs: a.latency_configs.map_or_else(
            || {
                vec![
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
                ]
            },
            |c| c.0,
        ),
        alert_rates: a.alert_rates.map_or_else(
            || {
                if quick {
                    vec![1_000]
                } else {
                    vec![1_000, 10_000]
                }
            },
            |r| r.0,
        ),
        alert_config: a.alert_latency_config,
        alert_reorder_windows: a.alert_reorder_windows.0,
        patients: a.patients.map_or_else(
            || {
                if quick {
                    vec![2_000]
                } else {
                    vec![100_000, 1_000_000]
                }
            },
            |p| p.0,
        ),
        readings: a.readings.map_or_else(|| vec![0, 3], |r| r.0),
        baseline: a.baseline.map_or_else(
            || {
                if quick {
                    vec![(1, 300), (100, 3_000), (10_000, 20_000)]
                } else {
                    vec![(1, 5_000), (100, 100_000), (10_000, 1_000_000)]
                }
            },
            |b| b.0.into_iter().map(|BaselineRun(b, n)| (b, n)).collect(),
        ),
        plots: match a.plots {
            Some(dir) => Some(dir),
            None if quick => None,
            None => Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("plots")),
        },
        memory_child,
        recovery_readings: a.recovery_readings,
        recovery_child,
        profile_incremental: a.profile_incremental,
    };
    if o.workers.is_empty()
        || o.rates.contains(&0)
        || o.alert_rates.contains(&0)
        || o.baseline.iter().any(|(b, _)| *b == 0)
    {
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

    let needs_file = on("throughput") || on("rules") || on("baseline") || on("configs");
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
            surge: None,
            daytime_discharges: false,
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
    if on("forecast") {
        // Two weeks (one scored) in the smoke test, six otherwise.
        let weeks = if o.quick { 2 } else { 6 };
        let scores = forecast::measure(&mut report, network, weeks, o.plots.as_deref())?;
        if o.quick
            && !(scores.forecasts > 0 && scores.mae_model.is_finite() && scores.coverage > 0.0)
        {
            bail!("the forecast backtest scored nothing: {scores:?}");
        }
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
    if on("configs") {
        if Path::new(&o.rules).is_dir() {
            let rounds = if o.quick { 1 } else { 3 };
            configs::measure(&mut report, &file, Path::new(&o.rules), dir, rounds)?;
        } else {
            report.line(
                "configs",
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
                        latency::Loads {
                            rates: &o.rates,
                            seconds: o.latency_secs,
                        },
                        tuning,
                        latency::Written::Kpis,
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
                        std::fs::write(
                            &path,
                            plot::latency_svg(&results, &title, "produce → KPI written"),
                        )?;
                        report.line("latency", "plot written", &path.display().to_string());
                    }
                }
            }
        }
    }
    if on("alert-latency") {
        alert_latency(&mut report, o, network, dir)?;
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

/// Reading due -> NEWS2 alert written through the broker, with the rule pack and the lake on.
fn alert_latency(
    report: &mut Report,
    o: &Options,
    network: &Network,
    dir: &Path,
) -> anyhow::Result<()> {
    let section = "alert-latency";
    let rules = Path::new(&o.rules);
    let brokers = match o.kafka.as_deref() {
        None if o.quick => {
            report.line(
                section,
                "skipped",
                "no broker given (--kafka HOST:PORT or CDS_TEST_KAFKA)",
            );
            return Ok(());
        }
        None => bail!("the alert-latency benchmark needs a broker: --kafka HOST:PORT (or leave it out of --sections)"),
        Some(brokers) => brokers,
    };
    if !rules.is_dir() {
        report.line(
            section,
            "skipped",
            &format!("no rule directory {:?}", o.rules),
        );
        return Ok(());
    }
    let tuning = o.alert_config;
    for &window in &o.alert_reorder_windows {
        let reorder_window = Duration::try_from_secs_f64(window)
            .map_err(|_| anyhow::anyhow!("--alert-reorder-windows: {window} is not seconds"))?;
        let results = latency::measure(
            report,
            dir,
            network,
            brokers,
            latency::Loads {
                rates: &o.alert_rates,
                seconds: o.latency_secs,
            },
            tuning,
            latency::Written::News2Alert {
                rules,
                reorder_window,
            },
        )?;
        if let Some(plots) = &o.plots {
            std::fs::create_dir_all(plots)?;
            let ms = reorder_window.as_millis();
            let path = plots.join(format!("alert-latency-window-{ms}ms.svg"));
            let title = format!(
                "reading due → NEWS2 alert written via Kafka (loopback): reorder window {ms} ms, {tuning}"
            );
            std::fs::write(
                &path,
                plot::latency_svg(&results, &title, "reading due → NEWS2 alert written"),
            )?;
            report.line(section, "plot written", &path.display().to_string());
        }
    }
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
        config.rules_threads = pipeline::auto_rules_threads();
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
            pipeline::Parts {
                source: Box::new(source),
                sink: Box::new(sink),
                rules,
                pseudonyms: Pseudonymiser::new(b"bench"),
                metrics: metrics.clone(),
                shutdown: Arc::new(AtomicBool::new(false)),
            },
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
            let written = metrics.rules.alerts_written.get();
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
