//! The server config file (`server.toml`): parsing, named defaults and validation.
//! It must never read key material or touch the network; it only describes what to load.

use ruroco_kit::config_error::ConfigError;
use ruroco_kit::duration::HumanDuration;
use ruroco_kit::trust::{Access, Kind, Owner, Rule, TrustError, Who};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::ServerError;
use ruroco_proto::gate::Limits;

/// Where the config lives unless `--config` says otherwise.
pub(crate) const DEFAULT_CONFIG: &str = "/etc/ruroco/server.toml";
/// UDP address to bind when not socket-activated (dual-stack on Linux); `default_listen`
/// builds it without parsing.
#[cfg(test)]
pub(crate) const DEFAULT_LISTEN: &str = "[::]:34020";
pub(crate) const DEFAULT_KEYS_DIR: &str = "/etc/ruroco/keys";
pub(crate) const DEFAULT_STATE_DIR: &str = "/var/lib/ruroco";
pub(crate) const DEFAULT_COMMANDER_SOCKET: &str = "/run/ruroco/commander.sock";
pub(crate) const DEFAULT_USER: &str = "ruroco";
/// Only root may execute commands; other values exist for tests.
pub(crate) const DEFAULT_COMMANDER_UID: u32 = 0;
/// Counters further in the future than this are rejected (clients seed from their clock).
pub(crate) const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(3600);
/// 4 MiB: a small buffer loses datagrams to scheduling hiccups under a flood.
pub(crate) const DEFAULT_RECEIVE_BUFFER: usize = 4 * 1024 * 1024;
pub(crate) const DEFAULT_PER_SOURCE: f64 = 2.0;
pub(crate) const DEFAULT_BURST: u32 = 5;
/// High on purpose: a low global cap lets a spoofed flood lock out every legitimate client.
pub(crate) const DEFAULT_GLOBAL: f64 = 100_000.0;
pub(crate) const DEFAULT_SOURCES: usize = 65_536;
/// The config file is small; anything bigger is not a config file.
pub(crate) const CONFIG_MAX_LEN: u64 = 1024 * 1024;

/// `server.toml`: root's to change, readable by the server user (it re-reads it on SIGHUP).
pub(crate) const CONFIG_RULE: Rule = Rule {
    what: "config",
    kind: Kind::File,
    owner: Owner::Root,
    forbidden: 0o022,
    need: Access::READ,
    fix_access: "chown root:{group} {path} && chmod 0640 {path}",
    create: None,
};
/// `keys_dir`: nobody but root may add, rename or remove a key; the server user lists it.
pub(crate) const KEYS_DIR_RULE: Rule = Rule {
    what: "keys_dir",
    kind: Kind::Dir,
    owner: Owner::Root,
    forbidden: 0o022,
    need: Access::LIST,
    fix_access: "chown root:{group} {path} && chmod 0750 {path}",
    create: Some("install -d -m 0750 -o root -g {group} {path}"),
};
/// `state_dir`: the server user writes the replay floors here; nobody else may change them.
pub(crate) const STATE_DIR_RULE: Rule = Rule {
    what: "state_dir",
    kind: Kind::Dir,
    owner: Owner::RootOrUser,
    forbidden: 0o022,
    need: Access::MODIFY_DIR,
    fix_access: "chown {user}:{group} {path} && chmod 0700 {path}",
    create: Some("install -d -m 0700 -o {user} -g {group} {path}"),
};
/// A file the server reads and replaces inside `state_dir` (`replay`, the replay floors, and
/// `reload`, the reload record), when it exists: the server user's to read and write.
pub(crate) const STATE_FILE_RULE: Rule = Rule {
    what: "state file",
    kind: Kind::File,
    owner: Owner::RootOrUser,
    forbidden: 0o022,
    need: Access::READ_WRITE,
    fix_access: "chown {user}:{group} {path} && chmod 0600 {path}",
    create: None,
};
/// `commander_socket`, when it exists: the server user connects to it, which needs write
/// permission on the socket file (unix(7)).
pub(crate) const COMMANDER_SOCKET_RULE: Rule = Rule {
    what: "commander_socket",
    kind: Kind::Socket,
    owner: Owner::Any,
    forbidden: 0,
    need: Access::WRITE,
    fix_access: "let the commander's socket_group (commander.toml) be a group of {user}, or make {user} its server_user, and restart the commander",
    create: None,
};
/// The directory of `commander_socket`: the server user must reach the socket through it.
pub(crate) const SOCKET_DIR_RULE: Rule = Rule {
    what: "commander_socket's directory",
    kind: Kind::Dir,
    owner: Owner::Any,
    forbidden: 0,
    need: Access::SEARCH,
    fix_access: "chmod o+x {path}",
    create: None,
};

/// `server.toml`, parsed and validated (ruroco-server(8), CONFIGURATION).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub(crate) ips: Vec<IpAddr>,
    #[serde(default = "default_listen")]
    pub(crate) listen: SocketAddr,
    #[serde(default = "default_keys_dir")]
    pub(crate) keys_dir: PathBuf,
    #[serde(default = "default_state_dir")]
    pub(crate) state_dir: PathBuf,
    #[serde(default = "default_commander_socket")]
    pub(crate) commander_socket: PathBuf,
    #[serde(default = "default_user")]
    pub(crate) user: String,
    #[serde(default = "default_commander_uid")]
    pub(crate) commander_uid: u32,
    #[serde(default = "default_max_clock_skew")]
    pub(crate) max_clock_skew: HumanDuration,
    #[serde(default)]
    pub(crate) max_age: Option<HumanDuration>,
    #[serde(default = "default_receive_buffer")]
    pub(crate) receive_buffer: usize,
    #[serde(default)]
    pub(crate) rate_limit: RateLimitConfig,
    #[serde(default)]
    pub(crate) keys: BTreeMap<String, KeyConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateLimitConfig {
    #[serde(default = "default_per_source")]
    pub(crate) per_source: f64,
    #[serde(default = "default_burst")]
    pub(crate) burst: u32,
    #[serde(default = "default_global")]
    pub(crate) global: f64,
    #[serde(default = "default_sources")]
    pub(crate) sources: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_source: DEFAULT_PER_SOURCE,
            burst: DEFAULT_BURST,
            global: DEFAULT_GLOBAL,
            sources: DEFAULT_SOURCES,
        }
    }
}

/// Per-key settings, `[keys.<file stem>]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyConfig {
    /// Command names this key may run; absent means every command.
    pub(crate) commands: Option<Vec<String>>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 34020))
}
fn default_keys_dir() -> PathBuf {
    PathBuf::from(DEFAULT_KEYS_DIR)
}
fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}
fn default_commander_socket() -> PathBuf {
    PathBuf::from(DEFAULT_COMMANDER_SOCKET)
}
fn default_user() -> String {
    DEFAULT_USER.to_owned()
}
fn default_commander_uid() -> u32 {
    DEFAULT_COMMANDER_UID
}
fn default_max_clock_skew() -> HumanDuration {
    HumanDuration(DEFAULT_MAX_CLOCK_SKEW)
}
fn default_receive_buffer() -> usize {
    DEFAULT_RECEIVE_BUFFER
}
fn default_per_source() -> f64 {
    DEFAULT_PER_SOURCE
}
fn default_burst() -> u32 {
    DEFAULT_BURST
}
fn default_global() -> f64 {
    DEFAULT_GLOBAL
}
fn default_sources() -> usize {
    DEFAULT_SOURCES
}

impl Config {
    /// Read, parse and validate the config file at `path`. The file must be a regular file
    /// owned by root, not writable by group or others, without an extended ACL
    /// ([`CONFIG_RULE`], checked on the opened file): a [`ServerError::Trust`] when it is
    /// not, a [`ServerError::Config`] when it cannot be read or is not a valid config.
    pub(crate) fn load(path: &Path) -> Result<Self, ServerError> {
        use std::io::Read;
        let read_err = |source| ConfigError::read(path, source);
        // By path first when it exists (no symlink, the directories above), so a reload
        // reaches the verdict of the start; a missing file gets the read error below.
        if std::fs::symlink_metadata(path).is_ok() {
            CONFIG_RULE.check_path(path, &Who::current())?;
        }
        let file = std::fs::File::open(path).map_err(read_err)?;
        CONFIG_RULE.check_file(path, &file, &Who::current())?;
        let mut text = String::new();
        file.take(CONFIG_MAX_LEN + 1)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        if text.len() as u64 > CONFIG_MAX_LEN {
            return Err(ServerError::from(read_err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("larger than {CONFIG_MAX_LEN} bytes"),
            ))));
        }
        Ok(Self::parse(&text, path)?)
    }

    /// The identity the server will use its files as: `user` (which must exist) with its
    /// groups when this process is root (it switches to `user` at start), else this process's
    /// own credentials (started as the user already, e.g. by systemd's `User=`).
    pub(crate) fn who(&self) -> Result<Who, TrustError> {
        let user = Who::user(&self.user, "user")?;
        Ok(if nix::unistd::geteuid().is_root() {
            user
        } else {
            Who::current()
        })
    }

    /// Check every path the server trusts except the key files (see `keys::KeySet::load_for`)
    /// as `who` will see it: the config file at `path`, `keys_dir`, `state_dir` (and the files
    /// `replay` and `reload` in it, when they exist: [`STATE_FILE_RULE`]) and the
    /// directory of `commander_socket` (which may not exist yet: the commander creates it).
    pub(crate) fn check_paths(&self, path: &Path, who: &Who) -> Result<(), TrustError> {
        CONFIG_RULE.check_path(path, who)?;
        KEYS_DIR_RULE.check_path(&self.keys_dir, who)?;
        STATE_DIR_RULE.check_path(&self.state_dir, who)?;
        for name in [crate::replay::STATE_FILE, crate::reload::OUTCOME_FILE] {
            let file = self.state_dir.join(name);
            if file.symlink_metadata().is_ok() {
                STATE_FILE_RULE.check_path(&file, who)?;
            }
        }
        if let Some(dir) = self.commander_socket.parent().filter(|d| d.exists()) {
            SOCKET_DIR_RULE.check_path(dir, who)?;
        }
        if self.commander_socket.symlink_metadata().is_ok() {
            COMMANDER_SOCKET_RULE.check_path(&self.commander_socket, who)?;
        }
        Ok(())
    }

    /// Parse and validate config text; `path` only names the file in errors. A TOML or type
    /// error keeps the parser's position (line, column and the line's text for `--check`).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|mut e| {
            let span = e.span();
            // Without the input, toml renders the message and the field's dotted name (`in
            // `max_age``) instead of its own caret diagram: the position is ours to render.
            e.set_input(None);
            // The journal gets one line, whatever the parser's message holds.
            let message = e.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
            ConfigError::syntax(path, text, &message, span)
        })?;
        cfg.validate(path, text)?;
        Ok(cfg)
    }

    /// Refuse values the types allow but the server cannot use; the error is placed on the
    /// field in `text` when the file sets it.
    fn validate(&self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: &str| {
            // The server's field names are fixed: a dot only separates keys.
            let keys: Vec<&str> = field.split('.').collect();
            ConfigError::invalid_in(path, text, &keys, message)
        };
        if self.ips.is_empty() {
            return Err(invalid(
                "ips",
                "must list at least one address clients send to, e.g. ips = [\"192.0.2.1\"]",
            ));
        }
        if self.ips.iter().any(|ip| ip.is_unspecified()) {
            return Err(invalid(
                "ips",
                "an unspecified address (0.0.0.0 or ::) is not an address clients send to",
            ));
        }
        if self.user.is_empty() || self.user == "root" {
            return Err(invalid(
                "user",
                "must name an unprivileged user (e.g. \"ruroco\"), never root",
            ));
        }
        if self.max_clock_skew.0 < std::time::Duration::from_secs(1) {
            return Err(invalid(
                "max_clock_skew",
                "must be at least 1s (timestamps are compared in seconds; 0s rejects every datagram): leave it out for the default \"1h\"",
            ));
        }
        if self
            .max_age
            .is_some_and(|d| d.0 < std::time::Duration::from_secs(1))
        {
            return Err(invalid(
                "max_age",
                "must be at least 1s (ages are counted in seconds; 0s rejects every datagram): e.g. \"10m\", or leave it out",
            ));
        }
        let rl = &self.rate_limit;
        if !(rl.per_source.is_finite() && rl.per_source > 0.0) {
            return Err(invalid(
                "rate_limit.per_source",
                "must be a positive number",
            ));
        }
        if !(rl.global.is_finite() && rl.global > 0.0) {
            return Err(invalid("rate_limit.global", "must be a positive number"));
        }
        if rl.burst == 0 {
            return Err(invalid("rate_limit.burst", "must be at least 1"));
        }
        if rl.sources == 0 || rl.sources > 16 * 1024 * 1024 {
            return Err(invalid(
                "rate_limit.sources",
                "must be between 1 and 16777216",
            ));
        }
        if self.receive_buffer == 0 || self.receive_buffer > i32::MAX as usize / 2 {
            return Err(invalid(
                "receive_buffer",
                "must be between 1 and 1073741823 bytes",
            ));
        }
        for (name, k) in &self.keys {
            if let Some(cmds) = &k.commands {
                if cmds.iter().any(|c| c.is_empty()) {
                    return Err(invalid(
                        "keys.*.commands",
                        &format!("[keys.{name}] lists an empty command name"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The rate limits the gate applies (`[rate_limit]`).
    pub fn limits(&self) -> Limits {
        let rl = &self.rate_limit;
        Limits {
            per_source: rl.per_source,
            burst: rl.burst,
            global: rl.global,
            sources: rl.sources,
        }
    }

    /// The acceptance rules the gate applies.
    pub fn policy(&self) -> ruroco_proto::Policy {
        ruroco_proto::Policy {
            ips: self
                .ips
                .iter()
                .map(|ip| ruroco_proto::ip::canonical(*ip))
                .collect(),
            max_clock_skew_ns: self.max_clock_skew.0.as_nanos(),
            max_age_ns: self.max_age.map(|d| d.0.as_nanos()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, String> {
        Config::parse(s, Path::new("server.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse("ips = [\"127.0.0.1\", \"::1\"]").unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(c.keys_dir, PathBuf::from(DEFAULT_KEYS_DIR));
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(c.commander_socket, PathBuf::from(DEFAULT_COMMANDER_SOCKET));
        assert_eq!(c.user, DEFAULT_USER);
        assert_eq!(c.commander_uid, 0);
        assert_eq!(c.max_clock_skew.0, DEFAULT_MAX_CLOCK_SKEW);
        assert_eq!(c.max_age, None);
        assert_eq!(c.receive_buffer, DEFAULT_RECEIVE_BUFFER);
        assert_eq!(c.rate_limit, RateLimitConfig::default());
        assert!(c.keys.is_empty());
    }

    #[test]
    fn full_config_parses() {
        let c = parse(
            r#"
ips = ["192.0.2.1"]
listen = "127.0.0.1:9"
max_clock_skew = "5m"
max_age = "10m"
[rate_limit]
per_source = 1.5
burst = 3
global = 10
sources = 16
[keys.laptop]
commands = ["open_ssh", "hello"]
"#,
        )
        .unwrap();
        assert_eq!(c.max_age.map(|d| d.0), Some(Duration::from_secs(600)));
        assert_eq!(c.rate_limit.burst, 3);
        assert_eq!(
            c.keys["laptop"].commands.as_deref(),
            Some(&["open_ssh".to_owned(), "hello".to_owned()][..])
        );
        assert_eq!(c.policy().max_age_ns, Some(600_000_000_000));
    }

    #[test]
    fn a_type_error_keeps_its_position_for_check() {
        let text = "ips = [\"::1\"]\nreceive_buffer = \"big\"\n";
        let e = Config::parse(text, Path::new("/etc/ruroco/server.toml")).unwrap_err();
        let one_line = e.to_string();
        assert!(
            one_line.starts_with("config /etc/ruroco/server.toml:2:18: ")
                && one_line.contains("receive_buffer")
                && !one_line.contains('\n'),
            "{one_line}"
        );
        assert_eq!(
            e.render().lines().skip(1).collect::<Vec<_>>(),
            ["  2 | receive_buffer = \"big\"", "    |                  ^^^^^"]
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse("ips = [\"127.0.0.1\"]\nlisten_addr = \"x\"").unwrap_err();
        assert!(e.contains("listen_addr") && !e.contains('\n'), "{e}");
        let e = parse("ips = [\"127.0.0.300\"]").unwrap_err();
        assert!(e.contains("ips") || e.contains("IP"), "{e}");
        let e = parse("ips = []").unwrap_err();
        assert!(e.contains("`ips`"), "{e}");
        let e = parse("listen = \"[::]:1\"").unwrap_err();
        assert!(e.contains("ips"), "{e}");
        let e = parse("ips = [\"::1\"]\nuser = \"root\"").unwrap_err();
        assert!(e.contains("`user`"), "{e}");
        let e = parse("ips = [\"::1\"]\n[rate_limit]\nburst = 0").unwrap_err();
        assert!(e.contains("rate_limit.burst"), "{e}");
        let e = parse("ips = [\"::1\"]\nmax_age = \"ten\"").unwrap_err();
        assert!(e.contains("max_age"), "{e}");
        assert!(e.starts_with("config server.toml:2:11: "), "{e}");
        let e = parse("ips = [\"::1\"]\nmax_age = \"0s\"").unwrap_err();
        assert!(e.contains("`max_age`"), "{e}");
        let e = parse("ips = [\"::1\"]\nmax_clock_skew = \"0s\"").unwrap_err();
        assert!(e.contains("`max_clock_skew`"), "{e}");
    }
}
