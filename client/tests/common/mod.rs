//! Helpers for the black-box tests of the `ruroco-client` binary: a temp dir with a key and a
//! state dir, running the binary, and receiving its datagrams on a socket the test owns.
//! Never sleeps to synchronise: every wait has a deadline and fails loudly.
//! The clock and the deadline come from `ruroco-testkit`, re-exported for the test files.
// Each test binary compiles this module and uses a different part of it and of the re-exports.
#![allow(dead_code, unused_imports)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ruroco_proto::protocol::{self, DATAGRAM_LEN};
use ruroco_proto::{Key, Plaintext};
pub use ruroco_testkit::{DEADLINE, now_ns};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ruroco-client")
}

/// A temp dir holding a fresh key (`k.key`, 0600) and a state dir (`state`).
pub struct Ctx {
    pub dir: tempfile::TempDir,
    pub key_path: PathBuf,
    pub key: Key,
}

impl Ctx {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("k.key");
        let out = Command::new(bin())
            .arg("gen")
            .arg("-o")
            .arg(&key_path)
            .output()
            .unwrap();
        assert!(out.status.success(), "gen failed: {out:?}");
        let key = ruroco_kit::key_file::load(&key_path).unwrap();
        Self { dir, key_path, key }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn counter_path(&self) -> PathBuf {
        self.state_dir().join("counter")
    }

    /// `ruroco-client --state-dir <state> <args...>`, not yet run.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("--state-dir").arg(self.state_dir()).args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// `send -k <key> <args...>`, asserting success; `-c default` is added when `args` name no
    /// command (the client itself has no default command).
    pub fn send_ok(&self, args: &[&str]) -> Output {
        let mut all = vec!["send", "-k", path_str(&self.key_path)];
        if !args.iter().any(|a| *a == "-c" || *a == "--command") {
            all.extend_from_slice(&["-c", "default"]);
        }
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert!(
            out.status.success(),
            "send {args:?} failed: {}",
            stderr(&out)
        );
        out
    }

    pub fn stored_counter(&self) -> u128 {
        std::fs::read_to_string(self.counter_path())
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    pub fn open(&self, datagram: &[u8]) -> Plaintext {
        protocol::open(&self.key, datagram).unwrap()
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A UDP socket the test owns, bound to port 0 of `ip`.
pub fn listener(ip: &str) -> (UdpSocket, SocketAddr) {
    let s = UdpSocket::bind((ip, 0)).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let a = s.local_addr().unwrap();
    (s, a)
}

/// Receive one datagram (failing after the deadline), asserting it is exactly 94 bytes.
pub fn recv(sock: &UdpSocket) -> Vec<u8> {
    let mut buf = [0u8; 512];
    let (n, from) = sock
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("no datagram within {DEADLINE:?}: {e}"));
    assert_eq!(n, DATAGRAM_LEN, "datagram from {from} has {n} bytes");
    buf[..n].to_vec()
}

/// True if a datagram is already waiting (never blocks).
pub fn has_pending(sock: &UdpSocket) -> bool {
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 512];
    let r = sock.peek_from(&mut buf);
    sock.set_nonblocking(false).unwrap();
    r.is_ok()
}

/// Make a FIFO at `path` (mode 0600).
pub fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

/// Run `cmd`, which is given the FIFO `fifo`. A client that hangs in open() on it is woken
/// once `DEADLINE` has passed (the FIFO is opened for writing and closed), so the test fails
/// on the output instead of hanging; one that refuses the FIFO at once is never touched.
pub fn output_with_fifo(cmd: &mut Command, fifo: &Path) -> Output {
    use std::os::unix::fs::OpenOptionsExt;
    let (done, rx) = std::sync::mpsc::channel::<()>();
    let f = fifo.to_owned();
    let waker = std::thread::spawn(move || {
        if rx.recv_timeout(DEADLINE).is_err() {
            // Non-blocking: fails with ENXIO when nobody reads it, instead of waiting.
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
                .open(&f);
        }
    });
    let out = cmd.output().unwrap();
    let _ = done.send(());
    waker.join().unwrap();
    out
}

/// True when the tests run as root (some cases need files of another user).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
