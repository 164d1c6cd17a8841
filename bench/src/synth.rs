//! Synthetic event streams with properties the simulator does not promise: a chosen number of
//! patients admitted at once (memory), and strictly increasing event times, one second apart
//! (latency: a KPI document's `as_of` watermark then tells exactly which events it includes),
//! and deteriorating patients whose readings the NEWS2 rule must alert on (alert latency).

use std::fmt::Write as _;

use cds_engine::model::{format_time, HospitalId, Network, Timestamp};
use chrono::Duration;

/// Departments of the network, in configuration order, as (hospital_id, department name).
/// The names live as long as the bench (a few dozen short strings), so that the generators
/// that hold them stay `Copy`-cheap to index.
pub fn places(network: &Network) -> Vec<(HospitalId, &'static str)> {
    network
        .departments()
        .map(|(h, d)| (h, &*Box::leak(d.name.clone().into_boxed_str())))
        .collect()
}

/// Event time of event number `seq` of a stream that starts at `start`.
pub fn event_time(start: Timestamp, seq: u64) -> Timestamp {
    start + Duration::seconds(seq as i64 + 1)
}

/// An admission of patient `patient` into `place`.
pub fn admission(
    out: &mut String,
    seq: u64,
    at: Timestamp,
    patient: u64,
    place: (HospitalId, &str),
) {
    let t = format_time(&at);
    let _ = write!(
        out,
        r#"{{"event_id":"B-{seq}","event_type":"ADMISSION","event_timestamp":"{t}","patient_id":"BP{patient}","hospital_id":{},"department":"{}","gender":"{}","age":{},"admission_time":"{t}","admission_priority":"Urgent","diagnosis_code":"J18.{}","insurance_type":"Public"}}"#,
        place.0,
        place.1,
        ["M", "F"][(patient % 2) as usize],
        18 + patient % 80,
        patient % 10,
    );
}

/// A vitals reading of patient `patient` in `place`; values are a hash of `seq`, so that
/// successive readings differ whatever the stream's period (a reading equal to the one it
/// replaces changes no KPI, and no document is written for it).
pub fn vitals(out: &mut String, seq: u64, at: Timestamp, patient: u64, place: (HospitalId, &str)) {
    let t = format_time(&at);
    let h = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
    let _ = write!(
        out,
        r#"{{"event_id":"B-{seq}","event_type":"VITALS","event_timestamp":"{t}","patient_id":"BP{patient}","hospital_id":{},"department":"{}","vitals":{{"heart_rate":{}.0,"bp_systolic":{}.0,"bp_diastolic":{}.0,"temperature_c":36.{},"oxygen_saturation":{}.0,"respiratory_rate":{}.0,"consciousness":"A","supplemental_o2":false}}}}"#,
        place.0,
        place.1,
        60 + h % 50,
        100 + (h >> 6) % 40,
        60 + (h >> 12) % 25,
        (h >> 18) % 10,
        92 + (h >> 22) % 8,
        12 + (h >> 26) % 10,
    );
}

/// A vitals reading of a deteriorating patient: NEWS2 11 (respiration 26, SpO2 90, pulse 125,
/// systolic 95, temperature 38.5), the high band, so the NEWS2 rule fires on it unless an
/// alert for the same patient is still within its suppression window.
pub fn deteriorating_vitals(
    out: &mut String,
    seq: u64,
    at: Timestamp,
    patient: u64,
    place: (HospitalId, &str),
) {
    let t = format_time(&at);
    let _ = write!(
        out,
        r#"{{"event_id":"B-{seq}","event_type":"VITALS","event_timestamp":"{t}","patient_id":"BP{patient}","hospital_id":{},"department":"{}","vitals":{{"heart_rate":125.0,"bp_systolic":95.0,"bp_diastolic":60.0,"temperature_c":38.5,"oxygen_saturation":90.0,"respiratory_rate":26.0,"consciousness":"A","supplemental_o2":false}}}}"#,
        place.0, place.1,
    );
}

/// A transfer or discharge of patient `patient` (admitted at `admitted`) from `place`.
pub fn adt(
    out: &mut String,
    seq: u64,
    at: Timestamp,
    kind: &str,
    patient: u64,
    place: (HospitalId, &str),
    admitted: Timestamp,
) {
    let (t, a) = (format_time(&at), format_time(&admitted));
    let discharge = if kind == "DISCHARGE" {
        format!(r#","discharge_time":"{t}""#)
    } else {
        String::new()
    };
    let _ = write!(
        out,
        r#"{{"event_id":"B-{seq}","event_type":"{kind}","event_timestamp":"{t}","patient_id":"BP{patient}","hospital_id":{},"department":"{}","gender":"{}","age":{},"admission_time":"{a}"{discharge},"admission_priority":"Urgent","diagnosis_code":"J18.{}"}}"#,
        place.0,
        place.1,
        ["M", "F"][(patient % 2) as usize],
        18 + patient % 80,
        patient % 10,
    );
}

/// A steady hospital flow, one line per call: `slots` beds in rotation; each stay is an
/// admission, four vitals readings, a transfer, three readings and a discharge (ten events),
/// then the bed takes a new patient. Event times strictly increase, one second apart (or as
/// [`Flow::spaced`] sets).
#[derive(Debug)]
pub struct Flow {
    start: Timestamp,
    slots: u64,
    places: Vec<(HospitalId, &'static str)>,
    seq: u64,
    /// Every this many beds, the first reading of a stay is a deteriorating one; 0: none.
    deteriorating_every: u64,
    /// Event time between two events, microseconds.
    spacing_us: i64,
}

impl Flow {
    pub fn new(network: &Network, start: Timestamp, slots: u64) -> Self {
        Flow {
            start,
            slots: slots.max(1),
            places: places(network),
            seq: 0,
            deteriorating_every: 0,
            spacing_us: 1_000_000,
        }
    }

    /// The same flow with events `us` microseconds of event time apart: `1e6 / rate` makes the
    /// event time advance as fast as a producer at `rate` events/s sends, as a live feed's does.
    pub fn spaced(mut self, us: i64) -> Self {
        self.spacing_us = us.max(1);
        self
    }

    /// The event time of event `seq`.
    fn time(&self, seq: u64) -> Timestamp {
        self.start + Duration::microseconds((seq as i64 + 1).saturating_mul(self.spacing_us))
    }

    /// The same flow where the first reading of every `every`-th bed's stay is a deteriorating
    /// patient's (NEWS2 high band). Only the first reading after admission: a patient's later
    /// readings may fall within the rule's suppression window of that alert.
    pub fn deteriorating(mut self, every: u64) -> Self {
        self.deteriorating_every = every;
        self
    }

    /// Whether the next line is a deteriorating reading, one the NEWS2 rule must alert on.
    pub fn next_deteriorates(&self) -> bool {
        self.next_deteriorates_at(self.seq)
    }

    fn next_deteriorates_at(&self, seq: u64) -> bool {
        let slot = seq % self.slots;
        let stage = (seq / self.slots) % 10;
        stage == 1 && self.deteriorating_every > 0 && slot.is_multiple_of(self.deteriorating_every)
    }

    /// The event time of the next line.
    pub fn next_time(&self) -> Timestamp {
        self.time(self.seq)
    }

    /// Writes the next event into `out` (cleared first).
    pub fn next_line(&mut self, out: &mut String) {
        out.clear();
        let seq = self.seq;
        self.seq += 1;
        let slot = seq % self.slots;
        let stage = (seq / self.slots) % 10;
        let stay = seq / (self.slots * 10);
        let patient = stay * self.slots + slot;
        let n = self.places.len().max(1) as u64;
        let here = self.places[(patient % n) as usize];
        let there = self.places[((patient + 1) % n) as usize];
        let at = self.time(seq);
        let admitted = self.time(stay * self.slots * 10 + slot);
        if self.next_deteriorates_at(seq) {
            deteriorating_vitals(out, seq, at, patient, here);
            return;
        }
        match stage {
            0 => admission(out, seq, at, patient, here),
            5 => adt(out, seq, at, "TRANSFER", patient, there, admitted),
            9 => adt(out, seq, at, "DISCHARGE", patient, there, admitted),
            1..=4 => vitals(out, seq, at, patient, here),
            _ => vitals(out, seq, at, patient, there),
        }
    }
}
