//! ruroco-commander, the root executor: accepts 24-byte frames from the server's uid only and
//! runs the configured command they name. All logic lives here so tests can reach it.
//! It must never open a network socket, parse anything but 24-byte frames, or run shell text
//! that did not come from its root-owned config.
#![forbid(unsafe_code)]

pub mod config;
pub mod dispatch;
pub mod exec;
pub mod frames;
pub mod socket;
pub mod undo;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{CommandFactory, Parser};
use ruroco_shared::{logging, notify};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Semaphore;

use crate::config::{Config, ConfigError};
use crate::dispatch::{Dispatcher, Table};
use crate::socket::SocketError;
use crate::undo::{Store, UndoError};

/// After a failed accept (e.g. EMFILE), wait this long instead of spinning.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "ruroco-commander",
    version,
    about = "Run the configured command named by each frame from ruroco-server (root half of ruroco)"
)]
pub struct Args {
    /// Config file with the commands (must be owned by root, not group/other-writable)
    #[arg(long, value_name = "PATH", default_value = config::DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Validate the config, print "<name> <hash>" per command, and exit
    #[arg(long)]
    pub check: bool,
}

/// The clap definition (for man pages and completions).
pub fn cli() -> clap::Command {
    Args::command()
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error(
        "must run as root (euid 0), it runs the configured commands as root: start it via systemd (ruroco-commander.service) or sudo"
    )]
    NotRoot,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error(transparent)]
    Undo(#[from] UndoError),
    #[error("{what}: {source}")]
    Os {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The sysexits code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 64,
            Error::NotRoot => 77,
            Error::Config(_) => 78,
            Error::Undo(UndoError::Corrupt { .. }) => 65,
            Error::Undo(UndoError::UnsafeDir { .. }) => 78,
            Error::Undo(UndoError::Io { .. }) | Error::Socket(_) => 74,
            Error::Os { .. } => 71,
        }
    }
}

/// Parse the arguments and run: `--check`, or the daemon until SIGTERM/SIGINT.
pub fn run() -> Result<(), Error> {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                print!("{e}");
                return Ok(());
            }
            return Err(Error::Usage(e.to_string().trim_end().to_owned()));
        }
    };
    if args.check {
        return check(&args);
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::NotRoot);
    }
    // No core dumps or ptrace by other uids of a process that holds the commands.
    nix::sys::prctl::set_dumpable(false).map_err(|e| Error::Os {
        what: "prctl(PR_SET_DUMPABLE, 0)",
        source: e.into(),
    })?;
    logging::init("ruroco-commander");
    let cfg = Config::load(&args.config)?;
    let server_uid = cfg.server_uid()?;
    let taken = match socket::activated()? {
        Some(listener) => socket::Taken {
            listener,
            created: None,
        },
        None => socket::create(&cfg.socket, cfg.socket_gid()?)?,
    };
    let store = Store::open(&cfg.state_dir)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Os {
            what: "start the async runtime",
            source,
        })?;
    let result = rt.block_on(serve(args, cfg, server_uid, taken, store));
    // Children still running at this point were given their full timeout by `drain`.
    rt.shutdown_background();
    result
}

fn check(args: &Args) -> Result<(), Error> {
    let cfg = Config::load(&args.config)?;
    // A package validates its example config before its sysusers step has created the user,
    // so a missing user/group is a warning here and an error only when the daemon starts.
    if let Err(e) = cfg.server_uid() {
        eprintln!("warning: {e}");
    }
    if let Err(e) = cfg.socket_gid() {
        eprintln!("warning: {e}");
    }
    for (name, hash) in cfg.commands.sorted() {
        println!("{name} {hash}");
    }
    Ok(())
}

async fn serve(
    args: Args,
    cfg: Config,
    server_uid: u32,
    taken: socket::Taken,
    store: Store,
) -> Result<(), Error> {
    let sig = |kind: SignalKind, what: &'static str| {
        signal(kind).map_err(|source| Error::Os { what, source })
    };
    let mut sigterm = sig(SignalKind::terminate(), "install SIGTERM handler")?;
    let mut sigint = sig(SignalKind::interrupt(), "install SIGINT handler")?;
    let mut sighup = sig(SignalKind::hangup(), "install SIGHUP handler")?;
    taken
        .listener
        .set_nonblocking(true)
        .map_err(|source| Error::Os {
            what: "make the socket non-blocking",
            source,
        })?;
    let listener =
        tokio::net::UnixListener::from_std(taken.listener).map_err(|source| Error::Os {
            what: "register the socket",
            source,
        })?;
    let pending = store.schedule.len();
    let dispatcher = Dispatcher::new(
        Table {
            commands: cfg.commands.clone(),
            default_timeout: cfg.default_timeout,
        },
        cfg.max_parallel,
        cfg.queue,
        store,
    );
    tokio::spawn(dispatcher.clone().undo_loop());
    let connections = Arc::new(Semaphore::new(frames::MAX_CONNECTIONS));
    tracing::info!(
        event = "ready",
        config = %cfg.path.display(),
        socket = %cfg.socket.display(),
        activated = taken.created.is_none(),
        server_uid,
        commands = cfg.commands.len(),
        pending_undos = pending,
        max_parallel = cfg.max_parallel,
        queue = cfg.queue,
    );
    notify::ready_with_status(&format!(
        "{} commands, {pending} pending undos",
        cfg.commands.len()
    ));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let Some(peer) = frames::admit_peer(&stream, server_uid) else {
                        continue;
                    };
                    match connections.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let d = dispatcher.clone();
                            tokio::spawn(async move {
                                frames::serve(stream, peer, d).await;
                                drop(permit);
                            });
                        }
                        Err(_) => tracing::warn!(event = "rejected", reason = "too_many_connections", pid = peer.pid, limit = frames::MAX_CONNECTIONS),
                    }
                }
                Err(e) => {
                    tracing::warn!(event = "accept_failed", error = %e);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            _ = sighup.recv() => reload(&args, &cfg, &dispatcher),
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    notify::stopping();
    drop(listener);
    if let Some(created) = &taken.created {
        created.remove();
    }
    tracing::info!(
        event = "stopping",
        detail = "no new frames; waiting for running commands (each bounded by its timeout)"
    );
    dispatcher.drain().await;
    tracing::info!(
        event = "stopped",
        pending_undos = dispatcher.pending_undos().await
    );
    Ok(())
}

/// SIGHUP: re-read the commands. Settings that need a new socket or state are kept until restart.
fn reload(args: &Args, running: &Config, dispatcher: &Dispatcher) {
    notify::reloading();
    match Config::load(&args.config) {
        Ok(new) => {
            let restart_needed = new.server_user != running.server_user
                || new.socket != running.socket
                || new.socket_group != running.socket_group
                || new.state_dir != running.state_dir
                || new.max_parallel != running.max_parallel
                || new.queue != running.queue;
            if restart_needed {
                tracing::warn!(
                    event = "reload_partial",
                    detail = "server_user, socket, socket_group, state_dir, max_parallel and queue change only on restart"
                );
            }
            let n = new.commands.len();
            dispatcher.replace_table(Table {
                commands: new.commands,
                default_timeout: new.default_timeout,
            });
            tracing::info!(event = "reloaded", commands = n);
        }
        Err(e) => {
            tracing::error!(event = "reload_failed", error = %e, detail = "keeping the previous commands")
        }
    }
    notify::ready();
}
