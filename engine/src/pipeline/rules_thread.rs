//! The rules threads: each runs its share of the rule pack over every epoch's records
//! ([`crate::rules::Share`]), sends its alerts to the sink and reloads changed rule files.
//! Share 0 answers the checkpoint's requests for the stage's state, with the parts the other
//! shares send it after the same epoch.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::messages::{RulesBatch, SinkMessage};
use super::{DataflowError, PipelineError};
use crate::checkpoint::RulesStateAt;
use crate::rules::{RulesStage, SharePart, RELOAD_INTERVAL};
use crate::support::{Stage, StageHealth};

/// The running rules threads, with the ingest's ends of their channels.
pub(super) struct RulesThreads {
    /// One per thread, in share order; every epoch goes to each.
    pub inputs: Vec<SyncSender<RulesBatch>>,
    /// Where share 0 sends the stage's state for a checkpoint; taken by the coordinator.
    pub states: Option<Receiver<RulesStateAt>>,
    handles: Vec<JoinHandle<RulesStage>>,
}

impl RulesThreads {
    /// Starts one thread per share; alerts go to `alerts`.
    pub fn spawn(
        shares: Vec<RulesStage>,
        alerts: &SyncSender<SinkMessage>,
        stages: &Arc<StageHealth>,
    ) -> Result<Self, PipelineError> {
        let others = shares.len().saturating_sub(1);
        let (parts_tx, parts_rx) = sync_channel::<(u64, SharePart)>(others.max(1) * 2);
        let (snapshots, states) = sync_channel::<RulesStateAt>(2);
        let mut parts_rx = Some(parts_rx);
        let mut inputs = Vec::with_capacity(shares.len());
        let mut handles = Vec::with_capacity(shares.len());
        for stage in shares {
            let (tx, batches) = sync_channel::<RulesBatch>(2);
            let index = stage.share().index;
            let checkpoint = if index == 0 {
                Checkpoint::Collect {
                    parts: parts_rx.take(),
                    others,
                    snapshots: snapshots.clone(),
                }
            } else {
                Checkpoint::Send(parts_tx.clone())
            };
            let channels = RulesChannels {
                batches,
                alerts: alerts.clone(),
                checkpoint,
            };
            let stages = stages.clone();
            let handle = std::thread::Builder::new()
                .name(format!("cds-rules-{index}"))
                .spawn(move || rules_loop(channels, stage, stages))
                .map_err(|e| PipelineError::Dataflow(e.into()))?;
            inputs.push(tx);
            handles.push(handle);
        }
        Ok(RulesThreads {
            inputs,
            states: Some(states),
            handles,
        })
    }

    /// Closes the inputs, joins every thread, and merges the shares back into one stage (for
    /// the final checkpoint).
    pub fn join(self) -> Result<Option<RulesStage>, DataflowError> {
        let RulesThreads {
            inputs, handles, ..
        } = self;
        drop(inputs);
        let mut whole: Option<RulesStage> = None;
        for handle in handles {
            let share = handle.join().map_err(|_| DataflowError::RulesPanicked)?;
            match whole.as_mut() {
                None => whole = Some(share),
                Some(first) => first.absorb(share),
            }
        }
        Ok(whole)
    }
}

/// What a share does when a checkpoint is taken after an epoch.
enum Checkpoint {
    /// Share 0: wait for the other shares' parts of that epoch, then send the whole state.
    Collect {
        parts: Option<Receiver<(u64, SharePart)>>,
        others: usize,
        snapshots: SyncSender<RulesStateAt>,
    },
    /// The other shares: send this share's part to share 0.
    Send(SyncSender<(u64, SharePart)>),
}

/// A rules thread's ends of its channels.
struct RulesChannels {
    batches: Receiver<RulesBatch>,
    alerts: SyncSender<SinkMessage>,
    checkpoint: Checkpoint,
}

impl Checkpoint {
    /// The stage's state after `epoch`, as this share contributes it.
    fn take(&self, epoch: u64, stage: &RulesStage) {
        match self {
            Checkpoint::Send(tx) => {
                let _ = tx.send((epoch, stage.part()));
            }
            Checkpoint::Collect {
                parts,
                others,
                snapshots,
            } => {
                let mut collected = Vec::with_capacity(*others);
                if let Some(rx) = parts {
                    while collected.len() < *others {
                        match rx.recv() {
                            // Every share sends one part per checkpoint, in epoch order, so
                            // an older part is of a checkpoint already given up.
                            Ok((at, part)) if at == epoch => collected.push(part),
                            Ok(_) => {}
                            // A share stopped: no checkpoint of this epoch.
                            Err(_) => return,
                        }
                    }
                }
                let state = stage.encode_with(&collected);
                let _ = snapshots.send(RulesStateAt { epoch, state });
            }
        }
    }
}

/// The rules loop: evaluate each batch, send its alerts, answer snapshot requests, and reload
/// changed rule files. Returns the stage when the input closes.
fn rules_loop(
    channels: RulesChannels,
    mut stage: RulesStage,
    stages: Arc<StageHealth>,
) -> RulesStage {
    let share = stage.share().index;
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
                let forecasts = stage.take_forecasts();
                drop(records);
                if snapshot {
                    // The state after this epoch's records, matching the ingest's snapshot.
                    channels.checkpoint.take(epoch, &stage);
                }
                let alerts = SinkMessage::Alerts {
                    share,
                    epoch,
                    documents,
                    forecasts,
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
