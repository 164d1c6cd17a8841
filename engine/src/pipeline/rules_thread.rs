//! The rules thread: runs the rule pack over each epoch's records, sends the alerts to the
//! sink, answers the checkpoint's requests for its state, and reloads changed rule files.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::messages::{RulesBatch, SinkMessage};
use super::PipelineError;
use crate::checkpoint::{self, RulesStateAt};
use crate::rules::{RulesStage, RELOAD_INTERVAL};
use crate::support::{Stage, StageHealth};

/// The rules thread's ends of its channels.
pub(super) struct RulesChannels {
    pub batches: Receiver<RulesBatch>,
    pub alerts: SyncSender<SinkMessage>,
    pub snapshots: SyncSender<RulesStateAt>,
}

/// Starts the rules thread; it hands the stage back when its input closes (for the final
/// checkpoint).
pub(super) fn spawn(
    stage: RulesStage,
    channels: RulesChannels,
    stages: Arc<StageHealth>,
) -> Result<JoinHandle<RulesStage>, PipelineError> {
    std::thread::Builder::new()
        .name("cds-rules".into())
        .spawn(move || rules_loop(channels, stage, stages))
        .map_err(|e| PipelineError::Dataflow(e.into()))
}

/// The rules loop: evaluate each batch, send its alerts, answer snapshot requests, and reload
/// changed rule files. Returns the stage when the input closes.
fn rules_loop(
    channels: RulesChannels,
    mut stage: RulesStage,
    stages: Arc<StageHealth>,
) -> RulesStage {
    loop {
        match channels.batches.recv_timeout(RELOAD_INTERVAL) {
            Ok(RulesBatch {
                epoch,
                records,
                read_at,
                snapshot,
            }) => {
                let _busy = stages.busy(Stage::Rules);
                crate::support::fault::drill(Stage::Rules);
                let documents = stage.process(&records);
                if snapshot {
                    // The state after this epoch's records, matching the ingest's snapshot.
                    let state = checkpoint::encode(&stage);
                    let _ = channels.snapshots.send(RulesStateAt { epoch, state });
                }
                let alerts = SinkMessage::Alerts {
                    epoch,
                    documents,
                    read_at,
                };
                if channels.alerts.send(alerts).is_err() {
                    return stage;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return stage,
        }
        stage.maybe_reload();
    }
}
