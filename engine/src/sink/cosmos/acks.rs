//! Clinicians' acknowledgements in Cosmos DB: the `acks` container, partitioned by
//! `/hospital_id` like the others, so that every process of a deployment records into and reads
//! from one place.
//!
//! Each acknowledgement is its own item (a snooze followed by an accept is two), never
//! rewritten; readers take the items the server stamped (`_ts`, seconds) since their last read,
//! a second of overlap included, so an item written during a read is not missed.

use std::time::Duration;

use azure_data_cosmos::clients::ContainerClient;
use azure_data_cosmos::{CosmosError, FeedScope, Query};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value;

use super::{classify, connect, ensure_container, ClientFaults, CosmosConfig, CosmosSinkError};
use super::{Backoff, Verdict};

/// The container's name.
pub const ACKS_CONTAINER: &str = "acks";

/// The `acks` container of one database.
pub struct CosmosAcks {
    container: ContainerClient,
    config: CosmosConfig,
}

impl std::fmt::Debug for CosmosAcks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CosmosAcks")
            .field("database", &self.config.database)
            .finish_non_exhaustive()
    }
}

impl CosmosAcks {
    /// Connects (on the caller's tokio runtime) and creates the container if it is missing.
    pub async fn open(config: CosmosConfig) -> Result<Self, CosmosSinkError> {
        config.validate()?;
        let client = connect(&config, ClientFaults::default()).await?;
        let database = client.database_client(config.database.as_str());
        let container = ensure_container(&client, &database, &config, ACKS_CONTAINER).await?;
        Ok(CosmosAcks { container, config })
    }

    /// Writes one acknowledgement item (its `id` and `hospital_id` set), retrying throttling and
    /// transient failures like the sink does; the error once the retries are spent.
    pub async fn insert<T: Serialize>(
        &self,
        hospital_id: i64,
        id: &str,
        item: &T,
    ) -> Result<(), CosmosError> {
        let retry = Backoff {
            first: Duration::from_millis(self.config.base_backoff_ms),
            max: Duration::from_millis(self.config.max_backoff_ms),
            retries: self.config.max_retries,
        };
        let mut attempt = 0u32;
        loop {
            match self
                .container
                .upsert_item(hospital_id, id, item, None)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => match classify(&e) {
                    Verdict::Retry { wait, .. } if attempt < retry.retries => {
                        let jittered = retry.jittered(attempt);
                        tokio::time::sleep(wait.map_or(jittered, |w| w.max(jittered))).await;
                        attempt += 1;
                    }
                    _ => return Err(e),
                },
            }
        }
    }

    /// The items the server stamped at `since` (seconds) or later, with their stamp.
    pub async fn stamped_since(&self, since: i64) -> Result<Vec<(i64, Value)>, CosmosError> {
        let query =
            Query::from("SELECT * FROM c WHERE c._ts >= @since").with_parameter("@since", since)?;
        let mut items = self
            .container
            .query_items::<Value>(query, FeedScope::full_container(), None)
            .await?;
        let mut out = Vec::new();
        while let Some(item) = items.next().await {
            let mut item = item?;
            let stamp = item.get("_ts").and_then(Value::as_i64).unwrap_or(since);
            if let Some(o) = item.as_object_mut() {
                o.retain(|k, _| !k.starts_with('_'));
            }
            out.push((stamp, item));
        }
        Ok(out)
    }
}
