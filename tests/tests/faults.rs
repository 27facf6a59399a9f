//! End to end under faults: the commander stopped or hung, the server's state directory
//! read-only or full, a SIGHUP reload, SIGTERM of each daemon. Outcomes only: what ran,
//! what was counted, who is still alive. Must never run against system paths.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use nix::sys::signal::Signal;
use ruroco_testkit::{DEADLINE, Daemon, plaintext, seal, wait_for};
use ruroco_tests::Chain;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

const LO4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const MARKER_SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

/// A permissive `hello` claiming 192.0.2.<n>, so each run is recognisable.
fn hello_for(c: &Chain, n: u8) -> ([u8; 94], String) {
    let mut pt = plaintext("hello", LO4);
    pt.strict = false;
    let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, n));
    pt.src_ip = Some(ip);
    (seal(&c.key("k1"), &pt), format!("hello {ip}"))
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn commander_stopped_while_datagrams_arrive_then_back() {
    let mut c = Chain::builder().start();
    let (d0, l0) = hello_for(&c, 1);
    c.send_raw(LO4, &d0);
    c.wait_out(1);
    let st = c.stop_commander(Signal::SIGTERM);
    assert_eq!(st.code(), Some(0), "commander exit after SIGTERM");
    let mut expected = vec![l0];
    for n in 2..5 {
        let (d, l) = hello_for(&c, n);
        c.send_raw(LO4, &d);
        expected.push(l);
    }
    // The server keeps receiving and accepting with nobody to forward to.
    c.wait_counter("accepted", 4);
    c.server_mut().assert_alive();
    assert_eq!(c.out_lines().len(), 1, "something ran with no commander");
    c.start_commander();
    // Queued frames are delivered on reconnect, each once.
    assert_eq!(sorted(c.wait_out(4)), sorted(expected.clone()));
    let s = c.wait_counter("forwarded", 4);
    assert_eq!(s.get("queue_dropped").copied().unwrap_or(0), 0, "{s:?}");
    let exp: Vec<&str> = expected.iter().map(String::as_str).collect();
    c.assert_only_ran("k1", &exp, MARKER_SRC);
    c.assert_alive();
}

#[test]
fn commander_down_longer_than_the_queue_drops_and_counts_the_overflow() {
    let mut c = Chain::builder()
        .commander_line("max_parallel = 8")
        .commander_line("queue = 4096")
        .start();
    c.stop_commander(Signal::SIGTERM);
    let k = c.key("k1");
    // Well past any sane in-memory queue for a dead commander.
    let total: u64 = 1500;
    let datagrams = permissive_hellos(&k, total, 9);
    c.send_paced(LO4, datagrams.iter().map(|d| &d[..]));
    let s = c.wait_counter("accepted", total);
    let dropped = wait_for("queue drops to be counted", DEADLINE, || {
        let d = c.status_delta().get("queue_dropped").copied().unwrap_or(0);
        (d > 0).then_some(d)
    });
    c.server_mut().assert_alive();
    assert!(dropped < total, "everything dropped: {s:?}");
    c.start_commander();
    let kept = (total - dropped) as usize;
    let lines = c.wait_out(kept);
    assert_each_ran_once(&lines);
    let s = c.wait_counter("forwarded", total - dropped);
    assert_eq!(s["forwarded"] + s["queue_dropped"], total, "{s:?}");
    c.assert_alive();
}

#[test]
fn a_hung_commander_never_stalls_the_server() {
    let mut c = Chain::builder().start();
    let (d0, l0) = hello_for(&c, 1);
    c.send_raw(LO4, &d0);
    c.wait_out(1);
    c.commander_mut().signal(Signal::SIGSTOP);
    let mut expected = vec![l0];
    for n in 2..7 {
        let (d, l) = hello_for(&c, n);
        c.send_raw(LO4, &d);
        expected.push(l);
    }
    // Garbage too: the receive loop counts it while the commander is frozen.
    for _ in 0..10 {
        c.send_raw(LO4, &[0u8; 10]);
    }
    c.wait_counter("accepted", 6);
    c.wait_counter("bad_length", 10);
    c.server_mut().assert_alive();
    c.commander_mut().signal(Signal::SIGCONT);
    let s = c.wait_counter("forwarded", 6);
    let dropped = s.get("queue_dropped").copied().unwrap_or(0);
    let lines = c.wait_out(6 - dropped as usize);
    assert_each_ran_once(&lines);
    assert_eq!(
        dropped, 0,
        "frames lost while the commander was stopped: {s:?}"
    );
    let exp: Vec<&str> = expected.iter().map(String::as_str).collect();
    c.assert_only_ran("k1", &exp, MARKER_SRC);
    c.assert_alive();
}

#[test]
fn a_commander_that_never_reads_never_stalls_the_server() {
    // A root process (this test) holds the commander socket, accepts every connection and
    // never reads: the server's writes fill the socket buffer and time out.
    let mut c = Chain::builder()
        .commander_line("max_parallel = 8")
        .commander_line("queue = 4096")
        .without_commander()
        .start();
    let listener = std::os::unix::net::UnixListener::bind(&c.socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    // Like the real one, writable by the server's group (nobody may connect: uid 0 listens).
    ruroco_testkit::chown_to(&c.socket, None, Some("nogroup"));
    ruroco_testkit::chmod(&c.socket, 0o660);
    let mut held = Vec::new();
    let k = c.key("k1");
    let total: u64 = 2000;
    let datagrams = permissive_hellos(&k, total, 8);
    for chunk in datagrams.chunks(100) {
        c.send_paced(LO4, chunk.iter().map(|d| &d[..]));
        while let Ok((conn, _)) = listener.accept() {
            held.push(conn);
        }
    }
    // Every datagram was received and judged while the link was stuck.
    c.wait_counter("accepted", total);
    for _ in 0..10 {
        c.send_raw(LO4, &[0u8; 3]);
    }
    c.wait_counter("bad_length", 10);
    c.server_mut().assert_alive();
    while let Ok((conn, _)) = listener.accept() {
        held.push(conn);
    }
    assert!(
        !held.is_empty(),
        "the server never connected:\n{}",
        c.server_log()
    );
    // Free the path and bring the real commander: the server reconnects and delivers.
    drop(held);
    drop(listener);
    std::fs::remove_file(&c.socket).unwrap();
    c.start_commander();
    let marker = c.send_marker("k1", MARKER_SRC);
    c.wait_line(&marker);
    let lines = c.out_lines();
    assert_each_ran_once(&lines);
    c.assert_alive();
}

#[test]
fn a_read_only_state_dir_forwards_nothing_and_says_why() {
    let mut c = Chain::builder().start();
    let (d1, l1) = hello_for(&c, 1);
    c.send_raw(LO4, &d1);
    c.wait_out(1);
    // The server (nobody) owns the dir; without write permission no floor can be persisted.
    ruroco_testkit::chmod(&c.state_dir, 0o500);
    let (d2, _) = hello_for(&c, 2);
    c.send_raw(LO4, &d2);
    c.wait_counter("persist_failed", 1);
    ruroco_testkit::chmod(&c.state_dir, 0o700);
    let log = c.server_log();
    assert!(
        ruroco_testkit::log_has(&log, "event=failed reason=persist"),
        "no persist failure logged:\n{log}"
    );
    once_the_disk_recovers_the_next_one_runs(&mut c, &l1);
}

/// A small tmpfs over `dir`, unmounted (lazily) on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_state_dir_forwards_nothing_and_says_why() {
    let mut c = Chain::builder().without_server().start();
    let Some(_mnt) = Tmpfs::mount(&c.state_dir, "64k") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs CAP_SYS_ADMIN)");
        return;
    };
    ruroco_testkit::chown_to(&c.state_dir, Some("nobody"), Some("nogroup"));
    c.start_server();
    let (d1, l1) = hello_for(&c, 1);
    c.send_raw(LO4, &d1);
    c.wait_out(1);
    // Fill the file system to the last page.
    let filler = c.state_dir.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = [0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    let (d2, _) = hello_for(&c, 2);
    c.send_raw(LO4, &d2);
    c.wait_counter("persist_failed", 1);
    c.server_mut().wait_log("event=failed reason=persist");
    std::fs::remove_file(&filler).unwrap();
    once_the_disk_recovers_the_next_one_runs(&mut c, &l1);
}

#[test]
fn sighup_reload_adds_a_key_and_removes_one() {
    let mut c = Chain::builder().keys(&["k1", "k2"]).start();
    let k2 = c.key("k2");
    c.send_raw(LO4, &seal(&k2, &plaintext("hello", LO4)));
    assert_eq!(c.wait_out(1), ["hello 127.0.0.1"]);
    std::fs::remove_file(c.key_path("k2")).unwrap();
    let k3 = ruroco_proto::Key::generate().unwrap();
    c.write_key("k3", &k3.to_file_text());
    c.server_mut().signal(Signal::SIGHUP);
    c.server_mut().wait_notify("RELOADING=1", 1);
    c.server_mut().wait_notify("READY=1", 2);
    c.send_raw(LO4, &seal(&k3, &plaintext("other", LO4)));
    c.send_raw(LO4, &seal(&k2, &plaintext("hello", LO4)));
    c.send_raw(LO4, &seal(&c.key("k1"), &plaintext("default", LO4)));
    c.expect_status(
        &[
            ("received", 4),
            ("accepted", 3),
            ("forwarded", 3),
            ("unknown_key", 1),
        ],
        &[],
    );
    c.assert_only_ran(
        "k1",
        &["hello 127.0.0.1", "other 127.0.0.1", "default 127.0.0.1"],
        MARKER_SRC,
    );
    // A broken reload keeps the keys in force and says why.
    c.write_key("broken", "not a key\n");
    c.server_mut().signal(Signal::SIGHUP);
    c.server_mut().wait_notify("RELOADING=1", 2);
    c.server_mut().wait_log("broken.key");
    c.server_mut().assert_alive();
    std::fs::remove_file(c.key_path("broken")).unwrap();
    c.send_raw(LO4, &seal(&k3, &plaintext("other", LO4)));
    c.wait_out(5);
    c.assert_alive();
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let mut c = Chain::builder().start();
    let addr = c.addr4().to_string();
    c.client_send(&addr, "k1", &["-c", "hello"]);
    c.wait_out(1);
    c.server_mut().signal(Signal::SIGTERM);
    c.server_mut().wait_notify("STOPPING=1", 1);
    let st = c.stop_server(Signal::SIGTERM);
    assert_eq!(Daemon::exit_code(st), 0, "server exit status");
    c.commander_mut().assert_alive();
}

fn pid_in(path: &Path) -> u32 {
    wait_for(
        &format!("{} to be written", path.display()),
        DEADLINE,
        || std::fs::read_to_string(path).ok()?.trim().parse().ok(),
    )
}

fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie is dead; only its parent's reaping is missing.
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn sigterm_stops_the_commander_without_orphans() {
    let mut c = Chain::builder()
        .command(
            "slow",
            "{ run = \"sleep 987 & echo $! > '@DIR/bg.pid'; echo $$ > '@DIR/sh.pid'; wait\", \
             timeout = \"2s\" }",
        )
        .start();
    c.send_raw(LO4, &seal(&c.key("k1"), &plaintext("slow", LO4)));
    let sh = pid_in(&c.root.join("sh.pid"));
    let bg = pid_in(&c.root.join("bg.pid"));
    assert!(!gone(sh) && !gone(bg), "the slow command is not running");
    c.commander_mut().signal(Signal::SIGTERM);
    c.commander_mut().wait_notify("STOPPING=1", 1);
    let st = c.stop_commander(Signal::SIGTERM);
    assert_eq!(Daemon::exit_code(st), 0, "commander exit status");
    // Whatever it chose (wait for the timeout or kill at once), nothing it started survives.
    assert!(gone(sh), "the command's shell {sh} outlived the commander");
    assert!(
        gone(bg),
        "the command's background child {bg} outlived the commander"
    );
    c.server_mut().assert_alive();
}

/// `total` permissive `hello` datagrams, each claiming its own IP in 10.`net`.0.0/16.
fn permissive_hellos(k: &ruroco_proto::Key, total: u64, net: u8) -> Vec<[u8; 94]> {
    (0..total)
        .map(|i| {
            let mut pt = plaintext("hello", LO4);
            pt.strict = false;
            pt.src_ip = Some(IpAddr::V4(Ipv4Addr::new(
                10,
                net,
                (i / 256) as u8,
                (i % 256) as u8,
            )));
            seal(k, &pt)
        })
        .collect()
}

fn assert_each_ran_once(lines: &[String]) {
    let mut uniq = lines.to_vec();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), lines.len(), "a frame ran twice: {lines:?}");
}

/// After a persist failure (datagram 2 never ran): datagram 3 runs once the state dir works
/// again, and the counters show exactly one failure.
fn once_the_disk_recovers_the_next_one_runs(c: &mut Chain, l1: &str) {
    let (d3, l3) = hello_for(c, 3);
    c.send_raw(LO4, &d3);
    c.wait_out(2);
    c.expect_status(
        &[
            ("received", 3),
            ("accepted", 2),
            ("forwarded", 2),
            ("persist_failed", 1),
        ],
        &[],
    );
    c.assert_only_ran("k1", &[l1, &l3], MARKER_SRC);
    c.assert_alive();
}
