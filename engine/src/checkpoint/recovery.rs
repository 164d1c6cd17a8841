//! Restoring a run's state at start: the newest checkpoint of this source, if there is one,
//! or those of the cluster layout before this one when the run rescales.

use tracing::{info, warn};

use super::rescale::{self, Rescale};
use super::{decode_into, CheckpointError, CheckpointStore, IngestState};
use crate::rules::RulesStage;

/// Loads the newest checkpoint of `identity` (the `source`'s identity and this layout's):
/// restores the rules stage from it and
/// returns the ingest side for the ingest thread to continue from. `None`: start from empty
/// state (no store, no checkpoint, or a checkpoint of another source). With `rescale`, the
/// checkpoints of another layout newer than this store's are split for this process instead;
/// without it, a newest checkpoint of another layout of the same source is an error.
pub(crate) fn recover(
    store: Option<&CheckpointStore>,
    source: &str,
    identity: &str,
    mut rules: Option<&mut RulesStage>,
    rescale: Option<&Rescale<'_>>,
) -> Result<Option<IngestState<'static>>, CheckpointError> {
    let Some(store) = store else {
        return Ok(None);
    };
    let newest = match rescale {
        Some(r) => {
            if let Some(state) = rescale::rescale(r, identity, rules.as_deref_mut())? {
                return Ok(Some(state));
            }
            // This layout's own newest, whatever other layouts' the store also keeps.
            store.load_newest_of(identity)?
        }
        None => store.load_newest_any()?,
    };
    let Some(checkpoint) = newest else {
        return Ok(None);
    };
    if checkpoint.source != identity {
        if rescale.is_none() && rescale::other_layout(source, &checkpoint.source, identity) {
            return Err(CheckpointError::OtherLayout {
                found: checkpoint.source,
                this: identity.to_owned(),
            });
        }
        warn!("the newest checkpoint is of another source; starting from empty state");
        return Ok(None);
    }
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
