//! `cds lake …`: maintenance of the lake's Delta tables.

use std::path::PathBuf;
use std::process::ExitCode;

use std::io::IsTerminal;

use anyhow::Context;
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum LakeCommand {
    /// Merge each partition's small data files into one (a Delta `OPTIMIZE` commit: same
    /// rows, fewer files). Safe beside a running engine: a conflicting commit fails and the
    /// next compaction picks the partition up.
    Compact(CompactArgs),
}

#[derive(Debug, Args)]
pub struct CompactArgs {
    /// The lake: a directory, `az://CONTAINER/PATH` or
    /// `abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH`; default `DATA_DIR/lake`.
    #[arg(long, value_name = "LOCATION")]
    lake: Option<String>,
    /// The data directory whose lake is meant when `--lake` is not given.
    #[arg(long, default_value = "./cds-data", value_name = "DIR")]
    data_dir: PathBuf,
    /// Merge a partition only when it has at least this many files.
    #[arg(long, default_value_t = 2, value_name = "N")]
    min_files: usize,
}

/// Takes no lock on the data directory or lake (unlike `cds run`): compaction is meant to
/// run beside the engine, and Delta's commit protocol keeps the two apart.
pub fn lake(command: LakeCommand) -> anyhow::Result<ExitCode> {
    match command {
        LakeCommand::Compact(args) => {
            let location = args
                .lake
                .unwrap_or_else(|| args.data_dir.join("lake").display().to_string());
            // On a terminal, which table is being compacted (a large one takes minutes); the
            // table of results below either way.
            let terminal = std::io::stderr().is_terminal();
            let started = std::time::Instant::now();
            let done = crate::lake::compact::compact(&location, args.min_files, |i, n, table| {
                if terminal {
                    eprint!(
                        "\r\x1b[2Kcompacting {table} ({i}/{n}, {:.0} s so far)",
                        started.elapsed().as_secs_f64()
                    );
                }
            })
            .with_context(|| format!("compacting the lake at {location}"))?;
            if terminal {
                eprintln!(
                    "\r\x1b[2Kcompacted {} tables in {:.1} s",
                    done.len(),
                    started.elapsed().as_secs_f64()
                );
            }
            for c in &done {
                println!(
                    "{:<24} {:>6} files -> {:>4} ({} rows rewritten)",
                    c.table, c.files_before, c.files_after, c.rows
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
