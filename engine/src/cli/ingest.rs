//! `cds ingest --kind ehr PATH`: one batch run of the engine over a daily EHR extract (CSV, or
//! the first sheet of an Excel workbook).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser};

use super::run::{self, RunArgs};
use crate::model::Network;

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// What the file is: `ehr` (a daily extract, CSV with a header line).
    #[arg(long, value_name = "KIND")]
    kind: String,
    /// The extract.
    #[arg(value_name = "PATH")]
    path: PathBuf,
    /// Holds the SQLite store and the local lake.
    #[arg(long, default_value = "./cds-data", value_name = "DIR")]
    data_dir: PathBuf,
    /// `sqlite` (default) or `cosmos`.
    #[arg(long, default_value = "sqlite", value_name = "SINK")]
    sink: String,
    /// Rule pack directory; `off` disables (as for `cds run`).
    #[arg(long, value_name = "DIR")]
    rules: Option<String>,
}

/// `cds run` with the extract as its source, until its end.
#[derive(Debug, Parser)]
struct AsRun {
    #[command(flatten)]
    run: RunArgs,
}

pub fn ingest(
    args: IngestArgs,
    network: Network,
    departments: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    if args.kind != "ehr" {
        anyhow::bail!("unknown --kind {:?}: expected `ehr`", args.kind);
    }
    let is_xlsx = args
        .path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("xlsx"));
    let path = if is_xlsx {
        sheet_as_csv(&args.path, &args.data_dir)?
    } else {
        args.path.clone()
    };
    let source = format!("file:{}", path.display());
    let data_dir = args.data_dir.display().to_string();
    let mut argv = vec![
        "cds-ingest",
        "--source",
        &source,
        "--format",
        "ehr-csv",
        "--until-end",
        "--http",
        "off",
        "--checkpoint-interval",
        "0",
        "--data-dir",
        &data_dir,
        "--sink",
        &args.sink,
    ];
    if let Some(rules) = args.rules.as_deref() {
        argv.extend(["--rules", rules]);
    }
    let mut parsed = AsRun::try_parse_from(argv)?;
    parsed.run.departments = departments;
    run::run(parsed.run, network)
}

/// Writes the first sheet of a workbook as CSV under `DATA_DIR/ingest/`, row for row, so that
/// a dead letter's line number is the sheet's row number.
fn sheet_as_csv(path: &Path, data_dir: &Path) -> anyhow::Result<PathBuf> {
    use calamine::{open_workbook_auto, Data, Reader};
    let mut workbook =
        open_workbook_auto(path).with_context(|| format!("opening {}", path.display()))?;
    let range = workbook
        .worksheet_range_at(0)
        .context("the workbook has no sheet")?
        .with_context(|| format!("reading the first sheet of {}", path.display()))?;
    let dir = data_dir.join("ingest");
    crate::support::private::create_private_dir(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "extract".into());
    let out = dir.join(format!("{name}.csv"));
    let mut csv = String::new();
    for row in range.rows() {
        let cells: Vec<String> = row
            .iter()
            .map(|cell| {
                let text = match cell {
                    Data::Empty => String::new(),
                    Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
                    // Whole numbers (ids, ages) without the `.0` a float would print.
                    Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => {
                        format!("{}", *f as i64)
                    }
                    Data::Float(f) => f.to_string(),
                    Data::Int(i) => i.to_string(),
                    Data::Bool(b) => b.to_string(),
                    Data::DateTime(d) => d
                        .as_datetime()
                        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.f").to_string())
                        .unwrap_or_default(),
                    Data::Error(_) => String::new(),
                };
                if text.contains([',', '"', '\n', '\r']) {
                    format!("\"{}\"", text.replace('"', "\"\""))
                } else {
                    text
                }
            })
            .collect();
        csv.push_str(&cells.join(","));
        csv.push('\n');
    }
    std::fs::write(&out, csv).with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}
