//! `cds-bench`: end-to-end throughput of the engine on a simulated file, against a baseline
//! measured in the same run on the same machine (these machines are shared and noisy, so the
//! ratio is the figure to compare across runs, not the absolute number).
//!
//! - **pipeline**: `cds run --source file:PATH --until-end` in process: read, parse, Silver,
//!   Gold dataflow, SQLite sink; events/s over the whole run.
//! - **baseline (parse only)**: the same lines parsed into `serde_json::Value` on one thread
//!   and nothing else: the floor of what any JSON pipeline pays per event.
//!
//! `--quick` is the smoke test of the test suite: a small file, and checks that the run
//! consumed every line and wrote documents; it asserts no timing.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use cds_engine::metrics::Metrics;
use cds_engine::model::{parse_time, Network, Pseudonymiser};
use cds_engine::pipeline::{self, PipelineConfig, Until};
use cds_engine::rules::RulesStage;
use cds_engine::sink::sqlite::{SqliteConfig, SqliteSink};
use cds_engine::sink::Container;
use cds_engine::source::file::{FileConfig, FileSource};
use cds_engine::source::simulator::{write_jsonl, SimulatorConfig};

struct Options {
    events: u64,
    workers: Vec<usize>,
    quick: bool,
    rules: String,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        events: 1_000_000,
        workers: vec![1],
        quick: false,
        rules: "cds-rules".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => {
                o.quick = true;
                o.events = 20_000;
            }
            "--events" => {
                o.events = args
                    .next()
                    .context("--events N")?
                    .parse()
                    .context("--events N")?
            }
            "--workers" => {
                o.workers = args
                    .next()
                    .context("--workers N[,N]")?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .context("--workers N[,N]")?
            }
            "--rules" => o.rules = args.next().context("--rules DIR")?,
            "-h" | "--help" => {
                println!("cds-bench [--quick] [--events N] [--workers N[,N...]] [--rules DIR|off]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    Ok(o)
}

fn main() -> anyhow::Result<()> {
    let o = options()?;
    let dir = std::env::temp_dir().join(format!("cds-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("events.jsonl");
    let network = Network::default_network();

    let t = Instant::now();
    let config = SimulatorConfig {
        seed: 42,
        max_events: Some(o.events),
        rate: None,
        dirty_rate: 0.02,
        start: parse_time("2026-03-02T00:00:00Z").context("start time")?,
    };
    let out = std::io::BufWriter::new(std::fs::File::create(&file)?);
    let lines = write_jsonl(config, &network, out)?;
    let bytes = std::fs::metadata(&file)?.len();
    println!(
        "machine: {} cores; input: {lines} simulated events, {:.1} MB, generated in {:.2} s",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    let baseline = parse_only(&file)?;
    println!("baseline parse-only (serde_json::Value, 1 thread): {baseline:.0} events/s");

    let mut runs: Vec<(usize, bool)> = o.workers.iter().map(|w| (*w, false)).collect();
    if Path::new(&o.rules).is_dir() {
        runs.push((1, true));
    }
    for (workers, with_rules) in runs {
        let data = dir.join(format!("data-{workers}-{with_rules}"));
        let _ = std::fs::remove_dir_all(&data);
        let mut config = PipelineConfig::new(data.clone(), network.clone());
        config.workers = workers;
        config.until = Until::End;
        let source = FileSource::open(&FileConfig {
            path: file.clone(),
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
        let rate = summary.events_per_second();
        println!(
            "pipeline ({workers} worker{}{}): {rate:.0} events/s ({} events, {:.2} s, {} documents written) = {:.2}x the parse-only baseline",
            if workers == 1 { "" } else { "s" },
            if with_rules { ", with the rule pack" } else { "" },
            summary.events,
            summary.elapsed.as_secs_f64(),
            summary.documents_written,
            rate / baseline
        );
        if summary.events != lines {
            bail!("the pipeline read {} events of {lines}", summary.events);
        }
        let docs = SqliteSink::read_all(&sink_config, Container::Kpis)?;
        let occupancy = docs.iter().filter(|d| d["type"] == "occupancy").count();
        if occupancy != network.departments().count() {
            bail!("{occupancy} occupancy documents, expected one per configured department");
        }
        if with_rules {
            let alerts = SqliteSink::read_all(&sink_config, Container::Alerts)?.len() as u64;
            let written = metrics.alerts_written.get();
            println!("  alerts: {alerts} documents ({written} writes)");
            if alerts == 0 || alerts > written {
                bail!("{alerts} alert documents after {written} writes");
            }
        }
    }
    if o.quick {
        println!("quick mode: the run consumed every event and wrote every occupancy document");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Parses every line into a `serde_json::Value`: the cost floor of a JSON pipeline.
fn parse_only(file: &Path) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut reader = BufReader::with_capacity(1 << 20, std::fs::File::open(file)?);
    let mut line = Vec::new();
    let mut n = 0u64;
    let mut objects = 0u64;
    while reader.read_until(b'\n', &mut line)? > 0 {
        if let Ok(serde_json::Value::Object(m)) = serde_json::from_slice::<serde_json::Value>(&line)
        {
            objects += m.len() as u64 & 1;
        }
        n += 1;
        line.clear();
    }
    std::hint::black_box(objects);
    Ok(n as f64 / t.elapsed().as_secs_f64())
}
