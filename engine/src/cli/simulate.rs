use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::model::{parse_time, Network};
use crate::source::kafka::{produce_lines, KafkaConfig};
use crate::source::simulator::{write_jsonl, Pacer, Simulator, SimulatorConfig};
use crate::source::SourceConfig;

/// Flags shared by `cds simulate` and `cds run --source simulator`.
#[derive(Debug, Clone, Args)]
pub struct SimulatorArgs {
    /// Seed: the same seed always gives the same events.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Stop after this many events (default: no limit).
    #[arg(long, value_name = "N")]
    pub max_events: Option<u64>,
    /// Events per second in real time (default for `simulate`: as fast as possible).
    #[arg(long, value_name = "EV_PER_S")]
    pub rate: Option<f64>,
    /// Share of events given one dirty-data scenario (0 to 1).
    #[arg(long, default_value_t = 0.02, value_name = "R")]
    pub dirty_rate: f64,
    /// Start of the simulated clock (RFC 3339).
    #[arg(long, default_value = "2026-03-02T00:00:00Z", value_name = "TIME")]
    pub start: String,
}

impl SimulatorArgs {
    pub fn config(&self) -> anyhow::Result<SimulatorConfig> {
        if !(0.0..=1.0).contains(&self.dirty_rate) {
            anyhow::bail!(
                "--dirty-rate must be between 0 and 1, got {}",
                self.dirty_rate
            );
        }
        if let Some(r) = self.rate {
            if !(r > 0.0 && r.is_finite()) {
                anyhow::bail!("--rate must be a positive number of events per second, got {r}");
            }
        }
        let start = parse_time(&self.start)
            .with_context(|| format!("--start {:?} is not RFC 3339", self.start))?;
        Ok(SimulatorConfig {
            seed: self.seed,
            max_events: self.max_events,
            rate: self.rate,
            dirty_rate: self.dirty_rate,
            start,
            surge: None,
            daytime_discharges: false,
        })
    }
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    sim: SimulatorArgs,
    /// Where to: `file:PATH` (JSON lines) or `kafka://HOST:PORT/TOPIC` (keyed by patient);
    /// default stdout.
    #[arg(long, value_name = "SRC")]
    to: Option<String>,
}

pub fn simulate(args: SimulateArgs, network: &Network) -> anyhow::Result<ExitCode> {
    let config = args.sim.config()?;
    let written = match args.to.as_deref() {
        None | Some("-") => {
            let stdout = std::io::stdout();
            write_jsonl(config, network, stdout.lock())
        }
        Some(to) => match to.parse::<SourceConfig>()? {
            SourceConfig::File(path) => {
                let f = std::fs::File::create(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
                let mut out = std::io::BufWriter::new(f);
                let n = write_jsonl(config, network, &mut out)?;
                out.flush()?;
                Ok(n)
            }
            SourceConfig::Kafka(url) => {
                let kafka = KafkaConfig::from_url(&url)?;
                let paced = config.rate.is_some();
                let mut pacer = Pacer::new(config.rate);
                let sim = Simulator::new(config, network);
                let started = std::time::Instant::now();
                let mut last = started;
                let n = produce_lines(&kafka, sim, |sent| {
                    if paced {
                        pacer.pace(sent);
                    }
                    if last.elapsed() >= std::time::Duration::from_secs(2) {
                        last = std::time::Instant::now();
                        eprintln!(
                            "cds simulate: {sent} events sent ({:.0}/s)",
                            sent as f64 / started.elapsed().as_secs_f64()
                        );
                    }
                })?;
                eprintln!(
                    "cds simulate: {n} events sent to {url} in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                Ok(n)
            }
            _ => {
                anyhow::bail!("`--to` takes file:PATH, kafka://… or stdout")
            }
        },
    };
    match written {
        Ok(_) => Ok(ExitCode::SUCCESS),
        // `cds simulate | head` closes the pipe: that is a normal way to stop.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.into()),
    }
}
