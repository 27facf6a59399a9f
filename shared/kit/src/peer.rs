//! Who is on the other end of a Unix stream socket, from the kernel (SO_PEERCRED).
//! Never trusts anything the peer says about itself.

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use std::os::fd::AsFd;

/// The peer's credentials as recorded by the kernel at connect()/listen() time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
}

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
