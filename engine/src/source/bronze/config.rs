use serde::Deserialize;

/// Configuration of the Bronze replay source (`cds replay --from-bronze`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BronzeConfig {
    /// The lake whose `bronze/events` table is read: a local directory, `az://CONTAINER/PATH`
    /// or `abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH`.
    pub lake: String,
}
