//! The link to the root commander: a bounded queue of frames, one Unix stream connection,
//! a SO_PEERCRED check before the first frame on every new connection, timeouts on every
//! socket operation and reconnect with backoff. It must never block the receive loop, never
//! send a frame to a peer whose uid is not `commander_uid`, and never queue without bound.

use ruroco_shared::peer::peer_cred;
use ruroco_shared::{FRAME_LEN, Frame, KeyId};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::status::Counters;

/// Frames waiting for the commander; beyond this they are dropped and counted.
pub const QUEUE_LEN: usize = 1024;
/// Frames written with one system call when several are queued.
pub const WRITE_BATCH: usize = 64;
/// A commander that does not accept within this is treated as down.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A commander that does not read a frame within this is treated as hung.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// First reconnect delay, doubled per failure up to `BACKOFF_MAX`.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A frame older than this is stale (e.g. a firewall opening asked for a minute ago): dropped.
pub const MAX_QUEUE_AGE: Duration = Duration::from_secs(60);

/// One frame on its way, with what the logs need.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing {
    pub frame: Frame,
    pub key_id: KeyId,
    pub queued: Instant,
}

pub type Sender = mpsc::Sender<Outgoing>;

#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("cannot connect to {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("connecting to {0} timed out")]
    ConnectTimeout(PathBuf),
    #[error("cannot read SO_PEERCRED of {path}: {source}")]
    PeerCred {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "refusing to send frames: the process listening on {path} runs as uid {uid} (pid {pid}), expected uid {expected}"
    )]
    WrongUid {
        path: PathBuf,
        uid: u32,
        pid: i32,
        expected: u32,
    },
}

/// The receiving half, driven by `run`.
#[derive(Debug)]
pub struct Link {
    path: PathBuf,
    commander_uid: u32,
    rx: mpsc::Receiver<Outgoing>,
    counters: Arc<Counters>,
    conn: Option<UnixStream>,
    backoff: Duration,
}

pub fn new(path: PathBuf, commander_uid: u32, counters: Arc<Counters>) -> (Sender, Link) {
    let (tx, rx) = mpsc::channel(QUEUE_LEN);
    (
        tx,
        Link {
            path,
            commander_uid,
            rx,
            counters,
            conn: None,
            backoff: BACKOFF_MIN,
        },
    )
}

/// Log and count a frame that will never reach the commander.
pub fn dropped(counters: &Counters, item: &Outgoing, why: &str) {
    Counters::inc(&counters.queue_dropped);
    tracing::error!(
        event = "failed",
        reason = why,
        key_id = %item.key_id,
        ip = %item.frame.ip,
        command = %item.frame.cmd,
        "frame for the commander dropped: {why}"
    );
}

impl Link {
    /// Deliver queued frames until every sender is gone and the queue is empty.
    pub async fn run(mut self) {
        let mut batch: Vec<Outgoing> = Vec::with_capacity(WRITE_BATCH);
        let mut buf: Vec<u8> = Vec::with_capacity(WRITE_BATCH * FRAME_LEN);
        while let Some(first) = self.rx.recv().await {
            batch.push(first);
            while batch.len() < WRITE_BATCH {
                match self.rx.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
            self.deliver(&mut batch, &mut buf).await;
        }
    }

    /// Write every frame of `batch` (emptied on return): one write for the lot when the
    /// commander keeps up; frames fully written before a failure count as forwarded, the
    /// rest are retried on a new connection (a partial frame dies with the old one).
    async fn deliver(&mut self, batch: &mut Vec<Outgoing>, buf: &mut Vec<u8>) {
        while !batch.is_empty() {
            let counters = self.counters.clone();
            batch.retain(|item| {
                let stale = item.queued.elapsed() > MAX_QUEUE_AGE;
                if stale {
                    dropped(&counters, item, "stale: the commander was unreachable");
                }
                !stale
            });
            if batch.is_empty() {
                return;
            }
            if self.conn.is_none() {
                match self.connect().await {
                    Ok(c) => {
                        self.backoff = BACKOFF_MIN;
                        self.conn = Some(c);
                    }
                    Err(e) => {
                        match e {
                            LinkError::WrongUid { .. } => {
                                tracing::error!(event = "failed", reason = "commander_uid", "{e}")
                            }
                            _ => tracing::warn!(event = "commander_down", "{e}"),
                        }
                        tokio::time::sleep(self.backoff).await;
                        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                }
            }
            let Some(conn) = self.conn.as_mut() else {
                continue;
            };
            // The commander never sends; a readable socket means it closed an idle connection.
            // Checking first keeps frames out of a connection that is already gone.
            let mut probe = [0u8; 1];
            match conn.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                _ => {
                    tracing::info!(
                        event = "commander_reconnect",
                        "commander closed the connection"
                    );
                    self.conn = None;
                    continue;
                }
            }
            buf.clear();
            for item in batch.iter() {
                buf.extend_from_slice(&item.frame.to_bytes());
            }
            let mut written = 0usize;
            let result = tokio::time::timeout(WRITE_TIMEOUT, async {
                while written < buf.len() {
                    match conn.write(&buf[written..]).await {
                        Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                        Ok(n) => written += n,
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            })
            .await;
            let done = written / FRAME_LEN;
            for item in batch.drain(..done) {
                Counters::inc(&self.counters.forwarded);
                tracing::info!(
                    event = "forwarded",
                    key_id = %item.key_id,
                    ip = %item.frame.ip,
                    command = %item.frame.cmd,
                );
            }
            match result {
                Ok(Ok(())) => return,
                Ok(Err(e)) => tracing::info!(
                    event = "commander_reconnect",
                    "commander connection lost ({e}); reconnecting"
                ),
                Err(_) => tracing::warn!(
                    event = "commander_down",
                    "commander did not read frames in time; reconnecting"
                ),
            }
            self.conn = None;
        }
    }

    async fn connect(&self) -> Result<UnixStream, LinkError> {
        let s = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&self.path))
            .await
            .map_err(|_| LinkError::ConnectTimeout(self.path.clone()))?
            .map_err(|source| LinkError::Connect {
                path: self.path.clone(),
                source,
            })?;
        let cred = peer_cred(&s).map_err(|source| LinkError::PeerCred {
            path: self.path.clone(),
            source,
        })?;
        if cred.uid != self.commander_uid {
            return Err(LinkError::WrongUid {
                path: self.path.clone(),
                uid: cred.uid,
                pid: cred.pid,
                expected: self.commander_uid,
            });
        }
        tracing::info!(
            event = "commander_connected",
            pid = cred.pid,
            uid = cred.uid
        );
        Ok(s)
    }
}
