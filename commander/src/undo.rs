//! Pending undos: the in-memory schedule and its root-only state file `<state_dir>/undo`.
//! Never drops a pending undo silently: a corrupt file stops start-up, and an entry leaves the
//! file only after its undo ran.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ruroco_shared::fsutil;
use serde::{Deserialize, Serialize};

/// File name of the undo state inside `state_dir`.
pub const UNDO_FILE: &str = "undo";
/// A state file larger than this is refused (each entry is a few hundred bytes).
pub const MAX_UNDO_FILE_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum UndoError {
    #[error(
        "undo state {path} is corrupt ({message}): pending undos would be lost; fix or move the file aside after running its undo commands by hand"
    )]
    Corrupt { path: String, message: String },
    #[error("undo state {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "state_dir {path} must be a root-owned directory without group/other write access: chown root {path} && chmod 0700 {path}"
    )]
    UnsafeDir { path: String },
}

/// One pending undo, exactly as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub command: String,
    pub ip: IpAddr,
    pub due_unix_ms: u64,
    /// The undo text at schedule time, so a later config change still undoes what was done.
    pub run: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UndoFile {
    #[serde(default)]
    undo: Vec<Entry>,
}

type Key = (String, IpAddr);

/// The schedule: one entry per (command, ip); entries being undone right now are in flight.
#[derive(Debug, Default)]
pub struct Schedule {
    entries: BTreeMap<Key, Entry>,
    in_flight: BTreeSet<Key>,
}

/// What `schedule` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduled {
    New,
    Extended,
}

impl Schedule {
    /// Add an undo, or push the deadline of the pending one for the same command and IP.
    pub fn schedule(
        &mut self,
        command: &str,
        ip: IpAddr,
        run: &str,
        due_unix_ms: u64,
    ) -> Scheduled {
        let key = (command.to_owned(), ip);
        let in_flight = self.in_flight.contains(&key);
        match self.entries.get_mut(&key) {
            Some(e) => {
                // Never move a deadline earlier. While the undo runs, a repeat request keeps the
                // entry alive because `finished` only removes an entry whose deadline it ran.
                let later = due_unix_ms.max(e.due_unix_ms);
                e.due_unix_ms = if in_flight && later == e.due_unix_ms {
                    later.saturating_add(1)
                } else {
                    later
                };
                e.run = run.to_owned();
                Scheduled::Extended
            }
            None => {
                self.entries.insert(
                    key,
                    Entry {
                        command: command.to_owned(),
                        ip,
                        due_unix_ms,
                        run: run.to_owned(),
                    },
                );
                Scheduled::New
            }
        }
    }

    /// The pending entry for (command, ip), if any.
    pub fn get(&self, command: &str, ip: IpAddr) -> Option<Entry> {
        self.entries.get(&(command.to_owned(), ip)).cloned()
    }

    /// Is the undo for (command, ip) running right now?
    pub fn is_in_flight(&self, command: &str, ip: IpAddr) -> bool {
        self.in_flight.contains(&(command.to_owned(), ip))
    }

    /// Put back what `get` returned (undo a `schedule` whose persist failed).
    pub fn restore(&mut self, command: &str, ip: IpAddr, entry: Option<Entry>) {
        let key = (command.to_owned(), ip);
        match entry {
            Some(e) => {
                self.entries.insert(key, e);
            }
            None => {
                self.entries.remove(&key);
            }
        }
    }

    /// Entries due at `now` that are not already running; they become in flight.
    pub fn take_due(&mut self, now_unix_ms: u64) -> Vec<Entry> {
        let due: Vec<Entry> = self
            .entries
            .iter()
            .filter(|(k, e)| e.due_unix_ms <= now_unix_ms && !self.in_flight.contains(*k))
            .map(|(_, e)| e.clone())
            .collect();
        for e in &due {
            self.in_flight.insert((e.command.clone(), e.ip));
        }
        due
    }

    /// The undo `ran` finished: remove its entry unless a repeat request extended it meanwhile.
    pub fn finished(&mut self, ran: &Entry) {
        let key = (ran.command.clone(), ran.ip);
        self.in_flight.remove(&key);
        if self
            .entries
            .get(&key)
            .is_some_and(|e| e.due_unix_ms == ran.due_unix_ms)
        {
            self.entries.remove(&key);
        }
    }

    /// The earliest deadline of an entry not in flight.
    pub fn next_due(&self) -> Option<u64> {
        self.entries
            .iter()
            .filter(|(k, _)| !self.in_flight.contains(*k))
            .map(|(_, e)| e.due_unix_ms)
            .min()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn to_toml(&self) -> Result<String, String> {
        let file = UndoFile {
            undo: self.entries.values().cloned().collect(),
        };
        toml::to_string(&file).map_err(|e| e.to_string())
    }

    pub fn from_toml(text: &str) -> Result<Self, String> {
        let file: UndoFile = toml::from_str(text).map_err(|e| e.to_string().replace('\n', " "))?;
        let mut s = Self::default();
        for e in file.undo {
            let ip = ruroco_shared::ip::canonical(e.ip);
            s.schedule(&e.command, ip, &e.run, e.due_unix_ms);
        }
        Ok(s)
    }
}

/// The schedule bound to its file.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    pub schedule: Schedule,
}

impl Store {
    /// Create `state_dir` (0700) if missing, check it, and load `undo` if it exists.
    pub fn open(state_dir: &Path) -> Result<Self, UndoError> {
        let d = state_dir.display().to_string();
        if !state_dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(state_dir)
                .map_err(|source| UndoError::Io {
                    path: d.clone(),
                    source,
                })?;
        }
        let meta = std::fs::metadata(state_dir).map_err(|source| UndoError::Io {
            path: d.clone(),
            source,
        })?;
        if !meta.is_dir() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
            return Err(UndoError::UnsafeDir { path: d });
        }
        let path = state_dir.join(UNDO_FILE);
        let p = path.display().to_string();
        let schedule = match fsutil::read_bounded(&path, MAX_UNDO_FILE_BYTES) {
            Ok(text) => Schedule::from_toml(&text).map_err(|message| UndoError::Corrupt {
                path: p.clone(),
                message,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Schedule::default(),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(UndoError::Corrupt {
                    path: p,
                    message: e.to_string(),
                });
            }
            Err(source) => return Err(UndoError::Io { path: p, source }),
        };
        Ok(Self { path, schedule })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bytes to persist now (written by `write`, possibly off the async thread).
    pub fn snapshot(&self) -> Result<(PathBuf, String), UndoError> {
        let text = self.schedule.to_toml().map_err(|e| UndoError::Io {
            path: self.path.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        Ok((self.path.clone(), text))
    }
}

/// Durably replace the state file (0600).
pub fn write(path: &Path, text: &str) -> Result<(), UndoError> {
    fsutil::write_atomic(path, text.as_bytes(), 0o600).map_err(|source| UndoError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Wall-clock milliseconds since the epoch (undo deadlines survive restarts, so not monotonic).
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn repeat_extends_instead_of_stacking() {
        let mut s = Schedule::default();
        assert_eq!(s.schedule("a", ip("192.0.2.7"), "u", 1000), Scheduled::New);
        assert_eq!(
            s.schedule("a", ip("192.0.2.7"), "u", 2000),
            Scheduled::Extended
        );
        assert_eq!(s.schedule("a", ip("192.0.2.8"), "u", 1500), Scheduled::New);
        assert_eq!(s.len(), 2);
        assert_eq!(s.next_due(), Some(1500));
        assert!(s.take_due(1499).is_empty());
        let due = s.take_due(2000);
        assert_eq!(due.len(), 2);
        assert_eq!(s.next_due(), None, "in-flight entries are not due again");
        assert!(s.take_due(3000).is_empty());
        for e in &due {
            s.finished(e);
        }
        assert!(s.is_empty());
    }

    #[test]
    fn extension_while_running_keeps_the_entry() {
        let mut s = Schedule::default();
        s.schedule("a", ip("2001:db8::1"), "u", 1000);
        let due = s.take_due(1000);
        s.schedule("a", ip("2001:db8::1"), "u", 5000);
        s.finished(&due[0]);
        assert_eq!(s.len(), 1);
        assert_eq!(s.next_due(), Some(5000));
    }

    #[test]
    fn toml_round_trip_and_format() {
        let mut s = Schedule::default();
        s.schedule(
            "open_ssh",
            ip("192.0.2.7"),
            "nft delete $RUROCO_IP",
            1790000000000,
        );
        let text = s.to_toml().unwrap();
        assert!(text.contains("[[undo]]"), "{text}");
        assert!(text.contains("command = \"open_ssh\""), "{text}");
        assert!(text.contains("ip = \"192.0.2.7\""), "{text}");
        assert!(text.contains("due_unix_ms = 1790000000000"), "{text}");
        let back = Schedule::from_toml(&text).unwrap();
        assert_eq!(back.entries, s.entries);
        assert!(Schedule::from_toml("").unwrap().is_empty());
        assert!(Schedule::from_toml("[[undo]]\ncommand = 1").is_err());
        assert!(Schedule::from_toml("garbage").is_err());
    }

    #[test]
    fn store_refuses_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(UNDO_FILE), "[[undo]]\nnope = 1\n").unwrap();
        let e = Store::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("corrupt") && e.contains(UNDO_FILE), "{e}");
    }

    #[test]
    fn store_persists() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = Store::open(dir.path()).unwrap();
        st.schedule.schedule("x", ip("10.0.0.1"), "true", 42);
        let (p, t) = st.snapshot().unwrap();
        write(&p, &t).unwrap();
        let st2 = Store::open(dir.path()).unwrap();
        assert_eq!(st2.schedule.len(), 1);
        assert_eq!(std::fs::metadata(st2.path()).unwrap().mode() & 0o777, 0o600);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_state_text_never_panics(text in ".{0,300}") {
            let _ = Schedule::from_toml(&text);
        }

        /// Whatever the order of requests, deadlines and completions: one entry per
        /// (command, ip), never due twice while in flight, and the file round-trips.
        #[test]
        fn schedule_invariants(ops in proptest::collection::vec((0u8..3, 0u8..3, 0u64..100), 0..60)) {
            let mut s = Schedule::default();
            let mut running: Vec<Entry> = Vec::new();
            let mut now = 0u64;
            for (op, who, t) in ops {
                let ip: IpAddr = format!("192.0.2.{who}").parse().unwrap();
                match op {
                    0 => { s.schedule("c", ip, "u", now + t); }
                    1 => {
                        now += t;
                        for e in s.take_due(now) {
                            proptest::prop_assert!(!running.iter().any(|r| r.ip == e.ip));
                            running.push(e);
                        }
                    }
                    _ => {
                        if !running.is_empty() {
                            let e = running.remove(0);
                            s.finished(&e);
                        }
                    }
                }
                proptest::prop_assert!(s.len() <= 3);
                let back = Schedule::from_toml(&s.to_toml().unwrap()).unwrap();
                proptest::prop_assert_eq!(&back.entries, &s.entries);
            }
        }
    }
}
