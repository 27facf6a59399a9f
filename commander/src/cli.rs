//! The command line: the daemon (no subcommand), `--check`, and the operator commands
//! (`grants`, `revoke`, `reload`) that talk to a running commander over its control socket.
//! It must never start the daemon for an operator command, nor print a grant table it did not
//! get from the running commander.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};

use crate::config::{self, Config};
use crate::control::{self, Request};
use crate::daemon;
use crate::dispatch::GrantView;
use crate::error::Error;
use crate::schedule::now_unix_ms;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "ruroco-commander",
    version,
    about = "Run the configured command named by each frame from ruroco-server (root half of ruroco)"
)]
pub(crate) struct Args {
    /// Config file with the commands (must be owned by root, not group/other-writable)
    #[arg(long, value_name = "PATH", default_value = config::DEFAULT_CONFIG)]
    pub(crate) config: PathBuf,
    /// Validate the config, print "<name> <hash>" per command, and exit
    #[arg(long)]
    pub(crate) check: bool,
    /// The control socket of a running commander (default: control_socket from the config)
    #[arg(long, value_name = "PATH", global = true)]
    pub(crate) control: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) op: Option<Op>,
}

/// Operator commands against the running commander (root only, over its control socket).
#[derive(Debug, Subcommand)]
pub(crate) enum Op {
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
pub(crate) fn command() -> clap::Command {
    Args::command()
}

/// Parse the arguments and run: an operator command, `--check`, or the daemon until
/// SIGTERM/SIGINT.
pub(crate) fn main() -> Result<(), Error> {
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
        return check(&args).map_err(Error::for_check);
    }
    daemon::start(args)
}

fn check(args: &Args) -> Result<(), Error> {
    let cfg = Config::load(&args.config)?;
    daemon::preflight(&cfg)?;
    for (name, hash) in cfg.commands.sorted() {
        println!("{name} {hash}");
    }
    Ok(())
}

/// `grants` / `revoke` / `reload`: ask the running commander over its control socket and
/// print the answer.
fn operate(args: &Args, op: &Op) -> Result<(), Error> {
    let path = match (&args.control, op) {
        (Some(p), _) => p.clone(),
        // A reload is asked for exactly when the file may be broken: find the socket anyway.
        (None, Op::Reload) => control_socket_of(&args.config),
        (None, _) => Config::load(&args.config)?.control_socket,
    };
    let rt = daemon::runtime()?;
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
        Op::Grants => print!("{}", table(&grants, now_unix_ms())),
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
fn table(grants: &[GrantView], now_unix_ms: u64) -> String {
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
