//! The frame socket's connections from the server: accept (a bounded number at once), check
//! the peer's uid (SO_PEERCRED) before reading a byte, read exact 24-byte frames through
//! `codec::FrameCodec`, hand each to the dispatcher and send back one 9-byte acknowledgement per frame once
//! its outcome is final (docs/protocol.md).
//! It must never read from a refused peer, parse anything but a 24-byte frame, buffer more than
//! a few frames of a peer, or let a half-sent frame hold the connection open forever.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use ruroco_kit::peer::{PeerCred, peer_cred};
use ruroco_proto::{Ack, AckOutcome, FRAME_LEN};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::codec::{Decoder, FramedRead};

use crate::codec::{Chunk, FrameCodec, ReadError};
use crate::dispatch::{Decision, Dispatcher, Submitted, decide};

/// Once the first byte of a frame arrived, the other 23 must follow within this time.
/// Between frames there is no idle limit: the server keeps one connection open for good, and
/// only its uid gets this far (connections are also capped, see `MAX_CONNECTIONS`).
pub(crate) const FRAME_COMPLETION_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed on accept (the server needs one).
pub(crate) const MAX_CONNECTIONS: usize = 16;
/// Acknowledgements waiting to be written on one connection; a full queue pauses reading.
pub(crate) const ACK_QUEUE: usize = 256;
/// A server that does not read an acknowledgement within this is treated as gone.
pub(crate) const ACK_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// The read buffer of a connection: a few frames per read(2). The codec takes every whole
/// frame out before the next read, so the buffer never holds more than this plus 23 bytes.
const READ_BUFFER: usize = 16 * FRAME_LEN;

/// The frame socket with its cap on connections served at once.
#[derive(Debug)]
pub(crate) struct Listener {
    inner: UnixListener,
    server_uid: u32,
    connections: Arc<Semaphore>,
}

impl Listener {
    /// Serve frames from `inner` to peers running as `server_uid` only.
    pub(crate) fn new(inner: UnixListener, server_uid: u32) -> Self {
        Self {
            inner,
            server_uid,
            connections: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        }
    }

    /// The next connection (cancel-safe).
    pub(crate) async fn accept(&self) -> std::io::Result<UnixStream> {
        self.inner.accept().await.map(|(stream, _)| stream)
    }

    /// Check the peer and serve it in a task, or refuse it (logged) when it is not the
    /// server's uid or `MAX_CONNECTIONS` are served already.
    pub(crate) fn serve(&self, stream: UnixStream, dispatcher: &Arc<Dispatcher>) {
        let Some(peer) = admit_peer(&stream, self.server_uid) else {
            return;
        };
        match self.connections.clone().try_acquire_owned() {
            Ok(permit) => {
                let d = dispatcher.clone();
                tokio::spawn(async move {
                    serve(stream, peer, d).await;
                    drop(permit);
                });
            }
            Err(_) => tracing::warn!(
                event = "rejected",
                reason = "too_many_connections",
                pid = peer.pid,
                limit = MAX_CONNECTIONS
            ),
        }
    }

    /// Stop accepting (the socket is closed); returns the connection count to wait on.
    pub(crate) fn close(self) -> Arc<Semaphore> {
        self.connections
    }
}

/// Wait (at most `ACK_WRITE_TIMEOUT`) until every connection wrote its last acknowledgement
/// and closed.
pub(crate) async fn wait_closed(connections: &Semaphore) {
    let n = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(ACK_WRITE_TIMEOUT, connections.acquire_many(n)).await;
}

/// Is this peer allowed to send frames? Logs a refusal.
fn admit_peer(stream: &UnixStream, server_uid: u32) -> Option<PeerCred> {
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

/// The next item of `framed` (cancel-safe: FramedRead keeps its state between polls).
async fn next<T, D>(framed: &mut FramedRead<T, D>) -> Option<Result<D::Item, D::Error>>
where
    T: tokio::io::AsyncRead + Unpin,
    D: Decoder,
{
    std::future::poll_fn(|cx| Pin::new(&mut *framed).poll_next(cx)).await
}

/// Serve an admitted connection until EOF, a short frame, an error or shutdown: read frames,
/// hand them to the dispatcher, and write each frame's acknowledgement (`seq`, outcome) once
/// its outcome is final. A stopping commander reads no new frame; the connection stays open
/// until the frames it already took are acknowledged.
async fn serve(stream: UnixStream, peer: PeerCred, dispatcher: Arc<Dispatcher>) {
    tracing::debug!(event = "connected", uid = peer.uid, pid = peer.pid);
    let (reader, mut writer) = stream.into_split();
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
        let mut framed = FramedRead::with_capacity(reader, FrameCodec::default(), READ_BUFFER);
        let mut seq: u64 = 0;
        // When the frame being read began: its other bytes must follow in time.
        let mut begun: Option<Instant> = None;
        loop {
            let item = match begun {
                None => tokio::select! {
                    biased;
                    () = dispatcher.stopped() => break,
                    item = next(&mut framed) => item,
                },
                Some(at) => {
                    let deadline = at + FRAME_COMPLETION_TIMEOUT;
                    match tokio::time::timeout_at(deadline, next(&mut framed)).await {
                        Ok(item) => item,
                        Err(_) => {
                            let bytes = framed.read_buffer().len();
                            tracing::warn!(
                                event = "short_frame",
                                pid = peer.pid,
                                bytes,
                                timeout = true
                            );
                            break;
                        }
                    }
                }
            };
            let frame = match item {
                None => break,
                Some(Ok(Chunk::Started)) => {
                    begun = Some(Instant::now());
                    continue;
                }
                Some(Ok(Chunk::Frame(frame))) => frame,
                Some(Err(ReadError::Short { bytes })) => {
                    tracing::warn!(
                        event = "short_frame",
                        pid = peer.pid,
                        bytes,
                        timeout = false
                    );
                    break;
                }
                Some(Err(ReadError::Io(_))) if begun.is_some() => {
                    let bytes = framed.read_buffer().len();
                    tracing::warn!(
                        event = "short_frame",
                        pid = peer.pid,
                        bytes,
                        timeout = false
                    );
                    break;
                }
                Some(Err(ReadError::Io(e))) => {
                    tracing::warn!(event = "connection_error", pid = peer.pid, error = %e);
                    break;
                }
            };
            begun = None;
            let this = seq;
            seq += 1;
            let table = dispatcher.table();
            let immediate = match decide(&table.commands, frame) {
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
    use crate::codec::tests::frame;

    #[tokio::test(flavor = "current_thread")]
    async fn a_half_sent_frame_times_out_and_whole_frames_flow() {
        let (mut a, b) = tokio::io::duplex(1024);
        let mut framed = FramedRead::with_capacity(b, FrameCodec::default(), READ_BUFFER);
        a.write_all(&frame("x")).await.unwrap();
        a.write_all(&frame("y")[..3]).await.unwrap();
        assert!(matches!(
            next(&mut framed).await,
            Some(Ok(Chunk::Frame(Ok(_))))
        ));
        assert!(matches!(next(&mut framed).await, Some(Ok(Chunk::Started))));
        let t = tokio::time::timeout(Duration::from_millis(50), next(&mut framed)).await;
        assert!(t.is_err(), "no frame from 3 bytes");
        assert_eq!(framed.read_buffer().len(), 3);
    }
}
