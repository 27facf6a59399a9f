//! The command-line interface of `ruroco-client` (clap derive), also used for man pages and
//! shell completions. Only describes arguments and their documentation; never does any work.

use clap::{Args, CommandFactory, Parser, Subcommand};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ruroco_kit::exit;

use crate::connect::ConnectMode;
use crate::send::DEFAULT_PORT;

/// Default delay between the datagrams of one send, in milliseconds.
pub const DEFAULT_DELAY_MS: u64 = 50;
/// Longest delay between datagrams accepted (flag or profile).
pub const MAX_DELAY: Duration = Duration::from_secs(30);

const LONG_ABOUT: &str = "\
Send one encrypted UDP datagram that asks a ruroco server to run a pre-configured command.
The server never answers; with --wait PORT the client checks that the command worked by
connecting to a TCP port it opens, and with --connect hands that connection to ssh.

Profiles in $XDG_CONFIG_HOME/ruroco/client.toml (or --config FILE) name servers, so
`ruroco-client send home` replaces -a, -k, -c and the options; `ruroco-client list` shows them.
State (the replay counter and its lock) lives in --state-dir, else $XDG_STATE_HOME/ruroco,
else $HOME/.local/state/ruroco (created with mode 0700, refused if another user's).";

/// One exit status of a subcommand: (code, meaning).
pub type ExitStatus = (u8, &'static str);

/// Exit statuses of `send` (sysexits.h values).
pub const SEND_EXIT: &[ExitStatus] = &[
    (
        exit::OK,
        "sent (with --wait: the port answered; with --connect: the connection was handed over and, when relayed, closed)",
    ),
    (
        exit::USAGE,
        "usage: bad arguments or address, no command (-c or the profile's command), unknown profile, no address or key",
    ),
    (
        exit::DATAERR,
        "malformed key file, or a counter file that is corrupt, a link or another user's (run `ruroco-client reseed`)",
    ),
    (
        exit::NOINPUT,
        "key file missing, unreadable, or not a regular file (a directory, a FIFO)",
    ),
    (
        exit::NOHOST,
        "host name not resolved, or no address left after -4/-6",
    ),
    (
        exit::UNAVAILABLE,
        "--wait: the port did not answer before the timeout (the line printed lists the likely causes)",
    ),
    (
        exit::SOFTWARE,
        "internal error (e.g. the system random number generator failed)",
    ),
    (
        exit::IOERR,
        "I/O error: state directory, counter or lock, every send failed, or handing over the connection failed",
    ),
    (
        exit::NOPERM,
        "permission: key file readable by others or writable by anyone else (chmod 0600 it), or an unsafe state directory (a link, not a directory, another user's) or lock file (remove it)",
    ),
    (
        exit::CONFIG,
        "config: client.toml is invalid or unsafe, or neither XDG_STATE_HOME nor HOME is set (pass --state-dir)",
    ),
];
/// Exit statuses of `gen`.
pub const GEN_EXIT: &[ExitStatus] = &[
    (exit::OK, "the key was written"),
    (exit::USAGE, "usage error"),
    (
        exit::SOFTWARE,
        "internal error (the system random number generator failed)",
    ),
    (
        exit::CANTCREAT,
        "the key file exists (pass --force) or cannot be created",
    ),
    (exit::IOERR, "cannot write to stdout"),
];
/// Exit statuses of `reseed`.
pub const RESEED_EXIT: &[ExitStatus] = &[
    (exit::OK, "the counter was set to the clock"),
    (exit::USAGE, "usage error"),
    (exit::IOERR, "I/O error: state directory, counter or lock"),
    (
        exit::NOPERM,
        "the state directory or lock file is unsafe (a link, not a directory, another user's, or writable by others; a lock file we cannot open for writing)",
    ),
    (
        exit::CONFIG,
        "neither XDG_STATE_HOME nor HOME is set (pass --state-dir)",
    ),
];
/// Exit statuses of `list`.
pub const LIST_EXIT: &[ExitStatus] = &[
    (exit::OK, "the profiles were listed"),
    (exit::USAGE, "usage error, or no profile of that name"),
    (exit::IOERR, "cannot write to stdout"),
    (
        exit::CONFIG,
        "client.toml is invalid or unsafe, or neither XDG_CONFIG_HOME nor HOME is set",
    ),
];
/// Exit statuses of `completions`.
pub const COMPLETIONS_EXIT: &[ExitStatus] = &[
    (exit::OK, "the script was printed"),
    (exit::USAGE, "usage error (unknown shell)"),
    (exit::IOERR, "cannot write to stdout"),
];
/// Exit statuses of the program as a whole (any subcommand).
pub const TOP_EXIT: &[ExitStatus] = &[
    (exit::OK, "success"),
    (exit::USAGE, "usage error"),
    (
        exit::DATAERR,
        "malformed key file or counter file (send: run `ruroco-client reseed` for the counter)",
    ),
    (exit::NOINPUT, "key file missing or unreadable"),
    (exit::NOHOST, "host name not resolved"),
    (exit::UNAVAILABLE, "send --wait: the port did not answer"),
    (exit::SOFTWARE, "internal error"),
    (
        exit::CANTCREAT,
        "gen: the key file exists or cannot be created",
    ),
    (exit::IOERR, "I/O error"),
    (
        exit::NOPERM,
        "permission: key file, state directory or lock file",
    ),
    (
        exit::CONFIG,
        "configuration: client.toml, or no HOME for the defaults",
    ),
];

/// The exit statuses of `sub` (`None`: the program).
pub fn exit_statuses(sub: Option<&str>) -> &'static [ExitStatus] {
    match sub {
        Some("send") => SEND_EXIT,
        Some("gen") => GEN_EXIT,
        Some("reseed") => RESEED_EXIT,
        Some("list") => LIST_EXIT,
        Some("completions") => COMPLETIONS_EXIT,
        _ => TOP_EXIT,
    }
}

/// The `Exit status:` block of `--help`.
fn exit_help(codes: &[ExitStatus]) -> String {
    let mut s = String::from("Exit status:");
    for (code, what) in codes {
        s.push_str(&format!("\n  {code:<3} {what}"));
    }
    s
}

/// Top-level arguments.
#[derive(Debug, Parser)]
#[command(
    name = "ruroco-client",
    version,
    about = "Send an encrypted command datagram to a ruroco server",
    long_about = LONG_ABOUT,
    after_long_help = exit_help(TOP_EXIT),
    propagate_version = true
)]
pub struct Cli {
    /// Directory for the counter and its lock (also accepted after `send`/`reseed`)
    /// [default: $XDG_STATE_HOME/ruroco or $HOME/.local/state/ruroco]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Profile file (also accepted after `send`/`list`) [default:
    /// $XDG_CONFIG_HOME/ruroco/client.toml or $HOME/.config/ruroco/client.toml]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Generate a new key (8-byte key id + AES-256 key, base64)
    #[command(after_long_help = exit_help(GEN_EXIT))]
    Gen(GenArgs),
    /// Send a command name to a server (a profile, or -a/-k), one datagram per address
    #[command(after_long_help = exit_help(SEND_EXIT))]
    Send(Box<SendArgs>),
    /// Show the profiles of client.toml and where each value comes from
    #[command(after_long_help = exit_help(LIST_EXIT))]
    List(ListArgs),
    /// Reset the replay counter to the current time in nanoseconds
    #[command(after_long_help = exit_help(RESEED_EXIT))]
    Reseed(StateArgs),
    /// Print a shell completion script to stdout
    #[command(after_long_help = exit_help(COMPLETIONS_EXIT))]
    Completions {
        /// The shell to complete for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct GenArgs {
    /// Write the key to FILE (mode 0600) instead of stdout; its key id goes to stderr
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Overwrite FILE if it exists (atomically)
    #[arg(long, requires = "output")]
    pub force: bool,
}

/// Where the counter lives (send, reseed).
#[derive(Debug, Args)]
pub struct StateArgs {
    /// Directory for the counter and its lock [default: $XDG_STATE_HOME/ruroco or
    /// $HOME/.local/state/ruroco]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Show only this profile
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    /// Profile file [default: $XDG_CONFIG_HOME/ruroco/client.toml or
    /// $HOME/.config/ruroco/client.toml]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Profile from client.toml: its address, key, command and options, each overridden by the
    /// flags given here
    #[arg(value_name = "PROFILE")]
    pub profile: Option<String>,
    /// Server as HOST, HOST:PORT, IPv4[:PORT], IPv6, or [IPv6]:PORT; a host name is sent to
    /// every address it resolves to. May be repeated: every datagram of the send shares one
    /// counter
    #[arg(short = 'a', long = "address", value_name = "HOST[:PORT]",
          long_help = format!("Server as HOST, HOST:PORT, IPv4[:PORT], IPv6, or [IPv6]:PORT \
(default port {DEFAULT_PORT}). A host name is sent to every address it resolves to. May be \
repeated; every datagram of one send carries the same counter, so a server that receives \
several copies runs the command once. Replaces the profile's address; an address without a \
port takes --port, else the profile's port."))]
    pub address: Vec<String>,
    /// Server UDP port for addresses that name none [default: the profile's `port`, else
    /// 34020]
    #[arg(long = "port", value_name = "PORT",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// Key file made by `ruroco-client gen` (refused when others may read it)
    #[arg(short = 'k', long = "key", value_name = "KEYFILE")]
    pub key: Option<PathBuf>,
    /// Name of the command to run, as configured on the server (required here or in the
    /// profile)
    #[arg(short = 'c', long = "command", value_name = "NAME",
          value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub command: Option<String>,
    /// Let the server run the command for the claimed IP (-i) even when the datagram comes
    /// from another address (strict flag 0)
    #[arg(short = 'e', long = "permissive", conflicts_with = "strict")]
    pub permissive: bool,
    /// Strict even if the profile says permissive: the command runs only for the datagram's
    /// source address
    #[arg(long = "strict")]
    pub strict: bool,
    /// Claim this IP as the client's address (the server runs the command for it)
    #[arg(short = 'i', long = "ip", value_name = "IP", value_parser = parse_claimed_ip)]
    pub ip: Option<IpAddr>,
    /// Only send to IPv4 addresses
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// Only send to IPv6 addresses
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,
    /// Milliseconds between the datagrams of one send [default: 50]
    #[arg(short = 'd', long = "delay", value_name = "MS", value_parser = parse_delay)]
    pub delay: Option<u64>,
    /// After sending, connect to this TCP port of the server until it answers; exit 69 if it
    /// does not before --wait-timeout (one more send with a new counter at half-time)
    #[arg(short = 'w', long = "wait", value_name = "PORT",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub wait: Option<u16>,
    /// How long --wait tries [default: 5s]
    #[arg(long = "wait-timeout", value_name = "DURATION", value_parser = parse_wait_timeout)]
    pub wait_timeout: Option<Duration>,
    /// Do not wait, even if the profile has `wait`
    #[arg(long = "no-wait", conflicts_with_all = ["wait", "connect"])]
    pub no_wait: bool,
    /// Once the --wait port answers, hand the connection to ssh (ProxyCommand): pass the
    /// socket over stdout (fdpass, for ProxyUseFdpass yes) or relay stdin/stdout (relay); auto
    /// passes it when stdin and stdout are one Unix stream socket and stderr is not (OpenSSH's
    /// ProxyUseFdpass), else relays. Other callers that put one socketpair on stdin and stdout
    /// (socat EXEC) need --connect=relay; --connect=fdpass forces passing
    #[arg(long = "connect", value_name = "MODE", num_args = 0..=1,
          default_missing_value = "auto", require_equals = true)]
    pub connect: Option<ConnectMode>,
    /// Print only errors: not what was sent, when the port answered, or warnings
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    #[command(flatten)]
    pub state: StateArgs,
    /// Profile file [default: $XDG_CONFIG_HOME/ruroco/client.toml or
    /// $HOME/.config/ruroco/client.toml]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// A claimed IP must be a real address: `::` would encode as "none claimed" on the wire.
fn parse_claimed_ip(s: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = s
        .parse()
        .map_err(|_| format!("{s:?} is not an IPv4 or IPv6 address"))?;
    if ip.to_canonical().is_unspecified() {
        return Err(format!("{s} is the unspecified address, not a client IP"));
    }
    Ok(ip)
}

fn parse_delay(s: &str) -> Result<u64, String> {
    let ms: u64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of milliseconds"))?;
    if Duration::from_millis(ms) > MAX_DELAY {
        return Err(format!("at most {} ms", MAX_DELAY.as_millis()));
    }
    Ok(ms)
}

fn parse_wait_timeout(s: &str) -> Result<Duration, String> {
    let d = ruroco_kit::duration::parse(s).map_err(|e| e.to_string())?;
    if d.is_zero() || d > crate::config::MAX_WAIT_TIMEOUT {
        return Err(format!(
            "must be more than 0 and at most {}s",
            crate::config::MAX_WAIT_TIMEOUT.as_secs()
        ));
    }
    Ok(d)
}

/// The clap command, for completions and man pages.
pub fn command() -> clap::Command {
    Cli::command()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ruroco-client").chain(args.iter().copied()))
    }

    fn send(args: &[&str]) -> SendArgs {
        let mut all = vec!["send"];
        all.extend_from_slice(args);
        match parse(&all).unwrap().command {
            Cmd::Send(s) => *s,
            other => panic!("not send: {other:?}"),
        }
    }

    #[test]
    fn cli_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn send_has_no_silent_defaults() {
        let s = send(&["-a", "h", "-k", "k"]);
        assert_eq!(s.command, None);
        assert_eq!(s.delay, None);
        assert_eq!(s.profile, None);
        assert!(!s.permissive && !s.ipv4 && !s.ipv6 && !s.strict);
        assert_eq!(s.ip, None);
        let s = send(&["home", "-c", "x", "--wait", "22", "--connect"]);
        assert_eq!(s.profile.as_deref(), Some("home"));
        assert_eq!(s.wait, Some(22));
        assert_eq!(s.connect, Some(ConnectMode::Auto));
        let s = send(&["home", "--connect=fdpass", "--wait-timeout", "2s"]);
        assert_eq!(s.connect, Some(ConnectMode::Fdpass));
        assert_eq!(s.wait_timeout, Some(Duration::from_secs(2)));
    }

    #[test]
    fn bad_combinations_are_refused() {
        for bad in [
            &["send", "-a", "h", "-k", "k", "-4", "-6"][..],
            &["send", "-a", "h", "-i", "x"],
            &["send", "-e", "--strict"],
            &["send", "--wait", "0"],
            &["send", "--wait-timeout", "0s"],
            &["send", "--no-wait", "--wait", "22"],
            &["send", "-d", "99999999"],
            &["send", "--connect=sometimes"],
            &["gen", "--force"],
            &["gen", "--state-dir", "x"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        for bad in ["::", "0.0.0.0", "::ffff:0.0.0.0"] {
            assert!(parse(&["send", "-i", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn state_dir_and_config_before_or_after_the_subcommand() {
        let cli = parse(&["--state-dir", "/tmp/x", "reseed"]).unwrap();
        assert_eq!(cli.state_dir, Some(PathBuf::from("/tmp/x")));
        let cli = parse(&["reseed", "--state-dir", "/tmp/y"]).unwrap();
        let Cmd::Reseed(r) = cli.command else {
            panic!("not reseed")
        };
        assert_eq!(r.state_dir, Some(PathBuf::from("/tmp/y")));
        let s = send(&["--config", "/c.toml", "--state-dir", "/s"]);
        assert_eq!(s.config, Some(PathBuf::from("/c.toml")));
        assert_eq!(s.state.state_dir, Some(PathBuf::from("/s")));
    }

    #[test]
    fn each_help_shows_only_its_own_exit_codes_and_options() {
        let mut top = command();
        top.build();
        for (name, codes) in [
            ("gen", GEN_EXIT),
            ("reseed", RESEED_EXIT),
            ("list", LIST_EXIT),
            ("send", SEND_EXIT),
        ] {
            let mut sub = top.find_subcommand(name).unwrap().clone();
            let help = sub.render_long_help().to_string();
            for (code, _) in codes {
                assert!(
                    help.contains(&format!("  {code} ")),
                    "{name}: {code}\n{help}"
                );
            }
            assert!(!help.contains("send:"), "{name}:\n{help}");
            let has_state = help.contains("--state-dir");
            assert_eq!(
                has_state,
                name == "send" || name == "reseed",
                "{name}:\n{help}"
            );
            if name != "send" {
                assert!(!help.contains("69"), "{name}:\n{help}");
            }
        }
    }
}
