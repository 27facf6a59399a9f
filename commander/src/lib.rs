//! ruroco-commander, the root executor: accepts 24-byte frames from the server's uid only and
//! runs the configured command they name. All logic lives here so tests can reach it.
//! It must never open a network socket, parse anything but 24-byte frames, or run shell text
//! that did not come from its root-owned config.
#![forbid(unsafe_code)]

pub mod config;
pub mod control;
pub mod dispatch;
pub mod exec;
pub mod frames;
pub mod grants;
pub mod manual;
pub mod quiet;
pub mod reload;
pub mod socket;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::{CommandFactory, Parser, Subcommand};
use ruroco_kit::{logging, notify};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Semaphore;

use crate::config::{Config, ConfigError};
use crate::control::{ControlError, Request};
use crate::dispatch::{Dispatcher, GrantView, Table};
use crate::grants::{GrantError, Grants, Store};
use crate::socket::SocketError;

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
    /// The control socket of a running commander (default: control_socket from the config)
    #[arg(long, value_name = "PATH", global = true)]
    pub control: Option<PathBuf>,
    #[command(subcommand)]
    pub op: Option<Op>,
}

/// Operator commands against the running commander (root only, over its control socket).
#[derive(Debug, Subcommand)]
pub enum Op {
    /// List the grants: command, IP, state, since, expires in
    Grants,
    /// Undo grants now (all; one command's; or one command's for one IP); exits 1 if none matched
    Revoke {
        /// Only grants of this command
        command: Option<String>,
        /// Only the grant of this IP
        ip: Option<IpAddr>,
    },
    /// Reload the config in the running commander and print the outcome; exits 78 if the
    /// reload failed (the reason is printed). `ExecReload=` of ruroco-commander.service runs it
    Reload,
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
    Grants(#[from] GrantError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("no grant matches")]
    NoMatch,
    #[error("{0}")]
    ReloadFailed(String),
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
            Error::Config(_) | Error::ReloadFailed(_) => 78,
            Error::NoMatch => 1,
            Error::Grants(GrantError::Corrupt { .. } | GrantError::TooMany { .. }) => 65,
            Error::Grants(GrantError::UnsafeDir { .. } | GrantError::Untrusted(_))
            | Error::Socket(
                SocketError::UnsafeDir { .. } | SocketError::Untrusted(_) | SocketError::TooMany(_),
            ) => 78,
            Error::Grants(GrantError::Io { .. } | GrantError::BootId { .. }) | Error::Socket(_) => {
                74
            }
            Error::Control(ControlError::NotRoot { .. } | ControlError::Refused(_)) => 77,
            Error::Control(_) => 69,
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
    if let Some(op) = &args.op {
        return operate(&args, op);
    }
    if args.check {
        return check(&args);
    }
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
    let boot_id = grants::boot_id()?;
    let store = Store::open(&cfg.state_dir)?;
    let imported = grants::import_legacy(&cfg.state_dir, &store, &boot_id, |name| {
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
    let (now, now_ms) = (Instant::now(), grants::now_unix_ms());
    let loaded = store.load_all()?;
    for path in &loaded.foreign {
        tracing::warn!(event = "foreign_file", path = %path.display(), detail = "not a grant record the commander wrote: ignored; move it out of the grants directory");
    }
    for record in loaded.records {
        if let Some(cut) = table.load(record, now, now_ms) {
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
fn preflight(cfg: &Config) -> Result<(u32, u32), Error> {
    let ids = cfg.preflight()?;
    socket::check_dir(&cfg.socket)?;
    socket::check_dir(&cfg.control_socket)?;
    Ok(ids)
}

fn check(args: &Args) -> Result<(), Error> {
    let cfg = Config::load(&args.config)?;
    preflight(&cfg)?;
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
    control: socket::Taken,
    (table, store): (Grants, Store),
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
    let register = |l: std::os::unix::net::UnixListener| {
        l.set_nonblocking(true)
            .and_then(|()| tokio::net::UnixListener::from_std(l))
            .map_err(|source| Error::Os {
                what: "register the control socket",
                source,
            })
    };
    let control_listener = register(control.listener)?;
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
    let connections = Arc::new(Semaphore::new(frames::MAX_CONNECTIONS));
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
            _ = sighup.recv() => {
                reloader.reload().await;
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    notify::stopping();
    drop(listener);
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
    let n = u32::try_from(frames::MAX_CONNECTIONS).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(frames::ACK_WRITE_TIMEOUT, connections.acquire_many(n)).await;
    let (active, kept) = dispatcher.grant_counts().await;
    tracing::info!(
        event = "stopped",
        active_grants = active,
        grant_records = kept,
        detail = "undos that did not run yet are kept and run at the next start"
    );
    Ok(())
}

/// The single-threaded async runtime both the daemon and the operator commands run on.
fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Os {
            what: "start the async runtime",
            source,
        })
}

/// `grants` / `revoke`: ask the running commander over its control socket and print the answer.
fn operate(args: &Args, op: &Op) -> Result<(), Error> {
    let path = match (&args.control, op) {
        (Some(p), _) => p.clone(),
        // A reload is asked for exactly when the file may be broken: find the socket anyway.
        (None, Op::Reload) => control_socket_of(&args.config),
        (None, _) => Config::load(&args.config)?.control_socket,
    };
    let rt = runtime()?;
    let req = match op {
        Op::Reload => {
            let outcome = rt.block_on(control::reload(&path))?;
            if !outcome.ok {
                return Err(Error::ReloadFailed(outcome.message));
            }
            println!("{}", outcome.message);
            return Ok(());
        }
        Op::Grants => Request::List {},
        Op::Revoke { command, ip } => Request::Revoke {
            command: command.clone(),
            ip: *ip,
        },
    };
    let grants = rt.block_on(control::request(&path, &req))?;
    match op {
        Op::Grants if grants.is_empty() => println!("no grants"),
        Op::Grants => print!("{}", table(&grants, grants::now_unix_ms())),
        Op::Revoke { .. } if grants.is_empty() => return Err(Error::NoMatch),
        Op::Reload => {}
        Op::Revoke { .. } => {
            for g in &grants {
                let when = match g.state.as_str() {
                    "running" => "undo when its run ends",
                    "revoked" => "undo started",
                    _ => "already being undone",
                };
                println!("revoked {} {} ({when})", g.command, g.ip);
            }
        }
    }
    Ok(())
}

/// The control socket named in the config at `path`. From a file that no longer loads, its
/// `control_socket` line alone; from one that is not TOML at all, `control.sock` in the
/// directory systemd passes in `$RUNTIME_DIRECTORY` (`RuntimeDirectory=`, systemd.exec(5)),
/// else the default. (The client still refuses a socket that is not served by root.)
fn control_socket_of(path: &std::path::Path) -> PathBuf {
    if let Ok(c) = Config::load(path) {
        return c.control_socket;
    }
    let text = ruroco_kit::fsutil::read_bounded(path, config::MAX_CONFIG_BYTES).ok();
    if let Some(t) = text.and_then(|t| t.parse::<toml::Table>().ok()) {
        return t
            .get("control_socket")
            .and_then(toml::Value::as_str)
            .map_or_else(
                || PathBuf::from(config::DEFAULT_CONTROL_SOCKET),
                PathBuf::from,
            );
    }
    std::env::var_os("RUNTIME_DIRECTORY")
        .and_then(|v| std::env::split_paths(&v).next())
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(
            || PathBuf::from(config::DEFAULT_CONTROL_SOCKET),
            |d| d.join("control.sock"),
        )
}

/// The `grants` table: command, IP, state, since (ago), expires in.
pub fn table(grants: &[GrantView], now_unix_ms: u64) -> String {
    let mut rows = vec![[
        "COMMAND".to_owned(),
        "IP".to_owned(),
        "STATE".to_owned(),
        "SINCE".to_owned(),
        "EXPIRES IN".to_owned(),
    ]];
    for g in grants {
        rows.push([
            g.command.clone(),
            g.ip.to_string(),
            g.state.clone(),
            format!("{} ago", human(now_unix_ms.saturating_sub(g.since_unix_ms))),
            g.expires_in_ms.map_or_else(|| "-".to_owned(), human),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Milliseconds as `1h2m3s` (seconds resolution; under a second is `0s`).
fn human(ms: u64) -> String {
    let s = ms / 1000;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_table() {
        let g = GrantView {
            command: "open_ssh".into(),
            ip: "192.0.2.7".parse().unwrap(),
            state: "active".into(),
            since_unix_ms: 1_000_000,
            expires_in_ms: Some(271_500),
        };
        let t = table(&[g], 1_000_000 + 3_723_000);
        assert_eq!(
            t,
            "COMMAND   IP         STATE   SINCE       EXPIRES IN\n\
             open_ssh  192.0.2.7  active  1h2m3s ago  4m31s\n"
        );
    }
}
