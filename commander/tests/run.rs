//! Black-box tests of running commands: the real commander, a test-owned stub server writing
//! frames, and outcomes read from files the configured commands write.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use nix::sys::signal::Signal;
use ruroco_proto::{Ack, AckOutcome};
use std::io::Read;

const RECORD: &str = r#"echo "$RUROCO_IP $RUROCO_COMMAND" >> $DIR/out"#;

#[test]
fn hello_runs_with_the_ip_v4_and_v6() {
    let env = Env::new();
    env.write_config("", &format!("hello = '{RECORD}'"));
    let d = env.start();
    let mut s = env.connect();
    send(&mut s, "hello", "192.0.2.7");
    send(&mut s, "hello", "2001:db8::7");
    wait_until("both runs", DEADLINE, || env.out_lines().len() == 2);
    let mut lines = env.out_lines();
    lines.sort();
    assert_eq!(lines, ["192.0.2.7 hello", "2001:db8::7 hello"]);
    d.wait_log_lines(
        &["event=executed", "command=hello", "exit=0", "duration_ms="],
        2,
    );
}

#[test]
fn unknown_hash_runs_nothing_and_the_connection_keeps_working() {
    let env = Env::new();
    env.write_config(
        "",
        &format!("hello = '{RECORD}'\nother = 'echo other >> $DIR/out'"),
    );
    let d = env.start();
    let mut s = env.connect();
    send(&mut s, "no_such_command", "192.0.2.1");
    // A frame without an IP is malformed; it is logged and skipped as well.
    use std::io::Write;
    s.write_all(&[0u8; 24]).unwrap();
    send(&mut s, "hello", "192.0.2.2");
    wait_until("hello after the unknown frame", DEADLINE, || {
        !env.out_lines().is_empty()
    });
    d.wait_log_lines(&["event=executed", "command=hello"], 1);
    assert_eq!(env.out_lines(), ["192.0.2.2 hello"]);
    assert_eq!(d.log_count(&["event=unknown_command", "ip=192.0.2.1"]), 1);
    assert_eq!(d.log_count(&["event=bad_frame"]), 1);
}

#[test]
fn short_frame_closes_the_connection_without_running() {
    let env = Env::new();
    env.write_config("", &format!("hello = '{RECORD}'"));
    let d = env.start();
    let mut s = env.connect();
    use std::io::Write;
    let f = frame("hello", "192.0.2.3");
    s.write_all(&f[..10]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    d.wait_log_lines(&["event=short_frame", "bytes=10"], 1);
    // A complete frame on a new connection still runs, and is the only run.
    let mut s2 = env.connect();
    send(&mut s2, "hello", "192.0.2.4");
    d.wait_log_lines(&["event=executed", "command=hello"], 1);
    assert_eq!(env.out_lines(), ["192.0.2.4 hello"]);
}

/// The codec reassembles a frame that arrives in pieces (a pause between them) and a write
/// holding three frames and the start of a fourth: each frame runs once and is acknowledged.
#[test]
fn frames_split_and_batched_across_writes_each_run_once() {
    let env = Env::new();
    env.write_config("", &format!("hello = '{RECORD}'"));
    let d = env.start();
    let mut s = env.connect();
    use std::io::Write;
    let first = frame("hello", "192.0.2.11");
    s.write_all(&first[..1]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    s.write_all(&first[1..20]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    s.write_all(&first[20..]).unwrap();
    assert_eq!(
        read_ack(&mut s),
        Ack {
            seq: 0,
            outcome: AckOutcome::Done
        }
    );
    let mut batch = Vec::new();
    for ip in ["192.0.2.12", "192.0.2.13", "192.0.2.14", "192.0.2.15"] {
        batch.extend_from_slice(&frame("hello", ip));
    }
    s.write_all(&batch[..3 * 24 + 5]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    s.write_all(&batch[3 * 24 + 5..]).unwrap();
    let mut seqs: Vec<u64> = (0..4).map(|_| read_ack(&mut s).seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, [1, 2, 3, 4]);
    d.wait_log_lines(&["event=executed", "command=hello"], 5);
    let mut ran = env.out_lines();
    ran.sort();
    assert_eq!(
        ran,
        [
            "192.0.2.11 hello",
            "192.0.2.12 hello",
            "192.0.2.13 hello",
            "192.0.2.14 hello",
            "192.0.2.15 hello"
        ]
    );
    assert_eq!(d.log_count(&["event=short_frame"]), 0);
}

#[test]
fn timeout_kills_the_whole_process_group() {
    let env = Env::new();
    env.write_config(
        "",
        r#"hang = { run = "echo $$ > $DIR/pgid; sleep 1000 & sleep 1000", timeout = "2s" }"#,
    );
    let d = env.start();
    let mut s = env.connect();
    send(&mut s, "hang", "192.0.2.9");
    wait_until("the pgid file", DEADLINE, || {
        std::fs::read_to_string(env.path("pgid")).is_ok_and(|t| t.ends_with('\n'))
    });
    let pgid: i32 = std::fs::read_to_string(env.path("pgid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_until("both sleeps in the command's group", DEADLINE, || {
        members_of_group(pgid).len() >= 3
    });
    d.wait_log_lines(&["event=failed", "reason=timeout", "command=hang"], 1);
    let left = members_of_group(pgid);
    assert!(left.is_empty(), "processes left in group {pgid}: {left:?}");
}

#[test]
fn a_slow_command_does_not_delay_a_fast_one() {
    let env = Env::new();
    env.write_config(
        "max_parallel = 4",
        r#"slow = "echo slow-started >> $DIR/out; i=0; while [ ! -e $DIR/release ] && [ $i -lt 600 ]; do i=$((i+1)); sleep 0.05; done; echo slow-done >> $DIR/out"
fast = "echo fast >> $DIR/out""#,
    );
    let d = env.start();
    let mut s = env.connect();
    send(&mut s, "slow", "192.0.2.1");
    wait_until("slow to start", DEADLINE, || {
        env.out_lines().contains(&"slow-started".to_owned())
    });
    send(&mut s, "fast", "192.0.2.1");
    wait_until("fast to run", DEADLINE, || {
        env.out_lines().contains(&"fast".to_owned())
    });
    assert!(
        !env.out_lines().contains(&"slow-done".to_owned()),
        "fast ran only after slow finished"
    );
    std::fs::write(env.path("release"), "").unwrap();
    wait_until("slow to finish", DEADLINE, || {
        env.out_lines().contains(&"slow-done".to_owned())
    });
    d.wait_log_lines(&["event=executed"], 2);
}

#[test]
fn beyond_max_parallel_and_queue_frames_are_refused_and_acknowledged_so() {
    let env = Env::new();
    env.write_config(
        "max_parallel = 1\nqueue = 2",
        r#"gate = "echo run >> $DIR/out; i=0; while [ ! -e $DIR/release ] && [ $i -lt 600 ]; do i=$((i+1)); sleep 0.05; done""#,
    );
    let d = env.start();
    let mut s = env.connect();
    send(&mut s, "gate", "192.0.2.1");
    wait_until("the first run", DEADLINE, || env.out_lines().len() == 1);
    for i in 2..=6 {
        send(&mut s, "gate", &format!("192.0.2.{i}"));
    }
    // One runs, two wait in the queue, three are refused at once (frames 3, 4 and 5).
    let refused: Vec<Ack> = (0..3).map(|_| read_ack(&mut s)).collect();
    assert_eq!(
        refused,
        (3..=5)
            .map(|seq| Ack {
                seq,
                outcome: AckOutcome::Refused
            })
            .collect::<Vec<_>>()
    );
    // Logged once, the rest counted for the summary.
    assert_eq!(
        d.log_count(&["event=refused", "reason=queue_full", "command=gate"]),
        1
    );
    std::fs::write(env.path("release"), "").unwrap();
    let mut done: Vec<u64> = (0..3)
        .map(|_| {
            let a = read_ack(&mut s);
            assert_eq!(a.outcome, AckOutcome::Done);
            a.seq
        })
        .collect();
    done.sort();
    assert_eq!(done, [0, 1, 2]);
    d.wait_log_lines(&["event=executed", "command=gate"], 3);
    assert_eq!(env.out_lines().len(), 3, "exactly max_parallel + queue ran");
}

#[test]
fn output_lines_are_logged_and_bounded() {
    let env = Env::new();
    env.write_config(
        "",
        r#"chatty = "echo hello from $RUROCO_IP; i=0; while [ $i -lt 100 ]; do echo line $i >&2; i=$((i+1)); done""#,
    );
    let d = env.start();
    let mut s = env.connect();
    send(&mut s, "chatty", "192.0.2.5");
    d.wait_log_lines(&["event=executed", "command=chatty"], 1);
    d.wait_log_lines(&["event=output_truncated", "dropped_lines=37"], 1);
    assert_eq!(d.log_count(&["event=output", "hello from 192.0.2.5"]), 1);
    assert_eq!(d.log_count(&["event=output"]), 64);
}

#[test]
fn sigterm_lets_a_running_command_finish_then_exits_cleanly() {
    let env = Env::new();
    env.write_config(
        "",
        r#"gate = "echo started >> $DIR/out; i=0; while [ ! -e $DIR/release ] && [ $i -lt 600 ]; do i=$((i+1)); sleep 0.05; done; echo done >> $DIR/out""#,
    );
    let mut d = env.start();
    let mut s = env.connect();
    send(&mut s, "gate", "192.0.2.1");
    wait_until("the command to start", DEADLINE, || {
        env.out_lines() == ["started"]
    });
    d.signal(Signal::SIGTERM);
    d.wait_notify("STOPPING=1", 1);
    wait_until("the socket file to go", DEADLINE, || !env.socket().exists());
    assert!(d.alive(), "exited before its child finished");
    std::fs::write(env.path("release"), "").unwrap();
    let st = d.wait_exit();
    assert_eq!(st.code(), Some(0), "log:\n{}", d.log_text());
    assert_eq!(env.out_lines(), ["started", "done"]);
}

#[test]
fn sighup_reloads_commands() {
    let env = Env::new();
    env.write_config("", "one = 'echo one >> $DIR/out'");
    let mut d = env.start();
    env.write_config("", "two = 'echo two >> $DIR/out'");
    d.signal(Signal::SIGHUP);
    d.wait_log_lines(&["event=reloaded", "commands=1"], 1);
    let mut s = env.connect();
    send(&mut s, "one", "192.0.2.1");
    send(&mut s, "two", "192.0.2.1");
    d.wait_log_lines(&["event=executed", "command=two"], 1);
    assert_eq!(env.out_lines(), ["two"]);
    d.wait_log_lines(&["event=unknown_command"], 1);
}

#[test]
fn a_failing_command_is_logged_with_its_exit_code() {
    let env = Env::new();
    env.write_config("", "fail = 'echo oops >&2; exit 3'");
    let d = env.start();
    let mut s = env.connect();
    send(&mut s, "fail", "192.0.2.10");
    d.wait_log_lines(
        &[
            "event=failed",
            "reason=exit",
            "command=fail",
            "ip=192.0.2.10",
            "exit=3",
        ],
        1,
    );
    assert_eq!(
        d.log_count(&["event=output", "stream=stderr", "line=oops"]),
        1
    );
    assert_eq!(d.log_count(&["event=executed"]), 0);
}

#[test]
fn frames_split_across_writes_and_coalesced_in_one_write_all_run() {
    let env = Env::new();
    env.write_config("", &format!("hello = '{RECORD}'"));
    let d = env.start();
    let mut s = env.connect();
    use std::io::Write;
    let a = frame("hello", "192.0.2.21");
    for chunk in [&a[..1], &a[1..13], &a[13..]] {
        s.write_all(chunk).unwrap();
        s.flush().unwrap();
    }
    let mut two = frame("hello", "192.0.2.22").to_vec();
    two.extend_from_slice(&frame("hello", "192.0.2.23"));
    s.write_all(&two).unwrap();
    d.wait_log_lines(&["event=executed", "command=hello"], 3);
    let mut lines = env.out_lines();
    lines.sort();
    assert_eq!(
        lines,
        ["192.0.2.21 hello", "192.0.2.22 hello", "192.0.2.23 hello"]
    );
}

/// A descriptor the commander's parent left open never reaches a command: the commander
/// closes it at start.
#[test]
fn descriptors_the_parent_left_open_never_reach_a_command() {
    let env = Env::new();
    env.write_config(
        "",
        r#"fds = "if [ -e /proc/$$/fd/7 ]; then echo inherited; else echo clean; fi >> $DIR/out""#,
    );
    let d = env.start_with_inherited_fd(7);
    // The number may be reused by the commander's own (close-on-exec) descriptors.
    let fd7 = std::fs::read_link(format!("/proc/{}/fd/7", d.pid()));
    assert!(
        fd7.as_ref()
            .map_or(true, |p| p != std::path::Path::new("/dev/null")),
        "the commander closed the inherited fd 7: {fd7:?}"
    );
    d.wait_log_lines(&["event=closed_inherited_fds", "7"], 1);
    let mut s = env.connect();
    send(&mut s, "fds", "192.0.2.1");
    wait_until("the command", DEADLINE, || !env.out_lines().is_empty());
    assert_eq!(env.out_lines(), ["clean"]);
}

/// A frame whose IP cannot be a client (unspecified, broadcast, multicast) runs nothing, even
/// from the server's uid: acknowledged as malformed.
#[test]
fn frames_for_addresses_that_cannot_be_a_client_run_nothing() {
    let env = Env::new();
    env.write_config("", &format!("hello = '{RECORD}'"));
    let _d = env.start();
    let mut s = env.connect();
    for (seq, ip) in (0..).zip(["0.0.0.0", "255.255.255.255", "224.0.0.1", "ff02::1"]) {
        send(&mut s, "hello", ip);
        assert_eq!(
            read_ack(&mut s),
            Ack {
                seq,
                outcome: AckOutcome::Malformed
            },
            "{ip}"
        );
    }
    send(&mut s, "hello", "192.0.2.1");
    assert_eq!(read_ack(&mut s).outcome, AckOutcome::Done);
    assert_eq!(env.out_lines(), ["192.0.2.1 hello"]);
}
