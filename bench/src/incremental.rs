//! The engine's Gold stage driven batch by batch in one thread, for the comparison with the
//! recompute baseline: both start from the same Silver records and both end a batch with the
//! documents it changed rendered, so the two update latencies measure the same work.
//!
//! Per batch: Silver records → facts (`FactBuilder`) → one epoch of the differential dataflow →
//! changes added up in `KpiState` → changed documents rendered. This is what the pipeline's
//! ingest, worker and sink threads do for one epoch, minus the threads, the parse and the store.

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cds_engine::gold::{self, FactBuilder, GoldBatch, GoldOutput, KpiState};
use cds_engine::model::{Network, Pseudonymiser};
use cds_engine::silver::SilverRecord;
use serde_json::Value;

/// What a batch-by-batch run measured and produced.
#[derive(Debug)]
pub struct BatchRun {
    /// Wall time of the whole run (every batch, back to back).
    pub total: Duration,
    /// Time of each batch, from its records to its rendered documents.
    pub latencies: Vec<Duration>,
    /// The final documents by id, as [`crate::baseline::comparable`] wants them.
    pub documents: BTreeMap<String, Value>,
}

/// Runs the Gold dataflow on `records`, `batch` records per epoch, on one worker.
pub fn run(
    network: &Network,
    key: &[u8],
    records: Arc<Vec<SilverRecord>>,
    batch: usize,
) -> BatchRun {
    let network = network.clone();
    let key = key.to_vec();
    timely::execute_directly(move |worker| {
        // Unbounded in practice: drained after every step, so the dataflow never blocks on it.
        let (tx, rx) = sync_channel::<GoldOutput>(1 << 16);
        let (mut inputs, probe) = worker.dataflow::<u64, _, _>(|scope| gold::build(scope, tx));
        let mut facts = FactBuilder::new(Pseudonymiser::new(&key), 1);
        let mut state = KpiState::new(network);
        let mut latencies = Vec::with_capacity(records.len() / batch.max(1) + 1);
        let started = Instant::now();
        for (epoch, chunk) in records.chunks(batch.max(1)).enumerate() {
            let t = Instant::now();
            let mut batches = vec![GoldBatch::default()];
            for r in chunk {
                facts.add(r, &mut batches);
            }
            for b in batches {
                inputs.insert(b);
            }
            let next = epoch as u64 + 1;
            inputs.advance_to(next);
            while probe.less_than(&next) {
                worker.step();
                drain(&rx, &mut state);
            }
            drain(&rx, &mut state);
            std::hint::black_box(state.take_changed("", ""));
            latencies.push(t.elapsed());
        }
        let total = started.elapsed();
        let documents = crate::baseline::comparable(
            state
                .all_documents("", "")
                .into_iter()
                .map(|d| (d.id, d.body)),
        );
        BatchRun {
            total,
            latencies,
            documents,
        }
    })
}

fn drain(rx: &Receiver<GoldOutput>, state: &mut KpiState) {
    while let Ok(out) = rx.try_recv() {
        if let GoldOutput::Changes(changes) = out {
            for c in changes {
                state.apply(c);
            }
        }
    }
}
