//! KPI documents: the current value of every KPI, and the JSON the sinks write.
//!
//! The dataflow emits changes; this state adds them up and remembers which document ids they
//! touched, so that a flush renders and writes only the documents that changed.

use crate::model::HospitalId;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Map, Value};

use super::dataflow::KpiDelta;
use super::facts::VITAL_NAMES;
use super::{OccupancyTally, StayTally, VitalsTally};
use crate::model::{
    patient_ref, AgeBand, DepartmentId, Document, Gender, Network, Priority, WEEKDAYS,
};

/// Which document a change touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum DocKey {
    Occupancy(HospitalId, DepartmentId),
    Vitals(HospitalId, DepartmentId),
    Stay(HospitalId, DepartmentId),
    PatientStay(HospitalId, u64),
    Admissions(HospitalId, u8, u8),
    Diagnoses(HospitalId),
}

/// The current KPIs, as the sum of every change received.
#[derive(Debug)]
pub struct KpiState {
    network: Network,
    occupancy: BTreeMap<(HospitalId, DepartmentId), OccupancyTally>,
    vitals: BTreeMap<(HospitalId, DepartmentId), VitalsTally>,
    stays: BTreeMap<(HospitalId, DepartmentId), StayTally>,
    /// Per (hospital, patient), the stays by the department they ended in.
    patient_stays: HashMap<(HospitalId, u64), BTreeMap<DepartmentId, StayTally>>,
    admissions: BTreeMap<(HospitalId, u8, u8), i64>,
    /// Per hospital, the top lists with their counts; the current one has count 1.
    diagnoses: BTreeMap<HospitalId, BTreeMap<Vec<(String, i64)>, i64>>,
    dirty: BTreeSet<DocKey>,
    changes: u64,
    /// The share of hospitals whose documents this state writes, as `(first, count, of)`:
    /// hospital `h` belongs to worker `h mod of`, and this process has workers
    /// `first..first + count`. `None`: every hospital (one process).
    share: Option<(usize, usize, usize)>,
}

/// Whether the hospital's documents are written under this share (see `only_workers`).
fn owns(share: Option<(usize, usize, usize)>, hospital: HospitalId) -> bool {
    share.is_none_or(|(first, count, of)| {
        let worker = crate::cluster::hospital_worker(hospital, of);
        (first..first + count).contains(&worker)
    })
}

impl DocKey {
    fn hospital(&self) -> HospitalId {
        match *self {
            DocKey::Occupancy(h, _)
            | DocKey::Vitals(h, _)
            | DocKey::Stay(h, _)
            | DocKey::PatientStay(h, _)
            | DocKey::Admissions(h, _, _)
            | DocKey::Diagnoses(h) => h,
        }
    }
}

/// Rounds for display; the sums behind it stay exact.
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl KpiState {
    /// A state in which every configured department has an occupancy document (zero included),
    /// so that the first flush writes them all.
    pub fn new(network: Network) -> Self {
        let mut state = KpiState {
            occupancy: BTreeMap::new(),
            vitals: BTreeMap::new(),
            stays: BTreeMap::new(),
            patient_stays: HashMap::new(),
            admissions: BTreeMap::new(),
            diagnoses: BTreeMap::new(),
            dirty: BTreeSet::new(),
            changes: 0,
            network,
            share: None,
        };
        let configured: Vec<(HospitalId, DepartmentId)> = state
            .network
            .departments()
            .map(|(h, d)| (h, d.id))
            .collect();
        for (h, d) in configured {
            state.occupancy.insert((h, d), OccupancyTally::default());
            state.dirty.insert(DocKey::Occupancy(h, d));
        }
        state
    }

    /// Adds one change.
    pub fn apply(&mut self, delta: KpiDelta) {
        use differential_dataflow::difference::{IsZero, Semigroup};
        self.changes += 1;
        let key = match delta {
            KpiDelta::Occupancy {
                hospital,
                department,
                change,
            } => {
                self.occupancy
                    .entry((hospital, department))
                    .or_default()
                    .plus_equals(&change);
                DocKey::Occupancy(hospital, department)
            }
            KpiDelta::Vitals {
                hospital,
                department,
                change,
            } => {
                self.vitals
                    .entry((hospital, department))
                    .or_default()
                    .plus_equals(&change);
                DocKey::Vitals(hospital, department)
            }
            KpiDelta::Stay {
                hospital,
                department,
                change,
            } => {
                self.stays
                    .entry((hospital, department))
                    .or_default()
                    .plus_equals(&change);
                DocKey::Stay(hospital, department)
            }
            KpiDelta::PatientStay {
                hospital,
                department,
                patient,
                change,
            } => {
                let by_department = self.patient_stays.entry((hospital, patient)).or_default();
                let t = by_department.entry(department).or_default();
                t.plus_equals(&change);
                if t.is_zero() {
                    by_department.remove(&department);
                }
                DocKey::PatientStay(hospital, patient)
            }
            KpiDelta::Admissions {
                hospital,
                priority,
                weekday,
                change,
            } => {
                *self
                    .admissions
                    .entry((hospital, priority, weekday))
                    .or_default() += change;
                DocKey::Admissions(hospital, priority, weekday)
            }
            KpiDelta::Diagnoses {
                hospital,
                top,
                change,
            } => {
                let lists = self.diagnoses.entry(hospital).or_default();
                let n = lists.entry(top.clone()).or_default();
                *n += change;
                if *n == 0 {
                    lists.remove(&top);
                }
                DocKey::Diagnoses(hospital)
            }
        };
        self.dirty.insert(key);
    }

    /// Takes a new departments file: the occupancy documents whose capacity changed (or that
    /// are new) are written again at the next flush.
    /// Keeps to the hospitals of one process of a cluster: workers `first..first + count` of
    /// `of` (the Gold dataflow sends hospital `h`'s changes to worker `h mod of`). The other
    /// processes write the other hospitals' documents, zero occupancy included.
    pub fn only_workers(mut self, first: usize, count: usize, of: usize) -> Self {
        self.share = Some((first, count, of.max(1)));
        let share = self.share;
        self.occupancy.retain(|(h, _), _| owns(share, *h));
        self.dirty.retain(|k| owns(share, k.hospital()));
        self
    }

    /// A department added gets its occupancy document (zero included); one removed keeps its
    /// documents, under its name and without beds, until its last patient leaves.
    pub fn set_network(&mut self, network: Network) {
        let share = self.share;
        let network = self.network.succeeded_by(network);
        // Configured and retired alike: a document is written again when its beds changed.
        let changed: Vec<(HospitalId, DepartmentId)> = network
            .departments()
            .map(|(h, d)| (h, d.id))
            .chain(network.retired().map(|(h, id, _)| (h, id)))
            .filter(|&(h, d)| {
                owns(share, h) && self.network.capacity(h, d) != network.capacity(h, d)
            })
            .collect();
        for key in changed {
            self.occupancy.entry(key).or_default();
            self.dirty.insert(DocKey::Occupancy(key.0, key.1));
        }
        self.network = network;
    }

    /// How many changes were applied since the start.
    pub fn changes_applied(&self) -> u64 {
        self.changes
    }

    /// Renders the documents changed since the last call. `as_of` is the event-time watermark,
    /// `updated_at` the wall-clock time of the flush.
    /// A document of a department this state has no name for yet (Silver took the new
    /// departments file a moment before the sink did, or another process of a cluster did)
    /// waits, still changed, for the name instead of being written under another id.
    pub fn take_changed(&mut self, as_of: &str, updated_at: &str) -> Vec<Document> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut out = Vec::with_capacity(dirty.len());
        for key in dirty {
            if !self.named(key) {
                self.dirty.insert(key);
                continue;
            }
            out.extend(self.render(key, as_of, updated_at));
        }
        out
    }

    /// Whether every department a document names has a name here.
    fn named(&self, key: DocKey) -> bool {
        let known = |h: HospitalId, d: DepartmentId| self.network.department_name(h, d).is_some();
        match key {
            DocKey::Occupancy(h, d) | DocKey::Vitals(h, d) | DocKey::Stay(h, d) => known(h, d),
            DocKey::PatientStay(h, p) => self
                .patient_stays
                .get(&(h, p))
                .is_none_or(|stays| stays.keys().all(|d| known(h, *d))),
            DocKey::Admissions(..) | DocKey::Diagnoses(_) => true,
        }
    }

    /// Every current document (for exports and tests).
    pub fn all_documents(&self, as_of: &str, updated_at: &str) -> Vec<Document> {
        let keys = self
            .occupancy
            .keys()
            .map(|&(h, d)| DocKey::Occupancy(h, d))
            .chain(self.vitals.keys().map(|&(h, d)| DocKey::Vitals(h, d)))
            .chain(self.stays.keys().map(|&(h, d)| DocKey::Stay(h, d)))
            .chain(
                self.patient_stays
                    .keys()
                    .map(|&(h, p)| DocKey::PatientStay(h, p)),
            )
            .chain(
                self.admissions
                    .keys()
                    .map(|&(h, p, w)| DocKey::Admissions(h, p, w)),
            )
            .chain(self.diagnoses.keys().map(|&h| DocKey::Diagnoses(h)))
            .collect::<BTreeSet<_>>();
        keys.into_iter()
            .filter_map(|k| self.render(k, as_of, updated_at))
            .collect()
    }

    /// Total patients located in the network (for the status line).
    pub fn occupied(&self) -> i64 {
        self.occupancy.values().map(|t| t.get(0)).sum()
    }

    /// Number of current patient length-of-stay documents.
    pub fn network(&self) -> &Network {
        &self.network
    }

    fn render(&self, key: DocKey, as_of: &str, updated_at: &str) -> Option<Document> {
        let dept_name = |d: DepartmentId| {
            self.network
                .department_name(key.hospital(), d)
                .unwrap_or("unknown")
        };
        let (id, hospital, kind, mut fields) = match key {
            DocKey::Occupancy(h, d) => {
                let t = self.occupancy.get(&(h, d)).copied().unwrap_or_default();
                let capacity = self.network.capacity(h, d).map(|c| c.bed_capacity);
                let occupied = t.get(0);
                let pct = capacity
                    .filter(|c| *c > 0)
                    .map(|c| round2(100.0 * occupied as f64 / f64::from(c)));
                let by_gender: Map<String, Value> = Gender::ALL
                    .iter()
                    .map(|g| {
                        (
                            g.name().to_owned(),
                            json!(t.get(1 + usize::from(g.index()))),
                        )
                    })
                    .collect();
                let by_age: Map<String, Value> = AgeBand::ALL
                    .iter()
                    .map(|b| {
                        (
                            b.label().to_owned(),
                            json!(t.get(5 + usize::from(b.index()))),
                        )
                    })
                    .collect();
                (
                    format!("occupancy:{h}:{}", dept_name(d)),
                    h,
                    "occupancy",
                    json!({
                        "department": dept_name(d),
                        "occupied": occupied,
                        "bed_capacity": capacity,
                        "occupancy_pct": pct,
                        "by_gender": by_gender,
                        "by_age_band": by_age,
                    }),
                )
            }
            DocKey::Vitals(h, d) => {
                let t = self.vitals.get(&(h, d)).copied().unwrap_or_default();
                let mut body = json!({ "department": dept_name(d), "patients": t.get(0) });
                for (i, name) in VITAL_NAMES.iter().enumerate() {
                    let (n, sum) = (t.get(1 + i), t.get(7 + i));
                    let avg = (n > 0).then(|| round2(sum as f64 / n as f64 / 100.0));
                    body[format!("avg_{name}")] = json!(avg);
                }
                (format!("vitals:{h}:{}", dept_name(d)), h, "vitals", body)
            }
            DocKey::Stay(h, d) => {
                let t = self.stays.get(&(h, d)).copied().unwrap_or_default();
                (
                    format!("los:{h}:{}", dept_name(d)),
                    h,
                    "los",
                    stay_fields(t, json!({ "department": dept_name(d) })),
                )
            }
            DocKey::PatientStay(h, p) => {
                use differential_dataflow::difference::Semigroup;
                let stays = self.patient_stays.get(&(h, p));
                let mut t = StayTally::default();
                let mut departments = BTreeSet::new();
                for (d, s) in stays.into_iter().flatten() {
                    t.plus_equals(s);
                    if s.get(0) != 0 {
                        departments.insert(*d);
                    }
                }
                // The department the patient's stays ended in; none when they ended in
                // several (a department-scoped reader then does not see the document).
                let department = match (departments.first(), departments.len()) {
                    (Some(d), 1) => json!(dept_name(*d)),
                    _ => Value::Null,
                };
                let who = patient_ref(p);
                (
                    format!("patient_los:{h}:{who}"),
                    h,
                    "patient_los",
                    stay_fields(t, json!({ "department": department, "patient": who })),
                )
            }
            DocKey::Admissions(h, p, w) => {
                let n = self.admissions.get(&(h, p, w)).copied().unwrap_or_default();
                let priority = Priority::ALL
                    .get(usize::from(p))
                    .map(|p| p.name())
                    .unwrap_or("unknown");
                let weekday = WEEKDAYS.get(usize::from(w)).copied().unwrap_or("unknown");
                (
                    format!("admissions:{h}:{priority}:{weekday}"),
                    h,
                    "admissions",
                    json!({ "admission_priority": priority, "weekday": weekday, "admissions": n }),
                )
            }
            DocKey::Diagnoses(h) => {
                let top = self
                    .diagnoses
                    .get(&h)
                    .and_then(|lists| {
                        lists
                            .iter()
                            .find(|(_, n)| **n > 0)
                            .map(|(top, _)| top.clone())
                    })
                    .unwrap_or_default();
                let top: Vec<Value> = top
                    .into_iter()
                    .map(|(code, n)| json!({ "diagnosis_code": code, "admissions": n }))
                    .collect();
                (
                    format!("diagnoses:{h}"),
                    h,
                    "diagnoses",
                    json!({ "top": top }),
                )
            }
        };
        let obj = fields.as_object_mut()?;
        obj.insert("id".into(), json!(id));
        obj.insert("type".into(), json!(kind));
        obj.insert("hospital_id".into(), json!(hospital));
        obj.insert("as_of".into(), json!(as_of));
        obj.insert("updated_at".into(), json!(updated_at));
        Some(Document {
            id,
            hospital_id: i64::from(hospital),
            body: fields,
        })
    }
}

fn stay_fields(t: StayTally, mut body: Value) -> Value {
    let (n, seconds) = (t.get(0), t.get(1));
    body["discharges"] = json!(n);
    body["avg_los_hours"] = json!((n > 0).then(|| round2(seconds as f64 / n as f64 / 3600.0)));
    body
}
