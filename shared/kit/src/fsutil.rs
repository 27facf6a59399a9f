//! File helpers shared by all binaries: atomic durable writes (temp, fsync, rename, fsync of
//! the directory), bounded reads, and the client's permission check for its key file (the
//! daemons check the paths they trust with `trust`).
//! Never leaves a half-written target file behind; never follows up a failed write with a rename.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Write `data` to `path` so that after a crash at any instant the file holds either the old
/// or the new content, and once this returns `Ok` the new content survives power loss: write a
/// temp file `.NAME.tmp.PID` beside it (permission bits `mode`, less the umask), fsync(2) it,
/// rename(2) it over `path`, fsync the directory.
///
/// # Errors
/// Any error of those steps, or `InvalidInput` when `path` has no file name. The temp file is
/// removed; `path` holds the old content, or the new one when only the directory's fsync
/// failed (then durability is not promised).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        // A stale temp file from a crashed earlier run with the same pid is ours to replace.
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// fsync(2) a directory so a rename or creation inside it is durable.
///
/// # Errors
/// open(2) or fsync(2) of `dir` failed.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Read at most `max` bytes of a UTF-8 text file; a larger file is an error, not a truncation.
///
/// # Errors
/// open(2) or read(2) failed, the text is not UTF-8 (`InvalidData`), or the file holds more
/// than `max` bytes (`InvalidData`, "larger than MAX bytes").
pub fn read_bounded(path: &Path, max: u64) -> io::Result<String> {
    let f = File::open(path)?;
    let mut s = String::new();
    f.take(max + 1).read_to_string(&mut s)?;
    if s.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(s)
}

/// What is wrong with the permissions of a file that holds a secret; `path` is the path as
/// given, `mode` the permission bits (`st_mode & 0o7777`), and the message carries the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PermError {
    /// Group or others may write it (a `0o022` bit is set).
    #[error("{path} is group- or world-writable (mode {mode:04o}): chmod go-w {path}")]
    Writable {
        /// The path as given.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// Others may read it (the `0o004` bit is set).
    #[error(
        "{path} is world-readable (mode {mode:04o}): chmod 0600 {path} (or 0640 with a trusted group)"
    )]
    WorldReadable {
        /// The path as given.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
}

/// Refuse a secret file that others could change or read, from its metadata's mode bits
/// (owner and group reading is allowed: 0600 and 0640 pass).
///
/// # Errors
/// [`PermError::Writable`] before [`PermError::WorldReadable`] when both apply.
pub fn check_secret_mode(path: &Path, meta: &fs::Metadata) -> Result<(), PermError> {
    let mode = meta.mode() & 0o7777;
    let p = path.display().to_string();
    if mode & 0o022 != 0 {
        return Err(PermError::Writable { path: p, mode });
    }
    if mode & 0o004 != 0 {
        return Err(PermError::WorldReadable { path: p, mode });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("state");
        write_atomic(&p, b"one", 0o600)?;
        write_atomic(&p, b"two", 0o600)?;
        assert_eq!(fs::read(&p)?, b"two");
        assert_eq!(fs::metadata(&p)?.mode() & 0o777, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1);
        Ok(())
    }

    #[test]
    fn atomic_write_into_missing_dir_fails_cleanly() {
        let dir = tempfile::tempdir();
        let dir = match dir {
            Ok(d) => d,
            Err(e) => panic!("tempdir: {e}"),
        };
        assert!(write_atomic(&dir.path().join("nope/state"), b"x", 0o600).is_err());
    }

    #[test]
    fn bounded_read_refuses_large() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("f");
        fs::write(&p, "abcdef")?;
        assert_eq!(read_bounded(&p, 6)?, "abcdef");
        assert!(read_bounded(&p, 5).is_err());
        Ok(())
    }

    #[test]
    fn secret_modes() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("k");
        fs::write(&p, "x")?;
        for (mode, ok) in [
            (0o600, true),
            (0o640, true),
            (0o644, false),
            (0o660, false),
            (0o602, false),
        ] {
            fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
            let r = check_secret_mode(&p, &fs::metadata(&p)?);
            assert_eq!(r.is_ok(), ok, "mode {mode:o}");
            if let Err(e) = r {
                assert!(e.to_string().contains("chmod"), "{e}");
            }
        }
        Ok(())
    }
}
