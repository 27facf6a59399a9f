//! End to end, the one-step ssh path: `ruroco-client send --wait PORT --connect` knocks, the
//! real server and commander run a command that starts a TCP listener, and the client hands
//! that connection to its caller, relayed over stdin/stdout or passed as a descriptor over a
//! Unix socket the way ssh's `ProxyUseFdpass yes` expects. Must never run against system paths.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, IoSliceMut, Read, Write};
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

use ruroco_testkit::{DEADLINE, free_tcp_port};
use ruroco_tests::{CLIENT, Chain};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};

const LISTENER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/tcp_listener.py");

/// Long enough that no resend happens on a slow machine (one listener at a time).
const SLOW: &str = "20s";

/// A chain whose command `listen` starts the test listener on `port`.
fn chain(port: u16) -> Chain {
    Chain::builder()
        .command(
            "listen",
            &format!("{{ run = \"python3 '{LISTENER}' {port}\", timeout = \"60s\" }}"),
        )
        .start()
}

/// `ruroco-client send -a <server> -k k1 -c <command> --wait <port> --wait-timeout <timeout>
/// <extra>`, not yet started.
fn client(c: &Chain, command: &str, port: u16, timeout: &str, extra: &[&str]) -> Command {
    client_with_key(c, &c.key_path("k1"), command, port, timeout, extra)
}

/// [`client`] with another key file.
fn client_with_key(
    c: &Chain,
    key: &std::path::Path,
    command: &str,
    port: u16,
    timeout: &str,
    extra: &[&str],
) -> Command {
    let mut cmd = Command::new(c.bin.join(CLIENT));
    cmd.arg("--state-dir")
        .arg(&c.client_state)
        .args(["send", "-a", &c.addr4().to_string(), "-k"])
        .arg(key)
        .args(["-c", command, "--wait", &port.to_string()])
        .args(["--wait-timeout", timeout])
        .args(extra)
        .stderr(Stdio::piped());
    cmd
}

#[test]
fn relay_over_stdin_and_stdout() {
    let port = free_tcp_port();
    let c = chain(port);
    let mut child = client(&c, "listen", port, SLOW, &["--connect"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "hello from the listener\n");
    stdin.write_all(b"ping\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "echo ping\n");
    stdin.write_all(b"12345").unwrap();
    // End of input reaches the listener as end of stream (half-close), and its answer still
    // comes back before the client exits.
    drop(stdin);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "bye after 5 more bytes\n");
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{err}");
    assert!(
        err.contains(&format!("TCP port {port} at 127.0.0.1 answered after")),
        "{err}"
    );
    assert!(
        c.commander_log().contains("listen"),
        "{}",
        c.commander_log()
    );
}

/// What ssh does for `ProxyUseFdpass yes`: one end of a socketpair as the proxy command's stdin
/// and stdout; the connected socket comes back as SCM_RIGHTS with one byte.
#[test]
fn fd_passed_to_a_peer_that_talks_over_it() {
    let port = free_tcp_port();
    let c = chain(port);
    let (ours, theirs) = UnixStream::pair().unwrap();
    let theirs_out = theirs.try_clone().unwrap();
    // --connect alone: the client sees stdin and stdout are one Unix socket and passes the fd.
    let child = client(&c, "listen", port, SLOW, &["--connect"])
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::from(OwnedFd::from(theirs_out)))
        .spawn()
        .unwrap();
    ours.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut byte = [0u8; 1];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let r = recvmsg(
        &ours,
        &mut [IoSliceMut::new(&mut byte)],
        &mut anc,
        RecvFlags::CMSG_CLOEXEC,
    )
    .unwrap();
    assert_eq!(
        r.bytes, 1,
        "ssh expects exactly one byte with the descriptor"
    );
    let mut fds: Vec<OwnedFd> = Vec::new();
    for msg in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = msg {
            fds.extend(rights);
        }
    }
    assert_eq!(fds.len(), 1, "one descriptor passed");
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{err}");
    assert!(err.contains("passed the connection"), "{err}");

    // The client has exited; the descriptor is ours and still connected to the listener.
    let mut conn = TcpStream::from(fds.remove(0));
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    assert_eq!(conn.peer_addr().unwrap().port(), port);
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "hello from the listener\n");
    conn.write_all(b"over the passed fd\n").unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "echo over the passed fd\n");
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    line.clear();
    r.read_to_string(&mut line).unwrap();
    assert_eq!(line, "bye after 0 more bytes\n");
    // Nothing was relayed through the pipe: ssh reads only the one byte.
    ours.set_nonblocking(true).unwrap();
    let mut extra = [0u8; 16];
    assert!(
        matches!((&ours).read(&mut extra), Ok(0) | Err(_)),
        "data after the descriptor"
    );
}

#[test]
fn wait_fails_with_exit_69_when_the_command_opens_nothing() {
    let port = free_tcp_port();
    let c = Chain::builder().start();
    let out = client(&c, "hello", port, "2s", &[])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(
        err.contains("did not answer") && err.contains("firewall"),
        "{err}"
    );
    // The command ran (it just opened no port), once per send: the first and the resend.
    let lines = c.wait_out(2);
    assert_eq!(lines, ["hello 127.0.0.1", "hello 127.0.0.1"]);
}

/// libssh's ProxyCommand (and socat's EXEC with stderr on the same socket) puts one end of a
/// socketpair on stdin, stdout AND stderr and expects a byte stream: `--connect` (auto) must
/// relay there, not pass the descriptor.
#[test]
fn one_socket_on_stdin_stdout_and_stderr_is_relayed() {
    let port = free_tcp_port();
    let c = chain(port);
    let (ours, theirs) = UnixStream::pair().unwrap();
    let theirs_out = theirs.try_clone().unwrap();
    let theirs_err = theirs.try_clone().unwrap();
    // --quiet: stderr is the byte stream too, so nothing else may be written to it; a key
    // of mode 0600 (the server's copy is 0640, which the client warns about).
    let keydir = tempfile::tempdir().unwrap();
    let key = keydir.path().join("k1.key");
    std::fs::copy(c.key_path("k1"), &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut child = client_with_key(&c, &key, "listen", port, SLOW, &["--connect", "--quiet"])
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::from(OwnedFd::from(theirs_out)))
        .stderr(Stdio::from(OwnedFd::from(theirs_err)))
        .spawn()
        .unwrap();
    ours.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut r = BufReader::new(ours.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "hello from the listener\n", "not relayed");
    (&ours).write_all(b"ping\n").unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "echo ping\n");
    ours.shutdown(std::net::Shutdown::Write).unwrap();
    line.clear();
    r.read_to_string(&mut line).unwrap();
    assert_eq!(line, "bye after 0 more bytes\n");
    assert!(child.wait().unwrap().success());
}
