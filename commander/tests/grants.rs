//! Black-box tests of grants (docs/grants.md) with the real commander and a stub server that
//! writes frames and reads acknowledgements: the deadline counts from the end of the run, an
//! undo never overlaps its run, repeats extend, failed runs are undone at once, grants of an
//! earlier boot or an interrupted run are undone at start, limits refuse before running,
//! records survive SIGKILL, and only root may list or revoke.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::*;
use nix::sys::signal::Signal;
use ruroco_proto::{Ack, AckOutcome};

fn open_close(after: &str) -> String {
    format!(
        r#"open = {{ run = "echo open $RUROCO_IP >> $DIR/out", undo = "echo close $RUROCO_IP >> $DIR/out", undo_after = "{after}" }}"#
    )
}

/// The grant records on disk, parsed.
fn records(env: &Env) -> Vec<toml::Value> {
    let Ok(dir) = std::fs::read_dir(env.grants_dir()) else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        // A record removed between the listing and the read (an undo finishing) is gone.
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|text| toml::from_str(&text).unwrap())
        .collect()
}

fn deadline(r: &toml::Value) -> u64 {
    r["deadline_unix_ms"].as_integer().unwrap() as u64
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_owned()
}

fn ack(seq: u64, outcome: AckOutcome) -> Ack {
    Ack { seq, outcome }
}

/// Write a grant record as the commander would have.
fn plant(env: &Env, boot: &str, state: &str, deadline_unix_ms: u64) {
    std::fs::create_dir_all(env.grants_dir()).unwrap();
    std::fs::set_permissions(env.state_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(env.grants_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let ip = "198.51.100.1";
    let name = format!("{}_{ip}", ruroco_proto::CmdHash::of_name("open"));
    std::fs::write(
        env.grants_dir().join(name),
        format!(
            "command = \"open\"\nip = \"{ip}\"\nundo = \"echo close $RUROCO_IP >> {}\"\n\
             undo_after_ms = 300000\nboot_id = \"{boot}\"\nstate = \"{state}\"\n\
             since_unix_ms = 1\ndeadline_unix_ms = {deadline_unix_ms}\n",
            env.out().display()
        ),
    )
    .unwrap();
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn a_grant_runs_is_active_then_undone_and_forgotten() {
    let env = Env::new();
    env.write_config("", &open_close("1s"));
    let mut d = env.start();
    let mut s = env.connect();
    send(&mut s, "open", "2001:db8::9");
    assert_eq!(read_ack(&mut s), ack(0, AckOutcome::Done));
    let r = records(&env);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["state"].as_str(), Some("active"));
    assert_eq!(r[0]["ip"].as_str(), Some("2001:db8::9"));
    assert_eq!(r[0]["boot_id"].as_str(), Some(boot_id().as_str()));
    wait_until("the undo", DEADLINE, || env.out_lines().len() == 2);
    assert_eq!(env.out_lines(), ["open 2001:db8::9", "close 2001:db8::9"]);
    d.wait_log_lines(&["event=undone", "command=open", "ip=2001:db8::9"], 1);
    wait_until("the record to go", DEADLINE, || records(&env).is_empty());
    d.wait_notify("STATUS=1 commands, 0 active grants", 1);
    let mode = std::fs::metadata(env.grants_dir()).unwrap().mode();
    assert_eq!(mode & 0o777, 0o700);
}

/// Issue scenario 1: a run longer than undo_after. The deadline counts from the end of the
/// run, so the order is start, end, close, and nothing is left pending.
#[test]
fn the_undo_never_overlaps_its_run() {
    let env = Env::new();
    env.write_config(
        "",
        r#"open = { run = "echo start >> $DIR/out; sleep 2; echo end >> $DIR/out", undo = "echo close >> $DIR/out", undo_after = "1s", timeout = "20s" }"#,
    );
    let _d = env.start();
    let mut s = env.connect();
    send(&mut s, "open", "192.0.2.1");
    assert_eq!(read_ack(&mut s), ack(0, AckOutcome::Done));
    assert_eq!(
        env.out_lines(),
        ["start", "end"],
        "acknowledged once the run ended"
    );
    wait_until("the undo", DEADLINE, || env.out_lines().len() == 3);
    assert_eq!(env.out_lines(), ["start", "end", "close"]);
    wait_until("the record to go", DEADLINE, || records(&env).is_empty());
}

/// Issue scenario 2: three requests inside the window run the command once and the undo
/// once, at the later deadline.
#[test]
fn repeats_extend_instead_of_stacking() {
    let env = Env::new();
    env.write_config("", &open_close("3s"));
    let d = env.start();
    let mut s = env.connect();
    send(&mut s, "open", "192.0.2.8");
    assert_eq!(read_ack(&mut s), ack(0, AckOutcome::Done));
    let first = deadline(&records(&env)[0]);
    for seq in 1..=2 {
        // Later than the first deadline's resolution, so the extension shows.
        std::thread::sleep(std::time::Duration::from_millis(20));
        send(&mut s, "open", "192.0.2.8");
        assert_eq!(read_ack(&mut s), ack(seq, AckOutcome::Done));
    }
    assert_eq!(d.log_count(&["event=extended", "command=open"]), 2);
    let r = records(&env);
    assert_eq!(r.len(), 1, "one grant: {r:?}");
    assert!(deadline(&r[0]) > first, "deadline moved later");
    assert_eq!(env.out_lines(), ["open 192.0.2.8"], "ran once");
    wait_until("the undo", DEADLINE, || env.out_lines().len() == 2);
    assert!(
        now_ms() + 50 >= deadline(&r[0]),
        "undone at the later deadline, not the first"
    );
    wait_until("the record to go", DEADLINE, || records(&env).is_empty());
    assert_eq!(env.out_lines(), ["open 192.0.2.8", "close 192.0.2.8"]);
}

/// A repeat while the run still runs waits for it and then only extends.
#[test]
fn a_repeat_during_the_run_does_not_run_again() {
    let env = Env::new();
    env.write_config(
        "",
        r#"open = { run = "echo open >> $DIR/out; i=0; while [ ! -e $DIR/release ] && [ $i -lt 600 ]; do i=$((i+1)); sleep 0.05; done", undo = "echo close >> $DIR/out", undo_after = "1s" }"#,
    );
    let d = env.start();
    let mut s = env.connect();
    send(&mut s, "open", "192.0.2.2");
    wait_until("the run", DEADLINE, || env.out_lines().len() == 1);
    send(&mut s, "open", "192.0.2.2");
    std::fs::write(env.path("release"), "").unwrap();
    let mut acks = [read_ack(&mut s), read_ack(&mut s)];
    acks.sort_by_key(|a| a.seq);
    assert_eq!(acks, [ack(0, AckOutcome::Done), ack(1, AckOutcome::Done)]);
    wait_until("the undo", DEADLINE, || env.out_lines().len() == 2);
    assert_eq!(env.out_lines(), ["open", "close"]);
    assert_eq!(d.log_count(&["event=extended"]), 1);
}

/// A failed run is undone at once and leaves no grant; the next request runs again.
#[test]
fn a_failed_run_is_undone_at_once() {
    let env = Env::new();
    env.write_config(
        "",
        r#"open = { run = "echo open >> $DIR/out; [ -e $DIR/works ]", undo = "echo close >> $DIR/out", undo_after = "1h" }"#,
    );
    let d = env.start();
    let mut s = env.connect();
    send(&mut s, "open", "192.0.2.3");
    assert_eq!(read_ack(&mut s), ack(0, AckOutcome::Failed));
    wait_until("the undo", DEADLINE, || env.out_lines().len() == 2);
    assert_eq!(env.out_lines(), ["open", "close"]);
    d.wait_log_lines(&["event=undo", "reason=run_failed"], 1);
    wait_until("the record to go", DEADLINE, || records(&env).is_empty());
    std::fs::write(env.path("works"), "").unwrap();
    send(&mut s, "open", "192.0.2.3");
    assert_eq!(read_ack(&mut s), ack(1, AckOutcome::Done));
    assert_eq!(env.out_lines(), ["open", "close", "open"], "ran again");
    assert_eq!(records(&env).len(), 1);
}

/// A timed-out run counts as failed.
#[test]
fn a_timed_out_run_is_undone_at_once() {
    let env = Env::new();
    env.write_config(
        "",
        r#"open = { run = "echo open >> $DIR/out; sleep 30", timeout = "300ms", undo = "echo close >> $DIR/out", undo_after = "1h" }"#,
    );
    let _d = env.start();
    let mut s = env.connect();
    send(&mut s, "open", "192.0.2.4");
    assert_eq!(read_ack(&mut s), ack(0, AckOutcome::Failed));
    wait_until("the undo", DEADLINE, || env.out_lines().len() == 2);
    wait_until("the record to go", DEADLINE, || records(&env).is_empty());
}

/// A request arriving while its own undo runs waits for that undo, then runs and makes a new
/// grant (with one slot it must not deadlock against the undo it waits for).
fn request_during_running_undo(max_parallel: usize) {
    let env = Env::new();
    env.write_config(
        &format!("max_parallel = {max_parallel}"),
        r#"open = { run = "echo open >> $DIR/out", undo = "echo close-start >> $DIR/out; i=0; while [ ! -e $DIR/release ] && [ $i -lt 600 ]; do i=$((i+1)); sleep 0.05; done; echo close-done >> $DIR/out", undo_after = "1s" }"#,
    );
    let _d = env.start();
    let mut s = env.connect();
    send(&mut s, "open", "192.0.2.1");
    assert_eq!(read_ack(&mut s), ack(0, AckOutcome::Done));
    wait_until("the undo to start", DEADLINE, || {
        env.out_lines() == ["open", "close-start"]
    });
    send(&mut s, "open", "192.0.2.1");
    std::fs::write(env.path("release"), "").unwrap();
    assert_eq!(read_ack(&mut s), ack(1, AckOutcome::Done));
    wait_until("the second undo", DEADLINE, || env.out_lines().len() == 6);
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
    wait_until("the record to go", DEADLINE, || records(&env).is_empty());
}

#[test]
fn a_request_during_its_running_undo_waits_for_it() {
    request_during_running_undo(2);
}

#[test]
fn a_request_during_its_running_undo_does_not_deadlock_with_one_slot() {
    request_during_running_undo(1);
}

#[test]
fn an_active_grant_survives_sigkill_and_is_undone_after_restart() {
    let env = Env::new();
    env.write_config("", &open_close("4s"));
    let mut d = env.start();
    let mut s = env.connect();
    send(&mut s, "open", "192.0.2.7");
    assert_eq!(read_ack(&mut s), ack(0, AckOutcome::Done));
    d.signal(Signal::SIGKILL);
    d.wait_exit();
    assert_eq!(records(&env).len(), 1);
    let mut d2 = env.start();
    d2.wait_notify("STATUS=1 commands, 1 active grants", 1);
    let out = env.op(&["grants"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("open") && text.contains("192.0.2.7") && text.contains("active"),
        "{text}"
    );
    wait_until("the undo after restart", DEADLINE, || {
        env.out_lines().len() == 2
    });
    assert_eq!(env.out_lines(), ["open 192.0.2.7", "close 192.0.2.7"]);
    wait_until("the record to go", DEADLINE, || records(&env).is_empty());
}

#[test]
fn a_grant_of_an_earlier_boot_is_undone_at_start() {
    let env = Env::new();
    env.write_config("", &open_close("5m"));
    plant(
        &env,
        "00000000-0000-0000-0000-000000000000",
        "active",
        now_ms() + 3_600_000,
    );
    let d = env.start();
    wait_until("the undo", DEADLINE, || {
        env.out_lines() == ["close 198.51.100.1"]
    });
    d.wait_log_lines(&["event=undo", "reason=earlier_boot", "ip=198.51.100.1"], 1);
    wait_until("the record to go", DEADLINE, || records(&env).is_empty());
    // Not active any more: the next request runs the command again.
    let mut s = env.connect();
    send(&mut s, "open", "198.51.100.1");
    assert_eq!(read_ack(&mut s), ack(0, AckOutcome::Done));
    assert_eq!(env.out_lines(), ["close 198.51.100.1", "open 198.51.100.1"]);
}

#[test]
fn a_run_interrupted_by_a_crash_is_undone_at_start() {
    let env = Env::new();
    env.write_config("", &open_close("5m"));
    plant(&env, &boot_id(), "running", 0);
    let d = env.start();
    wait_until("the undo", DEADLINE, || {
        env.out_lines() == ["close 198.51.100.1"]
    });
    d.wait_log_lines(&["event=undo", "reason=interrupted"], 1);
    wait_until("the record to go", DEADLINE, || records(&env).is_empty());
}

/// Made while the clock was 30 days ahead, then the clock was corrected: the grant stays open
/// at most undo_after from now, and the record is rewritten so.
#[test]
fn a_deadline_far_in_the_future_is_cut_to_undo_after() {
    let env = Env::new();
    env.write_config("", &open_close("5m"));
    plant(&env, &boot_id(), "active", now_ms() + 30 * 86_400_000);
    let d = env.start();
    d.wait_log_lines(&["event=deadline_cut", "ip=198.51.100.1"], 1);
    let r = records(&env);
    assert!(deadline(&r[0]) <= now_ms() + 300_000, "{r:?}");
    let out = env.op(&["grants"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let line = text
        .lines()
        .find(|l| l.contains("198.51.100.1"))
        .unwrap_or_default();
    assert!(line.contains("active"), "{text}");
    let expires = line.split_whitespace().last().unwrap_or_default();
    assert!(
        expires.starts_with("4m") || expires == "5m0s",
        "expires within 5 minutes: {text}"
    );
}

#[test]
fn the_0_1_0_undo_file_becomes_grants() {
    let env = Env::new();
    env.write_config("", "other = 'true'");
    std::fs::create_dir(env.state_dir()).unwrap();
    std::fs::set_permissions(env.state_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(
        env.legacy_undo_file(),
        format!(
            "[[undo]]\ncommand = \"removed\"\nip = \"198.51.100.1\"\ndue_unix_ms = 1000\nrun = \"echo $RUROCO_COMMAND $RUROCO_IP >> {}\"\n",
            env.out().display()
        ),
    )
    .unwrap();
    let d = env.start();
    wait_until("the overdue undo", DEADLINE, || !env.out_lines().is_empty());
    assert_eq!(env.out_lines(), ["removed 198.51.100.1"]);
    d.wait_log_lines(&["event=undone", "command=removed"], 1);
    assert!(!env.legacy_undo_file().exists());
    wait_until("the record to go", DEADLINE, || records(&env).is_empty());
}

#[test]
fn a_corrupt_record_stops_start_up_and_is_kept() {
    let env = Env::new();
    env.write_config("", &open_close("1s"));
    plant(&env, &boot_id(), "active", 5);
    let path = std::fs::read_dir(env.grants_dir())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&path, "command = \"open\"\n").unwrap();
    let mut d = env.spawn();
    assert_eq!(d.wait_exit().code(), Some(65));
    let log = d.log_text();
    assert!(
        log.contains("run its undo by hand") && log.contains(&path.display().to_string()),
        "{log}"
    );
    assert!(path.exists(), "file kept");
}

#[test]
fn grant_limits_refuse_before_running() {
    let env = Env::new();
    env.write_config(
        "max_grants = 3",
        &format!(
            "{}\nb = {{ run = \"echo b $RUROCO_IP >> $DIR/out\", undo = \"true\", undo_after = \"1h\", max_grants = 1 }}",
            open_close("1h")
        ),
    );
    let d = env.start();
    let mut s = env.connect();
    send(&mut s, "b", "192.0.2.1");
    assert_eq!(read_ack(&mut s), ack(0, AckOutcome::Done));
    send(&mut s, "b", "192.0.2.2");
    assert_eq!(read_ack(&mut s), ack(1, AckOutcome::Refused), "per command");
    for (seq, i) in (2..).zip(1..=2) {
        send(&mut s, "open", &format!("192.0.2.{i}"));
        assert_eq!(read_ack(&mut s), ack(seq, AckOutcome::Done));
    }
    send(&mut s, "open", "192.0.2.3");
    assert_eq!(read_ack(&mut s), ack(4, AckOutcome::Refused), "total");
    // The limits count grants, not requests: a repeat still extends.
    send(&mut s, "open", "192.0.2.1");
    assert_eq!(read_ack(&mut s), ack(5, AckOutcome::Done));
    assert_eq!(
        env.out_lines(),
        ["b 192.0.2.1", "open 192.0.2.1", "open 192.0.2.2"]
    );
    assert_eq!(records(&env).len(), 3);
    assert_eq!(
        d.log_count(&["event=refused", "reason=grant_limit"]),
        1,
        "second is summarised"
    );
}

#[test]
fn revoke_undoes_now_and_grants_lists() {
    let env = Env::new();
    env.write_config("", &open_close("1h"));
    let _d = env.start();
    let mut s = env.connect();
    for (seq, ip) in [(0, "192.0.2.1"), (1, "2001:db8::1")] {
        send(&mut s, "open", ip);
        assert_eq!(read_ack(&mut s), ack(seq, AckOutcome::Done));
    }
    let out = env.op(&["grants"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("COMMAND") && lines[0].contains("EXPIRES IN"),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("2001:db8::1") && l.contains("active") && l.contains("59m")),
        "{text}"
    );

    let out = env.op(&["revoke", "open", "192.0.2.1"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "revoked open 192.0.2.1 (undo started)\n"
    );
    wait_until("the undo", DEADLINE, || {
        env.out_lines().contains(&"close 192.0.2.1".to_owned())
    });
    wait_until("one record left", DEADLINE, || records(&env).len() == 1);

    let out = env.op(&["revoke", "open", "192.0.2.1"]);
    assert_eq!(out.status.code(), Some(1), "nothing matched: {out:?}");
    let out = env.op(&["revoke"]);
    assert!(out.status.success(), "{out:?}");
    wait_until("every undo", DEADLINE, || records(&env).is_empty());
    assert_eq!(env.out_lines().len(), 4);
    let out = env.op(&["grants"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no grants\n");
}

/// Only root may list or revoke: nobody is kept out by the 0700 directory and, with the
/// directory and socket opened up, by the SO_PEERCRED check.
#[test]
fn a_non_root_user_cannot_list_or_revoke() {
    let env = Env::new();
    env.write_config("", &open_close("1h"));
    let d = env.start();
    let mut s = env.connect();
    send(&mut s, "open", "192.0.2.1");
    assert_eq!(read_ack(&mut s), ack(0, AckOutcome::Done));
    let (_keep, bin) = copy_for_nobody(std::path::Path::new(BIN));
    let run_as_nobody = |args: &[&str]| {
        as_nobody(&bin)
            .arg("--control")
            .arg(env.control())
            .args(args)
            .output()
            .unwrap()
    };
    let dir_mode = std::fs::metadata(env.control().parent().unwrap())
        .unwrap()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    let sock_mode = std::fs::metadata(env.control()).unwrap().mode();
    assert_eq!(sock_mode & 0o777, 0o600);
    for args in [&["grants"][..], &["revoke"][..]] {
        let out = run_as_nobody(args);
        assert_eq!(out.status.code(), Some(69), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the commander"));
    }
    // The attacker gets past the file permissions; the peer check still refuses.
    std::fs::set_permissions(
        env.control().parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(env.control(), std::fs::Permissions::from_mode(0o666)).unwrap();
    for args in [&["grants"][..], &["revoke"][..]] {
        let out = run_as_nobody(args);
        assert_eq!(out.status.code(), Some(77), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("may not use the control socket"),
            "{out:?}"
        );
    }
    d.wait_log_lines(
        &["event=rejected", "reason=control_peer_uid", "uid=65534"],
        2,
    );
    assert_eq!(env.out_lines(), ["open 192.0.2.1"], "nothing revoked");
    assert_eq!(records(&env).len(), 1);
}

/// Issue scenario 3 at the commander: a stopping commander reads no new frame, finishes and
/// acknowledges what runs, and leaves queued frames unacknowledged (the server sends them
/// again to the next commander).
#[test]
fn a_stopping_commander_acknowledges_what_ran_and_nothing_else() {
    let env = Env::new();
    env.write_config(
        "max_parallel = 1",
        r#"gate = "echo run $RUROCO_IP >> $DIR/out; i=0; while [ ! -e $DIR/release ] && [ $i -lt 600 ]; do i=$((i+1)); sleep 0.05; done""#,
    );
    let mut d = env.start();
    let mut s = env.connect();
    send(&mut s, "gate", "192.0.2.1");
    wait_until("the first run", DEADLINE, || env.out_lines().len() == 1);
    send(&mut s, "gate", "192.0.2.2");
    d.signal(Signal::SIGTERM);
    d.wait_log_lines(&["event=stopping"], 1);
    // Written after the stop began: never read.
    send(&mut s, "gate", "192.0.2.3");
    std::fs::write(env.path("release"), "").unwrap();
    assert_eq!(read_ack(&mut s), ack(0, AckOutcome::Done));
    // Then the connection ends (EOF, or a reset for the unread frame) with nothing more.
    let mut rest = Vec::new();
    use std::io::Read;
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "no other acknowledgement: {rest:?}");
    assert!(d.wait_exit().success());
    assert_eq!(env.out_lines(), ["run 192.0.2.1"]);
}

/// Frames the server's uid can send at any rate are logged once per interval, then counted.
#[test]
fn a_flood_of_unknown_frames_is_summarised() {
    let env = Env::new();
    env.write_config("", "x = 'true'");
    let d = env.start();
    let mut s = env.connect();
    let mut all = Vec::new();
    for i in 0..2000u32 {
        all.extend_from_slice(&frame("nope", &format!("10.0.{}.{}", i / 250, i % 250)));
    }
    use std::io::Write;
    s.write_all(&all).unwrap();
    for seq in 0..2000 {
        assert_eq!(read_ack(&mut s), ack(seq, AckOutcome::UnknownCommand));
    }
    assert_eq!(
        d.log_count(&["event=unknown_command"]),
        1,
        "{}",
        d.log_text().len()
    );
    assert!(d.log_text().lines().count() < 20, "log stays short");
}

/// A revoke is recorded before its undo runs: a commander killed during that undo runs it
/// again at the next start instead of keeping the grant open until its old deadline.
#[test]
fn a_revoke_interrupted_by_a_crash_is_undone_at_the_next_start() {
    let env = Env::new();
    env.write_config(
        "",
        r#"open = { run = "echo open >> $DIR/out", undo = "echo close >> $DIR/out; i=0; while [ ! -e $DIR/release ] && [ $i -lt 600 ]; do i=$((i+1)); sleep 0.05; done", undo_after = "1h" }"#,
    );
    let mut d = env.start();
    let mut s = env.connect();
    send(&mut s, "open", "192.0.2.5");
    assert_eq!(read_ack(&mut s), ack(0, AckOutcome::Done));
    let out = env.op(&["revoke", "open", "192.0.2.5"]);
    assert!(out.status.success(), "{out:?}");
    wait_until("the undo to start", DEADLINE, || {
        env.out_lines() == ["open", "close"]
    });
    assert!(
        deadline(&records(&env)[0]) <= now_ms(),
        "recorded as due now"
    );
    d.signal(Signal::SIGKILL);
    d.wait_exit();
    std::fs::write(env.path("release"), "").unwrap();
    let d2 = env.start();
    wait_until("the undo again", DEADLINE, || env.out_lines().len() == 3);
    assert_eq!(env.out_lines(), ["open", "close", "close"]);
    d2.wait_log_lines(&["event=undone", "ip=192.0.2.5"], 1);
    wait_until("the record to go", DEADLINE, || records(&env).is_empty());
}

/// `grants` / `revoke` refuse to talk to a control socket that a non-root process serves (a
/// local user's impostor at the path), before sending anything.
#[test]
fn the_operator_commands_refuse_an_impostor_socket() {
    let env = Env::new();
    let dir = env.path("impostor");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let sock = dir.join("control.sock");
    let script = "import socket,sys\n\
        s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1)\n\
        print('ready', flush=True)\n\
        c,_=s.accept(); got=c.recv(4096)\n\
        open(sys.argv[2],'wb').write(got)\n\
        c.sendall(b'{\"grants\":[]}\\n')\n";
    let got = env.path("impostor-got");
    std::fs::write(&got, "").unwrap();
    std::fs::set_permissions(&got, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut child = as_nobody(std::path::Path::new("/usr/bin/python3"))
        .args(["-c", script])
        .arg(&sock)
        .arg(&got)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "ready\n");
    let out = std::process::Command::new(BIN)
        .arg("--control")
        .arg(&sock)
        .arg("revoke")
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(out.status.code(), Some(77), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not root: refusing to talk to it"),
        "{out:?}"
    );
    assert_eq!(std::fs::read(&got).unwrap(), b"", "nothing was sent to it");
}
