//! Delayed evokes ("72 h after ADMISSION while still admitted"), driven by an event-time
//! watermark rather than the wall clock, so a replay fires exactly the same alerts.
//! Serializable so the engine checkpoints it with the rest of its state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One scheduled evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Due {
    pub mlmname: String,
    pub patient_key: String,
    /// The ADMISSION event the delay counts from; becomes the alert's triggering event id.
    pub admission_event_id: String,
    /// Epoch seconds (event time) when the rule is due.
    pub due_time: i64,
}

/// Pending delayed evaluations, ordered by due time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DelayedEvokes {
    /// `"{due:020}\u{1f}{patient}\u{1f}{mlm}"` -> entry; the zero-padded due time makes the
    /// string order the time order (and JSON keys stay strings).
    queue: BTreeMap<String, Due>,
    /// patient key -> queue keys, for `cancel`.
    by_patient: BTreeMap<String, Vec<String>>,
}

fn queue_key(due: i64, patient: &str, mlm: &str) -> String {
    // Offset so negative (pre-1970) times still sort; realistic times are positive anyway.
    let shifted = (i128::from(due) + i128::from(i64::MAX) + 1) as u128;
    format!("{shifted:020}\u{1f}{patient}\u{1f}{mlm}")
}

impl DelayedEvokes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Schedules `mlmname` for the patient at `due_time` (epoch seconds). A new admission of
    /// the same patient replaces an earlier schedule of the same rule.
    pub fn schedule(
        &mut self,
        mlmname: &str,
        patient_key: &str,
        admission_event_id: &str,
        due_time: i64,
    ) {
        self.cancel_rule(patient_key, mlmname);
        let k = queue_key(due_time, patient_key, mlmname);
        self.queue.insert(
            k.clone(),
            Due {
                mlmname: mlmname.to_string(),
                patient_key: patient_key.to_string(),
                admission_event_id: admission_event_id.to_string(),
                due_time,
            },
        );
        self.by_patient
            .entry(patient_key.to_string())
            .or_default()
            .push(k);
    }

    fn cancel_rule(&mut self, patient_key: &str, mlmname: &str) {
        if let Some(keys) = self.by_patient.get_mut(patient_key) {
            let queue = &mut self.queue;
            keys.retain(|k| {
                let same = queue.get(k).is_some_and(|d| d.mlmname == mlmname);
                if same {
                    queue.remove(k);
                }
                !same
            });
            if keys.is_empty() {
                self.by_patient.remove(patient_key);
            }
        }
    }

    /// Forgets everything scheduled for the patient (call on DISCHARGE).
    pub fn cancel(&mut self, patient_key: &str) {
        if let Some(keys) = self.by_patient.remove(patient_key) {
            for k in keys {
                self.queue.remove(&k);
            }
        }
    }

    /// Removes and returns every entry due at or before `watermark` (epoch seconds), oldest first.
    pub fn due(&mut self, watermark: i64) -> Vec<Due> {
        // Called whenever the watermark moves (about every event): most of the time nothing is
        // due, which the first (earliest) entry tells without building a key or splitting.
        if self
            .queue
            .first_key_value()
            .is_none_or(|(_, d)| d.due_time > watermark)
        {
            return Vec::new();
        }
        let bound = queue_key(watermark.saturating_add(1), "", "");
        let rest = self.queue.split_off(&bound);
        let due_now = std::mem::replace(&mut self.queue, rest);
        let out: Vec<Due> = due_now.into_values().collect();
        for d in &out {
            if let Some(keys) = self.by_patient.get_mut(&d.patient_key) {
                let queue = &self.queue;
                keys.retain(|k| queue.contains_key(k));
                if keys.is_empty() {
                    self.by_patient.remove(&d.patient_key);
                }
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}
