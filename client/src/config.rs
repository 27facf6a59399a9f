//! The client's profiles: `$XDG_CONFIG_HOME/ruroco/client.toml` (or `--config FILE`) names
//! servers with their address, key file, command and options. Only reads and checks the file;
//! never sends, never touches the state directory.

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Read};
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ruroco_kit::config_error::Location;
use ruroco_kit::duration::HumanDuration;

use crate::send::{self, AddrSpec, Family};

/// Name of the config file inside `$XDG_CONFIG_HOME/ruroco`.
pub const CONFIG_FILE: &str = "client.toml";
/// A profile file is a few hundred bytes; anything this large is not one and is not read.
const MAX_CONFIG_BYTES: u64 = 256 * 1024;
/// Longest `wait_timeout` accepted: past this a person has long given up.
pub const MAX_WAIT_TIMEOUT: Duration = Duration::from_secs(600);

/// What is wrong with the config file; every message names the file and says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no config file: neither XDG_CONFIG_HOME nor HOME is set to an absolute path; pass --config FILE"
    )]
    NoConfigDir,
    #[error(
        "config file {path} does not exist: create it with a [servers.NAME] table (see `man ruroco-client`), or pass --config FILE"
    )]
    Missing { path: PathBuf },
    #[error("config file {path}: cannot read: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("config file {path}: {detail}")]
    Unsafe { path: PathBuf, detail: String },
    /// Not TOML, or a value of the wrong type or an unknown field, where the TOML parser
    /// points: the daemons' config error (`config PATH:LINE:COLUMN: message`, one line).
    #[error(transparent)]
    Parse(ruroco_kit::config_error::ConfigError),
    // A profile name may hold control characters (a quoted TOML key): escaped, so one line.
    #[error("config file {path}: [servers.{}] {field}: {message}", .profile.escape_debug())]
    Invalid {
        path: PathBuf,
        profile: String,
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    UnknownProfile(String),
}

/// `client.toml` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    servers: BTreeMap<String, RawProfile>,
}

/// One `[servers.NAME]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    #[serde(default, deserialize_with = "one_or_many")]
    address: Vec<String>,
    port: Option<u16>,
    key: Option<PathBuf>,
    command: Option<String>,
    family: Option<RawFamily>,
    permissive: Option<bool>,
    ip: Option<IpAddr>,
    delay: Option<HumanDuration>,
    wait: Option<u16>,
    wait_timeout: Option<HumanDuration>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawFamily {
    Any,
    Ipv4,
    Ipv6,
}

/// `address = "host"` or `address = ["host", "host2:1234"]`.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a \"HOST[:PORT]\" string or a list of them")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![v.to_owned()])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                out.push(s);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

/// A checked profile: every value valid, the key path absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    /// The addresses as written; a port written in `address` wins over `port`.
    pub address: Vec<AddrSpec>,
    /// The profile's `port`: the server port of addresses that name none.
    pub port: Option<u16>,
    pub key: Option<PathBuf>,
    /// True when `key` was written relative to the config's directory.
    pub key_relative: bool,
    pub command: Option<String>,
    pub family: Option<Family>,
    pub permissive: Option<bool>,
    pub ip: Option<IpAddr>,
    pub delay: Option<Duration>,
    pub wait: Option<u16>,
    pub wait_timeout: Option<Duration>,
}

impl Profile {
    /// Where each address goes: its own port, else the profile's `port`, else the default.
    #[cfg(test)]
    pub fn targets(&self) -> Vec<send::Target> {
        let port = self.port.unwrap_or(send::DEFAULT_PORT);
        self.address
            .iter()
            .map(|a| a.with_default_port(port))
            .collect()
    }
}

/// The loaded config file (possibly absent, when it was not asked for by name).
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    /// False when the default file does not exist (no profiles).
    pub exists: bool,
    pub profiles: BTreeMap<String, Profile>,
}

/// Where the config lives: `--config`, else `$XDG_CONFIG_HOME/ruroco/client.toml`, else
/// `$HOME/.config/ruroco/client.toml`. Relative XDG/HOME values are ignored, as the XDG spec asks.
pub fn config_path(
    cli: Option<&Path>,
    xdg_config_home: Option<&str>,
    home: Option<&str>,
) -> Result<PathBuf, ConfigError> {
    if let Some(p) = cli {
        return Ok(p.to_owned());
    }
    fn abs(v: Option<&str>) -> Option<&Path> {
        v.map(Path::new).filter(|p| p.is_absolute())
    }
    if let Some(x) = abs(xdg_config_home) {
        return Ok(x.join("ruroco").join(CONFIG_FILE));
    }
    if let Some(h) = abs(home) {
        return Ok(h.join(".config/ruroco").join(CONFIG_FILE));
    }
    Err(ConfigError::NoConfigDir)
}

impl Config {
    /// Load the config named on the command line (which must exist) or the default one (which
    /// may be absent: then there are no profiles). `home` expands a leading `~/` in key paths.
    pub fn load(
        cli: Option<&Path>,
        xdg_config_home: Option<&str>,
        home: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let path = config_path(cli, xdg_config_home, home)?;
        // A relative --config: anchor it (and the key paths relative to it) at the current
        // directory, so `list` shows where the files really are.
        let path = if path.is_relative() {
            std::path::absolute(&path).unwrap_or(path)
        } else {
            path
        };
        let text = match read_checked(&path) {
            Ok(t) => t,
            Err(ConfigError::Missing { .. }) if cli.is_none() => {
                return Ok(Self {
                    path,
                    exists: false,
                    profiles: BTreeMap::new(),
                });
            }
            Err(e) => return Err(e),
        };
        Self::parse(&text, &path, home)
    }

    /// Load from the process environment.
    pub fn from_env(cli: Option<&Path>) -> Result<Self, ConfigError> {
        let xdg = std::env::var("XDG_CONFIG_HOME").ok();
        let home = std::env::var("HOME").ok();
        Self::load(cli, xdg.as_deref(), home.as_deref())
    }

    /// Parse and check the text of `path`.
    pub fn parse(text: &str, path: &Path, home: Option<&str>) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            // toml names unknown fields but not the field whose value is wrong: take it from
            // the line the error points at.
            let line = e
                .span()
                .and_then(|span| Location::of_span(text, span))
                .map(|at| at.text)
                .unwrap_or_default();
            let key = line
                .split_once('=')
                .map(|(k, _)| k.trim())
                .filter(|k| !k.is_empty() && !e.message().contains(&format!("`{k}`")));
            let message = parse_message(e.message());
            let message = match key {
                Some(k) => format!("{k}: {message}"),
                None => message,
            };
            // Without a usable span the error is placed at the start of the file.
            ConfigError::Parse(ruroco_kit::config_error::ConfigError::syntax(
                path,
                text,
                &message,
                Some(e.span().unwrap_or(0..0)),
            ))
        })?;
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let mut profiles = BTreeMap::new();
        for (name, r) in raw.servers {
            let p = check_profile(&name, r, &base, home).map_err(|(field, message)| {
                ConfigError::Invalid {
                    path: path.to_owned(),
                    profile: name.clone(),
                    field,
                    message,
                }
            })?;
            profiles.insert(name, p);
        }
        Ok(Self {
            path: path.to_owned(),
            exists: true,
            profiles,
        })
    }

    /// The profile called `name`, or an error listing the known ones.
    pub fn profile(&self, name: &str) -> Result<&Profile, ConfigError> {
        if let Some(p) = self.profiles.get(name) {
            return Ok(p);
        }
        let path = self.path.display();
        let msg = if !self.exists {
            format!(
                "no profile {name:?}: config file {path} does not exist; create it with a [servers.{name}] table, or give -a HOST and -k KEYFILE"
            )
        } else if self.profiles.is_empty() {
            format!(
                "no profile {name:?}: {path} defines none; add a [servers.{name}] table, or give -a HOST and -k KEYFILE"
            )
        } else {
            let known: Vec<&str> = self.profiles.keys().map(String::as_str).collect();
            format!(
                "no profile {name:?} in {path}; known profiles: {} (`ruroco-client list` shows them)",
                known.join(", ")
            )
        };
        Err(ConfigError::UnknownProfile(msg))
    }
}

/// toml's message, on one line (it may span several).
fn parse_message(m: &str) -> String {
    let one = m.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.starts_with("unknown field") {
        format!("{one} (remove or rename it)")
    } else {
        one
    }
}

/// Read the file if it is ours (or root's) and nobody else may write it: a config that
/// others can change could point us at their key or server.
fn read_checked(path: &Path) -> Result<String, ConfigError> {
    // O_NONBLOCK: a FIFO here would otherwise hang open() until someone writes to it.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                ConfigError::Missing {
                    path: path.to_owned(),
                }
            } else {
                ConfigError::Read {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
    let read_err = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = file.metadata().map_err(read_err)?;
    let unsafe_ = |detail: String| ConfigError::Unsafe {
        path: path.to_owned(),
        detail,
    };
    if !meta.is_file() {
        return Err(unsafe_(format!(
            "is not a regular file (it is {}): pass --config FILE with the profile file",
            crate::send::file_kind(&meta)
        )));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(unsafe_(foreign_owner(path, meta.uid(), me)));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_(format!(
            "writable by group or others (mode {:04o}): chmod go-w {}",
            meta.mode() & 0o7777,
            path.display()
        )));
    }
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(unsafe_(format!("larger than {MAX_CONFIG_BYTES} bytes")));
    }
    Ok(text)
}

/// Why a config file of uid `owner` is not trusted by uid `me`, and what to do instead: not
/// `chown`, which would take another user's file (and which only root may do anyway).
fn foreign_owner(path: &Path, owner: u32, me: u32) -> String {
    let fix = "run ruroco-client as that user, or pass --config FILE with a file of yours";
    match std::fs::read_link(path) {
        Ok(target) => format!(
            "is a symbolic link to {}, which belongs to uid {owner}, not to you (uid {me}): \
point the link at a file of yours, or {fix}",
            target.display()
        ),
        Err(_) => format!("belongs to uid {owner}, not to you (uid {me}): {fix}"),
    }
}

type FieldError = (&'static str, String);

fn check_profile(
    name: &str,
    r: RawProfile,
    base: &Path,
    home: Option<&str>,
) -> Result<Profile, FieldError> {
    if name.is_empty() || name.starts_with('-') {
        return Err((
            "name",
            "a profile name must be non-empty and not start with '-': rename the table".to_owned(),
        ));
    }
    if r.port == Some(0) {
        return Err(("port", "must be from 1 to 65535".to_owned()));
    }
    let address = r
        .address
        .iter()
        .map(|a| send::parse_spec(a))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ("address", e.to_string()))?;
    if r.port.is_some() && address.is_empty() {
        return Err((
            "port",
            "given without an address: add address = \"HOST\"".to_owned(),
        ));
    }
    let (key, key_relative) = match r.key {
        None => (None, false),
        Some(k) if k.as_os_str().is_empty() => {
            return Err(("key", "is empty: give the key file's path".to_owned()));
        }
        Some(k) if k.as_os_str().as_encoded_bytes().starts_with(b"~") && !k.starts_with("~") => {
            return Err((
                "key",
                format!(
                    "{}: only a leading ~/ is expanded (not ~user): write the full path",
                    k.display()
                ),
            ));
        }
        Some(k) if k.strip_prefix("~").is_ok_and(|r| r.as_os_str().is_empty()) => {
            return Err((
                "key",
                format!(
                    "{:?} is the home directory, not a key file: write ~/PATH/TO/FILE.key",
                    k.display().to_string()
                ),
            ));
        }
        Some(k) => {
            let home_rel = k.strip_prefix("~").ok().map(Path::to_owned);
            match (home_rel, home.map(Path::new).filter(|h| h.is_absolute())) {
                (Some(rest), Some(h)) => (Some(h.join(rest)), false),
                (Some(_), None) => {
                    return Err((
                        "key",
                        "starts with ~ but HOME is not set: write the full path".to_owned(),
                    ));
                }
                (None, _) if k.is_absolute() => (Some(k), false),
                (None, _) => (Some(base.join(k)), true),
            }
        }
    };
    if let Some(c) = &r.command {
        if c.is_empty() {
            return Err((
                "command",
                "is empty: give the name of a command configured on the server".to_owned(),
            ));
        }
    }
    if let Some(ip) = r.ip {
        if ip.to_canonical().is_unspecified() {
            return Err((
                "ip",
                format!(
                    "{ip} is the unspecified address, not a client IP: remove it or give your address"
                ),
            ));
        }
    }
    if r.wait == Some(0) {
        return Err(("wait", "must be a TCP port from 1 to 65535".to_owned()));
    }
    let wait_timeout = r.wait_timeout.map(|d| d.0);
    if let Some(t) = wait_timeout {
        if t.is_zero() || t > MAX_WAIT_TIMEOUT {
            return Err((
                "wait_timeout",
                format!(
                    "must be more than 0 and at most {}s, e.g. \"5s\"",
                    MAX_WAIT_TIMEOUT.as_secs()
                ),
            ));
        }
    }
    let delay = r.delay.map(|d| d.0);
    if let Some(d) = delay {
        if d > crate::cli::MAX_DELAY {
            return Err((
                "delay",
                format!(
                    "must be at most {}s, e.g. \"50ms\"",
                    crate::cli::MAX_DELAY.as_secs()
                ),
            ));
        }
    }
    Ok(Profile {
        name: name.to_owned(),
        address,
        port: r.port,
        key,
        key_relative,
        command: r.command,
        family: r.family.map(|f| match f {
            RawFamily::Any => Family::Any,
            RawFamily::Ipv4 => Family::V4,
            RawFamily::Ipv6 => Family::V6,
        }),
        permissive: r.permissive,
        ip: r.ip.map(|ip| ip.to_canonical()),
        delay,
        wait: r.wait,
        wait_timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/cfg/ruroco/client.toml"), Some("/home/u"))
    }

    #[test]
    fn full_profile() {
        let c = parse(
            r#"
[servers.home]
address = ["home.example.org", "[2001:db8::1]:99"]
port = 4000
key = "keys/home.key"
command = "open_ssh"
family = "ipv6"
permissive = true
ip = "203.0.113.7"
delay = "10ms"
wait = 22
wait_timeout = "3s"

[servers.work]
address = "10.0.0.1"
key = "/abs/work.key"

[servers.tilde]
key = "~/k.key"
"#,
        )
        .unwrap();
        let h = c.profile("home").unwrap();
        assert_eq!(h.targets()[0].to_string(), "home.example.org:4000");
        assert_eq!(h.targets()[1].to_string(), "[2001:db8::1]:99");
        assert_eq!(h.key, Some(PathBuf::from("/cfg/ruroco/keys/home.key")));
        assert!(h.key_relative);
        assert_eq!(h.command.as_deref(), Some("open_ssh"));
        assert_eq!(h.family, Some(Family::V6));
        assert_eq!(h.permissive, Some(true));
        assert_eq!(h.ip, Some("203.0.113.7".parse().unwrap()));
        assert_eq!(h.delay, Some(Duration::from_millis(10)));
        assert_eq!(h.wait, Some(22));
        assert_eq!(h.wait_timeout, Some(Duration::from_secs(3)));
        let w = c.profile("work").unwrap();
        assert_eq!(w.targets()[0].to_string(), "10.0.0.1:34020");
        assert_eq!(w.key, Some(PathBuf::from("/abs/work.key")));
        assert!(!w.key_relative);
        assert_eq!(w.command, None);
        let t = c.profile("tilde").unwrap();
        assert_eq!(t.key, Some(PathBuf::from("/home/u/k.key")));
    }

    #[test]
    fn unknown_profile_lists_the_known_ones() {
        let c = parse("[servers.a]\n[servers.b]\n").unwrap();
        let e = c.profile("c").unwrap_err().to_string();
        assert!(e.contains("\"c\"") && e.contains("a, b"), "{e}");
        let empty = parse("").unwrap();
        let e = empty.profile("c").unwrap_err().to_string();
        assert!(e.contains("[servers.c]"), "{e}");
    }

    #[test]
    fn errors_name_file_line_field_and_fix() {
        let cases: &[(&str, &[&str])] = &[
            (
                "[servers.a]\nadress = \"x\"\n",
                &["client.toml:2:", "adress", "expected one of", "address"],
            ),
            ("[server.a]\n", &["client.toml:1:", "server", "servers"]),
            ("[servers.a]\nport = \"x\"\n", &["client.toml:2:", "port"]),
            (
                "[servers.a]\nfamily = \"v4\"\n",
                &["client.toml:2:", "ipv4"],
            ),
            (
                "[servers.a]\naddress = \"h:0\"\n",
                &["[servers.a] address", "1 to 65535"],
            ),
            (
                "[servers.a]\nip = \"::\"\n",
                &["[servers.a] ip", "unspecified"],
            ),
            (
                "[servers.a]\ndelay = \"5\"\n",
                &["client.toml:2:", "delay", "\"500ms\""],
            ),
            (
                "[servers.a]\nwait_timeout = \"0s\"\n",
                &["[servers.a] wait_timeout", "5s"],
            ),
            ("[servers.a]\ncommand = \"\"\n", &["[servers.a] command"]),
            ("[servers.a]\nwait = 0\n", &["[servers.a] wait"]),
            ("[servers.a]\nport = 5\n", &["[servers.a] port", "address"]),
            (
                "[servers.a]\naddress = 5\n",
                &["client.toml:2:", "HOST[:PORT]"],
            ),
            (
                "[servers.a]\naddress = \"http://h.example:80\"\n",
                &["[servers.a] address", "HOST:PORT", "without a scheme"],
            ),
            (
                "[servers.a]\naddress = [\"ok.example\", \"user@h\"]\n",
                &["[servers.a] address", "\"user@h\""],
            ),
            (
                "[servers.a]\nkey = \"~\"\n",
                &["[servers.a] key", "home directory, not a key file"],
            ),
            (
                "[servers.a]\nkey = \"~/\"\n",
                &["[servers.a] key", "not a key file"],
            ),
            (
                "[servers.a]\nkey = \"~bob/k.key\"\n",
                &["[servers.a] key", "only a leading ~/ is expanded"],
            ),
        ];
        for (text, needles) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(!e.contains('\n'), "not one line: {e}");
            assert!(e.contains("/cfg/ruroco/client.toml"), "{e}");
            for n in *needles {
                assert!(e.contains(n), "{n:?} not in {e:?} for {text:?}");
            }
        }
    }

    #[test]
    fn a_parse_error_keeps_the_position_toml_reports() {
        let e = parse("[servers.a]\nport = \"x\"\n").unwrap_err();
        let ConfigError::Parse(kit) = &e else {
            panic!("not a parse error: {e}");
        };
        let at = kit.location.as_ref().unwrap();
        assert_eq!((at.line, at.column), (2, 8), "{at:?}");
        assert_eq!((at.text.as_str(), at.width), ("port = \"x\"", 3));
        assert!(e.to_string().contains("client.toml:2:8: port: "), "{e}");
    }

    #[test]
    fn path_precedence() {
        let p = config_path(Some(Path::new("/x.toml")), Some("/xdg"), Some("/h")).unwrap();
        assert_eq!(p, PathBuf::from("/x.toml"));
        let p = config_path(None, Some("/xdg"), Some("/h")).unwrap();
        assert_eq!(p, PathBuf::from("/xdg/ruroco/client.toml"));
        let p = config_path(None, Some("rel"), Some("/h")).unwrap();
        assert_eq!(p, PathBuf::from("/h/.config/ruroco/client.toml"));
        assert!(config_path(None, None, None).is_err());
    }

    #[test]
    fn default_file_may_be_absent_but_a_named_one_may_not() {
        let dir = tempfile::tempdir().unwrap();
        let xdg = dir.path().to_str().unwrap();
        let c = Config::load(None, Some(xdg), None).unwrap();
        assert!(!c.exists && c.profiles.is_empty());
        let missing = dir.path().join("nope.toml");
        let e = Config::load(Some(&missing), None, None).unwrap_err();
        assert!(matches!(e, ConfigError::Missing { .. }), "{e}");
    }

    #[test]
    fn writable_config_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("client.toml");
        std::fs::write(&p, "[servers.a]\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o664)).unwrap();
        let e = Config::load(Some(&p), None, None).unwrap_err().to_string();
        assert!(e.contains("chmod go-w"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            Config::load(Some(&p), None, None)
                .unwrap()
                .profiles
                .contains_key("a")
        );
    }
}
