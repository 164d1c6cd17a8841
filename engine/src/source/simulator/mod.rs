//! The hospital network simulator: the default source of `cds run` and the generator behind
//! `cds simulate`.
//!
//! It keeps the admitted patients of every hospital in memory and plays a schedule of
//! simulated-time actions: arrivals (Poisson, 3x from December to February and on weekend
//! evenings, times a surge's factor during a configured surge), vitals rounds for every admitted patient (with deterioration episodes, so that
//! clinical rules fire now and then), transfers and discharges of the same patients, and
//! readmissions. The network starts with a census of patients already admitted, so occupancy
//! is realistic from the first minutes. Dirty-data scenarios are applied to emitted events at
//! `dirty_rate`. Everything is driven by one seeded PRNG and ordered collections: the same
//! configuration gives byte-identical output.

mod config;
mod dirty;
mod rng;
mod source;

use crate::model::HospitalId;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::io::Write;
use std::time::{Duration as StdDuration, Instant};

use chrono::{Datelike, Duration, Timelike};

pub use config::{SimulatorConfig, Surge};
pub use dirty::Scenario;
pub use source::SimulatorSource;

use crate::model::{Event, Network, Timestamp, Vitals};
use rng::Rng;

/// What the simulator assumes of a kind of department (the `kind` column of the departments
/// file): its mean length of stay in hours, its diagnoses, the kinds its transfers go to (a
/// kind listed twice is twice as likely) and the share of its stays that end in one.
struct Profile {
    mean_stay_hours: f64,
    diagnoses: &'static [&'static str],
    transfers_to: &'static [&'static str],
    transfer_share: f64,
}

/// The profile of a kind; any kind not listed is a general ward.
fn profile(kind: &str) -> &'static Profile {
    const EMERGENCY: Profile = Profile {
        mean_stay_hours: 10.0,
        diagnoses: &[
            "R07.4", "S72.0", "J18.9", "N39.0", "R10.4", "S06.0", "T78.4",
        ],
        transfers_to: &[
            "surgery",
            "icu",
            "cardiology",
            "oncology",
            "surgery",
            "cardiology",
        ],
        transfer_share: 0.35,
    };
    const SURGERY: Profile = Profile {
        mean_stay_hours: 110.0,
        diagnoses: &["K35.8", "K80.2", "S72.0", "K40.9", "M17.1"],
        transfers_to: &["icu"],
        transfer_share: 0.12,
    };
    const ICU: Profile = Profile {
        mean_stay_hours: 90.0,
        diagnoses: &["A41.9", "J96.0", "J18.9", "I46.9", "R57.0"],
        transfers_to: &["surgery", "cardiology"],
        transfer_share: 0.12,
    };
    const PAEDIATRICS: Profile = Profile {
        mean_stay_hours: 70.0,
        diagnoses: &["J21.9", "J45.9", "A09", "J06.9", "B34.9"],
        transfers_to: &[],
        transfer_share: 0.0,
    };
    const MATERNITY: Profile = Profile {
        mean_stay_hours: 56.0,
        diagnoses: &["O80", "O82", "O42.0", "O13"],
        transfers_to: &[],
        transfer_share: 0.0,
    };
    const ONCOLOGY: Profile = Profile {
        mean_stay_hours: 150.0,
        diagnoses: &["C50.9", "C34.9", "C18.9", "C61", "C91.0"],
        transfers_to: &[],
        transfer_share: 0.0,
    };
    const CARDIOLOGY: Profile = Profile {
        mean_stay_hours: 110.0,
        diagnoses: &["I21.4", "I50.9", "I48.9", "I20.0", "I10"],
        transfers_to: &["icu"],
        transfer_share: 0.12,
    };
    const WARD: Profile = Profile {
        mean_stay_hours: 96.0,
        diagnoses: &["J18.9", "N39.0", "I50.9", "J44.1", "E11.9", "A41.9"],
        transfers_to: &["icu"],
        transfer_share: 0.04,
    };
    match kind {
        "emergency" => &EMERGENCY,
        "surgery" => &SURGERY,
        "icu" => &ICU,
        "paediatrics" | "pediatrics" => &PAEDIATRICS,
        "maternity" => &MATERNITY,
        "oncology" => &ONCOLOGY,
        "cardiology" => &CARDIOLOGY,
        _ => &WARD,
    }
}

/// One configured department, as the simulator fills it.
#[derive(Debug, Clone)]
struct Ward {
    hospital: HospitalId,
    name: String,
    /// Three letters for bed ids (`H3-SUR-15`).
    code: String,
    kind: String,
    capacity: u32,
    /// Wards of the same hospital transfers go to (repeated by likelihood).
    transfers_to: Vec<usize>,
    /// Which beds are taken; past capacity: corridor and escalation beds.
    beds: Vec<bool>,
}

impl Ward {
    fn profile(&self) -> &'static Profile {
        profile(&self.kind)
    }
}

/// The bed-id code of a department: its first three letters or digits, upper case.
fn bed_code(name: &str) -> String {
    let code: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(3)
        .collect::<String>()
        .to_ascii_uppercase();
    if code.is_empty() {
        "DEP".into()
    } else {
        code
    }
}

/// Share of beds occupied in steady state outside surges.
const TARGET_OCCUPANCY: f64 = 0.62;

const INSURANCE: [(&str, f64); 5] = [
    ("Public", 45.0),
    ("Private", 30.0),
    ("Medicare", 15.0),
    ("Self-pay", 7.0),
    ("Other", 3.0),
];

#[derive(Debug, Clone)]
struct Episode {
    step: u32,
    length: u32,
    recovers: bool,
    cold: bool,
}

#[derive(Debug, Clone)]
struct Patient {
    id: String,
    /// Entry of [`Simulator::wards`].
    ward: usize,
    bed: u32,
    gender: &'static str,
    age: i64,
    admitted_at: Timestamp,
    priority: &'static str,
    diagnosis: &'static str,
    insurance: &'static str,
    baseline: [f64; 6],
    oxygen: bool,
    episode: Option<Episode>,
    /// Bumped on every move, so that stale scheduled actions are ignored.
    generation: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Arrival,
    Vitals(u64, u32),
    Transfer(u64, u32),
    Discharge(u64, u32),
}

/// A recently discharged patient who may come back.
#[derive(Debug, Clone)]
struct Former {
    id: String,
    gender: &'static str,
    age: i64,
    discharged_at: Timestamp,
}

/// The simulator. See the module documentation.
pub struct Simulator {
    config: SimulatorConfig,
    rng: Rng,
    now: Timestamp,
    wards: Vec<Ward>,
    /// Arrival weight per entry of `wards`: capacity / mean stay.
    weights: Vec<f64>,
    /// Arrivals per hour at normal load.
    base_rate: f64,
    patients: BTreeMap<u64, Patient>,
    former: VecDeque<Former>,
    schedule: BinaryHeap<Reverse<(i64, u64, Action)>>,
    seq: u64,
    next_patient: u64,
    next_stay: u64,
    next_event: u64,
    ready: VecDeque<Vec<u8>>,
    held: Vec<(u64, Vec<u8>)>,
    produced: u64,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("produced", &self.produced)
            .field("admitted", &self.patients.len())
            .finish()
    }
}

impl Simulator {
    pub fn new(config: SimulatorConfig, network: &Network) -> Self {
        let mut wards: Vec<Ward> = network
            .departments()
            .map(|(h, d)| Ward {
                hospital: h,
                name: d.name.clone(),
                code: bed_code(&d.name),
                kind: d.kind.clone(),
                capacity: d.capacity.bed_capacity,
                transfers_to: Vec::new(),
                beds: vec![false; d.capacity.bed_capacity as usize],
            })
            .collect();
        for i in 0..wards.len() {
            let targets: Vec<usize> = wards[i]
                .profile()
                .transfers_to
                .iter()
                .filter_map(|kind| {
                    wards
                        .iter()
                        .position(|w| w.hospital == wards[i].hospital && w.kind == *kind)
                })
                .collect();
            wards[i].transfers_to = targets;
        }
        // Flow balance: each department should see TARGET * capacity / mean stay patients per
        // hour; part of that arrives by transfer, so direct arrivals make up the rest.
        let wanted: Vec<f64> = wards
            .iter()
            .map(|w| TARGET_OCCUPANCY * f64::from(w.capacity) / w.profile().mean_stay_hours)
            .collect();
        let mut inflow = vec![0.0; wards.len()];
        for (i, w) in wards.iter().enumerate() {
            for &j in &w.transfers_to {
                inflow[j] += wanted[i] * w.profile().transfer_share / w.transfers_to.len() as f64;
            }
        }
        let weights: Vec<f64> = wanted
            .iter()
            .zip(&inflow)
            .map(|(w, t)| (w - t).max(0.1 * w))
            .collect();
        let base_rate = weights.iter().sum::<f64>();
        let mut sim = Simulator {
            rng: Rng::new(config.seed),
            now: config.start,
            wards,
            weights,
            base_rate,
            patients: BTreeMap::new(),
            former: VecDeque::new(),
            schedule: BinaryHeap::new(),
            seq: 0,
            next_patient: 1_000_000,
            next_stay: 0,
            next_event: 0,
            ready: VecDeque::new(),
            held: Vec::new(),
            produced: 0,
            config,
        };
        sim.initial_census();
        sim.push(sim.now, Action::Arrival);
        sim
    }

    /// Lines emitted so far.
    pub fn produced(&self) -> u64 {
        self.produced
    }

    /// The next JSON line (no newline), or `None` once `max_events` lines were produced.
    pub fn next_line(&mut self) -> Option<Vec<u8>> {
        if self.config.max_events.is_some_and(|m| self.produced >= m) {
            return None;
        }
        loop {
            if let Some(i) = self.held.iter().position(|(at, _)| *at <= self.produced) {
                let (_, line) = self.held.swap_remove(i);
                self.ready.push_back(line);
            }
            if let Some(line) = self.ready.pop_front() {
                self.produced += 1;
                return Some(line);
            }
            self.step();
        }
    }

    fn push(&mut self, at: Timestamp, action: Action) {
        self.seq += 1;
        self.schedule
            .push(Reverse((at.timestamp_micros(), self.seq, action)));
    }

    /// Patients already in hospital when the simulation starts, admitted at the start.
    fn initial_census(&mut self) {
        let mut k = 0;
        for i in 0..self.wards.len() {
            let (cap, mean) = (
                self.wards[i].capacity,
                self.wards[i].profile().mean_stay_hours,
            );
            let n = (f64::from(cap) * TARGET_OCCUPANCY * self.rng.normal(1.0, 0.08))
                .round()
                .max(0.0) as u32;
            for _ in 0..n {
                k += 1;
                let offset = Duration::seconds(k);
                let elapsed = Duration::minutes((self.rng.f64() * mean * 60.0) as i64);
                self.admit(
                    i,
                    self.config.start + offset,
                    Some(self.config.start - elapsed),
                    None,
                );
            }
        }
    }

    /// Arrivals per hour at this simulated time.
    fn arrival_rate(&self) -> f64 {
        let mut rate = self.base_rate;
        if matches!(self.now.month(), 12 | 1 | 2) {
            rate *= 3.0;
        }
        let weekend_evening = matches!(
            self.now.weekday(),
            chrono::Weekday::Fri | chrono::Weekday::Sat | chrono::Weekday::Sun
        ) && self.now.hour() >= 18;
        if weekend_evening {
            rate *= 3.0;
        }
        if let Some(surge) = self.config.surge.filter(|s| s.covers(&self.now)) {
            rate *= surge.factor.max(0.0);
        }
        rate
    }

    /// Plays the next scheduled action (which may emit events).
    fn step(&mut self) {
        let Some(Reverse((at, _, action))) = self.schedule.pop() else {
            // Never empty (arrivals reschedule themselves); restart arrivals to be safe.
            self.push(self.now, Action::Arrival);
            return;
        };
        if let Some(t) = chrono::DateTime::from_timestamp_micros(at) {
            self.now = t.fixed_offset();
        }
        match action {
            Action::Arrival => {
                let minutes = self.rng.exponential(60.0 / self.arrival_rate());
                let next = self.now + Duration::milliseconds((minutes * 60_000.0) as i64);
                self.push(next, Action::Arrival);
                let i = self.rng.weighted(&self.weights);
                if let Some(i) = self.divert_when_full(i) {
                    self.admit(i, self.now, None, None);
                }
            }
            Action::Vitals(p, g) => self.vitals(p, g),
            Action::Transfer(p, g) => self.transfer(p, g),
            Action::Discharge(p, g) => self.discharge(p, g),
        }
    }

    /// Share of beds in use in department entry `i`.
    fn load(&self, i: usize) -> f64 {
        let Some(w) = self.wards.get(i) else {
            return 0.0;
        };
        let used = w.beds.iter().filter(|u| **u).count();
        used as f64 / f64::from(w.capacity.max(1))
    }

    /// What a full department does with an arrival: usually the ambulance or the referral goes
    /// to the least loaded hospital with that department; if every one is nearly full, half of
    /// the arrivals (elective and transferable ones) do not come today, the rest overflow.
    fn divert_when_full(&mut self, i: usize) -> Option<usize> {
        if self.load(i) < 1.0 || !self.rng.chance(0.8) {
            return Some(i);
        }
        let name = self.wards.get(i)?.name.clone();
        let best = (0..self.wards.len())
            .filter(|&j| self.wards[j].name == name)
            .min_by(|&a, &b| self.load(a).total_cmp(&self.load(b)))?;
        if self.load(best) < 0.95 {
            Some(best)
        } else if self.rng.chance(0.5) {
            None
        } else {
            Some(i)
        }
    }

    fn new_event(&mut self, kind: &str, p: &Patient) -> Event {
        self.next_event += 1;
        Event {
            event_id: format!("EV-{}-{}", self.config.seed, self.next_event),
            event_type: Some(kind.to_owned()),
            event_timestamp: self.now,
            patient_id: Some(p.id.clone()),
            hospital_id: self.wards.get(p.ward).map(|w| i64::from(w.hospital)),
            department: self.wards.get(p.ward).map(|w| w.name.clone()),
            bed_id: self
                .wards
                .get(p.ward)
                .map(|w| format!("H{}-{}-{}", w.hospital, w.code, p.bed)),
            gender: Some(p.gender.to_owned()),
            age: Some(p.age),
            ..Event::default()
        }
    }

    fn take_bed(&mut self, ward: usize) -> u32 {
        let Some(beds) = self.wards.get_mut(ward).map(|w| &mut w.beds) else {
            return 0;
        };
        match beds.iter().position(|used| !used) {
            Some(i) => {
                beds[i] = true;
                i as u32 + 1
            }
            None => {
                // Overflow: corridor and escalation beds, numbered past capacity.
                beds.push(true);
                beds.len() as u32
            }
        }
    }

    fn free_bed(&mut self, ward: usize, bed: u32) {
        if let Some(slot) = self
            .wards
            .get_mut(ward)
            .and_then(|w| w.beds.get_mut((bed as usize).wrapping_sub(1)))
        {
            *slot = false;
        }
    }

    fn stay_length(&mut self, ward: usize) -> Duration {
        let mean = self
            .wards
            .get(ward)
            .map_or(72.0, |w| w.profile().mean_stay_hours);
        // Log-normal around the mean (sigma 0.6): most stays short, some long.
        let hours = mean * (self.rng.normal(0.0, 0.6) - 0.18).exp();
        Duration::minutes((hours * 60.0).max(30.0) as i64)
    }

    /// When a stay that ends at `end` is discharged: then, or with `daytime_discharges` at a
    /// random time of the day round (09:00-17:00) it falls in or the next one.
    fn discharge_round(&mut self, end: Timestamp) -> Timestamp {
        if !self.config.daytime_discharges {
            return end;
        }
        let hour = end.hour();
        if (9..17).contains(&hour) {
            return end;
        }
        let day = if hour >= 17 {
            end + Duration::days(1)
        } else {
            end
        };
        let Some(nine) = day.date_naive().and_hms_opt(9, 0, 0) else {
            return end;
        };
        let nine = nine.and_utc().fixed_offset();
        nine + Duration::minutes(self.rng.range(0, 8 * 60))
    }

    /// Admits a new (or returning) patient into department entry `i`.
    fn admit(
        &mut self,
        i: usize,
        at: Timestamp,
        admitted_at: Option<Timestamp>,
        returning: Option<Former>,
    ) {
        let Some(ward) = self.wards.get(i) else {
            return;
        };
        let (kind, profile) = (ward.kind.clone(), ward.profile());
        let returning = returning.or_else(|| self.maybe_readmission(at));
        let (id, gender, age) = match returning {
            Some(f) => (f.id, f.gender, f.age),
            None => {
                self.next_patient += 1;
                let gender = match kind.as_str() {
                    "maternity" => "F",
                    _ => ["M", "F", "O", "U"][self.rng.weighted(&[48.0, 49.0, 2.0, 1.0])],
                };
                let age = match kind.as_str() {
                    "paediatrics" | "pediatrics" => self.rng.range(0, 17),
                    "maternity" => self.rng.range(16, 45),
                    _ => self.rng.normal(62.0, 18.0).round().clamp(18.0, 101.0) as i64,
                };
                (format!("P{:07}", self.next_patient), gender, age)
            }
        };
        let dx = profile.diagnoses;
        let dx_weights: Vec<f64> = (0..dx.len()).map(|k| (dx.len() - k) as f64).collect();
        let priority = match kind.as_str() {
            "emergency" => "Emergency",
            "maternity" => {
                ["Emergency", "Urgent", "Elective"][self.rng.weighted(&[20.0, 60.0, 20.0])]
            }
            _ => ["Emergency", "Urgent", "Elective"][self.rng.weighted(&[45.0, 30.0, 25.0])],
        };
        let bed = self.take_bed(i);
        let sbp = self.rng.normal(125.0, 14.0);
        let patient = Patient {
            id,
            ward: i,
            bed,
            gender,
            age,
            admitted_at: admitted_at.unwrap_or(at),
            priority,
            diagnosis: dx[self.rng.weighted(&dx_weights)],
            insurance: INSURANCE[self.rng.weighted(&INSURANCE.map(|(_, w)| w))].0,
            baseline: [
                self.rng.normal(78.0, 9.0),
                sbp,
                sbp * 0.64,
                self.rng.normal(36.8, 0.25),
                self.rng.normal(97.5, 1.0).min(99.5),
                self.rng.normal(16.0, 1.5),
            ],
            oxygen: self.rng.chance(0.05),
            episode: None,
            generation: 0,
        };
        let now = self.now;
        self.now = at;
        let mut e = self.new_event("ADMISSION", &patient);
        self.now = now;
        e.admission_time = Some(patient.admitted_at);
        e.admission_priority = Some(priority.to_owned());
        e.diagnosis_code = Some(patient.diagnosis.to_owned());
        e.insurance_type = Some(patient.insurance.to_owned());
        self.next_stay += 1;
        let key = self.next_stay;
        let stay_end = patient.admitted_at + self.stay_length(i);
        let end = if stay_end > at {
            stay_end
        } else {
            at + Duration::minutes(self.rng.range(30, 240))
        };
        let moves_on =
            !self.wards[i].transfers_to.is_empty() && self.rng.chance(profile.transfer_share);
        if moves_on {
            self.push(end, Action::Transfer(key, 0));
        } else {
            let end = self.discharge_round(end);
            self.push(end, Action::Discharge(key, 0));
        }
        let first_round = at + Duration::minutes(self.rng.range(5, 60));
        self.push(first_round, Action::Vitals(key, 0));
        self.patients.insert(key, patient);
        self.emit(e);
    }

    fn maybe_readmission(&mut self, at: Timestamp) -> Option<Former> {
        while self
            .former
            .front()
            .is_some_and(|f| at - f.discharged_at > Duration::days(30))
        {
            self.former.pop_front();
        }
        if self.former.is_empty() || !self.rng.chance(0.04) {
            return None;
        }
        let i = (self.rng.next_u64() % self.former.len() as u64) as usize;
        self.former.remove(i)
    }

    /// The patient of a scheduled action, unless they moved or left since it was scheduled.
    fn current(&self, key: u64, generation: u32) -> Option<Patient> {
        self.patients
            .get(&key)
            .filter(|p| p.generation == generation)
            .cloned()
    }

    fn vitals(&mut self, key: u64, generation: u32) {
        let Some(mut p) = self.current(key, generation) else {
            return;
        };
        if p.episode.is_none() && self.rng.chance(0.0006) {
            p.episode = Some(Episode {
                step: 0,
                length: self.rng.range(4, 10) as u32,
                recovers: self.rng.chance(0.7),
                cold: self.rng.chance(0.2),
            });
        }
        // Severity ramps up over the first half of an episode, then falls if it recovers.
        let severity = match p.episode.as_mut() {
            Some(ep) => {
                ep.step += 1;
                let half = (ep.length / 2).max(1);
                let s = if ep.step <= half {
                    f64::from(ep.step) / f64::from(half)
                } else if ep.recovers {
                    1.0 - f64::from(ep.step - half) / f64::from(ep.length - half).max(1.0)
                } else {
                    1.0
                };
                s.clamp(0.0, 1.0)
            }
            None => 0.0,
        };
        let cold = p.episode.as_ref().is_some_and(|ep| ep.cold);
        if p.episode
            .as_ref()
            .is_some_and(|ep| ep.recovers && ep.step >= ep.length)
        {
            p.episode = None;
        }
        let b = p.baseline;
        let mut noise = |sd: f64| self.rng.normal(0.0, sd);
        let hr = b[0] + 50.0 * severity + noise(4.0);
        let sbp = b[1] - 35.0 * severity + noise(5.0);
        let dbp = b[2] - 15.0 * severity + noise(4.0);
        let temp = b[3] + if cold { -1.4 } else { 2.3 } * severity + noise(0.15);
        let spo2 = (b[4] - 9.0 * severity + noise(0.6)).min(100.0);
        let rr = b[5] + 12.0 * severity + noise(1.0);
        let confused = severity > 0.8 && self.rng.chance(0.35);
        let oxygen = p.oxygen || spo2 < 92.0;
        let round1 = |x: f64| (x * 10.0).round() / 10.0;
        let mut e = self.new_event("VITALS", &p);
        let mut v = Vitals {
            heart_rate: Some(hr.round()),
            bp_systolic: Some(sbp.round()),
            bp_diastolic: Some(dbp.round()),
            temperature_c: Some(round1(temp)),
            oxygen_saturation: Some(spo2.round()),
            respiratory_rate: Some(rr.round()),
            consciousness: Some(if confused { "C" } else { "A" }.to_owned()),
            supplemental_o2: Some(oxygen),
            ..Vitals::default()
        };
        if self.rng.chance(0.05) {
            // Some monitors report Fahrenheit.
            v.temperature_f = v.temperature_c.take().map(|c| round1(c * 9.0 / 5.0 + 32.0));
        }
        e.vitals = Some(v);
        let every = if self.wards.get(p.ward).is_some_and(|w| w.kind == "icu") {
            self.rng.range(20, 40)
        } else {
            self.rng.range(45, 120)
        };
        self.push(
            self.now + Duration::minutes(every),
            Action::Vitals(key, generation),
        );
        self.patients.insert(key, p);
        self.emit(e);
    }

    fn transfer(&mut self, key: u64, generation: u32) {
        let Some(mut p) = self.current(key, generation) else {
            return;
        };
        let targets = self
            .wards
            .get(p.ward)
            .map(|w| w.transfers_to.clone())
            .unwrap_or_default();
        let Some(&to) = self.rng.pick(&targets) else {
            return self.discharge(key, generation);
        };
        // A full ward takes no transfers: the patient boards where they are and tries later.
        if self.load(to) >= 1.0 && self.rng.chance(0.85) {
            let retry = self.now + Duration::minutes(self.rng.range(120, 480));
            self.push(retry, Action::Transfer(key, generation));
            return;
        }
        self.free_bed(p.ward, p.bed);
        p.ward = to;
        p.bed = self.take_bed(to);
        p.generation += 1;
        let mut e = self.new_event("TRANSFER", &p);
        e.admission_time = Some(p.admitted_at);
        e.admission_priority = Some(p.priority.to_owned());
        e.diagnosis_code = Some(p.diagnosis.to_owned());
        let end = self.now + self.stay_length(to);
        let end = self.discharge_round(end);
        self.push(end, Action::Discharge(key, p.generation));
        let first_round = self.now + Duration::minutes(self.rng.range(5, 30));
        self.push(first_round, Action::Vitals(key, p.generation));
        self.patients.insert(key, p);
        self.emit(e);
    }

    fn discharge(&mut self, key: u64, generation: u32) {
        let Some(p) = self.current(key, generation) else {
            return;
        };
        self.patients.remove(&key);
        self.free_bed(p.ward, p.bed);
        let mut e = self.new_event("DISCHARGE", &p);
        e.admission_time = Some(p.admitted_at);
        e.discharge_time = Some(self.now);
        e.admission_priority = Some(p.priority.to_owned());
        e.diagnosis_code = Some(p.diagnosis.to_owned());
        self.former.push_back(Former {
            id: p.id,
            gender: p.gender,
            age: p.age,
            discharged_at: self.now,
        });
        self.emit(e);
    }

    /// Serialises an event, possibly dirty, into the output queues.
    fn emit(&mut self, mut e: Event) {
        let scenario = if self.config.dirty_rate > 0.0 && self.rng.chance(self.config.dirty_rate) {
            Scenario::choose(&mut self.rng, &e)
        } else {
            None
        };
        if let Some(s) = scenario {
            dirty::apply(s, &mut e, &mut self.rng);
        }
        let mut line = e.to_json().into_bytes();
        match scenario {
            Some(Scenario::Duplicate) => {
                let later = self.produced + self.ready.len() as u64 + self.rng.range(0, 20) as u64;
                self.held.push((later, line.clone()));
                self.ready.push_back(line);
            }
            Some(Scenario::OutOfOrder) => {
                let later =
                    self.produced + self.ready.len() as u64 + self.rng.range(10, 500) as u64;
                self.held.push((later, line));
            }
            Some(Scenario::Malformed) => {
                line.truncate(line.len() / 2);
                self.ready.push_back(line);
            }
            _ => self.ready.push_back(line),
        }
    }

    /// Patients admitted now (for tests and status).
    pub fn admitted(&self) -> usize {
        self.patients.len()
    }
}

impl Iterator for Simulator {
    type Item = Vec<u8>;
    fn next(&mut self) -> Option<Vec<u8>> {
        self.next_line()
    }
}

/// Real-time pacing for `--rate`.
#[derive(Debug)]
pub struct Pacer {
    rate: Option<f64>,
    started: Instant,
}

impl Pacer {
    pub fn new(rate: Option<f64>) -> Self {
        Pacer {
            rate: rate.filter(|r| *r > 0.0 && r.is_finite()),
            started: Instant::now(),
        }
    }

    /// Sleeps until `emitted` lines are due; sleeps only when at least a millisecond ahead, so
    /// that high rates are kept without a sleep per line.
    pub fn pace(&mut self, emitted: u64) {
        let Some(rate) = self.rate else { return };
        let due = StdDuration::from_secs_f64(emitted as f64 / rate);
        let elapsed = self.started.elapsed();
        if due > elapsed + StdDuration::from_millis(1) {
            std::thread::sleep(due - elapsed);
        }
    }
}

/// `cds simulate`: writes the lines with newlines to `out`, paced; returns how many.
pub fn write_jsonl(
    config: SimulatorConfig,
    network: &Network,
    out: impl Write,
) -> std::io::Result<u64> {
    let mut pacer = Pacer::new(config.rate);
    let paced = config.rate.is_some();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
    let mut sim = Simulator::new(config, network);
    while let Some(line) = sim.next_line() {
        out.write_all(&line)?;
        out.write_all(b"\n")?;
        if paced {
            // A live consumer should see each line when it is due.
            out.flush()?;
            pacer.pace(sim.produced());
        }
    }
    out.flush()?;
    Ok(sim.produced())
}

#[cfg(test)]
mod tests;
