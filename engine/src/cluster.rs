//! Who owns what across the timely workers, in one process or a cluster: a patient's facts go
//! to one worker, and each hospital's KPI changes to one worker, whose process writes that
//! hospital's documents. One rule each, used alike by the facts, the dataflow's exchange and
//! the documents, so that they cannot drift apart.

/// The worker, of `workers`, whose batch receives a patient's facts.
pub(crate) fn patient_worker(patient: u64, workers: usize) -> usize {
    (patient % workers.max(1) as u64) as usize
}

/// The key the dataflow exchanges a hospital's KPI changes by: timely sends key `k` to worker
/// `k mod workers`, which is [`hospital_worker`].
pub(crate) fn hospital_key(hospital: u16) -> u64 {
    u64::from(hospital)
}

/// The worker, of `workers` in the whole cluster, that holds a hospital's documents.
pub(crate) fn hospital_worker(hospital: u16, workers: usize) -> usize {
    (hospital_key(hospital) % workers.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patients_and_hospitals_are_spread_by_remainder() {
        assert_eq!(patient_worker(7, 3), 1);
        assert_eq!(patient_worker(7, 0), 0, "no workers counts as one");
        assert_eq!(hospital_worker(5, 4), 1);
        // Timely's exchange: a mask for a power of two, a remainder otherwise; the same worker.
        for hospital in 0..64u16 {
            assert_eq!(
                hospital_worker(hospital, 8),
                (hospital_key(hospital) & 7) as usize
            );
        }
    }
}
