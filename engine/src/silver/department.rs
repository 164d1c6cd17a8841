//! Mapping free-text department names onto the canonical seven.

use crate::model::Department;

/// How a department string maps onto the canonical vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepartmentMatch {
    /// Exactly a canonical name.
    Canonical(Department),
    /// An alias, a different case, or a typo within edit distance 2: mapped, and flagged.
    Repaired(Department),
    /// Nothing close enough.
    Unknown,
}

/// The largest edit distance still read as a typo of a canonical name.
const MAX_TYPO_DISTANCE: usize = 2;

/// Maps a department string (case-insensitive for aliases and typos).
pub fn match_department(raw: &str) -> DepartmentMatch {
    if let Some(d) = Department::from_canonical(raw) {
        return DepartmentMatch::Canonical(d);
    }
    let upper = raw.trim().to_ascii_uppercase();
    if upper.is_empty() {
        return DepartmentMatch::Unknown;
    }
    let mut best: Option<(usize, Department)> = None;
    for d in Department::ALL {
        if d.aliases().contains(&upper.as_str()) {
            return DepartmentMatch::Repaired(d);
        }
        let distance = edit_distance(&upper, &d.name().to_ascii_uppercase());
        if distance <= MAX_TYPO_DISTANCE && best.is_none_or(|(b, _)| distance < b) {
            best = Some((distance, d));
        }
    }
    match best {
        Some((_, d)) => DepartmentMatch::Repaired(d),
        None => DepartmentMatch::Unknown,
    }
}

/// Levenshtein distance over bytes (department names are ASCII; anything else is far anyway).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes().to_vec(), b.as_bytes().to_vec());
    strsim::generic_levenshtein(&a, &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_alias_typo_unknown() {
        use DepartmentMatch::*;
        assert_eq!(match_department("ICU"), Canonical(Department::Icu));
        assert_eq!(
            match_department("Emergancy"),
            Repaired(Department::Emergency)
        );
        assert_eq!(
            match_department("Cardiolgy"),
            Repaired(Department::Cardiology)
        );
        assert_eq!(match_department("PEDS"), Repaired(Department::Pediatrics));
        assert_eq!(match_department("surgery"), Repaired(Department::Surgery));
        assert_eq!(match_department(" ICU "), Repaired(Department::Icu));
        // Distance exactly 2 is still a typo; 3 is not.
        assert_eq!(match_department("Surgexx"), Repaired(Department::Surgery));
        assert_eq!(match_department("Surxxxx"), Unknown);
        assert_eq!(match_department("Pharmacy"), Unknown);
        assert_eq!(match_department(""), Unknown);
    }

    #[test]
    fn levenshtein() {
        assert_eq!(edit_distance("KITTEN", "SITTING"), 3);
        assert_eq!(edit_distance("", "ABC"), 3);
        assert_eq!(edit_distance("ICU", "ICU"), 0);
    }
}
