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
//! The window holds each record until the stream's event time (the newest event time seen)
//! has moved `window` past it, then releases the held records in event-time order (ties: event
//! id). So events displaced by less than the window, in any arrival order, in any batching into
//! epochs, through any layout, after a restart from a checkpoint (which keeps what is held),
//! reach the rules as one sequence, and give the same alerts.
//!
//! A record that arrives after a later record was released is **late**: it goes to the rules
//! at once, never dropped, and its alert says `"late": true`. While the input is quiet the event
//! time stands still, so a record also leaves once it has waited `window` in wall time: that
//! bounds what the window adds to event-to-alert latency. The wall-time bound applies only to
//! quiet polls, so that a busy stream (a replay, a backlog) stays in event-time order however
//! slowly the engine takes it.
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
//!     match silver.clean(Event::from_json(json.as_bytes()).unwrap()) {
//!         Outcome::Record(r) => r,
//!         other => panic!("{other:?}"),
//!     }
//! };
//! let mut window = ReorderWindow::new(Some(Duration::from_secs(60)), Duration::from_secs(60));
//! let (now, mut out) = (Instant::now(), Vec::<RuleInput>::new());
//! // The 10:00:30 reading arrives before the 10:00:10 one: both are held.
//! window.hold(1, reading("b", "2026-03-02T10:00:30Z"), now, &mut out);
//! window.hold(1, reading("a", "2026-03-02T10:00:10Z"), now, &mut out);
//! window.release(&mut out);
//! assert!(out.is_empty());
//! // Event time moves 60 s past both: they leave in event-time order.
//! window.hold(1, reading("c", "2026-03-02T10:01:30Z"), now, &mut out);
//! window.release(&mut out);
//! let ids: Vec<&str> = out.iter().map(|r| r.record.event.event_id.as_str()).collect();
//! assert_eq!(ids, ["a", "b"]);
//! // A reading from before what was released is late: it goes at once, flagged.
//! window.hold(1, reading("d", "2026-03-02T10:00:20Z"), now, &mut out);
//! window.release(&mut out);
//! assert!(out[2].late && out[2].record.event.event_id == "d");
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::RuleInput;
use crate::checkpoint::Checkpointed;
use crate::gold::{micros, Micros};
use crate::model::{Department, Event, EventType};
use crate::silver::{DqFlags, SilverRecord};

/// Where a held record goes in the release order: event time, event id, then arrival (a tie
/// of both is the same event twice; the arrival keeps both).
type Key = (Micros, String, u64);

/// A record waiting for the event time to pass it.
#[derive(Debug)]
struct Held {
    patient: u64,
    record: Box<SilverRecord>,
    late: bool,
}

/// The records held for the rules, released in event-time order (see the module's
/// documentation).
#[derive(Debug)]
pub struct ReorderWindow {
    /// How far the event time must move past a record before it is released; `None`: no
    /// window, the rules read the arrival order.
    window: Option<Micros>,
    /// How long a record waits at most while the input is quiet.
    wait: Duration,
    /// The newest event time seen.
    newest: Micros,
    /// The event time and id of the last record released: an arrival before it is late.
    released: Option<(Micros, String)>,
    held: BTreeMap<Key, Held>,
    /// When each held record arrived, oldest first, with its event time (entries of records
    /// already released are dropped as the release passes them).
    arrivals: VecDeque<(Instant, Micros)>,
    next_arrival: u64,
}

impl ReorderWindow {
    /// A window of `window` event time (`None` or zero: none), with records leaving after
    /// `wait` of wall time while the input is quiet.
    pub fn new(window: Option<Duration>, wait: Duration) -> Self {
        let window = window
            .filter(|w| !w.is_zero())
            .map(|w| Micros::try_from(w.as_micros()).unwrap_or(Micros::MAX));
        ReorderWindow {
            window,
            wait,
            newest: Micros::MIN,
            released: None,
            held: BTreeMap::new(),
            arrivals: VecDeque::new(),
            next_arrival: 0,
        }
    }

    /// No window: every record goes to the rules as it arrives.
    pub fn off() -> Self {
        Self::new(None, Duration::ZERO)
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

    /// Takes one record that arrived `now`: held, or (without a window) straight into `out`.
    pub fn hold(
        &mut self,
        patient: u64,
        record: Box<SilverRecord>,
        now: Instant,
        out: &mut Vec<RuleInput>,
    ) {
        if self.window.is_none() {
            out.push(RuleInput {
                patient,
                record,
                late: false,
            });
            return;
        }
        let at = micros(&record.event.event_timestamp);
        let late = self
            .released
            .as_ref()
            .is_some_and(|(t, id)| (at, record.event.event_id.as_str()) < (*t, id.as_str()));
        self.newest = self.newest.max(at);
        let key = (at, record.event.event_id.clone(), self.next_arrival);
        self.next_arrival += 1;
        self.held.insert(
            key,
            Held {
                patient,
                record,
                late,
            },
        );
        self.arrivals.push_back((now, at));
    }

    /// Releases, in event-time order, every held record the event time has moved `window`
    /// past (and every late record).
    pub fn release(&mut self, out: &mut Vec<RuleInput>) {
        let Some(window) = self.window else { return };
        let cutoff = self.newest.saturating_sub(window);
        self.release_through(cutoff, out);
    }

    /// While the input is quiet: releases, in event-time order, the records that have waited
    /// `wait` in wall time, with every record before them.
    pub fn release_overdue(&mut self, now: Instant, out: &mut Vec<RuleInput>) {
        let mut cutoff = None;
        while let Some(&(arrived, at)) = self.arrivals.front() {
            if now.saturating_duration_since(arrived) < self.wait {
                break;
            }
            cutoff = cutoff.max(Some(at));
            self.arrivals.pop_front();
        }
        if let Some(cutoff) = cutoff {
            self.release_through(cutoff, out);
        }
    }

    /// Whether a quiet poll should close an epoch to release records that waited long enough.
    pub fn overdue(&self, now: Instant) -> bool {
        !self.held.is_empty()
            && self
                .arrivals
                .front()
                .is_some_and(|(arrived, _)| now.saturating_duration_since(*arrived) >= self.wait)
    }

    /// Releases everything held, in event-time order (the input ended).
    pub fn release_all(&mut self, out: &mut Vec<RuleInput>) {
        self.release_through(Micros::MAX, out);
        self.arrivals.clear();
    }

    fn release_through(&mut self, cutoff: Micros, out: &mut Vec<RuleInput>) {
        let Some(first) = self.held.keys().next() else {
            return;
        };
        if first.0 > cutoff {
            return;
        }
        let rest = match cutoff.checked_add(1) {
            Some(next) => self.held.split_off(&(next, String::new(), 0)),
            None => BTreeMap::new(),
        };
        let released = std::mem::replace(&mut self.held, rest);
        if let Some(((at, id, _), _)) = released.last_key_value() {
            if self
                .released
                .as_ref()
                .is_none_or(|(t, i)| (*t, i) < (*at, id))
            {
                self.released = Some((*at, id.clone()));
            }
        }
        out.extend(released.into_values().map(|h| RuleInput {
            patient: h.patient,
            record: h.record,
            late: h.late,
        }));
        // Arrivals of released records are no longer needed (those still held stay: they
        // bound the wait).
        let through = self.released.as_ref().map_or(Micros::MIN, |(t, _)| *t);
        while self.arrivals.front().is_some_and(|(_, at)| *at <= through) {
            self.arrivals.pop_front();
        }
    }
}

/// A held record as a checkpoint keeps it: the event in the event model's JSON, with what
/// Silver decided about it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldRecord {
    patient: u64,
    event: String,
    kind: Option<EventType>,
    department: Option<Department>,
    flags: u16,
    late: bool,
}

/// What a checkpoint keeps of the window: the held records, the newest event time and the
/// last record released, so that a restarted run releases the same sequence.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReorderState {
    newest: Micros,
    released: Option<(Micros, String)>,
    held: Vec<HeldRecord>,
}

impl Checkpointed for ReorderWindow {
    type State<'a> = ReorderState;

    fn snapshot(&self) -> ReorderState {
        ReorderState {
            newest: self.newest,
            released: self.released.clone(),
            held: self
                .held
                .values()
                .map(|h| HeldRecord {
                    patient: h.patient,
                    event: h.record.event.to_json(),
                    kind: h.record.kind,
                    department: h.record.department,
                    flags: h.record.dq_flags.bits(),
                    late: h.late,
                })
                .collect(),
        }
    }

    /// Held records come back as if they had just arrived (they wait at most `wait` more).
    fn restore(&mut self, state: ReorderState) {
        self.newest = state.newest;
        self.released = state.released;
        self.held.clear();
        self.arrivals.clear();
        let now = Instant::now();
        for h in state.held {
            // What `snapshot` wrote from a parsed event parses again.
            let Ok(event) = Event::from_json(h.event.as_bytes()) else {
                continue;
            };
            let at = micros(&event.event_timestamp);
            let key = (at, event.event_id.clone(), self.next_arrival);
            self.next_arrival += 1;
            let record = Box::new(SilverRecord {
                event,
                kind: h.kind,
                department: h.department,
                dq_flags: DqFlags::from_bits(h.flags),
            });
            self.held.insert(
                key,
                Held {
                    patient: h.patient,
                    record,
                    late: h.late,
                },
            );
            self.arrivals.push_back((now, at));
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

    /// Events one to ten seconds apart, in three arrival orders, in batches of any size: the
    /// same sequence leaves.
    #[test]
    fn any_arrival_order_within_the_window_releases_one_sequence() {
        let mut silver = Silver::new(Network::default_network());
        let seconds: Vec<u32> = (0..200).map(|i| i * 3 + (i * 7) % 5).collect();
        let orders: [Vec<usize>; 3] = [
            (0..200).collect(),
            (0..200)
                .rev()
                .collect::<Vec<_>>()
                .chunks(4)
                .rev()
                .flatten()
                .copied()
                .collect(),
            (0..200).map(|i| (i / 5) * 5 + (4 - i % 5)).collect(),
        ];
        let mut sequences = Vec::new();
        for (n, order) in orders.iter().enumerate() {
            let mut window =
                ReorderWindow::new(Some(Duration::from_secs(30)), Duration::from_secs(3600));
            let mut out = Vec::new();
            let now = Instant::now();
            for (i, &e) in order.iter().enumerate() {
                window.hold(
                    1,
                    reading(&mut silver, &format!("e{e:03}"), seconds[e]),
                    now,
                    &mut out,
                );
                if i % (n + 1) * 3 == 0 {
                    window.release(&mut out);
                }
            }
            window.release_all(&mut out);
            assert!(
                out.iter().all(|r| !r.late),
                "nothing is late within the window"
            );
            sequences.push(ids(&out));
            // Silver drops a second sighting of an id: each order gets fresh ids from a new
            // Silver.
            silver = Silver::new(Network::default_network());
        }
        let mut sorted = sequences[0].clone();
        sorted.sort_by_key(|id| seconds[id[1..].parse::<usize>().expect("n")]);
        assert_eq!(sequences[0], sorted);
        assert_eq!(sequences[1], sequences[0]);
        assert_eq!(sequences[2], sequences[0]);
    }

    #[test]
    fn a_quiet_input_releases_what_waited_and_a_checkpoint_keeps_the_rest() {
        let mut silver = Silver::new(Network::default_network());
        let mut window =
            ReorderWindow::new(Some(Duration::from_secs(600)), Duration::from_millis(50));
        let mut out = Vec::new();
        let start = Instant::now();
        window.hold(7, reading(&mut silver, "a", 20), start, &mut out);
        window.hold(7, reading(&mut silver, "b", 10), start, &mut out);
        assert!(!window.overdue(start));
        let later = start + Duration::from_millis(60);
        window.hold(7, reading(&mut silver, "c", 15), later, &mut out);
        assert!(window.overdue(later));
        window.release_overdue(later, &mut out);
        // `a` waited long enough; `b` is before it and goes too; `c` (15 s, after `b`,
        // before `a`) arrived later but is before `a`: it goes along.
        assert_eq!(ids(&out), ["b", "c", "a"]);

        out.clear();
        window.hold(7, reading(&mut silver, "d", 30), later, &mut out);
        window.hold(7, reading(&mut silver, "e", 5), later, &mut out);
        let state = window.snapshot();
        let mut restored =
            ReorderWindow::new(Some(Duration::from_secs(600)), Duration::from_millis(50));
        restored.restore(
            crate::support::codec::decode(&crate::support::codec::encode(&state).expect("encode"))
                .expect("decode"),
        );
        restored.release_all(&mut out);
        assert_eq!(ids(&out), ["e", "d"]);
        assert!(out[0].late, "e (5 s) arrived after a (20 s) was released");
        assert!(!out[1].late);
        assert_eq!(out[1].record.kind, Some(EventType::Vitals));
        assert_eq!(out[1].patient, 7);
    }

    #[test]
    fn without_a_window_records_go_in_arrival_order() {
        let mut silver = Silver::new(Network::default_network());
        let mut window = ReorderWindow::off();
        let mut out = Vec::new();
        let now = Instant::now();
        window.hold(1, reading(&mut silver, "b", 20), now, &mut out);
        window.hold(1, reading(&mut silver, "a", 10), now, &mut out);
        assert_eq!(ids(&out), ["b", "a"]);
        assert!(window.is_empty() && !window.is_on());
    }
}
