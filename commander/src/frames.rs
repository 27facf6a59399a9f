//! One connection from the server: check the peer's uid (SO_PEERCRED) before reading a byte,
//! then read exact 24-byte frames, hand known commands to the dispatcher and send back one
//! 9-byte acknowledgement per frame once its outcome is final (docs/protocol.md).
//! It must never read from a refused peer, parse anything but a 24-byte frame, or let a
//! half-sent frame hold the connection open forever.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ruroco_kit::peer::{PeerCred, peer_cred};
use ruroco_proto::frame::FrameError;
use ruroco_proto::{Ack, AckOutcome, CmdHash, FRAME_LEN, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::config::{Command, Commands};
use crate::dispatch::{Dispatcher, Submitted};

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

/// Acknowledgements waiting to be written on one connection; a full queue pauses reading.
pub const ACK_QUEUE: usize = 256;
/// A server that does not read an acknowledgement within this is treated as gone.
pub const ACK_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Serve an admitted connection until EOF, a short read, an error or shutdown: read frames,
/// hand them to the dispatcher, and write each frame's acknowledgement (`seq`, outcome) once
/// its outcome is final. A stopping commander reads no new frame; the connection stays open
/// until the frames it already took are acknowledged.
pub async fn serve(stream: UnixStream, peer: PeerCred, dispatcher: Arc<Dispatcher>) {
    tracing::debug!(event = "connected", uid = peer.uid, pid = peer.pid);
    let (mut reader, mut writer) = stream.into_split();
    let (acks, mut pending) = mpsc::channel::<Ack>(ACK_QUEUE);
    let write_acks = async move {
        while let Some(ack) = pending.recv().await {
            let bytes = ack.to_bytes();
            match tokio::time::timeout(ACK_WRITE_TIMEOUT, writer.write_all(&bytes)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(event = "ack_failed", pid = peer.pid, error = %e);
                    return;
                }
                Err(_) => {
                    tracing::warn!(event = "ack_failed", pid = peer.pid, reason = "timeout");
                    return;
                }
            }
        }
    };
    let read_frames = async move {
        let mut buf = [0u8; FRAME_LEN];
        let mut seq: u64 = 0;
        loop {
            let first = tokio::select! {
                biased;
                () = dispatcher.stopped() => break,
                r = reader.read(&mut buf) => match r {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(event = "connection_error", pid = peer.pid, error = %e);
                        break;
                    }
                },
            };
            if first < FRAME_LEN {
                let rest = tokio::time::timeout(
                    FRAME_COMPLETION_TIMEOUT,
                    reader.read_exact(&mut buf[first..]),
                )
                .await;
                if !matches!(rest, Ok(Ok(_))) {
                    tracing::warn!(
                        event = "short_frame",
                        pid = peer.pid,
                        bytes = first,
                        timeout = rest.is_err()
                    );
                    break;
                }
            }
            let this = seq;
            seq += 1;
            let table = dispatcher.table();
            let immediate = match decide(&table.commands, &buf) {
                Decision::Run(cmd, ip) => match dispatcher.submit(cmd, ip) {
                    Submitted::Queued(rx) => {
                        let acks = acks.clone();
                        tokio::spawn(async move {
                            // A dropped sender: stopped before running; no ack, the server resends.
                            if let Ok(outcome) = rx.await {
                                let _ = acks.send(Ack { seq: this, outcome }).await;
                            }
                        });
                        None
                    }
                    Submitted::Refused => Some(AckOutcome::Refused),
                },
                Decision::Unknown(hash, ip) => {
                    if dispatcher.quiet.allow("unknown_command") {
                        tracing::warn!(
                            event = "unknown_command",
                            hash = %hash,
                            ip = %ip,
                            "no command in commander.toml has this hash (ruroco-commander --check lists the hashes): the client asked for a name that is not configured"
                        );
                    }
                    Some(AckOutcome::UnknownCommand)
                }
                Decision::Malformed(e) => {
                    if dispatcher.quiet.allow("bad_frame") {
                        tracing::warn!(event = "bad_frame", error = %e);
                    }
                    Some(AckOutcome::Malformed)
                }
            };
            if let Some(outcome) = immediate
                && acks.send(Ack { seq: this, outcome }).await.is_err()
            {
                break;
            }
        }
    };
    tokio::pin!(read_frames, write_acks);
    tokio::select! {
        // The writer ends first only when an acknowledgement could not be written (the reader
        // holds a sender): stop reading too, so no frame runs whose acknowledgement is lost.
        () = &mut write_acks => {}
        () = &mut read_frames => write_acks.await,
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
