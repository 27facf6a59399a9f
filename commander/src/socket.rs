//! The commander's listening Unix socket: adopted from systemd socket activation, else created
//! as `root:<socket_group> 0660` (a stale file replaced, a live commander refused).
//! It must never listen on anything but a Unix stream socket, nor remove a file that is not a
//! stale socket.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error(
        "socket passed by systemd (LISTEN_FDS) is not a Unix stream listener: fix ListenStream= in ruroco-commander.socket"
    )]
    NotUnixStream(#[source] io::Error),
    #[error(
        "another ruroco-commander is already listening on {path}: stop it first (systemctl stop ruroco-commander.socket ruroco-commander)"
    )]
    InUse { path: String },
    #[error("{path} exists and is not a socket: move it away or fix socket in the config")]
    NotASocket { path: String },
    #[error(
        "directory {path} of the control socket must be root-owned and not writable by others: chown root {path} && chmod 0700 {path}"
    )]
    UnsafeDir { path: String },
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
pub struct Taken {
    pub listener: UnixListener,
    pub created: Option<Created>,
}

/// A socket file this process created (path and inode, to remove only our own file).
#[derive(Debug)]
pub struct Created {
    pub path: PathBuf,
    ino: u64,
}

impl Created {
    /// Remove the socket file if it is still the one we created.
    pub fn remove(&self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The listener systemd passed (LISTEN_FDS), if any.
pub fn activated() -> Result<Option<UnixListener>, SocketError> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
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

/// Create the frame socket file: refuse a live one, replace a stale one, then bind, chown
/// `root:gid`, chmod 0660 (its directory, if missing, is made 0755 so the server reaches it).
pub fn create(path: &Path, gid: u32) -> Result<Taken, SocketError> {
    create_with(path, gid, 0o660, 0o755)
}

/// Create the root-only control socket (0600 root:root) in a directory that must be root's
/// alone: made 0700 if missing, refused if it is not root-owned or others may write to it.
pub fn create_control(path: &Path) -> Result<Taken, SocketError> {
    let taken = create_with(path, 0, 0o600, 0o700)?;
    let parent = path.parent().unwrap_or(Path::new("/"));
    let safe = std::fs::symlink_metadata(parent)
        .is_ok_and(|m| m.is_dir() && m.uid() == 0 && m.mode() & 0o022 == 0);
    if !safe {
        if let Some(c) = &taken.created {
            c.remove();
        }
        let d = parent.display();
        return Err(SocketError::UnsafeDir {
            path: d.to_string(),
        });
    }
    Ok(taken)
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
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
        && !parent.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(parent_mode)
            .create(parent)
            .map_err(io_err("create parent directory"))?;
    }
    let listener = UnixListener::bind(path).map_err(io_err("bind"))?;
    let taken = |ino| Created {
        path: path.to_owned(),
        ino,
    };
    let meta = std::fs::symlink_metadata(path).map_err(io_err("inspect"))?;
    let created = taken(meta.ino());
    let finish = || -> io::Result<()> {
        std::os::unix::fs::chown(path, Some(0), Some(gid))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    };
    if let Err(e) = finish() {
        created.remove();
        return Err(io_err("chown / chmod")(e));
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
}
