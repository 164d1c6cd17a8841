//! Rescaling: a cluster started with another number of processes (or workers) continues from
//! the checkpoints of the layout before it.
//!
//! Every process of a cluster whose processes read every partition decodes, deduplicates and
//! holds for the rules every record alike, and keeps alone what belongs to its own patients
//! (Gold's facts, suppression windows, delayed evokes, kept scores) and hospitals (department
//! rules' windows). A patient belongs to process `patient_process(key, P)` (the high half of
//! its pseudonym key), so the state of the old layout's processes can be split again among
//! the new layout's: each new process reads the newest checkpoint of every old process and
//! takes the shared state from the first and, of the rest, what it now owns.
//!
//! That needs the old processes' checkpoints taken at one position of the stream: the old
//! layout stopped cleanly at the same point of every partition (`--until-idle` once the input
//! is quiet, or `--until-end`). Checkpoints at different positions are refused, naming them:
//! the processes that were ahead would otherwise repeat, or those behind lose, what lies
//! between. Workers need nothing: the facts are handed to the new dataflow, which spreads them
//! over its workers.
//!
//! The layouts share one `--checkpoints` location: one process keeps its checkpoints there,
//! process `I` of a cluster under `LOCATION/process-I`.

use chrono::DateTime;
use tracing::{info, warn};

use super::{CheckpointError, CheckpointStore, IngestState};
use crate::cluster::patient_process;
use crate::rules::{Hospitals, RulesSnapshot, RulesStage};
use crate::support::codec;

/// The most processes a layout is looked for with.
const MAX_PROCESSES: usize = 4096;

/// What a run that may rescale knows of itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rescale<'a> {
    /// The `--checkpoints` location every layout shares.
    pub location: &'a str,
    /// The source's identity, without the layout.
    pub source: &'a str,
    /// This process, of `processes`.
    pub process: usize,
    pub processes: usize,
    /// The hospitals whose department rules this process runs.
    pub hospitals: Hospitals,
}

/// The identity a checkpoint of a layout carries: the source's, and, for a cluster whose
/// processes read every partition, the numbers of processes and of workers per process (the
/// workers decide which process runs a hospital's department rules, so a change of either is
/// a change of layout).
pub(crate) fn identity(source: &str, layout: Option<(usize, usize)>) -> String {
    match layout {
        Some((p, w)) => {
            format!("{source} (every partition, {p} processes × {w} workers, by patient key)")
        }
        None => source.to_owned(),
    }
}

/// The layout a checkpoint's identity names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// One process, or (in a process's store of a cluster) processes that read their own
    /// partitions.
    Plain,
    /// `P` processes that each read every partition.
    EveryPartition(usize),
    /// The same, from a version that split the patients by their raw identifier.
    Earlier(usize),
}

/// The layout of `identity`, when it is a checkpoint of `source`.
fn layout(source: &str, identity: &str) -> Option<Layout> {
    let rest = identity.strip_prefix(source)?;
    if rest.is_empty() {
        return Some(Layout::Plain);
    }
    let rest = rest.strip_prefix(" (every partition, ")?;
    if let Some(layout) = rest.strip_suffix(" workers, by patient key)") {
        let (p, _) = layout.split_once(" processes × ")?;
        return p.parse().ok().map(Layout::EveryPartition);
    }
    let p = rest.strip_suffix(" processes)")?;
    p.parse().ok().map(Layout::Earlier)
}

/// Whether `identity` is a checkpoint of `source` under another layout than `this`.
pub(crate) fn other_layout(source: &str, identity: &str, this: &str) -> bool {
    identity != this && layout(source, identity).is_some()
}

/// The newest checkpoint of one store, and which store.
struct Found {
    /// `None`: the location itself (one process); `Some(i)`: `LOCATION/process-i`.
    process: Option<usize>,
    checkpoint: super::Checkpoint,
}

impl Found {
    fn written(&self) -> i64 {
        DateTime::parse_from_rfc3339(&self.checkpoint.written_at)
            .map_or(i64::MIN, |t| t.timestamp_micros())
    }
}

fn store_of(location: &str, process: Option<usize>) -> Result<CheckpointStore, CheckpointError> {
    let base = location.trim_end_matches('/');
    match process {
        None => CheckpointStore::at(base),
        Some(i) => CheckpointStore::at(&format!("{base}/process-{i}")),
    }
}

/// The newest checkpoint of each run in every store under the location: the location's own,
/// then those of `process-0`, `process-1`, … up to the first with none. A store keeps the
/// newest checkpoint of the layout before its own (see [`CheckpointStore::write`]), so a
/// process of the new layout that has already written checkpoints still shows the old
/// layout's to a process that has not.
fn newest_of_each(location: &str) -> Result<Vec<Found>, CheckpointError> {
    let mut found: Vec<Found> = store_of(location, None)?
        .load_newest_of_each()?
        .into_iter()
        .map(|checkpoint| Found {
            process: None,
            checkpoint,
        })
        .collect();
    for i in 0..MAX_PROCESSES {
        let here = store_of(location, Some(i))?.load_newest_of_each()?;
        if here.is_empty() {
            break;
        }
        found.extend(here.into_iter().map(|checkpoint| Found {
            process: Some(i),
            checkpoint,
        }));
    }
    Ok(found)
}

fn refused(reason: String) -> CheckpointError {
    CheckpointError::Rescale(reason)
}

/// Restores this process from the checkpoints of another layout when they are newer than its
/// own of this layout (by the time each was written: the hosts' clocks must agree to within the
/// pause between two layouts); `None`: there are none, and the run continues from its own
/// newest checkpoint of this layout as usual.
pub(crate) fn rescale(
    rescale: &Rescale<'_>,
    identity: &str,
    rules: Option<&mut RulesStage>,
) -> Result<Option<IngestState<'static>>, CheckpointError> {
    let found = newest_of_each(rescale.location)?;
    let this_store = (rescale.processes > 1).then_some(rescale.process);
    let own = found
        .iter()
        .find(|f| f.process == this_store && f.checkpoint.source == identity)
        .map(Found::written);
    let Some(newest) = found
        .iter()
        .filter(|f| other_layout(rescale.source, &f.checkpoint.source, identity))
        .max_by_key(|f| f.written())
    else {
        return Ok(None);
    };
    if own.is_some_and(|own| own >= newest.written()) {
        return Ok(None);
    }
    let old = layout(rescale.source, &newest.checkpoint.source);
    let members: Vec<&Found> = match (old, newest.process) {
        (Some(Layout::Plain), None) => vec![newest],
        (Some(Layout::Plain), Some(_)) => {
            return Err(refused(
                "the newest checkpoints are of a cluster whose processes read their own \
                 partitions (--partitions-by-patient); its patients follow the partitions, \
                 so its state cannot be split among another number of processes"
                    .into(),
            ))
        }
        (Some(Layout::Earlier(_)), _) => {
            return Err(refused(
                "the newest checkpoints are of a cluster of an earlier version of cds, which \
                 gave patients to processes by another rule; rebuild the state with `cds replay \
                 --from-bronze`, or move the checkpoints away to start from empty state"
                    .into(),
            ))
        }
        (Some(Layout::EveryPartition(processes)), _) => {
            let members: Vec<&Found> = (0..processes)
                .filter_map(|i| {
                    found.iter().find(|f| {
                        f.process == Some(i) && f.checkpoint.source == newest.checkpoint.source
                    })
                })
                .collect();
            if members.len() != processes {
                return Err(refused(format!(
                    "the newest checkpoints are of {processes} processes, but only {} of them \
                     have one under {}/process-I",
                    members.len(),
                    rescale.location.trim_end_matches('/')
                )));
            }
            members
        }
        (None, _) => return Ok(None),
    };
    let mut states = Vec::with_capacity(members.len());
    for member in &members {
        states.push(IngestState::decode(&member.checkpoint.ingest)?);
    }
    if let Some(first) = states.first() {
        let mut at = first.positions().to_vec();
        at.sort_unstable();
        for (member, state) in members.iter().zip(&states).skip(1) {
            let mut theirs = state.positions().to_vec();
            theirs.sort_unstable();
            if theirs != at {
                return Err(refused(format!(
                    "the checkpoints of the {} processes before were taken at different \
                     positions of the stream (process 0 at {}, process {} at {}): stop every \
                     process of that layout at one point (for example with `--until-idle` once \
                     the input is quiet), then start this one",
                    members.len(),
                    positions_text(&at),
                    member.process.unwrap_or(0),
                    positions_text(&theirs)
                )));
            }
        }
    }
    let owns = |patient: u64| patient_process(patient, rescale.processes) == rescale.process;
    if let Some(stage) = rules {
        let snapshots: Option<Vec<RulesSnapshot<'static>>> = members
            .iter()
            .map(|m| {
                m.checkpoint
                    .rules
                    .as_deref()
                    .map(|bytes| codec::decode(bytes).map_err(CheckpointError::RulesState))
                    .transpose()
            })
            .collect::<Result<_, _>>()?;
        match snapshots {
            Some(snapshots) => stage.restore_rescaled(snapshots, owns, rescale.hospitals),
            None => warn!("the checkpoints were taken without rules; rules start from empty state"),
        }
    }
    let state = IngestState::rescaled(states, owns, rescale.process == 0)
        .ok_or_else(|| refused("no checkpoint to continue from".into()))?;
    info!(
        from_processes = members.len(),
        processes = rescale.processes,
        positions = ?state.positions(),
        "continuing from the checkpoints of another layout"
    );
    Ok(Some(state))
}

/// Positions as `stream/partition@offset`, for a message.
fn positions_text(positions: &[crate::source::Position]) -> String {
    let parts: Vec<String> = positions
        .iter()
        .map(|p| format!("{}/{}@{}", p.stream, p.partition, p.offset))
        .collect();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::checkpoint::{Checkpoint, IngestStages};
    use crate::decode::{Decoder, Format};
    use crate::gold::FactBuilder;
    use crate::model::{Network, Pseudonymiser};
    use crate::rules::ReorderWindow;
    use crate::silver::Silver;

    const SOURCE: &str = "kafka://b:9092/adt";

    /// An empty ingest state at these offsets of partitions 0 and 1.
    fn at(offsets: [i64; 2]) -> Vec<u8> {
        let pseudonyms = Pseudonymiser::new(b"test-key");
        let stages = IngestStages {
            silver: &mut Silver::new(Network::default_network()),
            decoder: &mut Decoder::new(Format::Json, pseudonyms.clone()),
            facts: &mut FactBuilder::new(pseudonyms, 1),
            reorder: &mut ReorderWindow::new(None),
        };
        let processed: BTreeMap<(u16, i32), i64> =
            [((0, 0), offsets[0]), ((0, 1), offsets[1])].into();
        IngestState::encode(&stages, &processed, 0, (0, 0)).expect("encode")
    }

    fn write(location: &str, process: Option<usize>, identity: &str, when: &str, ingest: Vec<u8>) {
        let checkpoint = Checkpoint {
            source: identity.to_owned(),
            written_at: when.to_owned(),
            ingest,
            rules: None,
        };
        store_of(location, process)
            .and_then(|s| s.write(&checkpoint))
            .expect("write a checkpoint");
    }

    #[test]
    fn the_old_layout_must_be_whole_and_at_one_position() {
        let dir = std::env::temp_dir().join(format!("cds-rescale-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let location = dir.display().to_string();
        let two = identity(SOURCE, Some((2, 1)));
        let one = identity(SOURCE, None);
        let r = Rescale {
            location: &location,
            source: SOURCE,
            process: 0,
            processes: 1,
            hospitals: Hospitals::ALL,
        };
        let none = |what: &str| assert!(matches!(rescale(&r, &one, None), Ok(None)), "{what}");
        none("no checkpoints");

        write(
            &location,
            Some(0),
            &two,
            "2026-01-01T00:00:01Z",
            at([10, 5]),
        );
        let refusal = |what: &str| match rescale(&r, &one, None) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{what}: not refused"),
        };
        let err = refusal("process 1 missing");
        assert!(err.contains("only 1 of them"), "{err}");

        write(
            &location,
            Some(1),
            &two,
            "2026-01-01T00:00:02Z",
            at([10, 6]),
        );
        let err = refusal("two positions");
        assert!(err.contains("different positions"), "{err}");

        write(
            &location,
            Some(1),
            &two,
            "2026-01-01T00:00:03Z",
            at([10, 5]),
        );
        let Ok(Some(state)) = rescale(&r, &one, None) else {
            panic!("one position: rescaled")
        };
        let offsets: Vec<i64> = state.positions().iter().map(|p| p.offset).collect();
        assert_eq!(offsets, [10, 5]);

        // This layout's own checkpoint, newer: the run continues from it as usual.
        write(&location, None, &one, "2026-01-01T00:00:04Z", at([12, 7]));
        none("this layout's own checkpoint is newer");

        // Three processes next: process 0 has written checkpoints of the new layout into its
        // store (over the old layout's), process 2 has none yet and still finds the old one.
        let three = identity(SOURCE, Some((3, 1)));
        for n in 0..4 {
            let when = format!("2026-01-01T00:00:1{n}Z");
            write(&location, Some(0), &three, &when, at([12, 7]));
        }
        let two_again = identity(SOURCE, Some((2, 1)));
        write(
            &location,
            Some(1),
            &two_again,
            "2026-01-01T00:00:05Z",
            at([12, 7]),
        );
        write(
            &location,
            Some(0),
            &two_again,
            "2026-01-01T00:00:05Z",
            at([12, 7]),
        );
        for n in 0..4 {
            let when = format!("2026-01-01T00:00:2{n}Z");
            write(&location, Some(0), &three, &when, at([13, 8]));
        }
        let process_2 = Rescale {
            process: 2,
            processes: 3,
            ..r
        };
        let Ok(Some(state)) = rescale(&process_2, &three, None) else {
            panic!("process 2 of 3 rescales from the two processes' checkpoints")
        };
        let offsets: Vec<i64> = state.positions().iter().map(|p| p.offset).collect();
        assert_eq!(
            offsets,
            [12, 7],
            "the old layout's position, not the new one's"
        );
        let process_0 = Rescale {
            process: 0,
            processes: 3,
            ..r
        };
        assert!(
            matches!(rescale(&process_0, &three, None), Ok(None)),
            "process 0 continues from its own"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_checkpoint_names_its_layout() {
        let source = "kafka://b:9092/adt";
        assert_eq!(layout(source, source), Some(Layout::Plain));
        let cluster = identity(source, Some((3, 2)));
        assert_eq!(layout(source, &cluster), Some(Layout::EveryPartition(3)));
        assert_eq!(
            layout(source, &format!("{source} (every partition, 2 processes)")),
            Some(Layout::Earlier(2))
        );
        assert_eq!(layout(source, "kafka://b:9092/other"), None);
        assert_eq!(layout(source, &format!("{source}x")), None);
        assert!(other_layout(source, source, &cluster));
        assert!(!other_layout(source, &cluster, &cluster));
        assert!(!other_layout(source, "file:x", &cluster));
    }
}
