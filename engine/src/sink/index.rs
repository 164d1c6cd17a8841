//! The serving index: the documents the HTTP API, CDS Hooks and the dashboard answer from,
//! kept in memory by the sink stage from the very documents it writes.
//!
//! Why not read the store back: a remote sink (Cosmos DB) would be read whole on every request,
//! and a sink that cannot be read back at all would serve nothing. The sink thread applies each
//! batch here right after the sink confirmed it (so the API never shows what the store does not
//! hold), and a run fills the index from the sink once at start ([`ServingIndex::restore`]), so
//! every sink serves the same answers. Queries walk the documents in id order from a cursor and
//! stop at a page's end; a patient's documents are found through a second map.
//!
//! ```
//! use cds_engine::model::Document;
//! use cds_engine::sink::{Container, ServingIndex};
//! use serde_json::json;
//!
//! let index = ServingIndex::default();
//! let alert = |id: &str, patient: &str| Document {
//!     id: id.into(),
//!     hospital_id: 1,
//!     body: json!({"id": id, "type": "alert", "hospital_id": 1, "patient": patient}),
//! };
//! index.apply(Container::Alerts, &[alert("a1", "p1"), alert("a2", "p2"), alert("a3", "p1")]);
//! let first = index.page(Container::Alerts, None, 2, |_| true);
//! assert_eq!(first.documents.len(), 2);
//! assert_eq!(first.next.as_deref(), Some("a2"));
//! let rest = index.page(Container::Alerts, first.next.as_deref(), 2, |_| true);
//! assert_eq!(rest.documents.len(), 1);
//! assert_eq!(rest.next, None);
//! assert_eq!(index.of_patients(Container::Alerts, &["p1".to_owned()]).len(), 2);
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use super::Container;
use crate::model::Document;

/// The documents of every container, by id; cheap to clone (one shared index).
#[derive(Debug, Clone, Default)]
pub struct ServingIndex {
    inner: Arc<RwLock<Shelves>>,
}

#[derive(Debug, Default)]
struct Shelves {
    kpis: Shelf,
    alerts: Shelf,
}

/// One container's documents.
#[derive(Debug, Default)]
struct Shelf {
    by_id: BTreeMap<String, Arc<Value>>,
    /// The ids of each patient's documents (pseudonymised keys, as in the documents).
    by_patient: HashMap<String, BTreeSet<String>>,
}

impl Shelf {
    fn put(&mut self, id: String, body: Arc<Value>) {
        if let Some(patient) = body.get("patient").and_then(Value::as_str) {
            if !self.by_patient.contains_key(patient) {
                self.by_patient.insert(patient.to_owned(), BTreeSet::new());
            }
            if let Some(ids) = self.by_patient.get_mut(patient) {
                ids.insert(id.clone());
            }
        }
        // A document's patient never changes under the same id (the id is made from it).
        self.by_id.insert(id, body);
    }
}

/// One page of a query: the documents, and the cursor of the next page when there is one.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub documents: Vec<Arc<Value>>,
    /// The id to pass as the next page's cursor; `None` on the last page.
    pub next: Option<String>,
}

impl ServingIndex {
    fn shelf(shelves: &Shelves, container: Container) -> &Shelf {
        match container {
            Container::Kpis => &shelves.kpis,
            Container::Alerts => &shelves.alerts,
        }
    }

    fn shelf_mut(shelves: &mut Shelves, container: Container) -> &mut Shelf {
        match container {
            Container::Kpis => &mut shelves.kpis,
            Container::Alerts => &mut shelves.alerts,
        }
    }

    /// Puts documents the sink has written (the newest version of an id replaces the older).
    pub fn apply(&self, container: Container, documents: &[Document]) {
        if documents.is_empty() {
            return;
        }
        let bodies: Vec<(String, Arc<Value>)> = documents
            .iter()
            .map(|d| (d.id.clone(), Arc::new(d.body.clone())))
            .collect();
        let mut shelves = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let shelf = Self::shelf_mut(&mut shelves, container);
        for (id, body) in bodies {
            shelf.put(id, body);
        }
    }

    /// Fills a container with documents read back from the sink at start (each carries its
    /// `id`; one without is skipped: it cannot have come from this engine).
    pub fn restore(&self, container: Container, documents: Vec<Value>) {
        let mut shelves = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let shelf = Self::shelf_mut(&mut shelves, container);
        for body in documents {
            if let Some(id) = body.get("id").and_then(Value::as_str).map(str::to_owned) {
                shelf.put(id, Arc::new(body));
            }
        }
    }

    /// How many documents a container holds.
    pub fn len(&self, container: Container) -> usize {
        let shelves = self.inner.read().unwrap_or_else(|p| p.into_inner());
        Self::shelf(&shelves, container).by_id.len()
    }

    /// Whether a container holds no document.
    pub fn is_empty(&self, container: Container) -> bool {
        self.len(container) == 0
    }

    /// One document by id.
    pub fn get(&self, container: Container, id: &str) -> Option<Arc<Value>> {
        let shelves = self.inner.read().unwrap_or_else(|p| p.into_inner());
        Self::shelf(&shelves, container).by_id.get(id).cloned()
    }

    /// Up to `limit` documents that `keep` accepts, in id order after the id `after`.
    pub fn page(
        &self,
        container: Container,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&Value) -> bool,
    ) -> Page {
        let shelves = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let shelf = Self::shelf(&shelves, container);
        let start = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        let mut page = Page::default();
        let mut last: Option<&String> = None;
        for (id, doc) in shelf
            .by_id
            .range::<str, _>((start, Bound::Unbounded))
            .filter(|(_, doc)| keep(doc))
        {
            if page.documents.len() == limit {
                // One more matches: the next page starts after this page's last document.
                page.next = last.cloned();
                break;
            }
            page.documents.push(doc.clone());
            last = Some(id);
        }
        page
    }

    /// Every document that `keep` accepts, in id order (for per-rule statistics; the caller
    /// holds the result, not the index).
    pub fn all(&self, container: Container, keep: impl Fn(&Value) -> bool) -> Vec<Arc<Value>> {
        self.page(container, None, usize::MAX, keep).documents
    }

    /// The documents of these patients (pseudonymised keys), in id order.
    pub fn of_patients(&self, container: Container, patients: &[String]) -> Vec<Arc<Value>> {
        let shelves = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let shelf = Self::shelf(&shelves, container);
        let ids: BTreeSet<&String> = patients
            .iter()
            .filter_map(|p| shelf.by_patient.get(p))
            .flatten()
            .collect();
        ids.into_iter()
            .filter_map(|id| shelf.by_id.get(id).cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kpi(id: &str, hospital: i64, occupied: i64) -> Document {
        Document {
            id: id.into(),
            hospital_id: hospital,
            body: json!({"id": id, "type": "occupancy", "hospital_id": hospital, "occupied": occupied}),
        }
    }

    #[test]
    fn the_newest_version_of_an_id_is_served() {
        let index = ServingIndex::default();
        index.apply(Container::Kpis, &[kpi("occupancy:1:ICU", 1, 3)]);
        index.apply(Container::Kpis, &[kpi("occupancy:1:ICU", 1, 4)]);
        assert_eq!(index.len(Container::Kpis), 1);
        let doc = index.get(Container::Kpis, "occupancy:1:ICU").expect("kept");
        assert_eq!(doc["occupied"], 4);
        assert!(index.is_empty(Container::Alerts));
    }

    #[test]
    fn pages_cover_every_match_once_whatever_the_page_size() {
        let index = ServingIndex::default();
        let docs: Vec<Document> = (0..57)
            .map(|i| kpi(&format!("k{i:03}"), 1 + i % 3, i))
            .collect();
        index.apply(Container::Kpis, &docs);
        for limit in [1, 2, 7, 19, 56, 57, 58, 1000] {
            let keep = |d: &Value| d["hospital_id"] == 2;
            let mut seen = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = index.page(Container::Kpis, cursor.as_deref(), limit, keep);
                assert!(page.documents.len() <= limit);
                seen.extend(page.documents.iter().map(|d| d["id"].clone()));
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            let expected: Vec<Value> = docs
                .iter()
                .filter(|d| d.hospital_id == 2)
                .map(|d| json!(d.id))
                .collect();
            assert_eq!(seen, expected, "limit {limit}");
        }
    }

    #[test]
    fn restored_documents_are_served_like_written_ones() {
        let index = ServingIndex::default();
        index.restore(
            Container::Alerts,
            vec![
                json!({"id": "a1", "patient": "p1"}),
                json!({"no": "id"}),
                json!({"id": "a2", "patient": "p2"}),
            ],
        );
        assert_eq!(index.len(Container::Alerts), 2);
        let mine = index.of_patients(Container::Alerts, &["p2".to_owned(), "p9".to_owned()]);
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0]["id"], "a2");
    }
}
