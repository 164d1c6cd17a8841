//! The command line of docs/design.md: `cds run`, `cds simulate`, `cds rules`, `cds export`,
//! `cds ingest` for daily extracts, `cds replay --from-bronze` and `cds lake compact`.

mod config;
mod export;
mod ingest;
mod lake;
mod properties;
mod report;
mod rules;
mod run;
mod serve;
mod settings;
mod simulate;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::model::Network;

/// cds: real-time clinical decision support over hospital event streams.
#[derive(Debug, Parser)]
#[command(name = "cds", version, about, long_about = None)]
pub struct Cli {
    /// Departments file (hospital_id, hospital_name, department, bed_capacity, staff_count,
    /// optional kind and aliases), or a topic of one department per message
    /// (kafka://HOST:PORT/TOPIC); default: config/departments.csv if present, else the copy
    /// built into the binary.
    #[arg(long, global = true, value_name = "CSV|kafka://HOST:PORT/TOPIC")]
    departments: Option<PathBuf>,

    /// Log format on stderr: `human` (default) or `json` (one object per line, for log
    /// collectors). The level comes from `CDS_LOG` (default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the engine: source -> Silver -> Gold -> sink, with the HTTP endpoints.
    #[command(after_help = SETTINGS_HELP)]
    Run(Box<run::RunArgs>),
    /// Generate simulated hospital events (JSON lines on stdout by default).
    Simulate(simulate::SimulateArgs),
    /// Run the engine once over a daily EHR extract (`--kind ehr`, CSV).
    Ingest(ingest::IngestArgs),
    /// Print the current documents of a container as JSON lines.
    Export(export::ExportArgs),
    /// Work on clinical rules: run fixtures, check a file, evaluate one context.
    #[command(subcommand)]
    Rules(rules::RulesCommand),
    /// Rebuild every piece of state and every output from the lake's Bronze table: the
    /// options of `cds run`, with the source set to Bronze (of `--lake`, default
    /// `DATA_DIR/lake`), no checkpoint, and a stop at its end.
    #[command(after_help = SETTINGS_HELP)]
    Replay(ReplayArgs),
    /// Maintain the lake's Delta tables.
    #[command(subcommand)]
    Lake(lake::LakeCommand),
    /// Reports computed from what runs kept (`cds report dq`: data quality).
    #[command(subcommand)]
    Report(report::ReportCommand),
}

/// How `cds run --help` tells of the other ways to give its options.
const SETTINGS_HELP: &str = "Every option also comes from a CDS_ variable named after it \
(--checkpoint-interval: CDS_CHECKPOINT_INTERVAL; --tokens: CDS_TOKENS_FILE) and from the \
--config file (checkpoint-interval = 5). A flag wins over its variable, the variable over \
the file, the file over the default. See docs/configuration.md.";

#[derive(Debug, clap::Args)]
struct ReplayArgs {
    /// Read the payloads from the lake's Bronze table (the one input replay has).
    #[arg(long, required = true)]
    from_bronze: bool,
    #[command(flatten)]
    run: Box<run::RunArgs>,
}

/// Parses the command line, runs the command, and maps errors to a message and exit code 1.
pub fn main() -> ExitCode {
    let cli = match settings::parse(std::env::args_os(), &|name| std::env::var_os(name)) {
        Ok(cli) => cli,
        Err(settings::Refused::Clap(e)) => e.exit(),
        Err(settings::Refused::Settings(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(cli.log_format);
    crate::support::fault::exit_on_panic();
    crate::support::private::restrict_new_files();
    // Only the commands that read events load the departments (a topic is read to its end).
    let network = || load_network(cli.departments.as_deref());
    let result = match cli.command {
        Command::Run(mut args) => network().and_then(|network| {
            let _held = args.lock("run")?;
            args.departments = departments_file(cli.departments.clone());
            run::run(args.into_config()?, network)
        }),
        Command::Simulate(args) => network().and_then(|network| simulate::simulate(args, &network)),
        Command::Export(args) => export::export(args),
        Command::Ingest(args) => network().and_then(|network| {
            ingest::ingest(args, network, departments_file(cli.departments.clone()))
        }),
        Command::Rules(cmd) => rules::rules(cmd),
        Command::Replay(args) => network().and_then(|network| {
            anyhow::ensure!(args.from_bronze, "cds replay needs --from-bronze");
            let mut run = args.run;
            // Before the replay empties the local stores.
            let _held = run.lock("replay")?;
            run.departments = departments_file(cli.departments.clone());
            run::run(run.into_replay()?, network)
        }),
        Command::Lake(cmd) => lake::lake(cmd),
        Command::Report(cmd) => report::report_command(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CDS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The Delta libraries log an error when a lake table is created (it has no log yet) and a
    // warning per file for Bronze's binary payload column (no statistics): both expected.
    let filter = [
        "buoyant_kernel::snapshot::builder=off",
        "deltalake_core::writer::stats=error",
        // Their progress lines (snapshots, scans, log listings) are for their own debugging.
        "buoyant_kernel=warn",
        "buoyant_kernel_engine=warn",
        "deltalake_core=warn",
    ]
    .into_iter()
    .filter_map(|d| d.parse::<tracing_subscriber::filter::Directive>().ok())
    .fold(filter, |f, d| f.add_directive(d));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
        LogFormat::Human => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

/// The departments file (or topic) in force, if it is not the copy built into the binary.
fn departments_file(given: Option<PathBuf>) -> Option<PathBuf> {
    given.or_else(|| {
        let default = PathBuf::from("config/departments.csv");
        default.exists().then_some(default)
    })
}

fn load_network(path: Option<&std::path::Path>) -> anyhow::Result<Network> {
    match path {
        Some(p) if crate::dims::topic::DepartmentsTopic::is_topic(&p.to_string_lossy()) => {
            let url = p.to_string_lossy();
            crate::dims::topic::DepartmentsTopic::open(&url)
                .and_then(|mut topic| topic.read_to_end(std::time::Duration::from_secs(30)))
                .with_context(|| format!("loading departments from {url}"))
        }
        Some(p) => {
            Network::load(p).with_context(|| format!("loading departments from {}", p.display()))
        }
        None => {
            let default = std::path::Path::new("config/departments.csv");
            if default.exists() {
                Network::load(default).context("loading config/departments.csv")
            } else {
                Ok(Network::default_network())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// clap's own consistency check of every command (duplicate argument ids, conflicting
    /// flags): release builds skip it, and two flags sharing an id silently swap values there.
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
