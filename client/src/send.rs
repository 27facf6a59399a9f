//! `send`: parse HOST[:PORT], resolve it, and send one sealed datagram per address with the
//! counter of this send. Never waits for or reads a reply.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ruroco_kit::fsutil;
use ruroco_proto::protocol::{self, VERSION};
use ruroco_proto::{CmdHash, Key, Plaintext};

/// The server's port when HOST has none.
pub const DEFAULT_PORT: u16 = 34020;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("address is empty: give HOST, HOST:PORT, IPv6 or [IPv6]:PORT")]
    Empty,
    #[error("address {0:?}: bad port {1:?}: must be a number from 1 to 65535")]
    BadPort(String, String),
    #[error("address {0:?}: unclosed '[': write an IPv6 address with a port as [IPv6]:PORT")]
    Unbracketed(String),
    #[error("address {0:?}: not an IPv6 address inside [..]")]
    BadBracketed(String),
    #[error(
        "address {0:?}: not a host name or IP address: write HOST, HOST:PORT, IPv6 or [IPv6]:PORT without a scheme, user or path (e.g. server.example.org:34020)"
    )]
    BadHost(String),
}

/// A parsed `-a` value: a host name or IP literal and the port to send to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// An address as written: a host and the port it names, if it names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrSpec {
    /// The host name or IP literal (an IPv6 one without brackets).
    pub host: String,
    /// `None` when the address names no port: the profile's `port`, `--port` or the default.
    pub port: Option<u16>,
}

impl AddrSpec {
    /// The target, with `default_port` when the address named none.
    pub fn with_default_port(&self, default_port: u16) -> Target {
        Target {
            host: self.host.clone(),
            port: self.port.unwrap_or(default_port),
        }
    }
}

/// A DNS name or IPv4 literal: letters, digits, '-', '_' and '.', not starting with '-' or '.'.
fn is_host_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && !h.starts_with(['-', '.'])
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn parse_port(input: &str, port: &str) -> Result<u16, AddrError> {
    match port.parse::<u16>() {
        Ok(p) if p != 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err(AddrError::BadPort(input.to_owned(), port.to_owned())),
    }
}

/// Parse `HOST`, `HOST:PORT`, `IPv4[:PORT]`, `IPv6`, `[IPv6]` or `[IPv6]:PORT`. A bare IPv6
/// literal (more than one colon, no brackets) takes the default port; so does a zone id form
/// like `fe80::1%eth0`, which is left to the resolver.
#[cfg(test)]
pub fn parse_target(input: &str) -> Result<Target, AddrError> {
    parse_target_port(input, DEFAULT_PORT)
}

/// [`parse_target`] with `default_port` for an address that names none (a profile's `port`).
#[cfg(test)]
pub fn parse_target_port(input: &str, default_port: u16) -> Result<Target, AddrError> {
    Ok(parse_spec(input)?.with_default_port(default_port))
}

/// Parse an address (the forms above), keeping whether it named a port.
pub fn parse_spec(input: &str) -> Result<AddrSpec, AddrError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(AddrError::Empty);
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| AddrError::Unbracketed(input.to_owned()))?;
        let host = inside.split('%').next().unwrap_or(inside);
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(AddrError::BadBracketed(input.to_owned()));
        }
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(parse_port(input, p)?),
                None => return Err(AddrError::BadPort(input.to_owned(), p.to_owned())),
            },
        };
        return Ok(AddrSpec {
            host: inside.to_owned(),
            port,
        });
    }
    let bad_host = || AddrError::BadHost(input.to_owned());
    match s.matches(':').count() {
        0 => {
            if !is_host_name(s) {
                return Err(bad_host());
            }
            Ok(AddrSpec {
                host: s.to_owned(),
                port: None,
            })
        }
        1 => {
            let (host, port) = s.split_once(':').unwrap_or((s, ""));
            if host.is_empty() {
                return Err(AddrError::Empty);
            }
            if !is_host_name(host) {
                return Err(bad_host());
            }
            Ok(AddrSpec {
                host: host.to_owned(),
                port: Some(parse_port(input, port)?),
            })
        }
        _ => {
            // More than one colon without brackets: only a bare IPv6 literal (with an optional
            // zone id) is that; `http://host:80` and the like are not.
            let ip = s.split('%').next().unwrap_or(s);
            if ip.parse::<Ipv6Addr>().is_err() {
                return Err(bad_host());
            }
            Ok(AddrSpec {
                host: s.to_owned(),
                port: None,
            })
        }
    }
}

/// Which address families `-4`/`-6` leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Any,
    V4,
    V6,
}

impl Family {
    fn admits(self, ip: IpAddr) -> bool {
        match self {
            Family::Any => true,
            Family::V4 => ip.is_ipv4(),
            Family::V6 => ip.is_ipv6(),
        }
    }

    /// How `list` and the config spell it.
    pub fn config_name(self) -> &'static str {
        match self {
            Family::Any => "any",
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Family::Any => "IP",
            Family::V4 => "IPv4 (-4)",
            Family::V6 => "IPv6 (-6)",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("address {target}: cannot resolve: {detail}")]
    Lookup { target: String, detail: String },
    #[error("address {target}: resolved to no address")]
    Nothing { target: String },
    #[error("address {target}: resolved to {found} but none of them is {family}")]
    NoneOfFamily {
        target: String,
        found: String,
        family: &'static str,
    },
}

/// Keep the addresses of `family`, in order, without duplicates; IPv4-mapped IPv6 counts as
/// IPv4 (it is sent from an IPv4 socket and encodes the same on the wire).
pub fn filter_addrs(
    addrs: impl IntoIterator<Item = SocketAddr>,
    family: Family,
) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    let mut seen = HashSet::new();
    let mut all = Vec::new();
    for a in addrs {
        let a = SocketAddr::new(a.ip().to_canonical(), a.port());
        if seen.insert(a) {
            all.push(a);
        }
    }
    let kept = all
        .iter()
        .copied()
        .filter(|a| family.admits(a.ip()))
        .collect();
    (kept, all)
}

/// Resolve one target to the addresses of `family` (IP literals need no lookup).
pub fn resolve(target: &Target, family: Family) -> Result<Vec<SocketAddr>, ResolveError> {
    let name = target.to_string();
    let found = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| ResolveError::Lookup {
            target: name.clone(),
            detail: e.to_string(),
        })?;
    let (kept, all) = filter_addrs(found, family);
    if all.is_empty() {
        return Err(ResolveError::Nothing { target: name });
    }
    if kept.is_empty() {
        let found = all
            .iter()
            .map(|a| a.ip().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(ResolveError::NoneOfFamily {
            target: name,
            found,
            family: family.name(),
        });
    }
    Ok(kept)
}

/// The plaintext for one datagram of a send.
pub fn plaintext(
    command: &str,
    counter: u128,
    strict: bool,
    src_ip: Option<IpAddr>,
    dst: SocketAddr,
) -> Plaintext {
    Plaintext {
        version: VERSION,
        cmd: CmdHash::of_name(command),
        counter,
        strict,
        src_ip: src_ip.map(|ip| ip.to_canonical()),
        dst_ip: Some(dst.ip().to_canonical()),
    }
}

/// Why a key file was not opened.
#[derive(Debug, thiserror::Error)]
pub enum KeyOpenError {
    #[error("key file {path}: cannot read: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "key file {path} is not a regular file (it is {kind}): give the file `ruroco-client gen -o FILE` wrote"
    )]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("key file {0}")]
    Perm(fsutil::PermError),
}

/// What kind of file `meta` describes, for messages.
pub fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// Open a key file and check it before it is read: without blocking (a FIFO would hang
/// `open`), refusing anything but a regular file, and refusing one that others may read or
/// anyone else may write (as the server refuses it), with the `chmod` that fixes it. A key
/// file the group may read is allowed with a warning, since a server's key shared with its
/// group is. Returns the open file and the warning, if any.
pub fn open_key(path: &Path) -> Result<(File, Option<String>), KeyOpenError> {
    let read_err = |source| KeyOpenError::Read {
        path: path.to_owned(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(KeyOpenError::NotAFile {
            path: path.to_owned(),
            kind: file_kind(&meta),
        });
    }
    fsutil::check_secret_mode(path, &meta).map_err(KeyOpenError::Perm)?;
    let mode = meta.mode() & 0o7777;
    let warning = (mode & 0o077 != 0).then(|| {
        format!(
            "warning: key file {} is readable by its group (mode {mode:04o}): chmod 0600 {}",
            path.display(),
            path.display()
        )
    });
    Ok((file, warning))
}

/// One unconnected UDP socket per family, opened on first use.
#[derive(Debug, Default)]
pub struct Sockets {
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
}

impl Sockets {
    fn for_addr(&mut self, to: SocketAddr) -> io::Result<&UdpSocket> {
        let (slot, bind) = match to {
            SocketAddr::V4(_) => (&mut self.v4, SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))),
            SocketAddr::V6(_) => (&mut self.v6, SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))),
        };
        if slot.is_none() {
            *slot = Some(UdpSocket::bind(bind)?);
        }
        slot.as_ref()
            .ok_or_else(|| io::Error::other("socket slot empty after bind"))
    }

    /// Send one datagram; a short send is an error (it would be dropped as `bad_length`).
    pub fn send(&mut self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        let n = self.for_addr(to)?.send_to(datagram, to)?;
        if n != datagram.len() {
            return Err(io::Error::other(format!(
                "short send: {n} of {} bytes",
                datagram.len()
            )));
        }
        Ok(())
    }
}

/// What every datagram of one send carries, apart from its destination.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub command: &'a str,
    pub counter: u128,
    pub strict: bool,
    pub src_ip: Option<IpAddr>,
}

/// Seal and send one datagram per address with the same counter, `delay` apart.
/// `report` gets each address with the outcome; returns how many sends succeeded.
pub fn send_all(
    key: &Key,
    req: Request<'_>,
    addrs: &[SocketAddr],
    delay: Duration,
    mut report: impl FnMut(SocketAddr, &io::Result<()>),
) -> usize {
    let mut sockets = Sockets::default();
    let mut ok = 0;
    for (i, &to) in addrs.iter().enumerate() {
        if i > 0 && !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let pt = plaintext(req.command, req.counter, req.strict, req.src_ip, to);
        let result = protocol::seal_random(key, &pt)
            .map_err(|e| io::Error::other(format!("random IV: {e}")))
            .and_then(|d| sockets.send(&d, to));
        if result.is_ok() {
            ok += 1;
        }
        report(to, &result);
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(host: &str, port: u16) -> Target {
        Target {
            host: host.to_owned(),
            port,
        }
    }

    #[test]
    fn parses_every_address_form() {
        let cases = [
            ("example.org", t("example.org", DEFAULT_PORT)),
            ("example.org:80", t("example.org", 80)),
            ("10.0.0.1", t("10.0.0.1", DEFAULT_PORT)),
            ("10.0.0.1:1234", t("10.0.0.1", 1234)),
            ("::1", t("::1", DEFAULT_PORT)),
            ("2001:db8::5", t("2001:db8::5", DEFAULT_PORT)),
            ("[::1]", t("::1", DEFAULT_PORT)),
            ("[2001:db8::5]:9", t("2001:db8::5", 9)),
            ("fe80::1%eth0", t("fe80::1%eth0", DEFAULT_PORT)),
            ("[fe80::1%eth0]:7", t("fe80::1%eth0", 7)),
            ("  localhost:65535 ", t("localhost", 65535)),
        ];
        for (input, want) in cases {
            assert_eq!(parse_target(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn rejects_bad_addresses() {
        for input in [
            "",
            "  ",
            ":80",
            "host:",
            "host:0",
            "host:65536",
            "host:+80",
            "host:http",
            "[::1",
            "[::1]80",
            "[::1]:",
            "[nope]:80",
            "[1.2.3.4]:80",
            "http://h.example:80",
            "h.example/path",
            "user@h.example",
            "h example",
            "-h",
            "1:2:3",
        ] {
            assert!(parse_target(input).is_err(), "{input:?} should be refused");
        }
    }

    #[test]
    fn profile_port_is_the_default_for_addresses_without_one() {
        assert_eq!(parse_target_port("h", 7), Ok(t("h", 7)));
        assert_eq!(parse_target_port("h:8", 7), Ok(t("h", 8)));
        assert_eq!(parse_target_port("::1", 7), Ok(t("::1", 7)));
        assert_eq!(parse_target_port("[::1]", 7), Ok(t("::1", 7)));
    }

    #[test]
    fn key_readable_by_others_is_refused_group_only_warned() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        std::fs::write(&p, "x").unwrap();
        for (mode, refused) in [(0o600, false), (0o640, false), (0o644, true), (0o620, true)] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let r = open_key(&p);
            assert_eq!(r.is_err(), refused, "{mode:o}: {r:?}");
            if let Err(e) = r {
                assert!(e.to_string().contains(&format!("{}", p.display())), "{e}");
                assert!(e.to_string().contains("chmod"), "{e}");
            }
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(open_key(&p).unwrap().1.unwrap().contains("chmod 0600"));
    }

    #[test]
    fn a_key_that_is_not_a_regular_file_is_refused_as_such() {
        let dir = tempfile::tempdir().unwrap();
        // A directory (mode 0755 here) is not "world-readable": it is not a key file at all.
        let e = open_key(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("not a regular file") && e.contains("a directory"),
            "{e}"
        );
        assert!(!e.contains("chmod") && !e.contains("world-readable"), "{e}");
        // A FIFO with no writer: refused at once instead of hanging in open().
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = open_key(&fifo).unwrap_err().to_string();
        assert!(
            e.contains("not a regular file") && e.contains("FIFO"),
            "{e}"
        );
    }

    #[test]
    fn display_brackets_v6() {
        assert_eq!(t("::1", 5).to_string(), "[::1]:5");
        assert_eq!(t("a.b", 5).to_string(), "a.b:5");
    }

    #[test]
    fn filter_by_family_dedups_and_maps() {
        let v4: SocketAddr = "127.0.0.1:5".parse().unwrap();
        let v6: SocketAddr = "[::1]:5".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5".parse().unwrap();
        let (kept, all) = filter_addrs([v4, v6, mapped, v6], Family::Any);
        assert_eq!(kept, vec![v4, v6]);
        assert_eq!(all, vec![v4, v6]);
        assert_eq!(filter_addrs([v4, v6], Family::V4).0, vec![v4]);
        assert_eq!(filter_addrs([v4, v6], Family::V6).0, vec![v6]);
        assert!(filter_addrs([v4], Family::V6).0.is_empty());
    }

    #[test]
    fn resolves_literals_without_lookup() {
        let a = resolve(&t("127.0.0.1", 9), Family::Any).unwrap();
        assert_eq!(a, vec!["127.0.0.1:9".parse().unwrap()]);
        let a = resolve(&t("::1", 9), Family::V6).unwrap();
        assert_eq!(a, vec!["[::1]:9".parse().unwrap()]);
        let e = resolve(&t("127.0.0.1", 9), Family::V6).unwrap_err();
        assert!(e.to_string().contains("IPv6"), "{e}");
    }

    #[test]
    fn plaintext_fields() {
        let dst: SocketAddr = "[::ffff:10.1.2.3]:9".parse().unwrap();
        let p = plaintext("hello", 77, false, Some("1.2.3.4".parse().unwrap()), dst);
        assert_eq!(p.version, 1);
        assert_eq!(p.cmd, CmdHash::of_name("hello"));
        assert_eq!(p.counter, 77);
        assert!(!p.strict);
        assert_eq!(p.src_ip, Some("1.2.3.4".parse().unwrap()));
        assert_eq!(p.dst_ip, Some("10.1.2.3".parse().unwrap()));
    }
}
