//! Trust checks for the paths a daemon relies on (config files, key files, the keys, state and
//! socket directories): existence, file type, owner, mode bits, extended POSIX ACLs, and whether
//! the user that will use the path (uid, primary group, supplementary groups) can reach it,
//! including search permission on every directory above it.
//!
//! ACLs are never interpreted: a path carrying an extended ACL (the `system.posix_acl_access`
//! or, on a directory, `system.posix_acl_default` extended attribute, acl(5)) is refused with
//! the fix `setfacl -b PATH`. Without those attributes the access ACL is exactly the mode bits
//! (acl(5), "ACL to file permission bits mapping"), so every other verdict here follows
//! path_resolution(7) from the mode bits alone. This module must never change a file.

use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The extended attribute holding a file's or directory's access ACL (acl(5)).
pub(crate) const ACL_ACCESS_XATTR: &str = "system.posix_acl_access";
/// The extended attribute holding a directory's default ACL (acl(5)).
pub(crate) const ACL_DEFAULT_XATTR: &str = "system.posix_acl_default";

/// Permission bits of one class, as in the mode (chmod(2), inode(7)): read 4, write 2,
/// execute/search 1; what a [`Rule`] needs the user to be allowed to do with a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access(u32);

impl Access {
    /// Read a file (the `r` bit, 4).
    pub const READ: Access = Access(4);
    /// Write a file, or connect to a Unix socket (the `w` bit, 2; unix(7)).
    pub const WRITE: Access = Access(2);
    /// Search a directory: reach the entries below it by name (the `x` bit, 1;
    /// path_resolution(7)).
    pub const SEARCH: Access = Access(1);
    /// Read and write a file.
    pub const READ_WRITE: Access = Access(6);
    /// Read the entries of a directory and open them.
    pub const LIST: Access = Access(5);
    /// Create, replace and remove entries in a directory.
    pub const MODIFY_DIR: Access = Access(7);

    fn words(self) -> String {
        let mut v = Vec::new();
        if self.0 & 4 != 0 {
            v.push("read");
        }
        if self.0 & 2 != 0 {
            v.push("write");
        }
        if self.0 & 1 != 0 {
            v.push("search");
        }
        v.join("+")
    }
}

/// The identity that will use a path: what the kernel compares with a file's owner and group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    /// The user's name, for messages (the uid as text when it has none).
    pub name: String,
    /// The (effective) user id.
    pub uid: u32,
    /// The primary group.
    pub gid: u32,
    /// Supplementary groups (may repeat `gid`).
    pub groups: Vec<u32>,
}

impl Who {
    /// This process's own credentials (effective uid and gid, getgroups(2)). Never fails: a
    /// uid without a passwd(5) entry is named by its number, and supplementary groups that
    /// cannot be read are left empty.
    pub fn current() -> Who {
        let uid = nix::unistd::geteuid();
        let name = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map_or_else(|| uid.to_string(), |u| u.name);
        Who {
            name,
            uid: uid.as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            groups: nix::unistd::getgroups()
                .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
                .unwrap_or_default(),
        }
    }

    /// The user `name` from the user database with its groups from getgrouplist(3), as
    /// initgroups(3) (and systemd's `User=`) would give them. `field` names the config field
    /// that holds `name`, for the error.
    ///
    /// # Errors
    /// [`TrustError::NoUser`] when passwd(5) (through NSS) has no user `name`. When the group
    /// list cannot be read, the primary group alone is used.
    pub fn user(name: &str, field: &str) -> Result<Who, TrustError> {
        let unknown = || TrustError::NoUser {
            field: field.to_owned(),
            name: name.to_owned(),
        };
        let u = nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .ok_or_else(unknown)?;
        let groups = std::ffi::CString::new(name)
            .ok()
            .and_then(|c| nix::unistd::getgrouplist(&c, u.gid).ok())
            .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_else(|| vec![u.gid.as_raw()]);
        Ok(Who {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            groups,
        })
    }

    /// Whether `gid` is this user's primary group or one of its supplementary groups.
    pub fn in_group(&self, gid: u32) -> bool {
        gid == self.gid || self.groups.contains(&gid)
    }

    /// The name of this user's primary group (the gid as text when it has none).
    pub(crate) fn group_name(&self) -> String {
        group_name(self.gid)
    }

    /// Whether the mode bits of `meta` grant `want` to this user (path_resolution(7)): the
    /// owner class if the uid owns it, else the group class if one of the groups owns it, else
    /// the other class. Root may read and write anything and search any directory.
    pub(crate) fn allows(&self, meta: &Metadata, want: Access) -> bool {
        self.allows_mode(meta.uid(), meta.gid(), meta.mode(), meta.is_file(), want)
    }

    /// As [`Who::allows`], for a file owned by `uid`:`gid` with `mode` (`is_file`: a regular
    /// file, where root needs an execute bit to execute).
    pub(crate) fn allows_mode(
        &self,
        uid: u32,
        gid: u32,
        mode: u32,
        is_file: bool,
        want: Access,
    ) -> bool {
        if self.uid == 0 {
            return !is_file || want.0 & 1 == 0 || mode & 0o111 != 0;
        }
        let class = if uid == self.uid {
            (mode >> 6) & 7
        } else if self.in_group(gid) {
            (mode >> 3) & 7
        } else {
            mode & 7
        };
        class & want.0 == want.0
    }
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

fn group_name(gid: u32) -> String {
    nix::unistd::Group::from_gid(gid.into())
        .ok()
        .flatten()
        .map_or_else(|| gid.to_string(), |g| g.name)
}

/// The type a trusted path must have (lstat(2)'s file type; a symlink is never any of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A Unix socket file (connecting needs write permission on it, unix(7)).
    Socket,
}

/// Who may own a trusted path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Anyone (the mode and access rules still apply).
    Any,
    /// Root only.
    Root,
    /// Root or the user that will use the path.
    RootOrUser,
}

/// What a trusted path must look like. `what` names the path in messages ("keys_dir",
/// "key file"); `fix_access` is the command suggested when the owner is wrong or `who` cannot
/// reach the path, with `{path}`, `{user}` and `{group}` (the user's primary group) filled in.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The path's name in messages: the config field ("keys_dir") or what it is ("key file").
    pub what: &'static str,
    /// The file type the path must have.
    pub kind: Kind,
    /// Who may own the path.
    pub owner: Owner,
    /// Mode bits that must be clear, e.g. `0o022` (no group/other write).
    pub forbidden: u32,
    /// What `who` must be allowed to do with the path itself.
    pub need: Access,
    /// The command suggested when the owner is wrong or `who` lacks `need`, with the
    /// placeholders `{path}`, `{user}` and `{group}`.
    pub fix_access: &'static str,
    /// The command that creates the path when it is missing (same placeholders), if any.
    pub create: Option<&'static str>,
}

/// Why a path is not trusted; every message names the path and the command that fixes it.
/// `what` is always the [`Rule`]'s name for the path, `path` the path as given (not resolved),
/// `fix` the shell command (or step) that makes the path pass. The `Display` text is one line
/// for the journal and for `--check`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// The path does not exist (lstat(2) gave ENOENT); `fix` is the rule's `create` command or
    /// a hint to change the config field.
    #[error("{what} {path}: does not exist: {fix}")]
    Missing {
        /// The rule's name for the path.
        what: String,
        /// The path as given.
        path: PathBuf,
        /// How to create it.
        fix: String,
    },
    /// lstat(2), stat(2), fstat(2), getxattr(2) or realpath(3) on the path (or a directory
    /// above it) failed for another reason than a missing path.
    #[error("{what} {path}: cannot inspect: {error}")]
    Stat {
        /// The rule's name for the path.
        what: String,
        /// The path (or the directory above it) that could not be inspected.
        path: PathBuf,
        /// The operating system's error text.
        error: String,
    },
    /// The path is not of the rule's [`Kind`].
    #[error("{what} {path}: is not a {expected}: replace it with a {expected}")]
    Type {
        /// The rule's name for the path.
        what: String,
        /// The path as given.
        path: PathBuf,
        /// "regular file", "directory" or "Unix socket".
        expected: &'static str,
    },
    /// The path's owner is not one the rule's [`Owner`] allows.
    #[error("{what} {path}: owned by {owner}, must be owned by {expected}: {fix}")]
    Owner {
        /// The rule's name for the path.
        what: String,
        /// The path as given.
        path: PathBuf,
        /// The owner's user name (the uid as text when it has none).
        owner: String,
        /// "root", or "root or USER".
        expected: String,
        /// The rule's `fix_access`, or for another user's directory: move it away and create
        /// it again.
        fix: String,
    },
    /// The mode has bits the rule forbids.
    #[error("{what} {path}: mode {mode:04o} {problem}: {fix}")]
    Mode {
        /// The rule's name for the path.
        what: String,
        /// The path as given.
        path: PathBuf,
        /// The permission bits (`st_mode & 0o7777`).
        mode: u32,
        /// What the forbidden bits allow, e.g. "lets others read it".
        problem: &'static str,
        /// `chmod` to the mode without the forbidden bits, or the rule's chown+chmod when
        /// that mode would lock the user out.
        fix: String,
    },
    /// The path itself is a symbolic link (never followed: its target could change).
    #[error("{what} {path}: is a symlink: replace it with the file itself")]
    Symlink {
        /// The rule's name for the path.
        what: String,
        /// The path as given.
        path: PathBuf,
    },
    /// The path carries an extended POSIX ACL (acl(5)); the fix is `setfacl -b PATH`.
    #[error(
        "{what} {path}: carries an extended POSIX ACL ({xattr}), which can grant access the mode bits do not show: remove it with `setfacl -b {path}`"
    )]
    Acl {
        /// The rule's name for the path.
        what: String,
        /// The path as given.
        path: PathBuf,
        /// `system.posix_acl_access` or `system.posix_acl_default`.
        xattr: &'static str,
    },
    /// The user that will use the path is not allowed the rule's [`Access`] by the mode bits
    /// (path_resolution(7)).
    #[error("{what} {path}: {detail}: {fix}")]
    Access {
        /// The rule's name for the path.
        what: String,
        /// The path as given.
        path: PathBuf,
        /// Who cannot do what, with the owner and mode that say so.
        detail: String,
        /// The rule's `fix_access`, filled in.
        fix: String,
    },
    /// A directory above the path: not searchable by the user, carrying an access ACL, or
    /// changeable by someone else (who could rename the path away and plant another).
    #[error("{what} {path}: the directory {dir} above it {problem}: {fix}")]
    Ancestor {
        /// The rule's name for the path.
        what: &'static str,
        /// The path as given.
        path: PathBuf,
        /// The offending directory, symlinks resolved.
        dir: PathBuf,
        /// What is wrong with it.
        problem: String,
        /// `chown`, `chmod` or `setfacl -b` on the directory.
        fix: String,
    },
    /// The user named in a config field is not in the user database (passwd(5) via NSS).
    #[error(
        "config field `{field}`: user {name:?} does not exist: create it (the package's sysusers.d does) or change `{field}`"
    )]
    NoUser {
        /// The config field holding the name.
        field: String,
        /// The user name as written.
        name: String,
    },
}

/// The extended ACL attribute a path carries, if any: `Ok(Some(name))` when one is set,
/// `Ok(None)` when none is (or the file system has no ACLs).
pub(crate) fn acl_of_path(path: &Path) -> io::Result<Option<&'static str>> {
    acl_probe(|name| rustix::fs::getxattr(path, name, &mut [0u8; 0][..]))
}

/// The extended ACL attribute (acl(5)) an open file carries, if any: `Ok(Some(name))` with
/// `system.posix_acl_access` or `system.posix_acl_default` when one is set, `Ok(None)` when
/// none is or the file system has no ACLs (fgetxattr(2) ENODATA or ENOTSUP). Asking the open
/// file leaves no race with a rename of its path.
///
/// # Errors
/// Any other fgetxattr(2) error.
pub fn acl_of_file(file: &File) -> io::Result<Option<&'static str>> {
    acl_probe(|name| rustix::fs::fgetxattr(file, name, &mut [0u8; 0][..]))
}

fn acl_probe(get: impl Fn(&str) -> rustix::io::Result<usize>) -> io::Result<Option<&'static str>> {
    use rustix::io::Errno;
    for name in [ACL_ACCESS_XATTR, ACL_DEFAULT_XATTR] {
        match get(name) {
            // A zero-length buffer asks for the size: any answer means the attribute exists.
            Ok(_) | Err(Errno::RANGE) => return Ok(Some(name)),
            Err(Errno::NODATA | Errno::NOTSUP) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

impl Rule {
    /// Check `path` (a symlink is refused; directories above it are resolved) and every
    /// directory above it for `who`; on success return its metadata (lstat(2)).
    ///
    /// # Errors
    /// The first [`TrustError`] found: the path itself (missing, type, ACL, owner, mode,
    /// access, in that order), then each directory above it from the nearest up.
    pub fn check_path(&self, path: &Path, who: &Who) -> Result<Metadata, TrustError> {
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(TrustError::Missing {
                    what: self.what.to_owned(),
                    path: path.to_owned(),
                    fix: match self.create {
                        Some(create) => self.fill(create, path, who),
                        None => "create it, or change the config field that names it".to_owned(),
                    },
                });
            }
            Err(e) => return Err(self.stat_err(path, &e)),
        };
        let acl = acl_of_path(path).map_err(|e| self.stat_err(path, &e))?;
        self.check_meta(path, &meta, acl, who)?;
        self.check_ancestors(path, who)?;
        Ok(meta)
    }

    /// Check an opened file's metadata (fstat(2)) and its ACL, without the ancestors: after
    /// [`Rule::check_path`] and open(2) of the same path, so that the file read is the file
    /// checked even if the path was swapped in between. Returns the metadata.
    ///
    /// # Errors
    /// [`TrustError::Stat`] when fstat(2) or fgetxattr(2) fails, else the first verdict on the
    /// file as in [`Rule::check_path`].
    pub fn check_file(&self, path: &Path, file: &File, who: &Who) -> Result<Metadata, TrustError> {
        let meta = file.metadata().map_err(|e| self.stat_err(path, &e))?;
        let acl = acl_of_file(file).map_err(|e| self.stat_err(path, &e))?;
        self.check_meta(path, &meta, acl, who)?;
        Ok(meta)
    }

    fn stat_err(&self, path: &Path, e: &io::Error) -> TrustError {
        TrustError::Stat {
            what: self.what.to_owned(),
            path: path.to_owned(),
            error: e.to_string(),
        }
    }

    /// The verdict on one path from its metadata and ACL attribute (sans-IO but for names).
    pub(crate) fn check_meta(
        &self,
        path: &Path,
        meta: &Metadata,
        acl: Option<&'static str>,
        who: &Who,
    ) -> Result<(), TrustError> {
        let what = self.what.to_owned();
        if meta.file_type().is_symlink() {
            return Err(TrustError::Symlink {
                what,
                path: path.to_owned(),
            });
        }
        let (ok, expected) = match self.kind {
            Kind::File => (meta.is_file(), "regular file"),
            Kind::Dir => (meta.is_dir(), "directory"),
            Kind::Socket => (
                std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()),
                "Unix socket",
            ),
        };
        if !ok {
            return Err(TrustError::Type {
                what,
                path: path.to_owned(),
                expected,
            });
        }
        // The ACL first: its fix (`setfacl -b`) can change the mode bits shown (the mask).
        if let Some(xattr) = acl {
            return Err(TrustError::Acl {
                what,
                path: path.to_owned(),
                xattr,
            });
        }
        let owner_ok = match self.owner {
            Owner::Any => true,
            Owner::Root => meta.uid() == 0,
            Owner::RootOrUser => meta.uid() == 0 || meta.uid() == who.uid,
        };
        if !owner_ok {
            return Err(TrustError::Owner {
                what,
                path: path.to_owned(),
                owner: user_name(meta.uid()),
                expected: match self.owner {
                    Owner::RootOrUser if who.uid != 0 => format!("root or {}", who.name),
                    _ => "root".to_owned(),
                },
                fix: if self.kind == Kind::Dir && meta.uid() != who.uid {
                    // Another user's directory may hold whatever they put there: adopting it
                    // with chown would trust that; start from a fresh one.
                    let again = match self.create {
                        Some(create) => self.fill(create, path, who),
                        None => "create it again as root".to_owned(),
                    };
                    format!(
                        "another user's directory may hold files they planted: move it away (mv {p} {p}.untrusted) and {again}",
                        p = path.display()
                    )
                } else {
                    self.fix(path, who)
                },
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & self.forbidden != 0 {
            let bad = mode & self.forbidden;
            let problem = if bad & 0o022 != 0 {
                "lets others than the owner change it"
            } else if bad & 0o044 != 0 {
                "lets others read it"
            } else {
                "grants more than it may"
            };
            let fixed = mode & !self.forbidden;
            let fix = if who.allows_mode(meta.uid(), meta.gid(), fixed, meta.is_file(), self.need) {
                format!("chmod {fixed:04o} {}", path.display())
            } else {
                // Clearing the bits alone would lock the user out (e.g. 0604 -> 0600 for a
                // group reader): give the rule's owner, group and mode instead.
                self.fix(path, who)
            };
            return Err(TrustError::Mode {
                what,
                path: path.to_owned(),
                mode,
                problem,
                fix,
            });
        }
        if !who.allows(meta, self.need) {
            return Err(TrustError::Access {
                what,
                path: path.to_owned(),
                detail: format!(
                    "user {} cannot {} it (owner {}:{}, mode {mode:04o})",
                    who.name,
                    self.need.words(),
                    user_name(meta.uid()),
                    group_name(meta.gid()),
                ),
                fix: self.fix(path, who),
            });
        }
        Ok(())
    }

    fn fix(&self, path: &Path, who: &Who) -> String {
        self.fill(self.fix_access, path, who)
    }

    fn fill(&self, template: &str, path: &Path, who: &Who) -> String {
        template
            .replace("{path}", &path.display().to_string())
            .replace("{user}", &who.name)
            .replace("{group}", &who.group_name())
    }

    /// Every directory above `path` (symlinks resolved) must: carry no extended access ACL
    /// (refused, not interpreted, as on the path itself), be owned by root (or by `who` when
    /// the rule lets `who` own the path), not be writable by group or others unless it is
    /// sticky (like /tmp, mode 1777: nobody may then rename another's entry), and be
    /// searchable by `who`. Otherwise someone could rename the path away and plant another,
    /// or the user could not reach it.
    pub(crate) fn check_ancestors(&self, path: &Path, who: &Who) -> Result<(), TrustError> {
        let real = fs::canonicalize(path).map_err(|e| self.stat_err(path, &e))?;
        for dir in real.ancestors().skip(1) {
            let m = fs::metadata(dir).map_err(|e| self.stat_err(dir, &e))?;
            let d = dir.display();
            let mode = m.mode() & 0o7777;
            let refuse = |problem: String, fix: String| TrustError::Ancestor {
                what: self.what,
                path: path.to_owned(),
                dir: dir.to_owned(),
                problem,
                fix,
            };
            let access_acl = acl_probe(|name| {
                if name == ACL_ACCESS_XATTR {
                    rustix::fs::getxattr(dir, name, &mut [0u8; 0][..])
                } else {
                    Err(rustix::io::Errno::NODATA)
                }
            })
            .map_err(|e| self.stat_err(dir, &e))?;
            if access_acl.is_some() {
                return Err(refuse(
                    format!(
                        "carries an extended POSIX ACL ({ACL_ACCESS_XATTR}), which can grant or deny access the mode bits do not show"
                    ),
                    format!("remove it with `setfacl -b {d}`"),
                ));
            }
            let owner_ok = m.uid() == 0 || (self.owner != Owner::Root && m.uid() == who.uid);
            if !owner_ok {
                return Err(refuse(
                    format!(
                        "is owned by {}, who could rename the path away and plant another",
                        user_name(m.uid())
                    ),
                    format!("chown root {d}, or move the path to a directory root owns"),
                ));
            }
            if mode & 0o022 != 0 && mode & 0o1000 == 0 {
                return Err(refuse(
                    format!(
                        "has mode {mode:04o}: others than its owner may rename the path away and plant another"
                    ),
                    format!("chmod go-w {d} (or chmod +t {d})"),
                ));
            }
            if !who.allows(&m, Access::SEARCH) {
                let class = if m.uid() == who.uid {
                    "u"
                } else if who.in_group(m.gid()) {
                    "g"
                } else {
                    "o"
                };
                return Err(refuse(
                    format!(
                        "cannot be searched by user {} (owner {}:{}, mode {mode:04o})",
                        who.name,
                        user_name(m.uid()),
                        group_name(m.gid())
                    ),
                    format!("chmod {class}+x {d}"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn who(uid: u32, gid: u32, groups: &[u32]) -> Who {
        Who {
            name: format!("u{uid}"),
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    const KEY: Rule = Rule {
        what: "key file",
        kind: Kind::File,
        owner: Owner::RootOrUser,
        forbidden: 0o027,
        need: Access::READ,
        fix_access: "chown root:{group} {path} && chmod 0640 {path}",
        create: None,
    };

    #[test]
    fn mode_owner_and_access_verdicts() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("k");
        fs::write(&p, "x")?;
        let me = Who::current();
        let set = |mode| fs::set_permissions(&p, fs::Permissions::from_mode(mode));
        set(0o600)?;
        assert!(KEY.check_meta(&p, &fs::metadata(&p)?, None, &me).is_ok());
        set(0o644)?;
        let e = KEY
            .check_meta(&p, &fs::metadata(&p)?, None, &me)
            .unwrap_err();
        assert!(e.to_string().contains("chmod 0640"), "{e}");
        set(0o660)?;
        let e = KEY
            .check_meta(&p, &fs::metadata(&p)?, None, &me)
            .unwrap_err();
        assert!(e.to_string().contains("chmod 0640"), "{e}");
        set(0o640)?;
        let e = KEY
            .check_meta(&p, &fs::metadata(&p)?, Some(ACL_ACCESS_XATTR), &me)
            .unwrap_err();
        assert!(e.to_string().contains("setfacl -b"), "{e}");
        let meta = fs::metadata(&p)?;
        // Another user: owner refused unless root owns it; access by group membership.
        let other = who(meta.uid() + 4242, 4242, &[]);
        if meta.uid() == 0 {
            let e = KEY.check_meta(&p, &meta, None, &other).unwrap_err();
            assert!(e.to_string().contains("cannot read"), "{e}");
            let member = who(4242, 4242, &[meta.gid()]);
            assert!(KEY.check_meta(&p, &meta, None, &member).is_ok());
        } else {
            let e = KEY.check_meta(&p, &meta, None, &other).unwrap_err();
            assert!(e.to_string().contains("chown"), "{e}");
        }
        Ok(())
    }

    #[test]
    fn missing_and_wrong_type() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let me = Who::current();
        let e = KEY.check_path(&dir.path().join("nope"), &me).unwrap_err();
        assert!(matches!(e, TrustError::Missing { .. }), "{e}");
        let e = KEY.check_path(dir.path(), &me).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        Ok(())
    }

    #[test]
    fn root_reads_and_searches_everything() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("f");
        fs::write(&p, "x")?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o000))?;
        let root = who(0, 0, &[]);
        assert!(root.allows(&fs::metadata(&p)?, Access::READ));
        assert!(!root.allows(&fs::metadata(&p)?, Access::SEARCH));
        assert!(root.allows(&fs::metadata(dir.path())?, Access::MODIFY_DIR));
        Ok(())
    }
}
