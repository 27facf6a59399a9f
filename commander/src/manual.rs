//! What `ruroco-commander(8)` says beyond `--help`: every `commander.toml` field, signals,
//! environment, files, exit statuses and journal fields. `tests/src/bin/gen-docs.rs` renders it;
//! the tests below hold the field tables equal to the serde structs of `config.rs`, the
//! documented defaults equal to the code's, the exit statuses equal to `Error::exit_code`, and
//! the events equal to the `event = "..."` of the log call sites. It must never hold logic.

use ruroco_kit::manual::{Entry, ExitStatus, Field, FieldDefault, Manual, Table};

const TOP: &[Field] = &[
    Field {
        name: "server_user",
        ty: "string (user name)",
        default: FieldDefault::Value(r#""ruroco""#),
        example: r#""ruroco""#,
        meaning: "Only this user may send frames on the socket (SO_PEERCRED on every connection).",
    },
    Field {
        name: "socket",
        ty: "absolute path",
        default: FieldDefault::Value(r#""/run/ruroco/commander.sock""#),
        example: r#""/run/ruroco/commander.sock""#,
        meaning: "The Unix socket the server connects to. Under systemd it comes from ruroco-commander.socket; otherwise the commander creates it as root:socket_group 0660.",
    },
    Field {
        name: "socket_group",
        ty: "string (group name)",
        default: FieldDefault::Value(r#""ruroco""#),
        example: r#""ruroco""#,
        meaning: "The group of the socket the commander creates itself.",
    },
    Field {
        name: "control_socket",
        ty: "absolute path",
        default: FieldDefault::Value(r#""/run/ruroco-commander/control.sock""#),
        example: r#""/run/ruroco-commander/control.sock""#,
        meaning: "The root-only socket of ruroco-commander grants and revoke: 0600 root in a root-owned directory others cannot write; every peer's uid is checked too.",
    },
    Field {
        name: "state_dir",
        ty: "absolute path",
        default: FieldDefault::Value(r#""/var/lib/ruroco-commander""#),
        example: r#""/var/lib/ruroco-commander""#,
        meaning: "Where grants are persisted, one file each under grants/ (0700 root); they survive restarts and crashes.",
    },
    Field {
        name: "max_parallel",
        ty: "integer",
        default: FieldDefault::Value("4"),
        example: "8",
        meaning: "Commands running at once, 1 to 1024; further requests wait in the queue.",
    },
    Field {
        name: "queue",
        ty: "integer",
        default: FieldDefault::Value("64"),
        example: "128",
        meaning: "Requests that may wait for a free slot, 0 to 65536; beyond it they are refused (logged, and acknowledged to the server as refused).",
    },
    Field {
        name: "max_grants",
        ty: "integer",
        default: FieldDefault::Value("1024"),
        example: "4096",
        meaning: "Grants at once, all commands together, 1 to 65536. A new grant beyond it (or beyond its command's max_grants) is refused before its command runs; a repeat of an existing grant only extends it.",
    },
    Field {
        name: "default_timeout",
        ty: "duration",
        default: FieldDefault::Value(r#""30s""#),
        example: r#""10s""#,
        meaning: "Timeout of a command without its own timeout, longer than zero: then SIGTERM, then SIGKILL to its process group.",
    },
    Field {
        name: "commands",
        ty: "table",
        default: FieldDefault::Required,
        example: r#"{ hello = "echo hello from $RUROCO_IP" }"#,
        meaning: "The commands by name, at least one: see [commands] below.",
    },
];

const COMMAND: &[Field] = &[
    Field {
        name: "run",
        ty: "string (shell text)",
        default: FieldDefault::Required,
        example: r#""systemctl restart nginx.service""#,
        meaning: "What runs, as sh -c TEXT (see COMMANDS). A command given as a plain string is this field alone.",
    },
    Field {
        name: "timeout",
        ty: "duration",
        default: FieldDefault::Absent("default_timeout"),
        example: r#""10s""#,
        meaning: "How long the run (and its undo) may take, longer than zero: then SIGTERM, then SIGKILL to its process group.",
    },
    Field {
        name: "undo",
        ty: "string (shell text)",
        default: FieldDefault::Absent("no undo, no grant"),
        example: r#""nft delete element inet ruroco clients4 { $RUROCO_IP }""#,
        meaning: "Makes the command a grant: this text runs with the same RUROCO_IP undo_after after the run ends (at once if the run failed), or at ruroco-commander revoke. At most 8 KiB; needs undo_after. Should be idempotent: after a crash it runs again at the next start.",
    },
    Field {
        name: "undo_after",
        ty: "duration",
        default: FieldDefault::Absent("none; required with undo"),
        example: r#""5m""#,
        meaning: "How long a grant stays active after its run ends, longer than zero and at most 366 days. A repeat while active moves the deadline and does not run the command again.",
    },
    Field {
        name: "max_grants",
        ty: "integer",
        default: FieldDefault::Absent("256, or the top-level max_grants if smaller"),
        example: "16",
        meaning: "Grants of this command at once, 1 to the top-level max_grants; only for a command with an undo.",
    },
    Field {
        name: "user",
        ty: "string (user name)",
        default: FieldDefault::Absent("root"),
        example: r#""nobody""#,
        meaning: "The user the command and its undo run as, with that user's supplementary groups (initgroups(3)) and its HOME, USER and LOGNAME, still with the clean environment, process group and timeout. Resolved when the config is loaded: --check and the start refuse an unknown user; a user deleted later keeps its ids until the next reload or restart.",
    },
    Field {
        name: "group",
        ty: "string (group name)",
        default: FieldDefault::Absent("the user's primary group"),
        example: r#""nogroup""#,
        meaning: "The group the command and its undo run as; only with user (a group without a user is refused). --check refuses an unknown group.",
    },
];

const CONFIG: &[Table] = &[
    Table {
        header: "",
        about: "Fields before the first [table].",
        fields: TOP,
    },
    Table {
        header: "[commands]",
        about: "One entry per command: NAME = \"shell text\", or NAME = { run = ..., ... } (one line), or a [commands.NAME] table with these fields. NAME is what a client asks for with ruroco-client send -c NAME; at most 256 bytes.",
        fields: COMMAND,
    },
];

const EXIT_STATUS: &[ExitStatus] = &[
    (
        0,
        "stopped by SIGTERM or SIGINT; --check found the config valid; grants, revoke or reload succeeded",
    ),
    (1, "revoke: no grant matched"),
    (64, "usage: unknown argument"),
    (
        65,
        "a grant record in state_dir is corrupt, or there are more than the limit",
    ),
    (
        69,
        "grants, revoke, reload: the control socket does not answer (is ruroco-commander running?)",
    ),
    (71, "an operating-system call failed at start"),
    (
        74,
        "I/O error: the socket, the state directory or the boot id",
    ),
    (
        77,
        "not started as root; grants, revoke: not root, or the commander refused",
    ),
    (
        78,
        "configuration error: commander.toml is invalid, unsafe (not owned by root, any group or other access — read included — instead of 0600 or stricter, or an extended ACL) or names an unknown user or group; the socket's or state's directory is unsafe; systemd passed more than one socket; reload: the reload failed (the reason is printed)",
    ),
];

const SIGNALS: &[Entry] = &[
    (
        "SIGHUP",
        "Re-read the commands and the grant limits (systemctl reload ruroco-commander, which runs ruroco-commander reload and fails when the reload does). server_user, socket, socket_group, control_socket, state_dir, max_parallel and queue change only on a restart (event restart_needed names the field). A reload fails closed: a command removed from the file stops at once; on an error, a command stays only if its own entry still gives exactly the running definition, and none stays if the file cannot be read, is not trusted or is not TOML (event reload_failed; STATUS= says so until the next reload).",
    ),
    (
        "SIGTERM, SIGINT",
        "Stop taking frames, wait for running commands (each bounded by its timeout), then exit 0. Undos not yet due are kept and run at the next start.",
    ),
];

const ENVIRONMENT: &[Entry] = &[
    ruroco_kit::manual::RUROCO_LOG,
    ruroco_kit::manual::JOURNAL_STREAM,
    (
        "NOTIFY_SOCKET",
        "Set by systemd (Type=notify): READY=1, STATUS= with the commands and grants, RELOADING=1, STOPPING=1.",
    ),
    (
        "LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES",
        "Set by systemd socket activation (ruroco-commander.socket): the Unix socket to accept on; socket is then not created.",
    ),
    (
        "PATH, RUROCO_IP, RUROCO_COMMAND",
        "The whole environment of a command and its undo: a fixed PATH, the client's address and the command's name; a command with user also gets that user's HOME, USER and LOGNAME. Nothing else is passed on.",
    ),
];

const FILES: &[Entry] = &[
    (
        "/etc/ruroco/commander.toml",
        "The configuration (see CONFIGURATION); --config PATH reads another file. It holds the shell text of every command, so it is root's alone: owned by root, mode 0600 or stricter (no group or other access, read included) and no extended ACL (setfacl -b removes one); the package installs it 0600. Anything else is refused (exit 78) with the fix, e.g. chown root:root and chmod 0600.",
    ),
    (
        "/run/ruroco/commander.sock",
        "The socket the server sends frames on (socket).",
    ),
    (
        "/run/ruroco-commander/control.sock",
        "The control socket (control_socket).",
    ),
    (
        "/var/lib/ruroco-commander/grants/",
        "One file per grant (state_dir).",
    ),
    (
        "/usr/share/doc/ruroco/examples/nftables/ruroco.nft",
        "A dual-stack nftables table for the open_ssh example: sets clients4 and clients6 with timeouts.",
    ),
    (
        "/usr/share/doc/ruroco/grants.md",
        "The lifecycle of grants in detail.",
    ),
];

const JOURNAL_FIELDS: &[Entry] = &[
    (
        "RUROCO_EVENT",
        "What happened, one of the events below. Under systemd: journalctl -u ruroco-commander RUROCO_EVENT=failed.",
    ),
    (
        "RUROCO_COMMAND",
        "The command's name (RUROCO_HASH when no command has the frame's hash).",
    ),
    ("RUROCO_IP", "The client's address, as the command got it."),
    (
        "RUROCO_REASON",
        "Why a command failed (exit, signal, timeout, spawn, wait, grant_persist), a request was refused (queue_full, grant_limit) or a peer rejected (peer_uid, ...); for undo: why it runs.",
    ),
    (
        "RUROCO_EXIT",
        "The command's exit status (128 + N for signal N).",
    ),
    ("RUROCO_DURATION_MS", "How long the command ran."),
    ("RUROCO_PID", "The command's (or the peer's) process id."),
    (
        "RUROCO_LINE, RUROCO_STREAM",
        "A line of the command's output and whether stdout or stderr (event output).",
    ),
    (
        "RUROCO_EXPIRES_IN_MS",
        "When a grant's undo is due (events granted, extended).",
    ),
    ("RUROCO_ERROR", "The operating system's error."),
    (
        "RUROCO_DETAIL",
        "A hint in words: what happened and what to do.",
    ),
    (
        "MESSAGE, SYSLOG_IDENTIFIER, PRIORITY",
        "The journal's own fields: a one-line text, ruroco-commander, the level.",
    ),
];

const EVENTS: &[Entry] = &[
    (
        "ready",
        "the commander accepts frames: config, socket, commands, grants",
    ),
    ("started", "a command (or undo) started, with its pid"),
    ("executed", "a command exited 0"),
    ("undone", "an undo exited 0"),
    (
        "failed",
        "a command or undo failed (RUROCO_REASON: exit, signal, timeout, spawn, wait, grant_persist)",
    ),
    ("output", "a line a command printed"),
    (
        "output_truncated",
        "a command printed more lines than are logged",
    ),
    (
        "killed_leftovers",
        "processes a command left in its process group were killed",
    ),
    (
        "granted",
        "a grant began: its undo is due in RUROCO_EXPIRES_IN_MS",
    ),
    (
        "extended",
        "a repeat of an active grant moved its deadline; the command did not run again",
    ),
    (
        "waiting",
        "debug: a request waits for the grant's run or undo in progress",
    ),
    (
        "undo",
        "an undo starts (RUROCO_REASON: expired, failed, revoked, ...)",
    ),
    ("revoke", "ruroco-commander revoke undoes a grant"),
    (
        "refused",
        "a request was refused (queue_full, grant_limit) and acknowledged as refused",
    ),
    (
        "suppressed",
        "further lines of one kind were suppressed for an interval (RUROCO_COUNT)",
    ),
    (
        "grant_state_write_failed",
        "a grant's file could not be updated",
    ),
    (
        "unknown_command",
        "no command in commander.toml has the frame's hash: the client asked for a name that is not configured (--check lists the hashes)",
    ),
    (
        "rejected",
        "a connection was refused (RUROCO_REASON: peer_uid, peer_cred, too_many_connections, control_peer_uid, ...)",
    ),
    ("connected", "debug: the server connected"),
    ("disconnected", "debug: the server disconnected"),
    ("connection_error", "reading from the server failed"),
    ("short_frame", "the server sent less than a frame"),
    ("bad_frame", "the server sent a malformed frame"),
    ("ack_failed", "an acknowledgement could not be written"),
    (
        "accept_failed",
        "accepting a connection failed (e.g. too many open files); retried",
    ),
    (
        "closed_inherited_fds",
        "descriptors left open by the parent were closed so no command inherits them",
    ),
    (
        "imported",
        "pending undos of an older version's undo file became grants",
    ),
    (
        "foreign_file",
        "a file in the grants directory that the commander did not write: ignored",
    ),
    (
        "deadline_cut",
        "a grant's deadline lay further than undo_after ahead (clock stepped back): cut",
    ),
    ("reloaded", "SIGHUP: the commands were re-read"),
    (
        "pid1",
        "the commander is PID 1 (a container without an init): orphaned processes of commands are not reaped, and their zombies keep a timed-out group alive until its grace ends",
    ),
    (
        "restart_needed",
        "SIGHUP: a field that changes only on a restart was changed (RUROCO_FIELD names it); the running value stays",
    ),
    (
        "reload_failed",
        "SIGHUP: the new config is invalid; the previous commands stay",
    ),
    (
        "stopping",
        "SIGTERM or SIGINT: waiting for running commands",
    ),
    (
        "stopped",
        "stopped; undos not yet due are kept for the next start",
    ),
    ("notify_failed", "a message to systemd (sd_notify) failed"),
];

const EXAMPLES: &[Entry] = &[
    (
        "Check the config and list each command's hash:",
        "ruroco-commander --check",
    ),
    (
        "Open SSH for 5 minutes to the client's IPv4 or IPv6 address, the kernel ending the access (load /usr/share/doc/ruroco/examples/nftables/ruroco.nft first; /etc/ruroco/commander.toml explains each step):",
        "[commands.open_ssh]\nrun = 'set=clients4; case $RUROCO_IP in *:*) set=clients6;; esac; nft \"add element inet ruroco $set { $RUROCO_IP }; delete element inet ruroco $set { $RUROCO_IP }; add element inet ruroco $set { $RUROCO_IP timeout 5m }\"'\ntimeout = \"10s\"",
    ),
    (
        "List the grants, and undo one now:",
        "ruroco-commander grants\nruroco-commander revoke open_ssh 198.51.100.7",
    ),
];

/// The page's content beyond the clap definition.
pub const MANUAL: Manual = Manual {
    description: &[
        "ruroco-commander is the root half of ruroco: it accepts 24-byte frames (command hash and client address) from ruroco-server's user on a Unix socket, runs the configured command they name, and acknowledges the outcome. It never opens a network socket and runs only shell text from its root-owned config.",
    ],
    sections: &[(
        "COMMANDS",
        "Each command runs as sh -c TEXT with a clean environment (see ENVIRONMENT), stdin /dev/null, cwd /, in its own process group, as root unless the command sets user, inside ruroco-commander.service's sandbox (systemctl cat ruroco-commander.service; loosen it with a drop-in if a command needs to). A command with an undo makes a grant for (command, IP): the undo runs undo_after after the run ends, at once when the run failed, or at ruroco-commander revoke; a repeat while the grant is active only moves its deadline. Details: /usr/share/doc/ruroco/grants.md.",
    )],
    config_path: crate::config::DEFAULT_CONFIG,
    config: CONFIG,
    signals: SIGNALS,
    environment: ENVIRONMENT,
    files: FILES,
    exit_status: EXIT_STATUS,
    journal_fields: JOURNAL_FIELDS,
    events: EVENTS,
    examples: EXAMPLES,
    see_also: &[
        "ruroco-server(8)",
        "ruroco-client(1)",
        "nft(8)",
        "journalctl(1)",
    ],
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CommandTable, Config, RawConfig};
    use ruroco_kit::manual::serde_fields;
    use std::collections::BTreeSet;
    use std::path::Path;

    fn names(fields: &[Field]) -> BTreeSet<&'static str> {
        fields.iter().map(|f| f.name).collect()
    }

    /// Fails when a field exists in the code but not in the page, or the other way round.
    #[test]
    fn every_config_field_is_documented_and_every_documented_field_exists() {
        for (table, code) in [
            (TOP, serde_fields::<RawConfig>()),
            (COMMAND, serde_fields::<CommandTable>()),
        ] {
            let code: BTreeSet<&str> = code
                .expect("a serde derive struct")
                .iter()
                .copied()
                .collect();
            let doc = names(table);
            let undocumented: Vec<_> = code.difference(&doc).collect();
            let stale: Vec<_> = doc.difference(&code).collect();
            assert!(
                undocumented.is_empty() && stale.is_empty(),
                "commander/src/manual.rs: fields in config.rs but not documented: {undocumented:?}; documented but not in config.rs: {stale:?}"
            );
        }
    }

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("manual.toml")).unwrap_or_else(|e| panic!("{e}\nin:\n{text}"))
    }

    /// A command table with `name = value` set and just enough besides to be valid.
    fn command_with(name: &str, value: &str) -> String {
        let mut fields = vec![
            ("run", r#""true""#),
            ("undo", r#""true""#),
            ("undo_after", r#""5m""#),
        ];
        fields.retain(|(n, _)| *n != name);
        fields.push((name, value));
        let body: String = fields.iter().map(|(n, v)| format!("{n} = {v}\n")).collect();
        format!("[commands.c]\n{body}")
    }

    /// Every documented default is what the code uses, and every example parses.
    #[test]
    fn defaults_and_examples_are_what_the_parser_takes() {
        const ONE: &str = "[commands]\nc = \"true\"\n";
        let minimal = format!("{:?}", parse(ONE));
        for f in TOP {
            let text = |v: &str| match f.name {
                "commands" => format!("commands = {v}\n"),
                _ => format!("{} = {v}\n{ONE}", f.name),
            };
            parse(&text(f.example));
            if let FieldDefault::Value(v) = f.default {
                assert_eq!(
                    format!("{:?}", parse(&text(v))),
                    minimal,
                    "documented default of {} is not the code's",
                    f.name
                );
            }
        }
        for f in COMMAND {
            let mut text = command_with(f.name, f.example);
            if f.name == "group" {
                // A group only goes with a user.
                text.push_str("user = \"nobody\"\n");
            }
            parse(&text);
        }
    }

    /// The TOML examples are the ones packaging/commander.toml ships (commented out), verbatim.
    #[test]
    fn examples_are_the_shipped_ones() {
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/commander.toml"),
        )
        .unwrap();
        let shipped: BTreeSet<&str> = shipped.lines().collect();
        for (_, text) in EXAMPLES.iter().filter(|(_, t)| t.starts_with("[commands.")) {
            for line in text.lines() {
                assert!(
                    shipped.contains(format!("#{line}").as_str()),
                    "not in packaging/commander.toml: #{line}"
                );
            }
        }
    }

    /// Every variable `exec.rs` sets in a command's environment is named in ENVIRONMENT.
    #[test]
    fn the_commands_environment_is_what_exec_sets() {
        let exec = include_str!("exec.rs");
        let set: BTreeSet<&str> = exec
            .split(".env(\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect();
        assert!(set.contains("RUROCO_IP") && set.contains("HOME"), "{set:?}");
        let (names, text) = ENVIRONMENT
            .iter()
            .find(|(n, _)| n.contains("RUROCO_IP"))
            .unwrap();
        for var in set {
            assert!(
                names.contains(var) || text.contains(var),
                "ENVIRONMENT does not name {var}, which exec.rs sets"
            );
        }
    }

    /// FILES and the exit status 78 state the mode CONFIG_RULE demands and its ACL check.
    #[test]
    fn the_config_file_rule_is_the_one_checked() {
        let mode = format!("{:04o}", 0o666 & !crate::config::CONFIG_RULE.forbidden);
        let (_, files) = FILES
            .iter()
            .find(|(n, _)| n.ends_with("commander.toml"))
            .unwrap();
        let (_, exit78) = EXIT_STATUS.iter().find(|(c, _)| *c == 78).unwrap();
        for text in [files, exit78] {
            assert!(
                text.contains(&mode) && text.contains("ACL"),
                "{mode}: {text}"
            );
            assert!(
                text.contains("read"),
                "group/other read is refused too: {text}"
            );
        }
    }

    /// Every exit status the errors map to is documented, and every documented one happens.
    #[test]
    fn exit_statuses_are_the_codes_the_errors_map_to() {
        use crate::control::ControlError;
        use crate::error::Error;
        use crate::socket::SocketError;
        use crate::store::GrantError;
        use ruroco_kit::exit::ExitStatus;
        let io = || std::io::Error::other("x");
        let p = || "p".to_owned();
        let codes: BTreeSet<u8> = [
            Error::Usage("u".into()),
            Error::NotRoot,
            Error::Config(ruroco_kit::config_error::ConfigError::invalid(
                p(),
                "f",
                "m",
            )),
            Error::NoMatch,
            Error::Grants(GrantError::Corrupt {
                path: p(),
                message: p(),
            }),
            Error::Socket(SocketError::TooMany(2)),
            Error::Socket(SocketError::InUse { path: p() }),
            Error::Control(ControlError::Refused(p())),
            Error::Control(ControlError::Protocol {
                path: p(),
                message: p(),
            }),
            Error::Os {
                what: "w",
                source: io(),
            },
        ]
        .iter()
        .map(ExitStatus::exit_code)
        .chain([0])
        .collect();
        let documented: BTreeSet<u8> = EXIT_STATUS.iter().map(|(c, _)| *c).collect();
        assert_eq!(codes, documented);
    }

    /// Every `event = "..."` in the commander's log calls (and the shared sd_notify helper) is
    /// documented, and every documented event is logged somewhere.
    #[test]
    fn journal_events_are_the_events_logged() {
        let logged =
            ruroco_kit::manual::events_logged_by_crate(Path::new(env!("CARGO_MANIFEST_DIR")))
                .unwrap();
        let documented: BTreeSet<String> = EVENTS.iter().map(|(e, _)| (*e).to_owned()).collect();
        assert_eq!(logged, documented, "commander/src/manual.rs EVENTS");
    }
}
