//! The hospital's canonical vocabulary: genders, priorities, age bands. (Departments are the
//! hospital's own, from configuration: [`super::Network`].)
//!
//! Each is a small `Copy` enum with a `u8` index, so that the dataflow keys on integers and the
//! strings stay at the edges (parse in Silver, names in documents).

use serde::{Deserialize, Serialize};

/// Administrative gender of the event model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Gender {
    M,
    F,
    O,
    U,
}

impl Gender {
    pub const ALL: [Gender; 4] = [Self::M, Self::F, Self::O, Self::U];

    /// Anything that is not `M`, `F` or `O` (including a missing value) counts as unknown.
    pub fn parse(s: Option<&str>) -> Self {
        match s.map(str::trim) {
            Some("M") | Some("m") => Self::M,
            Some("F") | Some("f") => Self::F,
            Some("O") | Some("o") => Self::O,
            _ => Self::U,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::M => "M",
            Self::F => "F",
            Self::O => "O",
            Self::U => "U",
        }
    }

    pub fn index(self) -> u8 {
        self as u8
    }
}

/// Admission priority of the event model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Priority {
    Emergency,
    Urgent,
    Elective,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Self::Emergency, Self::Urgent, Self::Elective];

    pub fn name(self) -> &'static str {
        match self {
            Self::Emergency => "Emergency",
            Self::Urgent => "Urgent",
            Self::Elective => "Elective",
        }
    }

    /// Case-insensitive; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
    }
}

/// The age bands of the occupancy KPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AgeBand {
    Child,
    YoungAdult,
    Adult,
    Senior,
    Elderly,
    Unknown,
}

impl AgeBand {
    pub const ALL: [AgeBand; 6] = [
        Self::Child,
        Self::YoungAdult,
        Self::Adult,
        Self::Senior,
        Self::Elderly,
        Self::Unknown,
    ];

    /// Band of an age in years; `None` (or an age Silver nulled) is `unknown`.
    pub fn of(age: Option<i64>) -> Self {
        match age {
            Some(a) if (0..=17).contains(&a) => Self::Child,
            Some(a) if (18..=39).contains(&a) => Self::YoungAdult,
            Some(a) if (40..=64).contains(&a) => Self::Adult,
            Some(a) if (65..=79).contains(&a) => Self::Senior,
            Some(a) if a >= 80 => Self::Elderly,
            _ => Self::Unknown,
        }
    }

    /// The label used in documents.
    pub fn label(self) -> &'static str {
        match self {
            Self::Child => "0-17",
            Self::YoungAdult => "18-39",
            Self::Adult => "40-64",
            Self::Senior => "65-79",
            Self::Elderly => "80+",
            Self::Unknown => "unknown",
        }
    }

    pub fn index(self) -> u8 {
        self as u8
    }
}

/// Three-letter weekday labels used in admissions document ids (`admissions:3:Emergency:Mon`).
pub const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_band_boundaries() {
        let cases = [
            (Some(0), "0-17"),
            (Some(17), "0-17"),
            (Some(18), "18-39"),
            (Some(39), "18-39"),
            (Some(40), "40-64"),
            (Some(64), "40-64"),
            (Some(65), "65-79"),
            (Some(79), "65-79"),
            (Some(80), "80+"),
            (Some(120), "80+"),
            (None, "unknown"),
            (Some(-1), "unknown"),
        ];
        for (age, label) in cases {
            assert_eq!(AgeBand::of(age).label(), label, "age {age:?}");
        }
    }
}
