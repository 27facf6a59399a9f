//! The shapes of the daemons' man pages (`ruroco-server(8)`, `ruroco-commander(8)`): config
//! field tables, signals, environment, files, exit statuses and journal fields, written as data
//! beside each daemon's code (`server/src/manual.rs`, `commander/src/manual.rs`) and rendered to
//! roff by `tests/src/bin/gen-docs.rs`. `serde_fields` reads the field names a serde struct
//! accepts and `logged_events` the events a source file logs, so tests can hold the tables
//! equal to the code. It must never render or do I/O.

use serde::de::{self, Deserialize, Deserializer, Visitor};
use std::fmt;

/// What a config field is when it is left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldDefault {
    /// The field must be given.
    Required,
    /// The value used when the field is absent, as a TOML 1.0 value (`"30s"`, `4`, `[]`).
    Value(&'static str),
    /// No value: what being absent means (e.g. "off").
    Absent(&'static str),
}

/// One config field as its man page documents it.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The TOML key, as serde accepts it.
    pub name: &'static str,
    /// Its type in the operator's words: "string", "duration", "array of IP addresses".
    pub ty: &'static str,
    /// What the field is when left out.
    pub default: FieldDefault,
    /// An example value, as a TOML 1.0 value (a test parses `name = example` with the daemon's
    /// own parser).
    pub example: &'static str,
    /// What it does, and what to change when it is wrong.
    pub meaning: &'static str,
}

/// One TOML table of a config file and its fields.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    /// The table header as written in the file (`[rate_limit]`), or "" for the top level.
    pub header: &'static str,
    /// What the table configures, one paragraph.
    pub about: &'static str,
    /// Its fields, in the order the page lists them.
    pub fields: &'static [Field],
}

/// A named item of a man page section (a signal, a variable, a file, a journal field).
pub type Entry = (&'static str, &'static str);

/// `RUROCO_LOG` as `logging::init` reads it, for both daemons' ENVIRONMENT section.
pub const RUROCO_LOG: Entry = (
    "RUROCO_LOG",
    "Log level: error, warn, info (the default), debug or trace.",
);

/// `JOURNAL_STREAM` as `logging::init` reads it (sd_journal_stream_fd(3)), for both daemons'
/// ENVIRONMENT section.
pub const JOURNAL_STREAM: Entry = (
    "JOURNAL_STREAM",
    "Set by systemd: when it names the file standard error is, events go to the journal with their fields (see JOURNAL FIELDS), else as key=value lines to standard error.",
);

/// An exit status and when it happens (sysexits.h values).
pub type ExitStatus = (u8, &'static str);

/// Everything a daemon's man page says beyond its clap definition.
#[derive(Debug, Clone, Copy)]
pub struct Manual {
    /// Paragraphs after clap's one-line description.
    pub description: &'static [&'static str],
    /// Sections of their own after OPTIONS and SUBCOMMANDS: (title, text).
    pub sections: &'static [Entry],
    /// The config file's default path.
    pub config_path: &'static str,
    /// The config file's tables, the top level first.
    pub config: &'static [Table],
    /// SIGNALS: (signal name, what the daemon does on it).
    pub signals: &'static [Entry],
    /// ENVIRONMENT: (variable, how it is read).
    pub environment: &'static [Entry],
    /// FILES: (path, what it holds and who may write it).
    pub files: &'static [Entry],
    /// EXIT STATUS: every status the binary can exit with.
    pub exit_status: &'static [ExitStatus],
    /// Journal fields (`RUROCO_EVENT`, ...) and what they hold.
    pub journal_fields: &'static [Entry],
    /// Values of `RUROCO_EVENT` (the `event` field) and what each means.
    pub events: &'static [Entry],
    /// Examples: (what it does, the text to type or write).
    pub examples: &'static [Entry],
    /// Other pages, e.g. "ruroco-commander(8)".
    pub see_also: &'static [&'static str],
}

/// The field names `T`'s `Deserialize` passes to `deserialize_struct` (serde derive's list:
/// after `rename`, without `skip`ped fields), or `None` when `T` is not deserialized as a
/// struct (a map, a string, a custom visitor). Nothing is read; no `T` is built.
pub fn serde_fields<'de, T: Deserialize<'de>>() -> Option<&'static [&'static str]> {
    match T::deserialize(Recorder) {
        Ok(_) => None,
        Err(Recorded(fields)) => fields,
    }
}

/// The values of the `event` field (`event = "NAME"`) the log calls in Rust source `text` set,
/// i.e. the `RUROCO_EVENT` values they write. Lines whose first non-blank characters are `//`
/// (comments, doc comments) are skipped.
///
/// # Errors
/// Any other use of the identifier `event` as a field (`event = name`, `event = %x`, the
/// shorthand `event,` or `event)`, `%event`, `?event`): an event set from a variable hides its
/// values from this scan, so the manual's event list could miss them. The error names the line
/// (1-based) and says to write each event as a string literal.
pub(crate) fn logged_events(text: &str) -> Result<std::collections::BTreeSet<String>, String> {
    let mut events = std::collections::BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        let bytes = line.as_bytes();
        let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        for (i, _) in line.match_indices("event") {
            let before = i.checked_sub(1).map(|j| bytes[j]);
            let after = &line[i + "event".len()..];
            if before.is_some_and(|b| ident(b) || b == b'.' || b == b'"')
                || after.bytes().next().is_some_and(ident)
            {
                continue; // part of another word, a method, or inside a string
            }
            let rest = after.trim_start();
            let sigil = before.is_some_and(|b| b == b'%' || b == b'?');
            let variable = if let Some(value) = rest.strip_prefix('=') {
                if value.starts_with('=') {
                    continue; // `event == x`, a comparison
                }
                let value = value.trim_start();
                match value
                    .strip_prefix('"')
                    .and_then(|v| v.find('"').map(|e| &v[..e]))
                {
                    Some(name) if !sigil => {
                        events.insert(name.to_owned());
                        false
                    }
                    _ => true,
                }
            } else {
                sigil || rest.starts_with(',') || rest.starts_with(')')
            };
            if variable {
                return Err(format!(
                    "line {}: `{}` sets the event from a variable; write each event as a string literal (`event = \"NAME\"`) so the manual's event list can be checked",
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    Ok(events)
}

/// The events a daemon crate logs (the `RUROCO_EVENT` values): the string literals of
/// `event = "NAME"` in every `.rs` file under `src/` of the crate at `manifest_dir` (its
/// `CARGO_MANIFEST_DIR`), subdirectories included, but files named `manual.rs`, plus the
/// shared sd_notify helper (`shared/kit/src/notify.rs`), whose events the daemon's journal
/// carries too; lines starting with `//` are skipped. Files are read in path order, so the
/// first error is always the same one; symbolic links to directories are not followed.
///
/// # Errors
/// A directory or source file that cannot be read, or a file that sets `event` from a variable
/// (`event = name`, `%event`, the shorthand `event,`): such an event could be missing from the
/// manual. The error names the file and line.
pub fn events_logged_by_crate(
    manifest_dir: &std::path::Path,
) -> std::io::Result<std::collections::BTreeSet<String>> {
    let mut files = Vec::new();
    rust_sources(&manifest_dir.join("src"), &mut files)?;
    files.sort();
    files.push(manifest_dir.join("../shared/kit/src/notify.rs"));
    let mut events = std::collections::BTreeSet::new();
    for path in files {
        let found = logged_events(&std::fs::read_to_string(&path)?)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
        events.extend(found);
    }
    Ok(events)
}

/// Append every `.rs` file under `dir` but those named `manual.rs` to `files`, descending into
/// subdirectories (not through symlinks, so a link cycle cannot loop).
fn rust_sources(dir: &std::path::Path, files: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            rust_sources(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("manual.rs") {
            files.push(path);
        }
    }
    Ok(())
}

/// A deserializer that fails every request, remembering the fields of a struct request.
struct Recorder;

#[derive(Debug)]
struct Recorded(Option<&'static [&'static str]>);

impl fmt::Display for Recorded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("recording the struct's field names only")
    }
}

impl std::error::Error for Recorded {}

impl de::Error for Recorded {
    fn custom<M: fmt::Display>(_msg: M) -> Self {
        Recorded(None)
    }
}

impl<'de> Deserializer<'de> for Recorder {
    type Error = Recorded;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Recorded> {
        Err(Recorded(None))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Recorded> {
        Err(Recorded(Some(fields)))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct S {
        a: u32,
        #[serde(rename = "bee")]
        b: String,
        #[serde(skip)]
        c: u8,
    }

    #[test]
    fn records_the_fields_serde_accepts() {
        assert_eq!(serde_fields::<S>(), Some(&["a", "bee"][..]));
        assert_eq!(serde_fields::<String>(), None);
        assert_eq!(
            serde_fields::<std::collections::BTreeMap<String, u8>>(),
            None
        );
    }

    #[test]
    fn finds_event_names() {
        let src = "tracing::info!(event = \"started\", x = 1);\nwarn!(event = \"failed\", reason = \"r\")";
        let got: Vec<String> = logged_events(src).unwrap().into_iter().collect();
        assert_eq!(got, ["failed", "started"]);
    }

    #[test]
    fn events_are_read_from_every_subdirectory_of_src_in_path_order() -> std::io::Result<()> {
        let root = tempfile::tempdir()?;
        let krate = root.path().join("daemon");
        let write = |rel: &str, text: &str| -> std::io::Result<()> {
            let p = root.path().join(rel);
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(p, text)
        };
        write(
            "shared/kit/src/notify.rs",
            "warn!(event = \"notify_failed\");",
        )?;
        write("daemon/src/lib.rs", "info!(event = \"top\");")?;
        write("daemon/src/run/mod.rs", "info!(event = \"nested\");")?;
        write(
            "daemon/src/run/deeper/drain.rs",
            "info!(event = \"deepest\");",
        )?;
        // Skipped: the manual itself (it may name events any way it likes), non-Rust files.
        write("daemon/src/manual.rs", "info!(event = name);")?;
        write("daemon/src/run/manual.rs", "info!(event = name);")?;
        write("daemon/src/run/notes.txt", "info!(event = name);")?;
        let got: Vec<String> = events_logged_by_crate(&krate)?.into_iter().collect();
        assert_eq!(got, ["deepest", "nested", "notify_failed", "top"]);

        // Two offending files: the error names the first in path order, whatever order the
        // directory lists them in.
        write("daemon/src/z.rs", "info!(event = z);")?;
        write("daemon/src/b/a.rs", "info!(event = b);")?;
        let err = events_logged_by_crate(&krate).unwrap_err().to_string();
        assert!(err.contains("src/b/a.rs: line 1"), "{err}");
        Ok(())
    }

    #[test]
    fn refuses_an_event_set_from_a_variable() {
        for src in [
            "let event = if r { \"a\" } else { \"b\" };\ninfo!(\n    event,\n    seq,\n);",
            "info!(event = name, x = 1);",
            "info!(event = %name);",
            "info!(%event, x = 1);",
            "info!(x = 1, event)",
        ] {
            let err = logged_events(src).unwrap_err();
            assert!(err.contains("string literal"), "{src}: {err}");
        }
        // Not a field: comments, other words, comparisons, struct fields.
        let src = "/// logs `event=\"x\"`\nif event == y {}\nlet events = 1;\nS { event: 1 }\nself.event.x;";
        assert!(logged_events(src).unwrap().is_empty());
    }
}
