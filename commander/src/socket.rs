//! The commander's listening Unix socket: adopted from systemd socket activation, else created
//! as `root:<socket_group> 0660` (a stale file replaced, a live commander refused).
//! It must never listen on anything but a Unix stream socket, nor remove a file that is not a
//! stale socket.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};

#[derive(Debug, thiserror::Error)]
pub(crate) enum SocketError {
    #[error(
        "socket passed by systemd (LISTEN_FDS) is not a Unix stream listener: fix ListenStream= in ruroco-commander.socket"
    )]
    NotUnixStream(#[source] io::Error),
    #[error(
        "systemd passed {0} sockets (LISTEN_FDS); ruroco-commander serves exactly one: keep one ListenStream= in ruroco-commander.socket"
    )]
    TooMany(usize),
    #[error(
        "another ruroco-commander is already listening on {path}: stop it first (systemctl stop ruroco-commander.socket ruroco-commander)"
    )]
    InUse { path: String },
    #[error("{path} exists and is not a socket: move it away or fix socket in the config")]
    NotASocket { path: String },
    #[error(
        "socket directory {path} must be root-owned and not writable by group or others (else anyone could swap the socket): chown root {path} && chmod go-w {path}"
    )]
    UnsafeDir { path: String },
    #[error("socket directory: {0}")]
    Untrusted(#[from] ruroco_kit::trust::TrustError),
    #[error("socket {path}: {what}: {source}")]
    Io {
        path: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Where the listener came from; a socket file we created is removed again at exit.
#[derive(Debug)]
pub(crate) struct Taken {
    pub(crate) listener: UnixListener,
    pub(crate) created: Option<Created>,
}

/// A socket file this process created (path and inode, to remove only our own file).
#[derive(Debug)]
pub(crate) struct Created {
    pub(crate) path: PathBuf,
    ino: u64,
}

impl Created {
    /// Remove the socket file if it is still the one we created.
    pub(crate) fn remove(&self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The listener systemd passed (LISTEN_FDS), if any.
pub(crate) fn activated() -> Result<Option<UnixListener>, SocketError> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    if fds.len() > 1 {
        return Err(SocketError::TooMany(fds.len()));
    }
    let l = fds
        .take_unix_listener(0)
        .map_err(SocketError::NotUnixStream)?;
    if let Some(l) = &l {
        // systemd passes the fd without close-on-exec; the shells we spawn must not inherit it.
        fcntl(l.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| SocketError::Io {
            path: "LISTEN_FDS".to_owned(),
            what: "set close-on-exec",
            source: e.into(),
        })?;
    }
    Ok(l)
}

/// Create the frame socket file: refuse a live one, replace a stale one, then bind it as
/// `root:gid` 0660. Its directory (made 0755 if missing, so the server reaches it) must be
/// root-owned and not writable by group or others.
pub(crate) fn create(path: &Path, gid: u32) -> Result<Taken, SocketError> {
    create_with(path, gid, 0o660, 0o755)
}

/// Create the root-only control socket (0600 root:root) in a directory that must be root's
/// alone: made 0700 if missing, refused if it is not root-owned or others may write to it.
pub(crate) fn create_control(path: &Path) -> Result<Taken, SocketError> {
    create_with(path, 0, 0o600, 0o700)
}

/// A socket's directory: root's alone to change, no extended ACL.
const DIR_RULE: ruroco_kit::trust::Rule = ruroco_kit::trust::Rule {
    what: "socket directory",
    kind: ruroco_kit::trust::Kind::Dir,
    owner: ruroco_kit::trust::Owner::Root,
    forbidden: 0o022,
    need: ruroco_kit::trust::Access::SEARCH,
    fix_access: "chown root:root {path} && chmod 0755 {path}",
    create: None,
};

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The socket's directory: created with `mode` if missing, then [`check_dir`].
fn safe_parent(path: &Path, mode: u32) -> Result<(), SocketError> {
    let parent = parent_of(path);
    let d = parent.display().to_string();
    if !parent.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(parent)
            .map_err(|source| SocketError::Io {
                path: d.clone(),
                what: "create the socket's directory",
                source,
            })?;
    }
    check_dir(path)
}

/// Refuse the directory of the socket at `path` unless it is root-owned, not group/other-
/// writable and free of extended ACLs, with every directory above it root-owned and not
/// writable by others (or sticky): so nobody but root can swap the socket file for a link.
/// A directory that does not exist yet passes (the commander creates it, `--check` only looks).
pub(crate) fn check_dir(path: &Path) -> Result<(), SocketError> {
    let parent = parent_of(path);
    let d = parent.display().to_string();
    match std::fs::symlink_metadata(parent) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Ok(m) if !m.is_dir() || m.uid() != 0 || m.mode() & 0o022 != 0 => {
            return Err(SocketError::UnsafeDir { path: d });
        }
        _ => {}
    }
    // Then the same rule through the trust checks, for what the mode bits do not show (ACLs).
    DIR_RULE.check_path(parent, &ruroco_kit::trust::Who::current())?;
    // The directories above are checked there too (owner, no write for others unless
    // sticky, no ACL): one another user may write could have the directory renamed and
    // replaced.
    Ok(())
}

fn create_with(path: &Path, gid: u32, mode: u32, parent_mode: u32) -> Result<Taken, SocketError> {
    let p = path.display().to_string();
    let io_err = |what: &'static str| {
        let p = p.clone();
        move |source| SocketError::Io {
            path: p,
            what,
            source,
        }
    };
    safe_parent(path, parent_mode)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            if !meta.file_type().is_socket() {
                return Err(SocketError::NotASocket { path: p });
            }
            if UnixStream::connect(path).is_ok() {
                return Err(SocketError::InUse { path: p });
            }
            std::fs::remove_file(path).map_err(io_err("remove stale socket"))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("inspect")(e)),
    }
    // The file gets its mode at creation (umask), and its group by lchown: neither step
    // follows a link swapped in at the path. Start-up is single-threaded here, so the umask
    // change affects no other file.
    let mask = nix::sys::stat::Mode::from_bits_truncate(!mode & 0o777);
    let old = nix::sys::stat::umask(mask);
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(io_err("bind"))?;
    let meta = std::fs::symlink_metadata(path).map_err(io_err("inspect"))?;
    let created = Created {
        path: path.to_owned(),
        ino: meta.ino(),
    };
    if let Err(e) = std::os::unix::fs::lchown(path, Some(0), Some(gid)) {
        created.remove();
        return Err(io_err("lchown")(e));
    }
    Ok(Taken {
        listener,
        created: Some(created),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_live_replaces_stale_and_keeps_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.sock");
        let gid = nix::unistd::getegid().as_raw();
        let first = create(&p, gid).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o660);
        assert!(matches!(create(&p, gid), Err(SocketError::InUse { .. })));
        drop(first.listener);
        let second = create(&p, gid).unwrap();
        second.created.as_ref().unwrap().remove();
        assert!(!p.exists());
        std::fs::write(&p, "x").unwrap();
        assert!(matches!(
            create(&p, gid),
            Err(SocketError::NotASocket { .. })
        ));
    }

    #[test]
    fn refuses_a_directory_others_can_write_and_sets_modes_at_creation() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let gid = nix::unistd::getegid().as_raw();
        assert!(matches!(
            create(&shared.join("s.sock"), gid),
            Err(SocketError::UnsafeDir { .. })
        ));
        assert!(matches!(
            create_control(&shared.join("c.sock")),
            Err(SocketError::UnsafeDir { .. })
        ));
        // An ancestor others may write (not sticky) is refused as well.
        let open = shared.join("sub");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = create(&open.join("s.sock"), gid).unwrap_err().to_string();
        assert!(e.contains(&shared.display().to_string()), "{e}");
        let c = create_control(&dir.path().join("private").join("c.sock")).unwrap();
        let m = std::fs::symlink_metadata(dir.path().join("private/c.sock")).unwrap();
        assert_eq!(m.mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(dir.path().join("private"))
                .unwrap()
                .mode()
                & 0o777,
            0o700
        );
        drop(c);
    }
}
