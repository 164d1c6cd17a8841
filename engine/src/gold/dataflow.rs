//! The Gold dataflow: facts in, KPI changes out.
//!
//! ```text
//! adt ──reduce(latest by event time)──► location ──explode──► occupancy tallies ─┐
//!                                          │                                     │
//! vitals (latest per patient) ──join───────┘──explode──► vitals tallies ─────────┤
//! stays ──explode──► length-of-stay tallies (department, patient) ───────────────┼─► KpiDelta
//! admissions ──explode──► counts by priority and weekday ────────────────────────┤
//!            └─count by diagnosis──reduce(top 10 per hospital) ──────────────────┘
//! ```
//!
//! Timestamps are arrival epochs; every collection is consolidated per epoch before it leaves,
//! so the sink sees one net change per key and epoch, and unchanged KPIs produce nothing.

use crate::model::HospitalId;
use std::sync::mpsc::SyncSender;

use differential_dataflow::input::InputSession;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Exchange, Inspect, Probe};
use timely::dataflow::Scope;

use super::admissions::AdmissionCounts;
use super::census::VitalsCensus;
use super::facts::{AdmissionFact, AdtFact, GoldBatch, Micros, StayFact, VitalsValues};
use super::location::LatestLocation;
use super::occupancy::Occupancy;
use super::stays::LengthOfStay;
use super::tally::Tally;
use super::{OccupancyTally, StayTally, VitalsTally};
use crate::model::DepartmentId;

/// One net change of one KPI key in one epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KpiDelta {
    Occupancy {
        hospital: HospitalId,
        department: DepartmentId,
        change: OccupancyTally,
    },
    Vitals {
        hospital: HospitalId,
        department: DepartmentId,
        change: VitalsTally,
    },
    Stay {
        hospital: HospitalId,
        department: DepartmentId,
        change: StayTally,
    },
    /// A patient's stays that ended in `department` (the department travels with the
    /// per-patient length of stay, so department-scoped readers see only their patients).
    PatientStay {
        hospital: HospitalId,
        department: DepartmentId,
        patient: u64,
        change: StayTally,
    },
    Admissions {
        hospital: HospitalId,
        priority: u8,
        weekday: u8,
        change: i64,
    },
    /// The top list of a hospital: `+1` when it becomes current, `-1` when it stops being so.
    Diagnoses {
        hospital: HospitalId,
        top: Vec<(String, i64)>,
        change: i64,
    },
}

impl KpiDelta {
    /// The hospital whose documents the change belongs to. Every document is one hospital's,
    /// so the changes of one hospital go to one worker, and in a cluster one process's sink
    /// writes each document whole.
    pub fn hospital(&self) -> HospitalId {
        match self {
            KpiDelta::Occupancy { hospital, .. }
            | KpiDelta::Vitals { hospital, .. }
            | KpiDelta::Stay { hospital, .. }
            | KpiDelta::PatientStay { hospital, .. }
            | KpiDelta::Admissions { hospital, .. }
            | KpiDelta::Diagnoses { hospital, .. } => *hospital,
        }
    }
}

/// What a worker sends to the sink: changes, and the news that an epoch is complete on it.
#[derive(Debug, Clone, PartialEq)]
pub enum GoldOutput {
    Changes(Vec<KpiDelta>),
    /// Every change of `epoch` (and before) from `worker` has been sent.
    Complete {
        worker: usize,
        epoch: u64,
        watermark: Micros,
        read_at: std::time::Instant,
    },
}

/// The input handles of the Gold dataflow on one worker.
pub struct GoldInputs {
    adt: InputSession<u64, (u64, AdtFact), isize>,
    vitals: InputSession<u64, (u64, VitalsValues), isize>,
    stays: InputSession<u64, StayFact, isize>,
    admissions: InputSession<u64, AdmissionFact, isize>,
}

impl GoldInputs {
    /// Feeds one batch at the current epoch.
    pub fn insert(&mut self, batch: GoldBatch) {
        for fact in batch.adt {
            self.adt.insert(fact);
        }
        for (fact, diff) in batch.vitals {
            self.vitals.update(fact, diff);
        }
        for fact in batch.stays {
            self.stays.insert(fact);
        }
        for fact in batch.admissions {
            self.admissions.insert(fact);
        }
        for fact in batch.retracted.adt {
            self.adt.update(fact, -1);
        }
        for fact in batch.retracted.stays {
            self.stays.update(fact, -1);
        }
        for fact in batch.retracted.admissions {
            self.admissions.update(fact, -1);
        }
    }

    /// Closes the epoch: everything inserted so far is at an epoch before `epoch`.
    pub fn advance_to(&mut self, epoch: u64) {
        self.adt.advance_to(epoch);
        self.vitals.advance_to(epoch);
        self.stays.advance_to(epoch);
        self.admissions.advance_to(epoch);
        self.adt.flush();
        self.vitals.flush();
        self.stays.flush();
        self.admissions.flush();
    }

    /// The epoch new facts are inserted at.
    pub fn epoch(&self) -> u64 {
        *self.adt.time()
    }
}

/// Builds the Gold dataflow in `scope`; changes go to `out` as they are produced.
///
/// The sender is bounded: a slow sink slows the dataflow instead of growing memory.
pub fn build<M>(scope: Scope<u64>, out: SyncSender<M>) -> (GoldInputs, ProbeHandle<u64>)
where
    M: From<GoldOutput> + Send + 'static,
{
    let mut inputs = GoldInputs {
        adt: InputSession::new(),
        vitals: InputSession::new(),
        stays: InputSession::new(),
        admissions: InputSession::new(),
    };
    let probe = ProbeHandle::new();

    let location = inputs.adt.to_collection(scope).latest_location();

    emit(
        location.clone().occupancy(),
        &out,
        &probe,
        |(hospital, department), change| KpiDelta::Occupancy {
            hospital,
            department,
            change,
        },
    );
    emit(
        location.vitals_census(inputs.vitals.to_collection(scope)),
        &out,
        &probe,
        |(hospital, department), change| KpiDelta::Vitals {
            hospital,
            department,
            change,
        },
    );

    let stays = inputs.stays.to_collection(scope);
    emit(
        stays.clone().stays_by_department(),
        &out,
        &probe,
        |(hospital, department), change| KpiDelta::Stay {
            hospital,
            department,
            change,
        },
    );
    emit(
        stays.stays_by_patient(),
        &out,
        &probe,
        |(hospital, department, patient), change| KpiDelta::PatientStay {
            hospital,
            department,
            patient,
            change,
        },
    );

    let admissions = inputs.admissions.to_collection(scope);
    emit(
        admissions.clone().admissions_by_priority(),
        &out,
        &probe,
        |(hospital, priority, weekday), change: Tally<1>| KpiDelta::Admissions {
            hospital,
            priority,
            weekday,
            change: change.get(0),
        },
    );
    emit(
        admissions.top_diagnoses(),
        &out,
        &probe,
        |(hospital, top), change| KpiDelta::Diagnoses {
            hospital,
            top,
            change: change as i64,
        },
    );

    (inputs, probe)
}

/// Sends the consolidated changes of a tally collection, and probes it.
fn emit<'s, K, R, F, M>(
    collection: VecCollection<'s, u64, K, R>,
    out: &SyncSender<M>,
    probe: &ProbeHandle<u64>,
    to_delta: F,
) where
    K: Clone + 'static,
    R: Clone + 'static,
    F: Fn(K, R) -> KpiDelta + 'static,
    M: From<GoldOutput> + Send + 'static,
{
    let out = out.clone();
    collection
        .inner
        .map(move |(k, t, r)| (to_delta(k, r), t))
        // Each hospital's changes to one worker: its sink then holds whole documents, also
        // when the workers are spread over the processes of a cluster.
        .exchange(|(delta, _)| crate::cluster::hospital_key(delta.hospital()))
        .inspect_core(move |event| {
            if let Ok((_, updates)) = event {
                if !updates.is_empty() {
                    let batch = updates.iter().map(|(delta, _)| delta.clone()).collect();
                    // A closed channel means the sink stopped; the run is ending: nothing to do.
                    let _ = out.send(M::from(GoldOutput::Changes(batch)));
                }
            }
        })
        .probe_with(probe);
}
