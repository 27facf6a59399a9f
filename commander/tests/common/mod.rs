//! Shared harness for the commander's black-box tests: a 0755 temp dir with a root-owned 0600
//! config, the real binary started with stderr in a log file and a NOTIFY_SOCKET the test owns,
//! and a test-owned Unix client writing frames. It must never synchronise by sleeping.
//! Generic helpers (waits, [`Daemon`], logfmt, `/proc`, running as nobody) come from
//! `ruroco-testkit` and are re-exported here for the test files.
// Each test binary compiles this module and uses a different part of it and of the re-exports.
#![allow(
    dead_code,
    unused_imports,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use ruroco_proto::{ACK_LEN, Ack, AckOutcome, CmdHash, Frame};
pub use ruroco_testkit::{
    DEADLINE, Daemon, as_nobody, copy_for_nobody, line_has, members_of_group, temp_dir, wait_until,
    write_file,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_ruroco-commander");

/// A temp dir (0755, so a probe running as nobody can reach the socket) with the config.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub socket_group: String,
}

impl Env {
    pub fn new() -> Self {
        let dir = temp_dir("ruroco-commander-test.");
        Self {
            dir,
            socket_group: "root".to_owned(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn socket(&self) -> PathBuf {
        self.path("commander.sock")
    }

    pub fn config(&self) -> PathBuf {
        self.path("commander.toml")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path("state")
    }

    /// The 0.1.0 pending-undo file (imported and removed at start).
    pub fn legacy_undo_file(&self) -> PathBuf {
        self.state_dir().join("undo")
    }

    /// Where the grant records live.
    pub fn grants_dir(&self) -> PathBuf {
        self.state_dir().join("grants")
    }

    /// The root-only control socket.
    pub fn control(&self) -> PathBuf {
        self.path("control").join("control.sock")
    }

    /// `ruroco-commander --control <socket> <args>`.
    pub fn op(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--control")
            .arg(self.control())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn out(&self) -> PathBuf {
        self.path("out")
    }

    /// Lines the commands appended to `out`.
    pub fn out_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.out())
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Write the config: `top` goes before `[commands]`, `commands` after it. `$DIR` in either
    /// is replaced by the temp dir.
    pub fn write_config(&self, top: &str, commands: &str) {
        let d = self.dir.path().display().to_string();
        let text = format!(
            "server_user = \"root\"\nsocket = \"{}\"\nsocket_group = \"{}\"\nstate_dir = \"{}\"\n\
             control_socket = \"{}\"\n{}\n[commands]\n{}\n",
            self.socket().display(),
            self.socket_group,
            self.state_dir().display(),
            self.control().display(),
            top.replace("$DIR", &d),
            commands.replace("$DIR", &d),
        );
        write_file(&self.config(), &text, 0o600, None, None);
    }

    /// Start the real binary and wait for READY=1.
    pub fn start(&self) -> Daemon {
        let mut d = self.spawn();
        d.wait_notify("READY=1", 1);
        d
    }

    /// Start without waiting for readiness.
    pub fn spawn(&self) -> Daemon {
        self.spawn_cmd(Command::new(BIN))
    }

    /// Start through `sh`, which first opens `fd` (without close-on-exec) on /dev/null, as a
    /// careless parent would leave it; waits for READY=1.
    pub fn start_with_inherited_fd(&self, fd: u32) -> Daemon {
        let mut c = Command::new("/bin/sh");
        c.arg("-c")
            .arg(format!("exec {fd}</dev/null; exec \"$0\" \"$@\""))
            .arg(BIN);
        let mut d = self.spawn_cmd(c);
        d.wait_notify("READY=1", 1);
        d
    }

    /// The real binary, run by `cmd`, as a [`Daemon`] logging to `commander.log`. Every
    /// start gets a notify socket of its own: an earlier daemon of the same test may still be
    /// alive.
    fn spawn_cmd(&self, mut cmd: Command) -> Daemon {
        cmd.arg("--config").arg(self.config());
        let name = format!("commander.{}", rand_suffix());
        Daemon::spawn(&name, cmd, self.dir.path(), &self.path("commander.log"))
    }

    /// Run the binary to completion with extra args (e.g. `--check`).
    pub fn run_binary(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--config")
            .arg(self.config())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Connect as the stub server (this test runs as root = server_user).
    pub fn connect(&self) -> UnixStream {
        UnixStream::connect(self.socket()).unwrap()
    }

    /// Send `name` for 192.0.2.1 on a fresh connection; its acknowledgement's outcome.
    pub fn ask(&self, name: &str) -> AckOutcome {
        let mut s = self.connect();
        send(&mut s, name, "192.0.2.1");
        read_ack(&mut s).outcome
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

pub fn frame(name: &str, ip: &str) -> [u8; 24] {
    let ip: IpAddr = ip.parse().unwrap();
    Frame {
        cmd: CmdHash::of_name(name),
        ip,
    }
    .to_bytes()
}

pub fn send(stream: &mut UnixStream, name: &str, ip: &str) {
    stream.write_all(&frame(name, ip)).unwrap();
}

/// Read one acknowledgement (bounded by `DEADLINE`).
pub fn read_ack(stream: &mut UnixStream) -> Ack {
    use std::io::Read;
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut b = [0u8; ACK_LEN];
    stream.read_exact(&mut b).expect("an acknowledgement");
    Ack::from_bytes(&b).unwrap()
}

/// The shape of a refusal on stderr: the daemon prints one line (the journal's); `--check`
/// prints that line alone or, when the problem has a place in the config, followed by the
/// config line and a caret under the problem.
#[allow(dead_code)]
pub fn assert_refusal_shape(check: bool, e: &str) {
    let lines: Vec<&str> = e.trim_end().lines().collect();
    match (check, lines.len()) {
        (_, 1) => {}
        (true, 3) => {
            assert!(lines[1].contains(" | "), "the config line: {e:?}");
            assert!(
                lines[2].trim_start().starts_with("| ") && lines[2].ends_with('^'),
                "a caret line: {e:?}"
            );
        }
        _ => panic!("one line (or three for --check): {e:?}"),
    }
}
