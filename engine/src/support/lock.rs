//! One engine per data directory and per local lake. Two engines writing the same SQLite
//! store, checkpoints and Delta tables corrupt each other's exactly-once records, so every
//! command that writes them takes an OS advisory lock on `cds.lock` in the directory first, and
//! a second engine is refused at start with a message naming the holder.
//!
//! The lock is the operating system's (`flock`): it goes with the process, also on `kill -9`,
//! so a file left behind by a crash never blocks a restart. The file's content (the holder's
//! pid, host, command and start time, as JSON) is only there for the refusal message.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The lock file's name, in the data directory and in a local lake's root.
pub const LOCK_FILE: &str = "cds.lock";

/// What a locked directory is to the engine: it names the directory in the refusal message and
/// the flag that chooses another one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    DataDir,
    Lake,
}

impl Held {
    fn what(self) -> &'static str {
        match self {
            Held::DataDir => "data directory",
            Held::Lake => "lake",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Held::DataDir => "--data-dir",
            Held::Lake => "--lake",
        }
    }
}

/// Who holds a directory, as its lock file says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    /// The `cds` command that took the lock (`run`, `ingest`, `replay`).
    pub command: String,
    /// When it took the lock (RFC 3339, UTC).
    pub since: String,
}

impl Holder {
    /// This process, taking a lock now for `command`.
    fn this_process(command: &str) -> Self {
        Holder {
            pid: std::process::id(),
            host: host_name(),
            command: command.to_owned(),
            since: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`cds {}` (pid {} on host {}) since {}",
            self.command, self.pid, self.host, self.since
        )
    }
}

/// Why a directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another engine holds it.
    #[error("{}", in_use(*.held, .dir, .holder.as_ref()))]
    InUse {
        held: Held,
        dir: PathBuf,
        /// `None` when the holder has not written its lock file yet (it has only just started).
        holder: Option<Holder>,
    },
    #[error("locking the {} {}: {source}", .held.what(), .dir.display())]
    Io {
        held: Held,
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// The refusal: which directory, who holds it, and what to do.
fn in_use(held: Held, dir: &Path, holder: Option<&Holder>) -> String {
    let by = match holder {
        Some(h) => h.to_string(),
        None => format!(
            "another engine that has only just started (lock file {})",
            dir.join(LOCK_FILE).display()
        ),
    };
    format!(
        "the {} {} is in use by {by}: stop that engine, or choose another {}",
        held.what(),
        dir.display(),
        held.flag()
    )
}

/// A held lock on one directory; released when dropped (and by the OS when the process ends).
#[derive(Debug)]
pub struct DirLock {
    file: File,
}

impl DirLock {
    /// Creates `dir` (private to the engine's user) if needed and locks it for `command`, or
    /// says who holds it.
    pub fn take(dir: &Path, held: Held, command: &str) -> Result<DirLock, LockError> {
        let io = |source| LockError::Io {
            held,
            dir: dir.to_path_buf(),
            source,
        };
        super::private::create_private_dir(dir).map_err(io)?;
        // Not truncated on open: until the lock is ours, the content is the holder's.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::InUse {
                    held,
                    dir: dir.to_path_buf(),
                    holder: read_holder(&mut file),
                })
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        write_holder(&mut file, &Holder::this_process(command)).map_err(io)?;
        Ok(DirLock { file })
    }
}

impl Drop for DirLock {
    /// Empties the file while the lock is still held, so that it names nobody once the engine
    /// has stopped; closing the file then releases the lock.
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
    }
}

/// The locks of one engine: its data directory and its lake when that is a local directory.
#[derive(Debug)]
pub struct EngineLock {
    /// Kept only to be dropped at the end of the command.
    _held: Vec<DirLock>,
}

impl EngineLock {
    /// Locks `data_dir`, then the lake at `lake` (a location as `--lake` takes it) when it is
    /// a local directory: a lake in object storage (`az://`, `abfss://`, …) is not locked.
    /// A lake inside the data directory is locked too, so that an engine given another data
    /// directory but this lake is refused as well.
    pub fn take(data_dir: &Path, lake: Option<&str>, command: &str) -> Result<Self, LockError> {
        let mut held = vec![DirLock::take(data_dir, Held::DataDir, command)?];
        if let Some(dir) = lake.and_then(local_lake_dir) {
            if !same_dir(data_dir, &dir) {
                held.push(DirLock::take(&dir, Held::Lake, command)?);
            }
        }
        Ok(EngineLock { _held: held })
    }
}

/// The directory of a lake location, when it is on this machine's file system.
pub fn local_lake_dir(location: &str) -> Option<PathBuf> {
    if location.starts_with("file://") {
        return url::Url::parse(location).ok()?.to_file_path().ok();
    }
    (!location.contains("://")).then(|| PathBuf::from(location))
}

/// Whether two existing directories are one (a lock taken twice by one process through two
/// open files would refuse itself).
fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The holder named in a lock file; `None` when it is empty or unreadable.
fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_holder(file: &mut File, holder: &Holder) -> std::io::Result<()> {
    let json = serde_json::to_string(holder).map_err(std::io::Error::other)?;
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(json.as_bytes())?;
    file.write_all(b"\n")
}

/// This machine's name, for the refusal message on a data directory shared over the network.
fn host_name() -> String {
    #[cfg(unix)]
    {
        rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned()
    }
    #[cfg(not(unix))]
    {
        std::env::var("COMPUTERNAME").unwrap_or_else(|_| "unknown".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cds-lock-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_held_directory_is_refused_naming_its_holder_until_released() {
        let dir = scratch("held");
        let first = DirLock::take(&dir, Held::DataDir, "run").expect("a free directory");
        let written: Holder = serde_json::from_str(
            &std::fs::read_to_string(dir.join(LOCK_FILE)).expect("the lock file"),
        )
        .expect("JSON");
        assert_eq!(written.pid, std::process::id());
        assert_eq!(written.command, "run");
        assert!(!written.host.is_empty());

        // A second open file is a second holder, even in one process.
        let e = DirLock::take(&dir, Held::DataDir, "ingest").expect_err("held");
        let LockError::InUse { holder, .. } = &e else {
            panic!("not refused as in use: {e}")
        };
        assert_eq!(holder.as_ref(), Some(&written), "the holder is named");
        let message = e.to_string();
        for part in [
            format!("the data directory {}", dir.display()),
            format!("pid {}", std::process::id()),
            format!("host {}", written.host),
            format!("since {}", written.since),
            "stop that engine, or choose another --data-dir".to_owned(),
        ] {
            assert!(message.contains(&part), "{part:?} in {message}");
        }

        drop(first);
        let again = DirLock::take(&dir, Held::DataDir, "run").expect("free once released");
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_lock_file_left_behind_does_not_hold_the_directory() {
        let dir = scratch("stale");
        std::fs::create_dir_all(&dir).expect("dir");
        let stale =
            r#"{"pid":1,"host":"elsewhere","command":"run","since":"2020-01-01T00:00:00Z"}"#;
        std::fs::write(dir.join(LOCK_FILE), stale).expect("a stale file");
        let lock = DirLock::take(&dir, Held::DataDir, "run").expect("not held by anyone");
        let text = std::fs::read_to_string(dir.join(LOCK_FILE)).expect("the lock file");
        assert!(
            text.contains(&format!("\"pid\":{}", std::process::id())),
            "{text}"
        );
        drop(lock);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_local_lake_is_locked_too_and_object_storage_is_not() {
        let dir = scratch("lake");
        let data = dir.join("data");
        let lake = dir.join("lake");
        let lake_text = lake.display().to_string();
        let engine = EngineLock::take(&data, Some(&lake_text), "run").expect("free");
        assert_eq!(engine._held.len(), 2);
        // Another data directory with the same lake: refused on the lake.
        let e = EngineLock::take(&dir.join("other"), Some(&lake_text), "run").expect_err("held");
        assert!(e.to_string().contains("choose another --lake"), "{e}");
        drop(engine);

        // The lake given as the data directory itself is one lock, not two.
        let data_text = data.display().to_string();
        let engine = EngineLock::take(&data, Some(&data_text), "run").expect("one directory");
        assert_eq!(engine._held.len(), 1);
        drop(engine);

        assert_eq!(local_lake_dir("az://container/cds"), None);
        assert_eq!(local_lake_dir("abfss://c@a.dfs.core.windows.net/cds"), None);
        assert_eq!(local_lake_dir("file:///srv/lake"), Some("/srv/lake".into()));
        assert_eq!(local_lake_dir("lake"), Some("lake".into()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
