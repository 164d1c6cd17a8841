//! `cds report …`: reports computed from what runs kept.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};

use crate::decode::Format;
use crate::lake::dq_report::{render_html, report, ReportInput};

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// The data-quality report: per day and hospital, events in, duplicates, late arrivals,
    /// Silver's flags and repairs per rule, quarantine reasons; dead letters by reason and
    /// format; fields the event model does not know. Read from the lake's Bronze and Silver
    /// tables and the dead-letter store, so it works after the fact.
    Dq(DqArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Html,
    Json,
}

#[derive(Debug, Args)]
pub struct DqArgs {
    /// The data directory (its dead-letter store, and its lake when `--lake` is not given).
    #[arg(long, default_value = "./cds-data", value_name = "DIR")]
    data_dir: PathBuf,
    /// The lake: a directory, `az://CONTAINER/PATH` or
    /// `abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH`; default `DATA_DIR/lake`.
    #[arg(long, value_name = "LOCATION")]
    lake: Option<String>,
    /// Leave out days before this one (YYYY-MM-DD, UTC).
    #[arg(long, value_name = "DATE")]
    since: Option<chrono::NaiveDate>,
    /// Write the report to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// `html` (one self-contained page with inline SVG charts) or `json`.
    #[arg(long, value_enum, default_value_t = Output::Html)]
    format: Output,
    /// How Bronze's payloads are read again: `auto` (HL7 v2, FHIR or event JSON, told apart
    /// per payload), `json`, `fhir`, `hl7v2`, `ehr-csv`.
    #[arg(long, default_value = "auto", value_name = "FORMAT")]
    payload_format: String,
}

pub fn report_command(command: ReportCommand) -> anyhow::Result<ExitCode> {
    let ReportCommand::Dq(args) = command;
    let lake = args
        .lake
        .clone()
        .unwrap_or_else(|| args.data_dir.join("lake").display().to_string());
    let format: Format = args
        .payload_format
        .parse()
        .map_err(|e| anyhow::anyhow!("--payload-format: {e}"))?;
    let terminal = std::io::stderr().is_terminal();
    if terminal {
        eprint!("reading the lake at {lake} …");
    }
    let started = std::time::Instant::now();
    // On a terminal: payloads decoded, their rate and the time left.
    let progress = |done: usize, total: usize| {
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / secs;
        let left = if rate > 0.0 {
            format!("{:.0} s left", (total - done) as f64 / rate)
        } else {
            "…".to_owned()
        };
        eprint!("\r\x1b[2Kdecoding Bronze again: {done} of {total} payloads ({rate:.0}/s, {left})");
    };
    let dq = report(&ReportInput {
        lake: &lake,
        data_dir: &args.data_dir,
        format,
        since: args.since,
        progress: terminal.then_some(&progress as &dyn Fn(usize, usize)),
    })
    .with_context(|| format!("the data-quality report of {lake}"))?;
    let text = match args.format {
        Output::Html => render_html(&dq),
        Output::Json => serde_json::to_string_pretty(&dq)? + "\n",
    };
    match &args.out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{text}"),
    }
    if terminal {
        eprint!("\r\x1b[2K");
    }
    eprintln!(
        "data-quality report: {} events in, {} duplicates, {} late, {} quarantined, {} dead \
         letters over {} day-hospital rows ({:.1} s)",
        dq.totals.events_in,
        dq.totals.duplicates,
        dq.totals.late,
        dq.totals.quarantined,
        dq.dead_letters_total,
        dq.days.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
