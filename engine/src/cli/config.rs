//! The typed settings of one run of the engine: what `cds run` makes of its flags, and what
//! `cds ingest` and `cds replay` build directly. Every `"off"` of the command line is read
//! here, once, into an `Option` or a [`Switch`].

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::decode::Format;
use crate::http::HttpLimits;
use crate::ops::OpsConfig;
use crate::pipeline::{ClusterConfig, Until};
use crate::sink::SinkConfig;
use crate::source::mllp::MllpArgs;
use crate::source::{KafkaSettings, SourceConfig, SourceSettings};

/// Where `cds run` looks for the rule pack when `--rules` is not given.
pub const DEFAULT_RULES: &str = "cds-rules";
/// Most events per input batch when `--batch-size` is not given.
pub const DEFAULT_BATCH_SIZE: usize = 16_384;
/// Seconds a stage may be busy without progress when `--stall-after` is not given.
pub const DEFAULT_STALL_AFTER_SECS: f64 = 30.0;

/// A flag's value, or `off` for none: `--http off`, `--rules off`, `--lake off`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Switch<T> {
    Off,
    On(T),
}

impl<T: FromStr> FromStr for Switch<T> {
    type Err = T::Err;

    fn from_str(s: &str) -> Result<Self, T::Err> {
        if s == "off" {
            Ok(Switch::Off)
        } else {
            s.parse().map(Switch::On)
        }
    }
}

impl<T> Switch<T> {
    /// The value, `None` when switched off.
    pub fn on(self) -> Option<T> {
        match self {
            Switch::Off => None,
            Switch::On(value) => Some(value),
        }
    }
}

/// The clinical rule pack of a run (`--rules`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RulePack {
    /// `--rules off`: no clinical rules.
    Off,
    /// `--rules DIR`.
    Dir(PathBuf),
    /// No `--rules`: [`DEFAULT_RULES`] if that directory is there, else no clinical rules.
    Default,
}

impl From<Option<Switch<PathBuf>>> for RulePack {
    fn from(given: Option<Switch<PathBuf>>) -> Self {
        match given {
            None => RulePack::Default,
            Some(Switch::Off) => RulePack::Off,
            Some(Switch::On(dir)) => RulePack::Dir(dir),
        }
    }
}

/// The HTTP server of a run.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// `HOST:PORT`; port 0 picks a free port.
    pub address: String,
    /// The tokens file (`--tokens`, else `CDS_TOKENS_FILE`); `None`: `DATA_DIR/tokens.toml`,
    /// created with one admin token on first start.
    pub tokens: Option<PathBuf>,
    pub limits: HttpLimits,
    /// HTTPS with this certificate chain and private key (PEM).
    pub tls: Option<TlsFiles>,
    /// CDS Hooks: the identifier systems of the streams' patient ids in a prefetched Patient.
    pub hooks_patient_systems: Vec<String>,
}

/// The certificate chain and private key of an HTTPS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Everything one run of the engine needs besides the hospital network.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Holds the SQLite store, the local lake and the pseudonym key.
    pub data_dir: PathBuf,
    /// The departments file to watch for changes, if the network came from a file.
    pub departments: Option<PathBuf>,
    pub source: SourceConfig,
    pub source_settings: SourceSettings,
    pub sink: SinkConfig,
    pub rules: RulePack,
    /// `None`: `--http off`.
    pub http: Option<HttpConfig>,
    /// Where the Bronze/Silver/Gold Delta tables go; `None`: `--lake off`.
    pub lake: Option<String>,
    pub until: Until,
    /// `None`: no checkpoints, and the run starts from empty state.
    pub checkpoint_interval: Option<Duration>,
    /// Where checkpoints go (`--checkpoints`); `None`: `DATA_DIR/lake/checkpoints`.
    pub checkpoints: Option<String>,
    /// Continue from the checkpoints of another cluster layout (`--rescale`).
    pub rescale: bool,
    /// Dataflow worker threads per process.
    pub workers: usize,
    /// Threads the rule pack runs on (per process).
    pub rules_threads: usize,
    /// How far the event time moves past a record before the rules read it (`--reorder-window`).
    pub reorder_window: Duration,
    /// Most events per input batch.
    pub batch_size: usize,
    /// This process's place in a cluster; `None`: the process runs alone.
    pub cluster: Option<ClusterConfig>,
    /// How long a stage may be busy without progress before `/readyz` names it.
    pub stall_after: Duration,
    pub ops: OpsConfig,
}

impl RunConfig {
    /// One pass over a finite source with the defaults of `cds run`, as `cds run --source SRC
    /// --data-dir DIR --until-end --http off --checkpoint-interval 0` has it: no HTTP server,
    /// no checkpoint, a stop at the end of the input.
    pub fn batch(source: SourceConfig, data_dir: PathBuf) -> Self {
        let format = Format::default();
        RunConfig {
            source_settings: SourceSettings {
                simulator: None,
                follow: false,
                format,
                mllp: MllpArgs::default(),
                mllp_log_dir: data_dir.join("mllp"),
                kafka: KafkaSettings::default(),
            },
            source,
            sink: SinkConfig::Sqlite,
            rules: RulePack::Default,
            http: None,
            lake: Some(default_lake(&data_dir)),
            until: Until::End,
            checkpoint_interval: None,
            checkpoints: None,
            rescale: false,
            workers: 1,
            rules_threads: crate::pipeline::auto_rules_threads(),
            reorder_window: crate::pipeline::DEFAULT_REORDER_WINDOW,
            batch_size: DEFAULT_BATCH_SIZE,
            cluster: None,
            stall_after: Duration::from_secs_f64(DEFAULT_STALL_AFTER_SECS),
            ops: OpsConfig::from_env(),
            departments: None,
            data_dir,
        }
    }

    /// The decoding format of the run: `--format`, and always HL7 v2 over MLLP.
    pub fn format(&self) -> Format {
        self.source.format(self.source_settings.format)
    }
}

/// The lake of a data directory, when `--lake` is not given.
pub fn default_lake(data_dir: &Path) -> String {
    data_dir.join("lake").display().to_string()
}

/// This process's place in the cluster (`--processes`, `--process`, `--hosts`), if it has one.
pub fn cluster(
    processes: usize,
    process: usize,
    hosts: Option<&Path>,
    source: &SourceConfig,
) -> anyhow::Result<Option<ClusterConfig>> {
    use anyhow::Context;
    if processes == 0 {
        anyhow::bail!("--processes must be at least 1");
    }
    if process >= processes {
        anyhow::bail!(
            "--process {process} is not one of the {processes} processes (0 to {})",
            processes - 1
        );
    }
    if processes == 1 {
        return Ok(None);
    }
    if !matches!(source, SourceConfig::Kafka(url) if url.starts_with("kafka://")) {
        anyhow::bail!(
            "a cluster reads a Kafka source (every process would read all of {:?})",
            source.to_string()
        );
    }
    let file =
        hosts.context("--processes above 1 needs --hosts FILE (one HOST:PORT per process)")?;
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the hosts file {}", file.display()))?;
    let addresses: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .take(processes)
        .collect();
    if addresses.len() < processes {
        anyhow::bail!(
            "the hosts file {} names {} processes, --processes says {processes}",
            file.display(),
            addresses.len(),
        );
    }
    if let Some(bad) = addresses.iter().find(|a| !a.contains(':')) {
        anyhow::bail!("hosts file line {bad:?}: expected HOST:PORT");
    }
    Ok(Some(ClusterConfig {
        process,
        addresses,
        partitions_by_patient: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_switches_a_flag_off_and_anything_else_is_its_value() {
        assert_eq!("off".parse::<Switch<String>>(), Ok(Switch::Off));
        assert_eq!(
            "127.0.0.1:0".parse::<Switch<String>>(),
            Ok(Switch::On("127.0.0.1:0".to_owned()))
        );
        // Only the exact word: a directory called `Off` or `off/` is a value.
        assert_eq!(
            "Off".parse::<Switch<PathBuf>>(),
            Ok(Switch::On(PathBuf::from("Off")))
        );
        assert_eq!(
            "off/".parse::<Switch<PathBuf>>(),
            Ok(Switch::On(PathBuf::from("off/")))
        );
        assert_eq!(Switch::<String>::Off.on(), None);
        assert_eq!(Switch::On(3).on(), Some(3));
    }

    #[test]
    fn the_rule_pack_is_off_a_directory_or_the_default() {
        assert_eq!(RulePack::from(None), RulePack::Default);
        assert_eq!(RulePack::from(Some(Switch::Off)), RulePack::Off);
        assert_eq!(
            RulePack::from(Some(Switch::On(PathBuf::from("pack")))),
            RulePack::Dir(PathBuf::from("pack"))
        );
    }

    #[test]
    fn a_cluster_needs_kafka_and_a_hosts_file() {
        let kafka = SourceConfig::Kafka("kafka://b:9092/t".into());
        assert!(cluster(1, 0, None, &SourceConfig::Simulator)
            .expect("alone")
            .is_none());
        assert!(cluster(0, 0, None, &kafka).is_err());
        assert!(cluster(2, 2, None, &kafka).is_err());
        let e = cluster(2, 0, None, &SourceConfig::Simulator).expect_err("not kafka");
        assert!(e.to_string().contains("\"simulator\""), "{e}");
        let e = cluster(2, 0, None, &kafka).expect_err("no hosts file");
        assert!(e.to_string().contains("--hosts"), "{e}");
    }

    #[test]
    fn the_format_of_an_mllp_run_is_hl7v2() {
        let mut config =
            RunConfig::batch(SourceConfig::Mllp("mllp://0.0.0.0:2575".into()), "d".into());
        config.source_settings.format = Format::Fhir;
        assert_eq!(config.format(), Format::Hl7v2);
        config.source = SourceConfig::File("x".into());
        assert_eq!(config.format(), Format::Fhir);
    }
}
