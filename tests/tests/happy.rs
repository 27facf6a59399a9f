//! End to end, the paths a user takes: the real client, server and commander run a command
//! with the right IP over IPv4 and IPv6, strict and permissive, with two keys, the default
//! command, allow-lists and the reference vectors. Must never run against system paths.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ruroco_proto::CmdHash;
use ruroco_testkit::{plaintext, proc_status, seal};
use ruroco_tests::{Activation, Chain};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

const LO4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const LO6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// The server process runs as nobody with no capability left in any set.
fn assert_unprivileged(pid: u32) {
    let st = proc_status(pid);
    let uids: Vec<&str> = st["Uid"].split_whitespace().collect();
    assert_eq!(
        uids, ["65534"; 4],
        "server uids (real, effective, saved, fs)"
    );
    for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(st[set], "0000000000000000", "{set} of the server");
    }
    assert_eq!(st["NoNewPrivs"], "1", "no_new_privs of the server");
}

#[test]
fn hello_over_ipv4_through_socket_activation_as_nobody() {
    let mut c = Chain::builder().start();
    assert_unprivileged(c.server_pid());
    let addr = c.addr4().to_string();
    c.client_send(&addr, "k1", &["-c", "hello"]);
    assert_eq!(c.wait_out(1), ["hello 127.0.0.1"]);
    c.expect_status(&[("received", 1), ("accepted", 1), ("forwarded", 1)], &[]);
    let log = c.server_log();
    assert!(
        log.contains("accepted"),
        "server log lacks accepted:\n{log}"
    );
    assert!(
        c.commander_log().contains("executed"),
        "commander log lacks executed:\n{}",
        c.commander_log()
    );
    c.assert_only_ran("k1", &["hello 127.0.0.1"], LO4);
    c.assert_alive();
}

#[test]
fn ipv6_and_ipv4_on_one_dual_stack_socket() {
    let mut c = Chain::builder()
        .ips(&["127.0.0.1", "::1"])
        .activation(Activation::Socket(vec!["[::]".to_owned()]))
        .start();
    let a6 = format!("[::1]:{}", c.port);
    c.client_send(&a6, "k1", &["-c", "hello"]);
    assert_eq!(c.wait_out(1), ["hello ::1"]);
    // IPv4 arrives IPv4-mapped on the dual-stack socket; the command must see plain IPv4.
    let a4 = c.addr4().to_string();
    c.client_send(&a4, "k1", &["-c", "other"]);
    let mut lines = c.wait_out(2);
    lines.sort();
    assert_eq!(lines, ["hello ::1", "other 127.0.0.1"]);
    c.expect_status(&[("received", 2), ("accepted", 2), ("forwarded", 2)], &[]);
    c.assert_only_ran("k1", &["hello ::1", "other 127.0.0.1"], LO6);
}

#[test]
fn server_started_as_root_binds_itself_and_becomes_nobody() {
    let mut c = Chain::builder()
        .ips(&["::1"])
        .activation(Activation::Direct("[::1]".to_owned()))
        .start();
    assert_unprivileged(c.server_pid());
    let a6 = format!("[::1]:{}", c.port);
    c.client_send(&a6, "k1", &["-c", "hello", "-6"]);
    assert_eq!(c.wait_out(1), ["hello ::1"]);
    c.expect_status(&[("received", 1), ("accepted", 1), ("forwarded", 1)], &[]);
    c.assert_only_ran("k1", &["hello ::1"], LO6);
}

#[test]
fn strict_with_the_claimed_ip_runs_and_a_false_claim_is_refused() {
    let mut c = Chain::builder().start();
    let addr = c.addr4().to_string();
    c.client_send(&addr, "k1", &["-c", "hello", "-i", "127.0.0.1"]);
    assert_eq!(c.wait_out(1), ["hello 127.0.0.1"]);
    // Strict, claiming an address that is not the real source.
    c.client_send(&addr, "k1", &["-c", "other", "-i", "127.0.0.9"]);
    c.expect_status(
        &[
            ("received", 2),
            ("accepted", 1),
            ("forwarded", 1),
            ("source_mismatch", 1),
        ],
        &[],
    );
    c.assert_only_ran("k1", &["hello 127.0.0.1"], LO4);
}

#[test]
fn permissive_runs_with_the_claimed_ip() {
    let mut c = Chain::builder().start();
    let addr = c.addr4().to_string();
    c.client_send(&addr, "k1", &["-c", "hello", "-e", "-i", "203.0.113.7"]);
    assert_eq!(c.wait_out(1), ["hello 203.0.113.7"]);
    c.client_send(
        &addr,
        "k1",
        &["-c", "other", "--permissive", "-i", "2001:db8::7"],
    );
    let mut lines = c.wait_out(2);
    lines.sort();
    assert_eq!(lines, ["hello 203.0.113.7", "other 2001:db8::7"]);
    c.expect_status(&[("received", 2), ("accepted", 2), ("forwarded", 2)], &[]);
}

#[test]
fn two_keys_and_the_default_command() {
    let mut c = Chain::builder().keys(&["k1", "k2"]).start();
    let addr = c.addr4().to_string();
    c.client_send(&addr, "k1", &["-c", "default"]);
    assert_eq!(c.wait_out(1), ["default 127.0.0.1"]);
    c.client_send(&addr, "k2", &["-c", "other"]);
    let mut lines = c.wait_out(2);
    lines.sort();
    assert_eq!(lines, ["default 127.0.0.1", "other 127.0.0.1"]);
    c.expect_status(&[("received", 2), ("accepted", 2), ("forwarded", 2)], &[]);
    c.assert_only_ran("k2", &["default 127.0.0.1", "other 127.0.0.1"], LO4);
}

#[test]
fn per_key_allow_list_refuses_a_command_the_key_may_not_run() {
    let mut c = Chain::builder()
        .keys(&["k1", "k2"])
        .allow("k2", &["hello"])
        .start();
    let addr = c.addr4().to_string();
    c.client_send(&addr, "k2", &["-c", "other"]);
    c.expect_status(&[("received", 1), ("not_allowed", 1)], &[]);
    c.client_send(&addr, "k2", &["-c", "hello"]);
    assert_eq!(c.wait_out(1), ["hello 127.0.0.1"]);
    // k1 has no list: it may run anything configured.
    c.client_send(&addr, "k1", &["-c", "other"]);
    c.wait_out(2);
    c.expect_status(
        &[
            ("received", 3),
            ("accepted", 2),
            ("forwarded", 2),
            ("not_allowed", 1),
        ],
        &[],
    );
    c.assert_only_ran("k2", &["hello 127.0.0.1", "other 127.0.0.1"], LO4);
}

#[test]
fn one_send_to_both_families_runs_once() {
    // The client's rule: every datagram of one send shares a counter, so a server reached
    // over IPv4 and IPv6 runs the command once and rejects the second copy as a duplicate
    // (not a replay: the fail2ban filter must not count it).
    let mut c = Chain::builder()
        .ips(&["127.0.0.1", "::1"])
        .activation(Activation::Socket(vec!["[::]".to_owned()]))
        .start();
    let k = c.key("k1");
    let mut pt = plaintext("hello", LO4);
    let first = seal(&k, &pt);
    pt.dst_ip = Some(LO6);
    let second = seal(&k, &pt);
    c.send_raw(LO4, &first);
    c.send_raw(LO6, &second);
    c.expect_status(
        &[
            ("received", 2),
            ("accepted", 1),
            ("forwarded", 1),
            ("duplicate", 1),
        ],
        &[],
    );
    assert_eq!(c.wait_out(1), ["hello 127.0.0.1"]);
    c.assert_only_ran("k1", &["hello 127.0.0.1"], LO4);
}

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/proto/tests/vectors")
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn reference_vectors_run_through_the_whole_chain() {
    let dir = vectors_dir();
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("packets.json")).unwrap()).unwrap();
    let names: Vec<(String, String)> = doc["command_names"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let mut b = Chain::builder()
        .keys(&[])
        .key_text("k1", &std::fs::read_to_string(dir.join("k1.key")).unwrap())
        .key_text("k2", &std::fs::read_to_string(dir.join("k2.key")).unwrap());
    for (name, hash) in &names {
        assert_eq!(CmdHash::of_name(name).to_string(), *hash, "hash of {name}");
        b = b.record_command(name);
    }
    let mut c = b.start();
    let name_of = |h: &str| {
        names
            .iter()
            .find(|(_, v)| v == h)
            .map(|(k, _)| k.clone())
            .unwrap()
    };
    let packets = doc["packets"].as_array().unwrap();
    let mut expected = Vec::new();
    for p in packets {
        let source: IpAddr = p["source"].as_str().unwrap().parse().unwrap();
        c.send_raw(source, &hex(p["packet_hex"].as_str().unwrap()));
        let ip = p["src_ip"]
            .as_str()
            .unwrap_or(p["source"].as_str().unwrap());
        expected.push(format!("{} {ip}", name_of(p["cmd_hash"].as_str().unwrap())));
        // One at a time, so the order of the runs is the order of the vectors.
        assert_eq!(c.wait_out(expected.len()), expected);
    }
    let n = packets.len() as u64;
    c.expect_status(&[("received", n), ("accepted", n), ("forwarded", n)], &[]);
    // Every vector a second time: all copies of accepted datagrams (duplicates).
    for p in packets {
        let source: IpAddr = p["source"].as_str().unwrap().parse().unwrap();
        c.send_raw(source, &hex(p["packet_hex"].as_str().unwrap()));
    }
    c.expect_status(
        &[
            ("received", 2 * n),
            ("accepted", n),
            ("forwarded", n),
            ("duplicate", n),
        ],
        &[],
    );
    let exp: Vec<&str> = expected.iter().map(String::as_str).collect();
    // The marker is sealed with a key the vectors came with: their key ids are configured.
    c.assert_only_ran("k1", &exp, LO4);
    c.assert_alive();
}

#[test]
fn an_open_command_is_undone_with_the_same_ip() {
    let mut c = Chain::builder()
        .command(
            "open",
            "{ run = \"echo \\\"$RUROCO_COMMAND $RUROCO_IP\\\" >> '@OUT'\", \
             undo = \"echo \\\"undo $RUROCO_COMMAND $RUROCO_IP\\\" >> '@OUT'\", \
             undo_after = \"1s\" }",
        )
        .start();
    let addr = c.addr4().to_string();
    c.client_send(&addr, "k1", &["-c", "open", "-e", "-i", "192.0.2.44"]);
    assert_eq!(c.wait_out(2), ["open 192.0.2.44", "undo open 192.0.2.44"]);
    c.commander_mut().wait_log("undone");
    c.expect_status(&[("received", 1), ("accepted", 1), ("forwarded", 1)], &[]);
    c.assert_only_ran("k1", &["open 192.0.2.44", "undo open 192.0.2.44"], LO4);
}
