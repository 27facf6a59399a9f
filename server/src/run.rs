//! The running server: the `select!` loop (receive → admit → commit → deliver, SIGHUP,
//! SIGTERM/SIGINT, the periodic tick) and the drain at shutdown. The decision is the gate's,
//! durability the group commit's, delivery the commander link's; this module moves datagrams
//! between them, counts and logs. It must never forward a frame whose floor is not on disk,
//! log once per rejected datagram, or block the loop on the disk or the commander.

use ruroco_kit::notify;
use ruroco_proto::gate::{Gate, Now};
use ruroco_proto::ip::Source;
use ruroco_proto::{Accepted, Reject};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::signal::unix::Signal;
use tokio::task::JoinHandle;

use crate::commander_link::{self, Outgoing};
use crate::config::Config;
use crate::error::ServerError;
use crate::keys::{KeyNames, KeySet};
use crate::receive::Receiver;
use crate::reload;
use crate::status::{self, Counters, RejectLog};
use crate::ticker::{self, Ticker};
use crate::writer::{GroupCommit, Writer, Written};

/// Rejection summaries: at most one per reason per this many seconds.
pub(crate) const SUMMARY_INTERVAL_S: u64 = 10;
/// `STATUS=` is sent at most this often (and only when it changed).
pub(crate) const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// Receive batches handled per wake-up before signals and timers get a turn.
const BATCHES_PER_WAKE: usize = 64;
/// How long, at shutdown, queued frames may still reach the commander and outstanding ones
/// be acknowledged.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(2);

/// What the loop waits on, all set up before the sandbox (nothing here needs a new syscall
/// once confined).
#[derive(Debug)]
pub(crate) struct Io {
    pub(crate) socket: UdpSocket,
    pub(crate) receiver: Receiver,
    pub(crate) hup: Signal,
    pub(crate) term: Signal,
    pub(crate) int: Signal,
    pub(crate) ticker: Ticker,
    pub(crate) watchdog: Option<ticker::Watchdog>,
    pub(crate) writer: Writer,
    pub(crate) link: JoinHandle<()>,
}

/// The state of the running server.
pub(crate) struct Server {
    /// The acceptance decision: keys, policy, rate limits, floor view.
    pub(crate) gate: Gate,
    /// Names of the keys in the gate, for reload messages.
    pub(crate) names: KeyNames,
    pub(crate) commit: GroupCommit,
    pub(crate) counters: Arc<Counters>,
    pub(crate) rejects: RejectLog,
    pub(crate) tx: commander_link::Sender,
    pub(crate) started: Instant,
    /// The settings in effect (the last config a reload applied, restart-only fields as at
    /// start).
    pub(crate) running: Config,
    /// Where a `keys_dir` may move on SIGHUP (`sandbox::readable_dirs`).
    pub(crate) readable_dirs: Vec<PathBuf>,
    /// Reloads so far (the generation of the reload record).
    pub(crate) reloads: u64,
    /// CLOCK_MONOTONIC nanoseconds when the last reload (or the start) began.
    pub(crate) reload_started: u64,
    /// Shown before the counters in `STATUS=` until the next reload: a failed reload, or
    /// settings waiting for a restart.
    pub(crate) note: Option<String>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

/// Run until SIGTERM or SIGINT, then drain: the write in flight and what is pending are
/// finished and their frames get `SHUTDOWN_DRAIN` to reach the commander.
pub(crate) async fn run(config_path: &Path, mut s: Server, io: Io) -> Result<(), ServerError> {
    let Io {
        socket,
        mut receiver,
        mut hup,
        mut term,
        mut int,
        ticker,
        mut watchdog,
        writer,
        mut link,
    } = io;
    let mut last_status = s.status_text();
    loop {
        tokio::select! {
            r = socket.readable(), if s.commit.has_room() => {
                r.map_err(ServerError::Runtime)?;
                for _ in 0..BATCHES_PER_WAKE {
                    if !s.commit.has_room() {
                        break;
                    }
                    match socket.try_io(Interest::READABLE, || receiver.recv(&socket)) {
                        Ok(_) => {
                            s.batch(&receiver);
                            s.commit.start(&writer);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            // e.g. ECONNREFUSED from an ICMP error: not fatal for a UDP server.
                            tracing::debug!(event = "recv_error", error = %e);
                        }
                    }
                }
            }
            written = s.commit.written() => {
                s.finish(written).await;
                s.commit.start(&writer);
            }
            _ = hup.recv() => {
                s.reload(config_path);
                last_status = s.status_text();
                notify::ready_with_status(&last_status);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            t = ticker.tick() => {
                t.map_err(ServerError::Runtime)?;
                if watchdog.as_mut().is_some_and(|w| w.due(Instant::now(), ticker.period())) {
                    notify::watchdog();
                }
                let line = s.status_text();
                if line != last_status {
                    notify::status(&line);
                    last_status = line;
                }
                let now_s = s.started.elapsed().as_secs();
                status::log_summary(&s.rejects.due(now_s));
            }
        }
    }
    notify::stopping();
    // The write in flight completes (or fails), then one for what is still pending, and
    // their frames join the drain: nothing accepted is silently lost.
    while s.commit.in_flight() {
        let written = s.commit.written().await;
        s.finish(written).await;
        s.commit.start(&writer);
    }
    tracing::info!(event = "stopping", status = %s.counters.status_line());
    drop(s);
    // Let frames already persisted reach the commander and be acknowledged, briefly. A link
    // still waiting then is stopped; it logs what the commander never acknowledged.
    if tokio::time::timeout(SHUTDOWN_DRAIN, &mut link)
        .await
        .is_err()
    {
        link.abort();
        let _ = link.await;
    }
    Ok(())
}

impl Server {
    /// Receive → admit → commit for one receive batch: the gate judges every datagram, the
    /// accepted ones wait for a floor write.
    fn batch(&mut self, rx: &Receiver) {
        let now = Now {
            unix_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            mono_ns: u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX),
        };
        let mut n = 0u64;
        for (data, source) in rx.datagrams() {
            n += 1;
            let Some(source) = source else { continue };
            // As logged and as the fail2ban filter matches it: IPv4-mapped is IPv4.
            let source = Source::from(source);
            match self.gate.admit(data, source, now) {
                Ok(a) => self.commit.accept(a, source.addr()),
                Err(r) => self.reject(r, data, source.addr()),
            }
        }
        Counters::add(&self.counters.received, n);
    }

    /// Count a rejection and add it to the summary; a `wrong_destination` names the
    /// destination the client used.
    fn reject(&mut self, r: Reject, data: &[u8], source: IpAddr) {
        self.counters.reject(r);
        if r == Reject::WrongDestination {
            let dst = self.gate.destination(data);
            self.rejects.record_to(r, source, dst);
        } else {
            self.rejects.record(r, source);
        }
    }

    /// Deliver: a write completed. On success its frames leave for the commander. On failure
    /// nothing is forwarded and the gate's floors fall back to what is durable (plus what
    /// still waits): the datagrams never ran, so a client retry after the disk recovers may
    /// run once.
    ///
    /// One write may release up to `MAX_PENDING` frames, more than the commander queue holds:
    /// they are queued `WRITE_BATCH` at a time with a yield after each, so the commander link
    /// moves each group to the commander's socket before the next one is queued.
    async fn finish(&mut self, (batch, result): Written) {
        if let Err(e) = result {
            self.gate
                .restore_floors(self.commit.durable().floors(), self.commit.waiting_floors());
            Counters::add(&self.counters.persist_failed, batch.len() as u64);
            for (a, src) in batch {
                tracing::error!(
                    event = "failed",
                    reason = "persist",
                    key_id = %a.key_id,
                    src_ip = %src,
                    ip = %a.frame.ip,
                    command = %a.frame.cmd,
                    error = %e,
                    "not forwarded: {e}"
                );
            }
            return;
        }
        self.gate.raise_floors(self.commit.durable().floors());
        let now = Instant::now();
        for (i, (a, src)) in batch.into_iter().enumerate() {
            if i > 0 && i % commander_link::WRITE_BATCH == 0 {
                tokio::task::yield_now().await;
            }
            self.deliver(a, src, now);
        }
        // Let the commander link write the last group now.
        tokio::task::yield_now().await;
    }

    fn deliver(&mut self, a: Accepted, src: IpAddr, now: Instant) {
        Counters::inc(&self.counters.accepted);
        tracing::info!(
            event = "accepted",
            key_id = %a.key_id,
            src_ip = %src,
            ip = %a.frame.ip,
            command = %a.frame.cmd,
        );
        let item = Outgoing {
            frame: a.frame,
            key_id: a.key_id,
            queued: now,
        };
        if self.tx.try_send(item).is_err() {
            commander_link::dropped(&self.counters, &item, "queue full");
        }
    }

    /// `STATUS=`: the reload note, if any, then the counters.
    pub(crate) fn status_text(&self) -> String {
        let counters = self.counters.status_line();
        match &self.note {
            Some(n) => format!("{n}; {counters}"),
            None => counters,
        }
    }

    /// Write the reload record for `--reload` (a failure is logged: the reload itself stands).
    pub(crate) fn record(&self, status: reload::Status, message: String) {
        let outcome = reload::Outcome {
            generation: self.reloads,
            started_monotonic_ns: self.reload_started,
            result: status,
            message,
        };
        if let Err(e) = reload::record(&self.running.state_dir, &outcome) {
            tracing::error!(
                event = "reload_record_failed",
                path = %self.running.state_dir.join(reload::OUTCOME_FILE).display(),
                error = %e,
                "cannot record the reload outcome: `ruroco-server --reload` (systemctl reload) will time out"
            );
        }
    }

    /// SIGHUP: apply every setting that can change while running (`ips`, `max_clock_skew`,
    /// `max_age`, `rate_limit`, `keys_dir`, the keys and their allow-lists); name each one that
    /// needs a restart. Fails closed: when the config or a key file is refused, the keys in
    /// use become those of the old set that still load on their own (`KeySet::salvage`), so a
    /// removed key stops at this reload whatever else is wrong; a config that does not load
    /// keeps the previous settings. The outcome goes to the log, `STATUS=` and the record.
    fn reload(&mut self, config_path: &Path) {
        self.reload_started = reload::monotonic_ns();
        self.reloads += 1;
        notify::reloading();
        let mut problems: Vec<String> = Vec::new();
        let plan = match Config::load(config_path) {
            Ok(new) => Some(reload::plan(&self.running, new, &self.readable_dirs)),
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        };
        let effective = plan.as_ref().map_or(&self.running, |p| &p.effective);
        let keys = match KeySet::load(&effective.keys_dir, &effective.keys) {
            Ok(keys) if problems.is_empty() => keys,
            result => {
                if let Err(e) = result {
                    problems.push(e.to_string());
                }
                KeySet::salvage(&self.names, &effective.keys_dir, &effective.keys)
            }
        };
        let names = keys.names();
        let added = names.missing_from(&self.names);
        let removed = self.names.missing_from(&names);
        let (changed, restart) = plan.as_ref().map_or((Vec::new(), Vec::new()), |p| {
            (p.changed.clone(), p.restart.clone())
        });
        for field in &restart {
            tracing::warn!(
                event = "restart_needed",
                field = *field,
                "{field} changed in {}: it takes effect only on a restart ({})",
                config_path.display(),
                reload::RESTART_HINT
            );
        }
        let mut message = format!("{} keys", keys.len());
        if !added.is_empty() {
            message.push_str(&format!(" (added {})", added.join(", ")));
        }
        if !removed.is_empty() {
            message.push_str(&format!(" (removed {})", removed.join(", ")));
        }
        if !changed.is_empty() {
            message.push_str(&format!("; applied {}", changed.join(", ")));
        }
        let restart_note = (!restart.is_empty()).then(|| {
            format!(
                "restart needed for {} ({})",
                restart.join(", "),
                reload::RESTART_HINT
            )
        });
        if let Some(n) = &restart_note {
            message.push_str(&format!("; {n}"));
        }
        if let Some(p) = plan {
            self.apply(p.effective);
        }
        self.gate.set_keys(keys.into_permits());
        self.names = names;
        if problems.is_empty() {
            tracing::info!(
                event = "reloaded",
                keys = self.gate.key_count(),
                changed = %changed.join(","),
                restart_needed = %restart.join(","),
                "reloaded: {message}"
            );
            self.note = restart_note;
            self.record(reload::Status::Ok, format!("reloaded: {message}"));
        } else {
            let why = problems.join("; ");
            let message = format!(
                "reload failed: {why}; now in use: {message} (a failed reload keeps only the previous keys whose files still pass every check; fix the files and reload again)"
            );
            tracing::error!(
                event = "failed",
                reason = "reload",
                keys = self.gate.key_count(),
                error = %why,
                "{message}"
            );
            self.note = Some(format!("reload failed: {why}"));
            self.record(reload::Status::Failed, message);
        }
    }

    /// Install the settings a reload applies; the rate limiter keeps each source's bucket
    /// unless `rate_limit.sources` (the table size) changed.
    fn apply(&mut self, new: Config) {
        self.gate.set_limits(new.limits());
        self.gate.set_policy(new.policy());
        self.running = new;
    }
}
