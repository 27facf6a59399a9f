//! End to end grants (docs/grants.md) with the real client, server and commander: an undo never
//! overlaps its run, repeats extend instead of stacking, a failed run is undone at once, a
//! grant of an earlier boot is undone at start, a graceful commander stop loses no request, a
//! SIGKILL right after a frame was read runs it at least once and at most twice, and only root
//! may list or revoke grants. Must never run against system paths.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr};

use nix::sys::signal::Signal;
use ruroco_testkit::{DEADLINE, chmod, wait_for};
use ruroco_tests::Chain;

const MARKER_SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

fn send(c: &Chain, command: &str) {
    let addr = c.addr4().to_string();
    c.client_send(&addr, "k1", &["-c", command]);
}

/// Wait until the out file holds exactly `want`; fail at once if it holds more lines.
fn wait_lines(c: &Chain, want: &[&str]) {
    wait_for(&format!("the runs {want:?}"), DEADLINE, || {
        let lines = c.out_lines();
        assert!(
            lines.len() <= want.len(),
            "more ran than {want:?}: {lines:?}\ncommander log:\n{}",
            c.commander_log()
        );
        (lines == want).then_some(())
    });
}

/// A command `open` recording `open <ip>`, its undo `close <ip>`, after `after`.
fn open_close(after: &str) -> String {
    format!(
        r#"{{ run = "echo open $RUROCO_IP >> @OUT", undo = "echo close $RUROCO_IP >> @OUT", undo_after = "{after}" }}"#
    )
}

fn grants_output(c: &Chain) -> String {
    let o = c.commander_op(&["grants"]);
    assert!(o.status.success(), "{o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A chain whose `slow` command records `slow`, then waits for `release`.
fn slow_chain() -> Chain {
    Chain::builder()
        .command(
            "slow",
            r#""echo slow >> @OUT; i=0; while [ ! -e @DIR/release ] && [ $i -lt 600 ]; do i=$((i+1)); sleep 0.05; done""#,
        )
        .start()
}

fn release(c: &Chain) {
    std::fs::write(c.path().join("release"), "").unwrap();
}

/// Issue scenario 1: the run takes longer than undo_after; the undo still comes after it.
#[test]
fn the_undo_never_overlaps_a_slow_run() {
    let mut c = Chain::builder()
        .command(
            "open",
            r#"{ run = "echo start >> @OUT; sleep 3; echo end >> @OUT", undo = "echo close >> @OUT", undo_after = "1s", timeout = "20s" }"#,
        )
        .start();
    send(&c, "open");
    wait_lines(&c, &["start", "end", "close"]);
    wait_for("the grant to go", DEADLINE, || {
        (grants_output(&c) == "no grants\n").then_some(())
    });
    c.assert_only_ran("k1", &["start", "end", "close"], MARKER_SRC);
    let s = c.wait_counter("delivered", 2);
    assert_eq!(s.get("forwarded"), s.get("delivered"), "{s:?}");
}

/// Issue scenario 2: three requests inside the window: one run, one undo, at the later
/// deadline (read from the grant's record, wall-clock ms).
#[test]
fn repeats_inside_the_window_run_once_and_undo_once() {
    let mut c = Chain::builder().command("open", &open_close("3s")).start();
    send(&c, "open");
    wait_lines(&c, &["open 127.0.0.1"]);
    c.wait_counter("delivered", 1);
    let first = record_deadline(&c);
    for n in 2..=3 {
        send(&c, "open");
        c.wait_counter("delivered", n);
    }
    let last = record_deadline(&c);
    assert!(last > first, "the deadline moved: {first} -> {last}");
    assert_eq!(c.out_lines(), ["open 127.0.0.1"], "ran once");
    let extended = c
        .commander_log()
        .lines()
        .filter(|l| ruroco_testkit::line_has(l, "event=extended"))
        .count();
    assert_eq!(extended, 2, "{}", c.commander_log());
    wait_lines(&c, &["open 127.0.0.1", "close 127.0.0.1"]);
    assert!(
        now_ms() + 50 >= last,
        "undone at the last deadline, not the first"
    );
    c.assert_only_ran("k1", &["open 127.0.0.1", "close 127.0.0.1"], MARKER_SRC);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The deadline (wall-clock ms) of the one grant record in the commander's state.
fn record_deadline(c: &Chain) -> u64 {
    let mut files: Vec<_> = std::fs::read_dir(c.cstate_dir.join("grants"))
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(files.len(), 1, "one grant record");
    let text = std::fs::read_to_string(files.remove(0).path()).unwrap();
    let v: toml::Value = toml::from_str(&text).unwrap();
    v["deadline_unix_ms"].as_integer().unwrap() as u64
}

#[test]
fn a_failed_run_is_undone_at_once_and_the_next_request_runs_again() {
    let c = Chain::builder()
        .command(
            "open",
            r#"{ run = "echo open >> @OUT; [ -e @DIR/works ]", undo = "echo close >> @OUT", undo_after = "1h" }"#,
        )
        .start();
    send(&c, "open");
    wait_lines(&c, &["open", "close"]);
    wait_for("the grant to go", DEADLINE, || {
        (grants_output(&c) == "no grants\n").then_some(())
    });
    std::fs::write(c.path().join("works"), "").unwrap();
    send(&c, "open");
    wait_lines(&c, &["open", "close", "open"]);
    // The output line is written while the run goes on (`running`); it is `active` once the
    // run has exited 0.
    let g = wait_for("the grant to be active", DEADLINE, || {
        let g = grants_output(&c);
        g.contains("active").then_some(g)
    });
    assert!(g.contains("open") && g.contains("127.0.0.1"), "{g}");
}

/// Records of an earlier boot are undone when the commander starts, and are not active.
#[test]
fn a_grant_recorded_under_another_boot_is_undone_at_start() {
    let mut c = Chain::builder()
        .command("open", &open_close("1h"))
        .without_commander()
        .start();
    let grants = c.cstate_dir.join("grants");
    std::fs::create_dir(&grants).unwrap();
    let name = format!("{}_127.0.0.1", ruroco_proto::CmdHash::of_name("open"));
    let far = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 3_600_000;
    std::fs::write(
        grants.join(name),
        format!(
            "command = \"open\"\nip = \"127.0.0.1\"\nundo = \"echo close $RUROCO_IP >> {}\"\n\
             undo_after_ms = 3600000\nboot_id = \"11111111-2222-3333-4444-555555555555\"\n\
             state = \"active\"\nsince_unix_ms = 1\ndeadline_unix_ms = {far}\n",
            c.out.display()
        ),
    )
    .unwrap();
    c.start_commander();
    wait_lines(&c, &["close 127.0.0.1"]);
    // Not active: the next request runs the command again instead of extending.
    send(&c, "open");
    wait_lines(&c, &["close 127.0.0.1", "open 127.0.0.1"]);
}

/// Issue scenario 3: a request that arrives while the commander drains for SIGTERM is not
/// lost: the server sends it again to the next commander, and it runs once.
#[test]
fn a_request_during_a_graceful_stop_runs_after_the_restart() {
    let mut c = slow_chain();
    send(&c, "slow");
    wait_lines(&c, &["slow"]);
    c.commander_mut().signal(Signal::SIGTERM);
    c.commander_mut().wait_log("event=stopping");
    send(&c, "hello");
    c.wait_counter("forwarded", 2);
    release(&c);
    let mut d = c.commander.take().unwrap();
    assert_eq!(d.wait_exit().code(), Some(0));
    drop(d);
    assert_eq!(c.out_lines(), ["slow"], "nothing ran while stopping");
    c.start_commander();
    wait_lines(&c, &["slow", "hello 127.0.0.1"]);
    let s = c.wait_counter("delivered", 2);
    assert_eq!(s.get("queue_dropped").copied().unwrap_or(0), 0, "{s:?}");
    c.assert_only_ran("k1", &["slow", "hello 127.0.0.1"], MARKER_SRC);
    assert!(
        ruroco_testkit::log_has(&c.server_log(), "event=resent"),
        "{}",
        c.server_log()
    );
}

/// SIGKILL of the commander while a grant's run runs (the frame read, not acknowledged):
/// the run is undone at the next start (it may have half-applied), the server sends the
/// request again, and it runs a second time, never a third; one grant is left, active.
#[test]
fn sigkill_after_a_frame_was_read_runs_it_at_least_once_and_at_most_twice() {
    let mut c = Chain::builder()
        .command(
            "open",
            r#"{ run = "echo open >> @OUT; i=0; while [ ! -e @DIR/release ] && [ $i -lt 600 ]; do i=$((i+1)); sleep 0.05; done", undo = "echo close >> @OUT", undo_after = "1h" }"#,
        )
        .start();
    send(&c, "open");
    wait_lines(&c, &["open"]);
    let st = c.stop_commander(Signal::SIGKILL);
    assert_eq!(st.code(), None, "killed");
    release(&c);
    c.start_commander();
    wait_lines(&c, &["open", "close", "open"]);
    c.wait_counter("delivered", 1);
    let g = grants_output(&c);
    assert_eq!(g.lines().count(), 2, "one grant: {g}");
    assert!(g.contains("active"), "{g}");
    c.assert_only_ran("k1", &["open", "close", "open"], MARKER_SRC);
}

/// The same for a command without an undo: it ran before the kill and runs once more.
#[test]
fn sigkill_during_a_plain_command_runs_it_at_most_twice() {
    let mut c = slow_chain();
    send(&c, "slow");
    wait_lines(&c, &["slow"]);
    c.stop_commander(Signal::SIGKILL);
    release(&c);
    c.start_commander();
    wait_lines(&c, &["slow", "slow"]);
    c.wait_counter("delivered", 1);
    c.assert_only_ran("k1", &["slow", "slow"], MARKER_SRC);
}

#[test]
fn only_root_lists_and_revokes_grants() {
    let c = Chain::builder()
        .command(
            "open",
            r#"{ run = "echo open >> @OUT", undo = "echo close >> @OUT", undo_after = "1h" }"#,
        )
        .start();
    send(&c, "open");
    wait_lines(&c, &["open"]);
    let as_nobody = |args: &[&str]| {
        ruroco_testkit::as_nobody(&c.bin.join("ruroco-commander"))
            .arg("--control")
            .arg(c.control_socket())
            .args(args)
            .current_dir("/")
            .output()
            .unwrap()
    };
    for args in [&["grants"][..], &["revoke", "open"][..]] {
        let o = as_nobody(args);
        assert!(!o.status.success(), "{o:?}");
    }
    // Past the file permissions, the commander's SO_PEERCRED check still refuses.
    chmod(c.control_socket().parent().unwrap(), 0o755);
    chmod(&c.control_socket(), 0o666);
    let o = as_nobody(&["revoke", "open"]);
    assert_eq!(o.status.code(), Some(77), "{o:?}");
    assert_eq!(c.out_lines(), ["open"], "nothing revoked");
    // Root may.
    let o = c.commander_op(&["revoke", "open"]);
    assert!(o.status.success(), "{o:?}");
    wait_lines(&c, &["open", "close"]);
}
