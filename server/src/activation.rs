//! Taking the UDP socket: from systemd socket activation (`LISTEN_FDS`, first fd) when passed,
//! else bound to `listen` with a raised `SO_RCVBUF`. It must never accept a non-datagram
//! socket, and never bind a second socket when one was passed.

use nix::sys::socket::{SockType, getsockopt, setsockopt, sockopt};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;

/// The kernel's ceiling for an unprivileged `SO_RCVBUF`.
const RMEM_MAX: &str = "/proc/sys/net/core/rmem_max";

/// How the socket was obtained, for the start-up line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Passed by the service manager (`LISTEN_FDS`, sd_listen_fds(3)).
    Activated,
    /// Bound here to `listen`.
    Bound,
}

/// The socket the server receives on, and how it came.
#[derive(Debug)]
pub struct Taken {
    /// The UDP socket, non-blocking.
    pub socket: UdpSocket,
    /// Activated or bound.
    pub origin: Origin,
    /// Its local address, when the kernel reports one.
    pub local: Option<SocketAddr>,
    /// `SO_RCVBUF` read back (the kernel reports twice the usable size).
    pub receive_buffer: usize,
}

/// Why no socket could be taken.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// The passed descriptor is not a UDP datagram socket.
    #[error(
        "socket activation: the passed fd is not a UDP datagram socket ({0}): use ListenDatagram= in the .socket unit"
    )]
    NotDatagram(std::io::Error),
    /// bind(2) failed.
    #[error(
        "listen {addr}: cannot bind: {source} (is another server running, or is the port privileged?)"
    )]
    Bind {
        /// The `listen` address.
        addr: SocketAddr,
        /// bind(2)'s error.
        source: std::io::Error,
    },
    /// More than one socket was passed (the number).
    #[error(
        "socket activation passed {0} sockets; ruroco-server receives on exactly one (its seccomp filter pins that one): keep one ListenDatagram= in ruroco.socket, e.g. [::]:34020 with BindIPv6Only=both; a drop-in that moves the port first resets the list with an empty ListenDatagram="
    )]
    TooMany(usize),
    /// Another socket call (socket(2), setsockopt(2), getsockname(2)) failed.
    #[error("udp socket: {0}")]
    Io(std::io::Error),
}

/// Take the activated socket if there is one, else bind `listen`; either way ask for a
/// `receive_buffer`-byte `SO_RCVBUF` (socket(7)), as far as the kernel grants it.
pub fn take(listen: SocketAddr, receive_buffer: usize) -> Result<Taken, ActivationError> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() > 1 {
        return Err(ActivationError::TooMany(fds.len()));
    }
    let (socket, origin) = if fds.len() > 0 {
        let s = fds
            .take_udp_socket(0)
            .map_err(ActivationError::NotDatagram)?
            .ok_or_else(|| {
                ActivationError::NotDatagram(std::io::Error::other("fd already taken"))
            })?;
        let ty = getsockopt(&s, sockopt::SockType).map_err(|e| ActivationError::Io(e.into()))?;
        if ty != SockType::Datagram {
            return Err(ActivationError::NotDatagram(std::io::Error::other(
                "SO_TYPE is not SOCK_DGRAM",
            )));
        }
        (s, Origin::Activated)
    } else {
        let s = UdpSocket::bind(listen).map_err(|source| ActivationError::Bind {
            addr: listen,
            source,
        })?;
        // As root (before the privilege drop) SO_RCVBUFFORCE ignores rmem_max, as systemd's
        // ReceiveBuffer= does; otherwise the kernel silently caps SO_RCVBUF at rmem_max, so
        // ask for what fits.
        if setsockopt(&s, sockopt::RcvBufForce, &receive_buffer).is_err() {
            let cap = read_rmem_max().unwrap_or(receive_buffer);
            let want = receive_buffer.min(cap.max(1));
            if let Err(e) = setsockopt(&s, sockopt::RcvBuf, &want) {
                tracing::warn!(event = "receive_buffer", error = %e, "could not raise SO_RCVBUF");
            }
        }
        (s, Origin::Bound)
    };
    socket.set_nonblocking(true).map_err(ActivationError::Io)?;
    let receive_buffer = getsockopt(&socket, sockopt::RcvBuf).unwrap_or(0);
    let local = socket.local_addr().ok();
    Ok(Taken {
        socket,
        origin,
        local,
        receive_buffer,
    })
}

fn read_rmem_max() -> Option<usize> {
    std::fs::read_to_string(Path::new(RMEM_MAX))
        .ok()?
        .trim()
        .parse()
        .ok()
}
