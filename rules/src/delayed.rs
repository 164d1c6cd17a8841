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

    /// Keeps only the entries `keep` accepts: when the engine splits the rules over threads,
    /// each thread keeps what it will fire.
    pub fn retain(&mut self, mut keep: impl FnMut(&Due) -> bool) {
        self.queue.retain(|_, d| keep(d));
        let queue = &self.queue;
        self.by_patient.retain(|_, keys| {
            keys.retain(|k| queue.contains_key(k));
            !keys.is_empty()
        });
    }

    /// Adds another thread's entries (for a checkpoint of the whole stage).
    pub fn merge(&mut self, other: &DelayedEvokes) {
        for d in other.queue.values() {
            self.schedule(
                &d.mlmname,
                &d.patient_key,
                &d.admission_event_id,
                d.due_time,
            );
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_by_patient_and_merged_back_fires_the_same() {
        let mut whole = DelayedEvokes::new();
        whole.schedule("long_stay", "a1", "e1", 300);
        whole.schedule("long_stay", "b2", "e2", 100);
        whole.schedule("other", "a1", "e1", 200);
        let mut first = whole.clone();
        first.retain(|d| d.patient_key == "a1");
        let mut second = whole.clone();
        second.retain(|d| d.patient_key != "a1");
        assert_eq!((first.len(), second.len()), (2, 1));
        first.cancel("b2"); // not this thread's: nothing happens
        first.merge(&second);
        assert_eq!(first.due(1000), whole.clone().due(1000));
        second.cancel("b2");
        assert!(second.is_empty());
    }
}
