//! The checkpoint files: format, atomic writes, rotation, and finding the newest usable one.
//!
//! File format (`DATA_DIR/lake/checkpoints/checkpoint-<seq>.bin`): the magic `CDSCKPT2`, the
//! body length (u64, little endian), the SHA-256 of the body, the body ([`crate::support::codec`]). It is
//! written to a temporary name, synced and renamed, so a checkpoint exists whole or not at
//! all; a torn or corrupt file fails its length or hash check and the previous one is used.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::warn;

use super::CheckpointError;
use crate::support::codec::{self, CodecError};

/// Format 2: the body in postcard. Format 1 (bincode) is recognised and refused with advice.
const MAGIC: &[u8; 8] = b"CDSCKPT2";
const MAGIC_FORMAT_1: &[u8; 8] = b"CDSCKPT1";
const HEADER: usize = 8 + 8 + 32;

/// One checkpoint as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The source identity it continues ([`crate::source::Source::identity`]).
    pub source: String,
    /// Wall-clock time it was taken (RFC 3339).
    pub written_at: String,
    /// The ingest side: duplicate window, Gold inputs, positions, lake lengths (encoded).
    #[serde(with = "block")]
    pub ingest: Vec<u8>,
    /// The rules stage, when rules ran ([`crate::rules::RulesSnapshot`]).
    #[serde(with = "block_opt")]
    pub rules: Option<Vec<u8>>,
}

/// Byte strings as one block. serde reads a `Vec<u8>` one element at a time, which took about
/// a second per 100 MB of checkpoint on restart.
mod block {
    use serde::{de, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    struct Block;

    impl<'de> de::Visitor<'de> for Block {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(Block)
    }

    /// One block as a value, for `Option` (borrowed when written, owned when read).
    pub struct BytesRef<'a>(pub &'a [u8]);
    pub struct Bytes(pub Vec<u8>);

    impl serde::Serialize for BytesRef<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            serialize(self.0, s)
        }
    }

    impl<'de> serde::Deserialize<'de> for Bytes {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            deserialize(d).map(Bytes)
        }
    }
}

mod block_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::block::{Bytes, BytesRef};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_some(&BytesRef(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<Bytes>::deserialize(d)?.map(|b| b.0))
    }
}

/// Why one checkpoint file cannot be used (the previous one is tried instead).
#[derive(Debug, thiserror::Error)]
pub enum UnusableCheckpoint {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a checkpoint (no header)")]
    NoHeader,
    #[error("torn: {found} of {expected} bytes")]
    Torn { found: usize, expected: usize },
    #[error("corrupt: checksum mismatch")]
    Corrupt,
    #[error("undecodable: {0}")]
    Undecodable(CodecError),
}

/// The checkpoint directory; keeps the newest `keep` checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
    keep: usize,
}

impl CheckpointStore {
    /// The store under `DATA_DIR/lake/checkpoints`.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        CheckpointStore {
            dir: data_dir.join("lake").join("checkpoints"),
            keep: 3,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io(&self, path: &Path, source: std::io::Error) -> CheckpointError {
        CheckpointError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// Checkpoint files, newest first, with their sequence numbers.
    pub fn list(&self) -> Vec<(u64, PathBuf)> {
        let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let seq = name
                    .strip_prefix("checkpoint-")?
                    .strip_suffix(".bin")?
                    .parse()
                    .ok()?;
                Some((seq, e.path()))
            })
            .collect();
        found.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
        found
    }

    /// Writes a checkpoint atomically and drops the oldest beyond `keep`; returns its size.
    pub fn write(&self, checkpoint: &Checkpoint) -> Result<u64, CheckpointError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| self.io(&self.dir, e))?;
        let body = codec::encode(checkpoint)?;
        let seq = self.list().first().map_or(1, |(s, _)| s + 1);
        let path = self.dir.join(format!("checkpoint-{seq:012}.bin"));
        let tmp = self.dir.join(format!(".checkpoint-{seq:012}.tmp"));
        {
            let mut f = std::fs::File::create(&tmp).map_err(|e| self.io(&tmp, e))?;
            f.write_all(MAGIC)
                .and_then(|_| f.write_all(&(body.len() as u64).to_le_bytes()))
                .and_then(|_| f.write_all(&Sha256::digest(&body)))
                .and_then(|_| f.write_all(&body))
                .and_then(|_| f.sync_all())
                .map_err(|e| self.io(&tmp, e))?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| self.io(&path, e))?;
        // The rename is durable once the directory is synced.
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        for (_, old) in self.list().into_iter().skip(self.keep) {
            let _ = std::fs::remove_file(old);
        }
        Ok((HEADER + body.len()) as u64)
    }

    /// Reads and checks one checkpoint file.
    pub fn read(path: &Path) -> Result<Checkpoint, UnusableCheckpoint> {
        let bytes = std::fs::read(path)?;
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err(UnusableCheckpoint::NoHeader);
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[8..16]);
        let expected = u64::from_le_bytes(len) as usize;
        let body = &bytes[HEADER..];
        if body.len() != expected {
            return Err(UnusableCheckpoint::Torn {
                found: body.len(),
                expected,
            });
        }
        if Sha256::digest(body).as_slice() != &bytes[16..48] {
            return Err(UnusableCheckpoint::Corrupt);
        }
        codec::decode(body).map_err(UnusableCheckpoint::Undecodable)
    }

    /// The newest valid checkpoint of `source`; torn or corrupt files are skipped with a
    /// warning, checkpoints of another source are not used. A newest checkpoint of an earlier
    /// format is an error: starting from empty state would silently lose the state it holds.
    pub fn load_newest(&self, source: &str) -> Result<Option<Checkpoint>, CheckpointError> {
        for (seq, path) in self.list() {
            if std::fs::read(&path).is_ok_and(|b| b.starts_with(MAGIC_FORMAT_1)) {
                return Err(CheckpointError::EarlierFormat {
                    path: path.display().to_string(),
                });
            }
            match Self::read(&path) {
                Ok(c) if c.source == source => return Ok(Some(c)),
                Ok(_) => {
                    warn!(
                        seq,
                        "the newest checkpoint is of another source; starting from empty state"
                    );
                    return Ok(None);
                }
                Err(reason) => warn!(seq, %reason, "skipping an unusable checkpoint"),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(n: u8) -> Checkpoint {
        Checkpoint {
            source: "file:x".into(),
            written_at: "2026-01-01T00:00:00Z".into(),
            ingest: vec![n; 100],
            rules: None,
        }
    }

    #[test]
    fn byte_blocks_round_trip() {
        let c = Checkpoint {
            rules: Some(vec![7; 3]),
            ingest: (0..=255).collect(),
            ..checkpoint(0)
        };
        let bytes = codec::encode(&c).expect("encode");
        let back: Checkpoint = codec::decode(&bytes).expect("decode");
        assert_eq!(
            (back.ingest, back.rules),
            (c.ingest.clone(), c.rules.clone())
        );
        let none = Checkpoint { rules: None, ..c };
        let bytes = codec::encode(&none).expect("encode");
        let back: Checkpoint = codec::decode(&bytes).expect("decode");
        assert_eq!(back.rules, None);
    }

    #[test]
    fn an_earlier_format_is_refused_with_advice() {
        let dir = std::env::temp_dir().join(format!("cds-ckpt-old-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = CheckpointStore::in_data_dir(&dir);
        store.write(&checkpoint(1)).expect("write");
        let mut old = MAGIC_FORMAT_1.to_vec();
        old.extend_from_slice(&[0; HEADER]);
        std::fs::write(store.dir().join("checkpoint-000000000009.bin"), old).expect("old");
        let err = store.load_newest("file:x").expect_err("refused");
        assert!(
            err.to_string().contains("cds replay --from-bronze"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn newest_valid_wins_and_only_the_last_three_stay() {
        let dir = std::env::temp_dir().join(format!("cds-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = CheckpointStore::in_data_dir(&dir);
        for n in 1..=5 {
            store.write(&checkpoint(n)).expect("write");
        }
        assert_eq!(store.list().len(), 3);
        let newest = |source: &str| store.load_newest(source).expect("readable");
        assert_eq!(newest("file:x").map(|c| c.ingest[0]), Some(5));
        assert!(newest("file:y").is_none(), "another source");

        // Corrupt the newest: the one before is used. Tear the next: the oldest.
        let files = store.list();
        let mut bytes = std::fs::read(&files[0].1).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&files[0].1, &bytes).expect("corrupt");
        assert_eq!(newest("file:x").map(|c| c.ingest[0]), Some(4));
        let torn = std::fs::read(&files[1].1).expect("read");
        std::fs::write(&files[1].1, &torn[..torn.len() / 2]).expect("tear");
        assert_eq!(newest("file:x").map(|c| c.ingest[0]), Some(3));
        let _ = std::fs::remove_dir_all(dir);
    }
}
