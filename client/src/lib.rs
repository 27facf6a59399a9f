//! ruroco-client library: argument handling, key generation, the counter and sending behind
//! one entry point, [`run`]. Never reads from the network.
//!
//! Feature `internal-api` makes the man-page composer (`man`) and the clap definition
//! (`command`) reachable for the docs generator; nothing else is public.
#![forbid(unsafe_code)]

mod cli;
mod config;
mod connect;
mod counter;
mod r#gen;
#[cfg(feature = "internal-api")]
pub mod man;
#[cfg(not(feature = "internal-api"))]
#[allow(dead_code)] // Only the docs generator composes man pages.
mod man;
mod send;
mod settings;
mod wait;

use clap::Parser;
use std::ffi::OsString;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ruroco_kit::exit::{self, ExitStatus};
use ruroco_kit::key_file::KeyFileError;
use ruroco_proto::Key;

/// The clap definition of the whole command line (subcommands, flags, help texts), for the
/// man pages and shell completions the docs generator writes.
#[cfg(feature = "internal-api")]
pub use cli::command;
#[cfg(not(feature = "internal-api"))]
use cli::command;
use cli::{Cli, Cmd, GenArgs, ListArgs, SendArgs};
use config::{Config, ConfigError};
use connect::{ConnectError, ConnectMode};
use counter::{CounterError, LockedState};
use r#gen::GenError;
use send::{AddrError, Family, KeyOpenError, Request, ResolveError};
use settings::{Overrides, Resolved};

/// Everything that can stop the client, each with its exit status (sysexits).
#[derive(Debug, thiserror::Error)]
enum Error {
    /// Bad arguments, or `--help`/`--version` (which clap prints).
    #[error("{0}")]
    Usage(clap::Error),
    #[error("{0}")]
    Address(#[from] AddrError),
    #[error("{0}")]
    Resolve(#[from] ResolveError),
    #[error("{0}")]
    KeyFile(#[from] KeyFileError),
    #[error("{0}")]
    KeyOpen(#[from] KeyOpenError),
    #[error("{0}")]
    Counter(#[from] CounterError),
    #[error("{0}")]
    Gen(#[from] GenError),
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A value the send needs is neither on the command line nor in the profile.
    #[error("{0}")]
    Missing(String),
    #[error(
        "every send failed ({0} address(es) tried, errors above): check the network and the address"
    )]
    AllSendsFailed(usize),
    /// `--wait`: nothing answered; the text lists the likely causes.
    #[error("{0}")]
    NoAnswer(String),
    #[error("{0}")]
    Connect(#[from] ConnectError),
    #[error("cannot write to stdout: {0}")]
    Stdout(io::Error),
}

impl ExitStatus for Error {
    fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(e) if !e.use_stderr() => exit::OK,
            Error::Usage(_) | Error::Address(_) | Error::Missing(_) => exit::USAGE,
            Error::Config(ConfigError::UnknownProfile(_)) => exit::USAGE,
            Error::Config(_) => exit::CONFIG,
            Error::Resolve(_) => exit::NOHOST,
            Error::KeyFile(KeyFileError::Read { .. }) => exit::NOINPUT,
            Error::KeyFile(_) => exit::DATAERR,
            Error::KeyOpen(KeyOpenError::Perm(_)) => exit::NOPERM,
            Error::KeyOpen(_) => exit::NOINPUT,
            Error::Counter(CounterError::Corrupt { .. }) => exit::DATAERR,
            Error::Counter(CounterError::NoStateDir) => exit::CONFIG,
            Error::Counter(CounterError::UnsafeDir { .. } | CounterError::UnsafeLock { .. }) => {
                exit::NOPERM
            }
            Error::Counter(_) => exit::IOERR,
            Error::Gen(GenError::Generate(_)) => exit::SOFTWARE,
            Error::Gen(GenError::Exists(_) | GenError::Write { .. }) => exit::CANTCREAT,
            Error::Gen(GenError::Stdout(_)) | Error::Stdout(_) => exit::IOERR,
            Error::AllSendsFailed(_) | Error::Connect(_) => exit::IOERR,
            Error::NoAnswer(_) => exit::UNAVAILABLE,
        }
    }
}

impl Error {
    /// Print the error: clap's own rendering for usage/help, else one line on stderr.
    fn report(&self) {
        match self {
            Error::Usage(e) => {
                let _ = e.print();
            }
            other => eprintln!("ruroco-client: {other}"),
        }
    }
}

/// The entry point of `main`: parse the process arguments, run the subcommand, print any error
/// on stderr (clap's own rendering for usage, `--help` and `--version`; else one line) and
/// return the exit status: 0, or a sysexits(3) value from `ruroco_kit::exit` (each
/// subcommand's are listed in its `--help` and in ruroco-client(1)).
pub fn run() -> u8 {
    match run_from(std::env::args_os()) {
        Ok(()) => exit::OK,
        Err(e) => {
            e.report();
            e.exit_code()
        }
    }
}

/// Run with explicit arguments (the first is the program name).
fn run_from<I, T>(args: I) -> Result<(), Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::try_parse_from(args).map_err(Error::Usage)?;
    let state_dir = cli.state_dir.as_deref();
    let config = cli.config.as_deref();
    match cli.command {
        Cmd::Gen(a) => run_gen(&a),
        Cmd::Send(a) => run_send(
            a.state.state_dir.as_deref().or(state_dir),
            a.config.as_deref().or(config),
            &a,
        ),
        Cmd::List(a) => run_list(a.config.as_deref().or(config), &a),
        Cmd::Reseed(a) => run_reseed(a.state_dir.as_deref().or(state_dir)),
        Cmd::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut command(), "ruroco-client", &mut buf);
            write_stdout(&buf)
        }
    }
}

fn write_stdout(data: &[u8]) -> Result<(), Error> {
    let mut out = io::stdout().lock();
    out.write_all(data)
        .and_then(|()| out.flush())
        .map_err(Error::Stdout)
}

fn run_gen(a: &GenArgs) -> Result<(), Error> {
    match &a.output {
        Some(path) => {
            let id = r#gen::gen_to_file(path, a.force)?;
            eprintln!("key id {id}");
        }
        None => {
            r#gen::gen_to_writer(&mut io::stdout().lock())?;
        }
    }
    Ok(())
}

fn run_list(config: Option<&Path>, a: &ListArgs) -> Result<(), Error> {
    let cfg = Config::from_env(config)?;
    let text = settings::list_text(&cfg, a.name.as_deref())?;
    write_stdout(text.as_bytes())
}

/// Lock the state directory; unless `quiet`, say so when another client holds the lock.
fn lock_state(state_dir: Option<&Path>, quiet: bool) -> Result<LockedState, Error> {
    let dir = counter::state_dir_from_env(state_dir)?;
    Ok(LockedState::acquire(&dir, |lock| {
        if !quiet {
            eprintln!(
                "waiting for {} (another ruroco-client is running)",
                lock.display()
            );
        }
    })?)
}

/// The flags and the profile merged, with what a send cannot do without checked.
fn resolve_send(config: Option<&Path>, a: &SendArgs) -> Result<Resolved, Error> {
    let overrides = Overrides::from_args(a)?;
    let cfg;
    let profile = match &a.profile {
        Some(name) => {
            cfg = Config::from_env(config)?;
            Some(cfg.profile(name)?)
        }
        None => None,
    };
    let r = settings::resolve(&overrides, profile);
    let in_profile = |field: &str| match &a.profile {
        Some(name) => format!(", or set `{field}` in [servers.{name}]"),
        None => ", or name a profile (`ruroco-client send NAME`; `ruroco-client list` shows them)"
            .to_owned(),
    };
    if r.address.value.is_empty() {
        return Err(Error::Missing(format!(
            "no server address: give -a HOST[:PORT]{}",
            in_profile("address")
        )));
    }
    if r.key.value.is_none() {
        return Err(Error::Missing(format!(
            "no key file: give -k KEYFILE{}",
            in_profile("key")
        )));
    }
    if r.command.value.is_none() {
        return Err(Error::Missing(format!(
            "no command: give -c NAME (a command configured on the server){}",
            in_profile("command")
        )));
    }
    if a.wait_timeout.is_some() && r.wait.value.is_none() {
        return Err(Error::Missing(format!(
            "--wait-timeout has no port to wait for: give --wait PORT{}, or drop --wait-timeout",
            in_profile("wait")
        )));
    }
    if a.connect.is_some() && r.wait.value.is_none() {
        return Err(Error::Missing(format!(
            "--connect needs the port to connect to: give --wait PORT{}",
            in_profile("wait")
        )));
    }
    Ok(r)
}

/// What every send of one invocation shares.
struct Sender<'a> {
    key: Key,
    addrs: Vec<SocketAddr>,
    command: &'a str,
    strict: bool,
    src_ip: Option<std::net::IpAddr>,
    delay: Duration,
    state_dir: Option<&'a Path>,
    quiet: bool,
}

impl Sender<'_> {
    /// One send: lock, take a new counter, one datagram per address with it.
    fn send(&self) -> Result<(), Error> {
        // Held until this function returns, i.e. across every datagram of this send.
        let state = lock_state(self.state_dir, self.quiet)?;
        let counter = state.advance(counter::now_ns())?;
        let req = Request {
            command: self.command,
            counter,
            strict: self.strict,
            src_ip: self.src_ip,
        };
        let sent = send::send_all(
            &self.key,
            req,
            &self.addrs,
            self.delay,
            |to, result| match result {
                Ok(()) if !self.quiet => {
                    eprintln!("sent {} to {to} counter={counter}", self.command);
                }
                Ok(()) => {}
                Err(e) => eprintln!("ruroco-client: cannot send to {to}: {e}"),
            },
        );
        if sent == 0 {
            return Err(Error::AllSendsFailed(self.addrs.len()));
        }
        Ok(())
    }
}

fn run_send(state_dir: Option<&Path>, config: Option<&Path>, a: &SendArgs) -> Result<(), Error> {
    // Everything that can fail without side effects comes first, so a typo never moves the
    // counter: the profile and flags, the key, the addresses.
    let r = resolve_send(config, a)?;
    let key_path = r.key.value.clone().unwrap_or_default();
    let command = r.command.value.clone().unwrap_or_default();
    let (key_file, warning) = send::open_key(&key_path)?;
    // Quiet means nothing but errors on stderr: under a ProxyCommand (libssh) stderr may be the
    // very socket the ssh stream flows through.
    if let Some(warning) = warning
        && !a.quiet
    {
        eprintln!("ruroco-client: {warning}");
    }
    let key = ruroco_kit::key_file::read_from(key_file, &key_path)?;
    let family = r.family.value.unwrap_or(Family::Any);
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for t in &r.address.value {
        for addr in send::resolve(t, family)? {
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
    }
    let sender = Sender {
        key,
        addrs,
        command: &command,
        strict: r.permissive.value != Some(true),
        src_ip: r.ip.value,
        delay: r
            .delay
            .value
            .unwrap_or(Duration::from_millis(cli::DEFAULT_DELAY_MS)),
        state_dir,
        quiet: a.quiet,
    };
    sender.send()?;

    let Some(port) = r.wait.value else {
        return Ok(());
    };
    let timeout = r.wait_timeout.value.unwrap_or(wait::DEFAULT_WAIT_TIMEOUT);
    let tcp = wait::tcp_addrs(&sender.addrs, port);
    let answered = wait::wait_for_port(&tcp, timeout, || {
        if !a.quiet {
            eprintln!("no answer on TCP port {port} yet: sending again with a new counter");
        }
        if let Err(e) = sender.send() {
            eprintln!("ruroco-client: the second send failed: {e}");
        }
    })
    .map_err(|n| Error::NoAnswer(wait::no_answer_message(port, timeout, &n, &command)))?;
    if !a.quiet {
        eprintln!(
            "TCP port {port} at {} answered after {:.2}s",
            answered.addr.ip(),
            answered.elapsed.as_secs_f64()
        );
    }
    if let Some(mode) = a.connect {
        let mode = connect::resolve_mode(mode);
        connect::hand_over(answered.stream, mode)?;
        if !a.quiet && mode == ConnectMode::Fdpass {
            eprintln!("passed the connection over stdout");
        }
    }
    Ok(())
}

fn run_reseed(state_dir: Option<&Path>) -> Result<(), Error> {
    let state = lock_state(state_dir, false)?;
    let now = counter::now_ns();
    state.write(now)?;
    eprintln!(
        "counter reset to {now} in {}",
        state.counter_path().display()
    );
    Ok(())
}
