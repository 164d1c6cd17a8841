//! The hospital network: which hospitals exist, their departments, bed capacities and staff.
//!
//! Loaded from `config/departments.csv`: a header line naming the columns `hospital_id`,
//! `hospital_name`, `department`, `bed_capacity`, `staff_count` and, optionally, `kind` (what
//! sort of department it is: `icu`, `emergency`, `ward`, …; `ward` when left out) and
//! `aliases` (other names the hospital's systems use for it, separated by `|`). Departments
//! have any name the hospital gives them; the binary carries a copy of the default file (seven
//! hospitals of seven departments) so that it runs from any directory.
//!
//! Inside the engine a department is a [`DepartmentId`], a hash of its name, so that the
//! dataflow keys on integers, every process and every restart agree on it without sharing a
//! table, and a department added while running needs no renumbering.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

/// The default network shipped in `config/departments.csv`.
pub const DEFAULT_DEPARTMENTS_CSV: &str = include_str!("../../../config/departments.csv");

/// The kind of a department whose row names none.
pub const DEFAULT_KIND: &str = "ward";

/// What a departments file of the format before `kind` and `aliases` (five columns) meant by
/// the seven names it could hold: their kind and the aliases registration systems use, so that
/// such a file keeps working as it did. Only a file without the column gets them.
const USUAL: [(&str, &str, &[&str]); 7] = [
    (
        "Emergency",
        "emergency",
        &["ED", "ER", "A&E", "AE", "EMERG", "EMR", "Emergency Room"],
    ),
    (
        "Surgery",
        "surgery",
        &["SURG", "SUR", "OR", "Theatre", "General Surgery"],
    ),
    (
        "ICU",
        "icu",
        &["ITU", "Intensive Care", "Critical Care", "MICU", "SICU"],
    ),
    (
        "Pediatrics",
        "paediatrics",
        &[
            "PEDS",
            "PAEDS",
            "PED",
            "Paediatrics",
            "Paediatric",
            "Pediatric",
        ],
    ),
    (
        "Maternity",
        "maternity",
        &["OB", "OBS", "Obstetrics", "L&D", "Labour Ward", "MAT"],
    ),
    (
        "Oncology",
        "oncology",
        &["ONC", "ONCO", "Cancer", "Haematology-Oncology"],
    ),
    (
        "Cardiology",
        "cardiology",
        &["CARDIO", "CARD", "CAR", "CCU", "Coronary Care"],
    ),
];

/// The largest edit distance still read as a typo of a configured name.
const MAX_TYPO_DISTANCE: usize = 2;

/// Why a departments file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("line {line}: {reason}")]
    Invalid { line: usize, reason: String },
    #[error("the departments file lists no department")]
    Empty,
    #[error("departments topic {url}: {reason}")]
    Topic { url: String, reason: String },
}

/// Beds and staff of one department of one hospital.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub bed_capacity: u32,
    pub staff_count: u32,
}

/// A hospital's id: any positive 32-bit number (the files' and documents' `hospital_id`).
pub type HospitalId = u32;

/// A department's key inside the engine: the 32-bit FNV-1a hash of its name in upper case.
/// Two departments of one hospital never share it (the file is refused).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct DepartmentId(pub u32);

impl DepartmentId {
    /// The id of a department name (case and surrounding blanks do not matter).
    pub fn of(name: &str) -> Self {
        let mut hash: u32 = 0x811c_9dc5;
        for c in name.trim().chars().flat_map(char::to_uppercase) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                hash ^= u32::from(b);
                hash = hash.wrapping_mul(0x0100_0193);
            }
        }
        DepartmentId(hash)
    }
}

/// One department of one hospital, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Department {
    pub id: DepartmentId,
    /// The name documents, ids (`occupancy:3:ICU`) and rules use.
    pub name: String,
    /// Lower case; [`DEFAULT_KIND`] when the file names none.
    pub kind: String,
    /// Other names for it, as written in the file.
    pub aliases: Vec<String>,
    pub capacity: Capacity,
    /// The name and aliases in upper case, for matching without allocating per record.
    upper: String,
    aliases_upper: Vec<String>,
}

impl Department {
    /// A department of these names and beds.
    pub fn new(name: &str, kind: &str, aliases: &[&str], capacity: Capacity) -> Self {
        let aliases: Vec<String> = aliases
            .iter()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        Department {
            id: DepartmentId::of(name),
            name: name.trim().to_owned(),
            kind: match kind.trim() {
                "" => DEFAULT_KIND.to_owned(),
                k => k.to_lowercase(),
            },
            aliases_upper: aliases.iter().map(|a| a.to_uppercase()).collect(),
            aliases,
            capacity,
            upper: name.trim().to_uppercase(),
        }
    }

    /// Whether `raw` is this department's name, apart from letter case.
    fn is_named(&self, raw: &str) -> bool {
        self.name == raw
            || self.name.eq_ignore_ascii_case(raw)
            || (!raw.is_ascii() && raw.to_uppercase() == self.upper)
    }
}

/// One hospital of the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hospital {
    /// 1 to 4,294,967,295 (any positive 32-bit number).
    pub id: HospitalId,
    pub name: String,
    /// In the order of the file.
    pub departments: Vec<Department>,
}

impl Hospital {
    /// The department with this id, if configured.
    pub fn department(&self, id: DepartmentId) -> Option<&Department> {
        self.departments.iter().find(|d| d.id == id)
    }
}

/// How a department string maps onto a hospital's configured departments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepartmentMatch<'a> {
    /// One of the configured names (letter case aside).
    Configured(&'a Department),
    /// An alias, the name with blanks around it, or a typo within edit distance 2 of exactly
    /// one nearest name: mapped, and flagged.
    Repaired(&'a Department),
    /// Nothing close enough, or two names equally close.
    Unknown,
}

/// All hospitals, by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    hospitals: BTreeMap<HospitalId, Hospital>,
    /// Names of departments that left the file while the engine ran: their patients are
    /// still counted under those names until they move.
    retired: BTreeMap<(HospitalId, DepartmentId), String>,
}

impl Network {
    /// The network shipped with the binary.
    pub fn default_network() -> Self {
        // The embedded file is part of the build and covered by a test.
        Self::parse(DEFAULT_DEPARTMENTS_CSV).unwrap_or_else(|_| Network {
            hospitals: BTreeMap::new(),
            retired: BTreeMap::new(),
        })
    }

    /// Loads a departments file.
    pub fn load(path: &Path) -> Result<Self, NetworkError> {
        let text = std::fs::read_to_string(path).map_err(|source| NetworkError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses the CSV text of a departments file (a header line, then one row per department).
    pub fn parse(text: &str) -> Result<Self, NetworkError> {
        let mut hospitals: BTreeMap<HospitalId, Hospital> = BTreeMap::new();
        // Rows are checked for their columns here, so that the error names the line.
        let mut rows = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let mut columns: Option<Columns> = None;
        for row in rows.records() {
            let line_no = line_of(
                text,
                match &row {
                    Ok(r) => r.position(),
                    Err(e) => e.position(),
                },
            );
            let invalid = |reason: String| NetworkError::Invalid {
                line: line_no,
                reason,
            };
            let row = row.map_err(|e| invalid(e.to_string()))?;
            if row.len() == 1 && row.get(0) == Some("") {
                continue;
            }
            let Some(cols) = &columns else {
                columns = Some(Columns::of_header(&row).map_err(invalid)?);
                continue;
            };
            if row.len() != cols.count {
                return Err(invalid(format!(
                    "expected {} columns, found {}",
                    cols.count,
                    row.len()
                )));
            }
            let field = |i: Option<usize>| i.and_then(|i| row.get(i)).unwrap_or_default();
            let id = field(Some(cols.hospital_id))
                .parse::<HospitalId>()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(|| {
                    invalid(format!(
                        "hospital_id {:?} is not a number from 1 to 4294967295",
                        field(Some(cols.hospital_id))
                    ))
                })?;
            let number = |i: usize, what: &str| {
                let s = field(Some(i));
                s.parse::<u32>()
                    .map_err(|_| invalid(format!("{what} {s:?} is not a whole number")))
            };
            let capacity = Capacity {
                bed_capacity: number(cols.bed_capacity, "bed_capacity")?,
                staff_count: number(cols.staff_count, "staff_count")?,
            };
            let name = field(Some(cols.department));
            if name.is_empty() {
                return Err(invalid("the department has no name".into()));
            }
            let usual = USUAL.iter().find(|(n, _, _)| n.eq_ignore_ascii_case(name));
            let aliases: Vec<&str> = match (cols.aliases, usual) {
                (None, Some((_, _, aliases))) => aliases.to_vec(),
                _ => field(cols.aliases).split('|').collect(),
            };
            let kind = match (cols.kind, usual) {
                (None, Some((_, kind, _))) => kind,
                _ => field(cols.kind),
            };
            let department = Department::new(name, kind, &aliases, capacity);
            let hospital_name = field(Some(cols.hospital_name));
            let h = hospitals.entry(id).or_insert_with(|| Hospital {
                id,
                name: hospital_name.to_owned(),
                departments: Vec::new(),
            });
            if h.name != hospital_name {
                return Err(invalid(format!(
                    "hospital {id} is named {:?} here and {:?} above",
                    hospital_name, h.name
                )));
            }
            if let Some(clash) = clash(h, &department) {
                return Err(invalid(clash));
            }
            h.departments.push(department);
        }
        if hospitals.is_empty() {
            return Err(NetworkError::Empty);
        }
        Ok(Network {
            hospitals,
            retired: BTreeMap::new(),
        })
    }

    /// The network that follows this one when the file changes to `next`: the departments
    /// `next` leaves out are remembered by name (their patients are still counted).
    pub fn succeeded_by(&self, mut next: Network) -> Network {
        let mut retired = self.retired.clone();
        for (h, d) in self.departments() {
            retired.insert((h, d.id), d.name.clone());
        }
        retired.retain(|(h, id), _| next.department(*h, *id).is_none());
        next.retired = retired;
        next
    }

    /// Departments no longer configured, with the names they had.
    pub fn retired(&self) -> impl Iterator<Item = (HospitalId, DepartmentId, &str)> {
        self.retired
            .iter()
            .map(|(&(h, id), name)| (h, id, name.as_str()))
    }

    /// Remembers the names of departments no longer configured (from a checkpoint).
    pub fn remember_retired(
        &mut self,
        names: impl IntoIterator<Item = (HospitalId, DepartmentId, String)>,
    ) {
        for (h, id, name) in names {
            if self.department(h, id).is_none() {
                self.retired.insert((h, id), name);
            }
        }
    }

    /// The hospital with this id, if configured.
    pub fn hospital(&self, id: i64) -> Option<&Hospital> {
        HospitalId::try_from(id)
            .ok()
            .and_then(|id| self.hospitals.get(&id))
    }

    /// Every hospital, by ascending id.
    pub fn hospitals(&self) -> impl Iterator<Item = &Hospital> {
        self.hospitals.values()
    }

    /// One configured department.
    pub fn department(&self, hospital: HospitalId, id: DepartmentId) -> Option<&Department> {
        self.hospitals.get(&hospital)?.department(id)
    }

    /// The configured department of this name (letter case aside).
    pub fn department_named(&self, hospital: i64, name: &str) -> Option<&Department> {
        self.hospital(hospital)?
            .departments
            .iter()
            .find(|d| d.is_named(name))
    }

    /// The name of a department, configured or retired.
    pub fn department_name(&self, hospital: HospitalId, id: DepartmentId) -> Option<&str> {
        self.department(hospital, id)
            .map(|d| d.name.as_str())
            .or_else(|| self.retired.get(&(hospital, id)).map(String::as_str))
    }

    /// Capacity of one department, if configured.
    pub fn capacity(&self, hospital: HospitalId, id: DepartmentId) -> Option<Capacity> {
        self.department(hospital, id).map(|d| d.capacity)
    }

    /// Every configured department, by hospital.
    pub fn departments(&self) -> impl Iterator<Item = (HospitalId, &Department)> + '_ {
        self.hospitals
            .values()
            .flat_map(|h| h.departments.iter().map(move |d| (h.id, d)))
    }

    /// Total beds of the network.
    pub fn total_beds(&self) -> u64 {
        self.departments()
            .map(|(_, d)| u64::from(d.capacity.bed_capacity))
            .sum()
    }

    /// Maps a record's department onto its hospital's configured departments: the name
    /// (letter case aside), then an alias, then a typo within edit distance 2 of exactly one
    /// nearest name. A record of an unknown hospital is matched against every hospital's
    /// departments (it is quarantined for its hospital, not also for its department).
    pub fn match_department(&self, hospital: Option<i64>, raw: &str) -> DepartmentMatch<'_> {
        // Called for every record: the candidates are iterated without boxing.
        match hospital.and_then(|h| self.hospital(h)) {
            Some(h) => match_among(h.departments.iter(), raw),
            None => match_among(
                self.hospitals.values().flat_map(|h| h.departments.iter()),
                raw,
            ),
        }
    }
}

/// [`Network::match_department`] over one list of candidates.
fn match_among<'a>(
    candidates: impl Iterator<Item = &'a Department> + Clone,
    raw: &str,
) -> DepartmentMatch<'a> {
    let candidates = || candidates.clone();
    if let Some(d) = candidates().find(|d| d.is_named(raw)) {
        return DepartmentMatch::Configured(d);
    }
    let upper = raw.trim().to_uppercase();
    if upper.is_empty() {
        return DepartmentMatch::Unknown;
    }
    if let Some(d) = candidates().find(|d| d.upper == upper || d.aliases_upper.contains(&upper)) {
        return DepartmentMatch::Repaired(d);
    }
    let mut best: Option<(usize, &Department)> = None;
    let mut tied = false;
    for d in candidates() {
        let distance = strsim::levenshtein(&upper, &d.upper);
        if distance > MAX_TYPO_DISTANCE {
            continue;
        }
        match best {
            Some((b, _)) if distance > b => {}
            Some((b, other)) if distance == b => tied |= other.id != d.id,
            _ => {
                best = Some((distance, d));
                tied = false;
            }
        }
    }
    match best {
        Some((_, d)) if !tied => DepartmentMatch::Repaired(d),
        _ => DepartmentMatch::Unknown,
    }
}

/// Where each column of the departments file is.
struct Columns {
    count: usize,
    hospital_id: usize,
    hospital_name: usize,
    department: usize,
    bed_capacity: usize,
    staff_count: usize,
    kind: Option<usize>,
    aliases: Option<usize>,
}

impl Columns {
    const REQUIRED: [&'static str; 5] = [
        "hospital_id",
        "hospital_name",
        "department",
        "bed_capacity",
        "staff_count",
    ];

    fn of_header(row: &csv::StringRecord) -> Result<Self, String> {
        let names: Vec<String> = row.iter().map(|c| c.trim().to_lowercase()).collect();
        let at = |name: &str| names.iter().position(|n| n == name);
        if let Some(unknown) = names.iter().find(|n| {
            !Self::REQUIRED.contains(&n.as_str()) && !matches!(n.as_str(), "kind" | "aliases")
        }) {
            return Err(format!(
                "unknown column {unknown:?} (the columns are {}, kind, aliases)",
                Self::REQUIRED.join(", ")
            ));
        }
        let required =
            |name: &str| at(name).ok_or_else(|| format!("the header has no column {name:?}"));
        Ok(Columns {
            count: names.len(),
            hospital_id: required("hospital_id")?,
            hospital_name: required("hospital_name")?,
            department: required("department")?,
            bed_capacity: required("bed_capacity")?,
            staff_count: required("staff_count")?,
            kind: at("kind"),
            aliases: at("aliases"),
        })
    }
}

/// Why `new` cannot join hospital `h`: a name or alias that would map to two departments.
fn clash(h: &Hospital, new: &Department) -> Option<String> {
    for d in &h.departments {
        if d.upper == new.upper {
            return Some(format!(
                "hospital {} lists department {:?} twice",
                h.id, new.name
            ));
        }
        if d.id == new.id {
            return Some(format!(
                "departments {:?} and {:?} of hospital {} have the same key; rename one",
                d.name, new.name, h.id
            ));
        }
        let names = |x: &Department| {
            std::iter::once(x.upper.clone())
                .chain(x.aliases_upper.iter().cloned())
                .collect::<Vec<_>>()
        };
        let theirs = names(d);
        if let Some(shared) = names(new).into_iter().find(|n| theirs.contains(n)) {
            return Some(format!(
                "{shared:?} would name both {:?} and {:?} of hospital {}",
                d.name, new.name, h.id
            ));
        }
    }
    None
}

/// The line a row starts on. The reader's position of a row is where the row before it ended,
/// before the line break and any blank lines that follow.
fn line_of(text: &str, position: Option<&csv::Position>) -> usize {
    let from = position.map_or(0, |p| usize::try_from(p.byte()).unwrap_or(usize::MAX));
    let start = text.get(from..).map_or(text.len(), |rest| {
        from + rest.len() - rest.trim_start_matches(['\r', '\n']).len()
    });
    text.bytes().take(start).filter(|b| *b == b'\n').count() + 1
}

/// The network in force, shared by the stages that read it while the departments file is
/// watched: a reader checks [`LiveNetwork::version`] (one atomic load) and takes the new
/// network only when it changed.
#[derive(Debug, Clone)]
pub struct LiveNetwork {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    version: AtomicU64,
    current: RwLock<Arc<Network>>,
}

impl LiveNetwork {
    pub fn new(network: Network) -> Self {
        LiveNetwork {
            shared: Arc::new(Shared {
                version: AtomicU64::new(0),
                current: RwLock::new(Arc::new(network)),
            }),
        }
    }

    /// Bumped by every [`LiveNetwork::publish`].
    pub fn version(&self) -> u64 {
        self.shared.version.load(Ordering::Acquire)
    }

    /// The network in force.
    pub fn current(&self) -> Arc<Network> {
        match self.shared.current.read() {
            Ok(n) => n.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts a new network in force.
    pub fn publish(&self, network: Network) {
        match self.shared.current.write() {
            Ok(mut n) => *n = Arc::new(network),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(network),
        }
        self.shared.version.fetch_add(1, Ordering::AcqRel);
    }
}

/// What a stage reads the network from: one fixed network, or the one in force of a
/// [`LiveNetwork`], taken again only when its version moved. Dereferences to the network.
#[derive(Debug, Clone)]
pub struct NetworkView {
    network: Arc<Network>,
    /// Where a changed departments file comes from, and the version `network` is.
    live: Option<(LiveNetwork, u64)>,
}

impl NetworkView {
    pub fn fixed(network: Network) -> Self {
        NetworkView {
            network: Arc::new(network),
            live: None,
        }
    }

    pub fn following(live: LiveNetwork) -> Self {
        let version = live.version();
        NetworkView {
            network: live.current(),
            live: Some((live, version)),
        }
    }

    /// Takes the network in force if it changed (one atomic load when it did not).
    pub fn refresh(&mut self) {
        if let Some((live, seen)) = &mut self.live {
            let version = live.version();
            if version != *seen {
                *seen = version;
                self.network = live.current();
            }
        }
    }
}

impl std::ops::Deref for NetworkView {
    type Target = Network;

    fn deref(&self) -> &Network {
        &self.network
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "hospital_id,hospital_name,department,bed_capacity,staff_count";

    fn id(name: &str) -> DepartmentId {
        DepartmentId::of(name)
    }

    #[test]
    fn the_shipped_network_has_seven_hospitals_of_seven_departments() {
        let n = Network::parse(DEFAULT_DEPARTMENTS_CSV).expect("shipped file parses");
        assert_eq!(n.hospitals().count(), 7);
        assert_eq!(n.departments().count(), 49);
        assert_eq!(n.capacity(3, id("ICU")).map(|c| c.bed_capacity), Some(10));
        assert_eq!(
            n.department(3, id("icu")).map(|d| d.kind.as_str()),
            Some("icu")
        );
        assert!(n
            .department(1, id("Emergency"))
            .is_some_and(|d| d.aliases.contains(&"A&E".to_owned())));
    }

    #[test]
    fn any_ward_name_with_aliases_and_kind() {
        let n = Network::parse(&format!(
            "{HEADER},aliases,kind\n\
             1042,Royal Infirmary,Ward 7B,28,40,W7B|Seven B,ward\n\
             1042,Royal Infirmary,Geriatrics,30,44,COTE|Care of the Elderly,\n\
             1042,Royal Infirmary,Renal,12,20,,\n\
             1042,Royal Infirmary,Critical Care Unit,8,30,ITU,ICU\n\
             7,Eastbrook,ICU,12,44,,icu\n"
        ))
        .expect("parses");
        let h = n.hospital(1042).expect("hospital 1042");
        assert_eq!(h.departments.len(), 4);
        assert_eq!(
            n.department(1042, id("Critical Care Unit"))
                .map(|d| d.kind.as_str()),
            Some("icu")
        );
        assert_eq!(
            n.department(1042, id("Renal")).map(|d| d.kind.as_str()),
            Some(DEFAULT_KIND)
        );
        let name = |m: DepartmentMatch<'_>| match m {
            DepartmentMatch::Configured(d) => format!("= {}", d.name),
            DepartmentMatch::Repaired(d) => format!("~ {}", d.name),
            DepartmentMatch::Unknown => "?".into(),
        };
        let m = |raw| name(n.match_department(Some(1042), raw));
        assert_eq!(m("Ward 7B"), "= Ward 7B");
        assert_eq!(m("ward 7b"), "= Ward 7B");
        assert_eq!(m("seven b"), "~ Ward 7B");
        assert_eq!(m(" Renal "), "~ Renal");
        assert_eq!(m("Renl"), "~ Renal");
        assert_eq!(m("Geriatircs"), "~ Geriatrics");
        assert_eq!(m("cote"), "~ Geriatrics");
        assert_eq!(m("Pharmacy"), "?");
        assert_eq!(m(""), "?");
        // Another hospital's record does not see these names; an unknown hospital sees all.
        assert_eq!(name(n.match_department(Some(7), "Renal")), "?");
        assert_eq!(name(n.match_department(Some(99), "Renal")), "= Renal");
    }

    #[test]
    fn a_file_without_kind_and_aliases_keeps_the_usual_ones() {
        let n = Network::parse(&format!("{HEADER}\n1,A,ICU,3,4\n1,A,Renal,3,4\n")).expect("parses");
        let icu = n.department(1, id("ICU")).expect("ICU");
        assert_eq!(icu.kind, "icu");
        assert!(
            matches!(n.match_department(Some(1), "ITU"), DepartmentMatch::Repaired(d) if d.name == "ICU")
        );
        assert_eq!(
            n.department(1, id("Renal")).map(|d| d.kind.as_str()),
            Some(DEFAULT_KIND)
        );
        // With the columns, the file says it all.
        let n = Network::parse(&format!("{HEADER},kind,aliases\n1,A,ICU,3,4,,\n")).expect("parses");
        assert_eq!(
            n.department(1, id("ICU")).map(|d| d.kind.as_str()),
            Some(DEFAULT_KIND)
        );
        assert_eq!(
            n.match_department(Some(1), "Intensive Care"),
            DepartmentMatch::Unknown
        );
    }

    #[test]
    fn a_typo_between_two_names_is_unknown() {
        let n = Network::parse(&format!("{HEADER}\n1,A,Ward 7A,1,1\n1,A,Ward 7B,1,1\n"))
            .expect("parses");
        assert_eq!(
            n.match_department(Some(1), "Ward 7"),
            DepartmentMatch::Unknown
        );
        assert!(matches!(
            n.match_department(Some(1), "Ward 7Bx"),
            DepartmentMatch::Repaired(d) if d.name == "Ward 7B"
        ));
    }

    #[test]
    fn a_quoted_hospital_name_may_hold_a_comma() {
        let n = Network::parse(&format!(
            "{HEADER}\r\n\r\n4,\"St Anne, North\",ICU, 12 ,30\r\n"
        ))
        .expect("parses");
        assert_eq!(
            n.hospital(4).map(|h| h.name.as_str()),
            Some("St Anne, North")
        );
        let err = Network::parse(&format!("{HEADER}\n1,A,ICU,3\n\n1,A,Surgery,3,4,5\n"))
            .expect_err("4 columns");
        assert_eq!(err.to_string(), "line 2: expected 5 columns, found 4");
        let err = Network::parse(&format!("{HEADER}\n\n1,A,Surgery,3,4,5\n")).expect_err("6");
        assert_eq!(err.to_string(), "line 3: expected 5 columns, found 6");
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let err = |text: String| Network::parse(&text).expect_err("refused").to_string();
        assert!(err(format!("{HEADER}\n1,A,ICU,x,4\n")).contains("line 2: bed_capacity"));
        assert_eq!(
            err(format!("{HEADER}\n0,A,ICU,3,4\n")),
            "line 2: hospital_id \"0\" is not a number from 1 to 4294967295"
        );
        assert_eq!(
            err(format!("{HEADER}\n4294967296,A,ICU,3,4\n")),
            "line 2: hospital_id \"4294967296\" is not a number from 1 to 4294967295"
        );
        let big = Network::parse(&format!(
            "{HEADER}\n4294967295,A,ICU,3,4\n70000,B,ICU,1,1\n"
        ))
        .expect("ids beyond 16 bits");
        assert!(big.hospital(4_294_967_295).is_some() && big.hospital(70_000).is_some());
        assert_eq!(
            err("hospital_id,hospital_name,department,beds,staff_count\n".into()),
            "line 1: unknown column \"beds\" (the columns are hospital_id, hospital_name, \
             department, bed_capacity, staff_count, kind, aliases)"
        );
        assert_eq!(
            err("hospital_id,hospital_name,department,staff_count\n".into()),
            "line 1: the header has no column \"bed_capacity\""
        );
        assert_eq!(
            err(format!("{HEADER}\n1,A,ICU,3,4\n1,A,icu,3,4\n")),
            "line 3: hospital 1 lists department \"icu\" twice"
        );
        assert_eq!(
            err(format!(
                "{HEADER},aliases\n1,A,ICU,3,4,ITU\n1,A,Theatre,3,4,itu\n"
            )),
            "line 3: \"ITU\" would name both \"ICU\" and \"Theatre\" of hospital 1"
        );
        assert_eq!(
            err(format!("{HEADER}\n1,A,ICU,3,4\n1,B,Surgery,3,4\n")),
            "line 3: hospital 1 is named \"B\" here and \"A\" above"
        );
    }

    #[test]
    fn a_removed_department_keeps_its_name() {
        let before =
            Network::parse(&format!("{HEADER}\n1,A,ICU,3,4\n1,A,Renal,3,4\n")).expect("parses");
        let after = before
            .succeeded_by(Network::parse(&format!("{HEADER}\n1,A,ICU,5,4\n")).expect("parses"));
        assert_eq!(after.department(1, id("Renal")), None);
        assert_eq!(after.department_name(1, id("Renal")), Some("Renal"));
        assert_eq!(after.retired().count(), 1);
        // Back in the file: configured again, no longer retired.
        let again = after.succeeded_by(before.clone());
        assert_eq!(again.retired().count(), 0);
    }

    #[test]
    fn the_live_network_moves_on_publish() {
        let live = LiveNetwork::new(Network::default_network());
        let v = live.version();
        live.publish(Network::parse(&format!("{HEADER}\n1,A,ICU,3,4\n")).expect("parses"));
        assert_ne!(live.version(), v);
        assert_eq!(live.current().departments().count(), 1);
    }
}
