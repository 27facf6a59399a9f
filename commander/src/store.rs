//! The grant records on disk: one root-only TOML file per grant in `<state_dir>/grants/`,
//! written atomically (temp file, fsync, rename, fsync of the directory), so a crash at any
//! instant leaves the old or the new record; the one-time import of ruroco 0.1.0's undo file;
//! and the boot id that tells a record of an earlier boot. Design: docs/grants.md.
//! It must never write a record it would refuse to load, follow a symlink or block on a FIFO
//! in the grants directory, nor start with a record it cannot read (its access may be open).

use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ruroco_kit::fsutil;
use ruroco_proto::CmdHash;
use serde::Deserialize;

use crate::schedule::{MAX_GRANTS_HARD, Record, Stored, millis, now_unix_ms};

/// Directory of grant records inside `state_dir`.
pub(crate) const GRANTS_DIR: &str = "grants";
/// The pending-undo file of ruroco 0.1.0, imported once at start and then removed.
pub(crate) const LEGACY_UNDO_FILE: &str = "undo";
/// A record file larger than this is refused, at start and before it is written. The config
/// limits keep every record below it: TOML escapes a byte as at most 6 (`\u0001`), so undo
/// text and name take at most 6 × (8 KiB + 256) bytes, plus under 300 of fields.
pub(crate) const MAX_RECORD_BYTES: u64 = 64 * 1024;
/// The 0.1.0 undo file is read up to this size (its own limit).
const MAX_LEGACY_BYTES: u64 = 16 * 1024 * 1024;
/// Where the kernel tells which boot this is (proc(5)).
pub(crate) const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

#[derive(Debug, thiserror::Error)]
pub(crate) enum GrantError {
    #[error(
        "grant record {path} is unreadable ({message}): the access it granted may still be open; run its undo by hand, then delete the file"
    )]
    Corrupt { path: String, message: String },
    #[error("grant state {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Untrusted(ruroco_kit::trust::TrustError),
    #[error(
        "{path} holds more than {MAX_GRANTS_HARD} grant records: not written by ruroco-commander; move the directory aside after undoing what it lists"
    )]
    TooMany { path: String },
    #[error("cannot read the boot id from {BOOT_ID_PATH}: {source}")]
    BootId {
        #[source]
        source: std::io::Error,
    },
}

/// What `Store::load_all` found.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub(crate) records: Vec<Record>,
    /// Entries skipped because the commander cannot have written them (logged as warnings).
    pub(crate) foreign: Vec<PathBuf>,
}

/// Can `name` be a record file (`<command hash, 16 hex digits>_<ip>`)?
fn is_record_name(name: &str) -> bool {
    name.split_once('_').is_some_and(|(hash, ip)| {
        hash.len() == 16
            && hash.bytes().all(|b| b.is_ascii_hexdigit())
            && ip.parse::<IpAddr>().is_ok()
    })
}

/// The grant records on disk.
#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
}

impl Store {
    /// Create `state_dir` (0700) and its `grants/` if missing, then check both with
    /// [`crate::config::STATE_DIR_RULE`] and [`crate::config::GRANTS_DIR_RULE`].
    pub(crate) fn open(state_dir: &Path) -> Result<Self, GrantError> {
        let dir = state_dir.join(GRANTS_DIR);
        for d in [state_dir, dir.as_path()] {
            let p = d.display().to_string();
            if !d.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(d)
                    .map_err(|source| GrantError::Io {
                        path: p.clone(),
                        source,
                    })?;
            }
            // The rules `--check` applies too (owner, mode, extended ACLs, the directories
            // above), so both reach one verdict.
            let rule = if d == state_dir {
                &crate::config::STATE_DIR_RULE
            } else {
                &crate::config::GRANTS_DIR_RULE
            };
            rule.check_path(d, &ruroco_kit::trust::Who::current())
                .map_err(GrantError::Untrusted)?;
        }
        Ok(Self { dir })
    }

    #[cfg(test)]
    fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of one grant: `<cmd hash hex>_<ip>`.
    pub(crate) fn path_of(&self, command: &str, ip: IpAddr) -> PathBuf {
        self.dir.join(format!("{}_{ip}", CmdHash::of_name(command)))
    }

    /// Every record on disk (at most `MAX_GRANTS_HARD`, each at most `MAX_RECORD_BYTES`).
    /// Entries the commander cannot have written (a name not `<16 hex digits>_<ip>`, a
    /// symlink, a directory or another non-regular file) are skipped and listed in `foreign`;
    /// a record file that is not root-owned, writable by others, too large or unreadable
    /// stops start-up (its grant may still be open).
    pub(crate) fn load_all(&self) -> Result<Loaded, GrantError> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let d = self.dir.display().to_string();
        let io = |source| GrantError::Io {
            path: d.clone(),
            source,
        };
        let mut loaded = Loaded::default();
        for entry in std::fs::read_dir(&self.dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // Temp files of an interrupted atomic write start with a dot.
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            if !is_record_name(&name) {
                loaded.foreign.push(path);
                continue;
            }
            if loaded.records.len() >= MAX_GRANTS_HARD {
                return Err(GrantError::TooMany { path: d });
            }
            let p = path.display().to_string();
            let corrupt = |message: String| GrantError::Corrupt {
                path: p.clone(),
                message,
            };
            // No symlink is followed, and a FIFO never blocks the start.
            let flags = nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK;
            let file = match std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(flags.bits())
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                    loaded.foreign.push(path);
                    continue;
                }
                Err(e) => return Err(corrupt(e.to_string())),
            };
            let meta = file.metadata().map_err(|e| corrupt(e.to_string()))?;
            if !meta.is_file() {
                loaded.foreign.push(path);
                continue;
            }
            if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
                return Err(corrupt(format!(
                    "owned by uid {} with mode {:04o}, not a root-owned file only root may write",
                    meta.uid(),
                    meta.mode() & 0o7777
                )));
            }
            let mut text = String::new();
            file.take(MAX_RECORD_BYTES + 1)
                .read_to_string(&mut text)
                .map_err(|e| corrupt(e.to_string()))?;
            if text.len() as u64 > MAX_RECORD_BYTES {
                return Err(corrupt(format!("larger than {MAX_RECORD_BYTES} bytes")));
            }
            let mut r: Record =
                toml::from_str(&text).map_err(|e| corrupt(e.to_string().replace('\n', " ")))?;
            r.ip = ruroco_proto::ip::canonical(r.ip);
            if path != self.path_of(&r.command, r.ip) {
                return Err(corrupt(
                    "file name does not match its command and ip".to_owned(),
                ));
            }
            loaded.records.push(r);
        }
        Ok(loaded)
    }

    /// Entries in the directory (records and anything else), for bounds checks.
    fn entries(&self) -> Result<usize, GrantError> {
        let io = |source| GrantError::Io {
            path: self.dir.display().to_string(),
            source,
        };
        Ok(std::fs::read_dir(&self.dir).map_err(io)?.count())
    }

    /// Durably write one record (temp file, fsync, rename, fsync of the directory).
    pub(crate) fn write(&self, r: &Record) -> Result<(), GrantError> {
        let path = self.path_of(&r.command, r.ip);
        let io = |source| GrantError::Io {
            path: path.display().to_string(),
            source,
        };
        let text = toml::to_string(r).map_err(|e| io(std::io::Error::other(e)))?;
        if text.len() as u64 > MAX_RECORD_BYTES {
            // Never write what the next start would refuse to load.
            return Err(io(std::io::Error::other(format!(
                "record of {} bytes is larger than {MAX_RECORD_BYTES}",
                text.len()
            ))));
        }
        fsutil::write_atomic(&path, text.as_bytes(), 0o600).map_err(io)
    }

    /// Durably remove one record.
    pub(crate) fn remove(&self, command: &str, ip: IpAddr) -> Result<(), GrantError> {
        let path = self.path_of(command, ip);
        let io = |source| GrantError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(e)),
        }
        fsutil::sync_dir(&self.dir).map_err(io)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyFile {
    #[serde(default)]
    undo: Vec<LegacyEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyEntry {
    command: String,
    ip: IpAddr,
    due_unix_ms: u64,
    run: String,
}

/// Import the 0.1.0 pending-undo file `<state_dir>/undo` as active grants of this boot (its
/// entries carry no boot id; an upgrade restarts the commander without a reboot). Each becomes
/// a record on disk before the old file is removed, so a crash in between imports it again.
/// `undo_after_of` gives a command's current `undo_after` (the clamp for its deadline).
pub(crate) fn import_legacy(
    state_dir: &Path,
    store: &Store,
    boot_id: &str,
    undo_after_of: impl Fn(&str) -> Option<Duration>,
) -> Result<usize, GrantError> {
    let path = state_dir.join(LEGACY_UNDO_FILE);
    let p = path.display().to_string();
    let text = match fsutil::read_bounded(&path, MAX_LEGACY_BYTES) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(GrantError::Corrupt {
                path: p,
                message: e.to_string(),
            });
        }
    };
    let file: LegacyFile = toml::from_str(&text).map_err(|e| GrantError::Corrupt {
        path: p.clone(),
        message: e.to_string().replace('\n', " "),
    })?;
    let now = now_unix_ms();
    let n = file.undo.len();
    // Checked before writing anything: an import must never leave more records than a start
    // loads.
    if n.saturating_add(store.entries()?) > MAX_GRANTS_HARD {
        return Err(GrantError::Corrupt {
            path: p,
            message: format!(
                "{n} entries, more than the {MAX_GRANTS_HARD} grant records a start loads"
            ),
        });
    }
    for e in file.undo {
        let ip = ruroco_proto::ip::canonical(e.ip);
        // Without a known undo_after, the old deadline itself bounds how long it stays open.
        let after = undo_after_of(&e.command).map_or(e.due_unix_ms.saturating_sub(now), millis);
        store.write(&Record {
            command: e.command,
            ip,
            undo: e.run,
            undo_after_ms: after,
            boot_id: boot_id.to_owned(),
            state: Stored::Active,
            since_unix_ms: now,
            deadline_unix_ms: e.due_unix_ms,
            run_as: None,
        })?;
    }
    std::fs::remove_file(&path)
        .and_then(|()| fsutil::sync_dir(state_dir))
        .map_err(|source| GrantError::Io { path: p, source })?;
    Ok(n)
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`, proc(5)).
pub(crate) fn boot_id() -> Result<String, GrantError> {
    std::fs::read_to_string(BOOT_ID_PATH)
        .map(|s| s.trim().to_owned())
        .map_err(|source| GrantError::BootId { source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::tests::record;
    use crate::schedule::{Grants, MAX_COMMAND_NAME_BYTES, MAX_UNDO_TEXT_BYTES};

    const AFTER: Duration = Duration::from_secs(300);

    #[test]
    fn store_round_trip_and_refusals() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let st = Store::open(dir.path()).unwrap();
        let r = record("b", Stored::Active, 42);
        st.write(&r).unwrap();
        let mode = std::fs::metadata(st.path_of(&r.command, r.ip))
            .unwrap()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(st.load_all().unwrap().records, vec![r.clone()]);
        st.remove(&r.command, r.ip).unwrap();
        assert!(st.load_all().unwrap().records.is_empty());
        // Not ours: skipped (and warned about), never run.
        std::fs::write(st.dir().join("README"), "hi").unwrap();
        std::fs::write(st.dir().join("x~"), "command = 1").unwrap();
        std::fs::create_dir(st.dir().join("0123456789abcdef_192.0.2.9")).unwrap();
        std::os::unix::fs::symlink(
            st.dir().join("README"),
            st.path_of("open", "192.0.2.8".parse().unwrap()),
        )
        .unwrap();
        let l = st.load_all().unwrap();
        assert!(l.records.is_empty());
        assert_eq!(l.foreign.len(), 4, "{:?}", l.foreign);
        // Ours but unreadable: start-up stops.
        let p = st.path_of("open", "192.0.2.7".parse().unwrap());
        std::fs::write(&p, "command = 1").unwrap();
        let e = st.load_all().unwrap_err().to_string();
        assert!(e.contains("run its undo by hand"), "{e}");
        st.write(&r).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o622)).unwrap();
        let e = st.load_all().unwrap_err().to_string();
        assert!(e.contains("mode 0622"), "{e}");
    }

    #[test]
    fn a_record_at_the_limits_loads_again() {
        let dir = tempfile::tempdir().unwrap();
        let st = Store::open(dir.path()).unwrap();
        let mut r = record("b", Stored::Active, u64::MAX);
        // Control characters: the longest escapes TOML writes.
        r.undo = "\u{1}".repeat(MAX_UNDO_TEXT_BYTES);
        r.command = "\u{2}".repeat(MAX_COMMAND_NAME_BYTES);
        r.boot_id = boot_id().unwrap();
        r.undo_after_ms = u64::MAX;
        r.ip = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe".parse().unwrap();
        st.write(&r).unwrap();
        assert_eq!(st.load_all().unwrap().records, vec![r.clone()]);
        r.undo.push_str(&"\u{1}".repeat(4 * MAX_UNDO_TEXT_BYTES));
        let e = st.write(&r).unwrap_err().to_string();
        assert!(e.contains("larger than"), "refused before writing: {e}");
        assert_eq!(st.load_all().unwrap().records.len(), 1);
    }

    #[test]
    fn legacy_undo_file_is_imported_once() {
        let dir = tempfile::tempdir().unwrap();
        let st = Store::open(dir.path()).unwrap();
        let far = now_unix_ms() + 86_400_000;
        std::fs::write(
            dir.path().join(LEGACY_UNDO_FILE),
            format!("[[undo]]\ncommand = \"open\"\nip = \"::ffff:192.0.2.7\"\ndue_unix_ms = {far}\nrun = \"close\"\n"),
        )
        .unwrap();
        let n = import_legacy(dir.path(), &st, "this", |_| Some(AFTER)).unwrap();
        assert_eq!(n, 1);
        assert!(!dir.path().join(LEGACY_UNDO_FILE).exists());
        let loaded = st.load_all().unwrap().records;
        assert_eq!(loaded[0].ip, "192.0.2.7".parse::<IpAddr>().unwrap());
        let mut g = Grants::new("this".into(), 10);
        let cut = g.load(loaded[0].clone(), crate::schedule::Now::read());
        assert!(cut.is_some(), "a day away, undo_after is 5 min: cut");
        assert_eq!(import_legacy(dir.path(), &st, "this", |_| None).unwrap(), 0);
    }

    #[test]
    fn a_legacy_file_larger_than_a_start_loads_is_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let st = Store::open(dir.path()).unwrap();
        let mut text = String::new();
        for i in 0..=MAX_GRANTS_HARD {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i as u32);
            text.push_str(&format!(
                "[[undo]]\ncommand=\"c\"\nip=\"{ip}\"\ndue_unix_ms=1\nrun=\"u\"\n"
            ));
        }
        std::fs::write(dir.path().join(LEGACY_UNDO_FILE), text).unwrap();
        let e = import_legacy(dir.path(), &st, "b", |_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("65537 entries"), "{e}");
        assert!(dir.path().join(LEGACY_UNDO_FILE).exists(), "kept");
        assert_eq!(st.entries().unwrap(), 0, "nothing written");
    }
}
