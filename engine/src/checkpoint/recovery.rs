//! Restoring a run's state at start: the newest checkpoint of this source, if there is one.

use tracing::{info, warn};

use super::{decode_into, CheckpointError, CheckpointStore, IngestState};
use crate::rules::RulesStage;

/// Loads the newest checkpoint of the source `identity`: restores the rules stage from it and
/// returns the ingest side for the ingest thread to continue from. `None`: start from empty
/// state (no store, no checkpoint, or a checkpoint of another source).
pub(crate) fn recover(
    store: Option<&CheckpointStore>,
    identity: &str,
    rules: Option<&mut RulesStage>,
) -> Result<Option<IngestState<'static>>, CheckpointError> {
    let Some(store) = store else {
        return Ok(None);
    };
    let Some(checkpoint) = store.load_newest(identity)? else {
        return Ok(None);
    };
    if let Some(stage) = rules {
        match &checkpoint.rules {
            Some(bytes) => decode_into(stage, bytes).map_err(CheckpointError::RulesState)?,
            None => warn!("the checkpoint was taken without rules; rules start from empty state"),
        }
    }
    let state = IngestState::decode(&checkpoint.ingest)?;
    info!(taken = %checkpoint.written_at, positions = ?state.positions(), "continuing from a checkpoint");
    Ok(Some(state))
}
