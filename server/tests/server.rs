//! Black-box tests of the real `ruroco-server` binary: rejections counted by reason with no
//! frame sent, the reference vectors, replay across restarts and SIGKILL, a flood with valid
//! datagrams interleaved, reload, and the notify protocol. Runs as root; the server drops to
//! nobody.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use nix::sys::signal::Signal;
use ruroco_proto::protocol::Plaintext;
use ruroco_proto::{CmdHash, Frame, Key, Reject};
use std::net::{IpAddr, Ipv4Addr};

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

#[test]
fn every_rejection_reason_is_counted_and_sends_no_frame() {
    let mut env = Env::new();
    let a = Key::generate().unwrap();
    let b = Key::generate().unwrap();
    env.add_key("a", &a);
    env.add_key("b", &b);
    env.extra_config = "max_age = \"10m\"\n[rate_limit]\nper_source = 0.001\nburst = 20\n\
                        global = 1000.0\n[keys.a]\ncommands = [\"hello\"]\n"
        .to_owned();
    let stub = env.stub();
    env.start();

    let hour = 3_600_000_000_000u128;
    let mut cases: Vec<(Reject, Vec<u8>)> = vec![
        (Reject::BadLength, vec![0u8; 10]),
        (Reject::BadLength, vec![0u8; 200]),
        (Reject::UnknownKey, vec![0x55u8; 94]),
    ];
    let mut bad_tag = seal(&a, &pt("hello")).to_vec();
    bad_tag[50] ^= 1;
    cases.push((Reject::BadTag, bad_tag));
    let mut p = pt("hello");
    p.version = 2;
    cases.push((Reject::BadVersion, seal(&a, &p).to_vec()));
    let mut p = pt("hello");
    p.counter += 2 * hour;
    cases.push((Reject::Future, seal(&a, &p).to_vec()));
    let mut p = pt("hello");
    p.counter -= hour;
    cases.push((Reject::TooOld, seal(&a, &p).to_vec()));
    let mut p = pt("hello");
    p.dst_ip = Some(v4(10, 9, 8, 7));
    cases.push((Reject::WrongDestination, seal(&a, &p).to_vec()));
    let mut p = pt("hello");
    p.src_ip = Some(v4(203, 0, 113, 9));
    cases.push((Reject::SourceMismatch, seal(&a, &p).to_vec()));
    // Permissive, claiming an address that cannot be a client's.
    for claim in [v4(0, 0, 0, 0), v4(255, 255, 255, 255), v4(224, 0, 0, 1)] {
        let mut p = pt("hello");
        p.strict = false;
        p.src_ip = Some(claim);
        cases.push((Reject::NotAClient, seal(&a, &p).to_vec()));
    }
    cases.push((Reject::NotAllowed, seal(&a, &pt("other")).to_vec()));

    for (reason, d) in &cases {
        env.send(d);
        let name = reason.as_str();
        env.wait_status(name, |s| get(s, name) >= 1);
    }

    // A copy: the first is forwarded, the second (the same counter) counted as a duplicate.
    // Replay: a datagram withheld while a newer one was accepted is counted as a replay.
    let withheld = seal(&b, &pt("withheld"));
    let d = seal(&b, &pt("replayed"));
    env.send(&d);
    assert_eq!(stub.next_frame().cmd, CmdHash::of_name("replayed"));
    env.send(&d);
    env.wait_status("duplicate", |s| get(s, "duplicate") == 1);
    env.send(&withheld);
    let s = env.wait_status("replay", |s| get(s, "replay") == 1);
    assert_eq!(get(&s, "duplicate"), 1);

    // Rate limit: 20 failed authentications use up the source's budget (0.001/s refill);
    // beyond it, its datagrams are checked only while the global bucket (1000) is more than
    // half full, so a burst of 2,000 must see some of them dropped as rate_limited.
    let src = v4(127, 0, 0, 2);
    let mut forged = seal(&b, &pt("x"));
    forged[40] ^= 1;
    let sock = std::net::UdpSocket::bind((src, 0)).unwrap();
    for _ in 0..2000 {
        sock.send_to(&forged, env.addr()).unwrap();
    }
    env.wait_status("rate_limited", |s| {
        get(s, "rate_limited") >= 1 && get(s, "rate_limited") + get(s, "bad_tag") == 2001
    });

    assert_next_frame_is(&env, &stub, &b, "after");
    let s = env.wait_status("accepted", |s| get(s, "accepted") == 2);
    for r in Reject::ALL {
        assert!(
            get(&s, r.as_str()) >= 1,
            "{} not counted: {s:?}",
            r.as_str()
        );
    }
    assert_eq!(get(&s, "wrong_destination"), 1);
    assert_eq!(get(&s, "not_allowed"), 1);
    assert_eq!(get(&s, "not_a_client"), 3);
    assert_eq!(get(&s, "bad_length"), 2);
    // Rejections are summarised per reason and source in the fail2ban-matchable form.
    wait_for(
        &format!(
            "a rejection summary line in {}",
            env.path("server.log").display()
        ),
        DEADLINE,
        || {
            env.log()
                .contains("rejected rate_limited from 127.0.0.2 count=")
                .then_some(())
        },
    );
    // wrong_destination names the address the client sent to, and a key holder's mistake
    // carries the fix.
    let log = env.log();
    let wrong = events(&log, "rejected")
        .into_iter()
        .find(|l| line_has(l, "reason=wrong_destination"))
        .unwrap_or_else(|| panic!("no wrong_destination summary:\n{log}"));
    assert!(
        line_has(&wrong, "dst_ip=10.9.8.7") && line_has(&wrong, "hint="),
        "{wrong}"
    );
    env.signal(Signal::SIGTERM);
    env.wait_note("STOPPING=1");
    assert_eq!(env.wait_exit().code(), Some(0));
}

#[test]
fn reference_vectors_produce_exactly_the_expected_frames() {
    let dir =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/proto/tests/vectors");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("packets.json")).unwrap()).unwrap();
    let mut env = Env::new();
    for name in ["k1", "k2"] {
        let k = ruroco_kit::key_file::load(&dir.join(format!("{name}.key"))).unwrap();
        env.add_key(name, &k);
    }
    env.extra_config = "[rate_limit]\nper_source = 1000.0\nburst = 1000\n".to_owned();
    let stub = env.stub();
    env.start();
    let packets = doc["packets"].as_array().unwrap();
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    for p in packets {
        let source: IpAddr = p["source"].as_str().unwrap().parse().unwrap();
        assert_eq!(source, LOCAL, "vectors are sent from 127.0.0.1");
        env.send_from(source, &hex(p["packet_hex"].as_str().unwrap()));
        let expected_ip: IpAddr = p["src_ip"].as_str().map_or(source, |s| s.parse().unwrap());
        let want = Frame {
            cmd: CmdHash(u64::from_str_radix(p["cmd_hash"].as_str().unwrap(), 16).unwrap()),
            ip: expected_ip,
        };
        let got = stub.next_frame();
        assert_eq!(got, want);
        assert_eq!(got.to_bytes(), want.to_bytes());
    }
    for p in packets {
        env.send(&hex(p["packet_hex"].as_str().unwrap()));
    }
    let n = packets.len() as u64;
    // Each is a copy of an accepted datagram: a duplicate, never run twice.
    let s = env.wait_status("every vector sent again", |s| get(s, "duplicate") == n);
    assert_eq!(get(&s, "replay"), 0);
    assert_eq!(get(&s, "accepted"), n);
    assert_eq!(get(&s, "forwarded"), n);
    assert!(stub.frames.try_recv().is_err(), "a replay produced a frame");
}

#[test]
fn replay_is_refused_across_clean_restart_and_sigkill() {
    let mut env = Env::new();
    let k = Key::generate().unwrap();
    env.add_key("k", &k);
    let stub = env.stub();
    env.start();
    let first = seal(&k, &pt("one"));
    env.send(&first);
    assert_eq!(stub.next_frame().cmd, CmdHash::of_name("one"));
    env.signal(Signal::SIGTERM);
    assert_eq!(env.wait_exit().code(), Some(0));

    env.start();
    env.send(&first);
    // The durable floor is `first`'s counter: a copy of the last accepted datagram.
    env.wait_status("duplicate after restart", |s| get(s, "duplicate") == 1);
    let second = seal(&k, &pt("two"));
    env.send(&second);
    assert_eq!(stub.next_frame().cmd, CmdHash::of_name("two"));
    // Kill -9 right after the frame arrived: its floor was on disk before it left.
    env.signal(Signal::SIGKILL);
    env.wait_exit();

    env.start();
    env.send(&second);
    env.send(&first);
    // `second` is at the floor (a copy); `first` is below it and not remembered across the
    // restart: a replay. Neither runs.
    env.wait_status("both refused after SIGKILL", |s| {
        get(s, "duplicate") == 1 && get(s, "replay") == 1
    });
    let state = std::fs::read_to_string(env.path("state/replay")).unwrap();
    assert!(
        state.starts_with(&format!("ruroco-replay 2\n{} ", k.id())) && state.ends_with("end 1\n"),
        "{state}"
    );
    assert_next_frame_is(&env, &stub, &k, "three");
}

#[test]
fn flood_of_bad_datagrams_lets_every_valid_one_through() {
    let mut env = Env::new();
    let k = Key::generate().unwrap();
    env.add_key("k", &k);
    let stub = env.stub();
    env.start();
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut bad_tag = seal(&k, &pt("x"));
    bad_tag[60] ^= 0x80;
    let mut unknown = [0xAAu8; 94];
    let valid_sources: Vec<IpAddr> = (1..=20).map(|i| v4(127, 0, 1, i)).collect();
    let mut sent_valid = Vec::new();
    for (i, src) in valid_sources.iter().enumerate() {
        // Flow control, not timing: keep the socket's queue from overflowing on a busy
        // machine, so every datagram reaches the server and is counted.
        wait_for("the server to drain its receive queue", DEADLINE, || {
            (udp_queue(env.port, None).unwrap_or_default().0 < 512 * 1024).then_some(())
        });
        for j in 0..1000u32 {
            unknown[..4].copy_from_slice(&j.to_be_bytes());
            let d: &[u8] = if j % 2 == 0 { &unknown } else { &bad_tag };
            tx.send_to(d, env.addr()).unwrap();
        }
        let cmd = format!("valid{i}");
        env.send_from(*src, &seal(&k, &pt(&cmd)));
        sent_valid.push(Frame {
            cmd: CmdHash::of_name(&cmd),
            ip: *src,
        });
    }
    let mut got: Vec<Frame> = (0..sent_valid.len()).map(|_| stub.next_frame()).collect();
    got.sort_by_key(|f| f.cmd);
    sent_valid.sort_by_key(|f| f.cmd);
    assert_eq!(got, sent_valid);
    let s = env.wait_status("the flood counted", |s| {
        get(s, "unknown_key") + get(s, "bad_tag") + get(s, "rate_limited") >= 20_000
    });
    assert_eq!(get(&s, "accepted"), 20);
    assert_eq!(
        udp_queue(env.port, None).unwrap_or_default().1,
        0,
        "the kernel dropped datagrams"
    );
    assert_eq!(get(&s, "received"), 20_020);
}

#[test]
fn sighup_reloads_keys_and_notify_protocol_is_followed() {
    let mut env = Env::new();
    let a = Key::generate().unwrap();
    env.add_key("a", &a);
    let stub = env.stub();
    env.start();
    let b = Key::generate().unwrap();
    env.send(&seal(&b, &pt("early")));
    env.wait_status("unknown key before reload", |s| get(s, "unknown_key") == 1);
    env.add_key("b", &b);
    env.signal(Signal::SIGHUP);
    env.wait_note("RELOADING=1");
    env.wait_note("READY=1");
    assert_next_frame_is(&env, &stub, &b, "late");
    // A broken reload keeps the keys that work.
    std::fs::write(env.path("keys/c.key"), "not a key").unwrap();
    chmod(&env.path("keys/c.key"), 0o600);
    env.signal(Signal::SIGHUP);
    env.wait_note("READY=1");
    assert_next_frame_is(&env, &stub, &a, "still");
    assert!(env.log().contains("reload failed"), "{}", env.log());
    env.signal(Signal::SIGTERM);
    env.wait_note("STOPPING=1");
    assert_eq!(env.wait_exit().code(), Some(0));
}

#[test]
fn runs_as_nobody_with_no_capabilities_when_started_as_root() {
    let mut env = Env::new();
    let k = Key::generate().unwrap();
    env.add_key("k", &k);
    let stub = env.stub();
    env.start();
    assert_caps_dropped(env.pid());
    assert_next_frame_is(&env, &stub, &k, "hello");
    assert!(env.log().contains("ruroco-server started"), "{}", env.log());
}

#[test]
fn socket_activated_as_root_drops_everything_too() {
    let mut env = Env::new();
    let k = Key::generate().unwrap();
    env.add_key("k", &k);
    let stub = env.stub();
    env.start_activated(&seal(&k, &pt("first")));
    assert_caps_dropped(env.pid());
    // The datagram that triggered activation is processed from the inherited socket.
    assert_eq!(stub.next_frame().cmd, CmdHash::of_name("first"));
    assert_next_frame_is(&env, &stub, &k, "second");
    assert!(env.log().contains("activation=true"), "{}", env.log());
}

fn assert_caps_dropped(pid: i32) {
    let st = proc_status(pid as u32);
    for f in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(st[f], "0000000000000000", "{f} of {pid}: {st:?}");
    }
    assert!(st["Uid"].split_whitespace().all(|u| u == "65534"), "{st:?}");
    assert!(st["Gid"].split_whitespace().all(|g| g == "65534"), "{st:?}");
    assert_eq!(st["Groups"], "65534");
    assert_eq!(st["NoNewPrivs"], "1");
}

#[test]
fn plaintext_helper_is_sane() {
    let p: Plaintext = pt("hello");
    assert_eq!(p.dst_ip, Some(LOCAL));
}

#[test]
fn dual_stack_listener_serves_ipv6_and_ipv4_mapped_sources() {
    let mut env = Env::new();
    let k = Key::generate().unwrap();
    env.add_key("k", &k);
    env.listen_host = "[::]".to_owned();
    let stub = env.stub();
    env.start();
    let v6: IpAddr = "::1".parse().unwrap();
    let mut p = pt("six");
    p.dst_ip = Some(v6);
    let s = std::net::UdpSocket::bind("[::1]:0").unwrap();
    s.send_to(&seal(&k, &p), ("::1", env.port)).unwrap();
    assert_eq!(
        stub.next_frame(),
        Frame {
            cmd: CmdHash::of_name("six"),
            ip: v6
        }
    );
    // An IPv4 client reaches the [::] socket as ::ffff:127.0.0.1 and is treated as 127.0.0.1,
    // so a strict claim of 127.0.0.1 matches.
    let mut p = pt("four");
    p.src_ip = Some(LOCAL);
    env.send(&seal(&k, &p));
    assert_eq!(
        stub.next_frame(),
        Frame {
            cmd: CmdHash::of_name("four"),
            ip: LOCAL
        }
    );
}

#[test]
fn started_unprivileged_it_stays_so_and_works() {
    let mut env = Env::new();
    let k = Key::generate().unwrap();
    env.add_key("k", &k);
    env.as_nobody = true;
    let stub = env.stub();
    env.start();
    let st = proc_status(env.pid() as u32);
    for f in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(st[f], "0000000000000000", "{f}: {st:?}");
    }
    assert_eq!(st["NoNewPrivs"], "1");
    assert!(st["Uid"].split_whitespace().all(|u| u == "65534"), "{st:?}");
    assert_next_frame_is(&env, &stub, &k, "hello");
    assert!(
        env.log().contains("bounding_cleared=false"),
        "{}",
        env.log()
    );
}
