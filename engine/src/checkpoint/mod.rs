//! Checkpoints: the state the engine needs to continue, and when it is taken, written and
//! restored.
//!
//! A checkpoint holds the compacted Gold inputs (latest ADT fact and latest vitals per
//! patient, stays and admissions with their multiplicities), the duplicate window, what the
//! payload decoder remembers, the rules stage (patient contexts, suppression windows, pending
//! delayed evokes), the last processed position per source partition, and the length of each
//! lake file. It is taken at an epoch boundary and written only once every output of that
//! epoch is durable, so a restart from it neither loses nor repeats anything: the new dataflow
//! starts from the same facts, the source skips what the checkpoint covers, and the lake files
//! are cut back to their recorded length.
//!
//! - [`Checkpointed`]: what each stateful stage (decoder, Silver, Gold facts, rules) gives a
//!   checkpoint and takes back from one, implemented where the stage's state lives.
//! - [`store`]: the files, their format and rotation.
//! - `coordinator`: when a checkpoint is taken and written; one write path for the periodic
//!   checkpoints and the last one at shutdown.
//! - `recovery`: restoring a run's state at start.
//! - `rescale`: restoring it from the checkpoints of another cluster layout.

mod coordinator;
mod recovery;
mod rescale;
mod state;
pub mod store;

pub use store::{Checkpoint, CheckpointStore, UnusableCheckpoint};

pub(crate) use coordinator::{Coordinator, RulesStateAt};
pub(crate) use recovery::recover;
pub(crate) use rescale::{identity, Rescale};
pub(crate) use state::{IngestStages, IngestState};

use serde::{de::DeserializeOwned, Serialize};

use crate::support::codec::{self, CodecError};

/// A stage whose state a checkpoint keeps.
///
/// The state is borrowed from the stage when a checkpoint is written (no copy of what may be
/// hundreds of megabytes) and owned when one is read.
pub trait Checkpointed {
    /// The stage's state as a checkpoint keeps it.
    type State<'a>: Serialize
    where
        Self: 'a;

    /// The state now, borrowing the stage.
    fn snapshot(&self) -> Self::State<'_>;

    /// Continues with a checkpoint's state, replacing the stage's own.
    fn restore(&mut self, state: Self::State<'static>);
}

/// A stage's state, encoded on its own (the rules stage's, which runs on its own thread).
pub fn encode<S: Checkpointed>(stage: &S) -> Result<Vec<u8>, CodecError> {
    codec::encode(&stage.snapshot())
}

/// Restores a stage from state that [`encode`] wrote.
pub fn decode_into<S>(stage: &mut S, bytes: &[u8]) -> Result<(), CodecError>
where
    S: Checkpointed + 'static,
    S::State<'static>: DeserializeOwned,
{
    let state: S::State<'static> = codec::decode(bytes)?;
    stage.restore(state);
    Ok(())
}

/// Why checkpoints could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("checkpoint location {location:?}: {reason}")]
    Location { location: String, reason: String },
    #[error("checkpoint encoding: {0}")]
    Encode(#[from] CodecError),
    #[error(
        "the newest checkpoint ({path}) was written by an earlier version of cds in a format this \
         version does not read; rebuild the state with `cds replay --from-bronze` into a new data \
         directory, or move the checkpoints away to start from empty state"
    )]
    EarlierFormat { path: String },
    #[error("the ingest state does not load: {0}")]
    IngestState(CodecError),
    #[error("the rules state does not load: {0}")]
    RulesState(CodecError),
    #[error(
        "the newest checkpoint ({found:?}) was written by another cluster layout than this \
         one ({this:?}); start every process with --rescale (and one --checkpoints location \
         for both layouts) to continue from it, or move the checkpoints away to start from \
         empty state"
    )]
    OtherLayout { found: String, this: String },
    #[error("cannot continue from the checkpoints of the layout before: {0}")]
    Rescale(String),
}
