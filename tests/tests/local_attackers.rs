//! End to end: a local unprivileged user (uid 65534) can neither feed the commander frames
//! nor pose as the commander to collect them from the server. The probes are #[ignore]d
//! test fns re-run as nobody; they act only when RUROCO_E2E_PROBE is set. Must never run
//! against system paths.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ruroco_proto::{CmdHash, Frame};
use ruroco_testkit::{append_line, chown_to, plaintext, seal, wait_for};
use ruroco_tests::{Activation, Chain, ChainBuilder};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

const LO4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const MARKER_SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
const PROBE: &str = "RUROCO_E2E_PROBE";
const SOCKET: &str = "RUROCO_E2E_SOCKET";
const REPORT: &str = "RUROCO_E2E_REPORT";

/// As nobody: connect to the commander socket, write `hello` frames, report what happened.
#[test]
#[ignore = "probe: run as nobody by nobody_is_refused_by_the_commander"]
fn probe_feed_commander() {
    if std::env::var(PROBE).as_deref() != Ok("feed") {
        return;
    }
    let socket = std::env::var(SOCKET).unwrap();
    let report = std::env::var(REPORT).unwrap();
    let report = Path::new(&report);
    append_line(report, &format!("uid {}", nix::unistd::geteuid()));
    let mut s = match UnixStream::connect(&socket) {
        Ok(s) => s,
        Err(e) => {
            append_line(report, &format!("connect failed {e}"));
            return;
        }
    };
    append_line(report, "connected");
    let frame = Frame {
        cmd: CmdHash::of_name("hello"),
        ip: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 66)),
    }
    .to_bytes();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut written = 0;
    for _ in 0..4 {
        match s.write_all(&frame) {
            Ok(()) => written += 1,
            Err(e) => {
                append_line(report, &format!("write error {e}"));
                break;
            }
        }
    }
    let mut buf = [0u8; 16];
    let read = match s.read(&mut buf) {
        Ok(0) => "eof".to_owned(),
        Ok(n) => format!("{n} bytes"),
        Err(e) => format!("error {e}"),
    };
    append_line(report, &format!("done written={written} read={read}"));
}

/// As nobody: listen on the server's commander socket path and report every byte received.
#[test]
#[ignore = "probe: run as nobody by a_fake_commander_running_as_nobody_gets_no_frame"]
fn probe_fake_commander() {
    if std::env::var(PROBE).as_deref() != Ok("fake") {
        return;
    }
    let socket = std::env::var(SOCKET).unwrap();
    let report = std::env::var(REPORT).unwrap();
    let report = Path::new(&report);
    let l = UnixListener::bind(&socket).unwrap();
    append_line(report, "listening");
    for conn in l.incoming() {
        let Ok(mut conn) = conn else { continue };
        conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut total = 0usize;
        let mut buf = [0u8; 1024];
        loop {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        append_line(report, &format!("conn bytes={total}"));
    }
}

#[test]
fn nobody_is_refused_by_the_commander() {
    // The server runs as `daemon` here so that nobody (uid 65534) is an outsider. The socket
    // group is daemon's own (the commander refuses a server_user outside socket_group); the
    // socket is then opened to others by hand so nobody *can* connect and the commander's peer
    // check is what stops it.
    let mut c = Chain::builder()
        .server_user("daemon")
        .socket_group("daemon")
        .without_server()
        .start();
    ruroco_testkit::chmod(&c.socket, 0o666);
    c.start_server();
    let report = c.root.join("probe-report");
    let report_dir = c.root.join("probe");
    std::fs::create_dir(&report_dir).unwrap();
    chown_to(&report_dir, Some("nobody"), Some("nogroup"));
    let report = report_dir.join(report.file_name().unwrap());
    let mut probe = c.spawn_probe_as_nobody(
        "probe_feed_commander",
        &[
            (PROBE, "feed"),
            (SOCKET, c.socket.to_str().unwrap()),
            (REPORT, report.to_str().unwrap()),
        ],
        &c.root.join("probe.log"),
    );
    let st = probe.wait_exit();
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    assert!(
        st.success() && text.contains("done") && text.contains("uid 65534"),
        "probe did not run as nobody to the end ({st}): {text}\n{}",
        probe.log_text()
    );
    assert!(
        text.contains("connected"),
        "nobody could not even connect: {text}"
    );
    let log = c.commander_mut().wait_log("65534");
    assert!(
        log.contains("peer_uid") || log.contains("rejected"),
        "commander log does not show the refusal:\n{log}"
    );
    // The real server (as daemon) is still served; nobody's frames ran nothing.
    c.assert_only_ran("k1", &[], MARKER_SRC);
    c.assert_alive();
}

#[test]
fn a_fake_commander_running_as_nobody_gets_no_frame() {
    fake_commander_gets_no_frame(Chain::builder());
}

#[test]
fn the_server_as_root_direct_also_refuses_a_fake_commander() {
    // Same attack against a server that bound its port as root before switching to nobody.
    fake_commander_gets_no_frame(
        Chain::builder().activation(Activation::Direct("127.0.0.1".to_owned())),
    );
}

/// nobody wins the race for the commander's socket path; the server, whichever way it was
/// started, sees uid 65534 where it wants 0, says so, and writes it nothing.
fn fake_commander_gets_no_frame(builder: ChainBuilder) {
    let mut c = builder.without_commander().without_server().start();
    // nobody may create its socket where the server looks for the commander.
    chown_to(&c.run_dir, Some("nobody"), Some("nogroup"));
    let report_dir = c.root.join("probe");
    std::fs::create_dir(&report_dir).unwrap();
    chown_to(&report_dir, Some("nobody"), Some("nogroup"));
    let report = report_dir.join("report");
    let _fake = c.spawn_probe_as_nobody(
        "probe_fake_commander",
        &[
            (PROBE, "fake"),
            (SOCKET, c.socket.to_str().unwrap()),
            (REPORT, report.to_str().unwrap()),
        ],
        &c.root.join("probe.log"),
    );
    let read = || std::fs::read_to_string(&report).unwrap_or_default();
    wait_for(
        "the fake commander to listen",
        ruroco_testkit::DEADLINE,
        || read().contains("listening").then_some(()),
    );
    c.start_server();
    let k = c.key("k1");
    c.send_raw(LO4, &seal(&k, &plaintext("hello", LO4)));
    c.wait_counter("accepted", 1);
    c.server_mut().wait_log("65534");
    wait_for(
        "the server to connect to the fake",
        ruroco_testkit::DEADLINE,
        || read().contains("conn bytes=").then_some(()),
    );
    let text = read();
    for line in text.lines().filter(|l| l.starts_with("conn")) {
        assert_eq!(
            line, "conn bytes=0",
            "the fake commander received a frame: {text}"
        );
    }
    assert!(c.out_lines().is_empty());
    c.assert_alive();
}
