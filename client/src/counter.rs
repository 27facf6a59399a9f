//! The client's state: where it lives, the single-instance lock, and the replay counter.
//! Never lets the counter go backwards during a send, and never writes it non-atomically.

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ruroco_kit::fsutil;

/// Name of the counter file inside the state directory.
pub const COUNTER_FILE: &str = "counter";
/// Name of the lock file inside the state directory.
pub const LOCK_FILE: &str = "counter.lock";
/// A counter file is one decimal u128 (at most 39 digits) and a newline; anything much
/// larger is not a counter file and is not read whole.
const COUNTER_MAX_LEN: u64 = 64;
/// Mode of the state directory when the client creates it.
const STATE_DIR_MODE: u32 = 0o700;
/// Mode of the counter and lock files.
const STATE_FILE_MODE: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum CounterError {
    #[error(
        "no state directory: neither XDG_STATE_HOME nor HOME is set to an absolute path; pass --state-dir DIR"
    )]
    NoStateDir,
    #[error(
        "state directory {path}: cannot create: {source} (pass --state-dir DIR to use another)"
    )]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("state directory {path} {detail}")]
    UnsafeDir { path: PathBuf, detail: String },
    #[error("lock file {path}: cannot open: {source} (check the state directory's permissions)")]
    OpenLock { path: PathBuf, source: io::Error },
    #[error("lock file {path} {detail}: remove it (rm {path}); the client makes a new one")]
    UnsafeLock { path: PathBuf, detail: String },
    #[error("lock file {path}: cannot lock: {source}")]
    Lock { path: PathBuf, source: Errno },
    #[error("counter file {path}: cannot read: {source} (check its permissions)")]
    Read { path: PathBuf, source: io::Error },
    #[error("counter file {path} is corrupt ({detail}): run `ruroco-client reseed` to reset it")]
    Corrupt { path: PathBuf, detail: String },
    #[error("counter file {path}: cannot write: {source} (check free space and permissions)")]
    Write { path: PathBuf, source: io::Error },
}

/// Where the client keeps its state: `--state-dir`, else `$XDG_STATE_HOME/ruroco`, else
/// `$HOME/.local/state/ruroco`. Relative XDG/HOME values are ignored, as the XDG spec asks.
pub fn state_dir(
    cli: Option<&Path>,
    xdg_state_home: Option<&str>,
    home: Option<&str>,
) -> Result<PathBuf, CounterError> {
    if let Some(dir) = cli {
        return Ok(dir.to_owned());
    }
    if let Some(xdg) = absolute(xdg_state_home) {
        return Ok(xdg.join("ruroco"));
    }
    if let Some(home) = absolute(home) {
        return Ok(home.join(".local/state/ruroco"));
    }
    Err(CounterError::NoStateDir)
}

fn absolute(v: Option<&str>) -> Option<&Path> {
    v.map(Path::new).filter(|p| p.is_absolute())
}

/// The state directory from the command line and the process environment.
pub fn state_dir_from_env(cli: Option<&Path>) -> Result<PathBuf, CounterError> {
    let xdg = std::env::var("XDG_STATE_HOME").ok();
    let home = std::env::var("HOME").ok();
    state_dir(cli, xdg.as_deref(), home.as_deref())
}

/// Nanoseconds since the Unix epoch (0 for a clock set before 1970).
pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// The counter for the next send: one past the stored value, or the clock if that is later.
/// `None` when the stored value cannot be exceeded (only a corrupt or hostile file does that).
pub fn next_counter(stored: u128, now: u128) -> Option<u128> {
    stored.checked_add(1).map(|n| n.max(now))
}

/// Parse the text of a counter file: one decimal u128, surrounding whitespace ignored.
pub fn parse_counter(text: &str) -> Result<u128, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty".to_owned());
    }
    if !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a decimal number".to_owned());
    }
    t.parse::<u128>()
        .map_err(|_| "number larger than 128 bits".to_owned())
}

/// The state directory with its exclusive lock held; the lock is released on drop.
#[derive(Debug)]
pub struct LockedState {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl LockedState {
    /// Create the state directory if needed (0700) and take the exclusive lock, waiting for
    /// another running `ruroco-client` to finish. `on_wait` runs once if we have to wait.
    pub fn acquire(dir: &Path, on_wait: impl FnOnce(&Path)) -> Result<Self, CounterError> {
        // `link/` would resolve the link before any check could see it.
        let dir = &without_trailing_slashes(dir);
        if let Err(source) = DirBuilder::new()
            .recursive(true)
            .mode(STATE_DIR_MODE)
            .create(dir)
        {
            // Something is there but is no directory (a file, a link to one): say so.
            if fs::symlink_metadata(dir).is_ok() {
                check_state_dir(dir, euid())?;
            }
            return Err(CounterError::CreateDir {
                path: dir.to_owned(),
                source,
            });
        }
        check_state_dir(dir, euid())?;
        let path = dir.join(LOCK_FILE);
        // Never follow a link here: a planted or dangling one would make us create or lock a
        // file elsewhere (with root's rights when root runs the client).
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(STATE_FILE_MODE)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
            .open(&path)
            .map_err(|source| {
                if source.raw_os_error() == Some(Errno::ELOOP as i32) {
                    CounterError::UnsafeLock {
                        path: path.clone(),
                        detail: "is a symbolic link".to_owned(),
                    }
                } else if source.kind() == io::ErrorKind::PermissionDenied {
                    // Our directory, someone else's (or a read-only) lock file in it.
                    let detail = match fs::symlink_metadata(&path) {
                        Ok(m) if m.uid() != euid() => format!(
                            "is owned by uid {}, not by uid {} who runs the client",
                            m.uid(),
                            euid()
                        ),
                        _ => format!("cannot be opened for writing ({source})"),
                    };
                    CounterError::UnsafeLock {
                        path: path.clone(),
                        detail,
                    }
                } else {
                    CounterError::OpenLock {
                        path: path.clone(),
                        source,
                    }
                }
            })?;
        let meta = file.metadata().map_err(|source| CounterError::OpenLock {
            path: path.clone(),
            source,
        })?;
        if let Some(detail) = foreign_file(&meta, euid()) {
            return Err(CounterError::UnsafeLock { path, detail });
        }
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((file, Errno::EWOULDBLOCK)) => {
                on_wait(&path);
                lock_blocking(file, &path)?
            }
            Err((_, source)) => return Err(CounterError::Lock { path, source }),
        };
        Ok(Self {
            dir: dir.to_owned(),
            _lock: lock,
        })
    }

    pub fn counter_path(&self) -> PathBuf {
        self.dir.join(COUNTER_FILE)
    }

    /// The stored counter; a missing file is 0, anything unparsable is an error naming the fix.
    /// A link, a non-file or a file of another user is refused, never followed or trusted.
    pub fn read(&self) -> Result<u128, CounterError> {
        let path = self.counter_path();
        let corrupt = |detail: String| CounterError::Corrupt {
            path: path.clone(),
            detail,
        };
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) if e.raw_os_error() == Some(Errno::ELOOP as i32) => {
                return Err(corrupt("a symbolic link".to_owned()));
            }
            Err(source) => return Err(CounterError::Read { path, source }),
        };
        let meta = file.metadata().map_err(|source| CounterError::Read {
            path: path.clone(),
            source,
        })?;
        if let Some(detail) = foreign_file(&meta, euid()) {
            return Err(corrupt(detail));
        }
        let mut text = String::new();
        file.take(COUNTER_MAX_LEN + 1)
            .read_to_string(&mut text)
            .map_err(|source| {
                if source.kind() == io::ErrorKind::InvalidData {
                    corrupt(source.to_string())
                } else {
                    CounterError::Read {
                        path: path.clone(),
                        source,
                    }
                }
            })?;
        if text.len() as u64 > COUNTER_MAX_LEN {
            return Err(corrupt(format!("larger than {COUNTER_MAX_LEN} bytes")));
        }
        parse_counter(&text).map_err(corrupt)
    }

    /// Persist `value` atomically and durably (temp file, fsync, rename, fsync of the dir).
    pub fn write(&self, value: u128) -> Result<(), CounterError> {
        let path = self.counter_path();
        fsutil::write_atomic(&path, format!("{value}\n").as_bytes(), STATE_FILE_MODE)
            .map_err(|source| CounterError::Write { path, source })
    }

    /// Take the counter for one send: max(stored + 1, now), persisted before it is returned.
    pub fn advance(&self, now: u128) -> Result<u128, CounterError> {
        let stored = self.read()?;
        let next = next_counter(stored, now).ok_or_else(|| CounterError::Corrupt {
            path: self.counter_path(),
            detail: "at its maximum value".to_owned(),
        })?;
        self.write(next)?;
        Ok(next)
    }
}

/// The effective uid: the state must belong to whoever runs the client.
fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Why a state file cannot be trusted (not a regular file, or another user's), if it cannot.
fn foreign_file(meta: &fs::Metadata, uid: u32) -> Option<String> {
    if !meta.is_file() {
        return Some("is not a regular file".to_owned());
    }
    (meta.uid() != uid).then(|| format!("is owned by uid {}, not by uid {uid}", meta.uid()))
}

/// `path` without trailing slashes (`/` stays `/`), so a symbolic link is seen as one.
pub fn without_trailing_slashes(path: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    let mut end = bytes.len();
    while end > 1 && bytes[end - 1] == b'/' {
        end -= 1;
    }
    PathBuf::from(std::ffi::OsStr::from_bytes(&bytes[..end]))
}

/// Refuse a state directory that is a link, is another user's, or others may write to, the
/// way the daemons check theirs: whoever can write there can move our counter.
pub fn check_state_dir(dir: &Path, uid: u32) -> Result<(), CounterError> {
    let meta = fs::symlink_metadata(dir).map_err(|source| CounterError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    let p = dir.display();
    let detail = if meta.file_type().is_symlink() {
        "is a symbolic link: pass the real directory with --state-dir".to_owned()
    } else if !meta.is_dir() {
        "is not a directory: pass --state-dir DIR".to_owned()
    } else if meta.uid() != uid {
        format!(
            "is owned by uid {}, not by uid {uid} who runs the client: chown {uid} {p} (or pass --state-dir DIR)",
            meta.uid()
        )
    } else if meta.mode() & 0o022 != 0 {
        format!(
            "is writable by group or others (mode {:04o}): chmod 0700 {p}",
            meta.mode() & 0o7777
        )
    } else {
        return Ok(());
    };
    Err(CounterError::UnsafeDir {
        path: dir.to_owned(),
        detail,
    })
}

fn lock_blocking(mut file: File, path: &Path) -> Result<Flock<File>, CounterError> {
    loop {
        match Flock::lock(file, FlockArg::LockExclusive) {
            Ok(lock) => return Ok(lock),
            Err((f, Errno::EINTR)) => file = f,
            Err((_, source)) => {
                return Err(CounterError::Lock {
                    path: path.to_owned(),
                    source,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn state_dir_precedence() {
        let cli = Path::new("/x/cli");
        assert_eq!(
            state_dir(Some(cli), Some("/xdg"), Some("/home/u")).unwrap(),
            PathBuf::from("/x/cli")
        );
        assert_eq!(
            state_dir(None, Some("/xdg"), Some("/home/u")).unwrap(),
            PathBuf::from("/xdg/ruroco")
        );
        assert_eq!(
            state_dir(None, Some(""), Some("/home/u")).unwrap(),
            PathBuf::from("/home/u/.local/state/ruroco")
        );
        assert_eq!(
            state_dir(None, Some("relative"), Some("/home/u")).unwrap(),
            PathBuf::from("/home/u/.local/state/ruroco")
        );
        assert!(matches!(
            state_dir(None, None, None),
            Err(CounterError::NoStateDir)
        ));
    }

    #[test]
    fn next_counter_rules() {
        assert_eq!(next_counter(0, 100), Some(100));
        assert_eq!(next_counter(100, 100), Some(101));
        assert_eq!(next_counter(500, 100), Some(501));
        assert_eq!(next_counter(u128::MAX, 1), None);
    }

    #[test]
    fn parse_counter_accepts_decimal_only() {
        assert_eq!(parse_counter("42\n"), Ok(42));
        assert_eq!(parse_counter("  7 "), Ok(7));
        assert!(parse_counter("").is_err());
        assert!(parse_counter("-1").is_err());
        assert!(parse_counter("+1").is_err());
        assert!(parse_counter("12abc").is_err());
        assert!(parse_counter(&"9".repeat(40)).is_err());
    }

    #[test]
    fn advance_persists_and_is_monotonic() {
        let dir = tempfile::tempdir().unwrap();
        let sd = dir.path().join("a/b/ruroco");
        let st = LockedState::acquire(&sd, |_| {}).unwrap();
        assert_eq!(
            fs::metadata(&sd).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(st.read().unwrap(), 0);
        assert_eq!(st.advance(1000).unwrap(), 1000);
        assert_eq!(st.advance(10).unwrap(), 1001);
        assert_eq!(fs::read_to_string(st.counter_path()).unwrap(), "1001\n");
        let mode = fs::metadata(st.counter_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn corrupt_counter_names_file_and_fix() {
        let dir = tempfile::tempdir().unwrap();
        let st = LockedState::acquire(dir.path(), |_| {}).unwrap();
        fs::write(st.counter_path(), "garbage").unwrap();
        let e = st.advance(1).unwrap_err().to_string();
        assert!(e.contains("reseed"), "{e}");
        assert!(e.contains(&st.counter_path().display().to_string()), "{e}");
        fs::write(st.counter_path(), "1".repeat(100)).unwrap();
        assert!(matches!(st.read(), Err(CounterError::Corrupt { .. })));
    }

    #[test]
    fn dangling_lock_link_is_refused_and_nothing_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let sd = dir.path().join("state");
        fs::create_dir(&sd).unwrap();
        fs::set_permissions(&sd, fs::Permissions::from_mode(0o700)).unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&elsewhere, sd.join(LOCK_FILE)).unwrap();
        let e = LockedState::acquire(&sd, |_| {}).unwrap_err();
        assert!(matches!(e, CounterError::UnsafeLock { .. }), "{e}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(!elsewhere.exists(), "followed the link");
    }

    #[test]
    fn counter_link_is_refused_and_write_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let st = LockedState::acquire(&dir.path().join("s"), |_| {}).unwrap();
        let target = dir.path().join("target");
        fs::write(&target, "5\n").unwrap();
        std::os::unix::fs::symlink(&target, st.counter_path()).unwrap();
        let e = st.advance(1).unwrap_err().to_string();
        assert!(e.contains("symbolic link") && e.contains("reseed"), "{e}");
        st.write(9).unwrap();
        assert_eq!(st.read().unwrap(), 9);
        assert_eq!(fs::read_to_string(&target).unwrap(), "5\n");
    }

    #[test]
    fn state_dir_of_another_user_or_writable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sd = dir.path().join("s");
        fs::create_dir(&sd).unwrap();
        fs::set_permissions(&sd, fs::Permissions::from_mode(0o700)).unwrap();
        let me = euid();
        check_state_dir(&sd, me).unwrap();
        let e = check_state_dir(&sd, me.wrapping_add(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("chown"), "{e}");
        fs::set_permissions(&sd, fs::Permissions::from_mode(0o777)).unwrap();
        let e = LockedState::acquire(&sd, |_| {}).unwrap_err().to_string();
        assert!(e.contains("chmod 0700"), "{e}");
        assert!(!sd.join(LOCK_FILE).exists());
        let link = dir.path().join("link");
        fs::set_permissions(&sd, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&sd, &link).unwrap();
        let e = check_state_dir(&link, me).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        // A trailing slash must not make the link look like the directory it points to.
        let mut slashed = link.clone().into_os_string();
        slashed.push("//");
        let e = LockedState::acquire(Path::new(&slashed), |_| {}).unwrap_err();
        assert!(matches!(e, CounterError::UnsafeDir { .. }), "{e}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(!sd.join(LOCK_FILE).exists(), "locked through the link");
    }

    #[test]
    fn a_regular_file_as_state_dir_is_not_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("passwd");
        fs::write(&f, "root:x:0:0\n").unwrap();
        let e = LockedState::acquire(&f, |_| {}).unwrap_err();
        assert!(matches!(e, CounterError::UnsafeDir { .. }), "{e}");
        assert!(e.to_string().contains("is not a directory"), "{e}");
        assert_eq!(without_trailing_slashes(Path::new("/")), PathBuf::from("/"));
        assert_eq!(
            without_trailing_slashes(Path::new("/a/b//")),
            PathBuf::from("/a/b")
        );
    }
}
