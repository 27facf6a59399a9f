//! Black-box tests of undo: it runs after `undo_after`, survives SIGKILL of the commander, a
//! repeat request extends it instead of stacking, and a corrupt state file stops start-up.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use nix::sys::signal::Signal;

fn open_close(after: &str) -> String {
    format!(
        r#"open = {{ run = "echo open $RUROCO_IP $RUROCO_COMMAND >> $DIR/out", undo = "echo close $RUROCO_IP $RUROCO_COMMAND >> $DIR/out", undo_after = "{after}" }}"#
    )
}

/// (ip, due_unix_ms) of every entry in the undo state file.
fn undo_entries(env: &Env) -> Vec<(String, u64)> {
    let text = std::fs::read_to_string(env.undo_file()).unwrap_or_default();
    let v: toml::Value = toml::from_str(&text).unwrap();
    v.get("undo")
        .and_then(|u| u.as_array())
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["ip"].as_str().unwrap().to_owned(),
                        e["due_unix_ms"].as_integer().unwrap() as u64,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn undo_runs_after_undo_after() {
    let env = Env::new();
    env.write_config("", &open_close("1s"));
    let d = env.start();
    let mut s = env.connect();
    send(&mut s, "open", "2001:db8::9");
    wait_until("the undo", || env.out_lines().len() == 2);
    assert_eq!(
        env.out_lines(),
        ["open 2001:db8::9 open", "close 2001:db8::9 open"]
    );
    d.wait_log(&["event=\"undone\"", "command=open", "ip=2001:db8::9"], 1);
    wait_until("the undo state to empty", || undo_entries(&env).is_empty());
    let mode = std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(env.undo_file()).unwrap());
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn undo_survives_sigkill_of_the_commander() {
    let env = Env::new();
    env.write_config("", &open_close("6s"));
    let mut d = env.start();
    let mut s = env.connect();
    send(&mut s, "open", "192.0.2.7");
    wait_until("the command", || env.out_lines().len() == 1);
    d.signal(Signal::SIGKILL);
    d.wait_exit();
    // Persisted before the command ran.
    let entries = undo_entries(&env);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].0, "192.0.2.7");
    assert_eq!(
        env.out_lines(),
        ["open 192.0.2.7 open"],
        "undo ran before the kill"
    );
    // The killed commander left its socket file behind: the restart replaces it.
    let d2 = env.start();
    wait_until("the undo after restart", || env.out_lines().len() == 2);
    assert_eq!(env.out_lines()[1], "close 192.0.2.7 open");
    d2.wait_log(&["event=\"undone\"", "ip=192.0.2.7"], 1);
    wait_until("the undo state to empty", || undo_entries(&env).is_empty());
}

#[test]
fn overdue_undo_runs_at_start_even_if_its_command_is_gone() {
    let env = Env::new();
    env.write_config("", "other = 'true'");
    std::fs::create_dir(env.state_dir()).unwrap();
    std::fs::write(
        env.undo_file(),
        format!(
            "[[undo]]\ncommand = \"removed\"\nip = \"198.51.100.1\"\ndue_unix_ms = 1000\nrun = \"echo $RUROCO_COMMAND $RUROCO_IP >> {}\"\n",
            env.out().display()
        ),
    )
    .unwrap();
    let d = env.start();
    wait_until("the overdue undo", || !env.out_lines().is_empty());
    assert_eq!(env.out_lines(), ["removed 198.51.100.1"]);
    d.wait_log(&["event=\"undone\"", "command=removed"], 1);
    wait_until("the undo state to empty", || undo_entries(&env).is_empty());
}

#[test]
fn a_repeat_request_extends_the_undo() {
    let env = Env::new();
    env.write_config("", &open_close("6s"));
    let d = env.start();
    let mut s = env.connect();
    send(&mut s, "open", "192.0.2.8");
    wait_until("the first run", || env.out_lines().len() == 1);
    let first = undo_entries(&env);
    assert_eq!(first.len(), 1);
    send(&mut s, "open", "192.0.2.8");
    wait_until("the second run", || env.out_lines().len() == 2);
    d.wait_log(&["event=\"undo_scheduled\"", "extended=true"], 1);
    let second = undo_entries(&env);
    assert_eq!(second.len(), 1, "one entry, not two: {second:?}");
    assert!(
        second[0].1 > first[0].1,
        "deadline moved later: {first:?} -> {second:?}"
    );
    wait_until("the undo state to empty", || undo_entries(&env).is_empty());
    let lines = env.out_lines();
    assert_eq!(
        lines,
        [
            "open 192.0.2.8 open",
            "open 192.0.2.8 open",
            "close 192.0.2.8 open"
        ]
    );
}

#[test]
fn a_corrupt_undo_file_stops_start_up() {
    let env = Env::new();
    env.write_config("", &open_close("1s"));
    std::fs::create_dir(env.state_dir()).unwrap();
    std::fs::write(env.undo_file(), "[[undo]]\ncommand = \"open\"\n").unwrap();
    let mut d = env.spawn();
    let st = d.wait_exit();
    assert_eq!(st.code(), Some(65));
    let log = d.log_text();
    assert!(
        log.contains("corrupt") && log.contains(&env.undo_file().display().to_string()),
        "{log}"
    );
    assert!(
        std::fs::read_to_string(env.undo_file())
            .unwrap()
            .contains("open"),
        "file kept"
    );
}

/// A request arriving while its own undo runs waits for that undo, then runs and schedules a
/// fresh undo (with one slot it must not deadlock against the undo it waits for).
fn request_during_running_undo(max_parallel: usize) {
    let env = Env::new();
    env.write_config(
        &format!("max_parallel = {max_parallel}"),
        r#"open = { run = "echo open >> $DIR/out", undo = "echo close-start >> $DIR/out; while [ ! -e $DIR/release ]; do sleep 0.05; done; echo close-done >> $DIR/out", undo_after = "1s" }"#,
    );
    let d = env.start();
    let mut s = env.connect();
    send(&mut s, "open", "192.0.2.1");
    wait_until("the undo to start", || {
        env.out_lines() == ["open", "close-start"]
    });
    send(&mut s, "open", "192.0.2.1");
    if max_parallel > 1 {
        // The gate opens only once the second request is known to wait for the running undo.
        // (With one slot it waits for the slot the undo holds instead.)
        d.wait_log(&["event=\"waiting_for_undo\"", "command=open"], 1);
    }
    std::fs::write(env.path("release"), "").unwrap();
    wait_until("the second undo", || env.out_lines().len() == 6);
    assert_eq!(
        env.out_lines(),
        [
            "open",
            "close-start",
            "close-done",
            "open",
            "close-start",
            "close-done"
        ]
    );
    wait_until("the undo state to empty", || undo_entries(&env).is_empty());
}

#[test]
fn a_request_during_its_running_undo_waits_for_it() {
    request_during_running_undo(2);
}

#[test]
fn a_request_during_its_running_undo_does_not_deadlock_with_one_slot() {
    request_during_running_undo(1);
}
