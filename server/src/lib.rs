//! ruroco-server: receives 94-byte datagrams, validates them (shared::verdict), persists the
//! replay floor (on a writer thread, off the receive loop) and forwards 24-byte frames to the
//! root commander only once their floor is on disk. All logic lives here so
//! tests can reach it; `run()` shows the start-up order. It must never run a command, read
//! the commands file, or answer on UDP.
#![forbid(unsafe_code)]

pub mod activation;
pub mod commander_link;
pub mod config;
pub mod genkey;
pub mod keys;
pub mod manual;
pub mod privileges;
pub mod rate_limit;
pub mod receive;
pub mod reload;
pub mod replay;
mod sandbox;
pub mod status;
pub mod ticker;

use clap::{CommandFactory, Parser};
use ruroco_kit::notify;
use ruroco_proto::verdict::{self, Accepted};
use ruroco_proto::{KeyId, Policy, Reject, ip, protocol};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::Interest;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

use crate::commander_link::Outgoing;
use crate::config::Config;
use crate::keys::KeySet;
use crate::rate_limit::RateLimiter;
use crate::replay::{Floors, Recent, ReplayError, ReplayState, Writer};
use crate::status::{Counters, RejectLog};
use crate::ticker::Ticker;

/// Rejection summaries: at most one per reason per this many seconds.
pub const SUMMARY_INTERVAL_S: u64 = 10;
/// `STATUS=` is sent at most this often (and only when it changed).
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// Receive batches handled per wake-up before signals and timers get a turn.
pub const BATCHES_PER_WAKE: usize = 64;
/// How long, at shutdown, queued frames may still reach the commander and outstanding ones
/// be acknowledged.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(2);
/// Accepted datagrams that may wait for the next floor write while one is in flight. When
/// this many are waiting the socket is not read until the write completes: the kernel's
/// receive buffer takes the back-pressure and memory stays bounded.
pub const MAX_PENDING: usize = 4096;

/// Command line of `ruroco-server`.
#[derive(Debug, Parser)]
#[command(
    name = "ruroco-server",
    version,
    about = "Receive ruroco datagrams, validate them and forward commands to ruroco-commander"
)]
struct Args {
    /// Path of the server config.
    #[arg(long, value_name = "PATH", default_value = config::DEFAULT_CONFIG)]
    config: PathBuf,
    /// Validate the config and keys, print what would be loaded, and exit (0 or 78).
    #[arg(long)]
    check: bool,
    /// Reload the running server with this process id: send it SIGHUP, wait until it records
    /// the outcome, print it and exit 0 (applied), 78 (the reload failed: the reason is
    /// printed) or 69 (no outcome). `ExecReload=` of ruroco.service runs this.
    #[arg(long, value_name = "PID", conflicts_with = "check",
          value_parser = clap::value_parser!(i32).range(1..))]
    reload: Option<i32>,
    #[command(subcommand)]
    op: Option<Op>,
}

/// Operator commands that do not start the server.
#[derive(Debug, clap::Subcommand)]
enum Op {
    /// Write a new key file (0640, owned by you and GROUP) and print its key id; never overwrites
    GenKey {
        /// The new key file, e.g. /etc/ruroco/keys/laptop.key (its stem names the key)
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// The group that may read it: the one ruroco-server runs as
        #[arg(long, value_name = "GROUP", default_value = config::DEFAULT_USER)]
        group: String,
    },
}

/// The clap definition, for man pages and completions.
pub fn cli() -> clap::Command {
    Args::command()
}

/// Everything that stops the server, each mapped to a sysexits code.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Keys(#[from] keys::KeysError),
    #[error(transparent)]
    Trust(#[from] ruroco_kit::trust::TrustError),
    #[error(transparent)]
    Replay(#[from] replay::ReplayError),
    #[error(transparent)]
    Socket(#[from] activation::ActivationError),
    #[error(transparent)]
    Privileges(#[from] privileges::PrivError),
    #[error("sandbox: {0}")]
    Sandbox(#[from] sandbox::SandboxError),
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
}

impl ServerError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ServerError::Config(_)
            | ServerError::Keys(_)
            | ServerError::Trust(_)
            | ServerError::Replay(_) => 78,
            ServerError::Socket(activation::ActivationError::TooMany(_)) => 78,
            ServerError::Socket(_) => 74,
            ServerError::Privileges(
                privileges::PrivError::NoUser(_) | privileges::PrivError::RootUser(_),
            ) => 78,
            ServerError::Privileges(_) => 77,
            ServerError::Sandbox(_) | ServerError::Runtime(_) => 70,
        }
    }
}

/// Entry point called by `main`; returns the process exit code.
pub fn run() -> i32 {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 64 } else { 0 };
        }
    };
    if let Some(Op::GenKey { path, group }) = &args.op {
        return match genkey::gen_key(path, group) {
            Ok(id) => {
                println!("key {id} written to {}", path.display());
                0
            }
            Err(e) => {
                eprintln!("{e}");
                e.exit_code()
            }
        };
    }
    if args.check {
        return check(&args.config);
    }
    if let Some(pid) = args.reload {
        return match reload::request(&args.config, pid) {
            Ok(message) => {
                println!("{message}");
                0
            }
            Err(e) => {
                eprintln!("{e}");
                e.exit_code()
            }
        };
    }
    // First, before anything is opened (the journald socket of the logger included): nothing
    // the parent left open stays (a second UDP socket would escape the seccomp pin on the one
    // the server receives on).
    let closed = ruroco_kit::fds::close_inherited();
    ruroco_kit::logging::init("ruroco-server");
    match serve(&args.config, closed) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(event = "failed", "{e}");
            e.exit_code()
        }
    }
}

/// Load the config and keys and check every path they name as the server's user will see
/// them: the one verdict `--check` and the start share.
fn preflight(path: &Path) -> Result<(Config, KeySet), ServerError> {
    let cfg = Config::load(path)?;
    let who = cfg.who()?;
    cfg.check_paths(path, &who)?;
    let keys = KeySet::load_for(&cfg.keys_dir, &cfg.keys, &who)?;
    Ok((cfg, keys))
}

/// `--check`: config and keys, one line per key, then the effective settings.
fn check(path: &Path) -> i32 {
    let (c, keys) = match preflight(path) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            return e.exit_code();
        }
    };
    // The replay floors as the start reads them: an empty, truncated or unparsable file
    // refuses the start, so it refuses `--check` too.
    let floors = match ReplayState::load(&c.state_dir) {
        Ok(r) => r.len(),
        Err(e) => {
            let e = ServerError::from(e);
            eprintln!("{e}");
            return e.exit_code();
        }
    };
    for p in &keys.skipped {
        eprintln!(
            "warning: {}: not a regular file: skipped (move it out of keys_dir)",
            p.display()
        );
    }
    for k in keys.sorted() {
        let cmds = k
            .allowed_names
            .as_ref()
            .map_or_else(|| "all".to_owned(), |n| n.join(","));
        println!("key {} {} commands={cmds}", k.key.id(), k.path.display());
    }
    // As they are matched: an IPv4-mapped address is its IPv4 address.
    let ips: Vec<String> = c
        .ips
        .iter()
        .map(|ip| ip::canonical(*ip).to_string())
        .collect();
    println!("ips={}", ips.join(","));
    println!("listen={}", c.listen);
    println!("keys_dir={}", c.keys_dir.display());
    println!("state_dir={} replay_floors={floors}", c.state_dir.display());
    println!("commander_socket={}", c.commander_socket.display());
    println!("user={}", c.user);
    println!("commander_uid={}", c.commander_uid);
    println!("max_clock_skew={}s", c.max_clock_skew.0.as_secs());
    match c.max_age {
        Some(d) => println!("max_age={}s", d.0.as_secs()),
        None => println!("max_age=off"),
    }
    println!("receive_buffer={}", c.receive_buffer);
    let rl = &c.rate_limit;
    println!(
        "rate_limit per_source={} burst={} global={} sources={}",
        rl.per_source, rl.burst, rl.global, rl.sources
    );
    0
}

/// Start-up steps 1–2, then the runtime for the rest.
fn serve(config_path: &Path, closed: Vec<i32>) -> Result<(), ServerError> {
    let (cfg, keys) = preflight(config_path)?;
    for p in &keys.skipped {
        tracing::warn!(event = "key_skipped", path = %p.display(), detail = "not a regular file: skipped; move it out of keys_dir");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServerError::Runtime)?;
    rt.block_on(serve_async(config_path, cfg, keys, closed))
}

async fn serve_async(
    config_path: &Path,
    cfg: Config,
    keys: KeySet,
    closed_fds: Vec<i32>,
) -> Result<(), ServerError> {
    // 3. The socket (activated or bound), while we may still be root.
    let taken = activation::take(cfg.listen, cfg.receive_buffer)?;
    let origin = taken.origin.clone();
    let socket = tokio::net::UdpSocket::from_std(taken.socket).map_err(ServerError::Runtime)?;
    // Signal streams now, so nothing needs new setup syscalls once confined.
    let mut hup = signal(SignalKind::hangup()).map_err(ServerError::Runtime)?;
    let mut term = signal(SignalKind::terminate()).map_err(ServerError::Runtime)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServerError::Runtime)?;
    // 4–5. Switch user if root, drop every capability, verify.
    let dropped = privileges::drop_privileges(&cfg.user)?;
    // 6. The replay floors, read as the unprivileged user that will write them.
    let replay = ReplayState::load(&cfg.state_dir)?;
    let state_file = replay.path().to_owned();
    let counters = Arc::new(Counters::default());
    let (tx, link) = commander_link::new(
        cfg.commander_socket.clone(),
        cfg.commander_uid,
        counters.clone(),
    );
    let link = tokio::spawn(link.run());
    let sandbox_paths = sandbox::Paths {
        config: config_path,
        keys_dir: &cfg.keys_dir,
        state_dir: &cfg.state_dir,
        commander_socket: &cfg.commander_socket,
    };
    let readable_dirs = sandbox::readable_dirs(&sandbox_paths);
    let mut engine = Engine {
        policy: cfg.policy(),
        limiter: RateLimiter::new(
            cfg.rate_limit.per_source,
            cfg.rate_limit.burst,
            cfg.rate_limit.global,
            cfg.rate_limit.sources,
        ),
        keys,
        commit: GroupCommit::new(replay),
        counters: counters.clone(),
        rejects: RejectLog::new(SUMMARY_INTERVAL_S),
        tx,
        started: Instant::now(),
        running: cfg.clone(),
        readable_dirs,
        reloads: 0,
        reload_started: reload::monotonic_ns(),
        note: None,
    };
    let mut receiver = receive::Receiver::new();
    // The one periodic wake: STATUS=, rejection summaries and the watchdog ping.
    let watchdog_period = notify::watchdog_period();
    let ticker = Ticker::new(ticker::period(STATUS_INTERVAL, watchdog_period))
        .map_err(ServerError::Runtime)?;
    let mut watchdog = watchdog_period.map(|p| ticker::Watchdog::new(p, Instant::now()));
    // In-process confinement: after the drop, before READY, with every socket, signal
    // stream, table, buffer, timer and the runtime already in place.
    let files_restricted = sandbox::restrict_files(&sandbox_paths)?;
    // The floor writer thread: after Landlock so it inherits the ruleset, before seccomp
    // because seccomp forbids creating threads (see `replay::Writer`).
    let writer = Writer::spawn(state_file).map_err(ServerError::Runtime)?;
    let applied = files_restricted.restrict_syscalls(socket.as_fd())?;
    if cfg.commander_uid != 0 {
        tracing::warn!(
            event = "commander_uid",
            uid = cfg.commander_uid,
            "commander_uid is not 0: frames go to a non-root commander (tests only)"
        );
    }
    tracing::info!(
        event = "started",
        listen = %taken.local.map_or_else(|| "?".to_owned(), |a| a.to_string()),
        activation = matches!(origin, activation::Origin::Activated),
        receive_buffer = taken.receive_buffer,
        keys = engine.keys.len(),
        floors = engine.commit.durable.len(),
        user = dropped.switched_to.as_deref().unwrap_or("(unchanged)"),
        uid = dropped.uid,
        bounding_cleared = dropped.bounding_cleared,
        landlock = %applied.landlock,
        seccomp = applied.seccomp,
        closed_inherited_fds = ?closed_fds,
        "ruroco-server started"
    );

    // The reload record `--reload` waits on: generation 0, no reload yet.
    engine.record(reload::Status::Started, "started".to_owned());
    let mut last_status = engine.status_text();
    notify::ready_with_status(&last_status);

    loop {
        tokio::select! {
            r = socket.readable(), if engine.commit.has_room() => {
                r.map_err(ServerError::Runtime)?;
                for _ in 0..BATCHES_PER_WAKE {
                    if !engine.commit.has_room() {
                        break;
                    }
                    match socket.try_io(Interest::READABLE, || {
                        receiver.recv(&socket)
                    }) {
                        Ok(_) => {
                            engine.batch(&receiver);
                            engine.commit.start(&writer);
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
            written = engine.commit.written() => {
                engine.finish(written).await;
                engine.commit.start(&writer);
            }
            _ = hup.recv() => {
                engine.reload(config_path);
                last_status = engine.status_text();
                notify::ready_with_status(&last_status);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            t = ticker.tick() => {
                t.map_err(ServerError::Runtime)?;
                if watchdog.as_mut().is_some_and(|w| w.due(Instant::now(), ticker.period())) {
                    notify::watchdog();
                }
                let line = engine.status_text();
                if line != last_status {
                    notify::status(&line);
                    last_status = line;
                }
                let now_s = engine.started.elapsed().as_secs();
                status::log_summary(&engine.rejects.due(now_s));
            }
        }
    }
    notify::stopping();
    // The write in flight completes (or fails), then one for what is still pending, and
    // their frames join the drain: nothing accepted is silently lost.
    while engine.commit.in_flight.is_some() {
        let written = engine.commit.written().await;
        engine.finish(written).await;
        engine.commit.start(&writer);
    }
    tracing::info!(event = "stopping", status = %counters.status_line());
    drop(engine);
    // Let frames already persisted reach the commander and be acknowledged, briefly. A link
    // still waiting then is stopped; it logs what the commander never acknowledged.
    let mut link = link;
    if tokio::time::timeout(SHUTDOWN_DRAIN, &mut link)
        .await
        .is_err()
    {
        link.abort();
        let _ = link.await;
    }
    Ok(())
}

/// The per-datagram pipeline and the state it owns.
struct Engine {
    policy: Policy,
    limiter: RateLimiter,
    keys: KeySet,
    commit: GroupCommit,
    counters: Arc<Counters>,
    rejects: RejectLog,
    tx: commander_link::Sender,
    started: Instant,
    /// The settings in effect (the last config a reload applied, restart-only fields as at
    /// start).
    running: Config,
    /// Where a `keys_dir` may move on SIGHUP (`sandbox::readable_dirs`).
    readable_dirs: Vec<PathBuf>,
    /// Reloads so far (the generation of the reload record).
    reloads: u64,
    /// CLOCK_MONOTONIC nanoseconds when the last reload (or the start) began.
    reload_started: u64,
    /// Shown before the counters in `STATUS=` until the next reload: a failed reload, or
    /// settings waiting for a restart.
    note: Option<String>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// The server address an authenticated datagram names (`dst_ip`), for a `wrong_destination`
/// log line; off the hot path.
#[cold]
#[inline(never)]
fn destination(key: &ruroco_proto::Key, datagram: &[u8]) -> Option<IpAddr> {
    protocol::open(key, datagram).ok().and_then(|p| p.dst_ip)
}

/// An accepted datagram waiting for its floor to be durable: (verdict, real source).
type Waiting = (Accepted, IpAddr);

/// Group commit, off the receive loop: at most one floor write in flight; what is accepted
/// meanwhile waits in `pending` for the next write. Frames leave only after the write that
/// covers their floor succeeded, so no frame leaves before its floor is on disk; the file is
/// only ever replaced by a complete, fsynced state, so a crash at any instant leaves floors
/// at least as high as every frame that left.
#[derive(Debug)]
struct GroupCommit {
    /// The floors on disk, as last written successfully.
    durable: ReplayState,
    in_flight: Option<InFlight>,
    /// Accepted since the in-flight write started (at most `MAX_PENDING`).
    pending: Vec<Waiting>,
    /// The highest counter per key in `pending`.
    pending_floors: Floors,
    /// The last accepted datagrams, to report a late copy as `duplicate`, not `replay`.
    recent: Recent,
}

/// The write on its way to disk and the frames it releases.
#[derive(Debug)]
struct InFlight {
    batch: Vec<Waiting>,
    /// The highest counter per key in `batch`.
    floors: Floors,
    done: oneshot::Receiver<Result<Floors, ReplayError>>,
}

/// How a write ended: its datagrams, and whether their floors are now durable.
type Written = (Vec<Waiting>, Result<(), ReplayError>);

impl GroupCommit {
    fn new(durable: ReplayState) -> Self {
        Self {
            durable,
            in_flight: None,
            pending: Vec::with_capacity(receive::BATCH),
            pending_floors: BTreeMap::new(),
            recent: Recent::default(),
        }
    }

    /// The floor a datagram is judged against: the durable floor, raised by what the
    /// in-flight write and the pending batch accepted. A replay of a datagram whose write is
    /// still in flight is thus a `replay`, like one of a datagram already durable.
    fn floor(&self, id: &KeyId) -> u128 {
        let in_flight = self.in_flight.as_ref().and_then(|w| w.floors.get(id));
        let pending = self.pending_floors.get(id);
        [in_flight, pending]
            .into_iter()
            .flatten()
            .fold(self.durable.floor(id), |f, c| f.max(*c))
    }

    fn accept(&mut self, a: Accepted, source: IpAddr) {
        replay::raise(&mut self.pending_floors, a.key_id, a.counter);
        self.recent.remember(a.key_id, a.counter);
        self.pending.push((a, source));
    }

    /// Room for one more receive batch without exceeding `MAX_PENDING`.
    fn has_room(&self) -> bool {
        self.pending.len() + receive::BATCH <= MAX_PENDING
    }

    /// Start a write of the pending batch, unless one is in flight or nothing is pending.
    fn start(&mut self, writer: &Writer) {
        if self.in_flight.is_some() || self.pending.is_empty() {
            return;
        }
        let floors = std::mem::take(&mut self.pending_floors);
        let done = writer.write(self.durable.raised(&floors));
        self.in_flight = Some(InFlight {
            batch: std::mem::replace(&mut self.pending, Vec::with_capacity(receive::BATCH)),
            floors,
            done,
        });
    }

    /// Wait for the in-flight write (forever when there is none, for `select!`).
    async fn written(&mut self) -> Written {
        let Some(w) = self.in_flight.as_mut() else {
            return std::future::pending().await;
        };
        let result = (&mut w.done).await.unwrap_or_else(|_| {
            Err(ReplayError::Write {
                path: self.durable.path().to_owned(),
                source: std::io::Error::other("the floor writer thread is gone"),
            })
        });
        let batch = self.in_flight.take().map(|w| w.batch).unwrap_or_default();
        (batch, result.map(|floors| self.durable.install(floors)))
    }
}

impl Engine {
    /// Judge every datagram of one receive batch; the accepted ones wait for a floor write.
    fn batch(&mut self, rx: &receive::Receiver) {
        let now_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mono_ns = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut n = 0u64;
        for (data, source) in rx.datagrams() {
            n += 1;
            if let Some(source) = source {
                self.datagram(data, ip::canonical(source), now_ns, mono_ns);
            }
        }
        Counters::add(&self.counters.received, n);
    }

    fn reject(&mut self, r: Reject, source: IpAddr) {
        self.counters.reject(r);
        self.rejects.record(r, source);
    }

    /// SPEC §3 order: length, key id, rate limit, then judge (tag, version, replay, clock,
    /// destination, source, allow-list).
    fn datagram(&mut self, data: &[u8], source: IpAddr, now_ns: u128, mono_ns: u64) {
        let id = match verdict::key_id(data) {
            Ok(id) => id,
            Err(r) => return self.reject(r, source),
        };
        let Some(k) = self.keys.get(&id) else {
            return self.reject(Reject::UnknownKey, source);
        };
        // Every AEAD attempt is admitted by the global budget; only one that is not accepted
        // is charged to its source: forged junk cannot lock the real sender out, and a source
        // replaying a captured datagram (it authenticates, then is a `replay`) goes over its
        // budget like junk, so it cannot take the share kept for sources within theirs.
        if !self.limiter.admit(source, mono_ns) {
            return self.reject(Reject::RateLimited, source);
        }
        let floor = self.commit.floor(&id);
        let recent = &self.commit.recent;
        match verdict::judge_recent(
            &k.key,
            k.allowed.as_deref(),
            data,
            source,
            now_ns,
            floor,
            |counter| recent.contains(&id, counter),
            &self.policy,
        ) {
            Ok(a) => self.commit.accept(a, source),
            Err(Reject::WrongDestination) => {
                // Decrypted again, for the log only: the destination the client used.
                let dst = destination(&k.key, data);
                self.limiter.failed(source, mono_ns);
                self.counters.reject(Reject::WrongDestination);
                self.rejects
                    .record_to(Reject::WrongDestination, source, dst);
            }
            Err(r) => {
                self.limiter.failed(source, mono_ns);
                self.reject(r, source)
            }
        }
    }

    /// A write completed: on success its frames leave for the commander. On failure nothing
    /// is forwarded and the floors stay at their durable values: the datagrams never ran, so
    /// a client retry after the disk recovers may run once.
    ///
    /// One write may release up to `MAX_PENDING` frames, more than the commander queue holds:
    /// they are queued `WRITE_BATCH` at a time with a yield after each, so the commander link
    /// moves each group to the commander's socket before the next one is queued.
    async fn finish(&mut self, (batch, result): Written) {
        if let Err(e) = result {
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
        let now = Instant::now();
        for (i, (a, src)) in batch.into_iter().enumerate() {
            if i > 0 && i % commander_link::WRITE_BATCH == 0 {
                tokio::task::yield_now().await;
            }
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
        // Let the commander link write the last group now.
        tokio::task::yield_now().await;
    }

    /// `STATUS=`: the reload note, if any, then the counters.
    fn status_text(&self) -> String {
        let counters = self.counters.status_line();
        match &self.note {
            Some(n) => format!("{n}; {counters}"),
            None => counters,
        }
    }

    /// Write the reload record for `--reload` (a failure is logged: the reload itself stands).
    fn record(&self, status: reload::Status, message: String) {
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
                KeySet::salvage(&self.keys, &effective.keys_dir, &effective.keys)
            }
        };
        let (added, removed) = key_changes(&self.keys, &keys);
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
        self.keys = keys;
        if problems.is_empty() {
            tracing::info!(
                event = "reloaded",
                keys = self.keys.len(),
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
                keys = self.keys.len(),
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
        let (old, rl) = (&self.running.rate_limit, &new.rate_limit);
        if rl.sources != old.sources {
            self.limiter = RateLimiter::new(rl.per_source, rl.burst, rl.global, rl.sources);
        } else if rl != old {
            self.limiter.retune(rl.per_source, rl.burst, rl.global);
        }
        self.policy = new.policy();
        self.running = new;
    }
}

/// Names of the keys in `new` but not `old`, and in `old` but not `new` (by key id).
fn key_changes(old: &KeySet, new: &KeySet) -> (Vec<String>, Vec<String>) {
    let names = |a: &KeySet, b: &KeySet| -> Vec<String> {
        a.sorted()
            .into_iter()
            .filter(|k| b.get(&k.key.id()).is_none())
            .map(|k| k.name.clone())
            .collect()
    };
    (names(new, old), names(old, new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruroco_proto::protocol::{Plaintext, VERSION, seal_random};
    use ruroco_proto::{CmdHash, Key};

    #[test]
    fn a_replay_of_an_in_flight_datagram_is_rejected() {
        let d = tempfile::tempdir().unwrap();
        let durable = ReplayState::load(d.path()).unwrap();
        let writer = Writer::spawn(durable.path().to_owned()).unwrap();
        let mut gc = GroupCommit::new(durable);
        let key = Key::generate().unwrap();
        let server = IpAddr::from([192, 0, 2, 1]);
        let source = IpAddr::from([198, 51, 100, 7]);
        let now_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let policy = Policy {
            ips: vec![server],
            max_clock_skew_ns: 60_000_000_000,
            max_age_ns: None,
        };
        let datagram = seal_random(
            &key,
            &Plaintext {
                version: VERSION,
                cmd: CmdHash::of_name("open"),
                counter: now_ns,
                strict: false,
                src_ip: None,
                dst_ip: Some(server),
            },
        )
        .unwrap();
        let judge = |floor| verdict::judge(&key, None, &datagram, source, now_ns, floor, &policy);

        let a = judge(gc.floor(&key.id())).unwrap();
        gc.accept(a, source);
        assert_eq!(
            judge(gc.floor(&key.id())),
            Err(Reject::Duplicate),
            "pending"
        );
        gc.start(&writer);
        assert!(gc.in_flight.is_some() && gc.pending.is_empty());
        assert_eq!(gc.durable.floor(&key.id()), 0, "not durable yet");
        assert_eq!(
            judge(gc.floor(&key.id())),
            Err(Reject::Duplicate),
            "in flight"
        );

        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (batch, result) = rt.block_on(gc.written());
        assert!(result.is_ok() && batch.len() == 1);
        assert!(gc.in_flight.is_none());
        assert_eq!(gc.durable.floor(&key.id()), now_ns);
        assert_eq!(
            judge(gc.floor(&key.id())),
            Err(Reject::Duplicate),
            "durable"
        );
        assert_eq!(
            ReplayState::load(d.path()).unwrap().floor(&key.id()),
            now_ns
        );
    }
}
