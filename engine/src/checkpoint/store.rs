//! The checkpoint files: format, atomic writes, rotation, and finding the newest usable one.
//!
//! They live in `DATA_DIR/lake/checkpoints/` by default, or in object storage
//! (`--checkpoints az://…`) so that a process can continue on another machine.
//!
//! File format (`checkpoint-<seq>.bin`): the magic `CDSCKPT4`, the
//! body length (u64, little endian), the SHA-256 of the body, the body ([`crate::support::codec`]). It is
//! written to a temporary name, synced and renamed, so a checkpoint exists whole or not at
//! all; a torn or corrupt file fails its length or hash check and the previous one is used.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::warn;

use super::CheckpointError;
use crate::support::codec::{self, CodecError};

/// Format 4: the body in postcard, departments kept by [`crate::model::DepartmentId`] with
/// their names. Formats 1 (bincode), 2 (postcard, without the rules' history) and 3
/// (departments as one of seven fixed names) are recognised and refused with advice. Hospital
/// ids went from 16 to 32 bits within format 4: postcard writes both as the same varint.
const MAGIC: &[u8; 8] = b"CDSCKPT4";
const EARLIER_FORMATS: [&[u8; 8]; 3] = [b"CDSCKPT1", b"CDSCKPT2", b"CDSCKPT3"];
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

/// Where checkpoints are kept, with the newest `keep` of them.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    place: Place,
    keep: usize,
}

/// A local directory, or a prefix in object storage.
#[derive(Debug, Clone)]
enum Place {
    /// Written to a temporary name, synced and renamed.
    Dir(PathBuf),
    /// One PUT per checkpoint: object stores make a PUT atomic, so the temporary name and the
    /// rename are not needed.
    Objects {
        /// The location as given, for messages.
        url: String,
        store: Arc<dyn ObjectStore>,
        prefix: ObjectPath,
    },
}

/// The name of checkpoint `seq` of the run `identity`: it sorts by sequence, and names which
/// run wrote it (8 hex digits of the SHA-256 of its identity), so that the checkpoints of
/// another cluster layout are told apart without reading them.
fn name_of(seq: u64, identity: &str) -> String {
    format!("checkpoint-{seq:012}-{}.bin", tag_of(identity))
}

/// The tag of an identity in checkpoint names.
fn tag_of(identity: &str) -> String {
    hex::encode(&Sha256::digest(identity.as_bytes())[..4])
}

/// The sequence of a checkpoint's name, and its identity's tag (`None`: a name of an earlier
/// version, without one).
fn parse_name(name: &str) -> Option<(u64, Option<&str>)> {
    let rest = name.strip_prefix("checkpoint-")?.strip_suffix(".bin")?;
    match rest.split_once('-') {
        Some((seq, tag)) => Some((seq.parse().ok()?, Some(tag))),
        None => Some((rest.parse().ok()?, None)),
    }
}

/// The sequence of a checkpoint's name.
fn seq_of(name: &str) -> Option<u64> {
    parse_name(name).map(|(seq, _)| seq)
}

/// Which checkpoints stay when one is written: the newest `keep` of its own run (it among
/// them), and the newest of each of the two most recent other runs (the checkpoints of the
/// layout before, which a rescale reads; an untagged name counts as another run's).
fn to_remove(existing: &[(u64, String)], tag: &str, keep: usize) -> Vec<String> {
    let mut own = 0;
    let mut others: Vec<Option<String>> = Vec::new();
    let mut out = Vec::new();
    for (_, name) in existing {
        let theirs = parse_name(name).and_then(|(_, t)| t).map(str::to_owned);
        if theirs.as_deref() == Some(tag) {
            own += 1;
            if own >= keep {
                out.push(name.clone());
            }
        } else if others.contains(&theirs) || others.len() >= 2 {
            out.push(name.clone());
        } else {
            others.push(theirs);
        }
    }
    out
}

impl CheckpointStore {
    /// The store under `DATA_DIR/lake/checkpoints`.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        Self::in_dir(data_dir.join("lake").join("checkpoints"))
    }

    fn in_dir(dir: PathBuf) -> Self {
        CheckpointStore {
            place: Place::Dir(dir),
            keep: 3,
        }
    }

    /// The store at `location`: a local directory, or object storage by URL (`az://CONTAINER/PATH`
    /// and `abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH` with the credentials of the
    /// lake's variables, `AZURE_STORAGE_…`; `file:///PATH`; `memory:///` for tests), so that a
    /// process can continue on another machine.
    pub fn at(location: &str) -> Result<Self, CheckpointError> {
        if !location.contains("://") {
            return Ok(Self::in_dir(PathBuf::from(location)));
        }
        let refused = |reason: String| CheckpointError::Location {
            location: location.to_owned(),
            reason,
        };
        let url = url::Url::parse(location).map_err(|e| refused(e.to_string()))?;
        let (store, prefix) = object_store::parse_url_opts(&url, std::env::vars())
            .map_err(|e| refused(e.to_string()))?;
        Ok(CheckpointStore {
            place: Place::Objects {
                url: location.to_owned(),
                store: Arc::from(store),
                prefix,
            },
            keep: 3,
        })
    }

    /// Where the store is, for messages.
    pub fn location(&self) -> String {
        match &self.place {
            Place::Dir(dir) => dir.display().to_string(),
            Place::Objects { url, .. } => url.clone(),
        }
    }

    fn io(&self, name: &str, source: std::io::Error) -> CheckpointError {
        CheckpointError::Io {
            path: format!("{}/{name}", self.location().trim_end_matches('/')),
            source,
        }
    }

    /// Checkpoints, newest first: sequence numbers and names.
    pub fn list(&self) -> Vec<(u64, String)> {
        let mut found: Vec<(u64, String)> = match &self.place {
            Place::Dir(dir) => std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Place::Objects { store, prefix, .. } => {
                let listed = blocking(async {
                    store
                        .list(Some(prefix))
                        .map_ok(|meta| meta.location.filename().unwrap_or_default().to_owned())
                        .try_collect::<Vec<String>>()
                        .await
                });
                match listed {
                    Ok(names) => names,
                    Err(e) => {
                        warn!(error = %e, "the checkpoints could not be listed");
                        Vec::new()
                    }
                }
            }
        }
        .into_iter()
        .filter_map(|name| Some((seq_of(&name)?, name)))
        .collect();
        found.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
        found
    }

    /// The bytes of the checkpoint `name`.
    fn bytes(&self, name: &str) -> std::io::Result<Vec<u8>> {
        match &self.place {
            Place::Dir(dir) => std::fs::read(dir.join(name)),
            Place::Objects { store, prefix, .. } => blocking(async {
                let got = store.get(&prefix.clone().join(name)).await?;
                got.bytes().await.map(|b| b.to_vec())
            })
            .map_err(std::io::Error::other),
        }
    }

    /// Writes a checkpoint atomically and drops the oldest beyond `keep`; returns its size.
    pub fn write(&self, checkpoint: &Checkpoint) -> Result<u64, CheckpointError> {
        let body = codec::encode(checkpoint)?;
        let existing = self.list();
        let seq = existing.first().map_or(1, |(s, _)| s + 1);
        let name = name_of(seq, &checkpoint.source);
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&(body.len() as u64).to_le_bytes());
        header.extend_from_slice(&Sha256::digest(&body));
        let size = (HEADER + body.len()) as u64;
        match &self.place {
            Place::Dir(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| self.io("", e))?;
                let path = dir.join(&name);
                let tmp = dir.join(format!(".checkpoint-{seq:012}.tmp"));
                std::fs::File::create(&tmp)
                    .and_then(|mut f| {
                        f.write_all(&header)?;
                        f.write_all(&body)?;
                        f.sync_all()
                    })
                    .map_err(|e| self.io(&name, e))?;
                std::fs::rename(&tmp, &path).map_err(|e| self.io(&name, e))?;
                // The rename is durable once the directory is synced.
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
            }
            Place::Objects { store, prefix, .. } => {
                let location = prefix.clone().join(name.as_str());
                let payload: PutPayload = [header, body].into_iter().map(Bytes::from).collect();
                blocking(store.put(&location, payload))
                    .map_err(|e| self.io(&name, std::io::Error::other(e)))?;
            }
        }
        // The new one and the newest `keep - 1` of its run's before it stay, and the newest of
        // the runs before (another cluster layout's, for a rescale).
        for old in to_remove(&existing, &tag_of(&checkpoint.source), self.keep) {
            self.remove(&old);
        }
        Ok(size)
    }

    /// Removes the checkpoint `name`; a failure only leaves an old checkpoint behind.
    fn remove(&self, name: &str) {
        let removed = match &self.place {
            Place::Dir(dir) => std::fs::remove_file(dir.join(name)),
            Place::Objects { store, prefix, .. } => {
                blocking(store.delete(&prefix.clone().join(name))).map_err(std::io::Error::other)
            }
        };
        if let Err(e) = removed {
            warn!(error = %e, "an old checkpoint could not be removed");
        }
    }

    /// Reads and checks the checkpoint `name`.
    pub fn read(&self, name: &str) -> Result<Checkpoint, UnusableCheckpoint> {
        Self::parse(&self.bytes(name)?)
    }

    /// Checks and decodes the bytes of one checkpoint.
    fn parse(bytes: &[u8]) -> Result<Checkpoint, UnusableCheckpoint> {
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
        match self.load_newest_any()? {
            Some(c) if c.source == source => Ok(Some(c)),
            Some(_) => {
                warn!("the newest checkpoint is of another source; starting from empty state");
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// The newest valid checkpoint of the run `identity` (exactly), passing over those of
    /// other runs; `None` when the store has none.
    pub fn load_newest_of(&self, identity: &str) -> Result<Option<Checkpoint>, CheckpointError> {
        let tag = tag_of(identity);
        let names: Vec<(u64, String)> = self
            .list()
            .into_iter()
            .filter(|(_, name)| parse_name(name).is_some_and(|(_, t)| t.is_none_or(|t| t == tag)))
            .collect();
        Ok(self.newest_valid(names)?.filter(|c| c.source == identity))
    }

    /// The newest valid checkpoint of every run the store holds one of (the newest first).
    pub fn load_newest_of_each(&self) -> Result<Vec<Checkpoint>, CheckpointError> {
        // Per tag (`None`: untagged names), the checkpoints newest first.
        type Names = Vec<(u64, String)>;
        let mut by_tag: Vec<(Option<String>, Names)> = Vec::new();
        for (seq, name) in self.list() {
            let tag = parse_name(&name).and_then(|(_, t)| t).map(str::to_owned);
            match by_tag.iter_mut().find(|(t, _)| *t == tag) {
                Some((_, names)) => names.push((seq, name)),
                None => by_tag.push((tag, vec![(seq, name)])),
            }
        }
        let mut out = Vec::new();
        for (_, names) in by_tag {
            if let Some(c) = self.newest_valid(names)? {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// The newest valid checkpoint, of whatever source; torn or corrupt files are skipped
    /// with a warning, a newest checkpoint of an earlier format is an error.
    pub fn load_newest_any(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        self.newest_valid(self.list())
    }

    /// The newest valid checkpoint among `names` (newest first).
    fn newest_valid(
        &self,
        names: Vec<(u64, String)>,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        for (seq, name) in names {
            // Each checkpoint is read once (it may be a download of a hundred megabytes).
            let bytes = self.bytes(&name).map_err(UnusableCheckpoint::Io);
            if bytes
                .as_ref()
                .is_ok_and(|b| EARLIER_FORMATS.iter().any(|m| b.starts_with(*m)))
            {
                return Err(CheckpointError::EarlierFormat {
                    path: format!("{}/{name}", self.location().trim_end_matches('/')),
                });
            }
            match bytes.and_then(|b| Self::parse(&b)) {
                Ok(c) => return Ok(Some(c)),
                Err(reason) => warn!(seq, %reason, "skipping an unusable checkpoint"),
            }
        }
        Ok(None)
    }
}

/// Runs one object-store request to its end on a thread of its own, with a runtime of its own:
/// the checkpoint is written from the ingest thread, and read at start from wherever the
/// pipeline is started, inside an async runtime or not. Checkpoints are seconds apart, so the
/// thread costs nothing that matters.
fn blocking<F, T>(request: F) -> object_store::Result<T>
where
    F: std::future::Future<Output = object_store::Result<T>> + Send,
    T: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| object_store::Error::Generic {
                        store: "checkpoints",
                        source: Box::new(e),
                    })?;
                runtime.block_on(request)
            })
            .join()
            .unwrap_or_else(|_| {
                Err(object_store::Error::Generic {
                    store: "checkpoints",
                    source: "the request's thread panicked".into(),
                })
            })
    })
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
        for (seq, magic) in EARLIER_FORMATS.iter().enumerate() {
            let mut old = magic.to_vec();
            old.extend_from_slice(&[0; HEADER]);
            std::fs::write(
                dir.join(format!(
                    "lake/checkpoints/checkpoint-00000000000{}.bin",
                    seq + 8
                )),
                old,
            )
            .expect("old");
            let err = store.load_newest("file:x").expect_err("refused");
            assert!(
                err.to_string().contains("cds replay --from-bronze"),
                "{err}"
            );
        }
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
        let path = |i: usize| dir.join("lake/checkpoints").join(&files[i].1);
        let mut bytes = std::fs::read(path(0)).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(path(0), &bytes).expect("corrupt");
        assert_eq!(newest("file:x").map(|c| c.ingest[0]), Some(4));
        let torn = std::fs::read(path(1)).expect("read");
        std::fs::write(path(1), &torn[..torn.len() / 2]).expect("tear");
        assert_eq!(newest("file:x").map(|c| c.ingest[0]), Some(3));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn object_storage_keeps_the_newest_three_and_finds_the_newest_valid() {
        let store = CheckpointStore::at("memory:///cds/checkpoints").expect("an object store");
        assert!(store.list().is_empty());
        assert!(store.load_newest("file:x").expect("readable").is_none());
        for n in 1..=5 {
            let size = store.write(&checkpoint(n)).expect("write");
            assert!(size > HEADER as u64);
        }
        let names: Vec<String> = store.list().into_iter().map(|(_, name)| name).collect();
        let tag = tag_of("file:x");
        assert_eq!(
            names,
            [5, 4, 3].map(|n| format!("checkpoint-00000000000{n}-{tag}.bin"))
        );
        let newest = store.load_newest("file:x").expect("readable");
        assert_eq!(newest.map(|c| c.ingest), Some(vec![5; 100]));
        assert!(store.load_newest("file:y").expect("readable").is_none());

        // Another run's checkpoints (another cluster layout) keep the newest of this one's.
        for n in 6..=9 {
            let mut other = checkpoint(n);
            other.source = "file:x (another layout)".into();
            store.write(&other).expect("write");
        }
        let names: Vec<String> = store.list().into_iter().map(|(_, name)| name).collect();
        assert_eq!(
            names.len(),
            4,
            "three of the new run, one of the one before: {names:?}"
        );
        assert_eq!(
            store
                .load_newest_of("file:x")
                .expect("readable")
                .map(|c| c.ingest[0]),
            Some(5)
        );
        assert_eq!(store.load_newest_of_each().expect("readable").len(), 2);
        // An untagged name of an earlier version is still read.
        assert_eq!(parse_name("checkpoint-000000000007.bin"), Some((7, None)));
    }

    #[test]
    fn a_local_path_is_a_directory_and_a_bad_url_is_refused() {
        let store = CheckpointStore::at("some/dir").expect("a directory");
        assert_eq!(store.location(), "some/dir");
        let e = CheckpointStore::at("nosuch://x/y").expect_err("unknown scheme");
        assert!(e.to_string().contains("nosuch://x/y"), "{e}");
    }
}
