//! The commander's configuration: `commander.toml` parsed strictly (unknown fields are errors),
//! checked for root ownership and safe permissions, and turned into a hash -> command table.
//! It must never accept a file others could have written, nor guess at a malformed command.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ruroco_kit::config_error::ConfigError;
use ruroco_kit::duration::HumanDuration;
use ruroco_kit::trust::{Access, Kind, Owner, Rule, Who};
use ruroco_proto::CmdHash;

use crate::error::Error;
use crate::exec::RunAs;
use crate::schedule::{
    MAX_COMMAND_NAME_BYTES, MAX_GRANTS_HARD, MAX_UNDO_AFTER, MAX_UNDO_TEXT_BYTES,
};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// Where the config lives unless `--config` says otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/ruroco/commander.toml";
/// A config larger than this is refused rather than parsed (it holds a handful of commands).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

const DEFAULT_SERVER_USER: &str = "ruroco";
const DEFAULT_SOCKET: &str = "/run/ruroco/commander.sock";
/// The root-only control socket of `ruroco-commander grants` / `revoke`.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/ruroco-commander/control.sock";
/// Grants (commands with an undo, per IP) at once, in total and per command (docs/grants.md).
const DEFAULT_MAX_GRANTS: usize = 1024;
const DEFAULT_MAX_GRANTS_PER_COMMAND: usize = 256;
const DEFAULT_SOCKET_GROUP: &str = "ruroco";
const DEFAULT_STATE_DIR: &str = "/var/lib/ruroco-commander";
const DEFAULT_MAX_PARALLEL: usize = 4;
const DEFAULT_QUEUE: usize = 64;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// `commander.toml`: its commands are root's alone to change and to read.
pub const CONFIG_RULE: Rule = Rule {
    what: "config",
    kind: Kind::File,
    owner: Owner::Root,
    forbidden: 0o077,
    need: Access::READ,
    fix_access: "chown root:root {path} && chmod 0600 {path}",
    create: None,
};
/// `state_dir` (the grants): root's alone to change.
pub const STATE_DIR_RULE: Rule = Rule {
    what: "state_dir",
    kind: Kind::Dir,
    owner: Owner::Root,
    forbidden: 0o022,
    need: Access::MODIFY_DIR,
    fix_access: "chown root:root {path} && chmod 0700 {path}",
    create: None,
};
/// `<state_dir>/grants`, the grant records: root's alone to change, as `state_dir`.
pub const GRANTS_DIR_RULE: Rule = Rule {
    what: "grants directory",
    ..STATE_DIR_RULE
};
/// Upper bounds that keep a typo from turning into unbounded concurrency or memory.
const MAX_MAX_PARALLEL: usize = 1024;
const MAX_QUEUE: usize = 65536;

/// One configured command, with its limits and optional undo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Its key in `[commands]`, at most `MAX_COMMAND_NAME_BYTES` (256) bytes; the client names
    /// it, the frame carries its hash (`CmdHash::of_name`).
    pub name: String,
    /// The shell text run as `/bin/sh -c TEXT` (never empty).
    pub run: String,
    /// How long a run may take before its process group is killed; its own `timeout`, else
    /// `default_timeout`; never zero.
    pub timeout: Duration,
    /// What undoes the command and when (docs/grants.md); `None`: the command makes no grant.
    pub undo: Option<Undo>,
    /// Grants of this command at once (commands with an undo only).
    pub max_grants: usize,
    /// `user` (and `group`), resolved when the config is loaded; `None` runs it as root.
    pub(crate) run_as: Option<Arc<RunAs>>,
}

/// A command's undo: the grant it makes is undone this long after its last run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undo {
    /// The shell text of the undo (never empty, at most `MAX_UNDO_TEXT_BYTES`, 8 KiB).
    pub run: String,
    /// `undo_after`: longer than zero, at most 366 days.
    pub after: Duration,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (named in errors and logs).
    pub path: PathBuf,
    /// The user ruroco-server runs as: only its uid may send frames (SO_PEERCRED).
    pub server_user: String,
    /// The frame socket (absolute path), unless systemd passes one (LISTEN_FDS).
    pub socket: PathBuf,
    /// The group of a frame socket the commander creates (`root:<group> 0660`).
    pub socket_group: String,
    /// The root-only control socket of `grants`, `revoke` and `reload` (absolute path).
    pub control_socket: PathBuf,
    /// Where the grant records live, in `grants/` (absolute path).
    pub state_dir: PathBuf,
    /// Commands and undos running at once, 1..=1024.
    pub max_parallel: usize,
    /// Frames waiting for a slot beyond `max_parallel`, 0..=65536; more are refused.
    pub queue: usize,
    /// Grants at once, all commands together.
    pub max_grants: usize,
    /// The timeout of a command without its own, and of an undo whose command is gone.
    pub default_timeout: Duration,
    /// The commands, by hash.
    pub commands: Commands,
}

/// Commands by the hash the server sends; names are unique and so are their hashes.
#[derive(Debug, Clone, Default)]
pub struct Commands {
    by_hash: BTreeMap<CmdHash, Command>,
}

impl Commands {
    /// The sans-IO lookup: which command, if any, a frame's hash names.
    pub fn get(&self, hash: CmdHash) -> Option<&Command> {
        self.by_hash.get(&hash)
    }

    /// The command with this name (reload, undos of a recorded grant).
    pub fn by_name(&self, name: &str) -> Option<&Command> {
        self.by_hash.values().find(|c| c.name == name)
    }

    /// Every command sorted by name, with its hash (what `--check` prints).
    pub fn sorted(&self) -> Vec<(&str, CmdHash)> {
        let mut v: Vec<_> = self
            .by_hash
            .iter()
            .map(|(h, c)| (c.name.as_str(), *h))
            .collect();
        v.sort();
        v
    }

    /// How many commands.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// No command at all (a loaded config never is; a failed reload may keep none).
    #[cfg_attr(not(feature = "internal-api"), allow(dead_code))]
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default = "d_server_user")]
    server_user: String,
    #[serde(default = "d_socket")]
    socket: PathBuf,
    #[serde(default = "d_socket_group")]
    socket_group: String,
    #[serde(default = "d_control_socket")]
    control_socket: PathBuf,
    #[serde(default = "d_state_dir")]
    state_dir: PathBuf,
    #[serde(default = "d_max_parallel")]
    max_parallel: usize,
    #[serde(default = "d_queue")]
    queue: usize,
    #[serde(default = "d_max_grants")]
    max_grants: usize,
    default_timeout: Option<HumanDuration>,
    #[serde(default)]
    commands: BTreeMap<String, RawCommand>,
}

fn d_server_user() -> String {
    DEFAULT_SERVER_USER.to_owned()
}
fn d_socket() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET)
}
fn d_socket_group() -> String {
    DEFAULT_SOCKET_GROUP.to_owned()
}
fn d_control_socket() -> PathBuf {
    PathBuf::from(DEFAULT_CONTROL_SOCKET)
}
fn d_max_grants() -> usize {
    DEFAULT_MAX_GRANTS
}
fn d_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}
fn d_max_parallel() -> usize {
    DEFAULT_MAX_PARALLEL
}
fn d_queue() -> usize {
    DEFAULT_QUEUE
}

/// A command is either a bare string or a table; both forms keep serde's precise errors.
#[derive(Debug)]
struct RawCommand(CommandTable);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommandTable {
    run: String,
    timeout: Option<HumanDuration>,
    undo: Option<String>,
    undo_after: Option<HumanDuration>,
    max_grants: Option<usize>,
    user: Option<String>,
    group: Option<String>,
}

impl<'de> Deserialize<'de> for RawCommand {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawCommand;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a shell command string, or a table with run, timeout, undo, undo_after, max_grants, user, group",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawCommand, E> {
                Ok(RawCommand(CommandTable {
                    run: s.to_owned(),
                    timeout: None,
                    undo: None,
                    undo_after: None,
                    max_grants: None,
                    user: None,
                    group: None,
                }))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawCommand, A::Error> {
                CommandTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawCommand)
            }
        }
        d.deserialize_any(V)
    }
}

impl Config {
    /// Parse and validate config text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| ConfigError::syntax(path, text, e.message(), e.span()))?;
        // Placed on the field in `text` when the file sets it, for --check's caret.
        let invalid =
            |field: &[&str], message: String| ConfigError::invalid_in(path, text, field, message);
        if raw.max_parallel == 0 || raw.max_parallel > MAX_MAX_PARALLEL {
            return Err(invalid(
                &["max_parallel"],
                format!(
                    "{} is out of range: use 1..={MAX_MAX_PARALLEL}",
                    raw.max_parallel
                ),
            ));
        }
        if raw.queue > MAX_QUEUE {
            return Err(invalid(
                &["queue"],
                format!("{} is out of range: use 0..={MAX_QUEUE}", raw.queue),
            ));
        }
        if raw.server_user.is_empty() || raw.socket_group.is_empty() {
            return Err(invalid(
                &["server_user"],
                "server_user and socket_group must not be empty".to_owned(),
            ));
        }
        if !raw.socket.is_absolute()
            || !raw.state_dir.is_absolute()
            || !raw.control_socket.is_absolute()
        {
            return Err(invalid(
                &["socket"],
                "socket, control_socket and state_dir must be absolute paths".to_owned(),
            ));
        }
        if raw.max_grants == 0 || raw.max_grants > MAX_GRANTS_HARD {
            return Err(invalid(
                &["max_grants"],
                format!(
                    "{} is out of range: use 1..={MAX_GRANTS_HARD}",
                    raw.max_grants
                ),
            ));
        }
        let default_timeout = raw.default_timeout.map_or(DEFAULT_TIMEOUT, |d| d.0);
        if default_timeout.is_zero() {
            return Err(invalid(
                &["default_timeout"],
                "must be longer than zero, e.g. \"30s\"".to_owned(),
            ));
        }
        if raw.commands.is_empty() {
            return Err(invalid(
                &["commands"],
                "no commands: add a [commands] table, e.g. hello = \"echo hello from $RUROCO_IP\""
                    .to_owned(),
            ));
        }
        let mut by_hash = BTreeMap::new();
        for (name, RawCommand(t)) in raw.commands {
            if name.is_empty() {
                return Err(invalid(&["commands"], "a command name is empty".to_owned()));
            }
            if name.len() > MAX_COMMAND_NAME_BYTES {
                return Err(invalid(
                    &["commands"],
                    format!(
                        "a command name is longer than {MAX_COMMAND_NAME_BYTES} bytes: shorten it"
                    ),
                ));
            }
            if t.run.trim().is_empty() {
                return Err(invalid(
                    &["commands", &name],
                    "run is empty: give the shell text to run".to_owned(),
                ));
            }
            let timeout = t.timeout.map_or(default_timeout, |d| d.0);
            if timeout.is_zero() {
                return Err(invalid(&["commands", &name], "timeout must be longer than zero: set e.g. timeout = \"30s\" (or leave it out for default_timeout)".to_owned()));
            }
            let undo = match (t.undo, t.undo_after) {
                (None, None) => None,
                (Some(run), Some(after)) => {
                    if run.trim().is_empty() {
                        return Err(invalid(&["commands", &name], "undo is empty".to_owned()));
                    }
                    if run.len() > MAX_UNDO_TEXT_BYTES {
                        return Err(invalid(
                            &["commands", &name],
                            format!(
                                "undo is longer than {MAX_UNDO_TEXT_BYTES} bytes: move it into a script and call that"
                            ),
                        ));
                    }
                    if after.0 > MAX_UNDO_AFTER {
                        return Err(invalid(&["commands", &name], "undo_after is longer than 366 days: use a shorter one (or a command without undo)".to_owned()));
                    }
                    if after.0.is_zero() {
                        return Err(invalid(&["commands", &name], "undo_after must be longer than zero (the access would be undone as it opens): set e.g. undo_after = \"5m\"".to_owned()));
                    }
                    Some(Undo {
                        run,
                        after: after.0,
                    })
                }
                (Some(_), None) => {
                    return Err(invalid(
                        &["commands", &name],
                        "undo without undo_after: add undo_after = \"5m\" (or remove undo)"
                            .to_owned(),
                    ));
                }
                (None, Some(_)) => {
                    return Err(invalid(
                        &["commands", &name],
                        "undo_after without undo: add undo = \"...\" (or remove undo_after)"
                            .to_owned(),
                    ));
                }
            };
            let max_grants = match (t.max_grants, &undo) {
                (None, _) => DEFAULT_MAX_GRANTS_PER_COMMAND.min(raw.max_grants),
                (Some(n), Some(_)) if (1..=raw.max_grants).contains(&n) => n,
                (Some(n), Some(_)) => {
                    return Err(invalid(
                        &["commands", &name],
                        format!(
                            "max_grants = {n} is out of range: use 1..={} (the top-level max_grants)",
                            raw.max_grants
                        ),
                    ));
                }
                (Some(_), None) => {
                    return Err(invalid(&["commands", &name], "max_grants without undo: only commands with an undo make grants; remove max_grants".to_owned()));
                }
            };
            let run_as = resolve_run_as(t.user.as_deref(), t.group.as_deref())
                .map_err(|m| invalid(&["commands", &name], m))?
                .map(Arc::new);
            let hash = CmdHash::of_name(&name);
            if let Some(other) = by_hash.get(&hash) {
                let other: &Command = other;
                return Err(invalid(
                    &["commands", &name],
                    format!(
                        "commands.{name} and commands.{} share the hash {hash}: rename one",
                        other.name
                    ),
                ));
            }
            by_hash.insert(
                hash,
                Command {
                    name,
                    run: t.run,
                    timeout,
                    undo,
                    max_grants,
                    run_as,
                },
            );
        }
        Ok(Self {
            path: path.to_owned(),
            server_user: raw.server_user,
            socket: raw.socket,
            socket_group: raw.socket_group,
            control_socket: raw.control_socket,
            state_dir: raw.state_dir,
            max_parallel: raw.max_parallel,
            queue: raw.queue,
            max_grants: raw.max_grants,
            default_timeout,
            commands: Commands { by_hash },
        })
    }

    /// Read the file, refuse it unless it passes [`CONFIG_RULE`] (not a symlink, root-owned,
    /// mode 0600 or stricter, no extended ACL, safe directories above it), then parse. The checks are made on the opened file, so a
    /// swap after the check cannot slip through.
    pub(crate) fn load(path: &Path) -> Result<Self, Error> {
        use std::io::Read;
        let read_err = |source| ConfigError::read(path, source);
        // By path first when it exists: no symlink, and the directories above (a missing file
        // gets the read error below).
        if std::fs::symlink_metadata(path).is_ok() {
            CONFIG_RULE
                .check_path(path, &Who::current())
                .map_err(Error::Trust)?;
        }
        let file = std::fs::File::open(path).map_err(read_err)?;
        CONFIG_RULE
            .check_file(path, &file, &Who::current())
            .map_err(Error::Trust)?;
        let mut text = String::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(read_err(std::io::Error::other(format!(
                "larger than {MAX_CONFIG_BYTES} bytes"
            )))
            .into());
        }
        Ok(Self::parse(&text, path)?)
    }

    /// Everything the commander checks before it starts, in `--check` and at start alike:
    /// `server_user` and `socket_group` exist, `server_user` can connect to the socket (it is
    /// root, a member of `socket_group` by getgrouplist(3), or the owner of an existing socket
    /// file), and `state_dir` and its `grants/`, when they exist already (the commander creates
    /// them otherwise), pass [`STATE_DIR_RULE`] and [`GRANTS_DIR_RULE`]. Returns the server's
    /// uid and the socket group's gid.
    pub(crate) fn preflight(&self) -> Result<(u32, u32), Error> {
        let uid = self.server_uid()?;
        let gid = self.socket_gid()?;
        if uid != 0 {
            let server = Who::user(&self.server_user, "server_user").map_err(Error::Trust)?;
            let owns_socket = std::fs::symlink_metadata(&self.socket)
                .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == uid);
            if !server.in_group(gid) && !owns_socket {
                let (user, group) = (&self.server_user, &self.socket_group);
                return Err(ConfigError::invalid(
                    &self.path,
                    "server_user",
                    format!(
                        "server_user {user:?} is not a member of socket_group {group:?}, so the server could not connect to the socket: add it (usermod -aG {group} {user}) or change socket_group or server_user"
                    ),
                )
                .into());
            }
        }
        let grants = self.state_dir.join(crate::store::GRANTS_DIR);
        for (rule, dir) in [
            (&STATE_DIR_RULE, &self.state_dir),
            (&GRANTS_DIR_RULE, &grants),
        ] {
            if dir.symlink_metadata().is_ok() {
                rule.check_path(dir, &Who::current())
                    .map_err(Error::Trust)?;
            }
        }
        Ok((uid, gid))
    }

    /// The uid allowed to send frames.
    fn server_uid(&self) -> Result<u32, ConfigError> {
        match nix::unistd::User::from_name(&self.server_user) {
            Ok(Some(u)) => Ok(u.uid.as_raw()),
            _ => Err(ConfigError::invalid(
                &self.path,
                "server_user",
                format!(
                    "server_user {:?} does not exist: create it (e.g. via the package's sysusers.d) or fix server_user",
                    self.server_user
                ),
            )),
        }
    }

    /// The group owning a socket file the commander creates itself.
    fn socket_gid(&self) -> Result<u32, ConfigError> {
        match nix::unistd::Group::from_name(&self.socket_group) {
            Ok(Some(g)) => Ok(g.gid.as_raw()),
            _ => Err(ConfigError::invalid(
                &self.path,
                "socket_group",
                format!(
                    "socket_group {:?} does not exist: create it or fix socket_group",
                    self.socket_group
                ),
            )),
        }
    }
}

/// Resolve a command's `user` and `group` against the user and group databases (getpwnam(3),
/// getgrnam(3), getgrouplist(3)); the message names the field and the fix. `group` alone is
/// refused: root with another group is not less privileged, and it reads as if it were.
fn resolve_run_as(user: Option<&str>, group: Option<&str>) -> Result<Option<RunAs>, String> {
    let Some(user) = user else {
        return match group {
            None => Ok(None),
            Some(_) => Err(
                "group without user: add user = \"NAME\" (the group applies to that user), or remove group"
                    .to_owned(),
            ),
        };
    };
    if user.is_empty() {
        return Err("user is empty: give a user name, or remove user to run as root".to_owned());
    }
    let u = match nix::unistd::User::from_name(user) {
        Ok(Some(u)) => u,
        Ok(None) => {
            return Err(format!(
                "user {user:?} does not exist: create it (useradd --system {user}) or fix user"
            ));
        }
        Err(e) => return Err(format!("user {user:?}: cannot look it up: {e}")),
    };
    let gid = match group {
        None => u.gid,
        Some("") => return Err("group is empty: give a group name, or remove group".to_owned()),
        Some(g) => match nix::unistd::Group::from_name(g) {
            Ok(Some(g)) => g.gid,
            Ok(None) => {
                return Err(format!(
                    "group {g:?} does not exist: create it (groupadd --system {g}) or fix group"
                ));
            }
            Err(e) => return Err(format!("group {g:?}: cannot look it up: {e}")),
        },
    };
    let cname = std::ffi::CString::new(user)
        .map_err(|_| format!("user {user:?} contains a NUL byte: fix user"))?;
    let groups = nix::unistd::getgrouplist(&cname, gid)
        .map_err(|e| format!("user {user:?}: cannot list its groups: {e}"))?;
    Ok(Some(RunAs {
        user: user.to_owned(),
        uid: u.uid,
        gid,
        groups,
        home: u.dir.display().to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
server_user = "ruroco"
socket = "/run/ruroco/commander.sock"
socket_group = "ruroco"
state_dir = "/var/lib/ruroco-commander"
max_parallel = 4
queue = 64
default_timeout = "30s"
[commands]
hello = "echo hello from $RUROCO_IP"
maintenance = { run = "systemctl start maintenance.service", undo = "systemctl stop maintenance.service", undo_after = "5m" }
[commands.open_ssh]
run = 'set=clients4; case $RUROCO_IP in *:*) set=clients6;; esac; nft "add element inet ruroco $set { $RUROCO_IP }; delete element inet ruroco $set { $RUROCO_IP }; add element inet ruroco $set { $RUROCO_IP timeout 5m }"'
timeout = "10s"
"#;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("/etc/ruroco/commander.toml"))
    }

    #[test]
    fn both_command_forms() {
        let c = parse(EXAMPLE).unwrap();
        let hello = c.commands.get(CmdHash::of_name("hello")).unwrap();
        assert_eq!(hello.run, "echo hello from $RUROCO_IP");
        assert_eq!(hello.timeout, Duration::from_secs(30));
        assert_eq!(hello.undo, None);
        let ssh = c.commands.by_name("open_ssh").unwrap();
        assert_eq!(ssh.timeout, Duration::from_secs(10));
        assert_eq!(ssh.undo, None);
        let grant = c.commands.by_name("maintenance").unwrap();
        assert_eq!(grant.undo.as_ref().unwrap().after, Duration::from_secs(300));
        assert_eq!(
            c.commands.sorted(),
            vec![
                ("hello", CmdHash::of_name("hello")),
                ("maintenance", CmdHash::of_name("maintenance")),
                ("open_ssh", CmdHash::of_name("open_ssh"))
            ]
        );
    }

    #[test]
    fn defaults() {
        let c = parse("[commands]\nx = \"true\"\n").unwrap();
        assert_eq!(c.server_user, "ruroco");
        assert_eq!(c.socket, Path::new(DEFAULT_SOCKET));
        assert_eq!(c.max_parallel, 4);
        assert_eq!(c.queue, 64);
        assert_eq!(c.default_timeout, Duration::from_secs(30));
    }

    #[test]
    fn user_and_group_resolve_at_load_and_root_is_the_default() {
        let c = parse(
            "[commands]\nroot = \"true\"\nn = { run = \"true\", user = \"nobody\" }\n\
             g = { run = \"true\", user = \"nobody\", group = \"root\" }\n",
        )
        .unwrap();
        assert_eq!(c.commands.by_name("root").unwrap().run_as, None);
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        let n = c.commands.by_name("n").unwrap().run_as.clone().unwrap();
        assert_eq!((n.uid, n.gid), (nobody.uid, nobody.gid));
        assert_eq!(n.user, "nobody");
        assert_eq!(n.home, nobody.dir.display().to_string());
        assert!(n.groups.contains(&n.gid), "{n:?}");
        let g = c.commands.by_name("g").unwrap().run_as.clone().unwrap();
        let root = nix::unistd::Gid::from_raw(0);
        assert_eq!((g.uid, g.gid), (nobody.uid, root));
        assert!(g.groups.contains(&root), "{g:?}");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("bogus = 1\n[commands]\nx = \"true\"", "bogus"),
            (
                "[commands]\nx = { run = \"true\", tiemout = \"1s\" }",
                "tiemout",
            ),
            (
                "[commands]\nx = { run = \"true\", undo = \"false\" }",
                "undo_after",
            ),
            (
                "[commands]\nx = { run = \"true\", undo_after = \"1s\" }",
                "undo",
            ),
            (
                "[commands]\nx = { run = \"true\", timeout = \"5 minutes\" }",
                "duration",
            ),
            ("[commands]\nx = 5", "shell command string"),
            ("max_parallel = 0\n[commands]\nx = \"true\"", "max_parallel"),
            ("", "no commands"),
            ("[commands]\nx = \"  \"", "run is empty"),
            (
                "[commands]\nx = { run = \"true\", undo = \"false\", undo_after = \"0s\" }",
                "undo_after must be longer than zero",
            ),
            (
                "[commands]\nx = { run = \"true\", timeout = \"0s\" }",
                "`commands.x`: timeout",
            ),
            (
                "default_timeout = \"0ms\"\n[commands]\nx = \"true\"",
                "default_timeout",
            ),
            ("max_grants = 0\n[commands]\nx = \"true\"", "max_grants"),
            (
                "[commands]\nx = { run = \"true\", max_grants = 3 }",
                "max_grants without undo",
            ),
            (
                "max_grants = 2\n[commands]\nx = { run = \"t\", undo = \"f\", undo_after = \"1s\", max_grants = 3 }",
                "`commands.x`: max_grants = 3",
            ),
            (
                "[commands]\nx = { run = \"true\", user = \"no-such-user-r\" }",
                "`commands.x`: user \"no-such-user-r\" does not exist",
            ),
            (
                "[commands]\nx = { run = \"true\", user = \"nobody\", group = \"no-such-grp-r\" }",
                "`commands.x`: group \"no-such-grp-r\" does not exist",
            ),
            (
                "[commands]\nx = { run = \"true\", group = \"root\" }",
                "`commands.x`: group without user",
            ),
            (
                "[commands]\nx = { run = \"true\", user = \"\" }",
                "`commands.x`: user is empty",
            ),
        ];
        for (text, needle) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
            assert!(!e.contains('\n'), "multi-line error: {e}");
        }
    }

    /// A value of the wrong type keeps toml's position: one line for the journal, and for
    /// `--check` that line of the file with a caret under the value.
    #[test]
    fn a_type_error_keeps_its_line_and_column() {
        let e =
            parse("queue = 4\nmax_parallel = \"many\"\n[commands]\nx = \"true\"\n").unwrap_err();
        let one = e.to_string();
        assert!(
            one.starts_with("config /etc/ruroco/commander.toml:2:16: "),
            "{one}"
        );
        assert!(!one.contains('\n'), "{one}");
        assert_eq!(
            e.render().lines().skip(1).collect::<Vec<_>>(),
            [
                "  2 | max_parallel = \"many\"",
                "    |                ^^^^^^"
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,400}") {
            let _ = parse(&text);
        }

        #[test]
        fn arbitrary_command_tables_never_panic(
            run in "[a-z $]{0,20}",
            timeout in "[0-9a-z]{0,6}",
            undo in proptest::option::of("[a-z ]{0,10}"),
            after in proptest::option::of("[0-9a-z]{0,6}"),
        ) {
            let mut t = format!("[commands]\nx = {{ run = {run:?}, timeout = {timeout:?}");
            if let Some(u) = undo { t.push_str(&format!(", undo = {u:?}")); }
            if let Some(a) = after { t.push_str(&format!(", undo_after = {a:?}")); }
            t.push_str(" }\n");
            if let Ok(c) = parse(&t) {
                let x = c.commands.by_name("x").unwrap();
                proptest::prop_assert!(!x.timeout.is_zero());
            }
        }
    }
}
