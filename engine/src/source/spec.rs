//! `--source`: which source a run reads, as one typed value, and how it is opened.
//!
//! The command line, `cds ingest` and `cds replay` all name their source with a
//! [`SourceConfig`] and open it here, so the forms `--source` accepts are listed once. Adding a
//! source is one folder under `source/`, one variant of [`SourceConfig`] and one arm in each
//! `match` of this file.

use std::fmt;
use std::path::PathBuf;

use tracing::info;

use super::bronze::{BronzeConfig, BronzeSource};
use super::file::{FileConfig, FileSource, Framing};
use super::kafka::{KafkaConfig, KafkaSource, PartitionShare};
use super::mllp::{MllpArgs, MllpSource};
use super::simulator::{SimulatorConfig, SimulatorSource};
use super::{Source, SourceError};
use crate::decode::Format;
use crate::model::Network;

/// Which source `--source` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceConfig {
    /// The hospital network simulator: `simulator`.
    Simulator,
    /// A file of payloads: `file:PATH` (`file:-` for stdin).
    File(PathBuf),
    /// Kafka or Azure Event Hubs: `kafka://HOST:PORT/TOPIC`.
    Kafka(String),
    /// An HL7 v2 MLLP listener: `mllp://HOST:PORT`, or `mllps://HOST:PORT` over TLS.
    Mllp(String),
    /// A lake's Bronze table, replayed: `bronze:LAKE`.
    Bronze(String),
}

impl std::str::FromStr for SourceConfig {
    type Err = SourceError;

    fn from_str(s: &str) -> Result<Self, SourceError> {
        if s == "simulator" {
            Ok(SourceConfig::Simulator)
        } else if let Some(path) = s.strip_prefix("file:") {
            Ok(SourceConfig::File(path.into()))
        } else if s.starts_with("kafka://") || s == "kafka" {
            Ok(SourceConfig::Kafka(s.to_owned()))
        } else if let Some(lake) = s.strip_prefix("bronze:") {
            Ok(SourceConfig::Bronze(lake.to_owned()))
        } else if s.starts_with("mllp://") || s.starts_with("mllps://") {
            Ok(SourceConfig::Mllp(s.to_owned()))
        } else {
            Err(SourceError::Unknown(s.to_owned()))
        }
    }
}

/// The `--source` text of the source, as the operator wrote it.
impl fmt::Display for SourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceConfig::Simulator => f.write_str("simulator"),
            SourceConfig::File(path) => write!(f, "file:{}", path.display()),
            SourceConfig::Kafka(url) | SourceConfig::Mllp(url) => f.write_str(url),
            SourceConfig::Bronze(lake) => write!(f, "bronze:{lake}"),
        }
    }
}

/// The settings of the other flags that tune a source; each source reads its own.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// The simulator's settings; `None` unless the source is the simulator, whose flags are
    /// checked only when it runs.
    pub simulator: Option<SimulatorConfig>,
    /// Whether a file source waits for lines appended after its end (a run that stops at the
    /// end of its input does not).
    pub follow: bool,
    /// The `--format` given, which decides how a file is cut into payloads.
    pub format: Format,
    /// The MLLP listener's flags.
    pub mllp: MllpArgs,
    /// Where the MLLP listener keeps its message log.
    pub mllp_log_dir: PathBuf,
    /// The Kafka consumer's flags.
    pub kafka: KafkaSettings,
}

/// The Kafka consumer's flags (`--group`, `--kafka-config`, …); brokers and topics come from
/// the `kafka://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    pub group: String,
    pub settings: Vec<(String, String)>,
    pub deadletter_topic: Option<String>,
    pub eventhub_connection_string_env: Option<String>,
    pub share: PartitionShare,
}

/// The settings of a run given no Kafka flag.
impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            group: "cds".to_owned(),
            settings: Vec::new(),
            deadletter_topic: None,
            eventhub_connection_string_env: None,
            share: PartitionShare::default(),
        }
    }
}

impl SourceConfig {
    /// The decoding format of this source given `--format`: an MLLP listener always carries
    /// HL7 v2.
    pub fn format(&self, given: Format) -> Format {
        match self {
            SourceConfig::Mllp(_) => Format::Hl7v2,
            _ => given,
        }
    }

    /// Opens the source the pipeline reads.
    pub fn open(
        &self,
        settings: &SourceSettings,
        network: &Network,
    ) -> Result<Box<dyn Source>, SourceError> {
        Ok(match self {
            SourceConfig::Simulator => {
                let config = settings.simulator.clone().unwrap_or_default();
                Box::new(SimulatorSource::new(config, network))
            }
            SourceConfig::File(path) => {
                let framing = Framing::of_file(path, self.format(settings.format));
                let config = FileConfig {
                    path: path.clone(),
                    follow: settings.follow,
                };
                Box::new(FileSource::open(&config)?.with_framing(framing))
            }
            SourceConfig::Bronze(lake) => {
                let source = BronzeSource::open(&BronzeConfig { lake: lake.clone() })?;
                info!(payloads = source.remaining(), "replaying the Bronze table");
                Box::new(source)
            }
            SourceConfig::Mllp(url) => {
                let config = settings.mllp.config(url, settings.mllp_log_dir.clone())?;
                Box::new(MllpSource::open(&config)?)
            }
            SourceConfig::Kafka(url) => {
                let kafka = &settings.kafka;
                let mut config = KafkaConfig::from_url(url)?;
                config.group = kafka.group.clone();
                config.settings = kafka.settings.clone();
                config.deadletter_topic = kafka.deadletter_topic.clone();
                config.eventhub_connection_string_env =
                    kafka.eventhub_connection_string_env.clone();
                config.share = kafka.share;
                Box::new(KafkaSource::open(config)?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<SourceConfig, SourceError> {
        s.parse()
    }

    #[test]
    fn every_form_of_source_parses_and_prints_back() {
        let forms = [
            ("simulator", SourceConfig::Simulator),
            (
                "file:events.jsonl",
                SourceConfig::File("events.jsonl".into()),
            ),
            ("file:-", SourceConfig::File("-".into())),
            (
                "kafka://localhost:9092/events",
                SourceConfig::Kafka("kafka://localhost:9092/events".into()),
            ),
            ("kafka", SourceConfig::Kafka("kafka".into())),
            (
                "mllp://0.0.0.0:2575",
                SourceConfig::Mllp("mllp://0.0.0.0:2575".into()),
            ),
            (
                "mllps://0.0.0.0:2575",
                SourceConfig::Mllp("mllps://0.0.0.0:2575".into()),
            ),
            (
                "bronze:./cds-data/lake",
                SourceConfig::Bronze("./cds-data/lake".into()),
            ),
        ];
        for (text, expected) in forms {
            let parsed = parse(text).expect("a valid source");
            assert_eq!(parsed, expected, "{text}");
            assert_eq!(parsed.to_string(), text);
        }
    }

    #[test]
    fn an_unknown_source_is_refused_naming_the_accepted_forms() {
        for bad in [
            "",
            "sim",
            "files:x",
            "http://host/x",
            "Simulator",
            "mllp:host",
        ] {
            let e = parse(bad).expect_err("not a source");
            assert!(matches!(&e, SourceError::Unknown(s) if s == bad), "{bad}");
            let message = e.to_string();
            for form in [
                "simulator",
                "file:PATH",
                "kafka://",
                "mllp://",
                "bronze:LAKE",
            ] {
                assert!(message.contains(form), "{message}");
            }
        }
    }

    #[test]
    fn an_mllp_listener_always_carries_hl7v2() {
        let mllp = parse("mllp://127.0.0.1:2575").expect("valid");
        assert_eq!(mllp.format(Format::Json), Format::Hl7v2);
        let file = parse("file:x").expect("valid");
        assert_eq!(file.format(Format::Fhir), Format::Fhir);
    }
}
