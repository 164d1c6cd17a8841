//! What a checkpoint keeps of the ingest side, and how it is captured and given back.

use crate::model::HospitalId;
use std::borrow::Cow;
use std::collections::BTreeMap;

use super::{CheckpointError, Checkpointed};
use crate::decode::{Decoder, DecoderState};
use crate::gold::{FactBuilder, GoldState, Micros};
use crate::model::{DepartmentId, Network};
use crate::rules::{ReorderState, ReorderWindow};
use crate::silver::{DedupWindow, Silver};
use crate::source::Position;
use crate::support::codec;

/// The ingest side of a checkpoint (borrowed when written, owned when read). The field order
/// is the stored format.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct IngestState<'a> {
    dedup: Cow<'a, DedupWindow>,
    gold: GoldState<'a>,
    /// The last processed position per stream and partition.
    positions: Vec<Position>,
    watermark: Micros,
    /// Lake table lengths: dead letters, quarantine.
    lake: (u64, u64),
    /// What the payload decoder remembers (FHIR encounters, where patients lie).
    decoder: DecoderState<'a>,
    /// The records the reorder window holds for the rules.
    reorder: ReorderState,
    /// The name of every department Gold may hold, configured or removed from the file while
    /// running: a restart names the documents of a department no longer configured.
    departments: Vec<(HospitalId, DepartmentId, String)>,
}

/// The ingest thread's stateful stages.
pub(crate) struct IngestStages<'a> {
    pub silver: &'a mut Silver,
    pub decoder: &'a mut Decoder,
    pub facts: &'a mut FactBuilder,
    pub reorder: &'a mut ReorderWindow,
}

impl IngestState<'_> {
    /// The ingest side now, encoded. `processed` is the last processed offset per (stream,
    /// partition); `lake` the lake's lengths, synced to disk.
    pub(crate) fn encode(
        stages: &IngestStages<'_>,
        processed: &BTreeMap<(u16, i32), i64>,
        watermark: Micros,
        lake: (u64, u64),
    ) -> Result<Vec<u8>, CheckpointError> {
        let state = IngestState {
            dedup: stages.silver.snapshot(),
            gold: stages.facts.snapshot(),
            positions: processed
                .iter()
                .map(|(&(stream, partition), &offset)| Position {
                    stream,
                    partition,
                    offset,
                })
                .collect(),
            watermark,
            lake,
            decoder: stages.decoder.snapshot(),
            reorder: stages.reorder.snapshot(),
            departments: department_names(stages.silver.network()),
        };
        Ok(codec::encode(&state)?)
    }
}

/// What is left to apply once the stages have their state back.
#[derive(Debug)]
pub(crate) struct Resume {
    /// Where the source continues: the last processed position per stream and partition.
    pub positions: Vec<Position>,
    pub watermark: Micros,
    /// The lengths to cut the lake files back to: dead letters, quarantine.
    pub lake: (u64, u64),
}

impl IngestState<'static> {
    /// Reads what [`IngestState::encode`] wrote.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, CheckpointError> {
        codec::decode(bytes).map_err(CheckpointError::IngestState)
    }

    /// The ingest states of every process of another cluster layout, taken at one position of
    /// the stream, as one process's of this layout (`owns`: its patients; `first`: process 0).
    /// Every process decodes, deduplicates and holds for the rules every record alike, so
    /// that state comes from the first; Gold's facts are split by patient; the watermark is
    /// the newest. The lake files of this data directory are not cut back: the old layout
    /// stopped cleanly at that position, so they end where it did.
    pub(crate) fn rescaled(
        states: Vec<Self>,
        owns: impl Fn(u64) -> bool,
        first: bool,
    ) -> Option<Self> {
        let watermark = states.iter().map(|s| s.watermark).max()?;
        let mut golds = Vec::with_capacity(states.len());
        let mut kept = None;
        let mut departments = BTreeMap::new();
        for state in states {
            let IngestState {
                dedup,
                gold,
                positions,
                decoder,
                reorder,
                departments: names,
                ..
            } = state;
            departments.extend(names.into_iter().map(|(h, id, name)| ((h, id), name)));
            golds.push(gold);
            kept.get_or_insert((dedup, positions, decoder, reorder));
        }
        let (dedup, positions, decoder, reorder) = kept?;
        Some(IngestState {
            dedup,
            gold: GoldState::rescaled(golds, &owns, first),
            positions,
            watermark,
            lake: (u64::MAX, u64::MAX),
            decoder,
            reorder: reorder.rescaled(&owns),
            departments: departments
                .into_iter()
                .map(|((h, id), name)| (h, id, name))
                .collect(),
        })
    }

    /// The names of the departments the checkpoint's state may hold.
    pub(crate) fn department_names(
        &self,
    ) -> impl Iterator<Item = (HospitalId, DepartmentId, String)> + '_ {
        self.departments.iter().cloned()
    }

    /// Where the checkpoint had read to.
    pub(crate) fn positions(&self) -> &[Position] {
        &self.positions
    }

    /// Gives the stages their state back.
    pub(crate) fn restore(self, stages: IngestStages<'_>) -> Resume {
        stages.silver.restore(self.dedup);
        stages.decoder.restore(self.decoder);
        stages.facts.restore(self.gold);
        stages.reorder.restore(self.reorder);
        Resume {
            positions: self.positions,
            watermark: self.watermark,
            lake: self.lake,
        }
    }
}

/// Every department's name, configured or retired.
fn department_names(network: &Network) -> Vec<(HospitalId, DepartmentId, String)> {
    network
        .departments()
        .map(|(h, d)| (h, d.id, d.name.clone()))
        .chain(
            network
                .retired()
                .map(|(h, id, name)| (h, id, name.to_owned())),
        )
        .collect()
}
