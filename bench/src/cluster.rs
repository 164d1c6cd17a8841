//! Scale-out: one Kafka topic of four partitions read by one process with one and two workers,
//! and by a timely cluster of two processes (over loopback TCP on this machine), whose processes
//! each read every partition and clean their own patients' records (the default, right for any
//! producer), or read only their own partitions (`--partitions-by-patient`, for producers that
//! key by patient). Each run is the real `cds run` binary; its rate is the topic's events over
//! the time the slowest process took, less the idle wait that ends it. Every process that reads
//! every partition must read every event; processes that read their own partitions must split
//! them.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};

use crate::latency::{create_topic, unique};
use crate::report::Report;

/// Seconds without input that end a run (subtracted from its time).
const IDLE_SECS: f64 = 2.0;

/// (processes, workers per process, `--partitions-by-patient`) measured.
const SHAPES: [(usize, usize, bool); 6] = [
    (1, 1, false),
    (1, 2, false),
    (2, 1, false),
    (2, 2, false),
    (2, 1, true),
    (2, 2, true),
];

pub fn report(report: &mut Report, dir: &Path, brokers: &str, events: u64) -> anyhow::Result<()> {
    let cds = std::env::current_exe()?.with_file_name("cds");
    if !cds.is_file() {
        bail!(
            "the cluster benchmark runs the engine binary {}: build the workspace first",
            cds.display()
        );
    }
    let topic = unique("bench-cluster");
    create_topic(brokers, &topic, 4)?;
    let produced = Command::new(&cds)
        .env("CDS_LOG", "warn")
        .args([
            "simulate",
            "--seed",
            "43",
            "--max-events",
            &events.to_string(),
        ])
        .arg("--to")
        .arg(format!("kafka://{brokers}/{topic}"))
        .output()
        .context("cds simulate")?;
    if !produced.status.success() {
        bail!(
            "cds simulate failed: {}",
            String::from_utf8_lossy(&produced.stderr)
        );
    }
    report.line(
        "cluster",
        &format!("{events} simulated events on a 4-partition topic of the local broker"),
        "each run: `cds run --rules off --lake off --checkpoint-interval 0`, its own consumer group",
    );
    let mut single = None;
    for shape in SHAPES {
        let (processes, workers, keyed) = shape;
        let rate = run_shape(&cds, dir, brokers, &topic, events, shape)?;
        let base = *single.get_or_insert(rate);
        let reading = match (processes, keyed) {
            (1, _) => "",
            (_, false) => ", each reading every partition",
            (_, true) => ", each reading its own partitions",
        };
        report.figure(
            "cluster",
            &format!(
                "{processes} process{} × {workers} worker{}{reading} ({:.2}× one worker)",
                if processes == 1 { "" } else { "es" },
                if workers == 1 { "" } else { "s" },
                rate / base
            ),
            rate,
            "events/s",
        );
    }
    Ok(())
}

/// One configuration: its processes started together; events per second of the slowest.
fn run_shape(
    cds: &Path,
    dir: &Path,
    brokers: &str,
    topic: &str,
    events: u64,
    (processes, workers, keyed): (usize, usize, bool),
) -> anyhow::Result<f64> {
    let group = unique("bench-group");
    let hosts = dir.join(format!("hosts-{processes}x{workers}"));
    let ports: Vec<u16> = (0..processes)
        .map(|_| free_port())
        .collect::<Result<_, _>>()?;
    let lines: String = ports.iter().map(|p| format!("127.0.0.1:{p}\n")).collect();
    std::fs::write(&hosts, lines)?;
    let children: Vec<Child> = (0..processes)
        .map(|i| {
            let data = dir.join(format!("cluster-{processes}x{workers}-{i}"));
            let _ = std::fs::remove_dir_all(&data);
            let mut c = Command::new(cds);
            c.env("CDS_LOG", "warn")
                .env("CDS_PSEUDONYM_KEY", "bench")
                .args(["run", "--http", "off", "--rules", "off", "--lake", "off"])
                .args(["--checkpoint-interval", "0", "--until-idle"])
                .arg(IDLE_SECS.to_string())
                .arg("--source")
                .arg(format!("kafka://{brokers}/{topic}"))
                .args(["--group", &group, "--workers", &workers.to_string()])
                .arg("--data-dir")
                .arg(&data)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if processes > 1 {
                c.args(["--processes", &processes.to_string()])
                    .args(["--process", &i.to_string(), "--hosts"])
                    .arg(&hosts);
                if keyed {
                    c.arg("--partitions-by-patient");
                }
            }
            c.spawn().context("starting cds run")
        })
        .collect::<anyhow::Result<_>>()?;
    let mut read = 0u64;
    let mut slowest = 0f64;
    for child in children {
        let out = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "cds run ({processes} × {workers}) failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let (n, secs) = summary(&stdout).with_context(|| format!("no summary in {stdout:?}"))?;
        if processes > 1 && n == 0 {
            bail!("a process of the {processes} × {workers} cluster read nothing");
        }
        if !keyed && n != events {
            bail!("a process of {processes} × {workers} read {n} events of {events}");
        }
        read += n;
        slowest = slowest.max(secs);
    }
    if keyed && read != events {
        bail!("{processes} × {workers} read {read} events of {events}");
    }
    Ok(events as f64 / (slowest - IDLE_SECS).max(0.001))
}

/// Events and seconds of the `processed N events in T s` line.
fn summary(stdout: &str) -> Option<(u64, f64)> {
    let line = stdout.lines().find(|l| l.starts_with("processed "))?;
    let mut words = line.split_whitespace();
    let n = words.nth(1)?.parse().ok()?;
    let secs = words.nth(2)?.parse().ok()?;
    Some((n, secs))
}

fn free_port() -> std::io::Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()
        .map(|a| a.port())
}
