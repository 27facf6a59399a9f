//! ruroco-client library: argument handling, key generation, the counter and sending, so tests
//! and the man-page generator can reach them. Never reads from the network.
#![forbid(unsafe_code)]

pub mod cli;
pub mod counter;
pub mod r#gen;
pub mod send;

use clap::Parser;
use std::ffi::OsString;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ruroco_shared::Key;
use ruroco_shared::key::KeyFileError;

use cli::{Cli, Cmd, GenArgs, SendArgs};
pub use cli::{command, man_page, man_pages};
use counter::{CounterError, LockedState};
use r#gen::GenError;
use send::{AddrError, Family, Request, ResolveError};

/// Everything that can stop the client, each with its exit status (sysexits).
#[derive(Debug, thiserror::Error)]
pub enum Error {
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
    Counter(#[from] CounterError),
    #[error("{0}")]
    Gen(#[from] GenError),
    #[error(
        "every send failed ({0} address(es) tried, errors above): check the network and the address"
    )]
    AllSendsFailed(usize),
    #[error("cannot write to stdout: {0}")]
    Stdout(io::Error),
}

/// sysexits.h values used by the client.
mod exit {
    pub const OK: u8 = 0;
    pub const USAGE: u8 = 64;
    pub const DATAERR: u8 = 65;
    pub const NOINPUT: u8 = 66;
    pub const NOHOST: u8 = 68;
    pub const SOFTWARE: u8 = 70;
    pub const CANTCREAT: u8 = 73;
    pub const IOERR: u8 = 74;
    pub const CONFIG: u8 = 78;
}

impl Error {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(e) if !e.use_stderr() => exit::OK,
            Error::Usage(_) | Error::Address(_) => exit::USAGE,
            Error::Resolve(_) => exit::NOHOST,
            Error::KeyFile(KeyFileError::Read { .. }) => exit::NOINPUT,
            Error::KeyFile(_) => exit::DATAERR,
            Error::Counter(CounterError::Corrupt { .. }) => exit::DATAERR,
            Error::Counter(CounterError::NoStateDir) => exit::CONFIG,
            Error::Counter(_) => exit::IOERR,
            Error::Gen(GenError::Generate(_)) => exit::SOFTWARE,
            Error::Gen(GenError::Exists(_) | GenError::Write { .. }) => exit::CANTCREAT,
            Error::Gen(GenError::Stdout(_)) | Error::Stdout(_) => exit::IOERR,
            Error::AllSendsFailed(_) => exit::IOERR,
        }
    }

    /// Print the error: clap's own rendering for usage/help, else one line on stderr.
    pub fn report(&self) {
        match self {
            Error::Usage(e) => {
                let _ = e.print();
            }
            other => eprintln!("ruroco-client: {other}"),
        }
    }
}

/// Entry point called by `main`: parse the process arguments and run the subcommand.
pub fn run() -> Result<(), Error> {
    run_from(std::env::args_os())
}

/// Run with explicit arguments (the first is the program name).
pub fn run_from<I, T>(args: I) -> Result<(), Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::try_parse_from(args).map_err(Error::Usage)?;
    let state_dir = cli.state_dir.as_deref();
    match cli.command {
        Cmd::Gen(a) => run_gen(&a),
        Cmd::Send(a) => run_send(state_dir, &a),
        Cmd::Reseed => run_reseed(state_dir),
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

fn lock_state(state_dir: Option<&Path>) -> Result<LockedState, Error> {
    let dir = counter::state_dir_from_env(state_dir)?;
    Ok(LockedState::acquire(&dir, |lock| {
        eprintln!(
            "waiting for {} (another ruroco-client is running)",
            lock.display()
        );
    })?)
}

fn run_send(state_dir: Option<&Path>, a: &SendArgs) -> Result<(), Error> {
    // Everything that can fail without side effects comes first, so a typo never moves the
    // counter: parse the addresses, load the key, resolve.
    let targets = a
        .address
        .iter()
        .map(|s| send::parse_target(s))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(warning) = send::key_mode_warning(&a.key) {
        eprintln!("ruroco-client: {warning}");
    }
    let key = Key::load(&a.key)?;
    let family = match (a.ipv4, a.ipv6) {
        (true, _) => Family::V4,
        (_, true) => Family::V6,
        _ => Family::Any,
    };
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for t in &targets {
        for addr in send::resolve(t, family)? {
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
    }

    // Held until this function returns, i.e. across every datagram of this send.
    let state = lock_state(state_dir)?;
    let counter = state.advance(counter::now_ns())?;
    let req = Request {
        command: &a.command,
        counter,
        strict: !a.permissive,
        src_ip: a.ip,
    };
    let sent = send::send_all(
        &key,
        req,
        &addrs,
        Duration::from_millis(a.delay),
        |to, result| match result {
            Ok(()) => eprintln!("sent {} to {to} counter={counter}", a.command),
            Err(e) => eprintln!("ruroco-client: cannot send to {to}: {e}"),
        },
    );
    if sent == 0 {
        return Err(Error::AllSendsFailed(addrs.len()));
    }
    Ok(())
}

fn run_reseed(state_dir: Option<&Path>) -> Result<(), Error> {
    let state = lock_state(state_dir)?;
    let now = counter::now_ns();
    state.write(now)?;
    eprintln!(
        "counter reset to {now} in {}",
        state.counter_path().display()
    );
    Ok(())
}
