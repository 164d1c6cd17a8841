//! Where the options of `cds run` (and `cds replay`) come from besides the command line: a
//! `CDS_…` environment variable per option and a `--config` TOML file, so that a container
//! runs `cds run` without a script that turns its environment into flags. A flag wins over its
//! variable, the variable over the file, the file over the built-in default.
//!
//! The variables and the file become clap's defaults for a second parse of the same command
//! line: clap still types every value, and a flag given on the command line still wins. Each
//! value is checked before, so that an error names the variable or the file and key it came
//! from.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, CommandFactory, FromArgMatches};

use super::{Cli, Command};
use crate::http::auth::TOKENS_FILE_ENV;

/// The variable naming the configuration file when `--config` is not given.
pub const CONFIG_ENV: &str = "CDS_CONFIG";
/// Options of `cds` itself that are settings of a run too.
const GLOBAL: [&str; 2] = ["departments", "log_format"];
/// The subcommands that take the options of `cds run`.
const RUNS: [&str; 2] = ["run", "replay"];
/// Options of those subcommands that are not settings of the run.
const NOT_SETTINGS: [&str; 2] = ["config", "from_bronze"];
/// Options whose variable kept the name it had before every option had one.
const OLDER_NAMES: [(&str, &str); 1] = [("tokens", TOKENS_FILE_ENV)];
/// Options whose values may be secret: an error never shows them.
const SECRET: [&str; 2] = ["kafka_config", "ops_webhook"];

/// Why the settings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("reading the configuration file {}: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("the configuration file {}, line {line}, is not TOML: {message}", file.display())]
    Toml {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("the configuration file {} has an unknown key `{key}`{hint}", file.display())]
    UnknownKey {
        file: PathBuf,
        key: String,
        hint: String,
    },
    #[error("{origin}: {problem}")]
    Value { origin: String, problem: String },
}

/// A command line refused by clap (usage, `--help`, `--version`) or by its settings.
#[derive(Debug)]
pub enum Refused {
    Clap(clap::Error),
    Settings(SettingsError),
}

impl From<clap::Error> for Refused {
    fn from(e: clap::Error) -> Self {
        Refused::Clap(e)
    }
}

impl From<SettingsError> for Refused {
    fn from(e: SettingsError) -> Self {
        Refused::Settings(e)
    }
}

/// The command line `args` (program name first) with the variables of `env` and the
/// configuration file they name.
pub fn parse<I, T>(args: I, env: &dyn Fn(&str) -> Option<OsString>) -> Result<Cli, Refused>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    // The first parse finds the configuration file and reports mistakes of the command line.
    let given = <Cli as clap::Parser>::try_parse_from(&args)?;
    let (runs, flag) = match &given.command {
        Command::Run(run) => (true, run.config.clone()),
        Command::Replay(replay) => (true, replay.run.config.clone()),
        _ => (false, None),
    };
    let from_env = || {
        runs.then(|| set(env, CONFIG_ENV))
            .flatten()
            .map(PathBuf::from)
    };
    let file = match flag.or_else(from_env) {
        Some(path) => Some(ConfigFile::read(&path)?),
        None => None,
    };
    let command = layered(Cli::command(), env, file.as_ref())?;
    let matches = command.try_get_matches_from(&args)?;
    Ok(Cli::from_arg_matches(&matches)?)
}

/// The value of a variable that is set and not empty (an empty one counts as unset, as clap
/// has it).
fn set(env: &dyn Fn(&str) -> Option<OsString>, name: &str) -> Option<OsString> {
    env(name).filter(|v| !v.is_empty())
}

/// A `--config` file: TOML whose keys are the long options of `cds run` without `--`
/// (`checkpoint-interval = 5`).
#[derive(Debug)]
struct ConfigFile {
    path: PathBuf,
    values: BTreeMap<String, toml::Value>,
}

impl ConfigFile {
    fn read(path: &Path) -> Result<ConfigFile, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            file: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<ConfigFile, SettingsError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| SettingsError::Toml {
            file: path.to_owned(),
            line: e
                .span()
                .map_or(1, |span| text[..span.start].matches('\n').count() + 1),
            message: e.message().trim_end().to_owned(),
        })?;
        Ok(ConfigFile {
            path: path.to_owned(),
            values: table.into_iter().collect(),
        })
    }

    fn origin(&self, key: &str) -> String {
        format!("`{key}` in {}", self.path.display())
    }
}

/// `command` with the values of the environment and the file as the defaults of the options
/// they name.
fn layered(
    mut command: clap::Command,
    env: &dyn Fn(&str) -> Option<OsString>,
    file: Option<&ConfigFile>,
) -> Result<clap::Command, SettingsError> {
    let global: Vec<Arg> = command
        .get_arguments()
        .filter(|a| GLOBAL.contains(&a.get_id().as_str()))
        .cloned()
        .collect();
    let run: Vec<Arg> = command
        .find_subcommand("run")
        .map(|c| {
            c.get_arguments()
                .filter(|a| !NOT_SETTINGS.contains(&a.get_id().as_str()) && a.get_long().is_some())
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if let Some(file) = file {
        let known: Vec<&str> = global
            .iter()
            .chain(&run)
            .filter_map(Arg::get_long)
            .collect();
        if let Some(key) = file.values.keys().find(|k| !known.contains(&k.as_str())) {
            let kebab = key.replace('_', "-");
            let hint = if known.contains(&kebab.as_str()) {
                format!(" (did you mean `{kebab}`?)")
            } else {
                " (the keys are the long options of `cds run` without `--`)".to_owned()
            };
            return Err(SettingsError::UnknownKey {
                file: file.path.clone(),
                key: key.clone(),
                hint,
            });
        }
    }
    for arg in &global {
        if let Some(values) = layer(arg, env, file)? {
            command = command.mut_arg(arg.get_id().clone(), |a| with_default(a, values));
        }
    }
    let mut defaults = Vec::new();
    for arg in &run {
        if let Some(values) = layer(arg, env, file)? {
            defaults.push((arg.get_id().clone(), values));
        }
    }
    for name in RUNS {
        let defaults = defaults.clone();
        command = command.mut_subcommand(name, move |mut sub| {
            for (id, values) in defaults {
                sub = sub.mut_arg(id, |a| with_default(a, values));
            }
            sub
        });
    }
    Ok(command)
}

fn with_default(arg: Arg, values: Vec<String>) -> Arg {
    if repeated(&arg) {
        arg.default_values(values)
    } else {
        let value = values.into_iter().next().unwrap_or_default();
        arg.default_value(value)
    }
}

fn repeated(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
}

fn flag(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue)
}

/// The variable of an option: `CDS_` and its long name in upper snake case
/// (`--checkpoint-interval`: `CDS_CHECKPOINT_INTERVAL`), unless it kept an older name. `None`
/// when clap reads the option's variable itself.
pub fn variable(arg: &Arg) -> Option<String> {
    if arg.get_env().is_some() {
        return None;
    }
    let id = arg.get_id().as_str();
    if let Some((_, name)) = OLDER_NAMES.iter().find(|(option, _)| *option == id) {
        return Some((*name).to_owned());
    }
    arg.get_long()
        .map(|long| format!("CDS_{}", long.replace('-', "_").to_uppercase()))
}

/// The values that the environment, else the file, gives `arg`, checked.
fn layer(
    arg: &Arg,
    env: &dyn Fn(&str) -> Option<OsString>,
    file: Option<&ConfigFile>,
) -> Result<Option<Vec<String>>, SettingsError> {
    let Some(long) = arg.get_long() else {
        return Ok(None);
    };
    if let Some(name) = variable(arg) {
        if let Some(value) = set(env, &name) {
            let text = value.into_string().map_err(|_| SettingsError::Value {
                origin: name.clone(),
                problem: "not UTF-8".into(),
            })?;
            let values = if repeated(arg) {
                // One value a line; `--mllp-allow` takes commas too.
                text.lines()
                    .flat_map(|line| {
                        if arg.get_id() == "mllp_allow" {
                            line.split(',').collect()
                        } else {
                            vec![line]
                        }
                    })
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
                    .collect()
            } else {
                vec![text]
            };
            return checked(arg, values, name).map(Some);
        }
    }
    let Some(file) = file else {
        return Ok(None);
    };
    let Some(value) = file.values.get(long) else {
        return Ok(None);
    };
    let origin = file.origin(long);
    let values = match value {
        toml::Value::Array(items) if repeated(arg) => items
            .iter()
            .map(|item| scalar(item, &origin))
            .collect::<Result<Vec<_>, _>>()?,
        toml::Value::Array(_) => {
            return Err(SettingsError::Value {
                origin,
                problem: format!("--{long} takes one value, not a list"),
            })
        }
        value => vec![scalar(value, &origin)?],
    };
    checked(arg, values, origin).map(Some)
}

/// A TOML value as the text a flag would take.
fn scalar(value: &toml::Value, origin: &str) -> Result<String, SettingsError> {
    Ok(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) | toml::Value::Table(_) => {
            return Err(SettingsError::Value {
                origin: origin.to_owned(),
                problem: "expected a string, number or boolean".into(),
            })
        }
    })
}

/// A switch's value as clap's boolish parser reads it (which needs a built command to report
/// an error, so it is not called here).
fn boolish(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "on" | "1" => Some(true),
        "false" | "no" | "n" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// `values` if clap takes them for `arg`; a switch (`--until-end`) takes `true`/`false`
/// (also `yes`/`no`, `on`/`off`, `1`/`0`).
fn checked(arg: &Arg, values: Vec<String>, origin: String) -> Result<Vec<String>, SettingsError> {
    let long = arg.get_long().unwrap_or_default();
    let refused = |problem: String| SettingsError::Value {
        origin: origin.clone(),
        problem,
    };
    if flag(arg) {
        return values
            .iter()
            .map(|v| {
                boolish(v)
                    .map(|b| b.to_string())
                    .ok_or_else(|| refused(format!("--{long} takes true or false")))
            })
            .collect();
    }
    // The option alone, with its value parser, takes each value as a flag would.
    let check = clap::Command::new("cds").no_binary_name(true).arg(
        Arg::new("value")
            .long(long.to_owned())
            .action(ArgAction::Append)
            .value_parser(arg.get_value_parser().clone()),
    );
    let flags = values.iter().map(|v| format!("--{long}={v}"));
    if let Err(e) = check.try_get_matches_from(flags) {
        let problem = if SECRET.contains(&arg.get_id().as_str()) {
            format!("not a valid value for --{long}")
        } else {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            first.strip_prefix("error: ").unwrap_or(first).to_owned()
        };
        return Err(refused(problem));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;
    use crate::cli::config::RunConfig;

    /// The run that `flags`, the variables `env` and a configuration file of `toml` (if any)
    /// describe.
    fn run(flags: &[&str], env: &[(&str, &str)], toml: Option<&str>) -> Result<Cli, Refused> {
        let dir = std::env::temp_dir().join(format!(
            "cds-settings-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let mut args = vec!["cds".to_owned(), "run".to_owned()];
        if let Some(text) = toml {
            std::fs::create_dir_all(&dir).expect("temp dir");
            let path = dir.join("cds.toml");
            std::fs::write(&path, text).expect("written");
            args.push("--config".into());
            args.push(path.display().to_string());
        }
        args.extend(flags.iter().map(|f| f.to_string()));
        let env: HashMap<String, OsString> = env
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        parse(args, &|name| env.get(name).cloned())
    }

    fn config(cli: Result<Cli, Refused>) -> RunConfig {
        match cli.expect("valid settings").command {
            Command::Run(args) => args.into_config().expect("a valid run"),
            other => panic!("not a run: {other:?}"),
        }
    }

    fn refused(cli: Result<Cli, Refused>) -> String {
        match cli {
            Err(Refused::Settings(e)) => e.to_string(),
            Err(Refused::Clap(e)) => panic!("refused by clap: {e}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn a_flag_wins_over_its_variable_which_wins_over_the_file_which_wins_over_the_default() {
        let file = Some("checkpoint-interval = 3\nbatch-size = 30\nworkers = 3\n");
        let interval = |c: &RunConfig| c.checkpoint_interval.map(|d| d.as_secs_f64());
        let env = [("CDS_CHECKPOINT_INTERVAL", "2"), ("CDS_BATCH_SIZE", "20")];

        let c = config(run(&["--checkpoint-interval", "1"], &env, file));
        assert_eq!(interval(&c), Some(1.0), "flag over variable");
        assert_eq!(c.batch_size, 20, "variable over file");
        assert_eq!(c.workers, 3, "file over default");
        assert_eq!(c.stall_after, Duration::from_secs_f64(30.0), "default");

        let c = config(run(&[], &[], file));
        assert_eq!(interval(&c), Some(3.0));
        let c = config(run(&[], &env, None));
        assert_eq!(interval(&c), Some(2.0));
        let c = config(run(&[], &[], None));
        assert_eq!(interval(&c), Some(10.0));
    }

    #[test]
    fn switches_lists_and_off_come_from_the_file_and_the_environment() {
        let file = "source = \"file:events.jsonl\"\nuntil-end = true\nhttp = \"off\"\n\
                    kafka-config = [\"fetch.min.bytes=1\", \"client.id=cds\"]\n\
                    start = 2026-01-01T00:00:00Z\n";
        let c = config(run(&[], &[], Some(file)));
        assert_eq!(c.until, crate::pipeline::Until::End);
        assert!(c.http.is_none());
        assert_eq!(c.source_settings.kafka.settings.len(), 2);
        // A variable turns a switch of the file off again; a list comes one value a line.
        let env = [
            ("CDS_UNTIL_END", "false"),
            ("CDS_KAFKA_CONFIG", "a=1\nb=2=3\n"),
            ("CDS_MLLP_ALLOW", "10.0.0.0/8, ::1/128"),
        ];
        let c = config(run(&[], &env, Some(file)));
        assert_eq!(c.until, crate::pipeline::Until::Shutdown);
        assert_eq!(
            c.source_settings.kafka.settings,
            vec![("a".into(), "1".into()), ("b".into(), "2=3".into())]
        );
        assert_eq!(c.source_settings.mllp.allow.len(), 2);
    }

    #[test]
    fn an_unknown_key_is_refused_with_its_name_and_the_file() {
        let e = refused(run(
            &[],
            &[],
            Some("source = \"simulator\"\nbogus-key = 1\n"),
        ));
        assert!(e.contains("unknown key `bogus-key`"), "{e}");
        assert!(e.contains("cds.toml"), "{e}");
        let e = refused(run(&[], &[], Some("checkpoint_interval = 1\n")));
        assert!(e.contains("did you mean `checkpoint-interval`?"), "{e}");
        // Not a setting of the run.
        let e = refused(run(&[], &[], Some("config = \"other.toml\"\n")));
        assert!(e.contains("unknown key `config`"), "{e}");
    }

    #[test]
    fn a_bad_value_names_where_it_came_from_and_hides_secrets() {
        let e = refused(run(&[], &[("CDS_WORKERS", "many")], None));
        assert!(e.starts_with("CDS_WORKERS: invalid value 'many'"), "{e}");
        let e = refused(run(&[], &[], Some("workers = [1, 2]\n")));
        assert!(e.contains("takes one value"), "{e}");
        let e = refused(run(&[], &[], Some("until-end = \"maybe\"\n")));
        assert!(
            e.contains("`until-end` in") && e.contains("true or false"),
            "{e}"
        );
        let e = refused(run(&[], &[("CDS_KAFKA_CONFIG", "sasl.password")], None));
        assert_eq!(e, "CDS_KAFKA_CONFIG: not a valid value for --kafka-config");
        let e = refused(run(&[], &[], Some("source = [\n")));
        assert!(e.contains("line 1, is not TOML"), "{e}");
    }

    #[test]
    fn the_configuration_file_may_come_from_its_variable_and_global_options_too() {
        let dir = std::env::temp_dir().join(format!("cds-settings-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("cds.toml");
        std::fs::write(&path, "log-format = \"json\"\nlake = \"off\"\n").expect("written");
        let path = path.display().to_string();
        let env: HashMap<&str, OsString> = [
            (CONFIG_ENV, OsString::from(&path)),
            ("CDS_DEPARTMENTS", OsString::from("wards.csv")),
        ]
        .into_iter()
        .collect();
        let cli = parse(["cds", "run"], &|name| env.get(name).cloned()).expect("valid");
        assert_eq!(cli.log_format, super::super::LogFormat::Json);
        assert_eq!(cli.departments, Some(PathBuf::from("wards.csv")));
        assert_eq!(config(Ok(cli)).lake, None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_tokens_file_keeps_its_older_variable() {
        let c = config(run(&[], &[("CDS_TOKENS_FILE", "t.toml")], None));
        assert_eq!(c.http.expect("on").tokens, Some(PathBuf::from("t.toml")));
    }
}
