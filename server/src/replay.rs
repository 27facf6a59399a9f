//! Replay floors: the highest accepted counter per key id, kept in `<state_dir>/replay`
//! (text, one `<keyid hex16> <counter decimal>` line per key) and written atomically and durably.
//! It must never reset a floor silently: an unreadable or corrupt file is an error, and floors
//! of keys that are no longer configured are kept.

use ruroco_shared::KeyId;
use ruroco_shared::fsutil::{read_bounded, write_atomic};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// File name inside `state_dir`.
pub const STATE_FILE: &str = "replay";
/// Mode of the state file: only the server's user reads it.
pub const STATE_MODE: u32 = 0o600;
/// A line is at most 16 + 1 + 39 + 1 bytes; this bounds the file to ~1M keys.
pub const STATE_MAX_LEN: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(
        "replay state {path}: cannot read: {source} (fix its ownership/permissions; never delete it, that re-enables replays)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "replay state {path}: line {line} is corrupt (expected `<keyid hex16> <counter>`): restore it from backup; refusing to start with floors reset"
    )]
    Corrupt { path: PathBuf, line: usize },
    #[error("replay state {path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The durable floors, as last written.
#[derive(Debug)]
pub struct ReplayState {
    path: PathBuf,
    floors: BTreeMap<KeyId, u128>,
}

impl ReplayState {
    /// Load `<state_dir>/replay`; a missing file is an empty state.
    pub fn load(state_dir: &Path) -> Result<Self, ReplayError> {
        let path = state_dir.join(STATE_FILE);
        let text = match read_bounded(&path, STATE_MAX_LEN) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(ReplayError::Read { path, source }),
        };
        let floors = parse(&text).map_err(|line| ReplayError::Corrupt {
            path: path.clone(),
            line,
        })?;
        Ok(Self { path, floors })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The highest accepted counter for `id`, 0 when none.
    pub fn floor(&self, id: &KeyId) -> u128 {
        self.floors.get(id).copied().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.floors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.floors.is_empty()
    }

    /// Durably raise the floors in `updates` (one write for all of them). On error nothing
    /// in memory changes, so memory never claims more than the disk holds.
    pub fn commit(&mut self, updates: &[(KeyId, u128)]) -> Result<(), ReplayError> {
        let mut next = self.floors.clone();
        for (id, counter) in updates {
            let f = next.entry(*id).or_insert(0);
            if *counter > *f {
                *f = *counter;
            }
        }
        write_atomic(&self.path, render(&next).as_bytes(), STATE_MODE).map_err(|source| {
            ReplayError::Write {
                path: self.path.clone(),
                source,
            }
        })?;
        self.floors = next;
        Ok(())
    }
}

/// Parse the file text; `Err(line number)` for the first bad line.
pub fn parse(text: &str) -> Result<BTreeMap<KeyId, u128>, usize> {
    let mut floors = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_ascii_whitespace();
        let (Some(id), Some(counter), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(i + 1);
        };
        let id = KeyId::from_hex(id).ok_or(i + 1)?;
        if !counter.bytes().all(|b| b.is_ascii_digit()) {
            return Err(i + 1);
        }
        let counter: u128 = counter.parse().map_err(|_| i + 1)?;
        if floors.insert(id, counter).is_some() {
            return Err(i + 1);
        }
    }
    Ok(floors)
}

/// The file text for `floors`, sorted by key id.
pub fn render(floors: &BTreeMap<KeyId, u128>) -> String {
    let mut s = String::with_capacity(floors.len() * 58);
    for (id, counter) in floors {
        let _ = writeln!(s, "{id} {counter}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: KeyId = KeyId([1, 2, 3, 4, 5, 6, 7, 8]);
    const B: KeyId = KeyId([9; 8]);

    #[test]
    fn missing_file_is_empty_and_commit_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let mut s = ReplayState::load(d.path()).unwrap();
        assert!(s.is_empty());
        s.commit(&[(A, 10), (B, 5), (A, 12)]).unwrap();
        assert_eq!(s.floor(&A), 12);
        s.commit(&[(A, 3)]).unwrap();
        assert_eq!(s.floor(&A), 12, "a floor never goes down");
        let again = ReplayState::load(d.path()).unwrap();
        assert_eq!((again.floor(&A), again.floor(&B)), (12, 5));
        let text = std::fs::read_to_string(d.path().join(STATE_FILE)).unwrap();
        assert_eq!(text, "0102030405060708 12\n0909090909090909 5\n");
    }

    #[test]
    fn corrupt_files_are_refused_with_line() {
        for (text, line) in [
            ("0102030405060708 12\ngarbage\n", 2),
            ("0102030405060708\n", 1),
            ("0102030405060708 -1\n", 1),
            ("0102030405060708 1 2\n", 1),
            ("01020304050607 1\n", 1),
            ("0102030405060708 1\n0102030405060708 2\n", 2),
            (
                "0102030405060708 999999999999999999999999999999999999999999\n",
                1,
            ),
        ] {
            assert_eq!(parse(text), Err(line), "{text:?}");
        }
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(STATE_FILE), "nope\n").unwrap();
        let e = ReplayState::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("replay") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn failed_write_keeps_memory_at_durable_value() {
        let d = tempfile::tempdir().unwrap();
        let mut s = ReplayState::load(&d.path().join("missing-dir")).unwrap();
        assert!(s.commit(&[(A, 7)]).is_err());
        assert_eq!(s.floor(&A), 0);
    }
}
