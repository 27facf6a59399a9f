//! Black-box tests of the link to the commander with the real `ruroco-server` binary and a
//! stub commander the test drives by hand: acknowledgements counted as `delivered`, frames
//! not acknowledged sent again on the next connection, a bad acknowledgement dropping the
//! connection, and the wait for acknowledgements at shutdown. Runs as root (the stub is the
//! uid 0 commander the default `commander_uid` expects); the server drops to nobody.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use nix::sys::signal::Signal;
use ruroco_proto::{AckOutcome, CmdHash, Frame, Key};

fn frame(cmd: &str) -> Frame {
    Frame {
        cmd: CmdHash::of_name(cmd),
        ip: LOCAL,
    }
}

/// A server with one key and no commander yet.
fn server() -> (Env, Key) {
    let mut env = Env::new();
    let k = Key::generate().unwrap();
    env.add_key("k", &k);
    env.start();
    (env, k)
}

#[test]
fn acknowledged_frames_are_counted_as_delivered() {
    let mut env = Env::new();
    let k = Key::generate().unwrap();
    env.add_key("k", &k);
    let stub = env.stub(); // acknowledges every frame as done
    env.start();
    for cmd in ["one", "two", "three"] {
        env.send(&seal(&k, &pt(cmd)));
        assert_eq!(stub.next_frame(), frame(cmd));
    }
    let s = env.wait_status("three delivered", |s| get(s, "delivered") == 3);
    assert_eq!(get(&s, "accepted"), 3);
    assert_eq!(get(&s, "forwarded"), 3);
    assert_eq!(get(&s, "queue_dropped"), 0);
    let log = env.log();
    let delivered = events(&log, "delivered");
    assert_eq!(delivered.len(), 3, "{log}");
    for (line, cmd) in delivered.iter().zip(["one", "two", "three"]) {
        assert!(line_has(line, "level=info"), "{line}");
        assert!(line_has(line, "outcome=done"), "{line}");
        assert!(line.contains(&format!("key_id={}", k.id())), "{line}");
        assert!(line.contains("ip=127.0.0.1"), "{line}");
        assert!(
            line.contains(&format!("command={}", CmdHash::of_name(cmd))),
            "{line}"
        );
    }
    assert!(events(&log, "resent").is_empty(), "{log}");
    env.signal(Signal::SIGTERM);
    assert_eq!(env.wait_exit().code(), Some(0));
    assert!(events(&env.log(), "unacknowledged").is_empty());
}

#[test]
fn unacknowledged_frames_are_resent_on_the_next_connection() {
    let mut env = Env::new();
    let k = Key::generate().unwrap();
    env.add_key("k", &k);
    let first = bind_commander(&env.commander_socket);
    env.start();
    let sent = [frame("one"), frame("two"), frame("three")];
    env.send(&seal(&k, &pt("one")));
    let mut c1 = accept(&first);
    let mut got = read_frames(&mut c1, 1);
    for cmd in ["two", "three"] {
        env.send(&seal(&k, &pt(cmd)));
        got.extend(read_frames(&mut c1, 1));
    }
    assert_eq!(got, sent);
    env.wait_status("three forwarded", |s| get(s, "forwarded") == 3);

    // The commander restarts: a new listener on the same path, then the old connection
    // closes with nothing acknowledged.
    drop(first);
    std::fs::remove_file(&env.commander_socket).unwrap();
    let second = bind_commander(&env.commander_socket);
    drop(c1);
    let mut c2 = accept(&second);
    assert_eq!(read_frames(&mut c2, 3), sent, "the same frames, in order");
    // Acknowledgements in any order; seqs count from 0 on the new connection.
    for seq in [2, 0, 1] {
        ack(&mut c2, seq, AckOutcome::Done);
    }
    let s = env.wait_status("three delivered", |s| get(s, "delivered") == 3);
    assert_eq!(get(&s, "forwarded"), 3, "a resend is not forwarded twice");
    assert_eq!(get(&s, "queue_dropped"), 0);
    // The next frame follows on the same connection as seq 3: nothing else came first.
    env.send(&seal(&k, &pt("four")));
    assert_eq!(read_frames(&mut c2, 1), [frame("four")]);
    ack(&mut c2, 3, AckOutcome::Done);
    let s = env.wait_status("four delivered", |s| get(s, "delivered") == 4);
    assert_eq!(get(&s, "forwarded"), 4);
    let log = env.log();
    let resent = events(&log, "resent");
    assert_eq!(resent.len(), 3, "{log}");
    for (line, cmd) in resent.iter().zip(["one", "two", "three"]) {
        assert!(
            line.contains(&format!("command={}", CmdHash::of_name(cmd))),
            "{line}"
        );
    }
}

#[test]
fn a_bad_acknowledgement_drops_the_connection_and_unacknowledged_frames_are_resent() {
    let (mut env, k) = server();
    let l = bind_commander(&env.commander_socket);
    env.send(&seal(&k, &pt("a")));
    let mut c1 = accept(&l);
    assert_eq!(read_frames(&mut c1, 1), [frame("a")]);
    env.send(&seal(&k, &pt("b")));
    assert_eq!(read_frames(&mut c1, 1), [frame("b")]);
    // "a" is acknowledged; then an acknowledgement for a seq never written.
    ack(&mut c1, 0, AckOutcome::Done);
    ack(&mut c1, 9, AckOutcome::Done);
    wait_closed(&mut c1);
    let mut c2 = accept(&l);
    assert_eq!(
        read_frames(&mut c2, 1),
        [frame("b")],
        "only the unacknowledged one"
    );
    // An outcome byte the server cannot decode.
    let mut bad = [0u8; ruroco_proto::ACK_LEN];
    bad[8] = 0xEE;
    write_ack(&mut c2, bad);
    wait_closed(&mut c2);
    let mut c3 = accept(&l);
    assert_eq!(read_frames(&mut c3, 1), [frame("b")]);
    ack(&mut c3, 0, AckOutcome::Failed);
    let s = env.wait_status("both delivered", |s| get(s, "delivered") == 2);
    assert_eq!(get(&s, "forwarded"), 2);
    assert_eq!(get(&s, "queue_dropped"), 0);
    let log = env.log();
    let protocol = events(&log, "commander_protocol");
    assert_eq!(protocol.len(), 2, "{log}");
    assert!(
        line_has(&protocol[0], "level=warn") && protocol[0].contains("seq 9"),
        "{log}"
    );
    assert!(protocol[1].contains("outcome byte 238"), "{log}");
    assert_eq!(events(&log, "resent").len(), 2, "{log}");
    let delivered = events(&log, "delivered");
    assert_eq!(delivered.len(), 2, "{log}");
    assert!(line_has(&delivered[0], "level=info") && line_has(&delivered[0], "outcome=done"));
    assert!(
        line_has(&delivered[1], "level=warn") && line_has(&delivered[1], "outcome=failed"),
        "{log}"
    );
}

#[test]
fn shutdown_waits_for_outstanding_acknowledgements() {
    let (mut env, k) = server();
    let l = bind_commander(&env.commander_socket);
    env.send(&seal(&k, &pt("quick")));
    let mut c = accept(&l);
    assert_eq!(read_frames(&mut c, 1), [frame("quick")]);
    env.send(&seal(&k, &pt("never")));
    assert_eq!(read_frames(&mut c, 1), [frame("never")]);
    env.signal(Signal::SIGTERM);
    env.wait_note("STOPPING=1");
    // Acknowledged while the server drains: still counted; the other one is reported.
    ack(&mut c, 0, AckOutcome::Done);
    assert_eq!(env.wait_exit().code(), Some(0));
    let log = env.log();
    let delivered = events(&log, "delivered");
    assert_eq!(delivered.len(), 1, "{log}");
    assert!(
        delivered[0].contains(&format!("command={}", CmdHash::of_name("quick"))),
        "{log}"
    );
    let left = events(&log, "unacknowledged");
    assert_eq!(left.len(), 1, "{log}");
    assert!(left[0].contains("written=1") && left[0].contains("not_written=0"));
}

#[test]
fn a_commander_that_is_down_is_logged_once_with_the_fix_and_the_late_frame_says_so() {
    let (mut env, k) = server();
    let sent = std::time::Instant::now();
    env.send(&seal(&k, &pt("late")));
    // Let the link fail several times (backoff 100 ms, 200 ms, 400 ms, 800 ms) and the frame
    // wait more than the 1 s after which it is late.
    env.wait_status("accepted", |s| get(s, "accepted") == 1);
    if let Some(rest) = std::time::Duration::from_millis(1600).checked_sub(sent.elapsed()) {
        std::thread::sleep(rest);
    }
    let stub = env.stub();
    assert_eq!(stub.next_frame(), frame("late"));
    env.wait_status("delivered", |s| get(s, "delivered") == 1);
    let log = env.log();
    let down = events(&log, "commander_down");
    assert_eq!(
        down.len(),
        1,
        "one line per outage, not per attempt:\n{log}"
    );
    assert!(
        line_has(
            &down[0],
            "hint=\"start the commander: systemctl start ruroco-commander.socket\""
        ),
        "{log}"
    );
    let up = events(&log, "commander_up");
    assert_eq!(up.len(), 1, "{log}");
    assert!(
        line_has(&up[0], "down_ms=") && line_has(&up[0], "attempts="),
        "{log}"
    );
    let forwarded = events(&log, "forwarded");
    assert_eq!(forwarded.len(), 1, "{log}");
    assert!(
        line_has(&forwarded[0], "level=warn")
            && line_has(&forwarded[0], "late=true")
            && line_has(&forwarded[0], "waited_ms="),
        "{log}"
    );
}
