//! Data-quality flags: a small bit set, so that a Silver record carries its flags without an
//! allocation and the counters can be updated per batch.

use std::fmt;

use serde::ser::{SerializeSeq, Serializer};
use serde::Serialize;

/// One data-quality finding of docs/design.md's table, in the order the rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DqFlag {
    DuplicateEvent,
    FutureAdmission,
    MissingAdmissionTime,
    InvalidAge,
    DischargeBeforeAdmit,
    DeptTypo,
    InvalidHospitalId,
    MissingPatientId,
    MissingEventType,
    MissingDepartment,
    VitalsOutOfRange,
}

impl DqFlag {
    /// Every flag, in rule order.
    pub const ALL: [DqFlag; 11] = [
        Self::DuplicateEvent,
        Self::FutureAdmission,
        Self::MissingAdmissionTime,
        Self::InvalidAge,
        Self::DischargeBeforeAdmit,
        Self::DeptTypo,
        Self::InvalidHospitalId,
        Self::MissingPatientId,
        Self::MissingEventType,
        Self::MissingDepartment,
        Self::VitalsOutOfRange,
    ];

    /// The name used in `dq_flags` and in metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::DuplicateEvent => "DUPLICATE_EVENT",
            Self::FutureAdmission => "FUTURE_ADMISSION",
            Self::MissingAdmissionTime => "MISSING_ADMISSION_TIME",
            Self::InvalidAge => "INVALID_AGE",
            Self::DischargeBeforeAdmit => "DISCHARGE_BEFORE_ADMIT",
            Self::DeptTypo => "DEPT_TYPO",
            Self::InvalidHospitalId => "INVALID_HOSPITAL_ID",
            Self::MissingPatientId => "MISSING_PATIENT_ID",
            Self::MissingEventType => "MISSING_EVENT_TYPE",
            Self::MissingDepartment => "MISSING_DEPARTMENT",
            Self::VitalsOutOfRange => "VITALS_OUT_OF_RANGE",
        }
    }

    /// Flags that keep a record out of Gold (it stays in Silver, flagged).
    pub fn quarantines(self) -> bool {
        matches!(
            self,
            Self::InvalidHospitalId
                | Self::MissingPatientId
                | Self::MissingEventType
                | Self::MissingDepartment
        )
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for DqFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The set of flags of one record; empty when clean.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct DqFlags(u16);

impl DqFlags {
    pub fn insert(&mut self, flag: DqFlag) {
        self.0 |= flag.bit();
    }

    pub fn contains(self, flag: DqFlag) -> bool {
        self.0 & flag.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The set as bits (flag `i` of [`DqFlag::ALL`] is bit `i`), as a checkpoint keeps it.
    pub fn bits(self) -> u16 {
        self.0
    }

    /// The set that [`DqFlags::bits`] gave.
    pub fn from_bits(bits: u16) -> Self {
        DqFlags(bits)
    }

    /// True when any flag quarantines the record.
    pub fn quarantined(self) -> bool {
        self.iter().any(DqFlag::quarantines)
    }

    /// The flags set, in rule order.
    pub fn iter(self) -> impl Iterator<Item = DqFlag> {
        DqFlag::ALL.into_iter().filter(move |f| self.contains(*f))
    }
}

impl Serialize for DqFlags {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for f in self.iter() {
            seq.serialize_element(f.name())?;
        }
        seq.end()
    }
}
