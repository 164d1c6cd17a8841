use std::time::Duration;

use serde::Deserialize;

/// How the Cosmos DB sink connects and writes.
///
/// The account endpoint, key and database come from the environment only (`COSMOS_ENDPOINT`,
/// `COSMOS_KEY`, `COSMOS_DATABASE`), so that no secret ever sits in a committed file; the
/// tuning below may come from a TOML file (`cds run --sink cosmos --cosmos-config FILE`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CosmosConfig {
    /// The account endpoint, e.g. `https://myaccount.documents.azure.com:443/`.
    #[serde(skip)]
    pub endpoint: String,
    /// The account key; `None` authenticates with Microsoft Entra ID instead.
    #[serde(skip)]
    pub key: Option<AccountKey>,
    /// Which Microsoft Entra ID credential to use when no key is given (`COSMOS_CREDENTIAL`
    /// overrides it).
    pub credential: EntraCredential,
    /// The database holding the `kpis` and `alerts` containers.
    pub database: String,
    /// Shortest time between two KPI writes: within it only the newest version of each KPI
    /// document is written, which is what keeps the request units proportional to what the
    /// wards see rather than to the event rate.
    pub flush_interval_ms: u64,
    /// Most upserts in flight at once; the sink waits for the slowest of a batch before it
    /// takes the next one, which is the backpressure into the dataflow.
    pub max_in_flight: usize,
    /// Retries of one document after its first attempt (throttling, 449, 503, 408, timeouts,
    /// a connection that fails) before it goes to the dead-letter store.
    pub max_retries: u32,
    /// First backoff; it doubles on every retry up to `max_backoff_ms`, with full jitter. A
    /// throttled request waits at least what the service asks for (`x-ms-retry-after-ms`).
    pub base_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Longest wait for one request before it counts as a timeout (408) and is retried.
    pub request_timeout_ms: u64,
    /// Throughput of each container when the sink creates it.
    pub throughput: Throughput,
    /// Region the engine runs in or nearest to it (e.g. `West Europe`); requests go to the
    /// account's regions closest to it. Unset: the account's own region order.
    pub region: Option<String>,
    /// Whether the SDK may use HTTP/2 (unset: the SDK default, or
    /// `AZURE_COSMOS_CONNECTION_POOL_IS_HTTP2_ALLOWED`). Emulators that speak HTTP/1.1 only need
    /// `false`.
    pub http2: Option<bool>,
    /// Whether the SDK sends documents in Cosmos binary JSON (unset: the SDK default, or
    /// `AZURE_COSMOS_BINARY_ENCODING_ENABLED`). Emulators that only read text JSON need `false`.
    pub binary_encoding: Option<bool>,
}

/// A Microsoft Entra ID credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntraCredential {
    /// The first that gives a token of: the workload identity (when AKS provides one, i.e.
    /// `AZURE_FEDERATED_TOKEN_FILE` is set), the managed identity, developer credentials.
    Auto,
    /// The pod's AKS workload identity: `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID` and
    /// `AZURE_TENANT_ID`, which the workload identity webhook sets.
    WorkloadIdentity,
    /// The managed identity of the Azure resource the engine runs on (system-assigned, or the
    /// user-assigned one whose client id is in `AZURE_CLIENT_ID`): production.
    ManagedIdentity,
    /// The signed-in Azure CLI (`az login`) or Azure Developer CLI: a developer's machine.
    Developer,
}

impl EntraCredential {
    fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "auto" => Some(EntraCredential::Auto),
            "workload_identity" => Some(EntraCredential::WorkloadIdentity),
            "managed_identity" => Some(EntraCredential::ManagedIdentity),
            "developer" => Some(EntraCredential::Developer),
            _ => None,
        }
    }
}

/// Provisioned throughput of a container created by the sink, in request units per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Throughput {
    /// Autoscale between a tenth of the maximum and the maximum (the cheapest setting that
    /// absorbs an admission surge without throttling for long).
    Autoscale { max: u64 },
    /// A fixed number of RU/s.
    Manual { ru: u64 },
    /// No throughput on the container: for serverless accounts, or when the database has
    /// shared throughput set up by an administrator.
    Account,
}

/// An account key, kept out of `Debug` output and logs.
#[derive(Clone, PartialEq, Eq)]
pub struct AccountKey(pub(crate) String);

impl std::fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccountKey(***)")
    }
}

impl AccountKey {
    pub fn new(key: impl Into<String>) -> Self {
        AccountKey(key.into())
    }
}

/// The well-known key of the Cosmos DB emulators (public, documented by Microsoft); it is no
/// secret and only ever works against an emulator.
pub const EMULATOR_KEY: &str =
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==";

/// Default database name (docs/design.md).
pub const DEFAULT_DATABASE: &str = "cds";

impl Default for CosmosConfig {
    fn default() -> Self {
        CosmosConfig {
            endpoint: String::new(),
            key: None,
            credential: EntraCredential::Auto,
            database: DEFAULT_DATABASE.to_owned(),
            flush_interval_ms: 250,
            max_in_flight: 32,
            max_retries: 10,
            base_backoff_ms: 100,
            max_backoff_ms: 5_000,
            request_timeout_ms: 10_000,
            throughput: Throughput::Autoscale { max: 1_000 },
            region: None,
            http2: None,
            binary_encoding: None,
        }
    }
}

/// Why a Cosmos DB configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum CosmosConfigError {
    #[error("COSMOS_ENDPOINT is not set (the account endpoint, e.g. https://ACCOUNT.documents.azure.com:443/)")]
    NoEndpoint,
    #[error("cannot read the Cosmos DB settings {path}: {reason}")]
    File { path: String, reason: String },
    #[error("invalid Cosmos DB setting: {0}")]
    Invalid(String),
}

impl CosmosConfig {
    /// Tuning from a TOML file (every field optional), endpoint, key and database from the
    /// environment: `COSMOS_ENDPOINT` (required), `COSMOS_KEY` (else Entra ID),
    /// `COSMOS_DATABASE` (else the file's `database`, else `cds`).
    pub fn load(file: Option<&std::path::Path>) -> Result<Self, CosmosConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| CosmosConfigError::File {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                toml::from_str::<CosmosConfig>(&text).map_err(|e| CosmosConfigError::File {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?
            }
            None => CosmosConfig::default(),
        };
        config.endpoint = std::env::var("COSMOS_ENDPOINT")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .ok_or(CosmosConfigError::NoEndpoint)?;
        config.key = std::env::var("COSMOS_KEY")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .map(AccountKey);
        if let Ok(c) = std::env::var("COSMOS_CREDENTIAL") {
            config.credential = EntraCredential::parse(&c).ok_or_else(|| {
                CosmosConfigError::Invalid(format!(
                    "COSMOS_CREDENTIAL must be auto, workload-identity, managed-identity or developer, got {c:?}"
                ))
            })?;
        }
        if let Some(db) = std::env::var("COSMOS_DATABASE")
            .ok()
            .filter(|s| !s.trim().is_empty())
        {
            config.database = db;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks the numbers that would otherwise stall or spin the sink.
    pub fn validate(&self) -> Result<(), CosmosConfigError> {
        let bad = |what: &str| Err(CosmosConfigError::Invalid(what.to_owned()));
        if self.database.trim().is_empty() {
            return bad("database must not be empty");
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight must be at least 1");
        }
        if self.request_timeout_ms == 0 {
            return bad("request_timeout_ms must be at least 1");
        }
        if self.max_backoff_ms < self.base_backoff_ms {
            return bad("max_backoff_ms must be at least base_backoff_ms");
        }
        match self.throughput {
            Throughput::Manual { ru } if ru < 400 => bad("manual throughput is at least 400 RU/s"),
            Throughput::Autoscale { max } if max < 1_000 => {
                bad("autoscale maximum throughput is at least 1000 RU/s")
            }
            _ => Ok(()),
        }
    }

    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_settings_are_checked_and_unknown_ones_refused() {
        let c: CosmosConfig =
            toml::from_str("max_in_flight = 8\nthroughput = { manual = { ru = 400 } }\n")
                .expect("valid settings");
        assert_eq!(c.max_in_flight, 8);
        assert_eq!(c.throughput, Throughput::Manual { ru: 400 });
        assert_eq!(c.flush_interval_ms, 250);
        assert!(c.validate().is_ok());
        assert!(toml::from_str::<CosmosConfig>("max_in_flite = 8").is_err());
        // The endpoint and key are never read from a file.
        assert!(toml::from_str::<CosmosConfig>("endpoint = \"https://x\"").is_err());
        let zero: CosmosConfig = toml::from_str("max_in_flight = 0").expect("parses");
        assert!(zero.validate().is_err());
    }

    #[test]
    fn every_throughput_form_parses() {
        let parse = |t: &str| {
            toml::from_str::<CosmosConfig>(&format!("throughput = {t}"))
                .map(|c| c.throughput)
                .ok()
        };
        assert_eq!(
            parse("{ autoscale = { max = 4000 } }"),
            Some(Throughput::Autoscale { max: 4000 })
        );
        assert_eq!(
            parse("{ manual = { ru = 400 } }"),
            Some(Throughput::Manual { ru: 400 })
        );
        assert_eq!(parse("\"account\""), Some(Throughput::Account));
        assert_eq!(parse("\"fast\""), None);
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let c = CosmosConfig {
            key: Some(AccountKey::new("very-secret")),
            ..CosmosConfig::default()
        };
        assert!(!format!("{c:?}").contains("very-secret"));
    }
}
