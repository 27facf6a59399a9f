//! SIGHUP for the server: which settings a reload applies and which take a restart, the
//! outcome record the server writes after every reload, and `ruroco-server --reload PID`, the
//! synchronous reload that `ExecReload=` runs (it signals the server and waits for that record,
//! so `systemctl reload` fails when the reload failed).
//! It must never keep a key the reload removed, nor report success for a reload it did not see.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::time::{ClockId, clock_gettime};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::config::{self, Config};
use ruroco_kit::exit::{self, ExitStatus};

/// The outcome record in `state_dir` (0600, replaced atomically after each reload).
pub const OUTCOME_FILE: &str = "reload";
/// How long `--reload` waits for the server to record the outcome of its signal.
pub const WAIT: Duration = Duration::from_secs(60);
/// How often `--reload` looks at the record.
const POLL: Duration = Duration::from_millis(20);
/// What an operator runs to apply a setting that only a restart changes.
pub const RESTART_HINT: &str = "systemctl restart ruroco";

/// What a parsed config changes in the running server.
#[derive(Debug)]
pub struct Plan {
    /// The settings in effect after the reload: the new config, with every field that needs
    /// a restart kept at its running value.
    pub effective: Config,
    /// Fields applied now, by their names in `server.toml`.
    pub changed: Vec<&'static str>,
    /// Fields changed in the file that keep their running value until a restart.
    pub restart: Vec<&'static str>,
}

/// Compare the running settings with a freshly parsed config. `readable_dirs` are the
/// directories the sandbox lets the server list (see `sandbox::readable_dirs`): a `keys_dir`
/// moved outside them cannot be read until a restart, so it is kept like the restart fields.
pub fn plan(running: &Config, new: Config, readable_dirs: &[PathBuf]) -> Plan {
    let mut e = new;
    let mut restart = Vec::new();
    let mut keep = |field: &'static str, differs: bool| {
        if differs {
            restart.push(field);
        }
        differs
    };
    if keep("listen", e.listen != running.listen) {
        e.listen = running.listen;
    }
    if keep("user", e.user != running.user) {
        e.user = running.user.clone();
    }
    if keep("state_dir", e.state_dir != running.state_dir) {
        e.state_dir = running.state_dir.clone();
    }
    if keep(
        "commander_socket",
        e.commander_socket != running.commander_socket,
    ) {
        e.commander_socket = running.commander_socket.clone();
    }
    if keep("commander_uid", e.commander_uid != running.commander_uid) {
        e.commander_uid = running.commander_uid;
    }
    if keep("receive_buffer", e.receive_buffer != running.receive_buffer) {
        e.receive_buffer = running.receive_buffer;
    }
    if e.keys_dir != running.keys_dir && !within(&e.keys_dir, readable_dirs) {
        restart.push("keys_dir");
        e.keys_dir = running.keys_dir.clone();
    }
    let mut changed = Vec::new();
    let mut note = |field: &'static str, differs: bool| {
        if differs {
            changed.push(field);
        }
    };
    note("ips", e.ips != running.ips);
    note("keys_dir", e.keys_dir != running.keys_dir);
    note("max_clock_skew", e.max_clock_skew != running.max_clock_skew);
    note("max_age", e.max_age != running.max_age);
    note("rate_limit", e.rate_limit != running.rate_limit);
    note("keys", e.keys != running.keys);
    Plan {
        effective: e,
        changed,
        restart,
    }
}

/// Is `dir` (resolved if it exists) at or beneath one of `roots`?
fn within(dir: &Path, roots: &[PathBuf]) -> bool {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    roots.iter().any(|r| dir.starts_with(r))
}

/// How a reload ended, as recorded in [`OUTCOME_FILE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Written at start-up: no reload yet.
    Started,
    Ok,
    Failed,
}

/// The outcome record: TOML, e.g. `generation = 3`, `started_monotonic_ns = …`,
/// `result = "failed"`, `message = "…"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// 0 at start-up, then one more per reload.
    pub generation: u64,
    /// CLOCK_MONOTONIC (clock_gettime(2)) when the server began this reload, in nanoseconds:
    /// a record at least as recent as the signal that `--reload` sent answers that signal.
    pub started_monotonic_ns: u64,
    pub result: Status,
    /// One line: what changed, what needs a restart, or why the reload failed.
    pub message: String,
}

/// CLOCK_MONOTONIC in nanoseconds (system-wide, so comparable between processes).
pub fn monotonic_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        u64::try_from(t.tv_sec())
            .unwrap_or(0)
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::try_from(t.tv_nsec()).unwrap_or(0))
    })
}

/// Replace `<state_dir>/reload` with `outcome` (write-temp, fsync, rename).
pub fn record(state_dir: &Path, outcome: &Outcome) -> std::io::Result<()> {
    let text = toml::to_string(outcome).map_err(std::io::Error::other)?;
    ruroco_kit::fsutil::write_atomic(&state_dir.join(OUTCOME_FILE), text.as_bytes(), 0o600)
}

/// Read `<state_dir>/reload`; `None` when it is missing or not a record.
pub fn read(state_dir: &Path) -> Option<Outcome> {
    let text = ruroco_kit::fsutil::read_bounded(&state_dir.join(OUTCOME_FILE), 64 * 1024).ok()?;
    toml::from_str(&text).ok()
}

/// Why `ruroco-server --reload` did not report success.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The server reloaded and the reload failed (it runs on with what it could keep).
    #[error("{0}")]
    Failed(String),
    #[error(
        "cannot signal ruroco-server (pid {pid}): {source} (is it running? systemctl status ruroco)"
    )]
    Signal { pid: i32, source: nix::Error },
    #[error(
        "{0}: no reload record: cannot tell whether the server reloaded (is state_dir in the config right, and the server running this version?); see journalctl -u ruroco"
    )]
    NoRecord(PathBuf),
    /// The config is not TOML, so its `state_dir` is unknown, and the directory assumed
    /// instead holds no record. The reload failed all the same: the server reads that file.
    #[error(
        "reload failed: {config} cannot be read or parsed as TOML ({error}), so its state_dir is unknown and {assumed} ({source_of}) was assumed, where there is no reload record; the server reads the same file, so its reload failed too: fix the file (ruroco-server --check shows what is wrong) and reload again",
        assumed = assumed.display(),
        config = config.display(),
        error = error.split_whitespace().collect::<Vec<_>>().join(" ")
    )]
    Unparsable {
        /// The config file (`--config`).
        config: PathBuf,
        /// The state directory assumed: `$STATE_DIRECTORY`, else the default.
        assumed: PathBuf,
        /// Where the assumption comes from: "$STATE_DIRECTORY" or "the default".
        source_of: &'static str,
        /// The TOML parser's error.
        error: String,
    },
    #[error("ruroco-server (pid {0}) exited during the reload; see journalctl -u ruroco")]
    Exited(i32),
    /// The process is not a `ruroco-server` (`/proc/PID/comm`), or there is none: nothing is
    /// signalled.
    #[error(
        "pid {pid} is {what}, not ruroco-server: nothing signalled (the server's pid: systemctl show -p MainPID ruroco)"
    )]
    NotServer { pid: i32, what: String },
    #[error(
        "ruroco-server (pid {pid}) recorded no outcome within {}s after SIGHUP; see journalctl -u ruroco",
        WAIT.as_secs()
    )]
    Timeout { pid: i32 },
}

/// sysexits: 78 (EX_CONFIG) for a failed reload (also one of a config that is not TOML),
/// 69 (EX_UNAVAILABLE) otherwise.
impl ExitStatus for ReloadError {
    fn exit_code(&self) -> u8 {
        match self {
            ReloadError::Failed(_) | ReloadError::Unparsable { .. } => exit::CONFIG,
            _ => exit::UNAVAILABLE,
        }
    }
}

/// Where [`state_dir_of`] found the state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    pub path: PathBuf,
    /// `Some((TOML error, "$STATE_DIRECTORY" or "the default"))` when the config is not TOML
    /// and `path` is only assumed.
    pub assumed: Option<(String, &'static str)>,
}

/// The state directory of the running server, from the config at `path`. A config that no
/// longer loads (a reload of it will fail) is read for `state_dir` alone; one that is not
/// TOML at all gives the directory systemd passes in `$STATE_DIRECTORY` (`StateDirectory=`,
/// systemd.exec(5)), else the default, marked as assumed with the parse error. So the
/// outcome of that failure can still be reported.
pub fn state_dir_of(path: &Path) -> StateDir {
    let found = |path: PathBuf| StateDir {
        path,
        assumed: None,
    };
    if let Ok(c) = Config::load(path) {
        return found(c.state_dir);
    }
    let error = match ruroco_kit::fsutil::read_bounded(path, config::CONFIG_MAX_LEN) {
        Ok(text) => match text.parse::<toml::Table>() {
            Ok(t) => {
                return found(
                    t.get("state_dir")
                        .and_then(toml::Value::as_str)
                        .map_or_else(|| PathBuf::from(config::DEFAULT_STATE_DIR), PathBuf::from),
                );
            }
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    };
    match std::env::var_os("STATE_DIRECTORY").and_then(|v| {
        let first = std::env::split_paths(&v).next()?;
        (!first.as_os_str().is_empty()).then_some(first)
    }) {
        Some(dir) => StateDir {
            path: dir,
            assumed: Some((error, "$STATE_DIRECTORY")),
        },
        None => StateDir {
            path: PathBuf::from(config::DEFAULT_STATE_DIR),
            assumed: Some((error, "the default")),
        },
    }
}

/// `ruroco-server --reload PID`: send SIGHUP to `pid` and wait until the server records the
/// outcome of a reload that began after the signal. `Ok` carries the server's message.
pub fn request(config_path: &Path, pid: i32) -> Result<String, ReloadError> {
    // SIGHUP ends most processes: signal only a ruroco-server (its comm(5) name).
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) if comm.trim_end() == "ruroco-server" => {}
        Ok(comm) => {
            return Err(ReloadError::NotServer {
                pid,
                what: format!("`{}`", comm.trim_end()),
            });
        }
        Err(_) => {
            return Err(ReloadError::NotServer {
                pid,
                what: "no process this user can see".to_owned(),
            });
        }
    }
    let StateDir {
        path: state_dir,
        assumed,
    } = state_dir_of(config_path);
    if read(&state_dir).is_none() {
        // Still signal: a reload that cannot be reported must still drop removed keys.
        let _ = kill(Pid::from_raw(pid), Signal::SIGHUP);
        return Err(match assumed {
            Some((error, source_of)) => ReloadError::Unparsable {
                config: config_path.to_owned(),
                assumed: state_dir,
                source_of,
                error,
            },
            None => ReloadError::NoRecord(state_dir.join(OUTCOME_FILE)),
        });
    }
    let sent = monotonic_ns();
    kill(Pid::from_raw(pid), Signal::SIGHUP)
        .map_err(|source| ReloadError::Signal { pid, source })?;
    let end = Instant::now() + WAIT;
    loop {
        if let Some(o) = read(&state_dir).filter(|o| o.started_monotonic_ns >= sent) {
            return match o.result {
                Status::Failed => Err(ReloadError::Failed(o.message)),
                Status::Ok | Status::Started => Ok(o.message),
            };
        }
        if kill(Pid::from_raw(pid), None).is_err() {
            return Err(ReloadError::Exited(pid));
        }
        if Instant::now() > end {
            return Err(ReloadError::Timeout { pid });
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config of `extra`, with `ips` and `keys_dir` added unless it sets them.
    fn cfg(extra: &str) -> Config {
        let mut text = extra.to_owned();
        if !extra.contains("ips =") {
            text.push_str("\nips = [\"192.0.2.1\"]");
        }
        if !extra.contains("keys_dir =") {
            text.push_str("\nkeys_dir = \"/etc/ruroco/keys\"");
        }
        Config::parse(&text, Path::new("server.toml")).unwrap()
    }

    #[test]
    fn restart_fields_are_kept_and_named() {
        let running = cfg("");
        let new = cfg(
            "listen = \"127.0.0.1:9\"\nuser = \"other\"\nreceive_buffer = 1\n\
                       max_age = \"5m\"\nips = [\"192.0.2.2\"]",
        );
        let readable = [PathBuf::from("/etc/ruroco")];
        let p = plan(&running, new, &readable);
        assert_eq!(p.restart, ["listen", "user", "receive_buffer"]);
        assert_eq!(p.changed, ["ips", "max_age"]);
        assert_eq!(p.effective.listen, running.listen);
        assert_eq!(p.effective.user, running.user);
        assert_eq!(p.effective.receive_buffer, running.receive_buffer);
        assert_eq!(
            p.effective.ips,
            ["192.0.2.2".parse::<std::net::IpAddr>().unwrap()]
        );
    }

    #[test]
    fn keys_dir_moves_only_within_the_sandbox() {
        let running = cfg("");
        let readable = [PathBuf::from("/etc/ruroco")];
        let p = plan(&running, cfg("keys_dir = \"/etc/ruroco/other\""), &readable);
        assert_eq!(p.changed, ["keys_dir"]);
        assert!(p.restart.is_empty());
        let p = plan(&running, cfg("keys_dir = \"/srv/keys\""), &readable);
        assert_eq!(p.restart, ["keys_dir"]);
        assert_eq!(p.effective.keys_dir, running.keys_dir);
        assert!(p.changed.is_empty());
    }

    #[test]
    fn outcome_round_trips() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(d.path()), None);
        let o = Outcome {
            generation: 2,
            started_monotonic_ns: monotonic_ns(),
            result: Status::Failed,
            message: "reload failed: key file \"x\"".to_owned(),
        };
        record(d.path(), &o).unwrap();
        assert_eq!(read(d.path()), Some(o));
    }

    #[test]
    fn state_dir_is_found_in_a_config_that_no_longer_loads() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("server.toml");
        std::fs::write(&p, "ips = []\nstate_dir = \"/srv/state\"\n").unwrap();
        assert_eq!(state_dir_of(&p).path, Path::new("/srv/state"));
        assert_eq!(state_dir_of(&p).assumed, None);
        std::fs::write(&p, "ips = [\n").unwrap();
        let got = state_dir_of(&p);
        if std::env::var_os("STATE_DIRECTORY").is_none() {
            assert_eq!(got.path, Path::new(config::DEFAULT_STATE_DIR));
        }
        assert!(got.assumed.is_some(), "{got:?}");
    }
}
