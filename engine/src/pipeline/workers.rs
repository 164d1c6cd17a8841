//! The timely workers: each runs the Gold dataflow over the facts the ingest sends it, one
//! epoch at a time, and tells the sink when an epoch is complete.

use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use timely::communication::WorkerGuards;

use super::messages::{SinkMessage, WorkerBatch};
use super::{ClusterConfig, DataflowError, PipelineError};
use crate::gold::{self, GoldOutput};
use crate::support::{Stage, StageHealth};

/// What the workers of this process are started with.
pub(super) struct Workers {
    /// Threads in this process.
    pub count: usize,
    pub cluster: Option<ClusterConfig>,
    /// Each local worker's input from the ingest, taken by the worker it belongs to.
    pub from_ingest: Vec<Receiver<WorkerBatch>>,
    pub to_sink: SyncSender<SinkMessage>,
    pub stages: Arc<StageHealth>,
}

/// Starts this process's workers (and, in a cluster, connects to the other processes).
pub(super) fn start(workers: Workers) -> Result<WorkerGuards<()>, PipelineError> {
    let Workers {
        count,
        cluster,
        from_ingest,
        to_sink,
        stages,
    } = workers;
    let (config, first_worker) = match cluster {
        None => (timely::Config::process(count), 0),
        Some(c) => (
            timely::Config {
                communication: timely::CommunicationConfig::Cluster {
                    threads: count,
                    process: c.process,
                    addresses: c.addresses,
                    report: false,
                    zerocopy: false,
                },
                worker: timely::WorkerConfig::default(),
            },
            c.process * count,
        ),
    };
    let from_ingest = Arc::new(Mutex::new(
        from_ingest.into_iter().map(Some).collect::<Vec<_>>(),
    ));
    timely::execute(config, move |worker| {
        // Workers are numbered across the cluster; this process's are `first_worker..`.
        let index = worker.index().saturating_sub(first_worker);
        let rx = from_ingest
            .lock()
            .ok()
            .and_then(|mut v| v.get_mut(index).and_then(Option::take));
        let out = to_sink.clone();
        let (mut inputs, probe) =
            worker.dataflow::<u64, _, _>(|scope| gold::build(scope, out.clone()));
        let Some(rx) = rx else { return };
        while let Ok(WorkerBatch {
            epoch,
            batch,
            watermark,
            read_at,
        }) = rx.recv()
        {
            let _busy = stages.busy(Stage::Gold);
            crate::support::fault::drill(Stage::Gold);
            inputs.insert(batch);
            inputs.advance_to(epoch + 1);
            while probe.less_than(&(epoch + 1)) {
                worker.step();
            }
            let complete = GoldOutput::Complete {
                worker: index,
                epoch,
                watermark,
                read_at,
            };
            if out.send(SinkMessage::Gold(complete)).is_err() {
                break;
            }
        }
    })
    .map_err(|e| PipelineError::Dataflow(DataflowError::Timely(e)))
}
