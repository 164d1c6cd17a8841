//! When a checkpoint is taken and when it is written.
//!
//! A checkpoint is taken at an epoch boundary, once an interval has passed since the last one:
//! the ingest side is encoded at once, and the rules thread sends its state after the same
//! epoch. It is written once the rules state has arrived and every output of its epoch is
//! durable. Every write, periodic or the last one at shutdown, goes through
//! [`Coordinator::write`], so each is counted, timed and alerted on alike.
//!
//! A periodic write that fails is not fatal: it raises `checkpoint_failed`, the next one is
//! taken an interval later, and source positions stay committed only through the last
//! checkpoint written, so a crash in between still replays exactly. The last write failing
//! stops the run with the error.

use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::{encode, Checkpoint, CheckpointError, CheckpointStore};
use crate::metrics::Metrics;
use crate::model::format_time;
use crate::ops::{Condition, OpsAlerts};
use crate::rules::RulesStage;
use crate::support::codec::CodecError;

/// The operational alert detail of a checkpoint that could not be written.
const CHECKPOINT_FAILED: &str =
    "a checkpoint could not be written; source positions are committed only through the last one written";

/// The rules stage's state after an epoch, sent by the rules thread for a checkpoint.
#[derive(Debug)]
pub(crate) struct RulesStateAt {
    pub epoch: u64,
    pub state: Result<Vec<u8>, CodecError>,
}

/// A checkpoint taken at `epoch`, waiting for the rules state and for its outputs to be
/// durable before it is written.
#[derive(Debug)]
struct Pending {
    epoch: u64,
    ingest: Vec<u8>,
    rules: Option<Vec<u8>>,
}

/// Decides when checkpoints are taken and writes them.
#[derive(Debug)]
pub(crate) struct Coordinator {
    store: CheckpointStore,
    interval: Duration,
    /// The source identity the checkpoints continue.
    identity: String,
    /// Where the rules thread answers snapshot requests; `None` when no rules run.
    rules: Option<Receiver<RulesStateAt>>,
    pending: Option<Pending>,
    /// Epochs covered by the newest written checkpoint: only their positions may be committed.
    through: u64,
    /// Whether the last write failed: a quiet input still gets another checkpoint.
    failed: bool,
    /// When the last checkpoint was written or tried (or the run started).
    last: Instant,
    /// Whether events arrived since the last checkpoint was taken.
    uncheckpointed: bool,
    ops: OpsAlerts,
    metrics: Arc<Metrics>,
}

impl Coordinator {
    /// Checkpoints of `identity` every `interval`, into `store`.
    pub(crate) fn new(
        store: CheckpointStore,
        interval: Duration,
        identity: String,
        ops: OpsAlerts,
        metrics: Arc<Metrics>,
    ) -> Self {
        Coordinator {
            store,
            interval,
            identity,
            rules: None,
            pending: None,
            through: 0,
            failed: false,
            last: Instant::now(),
            uncheckpointed: false,
            ops,
            metrics,
        }
    }

    /// Waits for the rules stage's state, sent on `rx`, before each write.
    pub(crate) fn with_rules(mut self, rx: Receiver<RulesStateAt>) -> Self {
        self.rules = Some(rx);
        self
    }

    /// Epochs below this number are in a written checkpoint.
    pub(crate) fn through(&self) -> u64 {
        self.through
    }

    /// Whether the epoch being closed takes a checkpoint.
    pub(crate) fn due(&self) -> bool {
        self.pending.is_none() && self.last.elapsed() >= self.interval
    }

    /// Whether an empty epoch should be closed while the input is quiet, to carry a checkpoint
    /// of what came before (or to try again after a failed write), so that a crash in a lull
    /// replays nothing.
    pub(crate) fn due_while_idle(&self) -> bool {
        (self.uncheckpointed || self.failed) && self.due()
    }

    /// An epoch was closed with `events` new events.
    pub(crate) fn record_input(&mut self, events: u64) {
        self.uncheckpointed |= events > 0;
    }

    /// A checkpoint is taken after `epoch`, with the ingest side `ingest`.
    pub(crate) fn take(&mut self, epoch: u64, ingest: Vec<u8>) {
        self.uncheckpointed = false;
        self.pending = Some(Pending {
            epoch,
            ingest,
            rules: None,
        });
    }

    /// Writes the pending checkpoint if it is ready (rules state in, outputs of its epoch
    /// durable: `durable` epochs are), and updates the checkpoint age. Returns whether a
    /// write was tried; a failed write is not an error here.
    pub(crate) fn poll(&mut self, durable: u64) -> Result<bool, CheckpointError> {
        let tried = match self.ready(durable)? {
            Some(p) => {
                let failed_before = self.failed;
                if let Err(e) = self.write(p) {
                    if !failed_before {
                        tracing::warn!(error = %e, "checkpoint not written; trying again at the next interval");
                    }
                }
                true
            }
            None => false,
        };
        self.metrics
            .checkpoint
            .checkpoint_age_seconds
            .set(self.last.elapsed().as_secs() as i64);
        Ok(tried)
    }

    /// The pending checkpoint, taken out, once it can be written.
    fn ready(&mut self, durable: u64) -> Result<Option<Pending>, CheckpointError> {
        let Some(p) = self.pending.as_mut() else {
            return Ok(None);
        };
        if let Some(rx) = &self.rules {
            while let Ok(RulesStateAt { epoch, state }) = rx.try_recv() {
                if epoch == p.epoch {
                    p.rules = Some(state?);
                }
            }
            if p.rules.is_none() {
                return Ok(None);
            }
        }
        if durable <= p.epoch {
            return Ok(None);
        }
        Ok(self.pending.take())
    }

    /// The last checkpoint, once every output is written: the ingest side after `epoch`, the
    /// rules stage as it stopped.
    pub(crate) fn finish(
        &mut self,
        epoch: u64,
        ingest: Vec<u8>,
        rules: Option<&RulesStage>,
    ) -> Result<(), CheckpointError> {
        let rules = rules.map(encode).transpose()?;
        self.write(Pending {
            epoch,
            ingest,
            rules,
        })
    }

    /// The one write path: writes, counts, and raises or clears `checkpoint_failed`.
    fn write(&mut self, p: Pending) -> Result<(), CheckpointError> {
        let written = self.store.write(&Checkpoint {
            source: self.identity.clone(),
            written_at: format_time(&Utc::now().fixed_offset()),
            ingest: p.ingest,
            rules: p.rules,
        });
        self.last = Instant::now();
        let bytes = match written {
            Ok(bytes) => bytes,
            Err(e) => {
                self.ops
                    .raise(Condition::CheckpointFailed, CHECKPOINT_FAILED);
                self.failed = true;
                return Err(e);
            }
        };
        self.ops.clear(Condition::CheckpointFailed);
        self.failed = false;
        self.through = p.epoch.saturating_add(1);
        self.metrics.checkpoint.checkpoints_written.inc();
        self.metrics.checkpoint.checkpoint_bytes.set(bytes as i64);
        self.metrics.checkpoint.checkpoint_age_seconds.set(0);
        self.metrics
            .checkpoint
            .last_success_timestamp_seconds
            .set(crate::support::unix_seconds());
        tracing::debug!(epoch = p.epoch, bytes, "checkpoint written");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::mpsc::sync_channel;

    use super::*;
    use crate::ops::OpsConfig;

    fn data_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cds-coord-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn coordinator(dir: &Path, interval: Duration) -> (Coordinator, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let ops = OpsAlerts::start(&OpsConfig::default(), metrics.clone()).expect("ops");
        let store = CheckpointStore::in_data_dir(dir);
        let c = Coordinator::new(store, interval, "file:x".into(), ops, metrics.clone());
        (c, metrics)
    }

    fn alert_raised(metrics: &Metrics) -> bool {
        let active = metrics
            .ops
            .ops_condition_active
            .with_label_values(&["checkpoint_failed"]);
        active.get() == 1
    }

    #[test]
    fn a_checkpoint_is_due_once_an_interval_has_passed() {
        let dir = data_dir("due");
        let (hourly, _) = coordinator(&dir, Duration::from_secs(3600));
        assert!(!hourly.due(), "an hour has not passed");
        let (mut c, _) = coordinator(&dir, Duration::ZERO);
        assert!(c.due());
        assert!(!c.due_while_idle(), "nothing arrived since the last one");
        c.record_input(0);
        assert!(!c.due_while_idle(), "an epoch without events");
        c.record_input(3);
        assert!(c.due_while_idle());
        c.take(4, vec![1]);
        assert!(!c.due() && !c.due_while_idle(), "one is pending");
    }

    #[test]
    fn a_checkpoint_waits_for_its_outputs_and_the_rules_state() {
        let dir = data_dir("waits");
        let (c, metrics) = coordinator(&dir, Duration::ZERO);
        let (tx, rx) = sync_channel(4);
        let mut c = c.with_rules(rx);
        c.take(2, vec![7; 10]);
        assert!(!c.poll(2).expect("poll"), "epoch 2 is not durable yet");
        assert!(!c.poll(3).expect("poll"), "the rules state has not arrived");
        let other = RulesStateAt {
            epoch: 1,
            state: Ok(vec![1]),
        };
        tx.send(other).expect("send");
        tx.send(RulesStateAt {
            epoch: 2,
            state: Ok(vec![9; 3]),
        })
        .expect("send");
        assert!(c.poll(3).expect("poll"), "written");
        assert_eq!(c.through(), 3);
        assert_eq!(metrics.checkpoint.checkpoints_written.get(), 1);
        let store = CheckpointStore::in_data_dir(&dir);
        let written = store.load_newest("file:x").expect("read").expect("one");
        assert_eq!(
            (written.ingest, written.rules),
            (vec![7; 10], Some(vec![9; 3]))
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_last_checkpoint_is_written_like_the_others() {
        let dir = data_dir("last");
        let (mut c, metrics) = coordinator(&dir, Duration::ZERO);
        c.take(0, vec![1]);
        assert!(c.poll(1).expect("poll"));
        c.finish(5, vec![2], None).expect("the last checkpoint");
        assert_eq!(c.through(), 6);
        assert_eq!(
            metrics.checkpoint.checkpoints_written.get(),
            2,
            "counted alike"
        );
        assert_eq!(metrics.checkpoint.checkpoint_age_seconds.get(), 0);
        let written_at = metrics.checkpoint.last_success_timestamp_seconds.get();
        assert!(
            (crate::support::unix_seconds() - written_at).abs() <= 5,
            "{written_at}"
        );
        assert!(metrics.checkpoint.checkpoint_bytes.get() > 0);
        let store = CheckpointStore::in_data_dir(&dir);
        assert_eq!(store.list().len(), 2);
        let newest = store.load_newest("file:x").expect("read").expect("one");
        assert_eq!((newest.ingest, newest.rules), (vec![2], None));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_failed_write_raises_the_alert_and_is_tried_again() {
        let dir = data_dir("fails");
        std::fs::create_dir_all(&dir).expect("dir");
        // The checkpoint directory cannot be created where a file stands.
        std::fs::write(dir.join("lake"), b"not a directory").expect("file");
        let (mut c, metrics) = coordinator(&dir, Duration::ZERO);
        c.record_input(1);
        c.take(0, vec![1]);
        assert!(c.poll(1).expect("a failed periodic write is not fatal"));
        assert_eq!(
            c.through(),
            0,
            "positions stay committed through the last one written"
        );
        assert!(alert_raised(&metrics));
        assert_eq!(metrics.checkpoint.checkpoints_written.get(), 0);
        assert!(c.due_while_idle(), "tried again even without new input");
        assert!(
            c.finish(1, vec![2], None).is_err(),
            "the last write failing stops the run"
        );

        std::fs::remove_file(dir.join("lake")).expect("remove");
        c.take(1, vec![3]);
        assert!(c.poll(2).expect("poll"));
        assert_eq!(c.through(), 2);
        assert!(
            !alert_raised(&metrics),
            "cleared once a checkpoint is written"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
