//! End to end: hostile or broken datagrams never run a command, never stop a daemon, and are
//! each counted by reason in the server's `STATUS=`. Must never run against system paths.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ruroco_proto::DATAGRAM_LEN;
use ruroco_testkit::{now_ns, plaintext, seal};
use ruroco_tests::Chain;
use std::net::{IpAddr, Ipv4Addr};

const LO4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const MARKER_SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    getrandom_fill(&mut v);
    v
}

/// Random bytes from the kernel (the test crate has no RNG dependency).
fn getrandom_fill(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(buf)
        .unwrap();
}

/// Rejections are logged as a summary per reason and source (`rejected <reason> from <ip>
/// count=<n>`, the text the fail2ban filter matches), never one line per datagram.
fn assert_summarised(c: &mut Chain, reason: &str, rejected: usize) {
    let needle = format!("rejected {reason} from 127.0.0.1 count=");
    let log = c.server_mut().wait_log(&needle);
    let lines = log.lines().filter(|l| l.contains(&needle)).count();
    assert!(
        lines <= 4 && lines < rejected,
        "{lines} log lines for {rejected} {reason} rejections:\n{log}"
    );
}

#[test]
fn every_length_but_94_is_counted_and_runs_nothing() {
    let mut c = Chain::builder().start();
    let id = c.key("k1").id().0;
    // Each starts with a configured key id, so only the length can reject it.
    let datagrams: Vec<Vec<u8>> = (0..=1500usize)
        .filter(|n| *n != DATAGRAM_LEN)
        .map(|n| {
            let mut d = random_bytes(n);
            let k = n.min(8);
            d[..k].copy_from_slice(&id[..k]);
            d
        })
        .collect();
    c.send_paced(LO4, datagrams.iter().map(Vec::as_slice));
    c.expect_status(&[("received", 1500), ("bad_length", 1500)], &[]);
    assert_eq!(c.udp_drops(), 0, "the kernel dropped datagrams: pace lower");
    c.assert_only_ran("k1", &[], MARKER_SRC);
    c.assert_alive();
}

#[test]
fn every_single_bit_flip_of_a_valid_datagram_is_rejected() {
    let mut c = Chain::builder().start();
    let d = seal(&c.key("k1"), &plaintext("hello", LO4));
    let flips: Vec<[u8; DATAGRAM_LEN]> = (0..DATAGRAM_LEN * 8)
        .map(|bit| {
            let mut f = d;
            f[bit / 8] ^= 1 << (bit % 8);
            f
        })
        .collect();
    c.send_paced(LO4, flips.iter().map(|f| &f[..]));
    // A flip in the 8 clear key-id bytes names an unknown key; anywhere else the tag fails.
    c.expect_status(
        &[("received", 752), ("unknown_key", 64), ("bad_tag", 688)],
        &[],
    );
    assert_summarised(&mut c, "bad_tag", 688);
    assert_summarised(&mut c, "unknown_key", 64);
    // None of them used up the original.
    c.send_raw(LO4, &d);
    assert_eq!(c.wait_out(1), ["hello 127.0.0.1"]);
    c.expect_status(
        &[
            ("received", 753),
            ("unknown_key", 64),
            ("bad_tag", 688),
            ("accepted", 1),
            ("forwarded", 1),
        ],
        &[],
    );
    c.assert_only_ran("k1", &["hello 127.0.0.1"], MARKER_SRC);
    c.assert_alive();
}

#[test]
fn random_datagrams_with_a_known_key_id_and_unknown_key_ids() {
    let mut c = Chain::builder().start();
    let id = c.key("k1").id().0;
    let known: Vec<Vec<u8>> = (0..500)
        .map(|_| {
            let mut d = random_bytes(DATAGRAM_LEN);
            d[..8].copy_from_slice(&id);
            d
        })
        .collect();
    let unknown: Vec<Vec<u8>> = (0..500)
        .map(|_| {
            let mut d = random_bytes(DATAGRAM_LEN);
            if d[..8] == id {
                d[0] ^= 1;
            }
            d
        })
        .collect();
    c.send_paced(LO4, known.iter().chain(unknown.iter()).map(Vec::as_slice));
    c.expect_status(
        &[("received", 1000), ("bad_tag", 500), ("unknown_key", 500)],
        &[],
    );
    assert_summarised(&mut c, "bad_tag", 500);
    assert_summarised(&mut c, "unknown_key", 500);
    c.assert_only_ran("k1", &[], MARKER_SRC);
    c.assert_alive();
}

#[test]
fn wrong_destination_bad_version_and_false_source_claim() {
    let mut c = Chain::builder().start();
    let k = c.key("k1");
    let mut wrong_dst = plaintext("hello", LO4);
    wrong_dst.dst_ip = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    c.send_raw(LO4, &seal(&k, &wrong_dst));
    let mut v2 = plaintext("hello", LO4);
    v2.version = 2;
    c.send_raw(LO4, &seal(&k, &v2));
    let mut claim = plaintext("hello", LO4);
    claim.src_ip = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)));
    c.send_raw(LO4, &seal(&k, &claim));
    c.expect_status(
        &[
            ("received", 3),
            ("wrong_destination", 1),
            ("bad_version", 1),
            ("source_mismatch", 1),
        ],
        &[],
    );
    c.assert_only_ran("k1", &[], MARKER_SRC);
    c.assert_alive();
}

#[test]
fn permissive_claims_that_cannot_be_a_client_run_nothing_and_are_summarised() {
    let mut c = Chain::builder().start();
    let k = c.key("k1");
    for claim in [
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V4(Ipv4Addr::BROADCAST),
        IpAddr::V4(Ipv4Addr::new(224, 0, 0, 1)),
        "ff02::1".parse().unwrap(),
    ] {
        let mut p = plaintext("hello", LO4);
        p.strict = false;
        p.src_ip = Some(claim);
        c.send_raw(LO4, &seal(&k, &p));
    }
    c.expect_status(&[("received", 4), ("not_a_client", 4)], &[]);
    assert_summarised(&mut c, "not_a_client", 4);
    // A permissive claim of an ordinary address still runs, with that address.
    let mut p = plaintext("hello", LO4);
    p.strict = false;
    p.src_ip = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
    c.send_raw(LO4, &seal(&k, &p));
    assert_eq!(c.wait_out(1), ["hello 192.0.2.7"]);
    c.assert_only_ran("k1", &["hello 192.0.2.7"], MARKER_SRC);
    c.assert_alive();
}

#[test]
fn a_future_counter_is_refused_and_does_not_lock_out_later_datagrams() {
    let mut c = Chain::builder().start();
    let k = c.key("k1");
    let mut future = plaintext("hello", LO4);
    // Two hours ahead: beyond the default skew of one hour.
    future.counter = now_ns() + 2 * 3600 * 1_000_000_000;
    c.send_raw(LO4, &seal(&k, &future));
    c.expect_status(&[("received", 1), ("future", 1)], &[]);
    // A datagram with an honest counter still runs: the floor did not move to the future.
    let addr = c.addr4().to_string();
    c.client_send(&addr, "k1", &["-c", "other"]);
    assert_eq!(c.wait_out(1), ["other 127.0.0.1"]);
    c.expect_status(
        &[
            ("received", 2),
            ("future", 1),
            ("accepted", 1),
            ("forwarded", 1),
        ],
        &[],
    );
    c.assert_only_ran("k1", &["other 127.0.0.1"], MARKER_SRC);
}

#[test]
fn an_unknown_command_hash_runs_nothing_and_the_link_keeps_working() {
    let mut c = Chain::builder().start();
    let k = c.key("k1");
    c.send_raw(LO4, &seal(&k, &plaintext("no_such_command", LO4)));
    // The server does not know command names: it forwards; the commander ignores the hash.
    c.expect_status(&[("received", 1), ("accepted", 1), ("forwarded", 1)], &[]);
    let hash = ruroco_proto::CmdHash::of_name("no_such_command").to_string();
    c.commander_mut().wait_log(&hash);
    c.assert_only_ran("k1", &[], MARKER_SRC);
    c.assert_alive();
}

#[test]
fn the_server_never_answers_anything() {
    // A scan learns nothing: no reply to a valid datagram, a replay, garbage or a wrong size.
    let mut c = Chain::builder().start();
    let k = c.key("k1");
    let sock = std::net::UdpSocket::bind((LO4, 0)).unwrap();
    let d = seal(&k, &plaintext("hello", LO4));
    let to = c.addr4();
    for bytes in [
        &d[..],
        &d[..],
        &random_bytes(DATAGRAM_LEN)[..],
        &[1u8, 2, 3][..],
        &[][..],
    ] {
        sock.send_to(bytes, to).unwrap();
    }
    c.expect_status(
        &[
            ("received", 5),
            ("accepted", 1),
            ("forwarded", 1),
            ("duplicate", 1),
            ("unknown_key", 1),
            ("bad_length", 2),
        ],
        &[],
    );
    assert_eq!(c.wait_out(1), ["hello 127.0.0.1"]);
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    match sock.recv_from(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the server answered: {other:?}"),
    }
    c.assert_alive();
}
