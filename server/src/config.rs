//! The server config file (`server.toml`): parsing, named defaults and validation.
//! It must never read key material or touch the network; it only describes what to load.

use ruroco_kit::duration::HumanDuration;
use ruroco_kit::trust::{Access, Kind, Owner, Rule, TrustError, Who};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the config lives unless `--config` says otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/ruroco/server.toml";
/// UDP address to bind when not socket-activated (dual-stack on Linux).
pub const DEFAULT_LISTEN: &str = "[::]:34020";
pub const DEFAULT_KEYS_DIR: &str = "/etc/ruroco/keys";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/ruroco";
pub const DEFAULT_COMMANDER_SOCKET: &str = "/run/ruroco/commander.sock";
pub const DEFAULT_USER: &str = "ruroco";
/// Only root may execute commands; other values exist for tests.
pub const DEFAULT_COMMANDER_UID: u32 = 0;
/// Counters further in the future than this are rejected (clients seed from their clock).
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(3600);
/// 4 MiB: a small buffer loses datagrams to scheduling hiccups under a flood.
pub const DEFAULT_RECEIVE_BUFFER: usize = 4 * 1024 * 1024;
pub const DEFAULT_PER_SOURCE: f64 = 2.0;
pub const DEFAULT_BURST: u32 = 5;
/// High on purpose: a low global cap lets a spoofed flood lock out every legitimate client.
pub const DEFAULT_GLOBAL: f64 = 100_000.0;
pub const DEFAULT_SOURCES: usize = 65_536;
/// The config file is small; anything bigger is not a config file.
pub const CONFIG_MAX_LEN: u64 = 1024 * 1024;

/// `server.toml`: root's to change, readable by the server user (it re-reads it on SIGHUP).
pub const CONFIG_RULE: Rule = Rule {
    what: "config",
    kind: Kind::File,
    owner: Owner::Root,
    forbidden: 0o022,
    need: Access::READ,
    fix_access: "chown root:{group} {path} && chmod 0640 {path}",
    create: None,
};
/// `keys_dir`: nobody but root may add, rename or remove a key; the server user lists it.
pub const KEYS_DIR_RULE: Rule = Rule {
    what: "keys_dir",
    kind: Kind::Dir,
    owner: Owner::Root,
    forbidden: 0o022,
    need: Access::LIST,
    fix_access: "chown root:{group} {path} && chmod 0750 {path}",
    create: Some("install -d -m 0750 -o root -g {group} {path}"),
};
/// `state_dir`: the server user writes the replay floors here; nobody else may change them.
pub const STATE_DIR_RULE: Rule = Rule {
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
pub const STATE_FILE_RULE: Rule = Rule {
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
pub const COMMANDER_SOCKET_RULE: Rule = Rule {
    what: "commander_socket",
    kind: Kind::Socket,
    owner: Owner::Any,
    forbidden: 0,
    need: Access::WRITE,
    fix_access: "let the commander's socket_group (commander.toml) be a group of {user}, or make {user} its server_user, and restart the commander",
    create: None,
};
/// The directory of `commander_socket`: the server user must reach the socket through it.
pub const SOCKET_DIR_RULE: Rule = Rule {
    what: "commander_socket's directory",
    kind: Kind::Dir,
    owner: Owner::Any,
    forbidden: 0,
    need: Access::SEARCH,
    fix_access: "chmod o+x {path}",
    create: None,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub ips: Vec<IpAddr>,
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default = "default_keys_dir")]
    pub keys_dir: PathBuf,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default = "default_commander_socket")]
    pub commander_socket: PathBuf,
    #[serde(default = "default_user")]
    pub user: String,
    #[serde(default = "default_commander_uid")]
    pub commander_uid: u32,
    #[serde(default = "default_max_clock_skew")]
    pub max_clock_skew: HumanDuration,
    #[serde(default)]
    pub max_age: Option<HumanDuration>,
    #[serde(default = "default_receive_buffer")]
    pub receive_buffer: usize,
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    #[serde(default)]
    pub keys: BTreeMap<String, KeyConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    #[serde(default = "default_per_source")]
    pub per_source: f64,
    #[serde(default = "default_burst")]
    pub burst: u32,
    #[serde(default = "default_global")]
    pub global: f64,
    #[serde(default = "default_sources")]
    pub sources: usize,
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
pub struct KeyConfig {
    /// Command names this key may run; absent means every command.
    pub commands: Option<Vec<String>>,
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

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: field `{field}`: {message}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Trust(#[from] TrustError),
}

impl Config {
    /// Read, parse and validate the config file at `path`. The file must be a regular file
    /// owned by root, not writable by group or others, without an extended ACL
    /// ([`CONFIG_RULE`], checked on the opened file).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        use std::io::Read;
        let read_err = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
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
            return Err(read_err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("larger than {CONFIG_MAX_LEN} bytes"),
            )));
        }
        Self::parse(&text, path)
    }

    /// The identity the server will use its files as: `user` (which must exist) with its
    /// groups when this process is root (it switches to `user` at start), else this process's
    /// own credentials (started as the user already, e.g. by systemd's `User=`).
    pub fn who(&self) -> Result<Who, TrustError> {
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
    pub fn check_paths(&self, path: &Path, who: &Who) -> Result<(), TrustError> {
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

    /// Parse and validate config text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            // toml's message spans several lines (with a caret diagram); keep it to one.
            message: e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, message: &str| ConfigError::Invalid {
            path: path.to_owned(),
            field,
            message: message.to_owned(),
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
                    return Err(ConfigError::Invalid {
                        path: path.to_owned(),
                        field: "keys.*.commands",
                        message: format!("[keys.{name}] lists an empty command name"),
                    });
                }
            }
        }
        Ok(())
    }

    /// The acceptance rules `shared::verdict::judge` applies.
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
        let e = parse("ips = [\"::1\"]\nmax_age = \"0s\"").unwrap_err();
        assert!(e.contains("`max_age`"), "{e}");
        let e = parse("ips = [\"::1\"]\nmax_clock_skew = \"0s\"").unwrap_err();
        assert!(e.contains("`max_clock_skew`"), "{e}");
    }
}
