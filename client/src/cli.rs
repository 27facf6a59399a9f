//! The command-line interface of `ruroco-client` (clap derive), also used for man pages and
//! shell completions. Only describes arguments; never does any work itself.

use clap::{Args, CommandFactory, Parser, Subcommand};
use std::net::IpAddr;
use std::path::PathBuf;

use crate::send::DEFAULT_PORT;

/// Default delay between the datagrams of one send, in milliseconds.
pub const DEFAULT_DELAY_MS: u64 = 50;
/// Command name sent when `-c` is not given.
pub const DEFAULT_COMMAND: &str = "default";

const LONG_ABOUT: &str = "\
Send one encrypted UDP datagram that asks a ruroco server to run a pre-configured command.
The server never answers; the client never waits for a reply.

State (the replay counter and its lock) lives in --state-dir, else $XDG_STATE_HOME/ruroco,
else $HOME/.local/state/ruroco (created with mode 0700).";

const EXIT_CODES: &str = "\
Exit status:
  0   success (send: at least one datagram was sent)
  64  usage error or unparsable address
  65  malformed key file, or corrupt counter file (run `ruroco-client reseed`)
  66  key file missing or unreadable
  68  host name not resolved, or no address left after -4/-6
  70  internal error (e.g. the system random number generator failed)
  73  gen: the key file exists (pass --force) or cannot be created
  74  I/O error: state directory, counter, lock, or every send failed
  78  no state directory: neither XDG_STATE_HOME nor HOME is set (pass --state-dir)";

/// Top-level arguments.
#[derive(Debug, Parser)]
#[command(
    name = "ruroco-client",
    version,
    about = "Send an encrypted command datagram to a ruroco server",
    long_about = LONG_ABOUT,
    after_long_help = EXIT_CODES,
    propagate_version = true
)]
pub struct Cli {
    /// Directory for the counter and its lock [default: $XDG_STATE_HOME/ruroco or
    /// $HOME/.local/state/ruroco]
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Generate a new key (8-byte key id + AES-256 key, base64)
    #[command(after_long_help = EXIT_CODES)]
    Gen(GenArgs),
    /// Send a command name to a server, one datagram per resolved address
    #[command(after_long_help = EXIT_CODES)]
    Send(SendArgs),
    /// Reset the replay counter to the current time in nanoseconds
    #[command(after_long_help = EXIT_CODES)]
    Reseed,
    /// Print a shell completion script to stdout
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

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Server as HOST, HOST:PORT, IPv4[:PORT], IPv6, or [IPv6]:PORT; a host name is sent to
    /// every address it resolves to. May be repeated: every datagram of the send shares one
    /// counter
    #[arg(short = 'a', long = "address", value_name = "HOST[:PORT]", required = true,
          long_help = format!("Server as HOST, HOST:PORT, IPv4[:PORT], IPv6, or [IPv6]:PORT \
(default port {DEFAULT_PORT}). A host name is sent to every address it resolves to. May be \
repeated; every datagram of one send carries the same counter, so a server that receives \
several copies runs the command once."))]
    pub address: Vec<String>,
    /// Key file made by `ruroco-client gen`
    #[arg(short = 'k', long = "key", value_name = "KEYFILE")]
    pub key: PathBuf,
    /// Name of the command to run, as configured on the server
    #[arg(short = 'c', long = "command", value_name = "NAME", default_value = DEFAULT_COMMAND,
          value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub command: String,
    /// Let the server run the command for the claimed IP (-i) even when the datagram comes
    /// from another address (strict flag 0)
    #[arg(short = 'e', long = "permissive")]
    pub permissive: bool,
    /// Claim this IP as the client's address (the server runs the command for it)
    #[arg(short = 'i', long = "ip", value_name = "IP", value_parser = parse_claimed_ip)]
    pub ip: Option<IpAddr>,
    /// Only send to IPv4 addresses
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// Only send to IPv6 addresses
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,
    /// Milliseconds between the datagrams of one send
    #[arg(short = 'd', long = "delay", value_name = "MS", default_value_t = DEFAULT_DELAY_MS)]
    pub delay: u64,
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

/// The clap command, for completions and man pages.
pub fn command() -> clap::Command {
    Cli::command()
}

/// The `ruroco-client(1)` man page in roff.
pub fn man_page() -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(command()).render(&mut out)?;
    Ok(out)
}

/// Man pages for the binary and each subcommand: (`ruroco-client`, roff),
/// (`ruroco-client-send`, roff), ...
pub fn man_pages() -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let top = command();
    let mut pages = vec![("ruroco-client".to_owned(), man_page()?)];
    for sub in top.get_subcommands() {
        let name = format!("ruroco-client-{}", sub.get_name());
        let sub = sub
            .clone()
            .display_name(name.clone())
            .bin_name(format!("ruroco-client {}", sub.get_name()));
        let mut out = Vec::new();
        clap_mangen::Man::new(sub).render(&mut out)?;
        pages.push((name, out));
    }
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn send_defaults() {
        let cli = Cli::try_parse_from(["ruroco-client", "send", "-a", "h", "-k", "k"]).unwrap();
        let Cmd::Send(s) = cli.command else {
            panic!("not send")
        };
        assert_eq!(s.command, "default");
        assert_eq!(s.delay, 50);
        assert!(!s.permissive && !s.ipv4 && !s.ipv6);
        assert_eq!(s.ip, None);
    }

    #[test]
    fn state_dir_is_global_and_flags_conflict() {
        let cli =
            Cli::try_parse_from(["ruroco-client", "reseed", "--state-dir", "/tmp/x"]).unwrap();
        assert_eq!(cli.state_dir, Some(PathBuf::from("/tmp/x")));
        assert!(
            Cli::try_parse_from(["ruroco-client", "send", "-a", "h", "-k", "k", "-4", "-6"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["ruroco-client", "send", "-k", "k"]).is_err());
        assert!(
            Cli::try_parse_from(["ruroco-client", "send", "-a", "h", "-k", "k", "-i", "x"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["ruroco-client", "gen", "--force"]).is_err());
        for bad in ["::", "0.0.0.0", "::ffff:0.0.0.0"] {
            assert!(
                Cli::try_parse_from(["ruroco-client", "send", "-a", "h", "-k", "k", "-i", bad])
                    .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn man_page_renders() {
        let m = String::from_utf8(man_page().unwrap()).unwrap();
        assert!(m.contains("ruroco-client"));
        let pages = man_pages().unwrap();
        let names: Vec<_> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"ruroco-client-send"), "{names:?}");
    }
}
