//! The start-up order of the server, as one story: config and keys → the socket (while
//! perhaps still root) → signal streams → privilege drop (verified) → replay floors → the
//! commander link and the gate → Landlock → the floor-writer thread → seccomp → READY. The
//! types keep the order: the writer needs Landlock applied, seccomp needs the writer.
//! It must never receive a datagram before the sandbox is in place, nor start in a state it
//! would refuse with `--check`.

use ruroco_kit::notify;
use ruroco_proto::gate::Gate;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;
use crate::error::ServerError;
use crate::keys::KeySet;
use crate::receive::Receiver;
use crate::replay::ReplayState;
use crate::run::{self, Io, STATUS_INTERVAL, SUMMARY_INTERVAL_S, Server};
use crate::status::{Counters, RejectLog};
use crate::ticker::{self, Ticker};
use crate::writer::{GroupCommit, Writer};
use crate::{activation, commander_link, privileges, reload, sandbox};

/// Load the config and keys and check every path they name as the server's user will see
/// them: the one verdict `--check` and the start share.
pub(crate) fn preflight(path: &Path) -> Result<(Config, KeySet), ServerError> {
    let cfg = Config::load(path)?;
    let who = cfg.who()?;
    cfg.check_paths(path, &who)?;
    let keys = KeySet::load_for(&cfg.keys_dir, &cfg.keys, &who)?;
    Ok((cfg, keys))
}

/// Start the server and run it until it is stopped. `closed_fds` are the inherited
/// descriptors closed before anything was opened, for the start-up log line.
pub(crate) fn serve(config_path: &Path, closed_fds: Vec<i32>) -> Result<(), ServerError> {
    // 1–2. The config and the keys, checked as the server's user will see them.
    let (cfg, keys) = preflight(config_path)?;
    for p in &keys.skipped {
        tracing::warn!(event = "key_skipped", path = %p.display(), detail = "not a regular file: skipped; move it out of keys_dir");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServerError::Runtime)?;
    rt.block_on(async {
        let (server, io) = start(config_path, cfg, keys, &closed_fds)?;
        run::run(config_path, server, io).await
    })
}

/// Steps 3–11, inside the runtime (the socket and the signal streams register with it).
fn start(
    config_path: &Path,
    cfg: Config,
    keys: KeySet,
    closed_fds: &[i32],
) -> Result<(Server, Io), ServerError> {
    // 3. The socket (activated or bound), while we may still be root.
    let taken = activation::take(cfg.listen, cfg.receive_buffer)?;
    let socket = tokio::net::UdpSocket::from_std(taken.socket).map_err(ServerError::Runtime)?;
    // 4. Signal streams now, so nothing needs new setup syscalls once confined.
    let stream = |kind| signal(kind).map_err(ServerError::Runtime);
    let (hup, term, int) = (
        stream(SignalKind::hangup())?,
        stream(SignalKind::terminate())?,
        stream(SignalKind::interrupt())?,
    );
    // 5. Switch user if root, drop every capability, verify.
    let dropped = privileges::drop_privileges(&cfg.user)?;
    // 6. The replay floors, read as the unprivileged user that will write them.
    let replay = ReplayState::load(&cfg.state_dir)?;
    let state_file = replay.path().to_owned();
    // 7. The commander link and the gate, with every table and buffer allocated now.
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
    let started = Instant::now();
    let reload_started = reload::monotonic_ns();
    let receiver = Receiver::new();
    let names = keys.names();
    let gate = Gate::new(
        keys.into_permits(),
        cfg.policy(),
        cfg.limits(),
        replay.floors().clone(),
    );
    // The one periodic wake: STATUS=, rejection summaries and the watchdog ping.
    let watchdog_period = notify::watchdog_period();
    let ticker = Ticker::new(ticker::period(STATUS_INTERVAL, watchdog_period))
        .map_err(ServerError::Runtime)?;
    let watchdog = watchdog_period.map(|p| ticker::Watchdog::new(p, Instant::now()));
    let floors = replay.len();
    let server = Server {
        gate,
        names,
        commit: GroupCommit::new(replay),
        counters,
        rejects: RejectLog::new(SUMMARY_INTERVAL_S),
        tx,
        started,
        running: cfg.clone(),
        readable_dirs,
        reloads: 0,
        reload_started,
        note: None,
    };
    // 8. In-process confinement: after the drop, before READY, with every socket, signal
    // stream, table, buffer, timer and the runtime already in place. Landlock first.
    let files_restricted = sandbox::restrict_files(&sandbox_paths)?;
    // 9. The floor writer thread: after Landlock so it inherits the ruleset.
    let writer = Writer::spawn(state_file, &files_restricted).map_err(ServerError::Runtime)?;
    // 10. seccomp, which forbids creating threads: it takes the writer, so it cannot come
    // before it.
    let applied = files_restricted.restrict_syscalls(socket.as_fd(), &writer)?;
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
        activation = matches!(taken.origin, activation::Origin::Activated),
        receive_buffer = taken.receive_buffer,
        keys = server.gate.key_count(),
        floors,
        user = dropped.switched_to.as_deref().unwrap_or("(unchanged)"),
        uid = dropped.uid,
        bounding_cleared = dropped.bounding_cleared,
        landlock = %applied.landlock,
        seccomp = applied.seccomp,
        closed_inherited_fds = ?closed_fds,
        "ruroco-server started"
    );
    // 11. Ready: the reload record `--reload` waits on (generation 0, no reload yet), then
    // READY=1 with the first STATUS=.
    server.record(reload::Status::Started, "started".to_owned());
    notify::ready_with_status(&server.status_text());
    let io = Io {
        socket,
        receiver,
        hup,
        term,
        int,
        ticker,
        watchdog,
        writer,
        link,
    };
    Ok((server, io))
}
