//! The command line of `ruroco-server` (clap) and the operator commands that do not start the
//! server: `--check`, `--reload PID` and `gen-key`. Each prints its outcome and returns its
//! exit status. It must never start the server, signal anything but a ruroco-server, or
//! print key material.

use clap::{CommandFactory, Parser};
use ruroco_kit::exit::{self, ExitStatus};
use ruroco_proto::ip;
use std::path::{Path, PathBuf};

use crate::config;
use crate::error::ServerError;
use crate::replay::ReplayState;
use crate::{genkey, reload, startup};

/// Command line of `ruroco-server`.
#[derive(Debug, Parser)]
#[command(
    name = "ruroco-server",
    version,
    about = "Receive ruroco datagrams, validate them and forward commands to ruroco-commander"
)]
pub(crate) struct Args {
    /// Path of the server config.
    #[arg(long, value_name = "PATH", default_value = config::DEFAULT_CONFIG)]
    pub(crate) config: PathBuf,
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

/// What the command line asks for.
#[derive(Debug)]
pub(crate) enum Action {
    /// `gen-key PATH --group GROUP`.
    GenKey { path: PathBuf, group: String },
    /// `--check`.
    Check,
    /// `--reload PID`.
    Reload(i32),
    /// No operator command: run the server.
    Serve,
}

impl Args {
    /// Parse the process's arguments; on `--help`, `--version` or a usage error clap's text
    /// is printed and the exit status returned (0, or 64 for a usage error).
    pub(crate) fn parse_or_exit_code() -> Result<Self, u8> {
        Self::try_parse().map_err(|e| {
            let _ = e.print();
            if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            }
        })
    }

    /// The one thing this invocation does.
    pub(crate) fn action(&self) -> Action {
        match (&self.op, self.check, self.reload) {
            (Some(Op::GenKey { path, group }), _, _) => Action::GenKey {
                path: path.clone(),
                group: group.clone(),
            },
            (None, true, _) => Action::Check,
            (None, false, Some(pid)) => Action::Reload(pid),
            (None, false, None) => Action::Serve,
        }
    }
}

/// The clap definition, for man pages and completions.
pub fn command() -> clap::Command {
    Args::command()
}

/// `gen-key`: write the key file and print its id.
pub(crate) fn gen_key(path: &Path, group: &str) -> u8 {
    match genkey::gen_key(path, group) {
        Ok(id) => {
            println!("key {id} written to {}", path.display());
            exit::OK
        }
        Err(e) => {
            eprintln!("{e}");
            e.exit_code()
        }
    }
}

/// `--reload PID`: signal the server, wait for its outcome and print it.
pub(crate) fn reload(config: &Path, pid: i32) -> u8 {
    match reload::request(config, pid) {
        Ok(message) => {
            println!("{message}");
            exit::OK
        }
        Err(e) => {
            eprintln!("{e}");
            e.exit_code()
        }
    }
}

/// `--check`: config and keys, one line per key, then the effective settings. A config
/// error shows its line with a caret under the problem.
pub(crate) fn check(path: &Path) -> u8 {
    match checked(path) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("{}", e.render());
            e.exit_code()
        }
    }
}

fn checked(path: &Path) -> Result<(), ServerError> {
    let (c, keys) = startup::preflight(path)?;
    // The replay floors as the start reads them: an empty, truncated or unparsable file
    // refuses the start, so it refuses `--check` too.
    let floors = ReplayState::load(&c.state_dir)?.len();
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
    Ok(())
}
