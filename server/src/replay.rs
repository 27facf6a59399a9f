//! Replay floors: the highest accepted counter per key id, kept in `<state_dir>/replay` and
//! written atomically and durably. It must never reset a floor silently: an unreadable,
//! corrupt, empty or truncated file is an error (only a *missing* file is a first start), and
//! floors of keys that are no longer configured are kept.
//!
//! Format (text): the header line `ruroco-replay 2`, one `<keyid hex16> <counter decimal>`
//! line per key, and the terminator `end <number of keys>`, each ending in a newline. The
//! header and terminator make an empty or cut-short file distinguishable from a first start.
//! The 0.1.0 format (the key lines alone) is still read, since deployed servers have it; it
//! is refused when empty or when its last line lacks its newline, and the first accepted
//! datagram rewrites it in the current format. A 0.1.0 file cut exactly at a line boundary
//! cannot be told from a complete one: that is the format's limit, closed by the rewrite.
//! Writes run on one dedicated thread (`writer.rs`) so the receive loop keeps reading the
//! socket while the disk flushes.

use ruroco_kit::fsutil::{read_bounded, write_atomic};
use ruroco_proto::KeyId;
use ruroco_proto::gate::{Floors, raise};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// File name inside `state_dir`.
pub(crate) const STATE_FILE: &str = "replay";
/// Mode of the state file: only the server's user reads it.
pub(crate) const STATE_MODE: u32 = 0o600;
/// A line is at most 16 + 1 + 39 + 1 bytes; this bounds the file to ~1M keys.
pub(crate) const STATE_MAX_LEN: u64 = 64 * 1024 * 1024;

/// The first line of the current format.
pub(crate) const HEADER: &str = "ruroco-replay 2";
/// The last line of the current format starts with this, followed by the number of keys.
pub(crate) const TERMINATOR: &str = "end";

/// Why a state file's text cannot be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// This 1-based line is not a key line, a repeated key, or a wrong `end` count.
    #[error("line {0} is corrupt (expected `<keyid hex16> <counter>`)")]
    Line(usize),
    /// The file holds nothing but whitespace.
    #[error("it is empty")]
    Empty,
    /// The file ends before its `end <keys>` line, or inside a line.
    #[error("it is truncated (it does not end with its `end <keys>` line)")]
    Truncated,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplayError {
    #[error(
        "replay state {path}: cannot read: {source} (fix its ownership/permissions; never delete it, that re-enables replays)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "replay state {path}: {problem}: restore it from a backup; if there is none, replace every key (datagrams made with a new key cannot be replays), then delete the file. Refusing to start with floors reset, which would re-open every captured datagram to replay"
    )]
    Corrupt { path: PathBuf, problem: ParseError },
    #[error("replay state {path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The durable floors, as last written.
#[derive(Debug)]
pub(crate) struct ReplayState {
    path: PathBuf,
    floors: Floors,
}

impl ReplayState {
    /// Load `<state_dir>/replay`; a missing file (and only a missing file) is an empty state.
    pub(crate) fn load(state_dir: &Path) -> Result<Self, ReplayError> {
        let path = state_dir.join(STATE_FILE);
        let text = match read_bounded(&path, STATE_MAX_LEN) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self {
                    path,
                    floors: Floors::new(),
                });
            }
            Err(source) => return Err(ReplayError::Read { path, source }),
        };
        let floors = parse(&text).map_err(|problem| ReplayError::Corrupt {
            path: path.clone(),
            problem,
        })?;
        Ok(Self { path, floors })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The highest accepted counter for `id`, 0 when none.
    #[cfg(test)]
    pub(crate) fn floor(&self, id: &KeyId) -> u128 {
        self.floors.get(id).copied().unwrap_or(0)
    }

    /// Every durable floor.
    pub(crate) fn floors(&self) -> &Floors {
        &self.floors
    }

    pub(crate) fn len(&self) -> usize {
        self.floors.len()
    }


    /// The floors after raising those in `updates`: what the next write makes durable.
    pub(crate) fn raised<'a>(&self, updates: impl IntoIterator<Item = (&'a KeyId, &'a u128)>) -> Floors {
        let mut next = self.floors.clone();
        for (id, counter) in updates {
            raise(&mut next, *id, *counter);
        }
        next
    }

    /// Record `floors` as durable, after their write succeeded. A floor never goes down.
    pub(crate) fn install(&mut self, floors: Floors) {
        for (id, counter) in floors {
            raise(&mut self.floors, id, counter);
        }
    }
}

/// Replace the state file at `path` with `floors`: write-temp, fsync, rename, fsync-dir.
pub(crate) fn write(path: &Path, floors: &Floors) -> Result<(), ReplayError> {
    write_atomic(path, render(floors).as_bytes(), STATE_MODE).map_err(|source| ReplayError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Parse a state file's text (the floors, or why the text cannot be trusted): the current format, or the 0.1.0 one (see the module docs).
pub fn parse(text: &str) -> Result<Floors, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    if !text.ends_with('\n') {
        return Err(ParseError::Truncated);
    }
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    if !text.starts_with("ruroco-replay") {
        return parse_keys(lines);
    }
    // Current format: the header exactly, key lines, then `end <n>` as the last line.
    if lines.next().map(|(_, l)| l) != Some(HEADER) {
        return Err(ParseError::Line(1));
    }
    let body: Vec<(usize, &str)> = lines.collect();
    let Some((&(last_no, last), keys)) = body.split_last() else {
        return Err(ParseError::Truncated);
    };
    let count = match last
        .strip_prefix(TERMINATOR)
        .and_then(|r| r.strip_prefix(' '))
    {
        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            n.parse::<usize>().map_err(|_| ParseError::Line(last_no))?
        }
        Some(_) => return Err(ParseError::Line(last_no)),
        // The last line is a key line (or a piece of one): the end was cut off.
        None => return Err(ParseError::Truncated),
    };
    let floors = parse_keys(keys.iter().copied())?;
    if floors.len() != count {
        return Err(ParseError::Line(last_no));
    }
    Ok(floors)
}

/// Key lines (`<keyid hex16> <counter>`, numbered); blank lines are skipped.
fn parse_keys<'a>(lines: impl Iterator<Item = (usize, &'a str)>) -> Result<Floors, ParseError> {
    let mut floors = Floors::new();
    for (no, line) in lines {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = ParseError::Line(no);
        let mut parts = line.split_ascii_whitespace();
        let (Some(id), Some(counter), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad);
        };
        let id = KeyId::from_hex(id).ok_or(bad)?;
        if !counter.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad);
        }
        let counter: u128 = counter.parse().map_err(|_| bad)?;
        if floors.insert(id, counter).is_some() {
            return Err(bad);
        }
    }
    Ok(floors)
}

/// The file text for `floors` in the current format, keys sorted by id.
pub fn render(floors: &Floors) -> String {
    let mut s = String::with_capacity(floors.len() * 58 + 32);
    let _ = writeln!(s, "{HEADER}");
    for (id, counter) in floors {
        let _ = writeln!(s, "{id} {counter}");
    }
    let _ = writeln!(s, "{TERMINATOR} {}", floors.len());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: KeyId = KeyId([1, 2, 3, 4, 5, 6, 7, 8]);
    const B: KeyId = KeyId([9; 8]);

    /// What the server's group commit does, synchronously: raise, write, then install.
    /// On error nothing in memory changes, so memory never claims more than the disk holds.
    fn commit(s: &mut ReplayState, updates: &[(KeyId, u128)]) -> Result<(), ReplayError> {
        let next = s.raised(updates.iter().map(|(id, c)| (id, c)));
        write(s.path(), &next)?;
        s.install(next);
        Ok(())
    }

    #[test]
    fn missing_file_is_empty_and_commit_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let mut s = ReplayState::load(d.path()).unwrap();
        assert_eq!(s.len(), 0);
        commit(&mut s, &[(A, 10), (B, 5), (A, 12)]).unwrap();
        assert_eq!(s.floor(&A), 12);
        commit(&mut s, &[(A, 3)]).unwrap();
        assert_eq!(s.floor(&A), 12, "a floor never goes down");
        let again = ReplayState::load(d.path()).unwrap();
        assert_eq!((again.floor(&A), again.floor(&B)), (12, 5));
        let text = std::fs::read_to_string(d.path().join(STATE_FILE)).unwrap();
        assert_eq!(
            text,
            "ruroco-replay 2\n0102030405060708 12\n0909090909090909 5\nend 2\n"
        );
    }

    #[test]
    fn the_0_1_0_format_is_still_read() {
        let text = "0102030405060708 12\n\n0909090909090909 5\n";
        let floors = parse(text).unwrap();
        assert_eq!((floors[&A], floors[&B]), (12, 5));
        assert_eq!(parse(&render(&floors)), Ok(floors));
    }

    #[test]
    fn empty_and_truncated_files_are_refused_never_read_as_a_first_start() {
        let full = render(&[(A, 12), (B, 5)].into_iter().collect());
        // Every proper prefix of a current-format file is refused.
        for cut in 0..full.len() {
            let prefix = &full[..cut];
            assert!(parse(prefix).is_err(), "{prefix:?} was accepted");
        }
        assert_eq!(parse(""), Err(ParseError::Empty));
        assert_eq!(parse("\n \n"), Err(ParseError::Empty));
        assert_eq!(
            parse("ruroco-replay 2\n0102030405060708 12\n"),
            Err(ParseError::Truncated)
        );
        assert_eq!(
            parse("0102030405060708 12\n0909090909090909 5"),
            Err(ParseError::Truncated),
            "a 0.1.0 file cut inside its last line"
        );
        // A terminator that does not match the keys above it, or a foreign header.
        assert_eq!(
            parse("ruroco-replay 2\n0102030405060708 12\nend 2\n"),
            Err(ParseError::Line(3))
        );
        assert_eq!(parse("ruroco-replay 3\nend 0\n"), Err(ParseError::Line(1)));
        assert_eq!(parse("ruroco-replay 2\nend 0\n"), Ok(Floors::new()));

        let d = tempfile::tempdir().unwrap();
        for (text, says) in [("", "is empty"), ("ruroco-replay 2\n", "truncated")] {
            std::fs::write(d.path().join(STATE_FILE), text).unwrap();
            let e = ReplayState::load(d.path()).unwrap_err().to_string();
            assert!(
                e.contains(says) && e.contains("restore it from a backup"),
                "{e}"
            );
        }
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
            ("ruroco-replay 2\nnope\nend 1\n", 2),
        ] {
            assert_eq!(parse(text), Err(ParseError::Line(line)), "{text:?}");
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
        assert!(commit(&mut s, &[(A, 7)]).is_err());
        assert_eq!(s.floor(&A), 0);
    }
}
