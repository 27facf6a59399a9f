//! End to end: a datagram that ran once never runs again -- sent again at once, from another
//! source, with bytes appended, after a clean restart and after SIGKILL of the server.
//! Must never run against system paths.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use nix::sys::signal::Signal;
use ruroco_testkit::{plaintext, seal};
use ruroco_tests::Chain;
use std::net::{IpAddr, Ipv4Addr};

const LO4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const OTHER_SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const MARKER_SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

#[test]
fn replay_immediately_and_from_another_source() {
    let mut c = Chain::builder().start();
    // Sealed first (a lower counter), withheld until a newer datagram was accepted.
    let withheld = seal(&c.key("k1"), &plaintext("hello", LO4));
    let d = seal(&c.key("k1"), &plaintext("hello", LO4));
    c.send_raw(LO4, &d);
    assert_eq!(c.wait_out(1), ["hello 127.0.0.1"]);
    // Copies of the accepted datagram, from any source, are duplicates; the withheld one,
    // older than the floor and never accepted, is a replay. None runs.
    c.send_raw(LO4, &d);
    c.send_raw(OTHER_SRC, &d);
    c.send_raw(OTHER_SRC, &withheld);
    c.expect_status(
        &[
            ("received", 4),
            ("accepted", 1),
            ("forwarded", 1),
            ("duplicate", 2),
            ("replay", 1),
        ],
        &[],
    );
    c.assert_only_ran("k1", &["hello 127.0.0.1"], MARKER_SRC);
    c.assert_alive();
}

#[test]
fn bytes_appended_are_dropped_and_do_not_consume_the_datagram() {
    let mut c = Chain::builder().start();
    let d = seal(&c.key("k1"), &plaintext("hello", LO4));
    let mut longer = d.to_vec();
    longer.push(0);
    c.send_raw(LO4, &longer);
    let mut much_longer = d.to_vec();
    much_longer.extend_from_slice(&d);
    c.send_raw(LO4, &much_longer);
    c.expect_status(&[("received", 2), ("bad_length", 2)], &[]);
    // The untouched original still runs, once.
    c.send_raw(LO4, &d);
    assert_eq!(c.wait_out(1), ["hello 127.0.0.1"]);
    c.send_raw(LO4, &longer);
    c.send_raw(LO4, &d);
    c.expect_status(
        &[
            ("received", 5),
            ("bad_length", 3),
            ("accepted", 1),
            ("forwarded", 1),
            ("duplicate", 1),
        ],
        &[],
    );
    c.assert_only_ran("k1", &["hello 127.0.0.1"], MARKER_SRC);
}

#[test]
fn replay_after_a_clean_restart_of_the_server() {
    let mut c = Chain::builder().start();
    let k = c.key("k1");
    let d = seal(&k, &plaintext("hello", LO4));
    c.send_raw(LO4, &d);
    assert_eq!(c.wait_out(1), ["hello 127.0.0.1"]);
    c.expect_status(&[("received", 1), ("accepted", 1), ("forwarded", 1)], &[]);
    let st = c.stop_server(Signal::SIGTERM);
    assert_eq!(st.code(), Some(0), "server exit after SIGTERM");
    let state = std::fs::read_to_string(c.state_dir.join("replay")).unwrap();
    assert!(
        state.contains(&k.id().to_string()),
        "replay state names the key id: {state:?}"
    );
    c.start_server();
    // The durable floor is this datagram's counter: a copy of the last accepted one.
    c.send_raw(LO4, &d);
    c.expect_status(&[("received", 1), ("duplicate", 1)], &[]);
    c.assert_only_ran("k1", &["hello 127.0.0.1"], MARKER_SRC);
}

#[test]
fn replay_after_sigkill_right_after_the_forward() {
    let mut c = Chain::builder().start();
    let k = c.key("k1");
    let mut sent = Vec::new();
    for round in 0..3u8 {
        let mut pt = plaintext("hello", LO4);
        pt.strict = false;
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, round + 1));
        pt.src_ip = Some(ip);
        let d = seal(&k, &pt);
        c.send_raw(LO4, &d);
        // Kill the moment the command shows it was forwarded.
        c.wait_out(sent.len() + 1);
        c.stop_server(Signal::SIGKILL);
        sent.push((d, format!("hello {ip}")));
        c.start_server();
        for (old, _) in &sent {
            c.send_raw(LO4, old);
        }
        // The last one is at the floor (a copy); the older ones are below it and the
        // memory of recent datagrams did not survive the kill: replays.
        let n = sent.len() as u64;
        c.expect_status(&[("received", n), ("duplicate", 1), ("replay", n - 1)], &[]);
    }
    let exp: Vec<&str> = sent.iter().map(|(_, l)| l.as_str()).collect();
    c.assert_only_ran("k1", &exp, MARKER_SRC);
}

#[test]
fn sigkill_at_any_instant_never_runs_a_datagram_twice() {
    // Kill without waiting for anything: each datagram ran at most once, whatever the
    // instant the kill hit (before receipt, before persist, before or after the forward).
    let mut c = Chain::builder().start();
    let k = c.key("k1");
    let mut lines = Vec::new();
    for round in 0..5u8 {
        let mut pt = plaintext("hello", LO4);
        pt.strict = false;
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100 + round));
        pt.src_ip = Some(ip);
        let d = seal(&k, &pt);
        c.send_raw(LO4, &d);
        c.stop_server(Signal::SIGKILL);
        c.start_server();
        c.send_raw(LO4, &d);
        c.send_raw(LO4, &d);
        // Exactly one of the two copies or the original before the kill ran it.
        c.wait_counter("received", 2);
        lines.push(format!("hello {ip}"));
        let ran = c.wait_out(lines.len());
        let count = ran.iter().filter(|l| **l == lines[lines.len() - 1]).count();
        assert!(count <= 1, "ran {count} times: {ran:?}");
    }
    let exp: Vec<&str> = lines.iter().map(String::as_str).collect();
    c.assert_only_ran("k1", &exp, MARKER_SRC);
}
