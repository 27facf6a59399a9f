//! Reloading `commander.toml` in the running commander (SIGHUP, or `ruroco-commander reload`
//! over the control socket, which answers with the outcome). It applies the commands,
//! `default_timeout` and `max_grants`, names every other changed setting as needing a restart,
//! and fails closed: a command removed from the file stops at the reload even when the new
//! file is refused for something else.
//! It must never keep a command whose definition it cannot find unchanged in a trusted file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use ruroco_kit::config_error::{ConfigError, ConfigProblem};

use crate::config::{Commands, Config};
use crate::dispatch::{Dispatcher, Table};
use crate::error::Error;

/// What an operator runs to apply a setting that only a restart changes.
pub(crate) const RESTART_HINT: &str = "systemctl restart ruroco-commander";

/// How a reload ended: what `ruroco-commander reload` prints and exits with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Outcome {
    /// The new file was applied as a whole.
    pub(crate) ok: bool,
    /// One line: what changed and what needs a restart, or why the reload failed and what
    /// is in use now.
    pub(crate) message: String,
}

/// The config in effect, and the one way to change it (reloads are serialised).
#[derive(Debug)]
pub(crate) struct Reloader {
    path: PathBuf,
    running: Mutex<Config>,
    dispatcher: Arc<Dispatcher>,
}

impl Reloader {
    pub(crate) fn new(path: PathBuf, running: Config, dispatcher: Arc<Dispatcher>) -> Arc<Self> {
        Arc::new(Self {
            path,
            running: Mutex::new(running),
            dispatcher,
        })
    }

    /// Re-read the config file and apply it; see the module docs. Logs the outcome, shows a
    /// failure (or a pending restart) in `STATUS=` until the next reload, and returns it.
    pub(crate) async fn reload(&self) -> Outcome {
        ruroco_kit::notify::reloading();
        let mut running = self.running.lock().await;
        let outcome = match Config::load(&self.path) {
            Ok(new) => self.apply(&mut running, new).await,
            Err(e) => self.fail_closed(&mut running, &e).await,
        };
        ruroco_kit::notify::ready();
        outcome
    }

    async fn apply(&self, running: &mut Config, new: Config) -> Outcome {
        let restart = restart_fields(running, &new);
        for field in &restart {
            tracing::warn!(
                event = "restart_needed",
                field = *field,
                "{field} changed in {}: it takes effect only on a restart ({RESTART_HINT})",
                self.path.display()
            );
        }
        let mut message = format!("reloaded: {}", changes(&running.commands, &new.commands));
        let note = (!restart.is_empty())
            .then(|| format!("restart needed for {} ({RESTART_HINT})", restart.join(", ")));
        if let Some(n) = &note {
            message.push_str(&format!("; {n}"));
        }
        self.dispatcher.set_note(note);
        self.dispatcher
            .replace_table(
                Table {
                    commands: new.commands.clone(),
                    default_timeout: new.default_timeout,
                },
                new.max_grants,
            )
            .await;
        tracing::info!(
            event = "reloaded",
            commands = new.commands.len(),
            restart_needed = %restart.join(","),
            "{message}"
        );
        // Restart-only settings keep their running values, so the next reload names them again.
        running.commands = new.commands;
        running.default_timeout = new.default_timeout;
        running.max_grants = new.max_grants;
        Outcome { ok: true, message }
    }

    async fn fail_closed(&self, running: &mut Config, error: &Error) -> Outcome {
        let kept = salvage(running, &self.path, error);
        let message = format!(
            "reload failed: {error}; now in use: {} (a failed reload keeps only the commands whose definition is unchanged in the new file; fix it and reload again)",
            changes(&running.commands, &kept)
        );
        tracing::error!(
            event = "reload_failed",
            commands = kept.len(),
            error = %error,
            "{message}"
        );
        self.dispatcher
            .set_note(Some(format!("reload failed: {error}")));
        self.dispatcher
            .replace_table(
                Table {
                    commands: kept.clone(),
                    default_timeout: running.default_timeout,
                },
                running.max_grants,
            )
            .await;
        running.commands = kept;
        Outcome { ok: false, message }
    }
}

/// Settings that only a restart changes, by their names in `commander.toml`: the sockets, the
/// server's uid, the state directory and the sizes of the slot and queue limits.
pub(crate) fn restart_fields(running: &Config, new: &Config) -> Vec<&'static str> {
    [
        ("server_user", new.server_user != running.server_user),
        ("socket", new.socket != running.socket),
        ("socket_group", new.socket_group != running.socket_group),
        (
            "control_socket",
            new.control_socket != running.control_socket,
        ),
        ("state_dir", new.state_dir != running.state_dir),
        ("max_parallel", new.max_parallel != running.max_parallel),
        ("queue", new.queue != running.queue),
    ]
    .into_iter()
    .filter_map(|(f, differs)| differs.then_some(f))
    .collect()
}

/// `N commands (added a; removed b; changed c)`.
fn changes(old: &Commands, new: &Commands) -> String {
    let names = |c: &Commands| -> Vec<String> {
        c.sorted().into_iter().map(|(n, _)| n.to_owned()).collect()
    };
    let (old_names, new_names) = (names(old), names(new));
    let added: Vec<&str> = new_names
        .iter()
        .filter(|n| old.by_name(n).is_none())
        .map(String::as_str)
        .collect();
    let removed: Vec<&str> = old_names
        .iter()
        .filter(|n| new.by_name(n).is_none())
        .map(String::as_str)
        .collect();
    let changed: Vec<&str> = new_names
        .iter()
        .filter(|n| old.by_name(n).is_some_and(|c| Some(c) != new.by_name(n)))
        .map(String::as_str)
        .collect();
    let mut parts = Vec::new();
    for (what, list) in [("added", added), ("removed", removed), ("changed", changed)] {
        if !list.is_empty() {
            parts.push(format!("{what} {}", list.join(", ")));
        }
    }
    let mut s = format!("{} commands", new.len());
    if !parts.is_empty() {
        s.push_str(&format!(" ({})", parts.join("; ")));
    }
    s
}

/// After `Config::load` refused the file: the running commands that still stand. Only when the
/// file passed the ownership and mode checks and is valid TOML (the refusal was about its
/// content) is it consulted, and a command is kept only if its entry in `[commands]`, read
/// alone with the running `default_timeout` and `max_grants`, gives exactly the running
/// definition. Otherwise (unreadable, untrusted or unparsable file) no command is kept.
pub(crate) fn salvage(running: &Config, path: &Path, error: &Error) -> Commands {
    if !matches!(
        error,
        Error::Config(ConfigError {
            problem: ConfigProblem::Syntax(_) | ConfigProblem::Invalid { .. },
            ..
        })
    ) {
        return Commands::default();
    }
    let Some(entries) = ruroco_kit::fsutil::read_bounded(path, crate::config::MAX_CONFIG_BYTES)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|mut t| match t.remove("commands") {
            Some(toml::Value::Table(c)) => Some(c),
            _ => None,
        })
    else {
        return Commands::default();
    };
    let alone = |entries: toml::Table| -> Option<Config> {
        let mut doc = toml::Table::new();
        let ms = i64::try_from(running.default_timeout.as_millis()).ok()?;
        doc.insert(
            "default_timeout".to_owned(),
            toml::Value::String(format!("{ms}ms")),
        );
        doc.insert(
            "max_grants".to_owned(),
            toml::Value::Integer(i64::try_from(running.max_grants).ok()?),
        );
        doc.insert("commands".to_owned(), toml::Value::Table(entries));
        Config::parse(&toml::to_string(&doc).ok()?, path).ok()
    };
    let mut kept = toml::Table::new();
    for (name, _) in running.commands.sorted() {
        let Some(value) = entries.get(name) else {
            continue;
        };
        let one = toml::Table::from_iter([(name.to_owned(), value.clone())]);
        let same =
            alone(one).is_some_and(|c| c.commands.by_name(name) == running.commands.by_name(name));
        if same {
            kept.insert(name.to_owned(), value.clone());
        }
    }
    if kept.is_empty() {
        return Commands::default();
    }
    alone(kept).map(|c| c.commands).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        Config::parse(text, Path::new("/etc/ruroco/commander.toml")).unwrap()
    }

    fn salvaged(running: &Config, new_text: &str) -> Vec<String> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("commander.toml");
        std::fs::write(&p, new_text).unwrap();
        let e = Config::parse(new_text, &p).unwrap_err();
        salvage(running, &p, &Error::Config(e))
            .sorted()
            .into_iter()
            .map(|(n, _)| n.to_owned())
            .collect()
    }

    #[test]
    fn a_failed_reload_keeps_only_unchanged_commands() {
        let running = cfg("default_timeout = \"10s\"\n[commands]\n\
             keep = \"echo keep\"\nedited = \"echo old\"\ngone = \"echo gone\"\n\
             grant = { run = \"a\", undo = \"b\", undo_after = \"5m\" }\n");
        // Removed: gone; edited: edited; new and broken: bad; unchanged: keep, grant.
        let text = "default_timeout = \"10s\"\n[commands]\nkeep = \"echo keep\"\n\
                    edited = \"echo new\"\ngrant = { run = \"a\", undo = \"b\", undo_after = \"5m\" }\n\
                    bad = { run = \"x\", undo = \"y\" }\n";
        assert_eq!(salvaged(&running, text), ["grant", "keep"]);
        // An error in the top-level settings: the old settings stay, and so do the commands.
        let text =
            "default_timeout = \"20s\"\nmax_parallel = 0\n[commands]\nkeep = \"echo keep\"\n";
        assert_eq!(salvaged(&running, text), ["keep"]);
        // Not TOML at all: nothing can be told apart, nothing is kept.
        assert!(salvaged(&running, "[commands\nkeep = \"echo keep\"\n").is_empty());
    }

    #[test]
    fn an_untrusted_file_keeps_nothing() {
        let running = cfg("[commands]\nkeep = \"echo keep\"\n");
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("commander.toml");
        std::fs::write(&p, "[commands]\nkeep = \"echo keep\"\n").unwrap();
        let e = Error::Config(ConfigError::read(&p, std::io::Error::other("x")));
        assert!(salvage(&running, &p, &e).is_empty());
        let untrusted = Config::load(&p).unwrap_err();
        assert!(matches!(untrusted, Error::Trust(_)), "{untrusted}");
        assert!(salvage(&running, &p, &untrusted).is_empty());
    }

    #[test]
    fn restart_fields_are_named() {
        let a = cfg("[commands]\nx = \"true\"\n");
        let b = cfg("queue = 3\nsocket = \"/run/x.sock\"\n[commands]\ny = \"true\"\n");
        assert_eq!(restart_fields(&a, &b), ["socket", "queue"]);
        assert_eq!(
            changes(&a.commands, &b.commands),
            "1 commands (added y; removed x)"
        );
    }
}
