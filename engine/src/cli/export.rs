use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::sink::sqlite::{SqliteConfig, SqliteSink};
use crate::sink::Container;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// `kpis` or `alerts`.
    #[arg(value_parser = ["kpis", "alerts"])]
    container: String,
    /// The data directory of the run.
    #[arg(long, default_value = "./cds-data", value_name = "DIR")]
    data_dir: PathBuf,
}

/// Prints every current document of the container, one JSON object per line, ordered by id.
pub fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let container = Container::parse(&args.container).context("unknown container")?;
    let config = SqliteConfig::in_data_dir(&args.data_dir);
    if !config.path.exists() {
        anyhow::bail!(
            "no store at {} (has `cds run` written there yet?)",
            config.path.display()
        );
    }
    let docs = SqliteSink::read_all(&config, container)
        .with_context(|| format!("reading {}", config.path.display()))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for doc in docs {
        writeln!(out, "{doc}")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
