//! Sinks: where documents go. A sink upserts documents by id into a container; writing the
//! same document twice leaves one document, so replays are harmless.
//!
//! One folder per sink behind the small [`Sink`] trait: [`sqlite`] is the embedded default,
//! [`cosmos`] writes to Azure Cosmos DB; [`SinkConfig`] names the one `--sink` chose. The
//! [`ServingIndex`] keeps what the sink wrote for the HTTP API, whichever sink it is.

pub mod cosmos;
mod index;
mod spec;
pub mod sqlite;

pub use index::{Page, ServingIndex};
pub use spec::{OpenedSink, SinkConfig, SinkOpenError, UnknownSink};

use crate::model::Document;

/// The containers of docs/design.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Kpis,
    Alerts,
}

impl Container {
    pub fn name(self) -> &'static str {
        match self {
            Container::Kpis => "kpis",
            Container::Alerts => "alerts",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "kpis" => Some(Container::Kpis),
            "alerts" => Some(Container::Alerts),
            _ => None,
        }
    }
}

/// Why a sink write failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("Cosmos DB: {0}")]
    Cosmos(#[from] azure_data_cosmos::CosmosError),
    #[error("dead-letter store: {0}")]
    DeadLetter(String),
    #[error("cannot create {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// A destination for documents.
pub trait Sink: Send {
    /// Upserts the documents by id, atomically where the store allows.
    fn upsert(&mut self, container: Container, documents: &[Document]) -> Result<(), SinkError>;

    /// The ids of the last [`Sink::upsert`]'s documents that went to the dead-letter store
    /// instead of the container (a sink that retries and then dead-letters still returns `Ok`):
    /// the serving index leaves them out, so the API shows only what the store holds.
    fn take_dead_lettered(&mut self) -> Vec<String> {
        Vec::new()
    }

    /// Every document of a container, read back once at start to fill the [`ServingIndex`].
    /// A sink that cannot be read back answers none (its index starts empty).
    fn read_back(&mut self, container: Container) -> Result<Vec<serde_json::Value>, SinkError> {
        let _ = container;
        Ok(Vec::new())
    }
}

/// Fills `index` with what `sink` holds (KPIs and alerts), as a run starts.
pub fn restore_index(sink: &mut dyn Sink, index: &ServingIndex) -> Result<(), SinkError> {
    for container in [Container::Kpis, Container::Alerts] {
        index.restore(container, sink.read_back(container)?);
    }
    Ok(())
}

/// A document that a sink has durably written, as announced to live readers (the HTTP feed).
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub container: Container,
    pub document: Document,
}

/// Where written documents are announced; receivers that lag lose the oldest announcements
/// (they can re-read the store), the pipeline never waits for them.
pub type Feed = tokio::sync::broadcast::Sender<std::sync::Arc<Written>>;

/// Announces documents on the feed, if there is one and anyone listens.
pub fn announce(feed: Option<&Feed>, container: Container, documents: &[Document]) {
    if let Some(feed) = feed.filter(|f| f.receiver_count() > 0) {
        for d in documents {
            let _ = feed.send(std::sync::Arc::new(Written {
                container,
                document: d.clone(),
            }));
        }
    }
}
