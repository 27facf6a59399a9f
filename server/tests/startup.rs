//! Black-box tests of start-up refusals (each exits 78 naming the field or file), `--check`,
//! the commander peer check against a fake commander running as nobody, a commander that is
//! down, and a state directory that cannot be written.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use ruroco_proto::{Ack, AckOutcome, CmdHash, Frame, Key};
use ruroco_server::commander_link::{QUEUE_LEN, WRITE_BATCH};
use std::io::{Read, Write};
use std::os::unix::fs::chown;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Start the server expecting it to refuse; returns the log.
fn refused(env: &Env) -> String {
    env.write_config();
    let (code, _out, err) = env.run_once(&[]);
    assert_eq!(code, Some(78), "stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one error line expected: {err}");
    err
}

/// `--check` expecting a refusal: one line, and for a config error with a position the
/// config line and a caret under the problem; returns stderr.
fn check_refused(env: &Env) -> String {
    env.write_config();
    let (code, out, err) = env.run_once(&["--check"]);
    assert_eq!(code, Some(78), "stdout: {out} stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    match lines[..] {
        [_] => {}
        [first, _, caret] => assert!(
            first.starts_with("config ")
                && caret.trim_start().starts_with("| ")
                && caret.ends_with('^'),
            "{err}"
        ),
        _ => panic!("one line, or one with its config line and caret: {err}"),
    }
    err
}

#[test]
fn config_errors_exit_78_naming_field_or_file() {
    let mut env = Env::new();
    let k = Key::generate().unwrap();

    // No keys at all.
    let e = check_refused(&env);
    assert!(e.contains("no *.key files") && e.contains("keys"), "{e}");
    let e = refused(&env);
    assert!(e.contains("no *.key files"), "{e}");

    let p = env.add_key("k", &k);
    env.extra_config = "listen_port = 1\n".to_owned();
    let e = check_refused(&env);
    assert!(
        e.contains("listen_port") && e.contains("server.toml"),
        "{e}"
    );

    env.extra_config = String::new();
    let cfg = env.write_config();
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"::1\"", "\"::1\", \"10.0.0.300\"");
    std::fs::write(&cfg, text).unwrap();
    let (code, _, e) = env.run_once(&["--check"]);
    assert_eq!(code, Some(78));
    assert!(e.contains("ips") || e.contains("10.0.0.300"), "{e}");

    chmod(&p, 0o644);
    let e = check_refused(&env);
    assert!(e.contains("k.key") && e.contains("chmod 0640"), "{e}");
    chmod(&p, 0o600);

    let copy = env.add_key("copy", &k);
    let e = check_refused(&env);
    assert!(e.contains("same key id") && e.contains("copy.key"), "{e}");
    std::fs::remove_file(copy).unwrap();

    env.extra_config = "[keys.nosuch]\ncommands = [\"a\"]\n".to_owned();
    let e = check_refused(&env);
    assert!(e.contains("[keys.nosuch]"), "{e}");
    env.extra_config = String::new();

    std::fs::write(
        env.path("state/replay"),
        "0102030405060708 12\nbroken line here\n",
    )
    .unwrap();
    chown(env.path("state/replay"), Some(NOBODY), Some(NOBODY)).unwrap();
    let e = refused(&env);
    assert!(e.contains("state/replay") && e.contains("line 2"), "{e}");
    // The corrupt file is left as it was, never reset.
    assert!(
        std::fs::read_to_string(env.path("state/replay"))
            .unwrap()
            .contains("broken")
    );
    // Empty, or cut short: never read as a first start (which would reset every floor).
    for (text, says) in [
        ("", "is empty"),
        ("ruroco-replay 2\n0102030405060708 12\n", "truncated"),
        ("0102030405060708 12\n0909090909", "truncated"),
    ] {
        std::fs::write(env.path("state/replay"), text).unwrap();
        chown(env.path("state/replay"), Some(NOBODY), Some(NOBODY)).unwrap();
        let e = refused(&env);
        assert!(
            e.contains("state/replay") && e.contains(says) && e.contains("restore it"),
            "{e}"
        );
        assert_eq!(
            std::fs::read_to_string(env.path("state/replay")).unwrap(),
            text,
            "the refused file is left as it was"
        );
    }
    env.child = None;
}

#[test]
fn check_prints_keys_and_settings() {
    let mut env = Env::new();
    let a = Key::generate().unwrap();
    let b = Key::generate().unwrap();
    env.add_key("a", &a);
    env.add_key("b", &b);
    env.extra_config = "[keys.b]\ncommands = [\"open_ssh\", \"hello\"]\n".to_owned();
    env.write_config();
    let (code, out, err) = env.run_once(&["--check"]);
    assert_eq!(code, Some(0), "{err}");
    let keys = env.path("keys");
    assert!(
        out.contains(&format!(
            "key {} {}/a.key commands=all\n",
            a.id(),
            keys.display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "key {} {}/b.key commands=open_ssh,hello\n",
            b.id(),
            keys.display()
        )),
        "{out}"
    );
    assert!(out.contains("max_clock_skew=3600s"), "{out}");
    assert!(out.contains("user=nobody"), "{out}");
    // Never the key itself.
    let secret = a.to_file_text();
    assert!(!out.contains(secret.trim()), "key material printed");
}

/// Not a test on its own: the fake commander, run as nobody by
/// `fake_commander_as_nobody_gets_no_frame`. Listens on RUROCO_PROBE_SOCKET and appends
/// `conn bytes=N` to RUROCO_PROBE_OUT for every connection once it closes.
#[test]
#[ignore]
fn probe_fake_commander() {
    let (Ok(sock), Ok(out)) = (
        std::env::var("RUROCO_PROBE_SOCKET"),
        std::env::var("RUROCO_PROBE_OUT"),
    ) else {
        return;
    };
    let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    chmod(std::path::Path::new(&sock), 0o777);
    for c in l.incoming() {
        let mut c = c.unwrap();
        let mut buf = Vec::new();
        let _ = c.read_to_end(&mut buf);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out)
            .unwrap();
        writeln!(f, "conn bytes={}", buf.len()).unwrap();
    }
}

#[test]
fn fake_commander_as_nobody_gets_no_frame() {
    let mut env = Env::new();
    let k = Key::generate().unwrap();
    env.add_key("k", &k);
    // A 0755 copy of this test binary (the checkout may sit under a 0700 home).
    let bin_dir = env.path("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    chmod(&bin_dir, 0o755);
    let exe = bin_dir.join("probe");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    chmod(&exe, 0o755);
    let fake = env.path("fake");
    std::fs::create_dir(&fake).unwrap();
    chown(&fake, Some(NOBODY), Some(NOBODY)).unwrap();
    env.commander_socket = fake.join("commander.sock");
    let out: PathBuf = fake.join("probe.out");
    let mut probe = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--bounding-set=-all",
            "--no-new-privs",
        ])
        .arg(&exe)
        .args([
            "--exact",
            "probe_fake_commander",
            "--ignored",
            "--nocapture",
        ])
        .env("RUROCO_PROBE_SOCKET", &env.commander_socket)
        .env("RUROCO_PROBE_OUT", &out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sock = env.commander_socket.clone();
    wait_for("the fake commander's socket", DEADLINE, || {
        sock.exists().then_some(())
    });
    env.start();
    env.send(&seal(&k, &pt("hello")));
    env.wait_status("accepted", |s| get(s, "accepted") == 1);
    wait_for(
        "the server to connect to the fake commander and hang up",
        DEADLINE,
        || std::fs::read_to_string(&out).ok().filter(|t| !t.is_empty()),
    );
    wait_for("the refusal naming uid 65534 in the log", DEADLINE, || {
        env.log().contains("runs as uid 65534").then_some(())
    });
    let s = env.wait_status("forwarded still 0", |s| get(s, "accepted") == 1);
    assert_eq!(get(&s, "forwarded"), 0);
    let _ = probe.kill();
    let _ = probe.wait();
    let lines = std::fs::read_to_string(&out).unwrap();
    assert!(
        lines.lines().all(|l| l == "conn bytes=0"),
        "the fake commander received bytes: {lines}"
    );
}

#[test]
fn frames_wait_for_a_commander_that_starts_later() {
    let mut env = Env::new();
    let k = Key::generate().unwrap();
    env.add_key("k", &k);
    env.start();
    env.send(&seal(&k, &pt("queued")));
    env.wait_status("accepted while the commander is down", |s| {
        get(s, "accepted") == 1
    });
    let stub = env.stub();
    assert_eq!(
        stub.next_frame(),
        Frame {
            cmd: CmdHash::of_name("queued"),
            ip: LOCAL
        }
    );
    env.wait_status("forwarded", |s| get(s, "forwarded") == 1);
}

#[test]
fn unwritable_state_dir_forwards_nothing_until_it_recovers() {
    let mut env = Env::new();
    let k = Key::generate().unwrap();
    env.add_key("k", &k);
    let stub = env.stub();
    env.start();
    let state = env.path("state");
    chmod(&state, 0o500);
    let d = seal(&k, &pt("blocked"));
    env.send(&d);
    env.wait_status("persist_failed", |s| get(s, "persist_failed") == 1);
    assert!(
        env.log().contains("event=failed reason=persist"),
        "{}",
        env.log()
    );
    chmod(&state, 0o700);
    // Nothing left for the blocked one: the same datagram, retried, now runs exactly once.
    env.send(&d);
    assert_eq!(stub.next_frame().cmd, CmdHash::of_name("blocked"));
    env.send(&d);
    let s = env.wait_status("copy of the retried one", |s| get(s, "duplicate") == 1);
    assert_eq!(get(&s, "accepted"), 1);
    assert!(stub.frames.try_recv().is_err());
}

#[test]
fn full_queue_drops_are_counted_and_logged() {
    let mut env = Env::new();
    let k = Key::generate().unwrap();
    env.add_key("k", &k);
    env.extra_config = "[rate_limit]\nper_source = 100000.0\nburst = 100000\n".to_owned();
    // No commander at all: the link holds one write batch, the queue takes QUEUE_LEN more.
    env.start();
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let base = now_ns();
    let total = 1200u64;
    for i in 0..total {
        let mut p = pt("hello");
        p.counter = base + u128::from(i);
        tx.send_to(&seal(&k, &p), env.addr()).unwrap();
    }
    let s = env.wait_status("every datagram accepted", |s| get(s, "accepted") == total);
    let dropped = get(&s, "queue_dropped");
    assert!(
        dropped >= total - (QUEUE_LEN + WRITE_BATCH) as u64 && dropped <= total,
        "queue_dropped {dropped}: {s:?}"
    );
    assert!(env.log().contains("queue full"), "drops are logged");
    assert_eq!(get(&s, "forwarded"), 0);
}

#[test]
fn watchdog_pings_when_asked() {
    let mut env = Env::new();
    let k = Key::generate().unwrap();
    env.add_key("k", &k);
    env.extra_env = vec![("WATCHDOG_USEC".to_owned(), "400000".to_owned())];
    env.start();
    env.wait_note("WATCHDOG=1");
    env.wait_note("WATCHDOG=1");
}

/// Voluntary context switches of every thread of `pid`: each is one wake from a sleep.
fn wakes(pid: i32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|task| {
            let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
            status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

#[test]
fn an_idle_server_wakes_at_most_once_a_second() {
    let mut env = Env::new();
    let k = Key::generate().unwrap();
    env.add_key("k", &k);
    env.start(); // returns at READY=1
    let (before, start) = (wakes(env.pid()), std::time::Instant::now());
    std::thread::sleep(std::time::Duration::from_secs(4));
    let (woke, secs) = (wakes(env.pid()) - before, start.elapsed().as_secs_f64());
    // One timer expiry per second, plus one for where the window starts in the period.
    assert!(
        woke as f64 <= secs.ceil() + 1.0,
        "{woke} wake-ups in {secs:.2} s of idling"
    );
}

#[test]
fn a_commander_that_closes_connections_still_gets_every_frame() {
    let mut env = Env::new();
    let k = Key::generate().unwrap();
    env.add_key("k", &k);
    // A commander that reads and acknowledges one frame per connection and hangs up (like
    // an idle timeout).
    let l = std::os::unix::net::UnixListener::bind(&env.commander_socket).unwrap();
    chmod(&env.commander_socket, 0o777);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let mut c = c.unwrap();
            let mut b = [0u8; 24];
            if c.read_exact(&mut b).is_ok() {
                let done = Ack {
                    seq: 0,
                    outcome: AckOutcome::Done,
                };
                let _ = c.write_all(&done.to_bytes());
                tx.send(Frame::from_bytes(&b).unwrap()).unwrap();
            }
        }
    });
    env.start();
    for cmd in ["one", "two", "three"] {
        env.send(&seal(&k, &pt(cmd)));
        let f = rx.recv_timeout(DEADLINE).expect("frame not delivered");
        assert_eq!(f.cmd, CmdHash::of_name(cmd));
    }
    let s = env.wait_status("three forwarded", |s| get(s, "forwarded") == 3);
    assert_eq!(get(&s, "queue_dropped"), 0);
}

/// A descriptor the parent left open does not survive into the running server (a second UDP
/// socket there would escape the seccomp pin on the one it receives on).
#[test]
fn descriptors_the_parent_left_open_are_closed_at_start() {
    let mut env = Env::new();
    env.add_key("a", &Key::generate().unwrap());
    env.inherit_fd = Some(7);
    env.start();
    // The number may be reused by the server's own descriptors, never for /dev/null.
    let fd7 = std::fs::read_link(format!("/proc/{}/fd/7", env.pid()));
    assert!(
        fd7.as_ref()
            .map_or(true, |p| p != std::path::Path::new("/dev/null")),
        "fd 7 of the parent is still open in the server: {fd7:?}"
    );
    // logfmt quotes the list only when it holds a space ("[7, 9]"), so accept both forms.
    let log = env.log();
    let closed: Vec<u32> = log
        .split_once("closed_inherited_fds=")
        .map(|(_, rest)| {
            let rest = rest.trim_start_matches('"').trim_start_matches('[');
            let list = rest.split(']').next().unwrap_or("");
            list.split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default();
    assert!(closed.contains(&7), "fd 7 not reported as closed: {log}");
}

/// systemd passing two sockets (two ListenDatagram= lines, or a port drop-in without the
/// reset line) is refused at start, naming the fix: only one socket is pinned by seccomp.
#[test]
fn a_second_activated_socket_is_refused() {
    let env = Env::new();
    env.add_key("a", &Key::generate().unwrap());
    env.write_config();
    let second = free_udp_port();
    let log = std::fs::File::create(env.path("server.log")).unwrap();
    let mut child = Command::new("systemd-socket-activate")
        .arg("--datagram")
        .arg("-l")
        .arg(env.addr().to_string())
        .arg("-l")
        .arg(format!("127.0.0.1:{second}"))
        .arg(server_bin())
        .arg("--config")
        .arg(env.path("server.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let bound = format!(":{:04X} ", env.port);
    wait_for("systemd-socket-activate to listen", DEADLINE, || {
        std::fs::read_to_string("/proc/net/udp")
            .unwrap_or_default()
            .contains(&bound)
            .then_some(())
    });
    let poke = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // It starts the server on the first datagram; resend until it has.
    let status = wait_for("the server to refuse two sockets", DEADLINE, || {
        let _ = poke.send_to(b"x", env.addr());
        child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(78), "{}", env.log());
    let log = env.log();
    assert!(
        log.contains("passed 2 sockets") && log.contains("exactly one"),
        "{log}"
    );
}
