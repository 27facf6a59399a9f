//! Black-box tests of `ruroco-client send` and `reseed`: datagrams go to UDP sockets the test
//! owns and are decoded with the shared crate. Never depends on timing for correctness.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use nix::fcntl::{Flock, FlockArg};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, ToSocketAddrs, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use ruroco_proto::CmdHash;

#[test]
fn ipv4_default_command_strict_fields() {
    let ctx = Ctx::new();
    let (sock, addr) = listener("127.0.0.1");
    let start = now_ns();
    let out = ctx.send_ok(&["-a", &addr.to_string()]);
    let pt = ctx.open(&recv(&sock));
    assert_eq!(pt.version, 1);
    assert_eq!(pt.cmd, CmdHash::of_name("default"));
    assert!(pt.strict);
    assert_eq!(pt.src_ip, None);
    assert_eq!(pt.dst_ip, Some(addr.ip()));
    assert!(
        pt.counter >= start,
        "counter {} < start {start}",
        pt.counter
    );
    assert_eq!(ctx.stored_counter(), pt.counter);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("sent default to {addr} counter={}", pt.counter)),
        "{err}"
    );
}

#[test]
fn ipv6_permissive_with_claimed_ip_fields() {
    let ctx = Ctx::new();
    let (sock, addr) = listener("::1");
    assert_eq!(addr.to_string(), format!("[::1]:{}", addr.port()));
    ctx.send_ok(&[
        "-a",
        &addr.to_string(),
        "-c",
        "open_ssh",
        "-e",
        "-i",
        "203.0.113.7",
    ]);
    let pt = ctx.open(&recv(&sock));
    assert_eq!(pt.version, 1);
    assert_eq!(pt.cmd, CmdHash::of_name("open_ssh"));
    assert!(!pt.strict);
    assert_eq!(pt.src_ip, Some("203.0.113.7".parse().unwrap()));
    assert_eq!(pt.dst_ip, Some("::1".parse().unwrap()));
}

#[test]
fn strict_with_claimed_ipv6_and_long_flags() {
    let ctx = Ctx::new();
    let (sock, addr) = listener("127.0.0.1");
    ctx.send_ok(&[
        "--address",
        &addr.to_string(),
        "--command",
        "hello",
        "--ip",
        "2001:db8::9",
        "--ipv4",
    ]);
    let pt = ctx.open(&recv(&sock));
    assert!(pt.strict);
    assert_eq!(pt.cmd, CmdHash::of_name("hello"));
    assert_eq!(pt.src_ip, Some("2001:db8::9".parse().unwrap()));
    assert_eq!(pt.dst_ip, Some("127.0.0.1".parse().unwrap()));
}

#[test]
fn bare_ipv6_literal_uses_default_port() {
    // Needs the default port on ::1; skip (loudly) if something else holds it.
    let Ok(sock) = UdpSocket::bind("[::1]:34020") else {
        eprintln!("SKIP: [::1]:34020 is in use");
        return;
    };
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let ctx = Ctx::new();
    ctx.send_ok(&["-a", "::1", "-c", "bare"]);
    let pt = ctx.open(&recv(&sock));
    assert_eq!(pt.cmd, CmdHash::of_name("bare"));
    assert_eq!(pt.dst_ip, Some("::1".parse().unwrap()));
}

#[test]
fn counter_strictly_increases_across_runs() {
    let ctx = Ctx::new();
    let (sock, addr) = listener("127.0.0.1");
    let mut last = 0u128;
    for _ in 0..4 {
        ctx.send_ok(&["-a", &addr.to_string()]);
        let c = ctx.open(&recv(&sock)).counter;
        assert!(c > last, "counter {c} not above previous {last}");
        assert_eq!(ctx.stored_counter(), c);
        last = c;
    }
}

#[test]
fn stored_counter_ahead_of_clock_is_incremented_and_reseed_resets_it() {
    let ctx = Ctx::new();
    let (sock, addr) = listener("127.0.0.1");
    std::fs::create_dir_all(ctx.state_dir()).unwrap();
    let future = now_ns() + 1_000_000_000_000_000_000;
    std::fs::write(ctx.counter_path(), format!("{future}\n")).unwrap();
    ctx.send_ok(&["-a", &addr.to_string()]);
    assert_eq!(ctx.open(&recv(&sock)).counter, future + 1);

    let start = now_ns();
    let out = ctx.run(&["reseed"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reseeded = ctx.stored_counter();
    assert!(reseeded >= start && reseeded < future, "{reseeded}");
    let mode = std::fs::metadata(ctx.counter_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    ctx.send_ok(&["-a", &addr.to_string()]);
    let c = ctx.open(&recv(&sock)).counter;
    assert!(c > reseeded && c < future, "{c}");
}

#[test]
fn one_counter_shared_by_every_datagram_of_a_send() {
    let ctx = Ctx::new();
    let (s4, a4) = listener("127.0.0.1");
    let (s6, a6) = listener("::1");
    let out = ctx.send_ok(&["-a", &a4.to_string(), "-a", &a6.to_string(), "-d", "0"]);
    let p4 = ctx.open(&recv(&s4));
    let p6 = ctx.open(&recv(&s6));
    assert_eq!(p4.counter, p6.counter);
    assert_eq!(ctx.stored_counter(), p4.counter);
    assert_eq!(p4.dst_ip, Some(a4.ip()));
    assert_eq!(p6.dst_ip, Some(a6.ip()));
    assert_eq!(stderr(&out).matches("sent default to").count(), 2);
}

/// Bind 127.0.0.1 and ::1 on one port number (retrying on a collision).
fn dual_listener() -> (UdpSocket, UdpSocket, u16) {
    for _ in 0..50 {
        let (s4, a4) = listener("127.0.0.1");
        if let Ok(s6) = UdpSocket::bind(("::1", a4.port())) {
            s6.set_read_timeout(Some(DEADLINE)).unwrap();
            return (s4, s6, a4.port());
        }
    }
    panic!("no port free on both 127.0.0.1 and ::1");
}

#[test]
fn host_name_sends_to_every_address_with_one_counter() {
    let resolved: Vec<IpAddr> = ("localhost", 1)
        .to_socket_addrs()
        .unwrap()
        .map(|a| a.ip())
        .collect();
    let (s4, s6, port) = dual_listener();
    let ctx = Ctx::new();
    let target = format!("localhost:{port}");
    if !resolved.iter().any(IpAddr::is_ipv6) {
        // /etc/hosts without `::1 localhost`: the two-address case is covered by
        // one_counter_shared_by_every_datagram_of_a_send; here check the name path only.
        eprintln!("NOTE: localhost resolves to {resolved:?} only; checking IPv4");
        ctx.send_ok(&["-a", &target]);
        let p = ctx.open(&recv(&s4));
        assert_eq!(p.dst_ip, Some("127.0.0.1".parse().unwrap()));
        return;
    }
    ctx.send_ok(&["-a", &target, "-d", "0"]);
    let p4 = ctx.open(&recv(&s4));
    let p6 = ctx.open(&recv(&s6));
    assert_eq!(p4.counter, p6.counter);
    assert_eq!(p4.dst_ip, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(p6.dst_ip, Some("::1".parse().unwrap()));

    // -6 keeps only the IPv6 address: exactly one datagram, and it is the v6 one.
    ctx.send_ok(&["-a", &target, "-6"]);
    let p = ctx.open(&recv(&s6));
    assert!(p.counter > p6.counter);
    assert!(!has_pending(&s4), "-6 also sent to IPv4");
}

#[test]
fn concurrent_sends_get_distinct_counters() {
    const N: usize = 8;
    let ctx = Ctx::new();
    let (sock, addr) = listener("127.0.0.1");
    let key = common::path_str(&ctx.key_path).to_owned();
    let a = addr.to_string();
    let children: Vec<_> = (0..N)
        .map(|_| {
            ctx.cmd(&["send", "-c", "default", "-k", &key, "-a", &a])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let mut counters: Vec<u128> = (0..N).map(|_| ctx.open(&recv(&sock)).counter).collect();
    counters.sort_unstable();
    counters.dedup();
    assert_eq!(counters.len(), N, "duplicate counters: {counters:?}");
    assert_eq!(ctx.stored_counter(), *counters.last().unwrap());
}

#[test]
fn send_waits_for_the_lock_before_touching_the_counter() {
    let ctx = Ctx::new();
    let (sock, addr) = listener("127.0.0.1");
    ctx.send_ok(&["-a", &addr.to_string()]);
    let first = ctx.open(&recv(&sock)).counter;

    let lock_file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(ctx.state_dir().join("counter.lock"))
        .unwrap();
    let held = Flock::lock(lock_file, FlockArg::LockExclusive).unwrap();
    let key = common::path_str(&ctx.key_path).to_owned();
    let mut child = ctx
        .cmd(&["send", "-c", "default", "-k", &key, "-a", &addr.to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The child says it is waiting before it reads the counter or sends anything.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    assert!(line.contains("waiting for"), "{line}");
    assert!(!has_pending(&sock), "sent while the lock was held");
    assert_eq!(ctx.stored_counter(), first);

    drop(held);
    let second = ctx.open(&recv(&sock)).counter;
    assert!(second > first);
    assert!(child.wait().unwrap().success());
    assert_eq!(ctx.stored_counter(), second);
}

#[test]
fn default_state_dir_is_xdg_then_home() {
    let ctx = Ctx::new();
    let (sock, addr) = listener("127.0.0.1");
    let xdg = ctx.dir.path().join("xdg");
    let home = ctx.dir.path().join("home");
    let key = common::path_str(&ctx.key_path).to_owned();
    let a = addr.to_string();
    let run = |envs: &[(&str, &std::path::Path)]| {
        let mut c = std::process::Command::new(bin());
        c.args(["send", "-c", "default", "-k", &key, "-a", &a])
            .env_remove("XDG_STATE_HOME")
            .env_remove("HOME");
        for (k, v) in envs {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        ctx.open(&recv(&sock)).counter
    };
    let c1 = run(&[("XDG_STATE_HOME", &xdg), ("HOME", &home)]);
    let stored: u128 = std::fs::read_to_string(xdg.join("ruroco/counter"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(stored, c1);
    let mode = std::fs::metadata(xdg.join("ruroco"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    assert!(!home.exists());

    let c2 = run(&[("HOME", &home)]);
    let stored: u128 = std::fs::read_to_string(home.join(".local/state/ruroco/counter"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(stored, c2);
}

#[test]
fn key_readable_by_others_is_refused_group_readable_warned() {
    let ctx = Ctx::new();
    let (sock, addr) = listener("127.0.0.1");
    let k = path_str(&ctx.key_path).to_owned();
    std::fs::set_permissions(&ctx.key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = ctx.run(&["send", "-c", "x", "-k", &k, "-a", &addr.to_string()]);
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("chmod 0600 {k}")), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!has_pending(&sock), "sent with a world-readable key");
    assert!(!ctx.counter_path().exists(), "counter moved");

    std::fs::set_permissions(&ctx.key_path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = ctx.send_ok(&["-a", &addr.to_string()]);
    assert!(stderr(&out).contains("warning"), "{}", stderr(&out));
    assert!(stderr(&out).contains("chmod 0600"), "{}", stderr(&out));
    assert_eq!(ctx.open(&recv(&sock)).version, 1);
    // --quiet: nothing but errors on stderr (it may be an ssh stream under a ProxyCommand).
    let out = ctx.send_ok(&["-q", "-a", &addr.to_string()]);
    assert_eq!(stderr(&out), "", "quiet");
    assert_eq!(ctx.open(&recv(&sock)).version, 1);
}

/// Cross-check with a decoder written from SPEC.md §2 in Python (`cryptography` >= 42 for
/// AES-GCM-SIV). Skipped, loudly, where that is not installed, unless
/// `RUROCO_REQUIRE_PY_DECODER` is set (scripts/test.sh sets it once it installed the module).
#[test]
fn independent_decoder_agrees() {
    let probe = std::process::Command::new("python3")
        .args([
            "-c",
            "from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV",
        ])
        .output();
    if !matches!(probe, Ok(ref o) if o.status.success()) {
        // scripts/test.sh installs it and sets this, so there the check cannot be skipped.
        assert!(
            std::env::var_os("RUROCO_REQUIRE_PY_DECODER").is_none(),
            "RUROCO_REQUIRE_PY_DECODER is set but python3 cannot import AESGCMSIV"
        );
        eprintln!("SKIP: python3 with cryptography >= 42 (AESGCMSIV) not available");
        return;
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/independent_decode.py"
    );
    let ctx = Ctx::new();
    for (host, claimed, flags) in [
        ("127.0.0.1", "198.51.100.4", &["-e"][..]),
        ("::1", "2001:db8::1", &[][..]),
    ] {
        let (sock, addr) = listener(host);
        let a = addr.to_string();
        let mut args = vec!["-a", a.as_str()];
        args.extend_from_slice(&["-c", "open_ssh", "-i", claimed]);
        args.extend_from_slice(flags);
        ctx.send_ok(&args);
        let d = recv(&sock);
        let ours = ctx.open(&d);
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        let out = std::process::Command::new("python3")
            .args([script, path_str(&ctx.key_path), &hex, "open_ssh"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8(out.stdout).unwrap();
        let want = format!(
            "key_id_matches=True\nversion=1\ncmd_hash_matches=True\ncounter={}\nstrict={}\n\
             src_ip={claimed}\ndst_ip={}\n",
            ours.counter,
            if flags.is_empty() { "True" } else { "False" },
            addr.ip()
        );
        assert_eq!(text, want);
    }
}
