use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::config::DEFAULT_RULES;

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Run every fixture in DIR/tests/*.json; non-zero exit on any failure.
    Test {
        /// The rule pack (default: cds-rules).
        dir: Option<PathBuf>,
    },
    /// Compile and validate one rule file; errors with line and column.
    Check { file: PathBuf },
    /// Evaluate one rule on a context: prints {"fired", "data", "action"}.
    Eval {
        file: PathBuf,
        /// A JSON file with the context (`event`, `patient`, `department`, `now`).
        #[arg(long, value_name = "CTX.json")]
        ctx: PathBuf,
    },
}

pub fn rules(cmd: RulesCommand) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let code = match cmd {
        RulesCommand::Test { dir } => cds_rules::cli::test(
            &dir.unwrap_or_else(|| PathBuf::from(DEFAULT_RULES)),
            &mut out,
        ),
        RulesCommand::Check { file } => cds_rules::cli::check(&file, &mut out),
        RulesCommand::Eval { file, ctx } => cds_rules::cli::eval(&file, &ctx, &mut out),
    };
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
