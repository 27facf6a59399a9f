//! The daemon's life as one story: the start-up order (root, no dumps, logging, config,
//! sockets, grant store, grants loaded), then the loop (frames, SIGHUP reloads, SIGTERM/SIGINT)
//! and the drain that lets every running command finish within its timeout.
//! It must never accept a frame before the grants of the last run are loaded, nor stop
//! without giving each running command its full timeout.

use std::time::Duration;

use ruroco_kit::{logging, notify};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::Args;
use crate::config::Config;
use crate::dispatch::{self, Dispatcher, Table};
use crate::error::Error;
use crate::listener::{self, Listener};
use crate::schedule::{Grants, Now};
use crate::store::{self, Store};
use crate::{control, reload, socket};

/// After a failed accept (e.g. EMFILE), wait this long instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Start the daemon and serve until SIGTERM/SIGINT.
pub(crate) fn start(args: Args) -> Result<(), Error> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::NotRoot);
    }
    let closed = ruroco_kit::fds::close_inherited();
    // No core dumps or ptrace by other uids of a process that holds the commands.
    nix::sys::prctl::set_dumpable(false).map_err(|e| Error::Os {
        what: "prctl(PR_SET_DUMPABLE, 0)",
        source: e.into(),
    })?;
    logging::init("ruroco-commander");
    if std::process::id() == 1 {
        // Orphaned processes of commands are reparented to PID 1, which must reap them; the
        // commander reaps only its own children, so their zombies would stay and keep a timed-
        // out command's process group non-empty for the whole grace.
        tracing::warn!(
            event = "pid1",
            "running as PID 1: exited processes that commands left behind are not reaped; run under an init (systemd, or `docker run --init`)"
        );
    }
    let cfg = Config::load(&args.config)?;
    let (server_uid, socket_gid) = preflight(&cfg)?;
    let taken = match socket::activated()? {
        Some(listener) => socket::Taken {
            listener,
            created: None,
        },
        None => socket::create(&cfg.socket, socket_gid)?,
    };
    let boot_id = store::boot_id()?;
    let store = Store::open(&cfg.state_dir)?;
    let imported = store::import_legacy(&cfg.state_dir, &store, &boot_id, |name| {
        cfg.commands
            .by_name(name)
            .and_then(|c| c.undo.as_ref().map(|u| u.after))
    })?;
    if imported > 0 {
        tracing::info!(
            event = "imported",
            grants = imported,
            detail = "pending undos of the 0.1.0 undo file are grants now"
        );
    }
    let mut table = Grants::new(boot_id, cfg.max_grants);
    let now = Now::read();
    let loaded = store.load_all()?;
    for path in &loaded.foreign {
        tracing::warn!(event = "foreign_file", path = %path.display(), detail = "not a grant record the commander wrote: ignored; move it out of the grants directory");
    }
    for record in loaded.records {
        if let Some(cut) = table.load(record, now) {
            tracing::warn!(event = "deadline_cut", command = %cut.command, ip = %cut.ip, detail = "deadline further than undo_after from now (clock stepped back?): cut");
            store.write(&cut)?;
        }
    }
    let control = socket::create_control(&cfg.control_socket)?;
    // Logged once start-up can no longer fail, so a refusal stays one line.
    if !closed.is_empty() {
        tracing::info!(event = "closed_inherited_fds", fds = ?closed, detail = "descriptors left open by the parent process: closed so no command inherits them");
    }
    let rt = runtime()?;
    let result = rt.block_on(serve(args, cfg, server_uid, taken, control, (table, store)));
    // Children still running at this point were given their full timeout by `drain`.
    rt.shutdown_background();
    result
}

/// The checks `--check` and the start share, so both reach one verdict: the config's own
/// checks, then the users, groups and directories it names. Returns the server's uid and the
/// socket group's gid.
pub(crate) fn preflight(cfg: &Config) -> Result<(u32, u32), Error> {
    let ids = cfg.preflight()?;
    socket::check_dir(&cfg.socket)?;
    socket::check_dir(&cfg.control_socket)?;
    Ok(ids)
}

/// The single-threaded async runtime both the daemon and the operator commands run on.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Os {
            what: "start the async runtime",
            source,
        })
}

/// Register a listening socket taken at start-up with the runtime.
fn register(
    l: std::os::unix::net::UnixListener,
    what: &'static str,
) -> Result<tokio::net::UnixListener, Error> {
    l.set_nonblocking(true)
        .and_then(|()| tokio::net::UnixListener::from_std(l))
        .map_err(|source| Error::Os { what, source })
}

async fn serve(
    args: Args,
    cfg: Config,
    server_uid: u32,
    taken: socket::Taken,
    control: socket::Taken,
    (table, store): (Grants, Store),
) -> Result<(), Error> {
    let sig = |kind: SignalKind, what: &'static str| {
        signal(kind).map_err(|source| Error::Os { what, source })
    };
    let mut sigterm = sig(SignalKind::terminate(), "install SIGTERM handler")?;
    let mut sigint = sig(SignalKind::interrupt(), "install SIGINT handler")?;
    let mut sighup = sig(SignalKind::hangup(), "install SIGHUP handler")?;
    let listener = Listener::new(register(taken.listener, "register the socket")?, server_uid);
    let control_listener = register(control.listener, "register the control socket")?;
    let (grants_total, grants_active) = (table.len(), table.active_count());
    let dispatcher = Dispatcher::new(
        Table {
            commands: cfg.commands.clone(),
            default_timeout: cfg.default_timeout,
        },
        cfg.max_parallel,
        cfg.queue,
        table,
        store,
    );
    let reloader = reload::Reloader::new(args.config.clone(), cfg.clone(), dispatcher.clone());
    tokio::spawn(dispatcher.clone().undo_loop());
    tokio::spawn(control::serve(
        control_listener,
        dispatcher.clone(),
        reloader.clone(),
    ));
    {
        let d = dispatcher.clone();
        tokio::spawn(async move { d.quiet.run().await });
    }
    tracing::info!(
        event = "ready",
        config = %cfg.path.display(),
        socket = %cfg.socket.display(),
        activated = taken.created.is_none(),
        server_uid,
        commands = cfg.commands.len(),
        grants = grants_total,
        grants_to_undo_now = grants_total - grants_active,
        control_socket = %cfg.control_socket.display(),
        max_parallel = cfg.max_parallel,
        queue = cfg.queue,
    );
    notify::ready_with_status(&dispatch::status_line(cfg.commands.len(), grants_active));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(stream) => listener.serve(stream, &dispatcher),
                Err(e) => {
                    tracing::warn!(event = "accept_failed", error = %e);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            _ = sighup.recv() => {
                reloader.reload().await;
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    notify::stopping();
    let connections = listener.close();
    if let Some(created) = &taken.created {
        created.remove();
    }
    if let Some(created) = &control.created {
        created.remove();
    }
    tracing::info!(
        event = "stopping",
        detail = "no new frames; waiting for running commands (each bounded by its timeout)"
    );
    dispatcher.drain().await;
    // Connections write the acknowledgements of what finished during the drain, then close.
    listener::wait_closed(&connections).await;
    let (active, kept) = dispatcher.grant_counts().await;
    tracing::info!(
        event = "stopped",
        active_grants = active,
        grant_records = kept,
        detail = "undos that did not run yet are kept and run at the next start"
    );
    Ok(())
}
