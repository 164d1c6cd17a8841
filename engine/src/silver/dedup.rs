//! The duplicate-event window.
//!
//! Duplicates come from retries and at-least-once delivery, so they arrive close to the
//! original. Remembering every id forever would make memory grow with history; instead two
//! generations of 64-bit id hashes are kept, and the older one is dropped when the newer fills
//! up. An id is therefore remembered for at least `generation` further events (1,048,576 by
//! default), at about 16 bytes per id.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};

use serde::{Deserialize, Serialize};

/// Ids remembered per generation.
pub const DEFAULT_GENERATION: usize = 1 << 20;

/// Fixed keys: the hash must be the same in every process and across restarts (checkpoints).
#[derive(Debug, Clone, Copy, Default)]
struct StableHash;

impl BuildHasher for StableHash {
    type Hasher = std::collections::hash_map::DefaultHasher;
    fn build_hasher(&self) -> Self::Hasher {
        std::collections::hash_map::DefaultHasher::new()
    }
}

/// Passes an already-hashed `u64` through.
#[derive(Debug, Clone, Copy, Default)]
struct Identity;

#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl BuildHasher for Identity {
    type Hasher = IdentityHasher;
    fn build_hasher(&self) -> IdentityHasher {
        IdentityHasher::default()
    }
}

/// Remembers recently seen event ids.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DedupWindow {
    generation: usize,
    #[serde(with = "as_vec")]
    current: HashSet<u64, Identity>,
    #[serde(with = "as_vec")]
    previous: HashSet<u64, Identity>,
}

impl Default for DedupWindow {
    fn default() -> Self {
        Self::with_generation(DEFAULT_GENERATION)
    }
}

impl DedupWindow {
    /// A window that remembers at least `generation` ids.
    pub fn with_generation(generation: usize) -> Self {
        DedupWindow {
            generation: generation.max(1),
            current: HashSet::with_hasher(Identity),
            previous: HashSet::with_hasher(Identity),
        }
    }

    /// True the first time an id is seen (within the window), false for a duplicate.
    pub fn first_sighting(&mut self, event_id: &str) -> bool {
        let key = StableHash.hash_one(event_id);
        if self.previous.contains(&key) || !self.current.insert(key) {
            return false;
        }
        if self.current.len() >= self.generation {
            self.previous = std::mem::replace(&mut self.current, HashSet::with_hasher(Identity));
        }
        true
    }
}

mod as_vec {
    use super::{HashSet, Identity};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(set: &HashSet<u64, Identity>, s: S) -> Result<S::Ok, S::Error> {
        let mut v: Vec<u64> = set.iter().copied().collect();
        v.sort_unstable();
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<HashSet<u64, Identity>, D::Error> {
        let v = Vec::<u64>::deserialize(d)?;
        let mut set = HashSet::with_capacity_and_hasher(v.len(), Identity);
        set.extend(v);
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_at_least_one_generation() {
        let mut w = DedupWindow::with_generation(3);
        assert!(w.first_sighting("a"));
        assert!(!w.first_sighting("a"));
        for id in ["b", "c", "d", "e", "f"] {
            assert!(w.first_sighting(id));
        }
        // "a".."c" filled the first generation, "d".."f" the second: "a" is forgotten now,
        // while the last generation is still known.
        assert!(!w.first_sighting("d"));
        assert!(w.first_sighting("a"));
    }
}
