//! What `ruroco-server(8)` says beyond `--help`: every `server.toml` field, signals,
//! environment, files, exit statuses and journal fields. `tests/src/bin/gen-docs.rs` renders it;
//! the tests below hold the field tables equal to the serde structs of `config.rs`, the
//! documented defaults equal to the code's, the exit statuses equal to `exit_code`, and the
//! events equal to the `event = "..."` of the log call sites. It must never hold logic.

use ruroco_kit::manual::{Entry, ExitStatus, Field, FieldDefault, Manual, Table};

const TOP: &[Field] = &[
    Field {
        name: "ips",
        ty: "array of IP addresses",
        default: FieldDefault::Required,
        example: r#"["192.0.2.1", "2001:db8::1"]"#,
        meaning: "The addresses of this server that clients send to. A datagram whose encrypted destination is not one of these is rejected as wrong_destination, so a datagram captured on one server cannot be replayed against another. At least one; never 0.0.0.0 or ::.",
    },
    Field {
        name: "listen",
        ty: "socket address",
        default: FieldDefault::Value(r#""[::]:34020""#),
        example: r#""0.0.0.0:34020""#,
        meaning: "The UDP address to bind when not socket-activated (dual-stack on Linux). Ignored under systemd, where ruroco.socket passes the socket.",
    },
    Field {
        name: "keys_dir",
        ty: "path",
        default: FieldDefault::Value(r#""/etc/ruroco/keys""#),
        example: r#""/etc/ruroco/keys""#,
        meaning: "Directory of key files: every *.key file is one key, its file stem names it in [keys.NAME]. Create them with ruroco-server gen-key (see KEYS).",
    },
    Field {
        name: "state_dir",
        ty: "path",
        default: FieldDefault::Value(r#""/var/lib/ruroco""#),
        example: r#""/var/lib/ruroco""#,
        meaning: "Replay state: the highest accepted counter of every key, written durably before a command is forwarded. Must be writable by the server's user. The unit shows the server nothing else under /var: another directory needs a drop-in with BindPaths=.",
    },
    Field {
        name: "commander_socket",
        ty: "path",
        default: FieldDefault::Value(r#""/run/ruroco/commander.sock""#),
        example: r#""/run/ruroco/commander.sock""#,
        meaning: "The commander's Unix socket (ruroco-commander.socket). The unit shows the server only /run/ruroco under /run: a socket elsewhere needs a drop-in with BindReadOnlyPaths=.",
    },
    Field {
        name: "user",
        ty: "string (user name)",
        default: FieldDefault::Value(r#""ruroco""#),
        example: r#""ruroco""#,
        meaning: "The unprivileged user to switch to when started as root without systemd; never root. Under systemd the unit already runs as this user.",
    },
    Field {
        name: "commander_uid",
        ty: "integer (uid)",
        default: FieldDefault::Value("0"),
        example: "0",
        meaning: "The uid the commander's end of the socket must have (SO_PEERCRED). Only tests change it; anything but 0 is logged as a warning (event commander_uid).",
    },
    Field {
        name: "max_clock_skew",
        ty: "duration",
        default: FieldDefault::Value(r#""1h""#),
        example: r#""5m""#,
        meaning: "Counters further than this in the future of this server's clock are rejected as future. Counters are nanoseconds since the epoch, seeded from the client's clock.",
    },
    Field {
        name: "max_age",
        ty: "duration",
        default: FieldDefault::Absent("off"),
        example: r#""10m""#,
        meaning: "Reject counters older than now minus max_age (too_old). Only useful when every client seeds its counter from a synchronised clock.",
    },
    Field {
        name: "receive_buffer",
        ty: "integer (bytes)",
        default: FieldDefault::Value("4194304"),
        example: "8388608",
        meaning: "SO_RCVBUF when the server binds the socket itself (capped by net.core.rmem_max); 1 to 1073741823. Under systemd ruroco.socket sets ReceiveBuffer= instead.",
    },
    Field {
        name: "rate_limit",
        ty: "table",
        default: FieldDefault::Absent("every field at its default"),
        example: "{ per_source = 2.0, burst = 5 }",
        meaning: "The token buckets, see [rate_limit] below.",
    },
    Field {
        name: "keys",
        ty: "table of tables",
        default: FieldDefault::Absent("every key may run every command"),
        example: r#"{ laptop = { commands = ["open_ssh"] } }"#,
        meaning: "Per-key allow-lists, see [keys.NAME] below.",
    },
];

const RATE_LIMIT: &[Field] = &[
    Field {
        name: "per_source",
        ty: "number (per second)",
        default: FieldDefault::Value("2.0"),
        example: "1.5",
        meaning: "Failed authentications per second per source IP (IPv6: also per /64). A datagram that authenticates costs its source nothing, so junk forged from a client's address cannot lock the client out. Positive.",
    },
    Field {
        name: "burst",
        ty: "integer",
        default: FieldDefault::Value("5"),
        example: "10",
        meaning: "The size of each source's bucket: failures allowed at once. At least 1.",
    },
    Field {
        name: "global",
        ty: "number (per second)",
        default: FieldDefault::Value("100000.0"),
        example: "50000.0",
        meaning: "Decryption attempts per second over all sources (bounds the CPU spent on AEAD). Keep it high: a low global cap lets a spoofed flood lock every legitimate client out. Positive.",
    },
    Field {
        name: "sources",
        ty: "integer",
        default: FieldDefault::Value("65536"),
        example: "16384",
        meaning: "Fixed capacity of the per-source table, so memory stays bounded under a flood; 1 to 16777216.",
    },
];

const KEY: &[Field] = &[Field {
    name: "commands",
    ty: "array of strings (command names)",
    default: FieldDefault::Absent("every command"),
    example: r#"["open_ssh", "hello"]"#,
    meaning: "The commands key NAME (file keys_dir/NAME.key) may run; others are rejected as not_allowed. A section without a key file is an error.",
}];

const CONFIG: &[Table] = &[
    Table {
        header: "",
        about: "Fields before the first [table].",
        fields: TOP,
    },
    Table {
        header: "[rate_limit]",
        about: "Token buckets that bound the work a flood can cause.",
        fields: RATE_LIMIT,
    },
    Table {
        header: "[keys.NAME]",
        about: "One optional section per key, NAME being the key file's stem.",
        fields: KEY,
    },
];

const EXIT_STATUS: &[ExitStatus] = &[
    (
        0,
        "stopped by SIGTERM or SIGINT; --check found config and keys valid; gen-key wrote the key; --reload: the reload was applied",
    ),
    (64, "usage: unknown argument"),
    (
        69,
        "--reload: no outcome (the server is not running, exited, or recorded nothing within 60 s), or the pid is not a ruroco-server (nothing is signalled)",
    ),
    (
        67,
        "gen-key: the group does not exist (pass --group, or create it)",
    ),
    (
        70,
        "internal error: the sandbox (Landlock, seccomp) could not be applied, the runtime failed, or the system random number generator failed",
    ),
    (73, "gen-key: the key file exists or cannot be created"),
    (
        74,
        "I/O error: the socket could not be taken or bound, or gen-key could not write the key",
    ),
    (77, "the privilege drop failed or could not be verified"),
    (
        78,
        "configuration error: server.toml, a key file, the keys directory or the replay state is invalid or unsafe, the user does not exist or is root, or systemd passed more than one socket; the message names the file or field and the fix. --reload: the reload failed (the reason is printed), also when server.toml is not TOML and no reload record is found where the state directory is assumed to be ($STATE_DIRECTORY, else the default)",
    ),
];

const SIGNALS: &[Entry] = &[
    (
        "SIGHUP",
        "Reload the config and the key files (systemctl reload ruroco, which runs ruroco-server --reload $MAINPID and fails when the reload does): ips, rate_limit, max_clock_skew, max_age, keys_dir, the keys and their [keys.NAME] allow-lists apply at once; listen, user, state_dir, commander_socket, commander_uid and receive_buffer need a restart (event restart_needed names the field). The socket and the replay state are kept. A reload fails closed: a removed key stops at once; on an error only previous keys whose files still load and pass every check stay, no new key is added, and the failure is logged (event failed, reason reload) and shown in STATUS= until the next reload.",
    ),
    (
        "SIGTERM, SIGINT",
        "Stop: finish the replay-state write in flight, let persisted frames reach the commander for a short while, then exit 0.",
    ),
];

const ENVIRONMENT: &[Entry] = &[
    ruroco_kit::manual::RUROCO_LOG,
    ruroco_kit::manual::JOURNAL_STREAM,
    (
        "NOTIFY_SOCKET",
        "Set by systemd (Type=notify): READY=1 once the server receives, STATUS= with the counters, STOPPING=1 and RELOADING=1.",
    ),
    (
        "WATCHDOG_USEC, WATCHDOG_PID",
        "Set by systemd (WatchdogSec=): the server pings the watchdog at half the interval.",
    ),
    (
        "LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES",
        "Set by systemd socket activation (ruroco.socket): the one UDP socket to receive on; listen is then ignored.",
    ),
];

const FILES: &[Entry] = &[
    (
        "/etc/ruroco/server.toml",
        "The configuration (see CONFIGURATION); --config PATH reads another file. Owned by root, not writable by group or others, no extended ACL, readable by the server's user: root:ruroco 0640 as packaged.",
    ),
    (
        "/etc/ruroco/keys/NAME.key",
        "One key each: one line of base64 (key id and AES-256 key). Owned by root or the server's user, no group write and no access at all for others (mode 0640 or stricter), no extended ACL (setfacl -b removes one), readable by the server's user: root:ruroco 0640, as ruroco-server gen-key writes it. keys_dir itself is owned by root, not writable by group or others, without an extended ACL (root:ruroco 0750). Every directory above each must be searchable by the server's user. The same file goes to the client.",
    ),
    (
        "/var/lib/ruroco/",
        "The replay state (state_dir), 0700 ruroco.",
    ),
    (
        "/run/ruroco/commander.sock",
        "The commander's socket (commander_socket).",
    ),
    (
        "/usr/lib/systemd/system/ruroco.socket, ruroco.service",
        "The units: UDP port 34020, the sandbox. Change the port with a drop-in (example in /usr/share/doc/ruroco/examples/).",
    ),
];

const JOURNAL_FIELDS: &[Entry] = &[
    (
        "RUROCO_EVENT",
        "What happened, one of the events below. Under systemd: journalctl -u ruroco RUROCO_EVENT=rejected.",
    ),
    (
        "RUROCO_REASON",
        "Why a datagram was rejected (bad_length, unknown_key, rate_limited, bad_tag, bad_version, replay, future, too_old, wrong_destination, source_mismatch, not_a_client, not_allowed; duplicate: a copy of a datagram already accepted, not run again and not counted by the fail2ban filter) or a failure's cause (persist, reload, commander_uid, ...).",
    ),
    ("RUROCO_SRC_IP", "The address a datagram came from."),
    (
        "RUROCO_IP",
        "The address the command gets as RUROCO_IP (the client's claimed address, else the source).",
    ),
    (
        "RUROCO_KEY_ID",
        "The id of the key a datagram authenticated with (never the key).",
    ),
    (
        "RUROCO_COMMAND",
        "The command hash of a frame (ruroco-commander --check lists name and hash).",
    ),
    (
        "RUROCO_COUNT",
        "In a rejection summary: how many datagrams, at most one summary per reason and source every 10 seconds.",
    ),
    ("RUROCO_ERROR", "The operating system's or parser's error."),
    (
        "RUROCO_DST_IP",
        "In a wrong_destination summary: the address the client sent to, which is not in ips.",
    ),
    (
        "RUROCO_HINT",
        "On a rejection a key holder causes (wrong_destination, future, too_old, ...) and on commander_down: what fixes it.",
    ),
    (
        "RUROCO_LATE, RUROCO_WAITED_MS",
        "On forwarded and resent (not an event of its own): RUROCO_LATE=true when the frame was written a second or more after its datagram was accepted (the commander was down), RUROCO_WAITED_MS how long it waited.",
    ),
    (
        "RUROCO_DOWN_MS",
        "On commander_down and commander_up: how long the commander has been (was) unreachable.",
    ),
    (
        "RUROCO_FIELD",
        "On restart_needed: the config field whose change needs a restart.",
    ),
    (
        "MESSAGE, SYSLOG_IDENTIFIER, PRIORITY",
        "The journal's own fields: a one-line text, ruroco-server, the level.",
    ),
];

const EVENTS: &[Entry] = &[
    (
        "started",
        "the server receives: listen address, socket activation, keys, confinement",
    ),
    (
        "accepted",
        "a datagram was valid; its counter is being persisted",
    ),
    (
        "forwarded",
        "a frame was written to the commander for the first time (RUROCO_KEY_ID, RUROCO_IP, RUROCO_COMMAND, its seq on the connection); at warn with RUROCO_LATE and RUROCO_WAITED_MS when written a second or more after it was accepted",
    ),
    (
        "resent",
        "a frame the commander had not acknowledged when the connection ended, written again on the next connection (not counted as forwarded again; RUROCO_LATE as for forwarded)",
    ),
    (
        "delivered",
        "the commander acknowledged a frame, with its outcome",
    ),
    (
        "rejected",
        "a summary of rejected datagrams (RUROCO_REASON, RUROCO_SRC_IP, RUROCO_COUNT): what the fail2ban filter reads",
    ),
    (
        "failed",
        "something did not work (RUROCO_REASON says what): the start, a reload, persisting the replay state, a frame the commander never took",
    ),
    (
        "key_skipped",
        "a *.key entry in keys_dir is not a regular file (a directory, a FIFO): skipped; move it out",
    ),
    (
        "reloaded",
        "SIGHUP: the config and keys were reloaded (what changed is in the fields)",
    ),
    (
        "restart_needed",
        "SIGHUP: a field that changes only on a restart was changed (RUROCO_FIELD names it); the running value stays",
    ),
    (
        "reload_record_failed",
        "the outcome of a reload could not be written to state_dir/reload, so ruroco-server --reload (systemctl reload) waits in vain",
    ),
    (
        "commander_connected",
        "connected to the commander (its pid and uid)",
    ),
    (
        "commander_down",
        "the commander's socket does not answer: start it (systemctl start ruroco-commander.socket), or, when the connect is refused for permission (RUROCO_HINT shows the socket's owner and mode), make the commander's socket_group a group of the server user; frames wait and are sent when it is back",
    ),
    (
        "commander_up",
        "the commander answers again after an outage (RUROCO_DOWN_MS); the frames that waited follow, logged as forwarded or resent with RUROCO_LATE",
    ),
    (
        "duplicate",
        "a copy of a datagram already accepted (the second copy of a send to a dual-stack host, a network duplicate): not run again; the fail2ban filter does not count it",
    ),
    (
        "commander_reconnect",
        "the connection to the commander ended; reconnecting",
    ),
    (
        "commander_protocol",
        "the commander sent a malformed acknowledgement; reconnecting",
    ),
    ("commander_uid", "commander_uid is not 0 (tests only)"),
    (
        "unacknowledged",
        "stopping with frames the commander did not acknowledge",
    ),
    (
        "stopping",
        "SIGTERM or SIGINT: stopping, with the final counters",
    ),
    (
        "receive_buffer",
        "SO_RCVBUF could not be raised to receive_buffer",
    ),
    (
        "sandbox",
        "seccomp is not supported by this kernel; the server runs without it",
    ),
    (
        "sandbox_selftest",
        "test builds only: the result of a probe of the sandbox",
    ),
    (
        "recv_error",
        "debug: a receive error (e.g. an ICMP error), not fatal",
    ),
    ("notify_failed", "a message to systemd (sd_notify) failed"),
];

const EXAMPLES: &[Entry] = &[
    (
        "Check the configuration and keys, then apply key changes:",
        "ruroco-server --check\nsystemctl reload ruroco",
    ),
    (
        "Make a key for a client called laptop (then copy it to the client, see KEYS):",
        "ruroco-server gen-key /etc/ruroco/keys/laptop.key",
    ),
    (
        "A minimal server.toml:",
        "ips = [\"192.0.2.1\", \"2001:db8::1\"]\n\n[keys.laptop]\ncommands = [\"open_ssh\"]",
    ),
    (
        "Rejections in the journal:",
        "journalctl -u ruroco RUROCO_EVENT=rejected",
    ),
];

/// The page's content beyond the clap definition.
pub const MANUAL: Manual = Manual {
    description: &[
        "ruroco-server receives 94-byte UDP datagrams, validates them (key, tag, counter, destination, rate limits, allow-list), writes the key's replay counter durably and forwards a 24-byte frame (command hash and client address) to ruroco-commander, which runs the command. It never answers on UDP and never runs a command.",
        "It runs as an unprivileged user with every capability dropped, confined by Landlock and seccomp, normally socket-activated by ruroco.socket (UDP port 34020).",
    ],
    sections: &[(
        "KEYS",
        "ruroco-server gen-key PATH writes a new key, owned by you and the group ruroco, mode 0640, and never overwrites a file. Copy the same file to the client over a channel you trust and keep it 0600 there, e.g. on the client: (umask 077; ssh root@SERVER cat /etc/ruroco/keys/laptop.key > ~/.config/ruroco/laptop.key). ruroco-client gen makes the same kind of key on the client; copy that into keys_dir and chown root:ruroco, chmod 0640 it. Then systemctl reload ruroco.",
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
        "ruroco-commander(8)",
        "ruroco-client(1)",
        "systemd.socket(5)",
        "journalctl(1)",
    ],
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, KeyConfig, RateLimitConfig};
    use ruroco_kit::manual::serde_fields;
    use std::collections::BTreeSet;
    use std::path::Path;

    fn names(fields: &[Field]) -> BTreeSet<&'static str> {
        fields.iter().map(|f| f.name).collect()
    }

    fn code_names(fields: Option<&'static [&'static str]>) -> BTreeSet<&'static str> {
        fields
            .expect("a struct deserialized by serde derive")
            .iter()
            .copied()
            .collect()
    }

    /// Fails when a field exists in the code but not in the page, or the other way round.
    #[test]
    fn every_config_field_is_documented_and_every_documented_field_exists() {
        for (table, code) in [
            (TOP, serde_fields::<Config>()),
            (RATE_LIMIT, serde_fields::<RateLimitConfig>()),
            (KEY, serde_fields::<KeyConfig>()),
        ] {
            let (doc, code) = (names(table), code_names(code));
            let undocumented: Vec<_> = code.difference(&doc).collect();
            let stale: Vec<_> = doc.difference(&code).collect();
            assert!(
                undocumented.is_empty() && stale.is_empty(),
                "server/src/manual.rs: fields in config.rs but not documented: {undocumented:?}; documented but not in config.rs: {stale:?}"
            );
        }
    }

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("manual.toml")).unwrap_or_else(|e| panic!("{e}\nin:\n{text}"))
    }

    /// Every documented default is what the code uses, and every example parses.
    #[test]
    fn defaults_and_examples_are_what_the_parser_takes() {
        const IPS: &str = "ips = [\"192.0.2.1\"]\n";
        let minimal = format!("{:?}", parse(IPS));
        for table in CONFIG {
            for f in table.fields {
                let line = |value: &str| match table.header {
                    "" if f.name == "ips" => format!("ips = {value}\n"),
                    "" => format!("{IPS}{} = {value}\n", f.name),
                    "[keys.NAME]" => format!(
                        "{IPS}keys_dir = \"/nonexistent\"\n[keys.a]\n{} = {value}\n",
                        f.name
                    ),
                    header => format!("{IPS}{header}\n{} = {value}\n", f.name),
                };
                parse(&line(f.example));
                if let FieldDefault::Value(v) = f.default {
                    assert_eq!(
                        format!("{:?}", parse(&line(v))),
                        minimal,
                        "documented default of {} {} is not the code's",
                        table.header,
                        f.name
                    );
                }
            }
        }
    }

    /// RUROCO_REASON lists every rejection reason the gate has.
    #[test]
    fn every_rejection_reason_is_listed() {
        let (_, text) = JOURNAL_FIELDS
            .iter()
            .find(|(f, _)| *f == "RUROCO_REASON")
            .unwrap();
        for r in ruroco_proto::Reject::ALL {
            assert!(
                text.contains(r.as_str()),
                "RUROCO_REASON lacks {}",
                r.as_str()
            );
        }
    }

    /// Every exit status the errors map to is documented, and every documented one happens.
    #[test]
    fn exit_statuses_are_the_codes_the_errors_map_to() {
        use crate::error::ServerError;
        use crate::{activation, genkey, privileges};
        use ruroco_kit::exit::ExitStatus;
        let io = || std::io::Error::other("x");
        let codes: BTreeSet<u8> = [
            ServerError::from(ruroco_kit::config_error::ConfigError::invalid(
                "p", "f", "m",
            ))
            .exit_code(),
            ServerError::Socket(activation::ActivationError::TooMany(2)).exit_code(),
            ServerError::Socket(activation::ActivationError::NotDatagram(io())).exit_code(),
            ServerError::Privileges(privileges::PrivError::NoUser("u".into())).exit_code(),
            ServerError::Privileges(privileges::PrivError::Verify("v".into())).exit_code(),
            ServerError::Runtime(io()).exit_code(),
            ServerError::Sandbox(crate::sandbox::SandboxError::Failed("s".into())).exit_code(),
            genkey::GenKeyError::NoGroup("g".into()).exit_code(),
            genkey::GenKeyError::Exists("p".into()).exit_code(),
            genkey::GenKeyError::Write {
                path: "p".into(),
                source: io(),
            }
            .exit_code(),
            genkey::GenKeyError::Generate(ruroco_proto::KeyError::Random("r".into())).exit_code(),
            crate::reload::ReloadError::Failed("f".into()).exit_code(),
            crate::reload::ReloadError::Exited(1).exit_code(),
            0,
            64,
        ]
        .into_iter()
        .collect();
        let documented: BTreeSet<u8> = EXIT_STATUS.iter().map(|(c, _)| *c).collect();
        assert_eq!(codes, documented);
    }

    /// FILES states the key file rule KEY_RULE applies: its mode, owners and the ACL check.
    #[test]
    fn the_key_file_rule_is_the_one_checked() {
        let rule = crate::keys::KEY_RULE;
        let mode = format!("{:04o}", 0o666 & !rule.forbidden);
        assert!(matches!(rule.owner, ruroco_kit::trust::Owner::RootOrUser));
        let (_, text) = FILES.iter().find(|(n, _)| n.ends_with(".key")).unwrap();
        for needle in [mode.as_str(), "ACL", "root or the server's user", "others"] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        let (_, text) = FILES
            .iter()
            .find(|(n, _)| n.ends_with("server.toml"))
            .unwrap();
        assert!(text.contains("ACL") && text.contains("root"), "{text}");
    }

    /// Every `event = "..."` in the server's log calls (and the shared sd_notify helper) is
    /// documented, and every documented event is logged somewhere.
    #[test]
    fn journal_events_are_the_events_logged() {
        let logged =
            ruroco_kit::manual::events_logged_by_crate(Path::new(env!("CARGO_MANIFEST_DIR")))
                .unwrap();
        let documented: BTreeSet<String> = EVENTS.iter().map(|(e, _)| (*e).to_owned()).collect();
        assert_eq!(logged, documented, "server/src/manual.rs EVENTS");
    }
}
