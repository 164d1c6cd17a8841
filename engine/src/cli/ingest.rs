//! `cds ingest --kind ehr PATH`: one batch run of the engine over a daily EHR extract (CSV, or
//! the first sheet of an Excel workbook).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::config::{default_lake, RunConfig, Switch};
use super::run;
use crate::decode::Format;
use crate::model::Network;
use crate::sink::SinkConfig;
use crate::source::SourceConfig;
use crate::support::lock::EngineLock;

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
    rules: Option<Switch<PathBuf>>,
}

pub fn ingest(
    args: IngestArgs,
    network: Network,
    departments: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    if args.kind != "ehr" {
        anyhow::bail!("unknown --kind {:?}: expected `ehr`", args.kind);
    }
    // Before the workbook's CSV is written into the data directory.
    let lake = default_lake(&args.data_dir);
    let _held = EngineLock::take(&args.data_dir, Some(&lake), "ingest")?;
    let is_xlsx = args
        .path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("xlsx"));
    let path = if is_xlsx {
        sheet_as_csv(&args.path, &args.data_dir)?
    } else {
        args.path.clone()
    };
    let mut config = extract_run(args, path)?;
    config.departments = departments;
    run::run(config, network)
}

/// `cds run` over the extract (CSV at `path`), until its end: no HTTP server, no checkpoint.
fn extract_run(args: IngestArgs, path: PathBuf) -> anyhow::Result<RunConfig> {
    let mut config = RunConfig::batch(SourceConfig::File(path), args.data_dir);
    config.source_settings.format = Format::EhrCsv;
    config.sink = args.sink.parse::<SinkConfig>()?;
    config.rules = args.rules.into();
    Ok(config)
}

/// Writes the first sheet of a workbook as CSV under `DATA_DIR/ingest/`, row for row, so that
/// a dead letter's line number is the sheet's row number.
fn sheet_as_csv(path: &Path, data_dir: &Path) -> anyhow::Result<PathBuf> {
    use calamine::{open_workbook_auto, Reader};
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
    write_csv(range.rows(), &out)?;
    Ok(out)
}

/// Writes the rows as CSV, quoting as the standard has it (quotes, commas, line breaks).
fn write_csv<'a>(
    rows: impl Iterator<Item = &'a [calamine::Data]>,
    out: &Path,
) -> anyhow::Result<()> {
    let writing = || format!("writing {}", out.display());
    // Rows of any length, as the sheet has them: a short row is a dead letter, not an abort.
    let mut csv = csv::WriterBuilder::new()
        .flexible(true)
        .from_path(out)
        .with_context(writing)?;
    for row in rows {
        csv.write_record(row.iter().map(cell_text))
            .with_context(writing)?;
    }
    csv.flush().with_context(writing)
}

/// The text of one cell, as the extract's CSV would have it.
fn cell_text(cell: &calamine::Data) -> String {
    use calamine::Data;
    match cell {
        Data::Empty => String::new(),
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        // Whole numbers (ids, ages) without the `.0` a float would print.
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        Data::Float(f) => f.to_string(),
        Data::Int(i) => i.to_string(),
        Data::Bool(b) => b.to_string(),
        Data::DateTime(d) => d
            .as_datetime()
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.f").to_string())
            .unwrap_or_default(),
        Data::Error(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::run::tests::run_args;

    #[derive(Debug, Parser)]
    struct Ingest {
        #[command(flatten)]
        ingest: IngestArgs,
    }

    fn ingest_args(flags: &[&str]) -> IngestArgs {
        Ingest::try_parse_from(std::iter::once("cds").chain(flags.iter().copied()))
            .expect("valid flags")
            .ingest
    }

    /// An extract is read as `cds run` would read it with the flags that say so.
    #[test]
    fn an_ingest_is_the_run_of_its_extract_to_the_end() {
        for (ingest, run) in [
            (vec!["--kind", "ehr", "x.csv"], vec!["--sink", "sqlite"]),
            (
                vec![
                    "--kind", "ehr", "x.csv", "--rules", "off", "--sink", "cosmos",
                ],
                vec!["--rules", "off", "--sink", "cosmos"],
            ),
            (
                vec![
                    "--kind",
                    "ehr",
                    "x.csv",
                    "--data-dir",
                    "d",
                    "--rules",
                    "pack",
                ],
                vec!["--data-dir", "d", "--rules", "pack"],
            ),
        ] {
            let args = ingest_args(&ingest);
            let path = args.path.clone();
            let config = extract_run(args, path).expect("valid");
            let mut flags = vec![
                "--source",
                "file:x.csv",
                "--format",
                "ehr-csv",
                "--until-end",
                "--http",
                "off",
                "--checkpoint-interval",
                "0",
            ];
            flags.extend(run);
            let expected = run_args(&flags).into_config().expect("valid");
            assert_eq!(format!("{config:?}"), format!("{expected:?}"), "{ingest:?}");
        }
    }

    #[test]
    fn an_unknown_sink_is_refused() {
        let args = ingest_args(&["--kind", "ehr", "x.csv", "--sink", "nowhere"]);
        let e = extract_run(args, "x.csv".into()).expect_err("refused");
        assert!(e.to_string().contains("unknown sink"), "{e}");
    }

    #[test]
    fn cells_with_quotes_commas_and_lines_are_quoted() {
        use calamine::Data;
        let dir = std::env::temp_dir().join(format!("cds-ingest-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let out = dir.join("sheet.csv");
        let rows = [
            vec![Data::String("id".into()), Data::String("note".into())],
            vec![
                Data::Float(7.0),
                Data::String("says \"hi\", twice\nand again".into()),
            ],
            vec![Data::Int(8), Data::Empty],
        ];
        write_csv(rows.iter().map(Vec::as_slice), &out).expect("written");
        let text = std::fs::read_to_string(&out).expect("readable");
        assert_eq!(
            text,
            "id,note\n7,\"says \"\"hi\"\", twice\nand again\"\n8,\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
