//! The link to the root commander: a bounded queue of frames, one Unix stream connection,
//! a SO_PEERCRED check before the first frame on every new connection, acknowledgements read
//! back, unacknowledged frames sent again on the next connection, timeouts on every socket
//! operation and reconnect with backoff. It must never block the receive loop, never send a
//! frame to a peer whose uid is not `commander_uid`, and never queue without bound.

use ruroco_kit::peer::peer_cred;
use ruroco_proto::frame::AckError;
use ruroco_proto::{ACK_LEN, Ack, AckOutcome, FRAME_LEN, Frame, KeyId};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::status::Counters;

/// Frames waiting in the channel for the link; beyond this they are dropped and counted. Also
/// the most frames the link holds waiting to be written (a commander that is down): then it
/// takes no new frame and the channel fills instead.
pub const QUEUE_LEN: usize = 1024;
/// The most frames written and not yet acknowledged. A commander acknowledges a frame when
/// its command finished, so this is at least the largest number of frames a commander can
/// hold (`max_parallel` 1024 + `queue` 65536): a burst it can queue is never dropped here while
/// it works through it. Memory: under 100 bytes a frame.
pub(crate) const MAX_UNACKED: usize = 1024 + 65536;
/// Frames written with one system call when several are queued.
pub const WRITE_BATCH: usize = 64;
/// Acknowledgements decoded per read system call.
pub(crate) const ACK_BATCH: usize = 64;
/// A commander that does not accept within this is treated as down.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A commander that does not read a frame within this is treated as hung.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// First reconnect delay, doubled per failure up to `BACKOFF_MAX`; an acknowledgement resets it.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest delay between two connection attempts.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// While the commander stays unreachable, `commander_down` is logged at most once per this.
pub(crate) const DOWN_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// A frame written to the commander this long after it was queued is logged as late.
pub(crate) const LATE_AFTER: Duration = Duration::from_secs(1);
/// What `commander_down` tells the operator to do.
pub(crate) const DOWN_HINT: &str = "start the commander: systemctl start ruroco-commander.socket";
/// A frame older than this is stale (e.g. a firewall opening asked for a minute ago): dropped
/// instead of written, or written again after a reconnect.
pub(crate) const MAX_QUEUE_AGE: Duration = Duration::from_secs(60);

/// One frame on its way, with what the logs need.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outgoing {
    /// The 24 bytes for the commander.
    pub(crate) frame: Frame,
    /// The key that authenticated the datagram, for the logs.
    pub(crate) key_id: KeyId,
    /// When the frame entered the queue; `MAX_QUEUE_AGE` is measured from here.
    pub(crate) queued: Instant,
}

/// Errno values of a refused connect(2) (unix(7): write permission on the socket file and
/// search permission on its directories are needed).
mod libc_errno {
    pub(crate) const EPERM: i32 = nix::errno::Errno::EPERM as i32;
    pub(crate) const EACCES: i32 = nix::errno::Errno::EACCES as i32;
}

/// What to do when this process may not connect to the commander's socket at `path`: its
/// owner and mode as seen now, and the commander's `socket_group`.
fn permission_hint(path: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let seen = match std::fs::metadata(path) {
        Ok(m) => format!(
            "owner uid {} gid {}, mode {:04o}",
            m.uid(),
            m.gid(),
            m.mode() & 0o7777
        ),
        Err(e) => format!("cannot inspect it: {e}"),
    };
    format!(
        "the commander runs but this user may not connect to {} ({seen}): make the commander's socket_group (commander.toml) a group of this user and restart it, or check the directories above the socket (ruroco-server --check)",
        path.display()
    )
}

/// The sending half: the receive loop queues frames with `try_send` and never waits.
pub(crate) type Sender = mpsc::Sender<Outgoing>;

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

/// An acknowledgement the link cannot accept; the connection is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum BadAck {
    #[error("undecodable acknowledgement: {0}")]
    Decode(AckError),
    #[error("acknowledgement for seq {0}, which names no unacknowledged frame")]
    UnknownSeq(u64),
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error("the commander closed the connection")]
    Closed,
    #[error("the commander closed the connection in the middle of an acknowledgement")]
    ClosedMidAck,
    #[error("reading from the commander failed: {0}")]
    Read(std::io::Error),
    #[error("writing to the commander failed: {0}")]
    Write(std::io::Error),
    #[error("the commander did not read frames within {WRITE_TIMEOUT:?}")]
    WriteTimeout,
    #[error(transparent)]
    BadAck(BadAck),
}

/// Frames the link holds, sans IO: those to write next (frames sent again after a reconnect
/// first, in their original order) and those written on the current connection and not
/// acknowledged yet, by sequence number. The link only takes new frames while `room()` is
/// positive, so at most `QUEUE_LEN` wait to be written and `MAX_UNACKED` wait for an
/// acknowledgement (after a reconnect the latter join the former, once).
#[derive(Debug, Default)]
struct Outstanding {
    /// To write, in order; `true` marks a frame written on an earlier connection.
    pending: VecDeque<(Outgoing, bool)>,
    /// Written on the current connection, not acknowledged yet.
    unacked: BTreeMap<u64, Outgoing>,
    /// Sequence number of the next frame written on the current connection.
    next_seq: u64,
}

impl Outstanding {
    fn len(&self) -> usize {
        self.pending.len() + self.unacked.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many new frames may still be taken.
    fn room(&self) -> usize {
        QUEUE_LEN
            .saturating_sub(self.pending.len())
            .min(MAX_UNACKED.saturating_sub(self.unacked.len()))
    }

    fn push(&mut self, item: Outgoing) {
        self.pending.push_back((item, false));
    }

    /// Remove and return the frames waiting to be written that are older than `max_age`.
    fn take_stale(&mut self, now: Instant, max_age: Duration) -> Vec<(Outgoing, bool)> {
        let mut stale = Vec::new();
        self.pending.retain(|entry| {
            let keep = now.saturating_duration_since(entry.0.queued) <= max_age;
            if !keep {
                stale.push(*entry);
            }
            keep
        });
        stale
    }

    /// The next frames to write, at most `max`.
    fn to_write(&self, max: usize) -> impl Iterator<Item = &Outgoing> {
        self.pending.iter().take(max).map(|(item, _)| item)
    }

    /// The first pending frame was written whole: it now waits for its acknowledgement under
    /// the returned seq. Also says whether it had been written on an earlier connection.
    fn written(&mut self) -> Option<(Outgoing, bool, u64)> {
        let (item, resent) = self.pending.pop_front()?;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.unacked.insert(seq, item);
        Some((item, resent, seq))
    }

    /// The frame an acknowledgement names, no longer outstanding.
    fn acked(&mut self, seq: u64) -> Option<Outgoing> {
        self.unacked.remove(&seq)
    }

    /// The connection ended: every unacknowledged frame goes back in front of the pending
    /// ones, in the order it was written, and the next connection counts from seq 0. Returns
    /// how many will be sent again.
    fn connection_lost(&mut self) -> usize {
        let unacked = std::mem::take(&mut self.unacked);
        let n = unacked.len();
        for item in unacked.into_values().rev() {
            self.pending.push_front((item, true));
        }
        self.next_seq = 0;
        n
    }
}

/// Acknowledgement bytes read and not yet decoded: whole acknowledgements are taken after
/// every read, so at most one partial one is carried over to the next read.
#[derive(Debug)]
struct AckReader {
    buf: [u8; ACK_LEN * ACK_BATCH],
    len: usize,
}

impl Default for AckReader {
    fn default() -> Self {
        Self {
            buf: [0; ACK_LEN * ACK_BATCH],
            len: 0,
        }
    }
}

impl AckReader {
    /// Where the next read goes (never empty: less than one acknowledgement is carried over).
    fn spare(&mut self) -> &mut [u8] {
        &mut self.buf[self.len..]
    }

    /// `n` bytes were read into `spare()`; returns the whole acknowledgements now available
    /// and keeps the partial rest.
    fn filled(&mut self, n: usize) -> Vec<[u8; ACK_LEN]> {
        self.len = (self.len + n).min(self.buf.len());
        let whole = self.len / ACK_LEN * ACK_LEN;
        let acks = self.buf[..whole]
            .chunks_exact(ACK_LEN)
            .filter_map(|c| <[u8; ACK_LEN]>::try_from(c).ok())
            .collect();
        self.buf.copy_within(whole..self.len, 0);
        self.len -= whole;
        acks
    }

    /// Bytes of an acknowledgement not complete yet.
    fn partial(&self) -> usize {
        self.len
    }

    fn clear(&mut self) {
        self.len = 0;
    }
}

/// The receiving half, driven by `run`.
#[derive(Debug)]
pub(crate) struct Link {
    path: PathBuf,
    commander_uid: u32,
    rx: mpsc::Receiver<Outgoing>,
    /// Every sender is gone: take no more frames, finish the outstanding ones.
    closed: bool,
    counters: Arc<Counters>,
    conn: Option<UnixStream>,
    out: Outstanding,
    acks: AckReader,
    /// Frames of one write, encoded.
    buf: Vec<u8>,
    backoff: Duration,
    /// No connection attempt before this.
    retry_at: Option<Instant>,
    outage: Outage,
}

/// The failed connection attempts of one outage, to log it once per `DOWN_LOG_INTERVAL`
/// rather than once per attempt (every `BACKOFF_MAX` while frames wait).
#[derive(Debug, Default)]
struct Outage {
    since: Option<Instant>,
    logged: Option<Instant>,
    attempts: u64,
}

impl Outage {
    /// One failed attempt at `now`: `Some((down for, attempts))` when it is to be logged.
    fn failed(&mut self, now: Instant) -> Option<(Duration, u64)> {
        let since = *self.since.get_or_insert(now);
        self.attempts += 1;
        if self
            .logged
            .is_some_and(|t| now.duration_since(t) < DOWN_LOG_INTERVAL)
        {
            return None;
        }
        self.logged = Some(now);
        Some((now.duration_since(since), self.attempts))
    }

    /// A connection succeeded at `now`: how long the outage lasted, and its failed attempts.
    fn ended(&mut self, now: Instant) -> Option<(Duration, u64)> {
        let since = self.since.take()?;
        let attempts = std::mem::take(&mut self.attempts);
        self.logged = None;
        Some((now.duration_since(since), attempts))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The channel and the link that drains it towards the commander at `path`.
pub(crate) fn new(path: PathBuf, commander_uid: u32, counters: Arc<Counters>) -> (Sender, Link) {
    let (tx, rx) = mpsc::channel(QUEUE_LEN);
    (
        tx,
        Link {
            path,
            commander_uid,
            rx,
            closed: false,
            counters,
            conn: None,
            out: Outstanding::default(),
            acks: AckReader::default(),
            buf: Vec::with_capacity(WRITE_BATCH * FRAME_LEN),
            backoff: BACKOFF_MIN,
            retry_at: None,
            outage: Outage::default(),
        },
    )
}

/// Log and count a frame that will never reach the commander.
pub(crate) fn dropped(counters: &Counters, item: &Outgoing, why: &str) {
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

/// What woke the connected loop.
enum Wake {
    Readable(std::io::Result<()>),
    Frame(Option<Outgoing>),
}

impl Link {
    /// Deliver frames until every sender is gone and every frame is acknowledged (or dropped).
    /// At shutdown the caller bounds this with a timeout; frames still outstanding then are
    /// logged when the link is dropped.
    pub(crate) async fn run(mut self) {
        loop {
            if self.conn.is_none() {
                if self.out.is_empty() {
                    if self.closed {
                        return;
                    }
                    // Idle: a connection is only made for a frame.
                    match self.rx.recv().await {
                        Some(item) => self.take(item),
                        None => return,
                    }
                }
                self.drop_stale();
                if !self.out.is_empty() {
                    self.reconnect().await;
                }
                continue;
            }
            if !self.out.pending.is_empty() {
                self.drop_stale();
                self.write_pending().await;
                continue;
            }
            if self.closed && self.out.is_empty() {
                return;
            }
            // Wait for acknowledgements and, while there is room, for new frames. Frames are
            // written `WRITE_BATCH` at a time and acknowledgements read between batches, so the
            // commander never waits long to write its acknowledgements while we write frames.
            let take = !self.closed && self.out.room() > 0;
            let Some(conn) = self.conn.as_ref() else {
                continue;
            };
            let wake = tokio::select! {
                r = conn.readable() => Wake::Readable(r),
                item = self.rx.recv(), if take => Wake::Frame(item),
            };
            match wake {
                Wake::Readable(Ok(())) => self.read_acks(),
                Wake::Readable(Err(e)) => self.lost(Ended::Read(e)),
                Wake::Frame(Some(item)) => self.take(item),
                Wake::Frame(None) => self.closed = true,
            }
        }
    }

    /// Take `first` and whatever else is queued, up to one write batch and the room left.
    fn take(&mut self, first: Outgoing) {
        self.out.push(first);
        for _ in 1..WRITE_BATCH.min(self.out.room() + 1) {
            match self.rx.try_recv() {
                Ok(item) => self.out.push(item),
                Err(_) => break,
            }
        }
    }

    fn drop_stale(&mut self) {
        for (item, resent) in self.out.take_stale(Instant::now(), MAX_QUEUE_AGE) {
            let why = if resent {
                "stale: not acknowledged before the commander connection ended"
            } else {
                "stale: the commander was unreachable"
            };
            dropped(&self.counters, &item, why);
        }
    }

    /// Connect (after the backoff delay, if one is due); on failure schedule the next try.
    async fn reconnect(&mut self) {
        if let Some(at) = self.retry_at.take() {
            tokio::time::sleep_until(at.into()).await;
        }
        match self.connect().await {
            Ok(c) => {
                if let Some((down, attempts)) = self.outage.ended(Instant::now()) {
                    tracing::info!(
                        event = "commander_up",
                        down_ms = millis(down),
                        attempts,
                        "the commander is reachable again; waiting frames go now"
                    );
                }
                self.conn = Some(c)
            }
            Err(e) => {
                if let Some((down, attempts)) = self.outage.failed(Instant::now()) {
                    let waiting = self.out.pending.len();
                    match e {
                        LinkError::WrongUid { .. } => tracing::error!(
                            event = "failed",
                            reason = "commander_uid",
                            down_ms = millis(down),
                            attempts,
                            waiting,
                            "{e} (logged once a minute while it lasts)"
                        ),
                        LinkError::Connect {
                            ref path,
                            ref source,
                        } if matches!(
                            source.raw_os_error(),
                            Some(libc_errno::EACCES | libc_errno::EPERM)
                        ) =>
                        {
                            let hint = permission_hint(path);
                            tracing::warn!(
                                event = "commander_down",
                                down_ms = millis(down),
                                attempts,
                                waiting,
                                hint = %hint,
                                "{e}: {hint} (frames wait up to {} s; logged once a minute while it lasts)",
                                MAX_QUEUE_AGE.as_secs()
                            )
                        }
                        _ => tracing::warn!(
                            event = "commander_down",
                            down_ms = millis(down),
                            attempts,
                            waiting,
                            hint = DOWN_HINT,
                            "{e}: {DOWN_HINT} (frames wait up to {} s; logged once a minute while it lasts)",
                            MAX_QUEUE_AGE.as_secs()
                        ),
                    }
                }
                self.back_off();
            }
        }
    }

    fn back_off(&mut self) {
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Write up to one batch of pending frames: one write for the lot when the commander keeps
    /// up. Frames fully written before a failure wait for their acknowledgement like the
    /// others (and are sent again on the next connection); a partial frame dies with the
    /// connection and is written whole on the next one.
    async fn write_pending(&mut self) {
        let Self { conn, buf, out, .. } = self;
        let Some(conn) = conn.as_mut() else {
            return;
        };
        buf.clear();
        for item in out.to_write(WRITE_BATCH) {
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
        for _ in 0..written / FRAME_LEN {
            let Some((item, resent, seq)) = self.out.written() else {
                break;
            };
            // `forwarded` counts a frame's first write only. Each event is a literal in its own
            // log call so the manual's test (`journal_events_are_the_events_logged`) sees it.
            if !resent {
                Counters::inc(&self.counters.forwarded);
            }
            let waited = item.queued.elapsed();
            let (key_id, ip, command) = (&item.key_id, item.frame.ip, &item.frame.cmd);
            if waited >= LATE_AFTER {
                let ms = millis(waited);
                if resent {
                    tracing::warn!(
                        event = "resent",
                        key_id = %key_id,
                        ip = %ip,
                        command = %command,
                        seq,
                        late = true,
                        waited_ms = ms,
                        "late: written {ms} ms after it was accepted (the commander was unreachable); the command runs only now"
                    );
                } else {
                    tracing::warn!(
                        event = "forwarded",
                        key_id = %key_id,
                        ip = %ip,
                        command = %command,
                        seq,
                        late = true,
                        waited_ms = ms,
                        "late: written {ms} ms after it was accepted (the commander was unreachable); the command runs only now"
                    );
                }
            } else if resent {
                tracing::info!(event = "resent", key_id = %key_id, ip = %ip, command = %command, seq);
            } else {
                tracing::info!(event = "forwarded", key_id = %key_id, ip = %ip, command = %command, seq);
            }
        }
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.lost(Ended::Write(e)),
            Err(_) => self.lost(Ended::WriteTimeout),
        }
    }

    /// Read and apply every acknowledgement available now; end the connection on EOF, an
    /// error or an acknowledgement that names no outstanding frame.
    fn read_acks(&mut self) {
        loop {
            let Some(conn) = self.conn.as_ref() else {
                return;
            };
            let n = match conn.try_read(self.acks.spare()) {
                Ok(0) if self.acks.partial() > 0 => return self.lost(Ended::ClosedMidAck),
                Ok(0) => return self.lost(Ended::Closed),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return self.lost(Ended::Read(e)),
            };
            for bytes in self.acks.filled(n) {
                if let Err(e) = self.acknowledged(&bytes) {
                    return self.lost(Ended::BadAck(e));
                }
            }
        }
    }

    /// One acknowledgement: the frame it names is delivered.
    fn acknowledged(&mut self, bytes: &[u8; ACK_LEN]) -> Result<(), BadAck> {
        let ack = Ack::from_bytes(bytes).map_err(BadAck::Decode)?;
        let item = self.out.acked(ack.seq).ok_or(BadAck::UnknownSeq(ack.seq))?;
        Counters::inc(&self.counters.delivered);
        // The commander works: the next reconnect need not wait long.
        self.backoff = BACKOFF_MIN;
        let outcome = ack.outcome.as_str();
        if ack.outcome == AckOutcome::Done {
            tracing::info!(
                event = "delivered",
                key_id = %item.key_id,
                ip = %item.frame.ip,
                command = %item.frame.cmd,
                outcome,
            );
        } else {
            tracing::warn!(
                event = "delivered",
                key_id = %item.key_id,
                ip = %item.frame.ip,
                command = %item.frame.cmd,
                outcome,
                "the commander reports {outcome} for this frame"
            );
        }
        Ok(())
    }

    /// Drop the connection; its unacknowledged frames are written again, first, on the next
    /// one. With anything outstanding the next connection waits for the backoff delay: an
    /// immediate retry could spin against a commander that closes every connection.
    fn lost(&mut self, why: Ended) {
        self.conn = None;
        self.acks.clear();
        let resend = self.out.connection_lost();
        match &why {
            Ended::Closed | Ended::Read(_) | Ended::Write(_) => {
                tracing::info!(event = "commander_reconnect", resend, "{why}; reconnecting")
            }
            Ended::ClosedMidAck | Ended::WriteTimeout => {
                tracing::warn!(event = "commander_down", resend, "{why}; reconnecting")
            }
            Ended::BadAck(_) => tracing::warn!(
                event = "commander_protocol",
                resend,
                "{why}; dropping the connection"
            ),
        }
        if !self.out.is_empty() {
            self.back_off();
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

impl Drop for Link {
    /// At shutdown, after the drain: say how many frames the commander never acknowledged
    /// (written ones may have run; they will not be sent again).
    fn drop(&mut self) {
        if !self.out.is_empty() {
            tracing::warn!(
                event = "unacknowledged",
                written = self.out.unacked.len(),
                not_written = self.out.pending.len(),
                "stopping with frames the commander has not acknowledged"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_logged_once_per_interval_and_its_end_once() {
        let t0 = Instant::now();
        let mut o = Outage::default();
        assert_eq!(o.failed(t0), Some((Duration::ZERO, 1)));
        for i in 1..100u32 {
            assert_eq!(o.failed(t0 + BACKOFF_MAX * i / 10), None);
        }
        let later = t0 + DOWN_LOG_INTERVAL;
        assert_eq!(o.failed(later), Some((DOWN_LOG_INTERVAL, 101)));
        assert_eq!(o.ended(later), Some((DOWN_LOG_INTERVAL, 101)));
        assert_eq!(o.ended(later), None, "no outage, nothing to report");
        assert_eq!(o.failed(later), Some((Duration::ZERO, 1)), "a new outage");
    }
    use ruroco_proto::CmdHash;
    use std::net::IpAddr;

    fn item(n: u8, queued: Instant) -> Outgoing {
        Outgoing {
            frame: Frame {
                cmd: CmdHash(u64::from(n)),
                ip: IpAddr::from([192, 0, 2, n]),
            },
            key_id: KeyId([n; 8]),
            queued,
        }
    }

    fn cmds<'a>(it: impl Iterator<Item = &'a Outgoing>) -> Vec<u64> {
        it.map(|o| o.frame.cmd.0).collect()
    }

    #[test]
    fn seqs_count_from_zero_and_acks_may_come_in_any_order() {
        let now = Instant::now();
        let mut o = Outstanding::default();
        for n in 1..=3 {
            o.push(item(n, now));
        }
        let seqs: Vec<u64> = (0..3).filter_map(|_| o.written()).map(|w| w.2).collect();
        assert_eq!(seqs, [0, 1, 2]);
        assert_eq!(o.acked(2).map(|i| i.frame.cmd.0), Some(3));
        assert_eq!(o.acked(0).map(|i| i.frame.cmd.0), Some(1));
        assert!(o.acked(0).is_none(), "an acknowledgement counts once");
        assert!(o.acked(7).is_none(), "never written");
        assert_eq!(o.len(), 1);
    }

    #[test]
    fn a_lost_connection_puts_unacked_frames_first_in_their_order_and_restarts_seqs() {
        let now = Instant::now();
        let mut o = Outstanding::default();
        for n in 1..=5 {
            o.push(item(n, now));
        }
        for _ in 0..3 {
            o.written();
        }
        o.acked(1);
        assert_eq!(o.connection_lost(), 2);
        assert_eq!(cmds(o.to_write(10)), [1, 3, 4, 5]);
        let again: Vec<(u64, bool, u64)> = (0..4)
            .filter_map(|_| o.written())
            .map(|(i, resent, seq)| (i.frame.cmd.0, resent, seq))
            .collect();
        assert_eq!(
            again,
            [(1, true, 0), (3, true, 1), (4, false, 2), (5, false, 3)]
        );
        assert_eq!(o.connection_lost(), 4);
        assert!(o.to_write(10).count() == 4 && o.unacked.is_empty());
    }

    #[test]
    fn stale_frames_leave_and_room_is_bounded() {
        let t0 = Instant::now();
        let later = t0 + MAX_QUEUE_AGE;
        let mut o = Outstanding::default();
        o.push(item(1, t0));
        o.push(item(2, later));
        o.written();
        o.connection_lost();
        o.push(item(3, t0));
        let stale = o.take_stale(later + Duration::from_secs(1), MAX_QUEUE_AGE);
        let stale: Vec<(u64, bool)> = stale.iter().map(|(i, r)| (i.frame.cmd.0, *r)).collect();
        assert_eq!(stale, [(1, true), (3, false)]);
        assert_eq!(cmds(o.to_write(10)), [2]);

        // Waiting to be written: QUEUE_LEN at most.
        let mut o = Outstanding::default();
        for n in 0..QUEUE_LEN {
            o.push(item((n % 250) as u8, t0));
        }
        assert_eq!(o.room(), 0);
        o.written();
        assert_eq!(o.room(), 1);
        // Written and waiting for an acknowledgement: MAX_UNACKED at most.
        let mut o = Outstanding::default();
        for n in 0..MAX_UNACKED {
            o.push(item((n % 250) as u8, t0));
            o.written();
        }
        assert_eq!(o.room(), 0);
        o.acked(0);
        assert_eq!(o.room(), 1);
    }

    #[test]
    fn acks_are_reassembled_across_reads() {
        let mut r = AckReader::default();
        let a = Ack {
            seq: 1,
            outcome: AckOutcome::Done,
        }
        .to_bytes();
        let b = Ack {
            seq: 0x0102_0304_0506_0708,
            outcome: AckOutcome::Refused,
        }
        .to_bytes();
        let mut stream = a.to_vec();
        stream.extend_from_slice(&b);
        // 5 bytes, then 11 (the rest of a and most of b), then the last 2.
        let mut got = Vec::new();
        for chunk in [&stream[..5], &stream[5..16], &stream[16..]] {
            r.spare()[..chunk.len()].copy_from_slice(chunk);
            got.extend(r.filled(chunk.len()));
        }
        assert_eq!(got, [a, b]);
        assert_eq!(r.partial(), 0);
        r.spare()[..3].copy_from_slice(&a[..3]);
        assert!(r.filled(3).is_empty());
        assert_eq!(r.partial(), 3);
        assert!(r.spare().len() >= ACK_LEN * (ACK_BATCH - 1));
    }

    #[test]
    fn a_full_read_buffer_yields_every_ack() {
        let mut r = AckReader::default();
        let mut stream = Vec::new();
        for seq in 0..ACK_BATCH as u64 {
            stream.extend_from_slice(
                &Ack {
                    seq,
                    outcome: AckOutcome::Failed,
                }
                .to_bytes(),
            );
        }
        let spare = r.spare();
        assert_eq!(spare.len(), stream.len());
        spare.copy_from_slice(&stream);
        let got = r.filled(stream.len());
        assert_eq!(got.len(), ACK_BATCH);
        assert_eq!(Ack::from_bytes(&got[ACK_BATCH - 1]).map(|a| a.seq), Ok(63));
    }
}
