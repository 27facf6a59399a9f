//! Files for tests: modes, owners by name, temp dirs under /tmp, key and config files written
//! with the mode and owner a daemon checks, binaries copied where an unprivileged user can
//! run them. It must never write outside the paths it is given.

use nix::unistd::{Gid, Group, Uid, User, chown};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The uid of `user` (getpwnam(3)).
///
/// # Panics
/// When the lookup fails or there is no such user.
pub fn uid_of(user: &str) -> Uid {
    User::from_name(user)
        .expect("getpwnam")
        .unwrap_or_else(|| panic!("no user {user} on this machine"))
        .uid
}

/// The gid of `group` (getgrnam(3)).
///
/// # Panics
/// When the lookup fails or there is no such group.
pub fn gid_of(group: &str) -> Gid {
    Group::from_name(group)
        .expect("getgrnam")
        .unwrap_or_else(|| panic!("no group {group} on this machine"))
        .gid
}

/// chmod(2) `path` to `mode` (e.g. `0o640`).
///
/// # Panics
/// When chmod fails.
pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// chown(2) `path` to the named user and group (`None` leaves that one as it is).
///
/// # Panics
/// When a name does not resolve or chown fails.
pub fn chown_to(path: &Path, user: Option<&str>, group: Option<&str>) {
    chown(path, user.map(uid_of), group.map(gid_of))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

/// Write `text` to `path` (replacing it), then chmod it to `mode` and chown it to `user` and
/// `group` when named: a key file or config file as an operator would leave it.
///
/// # Panics
/// When any step fails.
pub fn write_file(path: &Path, text: &str, mode: u32, user: Option<&str>, group: Option<&str>) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    chmod(path, mode);
    if user.is_some() || group.is_some() {
        chown_to(path, user, group);
    }
}

/// A fresh temp dir, mode 0755, under /tmp (never under a possibly-0700 home), removed when
/// dropped.
///
/// # Panics
/// When it cannot be created.
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("temp dir");
    chmod(d.path(), 0o755);
    d
}

/// Hard-link `from` to `to` (cheap, and it writes nothing: a copy's write descriptor,
/// inherited by a child another test thread forks meanwhile, makes exec of the copy fail with
/// ETXTBSY), else copy it; either way `to` ends up mode 0755.
///
/// # Panics
/// When both link and copy fail.
pub fn link_or_copy(from: &Path, to: &Path) {
    if fs::hard_link(from, to).is_err() {
        fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
    chmod(to, 0o755);
}

/// `program` placed (see [`link_or_copy`]) in a fresh 0755 temp dir under /tmp so uid 65534
/// can execute it; keep the dir as long as the copy is used.
///
/// # Panics
/// When `program` has no file name or cannot be placed.
pub fn copy_for_nobody(program: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = temp_dir("ruroco-nobody.");
    let dst = dir
        .path()
        .join(program.file_name().expect("a program file name"));
    link_or_copy(program, &dst);
    (dir, dst)
}

/// A TOML basic string holding `s` (quotes, backslashes and newlines escaped).
pub fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Append `line` and a newline to the file at `path` (creating it), for probes reporting to
/// the test.
///
/// # Panics
/// When the file cannot be opened or written.
pub fn append_line(path: &Path, line: &str) {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    writeln!(f, "{line}").unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn toml_strings_escape_what_toml_requires() {
        assert_eq!(toml_string("a\"b\\c\nd"), r#""a\"b\\c\nd""#);
        assert_eq!(toml_string("it's"), "\"it's\"");
    }

    #[test]
    fn written_files_have_the_mode_asked_for_and_lines_append() {
        let d = temp_dir("ruroco-testkit.");
        assert_eq!(fs::metadata(d.path()).unwrap().mode() & 0o777, 0o755);
        let p = d.path().join("f");
        write_file(&p, "x", 0o640, None, None);
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o640);
        append_line(&p, "y");
        append_line(&p, "z");
        assert_eq!(fs::read_to_string(&p).unwrap(), "xy\nz\n");
    }
}
