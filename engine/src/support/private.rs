//! Files private to the engine's user. The data directory holds raw patient data (dead
//! letters, quarantined records, Bronze and Silver, the MLLP log, ingested extracts, the
//! SQLite stores, the audit log) and the pseudonym key, so nobody else on the machine may read
//! it: the directory is 0700 and every file the process creates is 0600.

use std::path::Path;

/// Makes every file and directory this process creates from now on private to its user
/// (umask 077), whichever library creates it (SQLite, the lake's object store, the writers of
/// this crate). Called once at start by the command line.
pub fn restrict_new_files() {
    #[cfg(unix)]
    {
        use rustix::fs::Mode;
        rustix::process::umask(Mode::from_raw_mode(0o077));
    }
}

/// Creates `dir` (and its parents) private to the engine's user, and takes group and other
/// access away from it when it already exists with them.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700))?;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Writes a new file readable and writable by the engine's user only; fails if it exists.
pub fn write_new_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}

/// The permission bits that give group or others access to `path`, if any (0 when private,
/// always 0 where the platform has no such bits).
pub fn shared_mode_bits(path: &Path) -> std::io::Result<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        Ok(std::fs::metadata(path)?.permissions().mode() & 0o077)
    }
    #[cfg(not(unix))]
    {
        let _ = std::fs::metadata(path)?;
        Ok(0)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_dir_and_file() {
        let dir = std::env::temp_dir().join(format!("cds-private-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        create_private_dir(&dir).expect("private");
        let mode = std::fs::metadata(&dir).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let file = dir.join("secret");
        write_new_private(&file, b"x").expect("write");
        assert_eq!(shared_mode_bits(&file).expect("mode"), 0);
        assert!(write_new_private(&file, b"y").is_err(), "never overwrites");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(shared_mode_bits(&file).expect("mode"), 0o044);
        let _ = std::fs::remove_dir_all(dir);
    }
}
