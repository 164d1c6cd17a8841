//! `cds ingest --kind ehr PATH`: one batch run of the engine over a daily EHR extract.

use std::path::PathBuf;
use std::process::ExitCode;

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
    if is_xlsx {
        anyhow::bail!(
            "{}: Excel extracts are not read yet; save the sheet as CSV",
            args.path.display()
        );
    }
    let source = format!("file:{}", args.path.display());
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
