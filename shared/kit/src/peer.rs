//! Who is on the other end of a Unix stream socket, from the kernel (SO_PEERCRED).
//! Never trusts anything the peer says about itself.

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use std::os::fd::AsFd;

/// The peer's credentials as recorded by the kernel at connect()/listen() time (unix(7),
/// `SO_PEERCRED`, `struct ucred`): effective ids of the peer process then, not now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// The peer's effective user id.
    pub uid: u32,
    /// The peer's effective group id.
    pub gid: u32,
    /// The peer's process id, in this process's pid namespace (0 when it has none there).
    pub pid: i32,
}

/// The credentials of the process at the other end of the connected Unix socket `sock`
/// (getsockopt(2) `SO_PEERCRED`, unix(7)).
///
/// # Errors
/// getsockopt(2) failed: `sock` is not a Unix socket, or not connected.
pub fn peer_cred(sock: &impl AsFd) -> std::io::Result<PeerCred> {
    let c = getsockopt(sock, PeerCredentials).map_err(std::io::Error::from)?;
    Ok(PeerCred {
        uid: c.uid(),
        gid: c.gid(),
        pid: c.pid(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn sees_own_uid_and_pid() -> std::io::Result<()> {
        let (a, _b) = UnixStream::pair()?;
        let c = peer_cred(&a)?;
        assert_eq!(c.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(c.pid, std::process::id() as i32);
        Ok(())
    }
}
