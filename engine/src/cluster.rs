//! Who owns what across the timely workers, in one process or a cluster: a patient's facts go
//! to one worker, and each hospital's KPI changes to one worker, whose process writes that
//! hospital's documents. One rule each, used alike by the facts, the dataflow's exchange and
//! the documents, so that they cannot drift apart.
//!
//! Before the dataflow, a cluster splits the input by patient: what is decided per patient
//! there (duplicates, the latest reading, what a cancel takes back, the rules' context) needs
//! all of a patient's events in one process. Producers that key by patient put them in one
//! partition, and each process can read only its own partitions ([`partition_process`]);
//! producers without keys spread them over every partition, so every process reads every
//! partition and cleans only its own patients' records ([`PatientSplit`]).

use crate::model::HospitalId;

/// The worker, of `workers`, whose batch receives a patient's facts.
pub(crate) fn patient_worker(patient: u64, workers: usize) -> usize {
    (patient % workers.max(1) as u64) as usize
}

/// The key the dataflow exchanges a hospital's KPI changes by: timely sends key `k` to worker
/// `k mod workers`, which is [`hospital_worker`].
pub(crate) fn hospital_key(hospital: HospitalId) -> u64 {
    u64::from(hospital)
}

/// The worker, of `workers` in the whole cluster, that holds a hospital's documents.
pub(crate) fn hospital_worker(hospital: HospitalId, workers: usize) -> usize {
    (hospital_key(hospital) % workers.max(1) as u64) as usize
}

/// The process, of `processes` with `workers` workers each, that reads partition `partition`
/// when the producers key by patient: partition `p` belongs to the global worker
/// `p mod (processes × workers)`, which runs in process `worker / workers`. When every process
/// reads every partition, this process keeps what belongs to no patient (dead letters, the
/// Bronze payload), so that it is kept once.
pub(crate) fn partition_process(partition: i32, processes: usize, workers: usize) -> usize {
    let workers = workers.max(1);
    let total = processes.max(1) * workers;
    usize::try_from(partition).unwrap_or(0) % total / workers
}

/// The process, of `processes`, that cleans a patient's records, from the patient's key (the
/// pseudonym key every process computes alike from the same `CDS_PSEUDONYM_KEY`). The high
/// half of the key, so that the process does not decide the worker and the rules thread,
/// which take the key's remainder. From the key and not the raw identifier: the state a
/// checkpoint keeps is by key, so a checkpoint can be split among another number of
/// processes ([`crate::checkpoint`], rescaling).
pub(crate) fn patient_process(patient: u64, processes: usize) -> usize {
    ((patient >> 32) % processes.max(1) as u64) as usize
}

/// One process's share of a cluster whose every process reads every partition: the records of
/// its own patients, and what belongs to no patient from the partitions it would read alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PatientSplit {
    pub process: usize,
    pub processes: usize,
    pub workers: usize,
}

impl PatientSplit {
    /// Whether this process cleans a record of `patient` (its key; `None`: the record names no
    /// patient), read from `partition`: the patient is this process's, or it has none (Silver
    /// quarantines it) and the partition is.
    pub fn cleans(&self, patient: Option<u64>, partition: i32) -> bool {
        match patient {
            Some(key) => self.owns(key),
            None => self.keeps(partition),
        }
    }

    /// Whether this process owns the patient with this key.
    pub fn owns(&self, patient: u64) -> bool {
        patient_process(patient, self.processes) == self.process
    }

    /// Whether this process keeps the dead letters and the Bronze payloads of `partition`.
    pub fn keeps(&self, partition: i32) -> bool {
        partition_process(partition, self.processes, self.workers) == self.process
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_patient_and_every_partition_has_one_process() {
        // 2 processes × 2 workers over 10 partitions: worker p mod 4, process worker / 2.
        let of = |p| partition_process(p, 2, 2);
        let first: Vec<i32> = (0..10).filter(|p| of(*p) == 0).collect();
        assert_eq!(first, [0, 1, 4, 5, 8, 9]);
        assert_eq!(
            partition_process(7, 1, 4),
            0,
            "one process reads everything"
        );
        // Fixed values: a patient's process never changes between builds.
        assert_eq!(patient_process(0x0000_0007_0000_0001, 1000), 7);
        assert_eq!(patient_process(u64::MAX, 2), 1);
        let split = |process| PatientSplit {
            process,
            processes: 3,
            workers: 2,
        };
        let pseudonyms = crate::model::Pseudonymiser::new(b"test-key");
        for n in 0..300 {
            let key = pseudonyms.key(&format!("MRN{n}"));
            let cleaning = (0..3).filter(|i| split(*i).cleans(Some(key), 5)).count();
            assert_eq!(cleaning, 1, "one process cleans each patient");
        }
        let shares: Vec<usize> = (0..3)
            .map(|i| {
                (0..300)
                    .filter(|n| split(i).cleans(Some(pseudonyms.key(&format!("MRN{n}"))), 0))
                    .count()
            })
            .collect();
        assert!(shares.iter().all(|n| *n > 70), "spread evenly: {shares:?}");
        // The process does not decide the worker: a process's patients reach every worker.
        let own: Vec<u64> = (0..300)
            .map(|n| pseudonyms.key(&format!("MRN{n}")))
            .filter(|k| split(0).owns(*k))
            .collect();
        assert!((0..4).all(|w| own.iter().any(|k| patient_worker(*k, 4) == w)));
        // No patient: the process of the partition, which also keeps its dead letters.
        for p in 0..12 {
            let owners: Vec<usize> = (0..3).filter(|i| split(*i).cleans(None, p)).collect();
            assert_eq!(owners, [partition_process(p, 3, 2)]);
            assert!(split(owners[0]).keeps(p));
        }
    }

    #[test]
    fn patients_and_hospitals_are_spread_by_remainder() {
        assert_eq!(patient_worker(7, 3), 1);
        assert_eq!(patient_worker(7, 0), 0, "no workers counts as one");
        assert_eq!(hospital_worker(5, 4), 1);
        // Timely's exchange: a mask for a power of two, a remainder otherwise; the same worker.
        for hospital in 0..64u32 {
            assert_eq!(
                hospital_worker(hospital, 8),
                (hospital_key(hospital) & 7) as usize
            );
        }
    }
}
