//! `--sink`: where a run writes its documents, as one typed value, and how the sink is opened.
//!
//! Adding a sink is one folder under `sink/`, one variant of [`SinkConfig`] and one arm in each
//! `match` of this file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use super::cosmos::{CosmosConfig, CosmosConfigError, CosmosSink, CosmosSinkError};
use super::sqlite::{SqliteConfig, SqliteSink};
use super::{Sink, SinkError};
use crate::metrics::Metrics;
use crate::ops::OpsAlerts;

/// Which sink `--sink` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkConfig {
    /// The embedded SQLite store under the data directory: `sqlite`.
    Sqlite,
    /// Azure Cosmos DB: `cosmos`; endpoint, key and database come from the environment.
    Cosmos {
        /// The tuning file (`--cosmos-config`), if any.
        tuning: Option<PathBuf>,
    },
}

/// A `--sink` that names no sink.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sink {0:?}: expected `sqlite` or `cosmos`")]
pub struct UnknownSink(pub String);

/// Why a sink could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SinkOpenError {
    #[error("opening {path}")]
    Sqlite {
        path: String,
        #[source]
        source: SinkError,
    },
    #[error(transparent)]
    CosmosConfig(#[from] CosmosConfigError),
    #[error("opening the Cosmos DB sink")]
    Cosmos(#[source] CosmosSinkError),
}

impl std::str::FromStr for SinkConfig {
    type Err = UnknownSink;

    fn from_str(s: &str) -> Result<Self, UnknownSink> {
        match s {
            "sqlite" => Ok(SinkConfig::Sqlite),
            "cosmos" => Ok(SinkConfig::Cosmos { tuning: None }),
            other => Err(UnknownSink(other.to_owned())),
        }
    }
}

/// The `--sink` name of the sink.
impl fmt::Display for SinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SinkConfig::Sqlite => "sqlite",
            SinkConfig::Cosmos { .. } => "cosmos",
        })
    }
}

/// An opened sink, with the shortest time between two writes it asks for (Cosmos DB coalesces
/// changes to save request units), if it asks for one.
pub struct OpenedSink {
    pub sink: Box<dyn Sink>,
    pub flush_interval: Option<Duration>,
}

impl SinkConfig {
    /// The sink with this Cosmos DB tuning file (`--cosmos-config`); other sinks ignore it.
    pub fn with_cosmos_tuning(self, file: Option<PathBuf>) -> Self {
        match self {
            SinkConfig::Cosmos { .. } => SinkConfig::Cosmos { tuning: file },
            other => other,
        }
    }

    /// Opens the sink; its retries are counted in `metrics` and its outages raised on `ops`.
    pub(crate) fn open(
        &self,
        data_dir: &Path,
        metrics: &Arc<Metrics>,
        ops: &OpsAlerts,
    ) -> Result<OpenedSink, SinkOpenError> {
        match self {
            SinkConfig::Sqlite => {
                let config = SqliteConfig::in_data_dir(data_dir);
                let sink = SqliteSink::open(&config)
                    .map_err(|source| SinkOpenError::Sqlite {
                        path: config.path.display().to_string(),
                        source,
                    })?
                    .counting_retries(metrics.sink.sink_retries.clone());
                Ok(OpenedSink {
                    sink: Box::new(sink),
                    flush_interval: None,
                })
            }
            SinkConfig::Cosmos { tuning } => {
                let config = CosmosConfig::load(tuning.as_deref())?;
                let flush_interval = Some(config.flush_interval());
                info!(database = %config.database, "connecting to Cosmos DB");
                let sink = CosmosSink::open(config, metrics.clone(), data_dir)
                    .map_err(SinkOpenError::Cosmos)?
                    .with_ops(ops.clone());
                Ok(OpenedSink {
                    sink: Box::new(sink),
                    flush_interval,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sink_parses_and_prints_back() {
        for (text, expected) in [
            ("sqlite", SinkConfig::Sqlite),
            ("cosmos", SinkConfig::Cosmos { tuning: None }),
        ] {
            let parsed: SinkConfig = text.parse().expect("a valid sink");
            assert_eq!(parsed, expected);
            assert_eq!(parsed.to_string(), text);
        }
    }

    #[test]
    fn an_unknown_sink_is_refused_naming_the_accepted_ones() {
        for bad in ["", "SQLite", "cosmosdb", "off", "postgres"] {
            let e = bad.parse::<SinkConfig>().expect_err("not a sink");
            assert_eq!(e, UnknownSink(bad.to_owned()));
            assert_eq!(
                e.to_string(),
                format!("unknown sink {bad:?}: expected `sqlite` or `cosmos`")
            );
        }
    }

    #[test]
    fn the_cosmos_tuning_file_goes_to_cosmos_only() {
        let file = Some(PathBuf::from("cosmos.toml"));
        assert_eq!(
            SinkConfig::Cosmos { tuning: None }.with_cosmos_tuning(file.clone()),
            SinkConfig::Cosmos {
                tuning: file.clone()
            }
        );
        assert_eq!(
            SinkConfig::Sqlite.with_cosmos_tuning(file),
            SinkConfig::Sqlite
        );
    }
}
