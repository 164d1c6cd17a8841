//! The reorder window: the rules read the stream in event-time order, whatever the arrival
//! order within the window.
//!
//! Kafka keeps order within a partition only. A producer without keys spreads one patient's
//! events over partitions, and the consumer interleaves partitions as their fetches come in; a
//! replay, a restart or another cluster layout interleaves them differently. The rules read
//! "the latest reading", open suppression windows and fire delayed evokes from the order of
//! what they see, so without this window the alerts of the same events would follow the
//! arrival order.
//!
//! Each partition (of each stream) has a clock: the newest event time read from it. The
//! window holds each record until every active partition's clock has moved `window` past it,
//! then releases the held records in event-time order (ties: event id). A consumer catching up
//! on a backlog reads one partition thousands of events ahead of another; the slowest clock
//! holds the others' records back, so the order does not depend on how the fetches
//! interleave. Events displaced by less than the window within their partition, in any
//! arrival order across partitions, in any batching into epochs, through any layout, after a
//! restart from a checkpoint (which keeps what is held and the clocks), reach the rules as one
//! sequence, and give the same alerts.
//!
//! A record more than `window` behind its own partition's clock is **late**: it is not
//! dropped; it takes its place in the order where it arrived (at that clock minus the window),
//! which is again the same in every layout, and its alert says `"late": true`. (So is a record
//! that found later records already released: one from a partition that had gone idle.)
//!
//! While the input is quiet the clocks stand still, so once the input has brought nothing for
//! `window` in wall time everything held leaves: that bounds what the window adds to
//! event-to-alert latency in a lull. A busy stream (a replay, a backlog) is never quiet that
//! long, so it stays in event-time order however slowly the engine takes it. A partition that brought
//! nothing for [`PARTITION_IDLE`] of wall time while others did stops holding them back (a
//! partition nobody writes to), unless the source is behind (its last poll was full); its
//! next record brings it back.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use cds_engine::rules::{ReorderWindow, RuleInput};
//! use cds_engine::silver::{Outcome, Silver};
//! use cds_engine::model::{Event, Network};
//!
//! let mut silver = Silver::new(Network::default_network());
//! let mut reading = |id: &str, at: &str| {
//!     let json = format!(r#"{{"event_id":"{id}","event_type":"VITALS","event_timestamp":"{at}","patient_id":"P1","hospital_id":1,"department":"ICU","vitals":{{"heart_rate":80}}}}"#);
//!     match silver.clean(Event::from_json(json.as_bytes()).expect("a valid event")) {
//!         Outcome::Record(r) => r,
//!         other => panic!("{other:?}"),
//!     }
//! };
//! let mut window = ReorderWindow::new(Some(Duration::from_secs(60)));
//! let (now, mut out) = (Instant::now(), Vec::<RuleInput>::new());
//! // The 10:00:30 reading arrives before the 10:00:10 one: both are held.
//! window.hold(1, reading("b", "2026-03-02T10:00:30Z"), (0, 0), now, &mut out);
//! window.hold(1, reading("a", "2026-03-02T10:00:10Z"), (0, 0), now, &mut out);
//! window.release(now, false, &mut out);
//! assert!(out.is_empty());
//! // The partition's clock moves 60 s past both: they leave in event-time order.
//! window.hold(1, reading("c", "2026-03-02T10:01:30Z"), (0, 0), now, &mut out);
//! window.release(now, false, &mut out);
//! let ids: Vec<&str> = out.iter().map(|r| r.record.event.event_id.as_str()).collect();
//! assert_eq!(ids, ["a", "b"]);
//! // A reading more than 60 s behind its partition's clock is late: evaluated where it
//! // arrived, flagged.
//! window.hold(1, reading("d", "2026-03-02T10:00:20Z"), (0, 0), now, &mut out);
//! window.release(now, false, &mut out);
//! assert!(out[2].late && out[2].record.event.event_id == "d");
//! ```

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::RuleInput;
use crate::checkpoint::Checkpointed;
use crate::gold::{micros, Micros};
use crate::model::{DepartmentId, Event, EventType};
use crate::silver::{DqFlags, SilverRecord};

/// How long a partition may bring nothing while others bring records before it stops holding
/// their records back.
pub const PARTITION_IDLE: Duration = Duration::from_secs(5);

/// A stream and a partition of it, as source positions name them.
pub type PartitionId = (u16, i32);

/// Where a held record goes in the release order: its place in event time, then its arrival
/// (records of one place leave in event-id order: [`ReorderWindow::release_through`] sorts
/// them, so that the key needs no copy of the id).
type Key = (Micros, u64);

/// A record waiting for the clocks to pass it.
#[derive(Debug)]
struct Held {
    patient: u64,
    record: Box<SilverRecord>,
    late: bool,
    /// This process runs the patient's rules ([`RuleInput::own`]).
    own: bool,
}

/// One partition's clock.
#[derive(Debug, Clone, Copy)]
struct Clock {
    /// The newest event time read from the partition.
    newest: Micros,
    /// When it last brought a record; `None`: not since the input began in this run.
    seen: Option<Instant>,
}

/// The records held for the rules, released in event-time order (see the module's
/// documentation).
#[derive(Debug)]
pub struct ReorderWindow {
    /// How far every clock must move past a record before it is released; `None`: no window,
    /// the rules read the arrival order.
    window: Option<Micros>,
    clocks: BTreeMap<PartitionId, Clock>,
    /// When the first record of this run arrived: the idle time of the partitions known before
    /// it counts from then, and a quiet input releases nothing before it (a restarted run's
    /// consumer connecting is not a lull).
    input_began: Option<Instant>,
    /// The place of the last record released: one placed before it is late.
    released: Option<(Micros, String)>,
    held: BTreeMap<Key, Held>,
    hasher: RandomState,
    /// Where each held record is, by a hash of its event id (a hash, not the id: no copy of
    /// the id per record), for a duplicate copy to find it.
    by_id: HashMap<u64, Key>,
    next_arrival: u64,
}

impl ReorderWindow {
    /// A window of `window` event time (`None` or zero: none).
    pub fn new(window: Option<Duration>) -> Self {
        let window = window
            .filter(|w| !w.is_zero())
            .map(|w| Micros::try_from(w.as_micros()).unwrap_or(Micros::MAX));
        ReorderWindow {
            window,
            clocks: BTreeMap::new(),
            input_began: None,
            released: None,
            held: BTreeMap::new(),
            hasher: RandomState::new(),
            by_id: HashMap::new(),
            next_arrival: 0,
        }
    }

    /// No window: every record goes to the rules as it arrives.
    pub fn off() -> Self {
        Self::new(None)
    }

    /// Whether records are held at all.
    pub fn is_on(&self) -> bool {
        self.window.is_some()
    }

    /// How many records are held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Partitions the source reads, before they bring anything: their clocks hold the others
    /// back from the start, so that the first fetch of one partition is not released before
    /// the first fetch of another arrives.
    pub fn expect(&mut self, partitions: impl IntoIterator<Item = PartitionId>) {
        if self.window.is_none() {
            return;
        }
        for p in partitions {
            self.clocks.entry(p).or_insert(Clock {
                newest: Micros::MIN,
                seen: self.input_began,
            });
        }
    }

    /// Takes one record that arrived `now` from `partition`: held, or (without a window)
    /// straight into `out`.
    pub fn hold(
        &mut self,
        patient: u64,
        record: Box<SilverRecord>,
        partition: PartitionId,
        now: Instant,
        out: &mut Vec<RuleInput>,
    ) {
        self.hold_as(patient, record, true, partition, now, out);
    }

    /// Takes one record of a patient whose rules another process of the cluster runs: held
    /// and released in the same order as the others, for the placements (department
    /// occupancy) and the event-time watermark ([`RuleInput::own`] false).
    pub fn hold_elsewhere(
        &mut self,
        patient: u64,
        record: Box<SilverRecord>,
        partition: PartitionId,
        now: Instant,
        out: &mut Vec<RuleInput>,
    ) {
        self.hold_as(patient, record, false, partition, now, out);
    }

    fn hold_as(
        &mut self,
        patient: u64,
        record: Box<SilverRecord>,
        own: bool,
        partition: PartitionId,
        now: Instant,
        out: &mut Vec<RuleInput>,
    ) {
        let Some(window) = self.window else {
            out.push(RuleInput {
                patient,
                record,
                late: false,
                own,
            });
            return;
        };
        let at = micros(&record.event.event_timestamp);
        // Its place: its event time, or where it arrived when that is beyond the window.
        let floor = self
            .clocks
            .get(&partition)
            .map_or(Micros::MIN, |c| c.newest)
            .saturating_sub(window);
        let place = at.max(floor);
        self.observe(partition, at, now);
        let id = record.event.event_id.as_str();
        let late = at < floor
            || self
                .released
                .as_ref()
                .is_some_and(|(t, i)| (place, id) < (*t, i.as_str()));
        let key = (place, self.next_arrival);
        self.next_arrival += 1;
        self.by_id.insert(self.id_hash(&record.event.event_id), key);
        self.held.insert(
            key,
            Held {
                patient,
                record,
                late,
                own,
            },
        );
    }

    /// Notes an event read from `partition` at event time `at`, `now`, whatever becomes of it:
    /// a record for the rules ([`ReorderWindow::hold`] notes it too), a duplicate, a record
    /// Silver quarantines, or one that another process of a cluster cleans. Every event read
    /// moves its partition's clock, so the clocks, and with them which records are late, are
    /// the same in every process and layout that reads the partition.
    pub fn observe(&mut self, partition: PartitionId, at: Micros, now: Instant) {
        if self.window.is_none() {
            return;
        }
        if self.input_began.is_none() {
            self.input_began = Some(now);
            for clock in self.clocks.values_mut() {
                clock.seen = Some(now);
            }
        }
        let clock = self.clocks.entry(partition).or_insert(Clock {
            newest: Micros::MIN,
            seen: Some(now),
        });
        clock.newest = clock.newest.max(at);
        clock.seen = Some(now);
    }

    /// A second copy of an event that Silver dropped as a duplicate, from `partition`. Which
    /// copy arrives first follows the arrival order; so that the outcome does not, the copy
    /// moves its partition's clock as the first did, and while the first copy is held it takes
    /// the earlier of the two places and is late only if both copies are. A copy of a record
    /// no longer held (or never meant for the rules) changes nothing.
    pub fn duplicate(&mut self, event_id: &str, at: Micros, partition: PartitionId) {
        let Some(window) = self.window else { return };
        let hash = self.id_hash(event_id);
        let Some(&key) = self.by_id.get(&hash) else {
            return;
        };
        if self
            .held
            .get(&key)
            .is_none_or(|first| first.record.event.event_id != event_id)
        {
            // Not held (or another event with the same hash).
            return;
        }
        let clock = self.clocks.entry(partition).or_insert(Clock {
            newest: Micros::MIN,
            seen: self.input_began,
        });
        let floor = clock.newest.saturating_sub(window);
        let (place, late) = (at.max(floor), at < floor);
        clock.newest = clock.newest.max(at);
        let Some(mut first) = self.held.remove(&key) else {
            return;
        };
        first.late &= late;
        let key = (key.0.min(place), key.1);
        self.by_id.insert(hash, key);
        self.held.insert(key, first);
    }

    fn id_hash(&self, event_id: &str) -> u64 {
        self.hasher.hash_one(event_id)
    }

    /// Releases, in event-time order, every held record that every active partition's clock
    /// has moved `window` past (and every late record placed before them). `backlog`: the
    /// source returned as much as it was asked for, so there is more to read; then no partition
    /// counts as idle, whatever the wall time: in a backlog a partition's next fetch may come
    /// seconds after its last one.
    pub fn release(&mut self, now: Instant, backlog: bool, out: &mut Vec<RuleInput>) {
        let Some(window) = self.window else { return };
        let active = self
            .clocks
            .values()
            .filter(|c| {
                backlog
                    || c.seen
                        .is_none_or(|seen| now.saturating_duration_since(seen) < PARTITION_IDLE)
            })
            .map(|c| c.newest)
            .min();
        if let Some(slowest) = active {
            self.release_through(slowest.saturating_sub(window), out);
        }
    }

    /// Whether records that arrived in this run are held: the input going quiet for the window
    /// should then release them ([`ReorderWindow::release_quiet`]).
    pub fn waiting(&self) -> bool {
        !self.held.is_empty() && self.input_began.is_some()
    }

    /// The input has brought nothing for the window's length in wall time: the clocks stand
    /// still, so everything held leaves, in event-time order. Nothing leaves before the first
    /// record of this run (a restarted run keeps what its checkpoint held until input flows).
    pub fn release_quiet(&mut self, out: &mut Vec<RuleInput>) {
        if self.input_began.is_some() {
            self.release_through(Micros::MAX, out);
        }
    }

    /// Releases everything held, in event-time order (the input ended).
    pub fn release_all(&mut self, out: &mut Vec<RuleInput>) {
        self.release_through(Micros::MAX, out);
    }

    fn release_through(&mut self, cutoff: Micros, out: &mut Vec<RuleInput>) {
        let Some(first) = self.held.keys().next() else {
            return;
        };
        if first.0 > cutoff {
            return;
        }
        let rest = match cutoff.checked_add(1) {
            Some(next) => self.held.split_off(&(next, 0)),
            None => BTreeMap::new(),
        };
        let released = std::mem::replace(&mut self.held, rest);
        let mut released: Vec<(Micros, Held)> = released
            .into_iter()
            .map(|(key, held)| {
                let hash = self.id_hash(&held.record.event.event_id);
                if self.by_id.get(&hash) == Some(&key) {
                    self.by_id.remove(&hash);
                }
                (key.0, held)
            })
            .collect();
        // Sorted by place already; within a place, by event id (a stable sort of sorted runs
        // is one pass).
        released.sort_by(|(a, x), (b, y)| {
            (a, x.record.event.event_id.as_str()).cmp(&(b, y.record.event.event_id.as_str()))
        });
        if let Some((place, last)) = released.last() {
            let id = last.record.event.event_id.as_str();
            if self
                .released
                .as_ref()
                .is_none_or(|(t, i)| (*t, i.as_str()) < (*place, id))
            {
                self.released = Some((*place, id.to_owned()));
            }
        }
        out.extend(released.into_iter().map(|(_, h)| RuleInput {
            patient: h.patient,
            record: h.record,
            late: h.late,
            own: h.own,
        }));
    }
}

/// The event as a checkpoint keeps it: without the raw patient id (the rules read the patient
/// key, which the record carries beside it) and without attributes the model does not know
/// (one of them could be an identifier), so that no patient identifier reaches storage.
fn without_identifiers(event: &Event) -> Event {
    let mut event = event.clone();
    event.patient_id = None;
    event.extra.clear();
    event
}

/// A held record as a checkpoint keeps it: the event in the event model's JSON (without
/// identifiers), with what Silver decided about it and its place.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldRecord {
    place: Micros,
    patient: u64,
    event: String,
    kind: Option<EventType>,
    department: Option<DepartmentId>,
    /// The record's data-quality flags; the top bit ([`ELSEWHERE`]) set: a record of another
    /// process's patient (a field of its own would change the layout older checkpoints have).
    flags: u16,
    late: bool,
}

/// The bit of [`HeldRecord::flags`] that marks another process's patient.
const ELSEWHERE: u16 = 1 << 15;
// The data-quality flags must leave that bit free.
const _: () = assert!(crate::silver::DqFlag::ALL.len() < 15);

/// What a checkpoint keeps of the window: the held records, the partitions' clocks and the
/// last record released, so that a restarted run releases the same sequence.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReorderState {
    clocks: Vec<(PartitionId, Micros)>,
    released: Option<(Micros, String)>,
    held: Vec<HeldRecord>,
}

impl ReorderState {
    /// The window of a process of another cluster layout (every process holds the same
    /// records, at one position of the stream) for a process of this layout: each held record
    /// marked as its own patient's or another process's by `owns`.
    pub(crate) fn rescaled(mut self, owns: impl Fn(u64) -> bool) -> Self {
        for held in &mut self.held {
            if owns(held.patient) {
                held.flags &= !ELSEWHERE;
            } else {
                held.flags |= ELSEWHERE;
            }
        }
        self
    }
}

impl Checkpointed for ReorderWindow {
    type State<'a> = ReorderState;

    fn snapshot(&self) -> ReorderState {
        ReorderState {
            clocks: self.clocks.iter().map(|(p, c)| (*p, c.newest)).collect(),
            released: self.released.clone(),
            held: self
                .held
                .iter()
                .map(|((place, _), h)| HeldRecord {
                    place: *place,
                    patient: h.patient,
                    event: without_identifiers(&h.record.event).to_json(),
                    kind: h.record.kind,
                    department: h.record.department,
                    flags: h.record.dq_flags.bits() | if h.own { 0 } else { ELSEWHERE },
                    late: h.late,
                })
                .collect(),
        }
    }

    /// Held records and clocks come back; the clocks' idle time counts from when the input
    /// begins again.
    fn restore(&mut self, state: ReorderState) {
        self.clocks = state
            .clocks
            .into_iter()
            .map(|(p, newest)| (p, Clock { newest, seen: None }))
            .collect();
        self.input_began = None;
        self.released = state.released;
        self.held.clear();
        self.by_id.clear();
        for h in state.held {
            // What `snapshot` wrote from a parsed event parses again.
            let Ok(event) = Event::from_json(h.event.as_bytes()) else {
                continue;
            };
            let key = (h.place, self.next_arrival);
            self.next_arrival += 1;
            self.by_id.insert(self.id_hash(&event.event_id), key);
            let record = Box::new(SilverRecord {
                event,
                kind: h.kind,
                department: h.department,
                dq_flags: DqFlags::from_bits(h.flags & !ELSEWHERE),
            });
            self.held.insert(
                key,
                Held {
                    patient: h.patient,
                    record,
                    late: h.late,
                    own: h.flags & ELSEWHERE == 0,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Network;
    use crate::silver::{Outcome, Silver};

    fn reading(silver: &mut Silver, id: &str, second: u32) -> Box<SilverRecord> {
        let json = format!(
            r#"{{"event_id":"{id}","event_type":"VITALS","event_timestamp":"2026-03-02T10:{:02}:{:02}Z","patient_id":"P1","hospital_id":1,"department":"ICU","vitals":{{"heart_rate":80}}}}"#,
            second / 60,
            second % 60
        );
        match silver.clean(Event::from_json(json.as_bytes()).expect("event")) {
            Outcome::Record(r) => r,
            other => panic!("not a record: {other:?}"),
        }
    }

    fn ids(out: &[RuleInput]) -> Vec<String> {
        out.iter()
            .map(|r| r.record.event.event_id.clone())
            .collect()
    }

    /// 300 events about 3 s apart over three partitions, each partition's own order shuffled
    /// by a few places: read round robin, one partition after the other (a backlog), and in
    /// chunks, in batches of any size: the same sequence leaves, in event-time order.
    #[test]
    fn any_interleaving_of_partitions_releases_one_sequence() {
        let seconds: Vec<u32> = (0..300).map(|i| i * 3 + (i * 7) % 3).collect();
        // Each partition's events in time order, then every pair of neighbours swapped.
        let partitions: Vec<Vec<usize>> = (0..3)
            .map(|p| {
                let mut own: Vec<usize> = (0..300).filter(|i| i % 3 == p).collect();
                for pair in own.chunks_mut(2) {
                    pair.reverse();
                }
                own
            })
            .collect();
        let round_robin: Vec<(usize, usize)> =
            (0..100).flat_map(|k| (0..3).map(move |p| (p, k))).collect();
        let backlog: Vec<(usize, usize)> =
            (0..3).flat_map(|p| (0..100).map(move |k| (p, k))).collect();
        let chunks: Vec<(usize, usize)> = (0..100)
            .step_by(17)
            .flat_map(|k0| {
                [2, 0, 1]
                    .into_iter()
                    .flat_map(move |p| (k0..(k0 + 17).min(100)).map(move |k| (p, k)))
            })
            .collect();
        let mut sequences = Vec::new();
        for (n, order) in [round_robin, backlog, chunks].iter().enumerate() {
            // Silver drops a second sighting of an id: each order gets a new Silver.
            let mut silver = Silver::new(Network::default_network());
            let mut window = ReorderWindow::new(Some(Duration::from_secs(30)));
            window.expect((0..3).map(|p| (0, p)));
            let mut out = Vec::new();
            let now = Instant::now();
            for (i, &(p, k)) in order.iter().enumerate() {
                let e = partitions[p][k];
                let record = reading(&mut silver, &format!("e{e:03}"), seconds[e]);
                window.hold(1, record, (0, p as i32), now, &mut out);
                if i % (n + 2) == 0 {
                    window.release(now, false, &mut out);
                }
            }
            window.release_all(&mut out);
            assert!(
                out.iter().all(|r| !r.late),
                "nothing is late within the window"
            );
            sequences.push(ids(&out));
        }
        let mut sorted = sequences[0].clone();
        sorted.sort_by_key(|id| seconds[id[1..].parse::<usize>().expect("n")]);
        assert_eq!(sequences[0], sorted);
        assert_eq!(sequences[1], sequences[0]);
        assert_eq!(sequences[2], sequences[0]);
    }

    #[test]
    fn a_record_beyond_the_window_is_late_and_placed_where_it_arrived() {
        let mut silver = Silver::new(Network::default_network());
        let mut window = ReorderWindow::new(Some(Duration::from_secs(30)));
        let (now, mut out) = (Instant::now(), Vec::new());
        window.hold(1, reading(&mut silver, "a", 0), (0, 0), now, &mut out);
        window.hold(1, reading(&mut silver, "b", 100), (0, 0), now, &mut out);
        window.hold(1, reading(&mut silver, "c", 10), (0, 0), now, &mut out);
        window.hold(1, reading(&mut silver, "d", 80), (0, 0), now, &mut out);
        window.release_all(&mut out);
        // c is 90 s behind its partition's clock: placed at 100 - 30 = 70 s, before d.
        assert_eq!(ids(&out), ["a", "c", "d", "b"]);
        let late: Vec<bool> = out.iter().map(|r| r.late).collect();
        assert_eq!(late, [false, true, false, false]);
    }

    #[test]
    fn a_quiet_input_releases_what_is_held_and_a_checkpoint_keeps_it() {
        let mut silver = Silver::new(Network::default_network());
        let window = || ReorderWindow::new(Some(Duration::from_secs(600)));
        let mut w = window();
        let (now, mut out) = (Instant::now(), Vec::new());
        w.hold(7, reading(&mut silver, "a", 20), (0, 0), now, &mut out);
        w.hold(7, reading(&mut silver, "b", 10), (0, 0), now, &mut out);
        w.release(now, false, &mut out);
        assert!(out.is_empty() && w.waiting());
        w.release_quiet(&mut out);
        assert_eq!(ids(&out), ["b", "a"]);

        out.clear();
        w.hold(7, reading(&mut silver, "d", 30), (0, 0), now, &mut out);
        w.hold(7, reading(&mut silver, "e", 5), (0, 0), now, &mut out);
        let state = crate::support::codec::encode(&w.snapshot()).expect("encode");
        assert!(
            !String::from_utf8_lossy(&state).contains("\"P1\""),
            "no raw patient id in a checkpoint"
        );
        let mut restored = window();
        restored.restore(crate::support::codec::decode(&state).expect("decode"));
        // A restarted run releases nothing in a lull before its input flows again.
        restored.release_quiet(&mut out);
        assert!(out.is_empty() && !restored.waiting());
        restored.release_all(&mut out);
        assert_eq!(ids(&out), ["e", "d"]);
        assert!(out[0].late, "e (5 s) came after a (20 s) was released");
        assert!(!out[1].late);
        assert_eq!(out[1].record.kind, Some(EventType::Vitals));
        assert_eq!(out[1].patient, 7);
    }

    /// One event written twice to two partitions, within the window in one and beyond it in
    /// the other: whichever copy arrives first, it is placed and flagged alike.
    #[test]
    fn a_duplicate_from_another_partition_counts_as_the_copy_in_order() {
        let mut sequences = Vec::new();
        for in_order_first in [true, false] {
            let mut silver = Silver::new(Network::default_network());
            let mut w = ReorderWindow::new(Some(Duration::from_secs(30)));
            w.expect([(0, 0), (0, 1)]);
            let (now, mut out) = (Instant::now(), Vec::new());
            // Partition 0 has moved to 100 s, partition 1 to 50 s; the event is at 40 s.
            w.hold(1, reading(&mut silver, "p0", 100), (0, 0), now, &mut out);
            w.hold(1, reading(&mut silver, "p1", 50), (0, 1), now, &mut out);
            let copy = reading(&mut silver, "x", 40);
            let at = micros(&copy.event.event_timestamp);
            let (first, second) = if in_order_first { (1, 0) } else { (0, 1) };
            w.hold(1, copy, (0, first), now, &mut out);
            w.duplicate("x", at, (0, second));
            w.release_all(&mut out);
            sequences.push(
                out.iter()
                    .map(|r| (r.record.event.event_id.clone(), r.late))
                    .collect::<Vec<_>>(),
            );
        }
        assert_eq!(sequences[0], sequences[1]);
        assert!(sequences[0].contains(&("x".to_owned(), false)));
    }

    #[test]
    fn without_a_window_records_go_in_arrival_order() {
        let mut silver = Silver::new(Network::default_network());
        let mut window = ReorderWindow::off();
        let mut out = Vec::new();
        let now = Instant::now();
        window.hold(1, reading(&mut silver, "b", 20), (0, 0), now, &mut out);
        window.hold(1, reading(&mut silver, "a", 10), (0, 0), now, &mut out);
        assert_eq!(ids(&out), ["b", "a"]);
        assert!(window.is_empty() && !window.is_on());
    }
}
