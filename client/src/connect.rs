//! `--connect`: hand the connection `--wait` made to ssh, either by passing the socket over
//! stdout (SCM_RIGHTS, for `ProxyUseFdpass yes`) or by relaying stdin/stdout through it.
//! Never writes anything of its own to stdout: stdout belongs to ssh.

use nix::sys::socket::{
    self, AddressFamily, ControlMessage, MsgFlags, SockaddrLike, SockaddrStorage, UnixAddr,
};
use nix::sys::stat::{SFlag, fstat};
use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

/// How `--connect` hands the connection over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConnectMode {
    /// Pass the socket when stdin and stdout are one Unix stream socket and stderr is not
    /// (what OpenSSH sets up for ProxyUseFdpass), else relay
    Auto,
    /// Pass the socket over stdout (ProxyUseFdpass yes) and exit
    Fdpass,
    /// Copy stdin to the connection and the connection to stdout until it closes
    Relay,
}

/// Relay buffer size: one read's worth; ssh packets are at most 256 KiB, any size works.
const RELAY_BUF: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "cannot pass the connection over stdout: {0} (ProxyUseFdpass yes makes stdout a Unix socket; without it use --connect=relay)"
    )]
    Fdpass(String),
    #[error("relaying the connection failed: {0}")]
    Relay(io::Error),
}

/// What `Auto` picked, for the progress line.
pub fn resolve_mode(mode: ConnectMode) -> ConnectMode {
    match mode {
        ConnectMode::Auto if stdio_wants_fdpass() => ConnectMode::Fdpass,
        ConnectMode::Auto => ConnectMode::Relay,
        m => m,
    }
}

/// OpenSSH with `ProxyUseFdpass yes` gives the proxy command one end of a Unix socketpair as
/// both stdin and stdout and leaves stderr alone. libssh's ProxyCommand (the socketpair on
/// stdin, stdout and stderr) and socat's EXEC also share one socket between stdin and stdout
/// but expect a byte stream, so a stderr on that same socket means relay.
pub fn stdio_wants_fdpass() -> bool {
    wants_fdpass(
        io::stdin().as_fd(),
        io::stdout().as_fd(),
        io::stderr().as_fd(),
    )
}

/// The `Auto` decision for these three descriptors: `input` and `output` are one Unix stream
/// socket (same st_dev and st_ino) and `err` is not that socket.
pub fn wants_fdpass(input: BorrowedFd<'_>, output: BorrowedFd<'_>, err: BorrowedFd<'_>) -> bool {
    let (Ok(i), Ok(o)) = (fstat(input), fstat(output)) else {
        return false;
    };
    let is_sock = |m: u32| SFlag::from_bits_truncate(m & SFlag::S_IFMT.bits()) == SFlag::S_IFSOCK;
    if !is_sock(i.st_mode) || i.st_dev != o.st_dev || i.st_ino != o.st_ino {
        return false;
    }
    if let Ok(e) = fstat(err) {
        if e.st_dev == i.st_dev && e.st_ino == i.st_ino {
            return false;
        }
    }
    let unix = socket::getsockname::<SockaddrStorage>(output.as_raw_fd())
        .map(|a| a.family() == Some(AddressFamily::Unix))
        .unwrap_or(false);
    let stream = socket::getsockopt(&output, socket::sockopt::SockType)
        .map(|t| t == socket::SockType::Stream)
        .unwrap_or(false);
    unix && stream
}

/// Hand `stream` over as `mode` says (Auto must have been resolved). Returns when the socket
/// was passed, or when the relayed connection has closed.
pub fn hand_over(stream: TcpStream, mode: ConnectMode) -> Result<(), ConnectError> {
    match mode {
        ConnectMode::Fdpass => pass_fd(&stream),
        ConnectMode::Relay | ConnectMode::Auto => relay(stream),
    }
}

/// Send the socket as SCM_RIGHTS with one NUL byte, as OpenSSH's `mm_receive_fd` expects.
fn pass_fd(stream: &TcpStream) -> Result<(), ConnectError> {
    let out = io::stdout();
    let fds = [stream.as_raw_fd()];
    let iov = [IoSlice::new(&[0u8])];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let n = socket::sendmsg(
        out.as_raw_fd(),
        &iov,
        &cmsg,
        MsgFlags::empty(),
        None::<&UnixAddr>,
    )
    .map_err(|e| ConnectError::Fdpass(e.desc().to_owned()))?;
    if n != 1 {
        return Err(ConnectError::Fdpass(format!("sent {n} bytes instead of 1")));
    }
    Ok(())
}

/// Copy stdin to the connection (half-closing it at end of input) and the connection to
/// stdout, until the server closes it.
fn relay(stream: TcpStream) -> Result<(), ConnectError> {
    let dup = |fd: std::os::fd::BorrowedFd<'_>| fd.try_clone_to_owned().map(File::from);
    // Own descriptors, unbuffered: std's stdout would hold back bytes until a newline.
    let mut input = dup(io::stdin().as_fd()).map_err(ConnectError::Relay)?;
    let mut output = dup(io::stdout().as_fd()).map_err(ConnectError::Relay)?;
    let mut up = stream.try_clone().map_err(ConnectError::Relay)?;
    // Ends with the process: when the server closes, nothing more needs to go to it.
    std::thread::spawn(move || {
        let _ = pump(&mut input, &mut up);
        let _ = up.shutdown(Shutdown::Write);
    });
    let mut down = stream;
    match pump(&mut down, &mut output) {
        Ok(()) => Ok(()),
        // ssh went away first: nothing is left to relay to.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(ConnectError::Relay(e)),
    }
}

/// Copy until end of input, writing each read out at once.
fn pump(from: &mut impl Read, to: &mut impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; RELAY_BUF];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        to.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_passes_the_fd_only_when_stderr_is_not_the_stdio_socket() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        // OpenSSH ProxyUseFdpass: stdin = stdout = one socketpair end, stderr elsewhere.
        assert!(wants_fdpass(a.as_fd(), a.as_fd(), file.as_fd()));
        // libssh ProxyCommand: the same socket on 0, 1 and 2 (a dup has the same inode).
        let dup = a.try_clone().unwrap();
        assert!(!wants_fdpass(a.as_fd(), a.as_fd(), dup.as_fd()));
        assert!(!wants_fdpass(a.as_fd(), a.as_fd(), a.as_fd()));
        // Different sockets, or not a socket at all.
        let (c, _d) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(!wants_fdpass(a.as_fd(), c.as_fd(), file.as_fd()));
        assert!(!wants_fdpass(file.as_fd(), file.as_fd(), a.as_fd()));
        // A datagram socketpair cannot carry ssh's stream.
        let (g, _h) = std::os::unix::net::UnixDatagram::pair().unwrap();
        assert!(!wants_fdpass(g.as_fd(), g.as_fd(), file.as_fd()));
    }

    #[test]
    fn pump_copies_everything() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        pump(&mut &data[..], &mut out).unwrap();
        assert_eq!(out, data);
    }
}
