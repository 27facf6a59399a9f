//! One connection from the server: check the peer's uid (SO_PEERCRED) before reading a byte,
//! then read exact 24-byte frames and hand known commands to the dispatcher.
//! It must never read from a refused peer, parse anything but a 24-byte frame, or let a
//! half-sent frame hold the connection open forever.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ruroco_shared::frame::FrameError;
use ruroco_shared::peer::{PeerCred, peer_cred};
use ruroco_shared::{CmdHash, FRAME_LEN, Frame};
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

use crate::config::{Command, Commands};
use crate::dispatch::Dispatcher;

/// Once the first byte of a frame arrived, the other 23 must follow within this time.
/// Between frames there is no idle limit: the server keeps one connection open for good, and
/// only its uid gets this far (connections are also capped, see `MAX_CONNECTIONS`).
pub const FRAME_COMPLETION_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed on accept (the server needs one).
pub const MAX_CONNECTIONS: usize = 16;

/// What a frame asks for (the sans-IO part of the commander).
#[derive(Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    Run(&'a Command, IpAddr),
    Unknown(CmdHash, IpAddr),
    Malformed(FrameError),
}

pub fn decide<'a>(commands: &'a Commands, bytes: &[u8; FRAME_LEN]) -> Decision<'a> {
    match Frame::from_bytes(bytes) {
        Ok(f) => match commands.get(f.cmd) {
            Some(c) => Decision::Run(c, f.ip),
            None => Decision::Unknown(f.cmd, f.ip),
        },
        Err(e) => Decision::Malformed(e),
    }
}

/// Is this peer allowed to send frames? Logs a refusal.
pub fn admit_peer(stream: &UnixStream, server_uid: u32) -> Option<PeerCred> {
    match peer_cred(stream) {
        Ok(c) if c.uid == server_uid => Some(c),
        Ok(c) => {
            tracing::warn!(
                event = "rejected",
                reason = "peer_uid",
                uid = c.uid,
                gid = c.gid,
                pid = c.pid,
                expected_uid = server_uid
            );
            None
        }
        Err(e) => {
            tracing::warn!(event = "rejected", reason = "peer_cred", error = %e);
            None
        }
    }
}

/// Serve an admitted connection until EOF, a short read or an error.
pub async fn serve(mut stream: UnixStream, peer: PeerCred, dispatcher: Arc<Dispatcher>) {
    tracing::debug!(event = "connected", uid = peer.uid, pid = peer.pid);
    let mut buf = [0u8; FRAME_LEN];
    loop {
        let first = match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(event = "connection_error", pid = peer.pid, error = %e);
                break;
            }
        };
        if first < FRAME_LEN {
            match tokio::time::timeout(
                FRAME_COMPLETION_TIMEOUT,
                stream.read_exact(&mut buf[first..]),
            )
            .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => {
                    tracing::warn!(event = "short_frame", pid = peer.pid, bytes = first);
                    break;
                }
                Err(_) => {
                    tracing::warn!(
                        event = "short_frame",
                        reason = "timeout",
                        pid = peer.pid,
                        bytes = first
                    );
                    break;
                }
            }
        }
        let table = dispatcher.table();
        match decide(&table.commands, &buf) {
            Decision::Run(cmd, ip) => dispatcher.submit(cmd, ip),
            Decision::Unknown(hash, ip) => {
                tracing::warn!(event = "unknown_command", hash = %hash, ip = %ip);
            }
            Decision::Malformed(e) => {
                tracing::warn!(event = "bad_frame", error = %e);
            }
        }
    }
    tracing::debug!(event = "disconnected", pid = peer.pid);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    #[test]
    fn decisions() {
        let c = Config::parse("[commands]\nhello = \"true\"\n", Path::new("t")).unwrap();
        let ip: IpAddr = "2001:db8::5".parse().unwrap();
        let known = Frame {
            cmd: CmdHash::of_name("hello"),
            ip,
        }
        .to_bytes();
        assert!(
            matches!(decide(&c.commands, &known), Decision::Run(cmd, i) if cmd.name == "hello" && i == ip)
        );
        let unknown = Frame {
            cmd: CmdHash::of_name("nope"),
            ip,
        }
        .to_bytes();
        assert_eq!(
            decide(&c.commands, &unknown),
            Decision::Unknown(CmdHash::of_name("nope"), ip)
        );
        let mut zero_ip = known;
        zero_ip[8..].fill(0);
        assert_eq!(
            decide(&c.commands, &zero_ip),
            Decision::Malformed(FrameError::NoIp)
        );
    }
}
