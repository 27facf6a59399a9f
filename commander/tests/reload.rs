//! Reload of the real commander: `ruroco-commander reload` (what `ExecReload=` runs) answers
//! with the outcome and exits non-zero on a failed reload; a failed reload fails closed (a
//! command removed from the file stops at once, whatever else is wrong); settings that need a
//! restart are named; a grant of a removed command is still undone at its deadline.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use nix::sys::signal::Signal;
use ruroco_proto::AckOutcome;
use std::os::unix::fs::PermissionsExt;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_removed_command_stops_at_a_reload_that_also_has_a_bad_entry() {
    let env = Env::new();
    env.write_config(
        "",
        "one = 'echo one >> $DIR/out'\ntwo = 'echo two >> $DIR/out'",
    );
    let mut d = env.start();
    assert_eq!(env.ask("two"), AckOutcome::Done);

    // `two` removed, and a new entry that is refused (undo without undo_after).
    env.write_config(
        "",
        "one = 'echo one >> $DIR/out'\nbad = { run = 'true', undo = 'true' }",
    );
    let out = env.op(&["reload"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("reload failed")
            && err.contains("commands.bad")
            && err.contains("removed two"),
        "{err}"
    );
    let status = d.wait_notify_prefix("STATUS=reload failed");
    assert!(status.ends_with("1 commands, 0 active grants"), "{status}");
    d.wait_log_lines(&["event=reload_failed", "commands=1"], 1);

    assert_eq!(env.ask("two"), AckOutcome::UnknownCommand);
    assert_eq!(env.ask("one"), AckOutcome::Done);
    assert_eq!(env.ask("bad"), AckOutcome::UnknownCommand);
    assert_eq!(env.out_lines(), ["two", "one"]);

    // Fixed: the reload succeeds (exit 0), and `STATUS=` no longer shows the failure.
    env.write_config(
        "",
        "one = 'echo one >> $DIR/out'\nbad = { run = 'true', undo = 'true', undo_after = '1m' }\n\
         three = 'echo three >> $DIR/out'",
    );
    let out = env.op(&["reload"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "reloaded: 3 commands (added bad, three)"
    );
    d.wait_notify("STATUS=3 commands, 0 active grants", 1);
    assert_eq!(env.ask("three"), AckOutcome::Done);
}

#[test]
fn an_untrusted_or_unparsable_file_keeps_no_command() {
    let env = Env::new();
    env.write_config("", "one = 'echo one >> $DIR/out'");
    let d = env.start();
    // Writable by others: nothing in it can be trusted, not even what did not change.
    std::fs::set_permissions(env.config(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = env.op(&["reload"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("removed one"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(env.ask("one"), AckOutcome::UnknownCommand);

    // Not TOML: which commands are still meant cannot be told. The control socket is then
    // found through $RUNTIME_DIRECTORY, as systemd sets it for ExecReload=.
    env.write_config("", "one = 'echo one >> $DIR/out'");
    let out = env.op(&["reload"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(env.ask("one"), AckOutcome::Done);
    std::fs::write(env.config(), "[commands\none = 'x'\n").unwrap();
    std::fs::set_permissions(env.config(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(env.config())
        .arg("reload")
        .env("RUNTIME_DIRECTORY", env.path("control"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", text(&out.stderr));
    assert_eq!(env.ask("one"), AckOutcome::UnknownCommand);
    drop(d);
}

#[test]
fn restart_only_settings_are_named_and_sighup_still_reloads() {
    let env = Env::new();
    env.write_config("queue = 8", "one = 'echo one >> $DIR/out'");
    let mut d = env.start();
    env.write_config(
        "queue = 9\nmax_parallel = 2",
        "one = 'echo one >> $DIR/out'\ntwo = 'echo two >> $DIR/out'",
    );
    let out = env.op(&["reload"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "reloaded: 2 commands (added two); restart needed for max_parallel, queue (systemctl restart ruroco-commander)"
    );
    for field in ["max_parallel", "queue"] {
        d.wait_log_lines(
            &[
                "event=restart_needed",
                &format!("field={field}"),
                "systemctl restart ruroco-commander",
            ],
            1,
        );
    }
    d.wait_notify_prefix("STATUS=restart needed for max_parallel, queue");

    // Plain SIGHUP: same reload, no answer (a removed command stops too).
    env.write_config(
        "queue = 9\nmax_parallel = 2",
        "two = 'echo two >> $DIR/out'\nbad = 5",
    );
    d.signal(Signal::SIGHUP);
    d.wait_log_lines(&["event=reload_failed"], 1);
    assert_eq!(env.ask("one"), AckOutcome::UnknownCommand);
    assert_eq!(env.ask("two"), AckOutcome::Done);
}

#[test]
fn a_grant_of_a_removed_command_is_still_undone_at_its_deadline() {
    let env = Env::new();
    env.write_config(
        "",
        "g = { run = 'echo run >> $DIR/out', undo = 'echo undo >> $DIR/out', undo_after = '2s' }\n\
         x = 'true'",
    );
    let d = env.start();
    assert_eq!(env.ask("g"), AckOutcome::Done);
    env.write_config("", "x = 'true'\nbroken = { run = '' }");
    assert_eq!(env.op(&["reload"]).status.code(), Some(78));
    assert_eq!(env.ask("g"), AckOutcome::UnknownCommand);
    d.wait_log_lines(&["event=undo", "reason=expired", "command=g"], 1);
    wait_until("the undo to run", DEADLINE, || {
        env.out_lines() == ["run", "undo"]
    });
}

#[test]
fn reload_without_a_commander_fails() {
    let env = Env::new();
    env.write_config("", "one = 'true'");
    let out = env.op(&["reload"]);
    assert_eq!(out.status.code(), Some(69), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("cannot reach the commander"));
}
