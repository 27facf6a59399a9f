//! Shared harness for the commander's black-box tests: a 0755 temp dir with a root-owned 0600
//! config, the real binary started with stderr in a log file and a NOTIFY_SOCKET the test owns,
//! and a test-owned Unix client writing frames. It must never synchronise by sleeping.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use ruroco_proto::{ACK_LEN, Ack, CmdHash, Frame};

pub const BIN: &str = env!("CARGO_BIN_EXE_ruroco-commander");
/// Generous: CI machines are slow and shared.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Poll `cond` until it holds or the deadline passes (then fail naming `what`).
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A temp dir (0755, so a probe running as nobody can reach the socket) with the config.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub socket_group: String,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ruroco-commander-test.")
            .tempdir_in("/tmp")
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
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
        fs::read_to_string(self.out())
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
        fs::write(self.config(), text).unwrap();
        fs::set_permissions(self.config(), fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// Start the real binary and wait for READY=1.
    pub fn start(&self) -> Daemon {
        let d = self.spawn();
        d.wait_notify("READY=1");
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
        let d = self.spawn_cmd(c);
        d.wait_notify("READY=1");
        d
    }

    fn spawn_cmd(&self, mut cmd: Command) -> Daemon {
        let notify_path = self.path(&format!("notify.{}", rand_suffix()));
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let log = self.path("commander.log");
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = cmd
            .arg("--config")
            .arg(self.config())
            .env("NOTIFY_SOCKET", &notify_path)
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap();
        Daemon {
            child,
            notify,
            log,
            seen: std::cell::RefCell::new(String::new()),
        }
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

/// A running commander; killed on drop.
pub struct Daemon {
    pub child: Child,
    notify: UnixDatagram,
    pub log: PathBuf,
    seen: std::cell::RefCell<String>,
}

impl Daemon {
    /// Wait until the daemon sent `state` (e.g. "READY=1") to our NOTIFY_SOCKET.
    pub fn wait_notify(&self, state: &str) {
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            if self.seen.borrow().lines().any(|l| l == state) {
                return;
            }
            if let Ok(n) = self.notify.recv(&mut buf) {
                let mut seen = self.seen.borrow_mut();
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                seen.push('\n');
                continue;
            }
            if let Ok(Some(st)) = self.child_try_wait() {
                panic!(
                    "commander exited ({st}) before {state}; log:\n{}",
                    self.log_text()
                );
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {state}; log:\n{}",
                self.log_text()
            );
        }
    }

    /// Wait until a notify line starts with `prefix` (e.g. "STATUS=reload failed"); returns it.
    pub fn wait_notify_prefix(&self, prefix: &str) -> String {
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(l) = self.seen.borrow().lines().find(|l| l.starts_with(prefix)) {
                return l.to_owned();
            }
            if let Ok(n) = self.notify.recv(&mut buf) {
                let mut seen = self.seen.borrow_mut();
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                seen.push('\n');
                continue;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for a line starting with {prefix}; log:\n{}",
                self.log_text()
            );
        }
    }

    fn child_try_wait(&self) -> std::io::Result<Option<ExitStatus>> {
        // try_wait needs &mut; peek through /proc instead to keep this &self.
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.child.id()));
        match stat {
            Ok(s) if s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z')) => {
                Ok(Some(ExitStatus::default()))
            }
            Ok(_) => Ok(None),
            Err(_) => Ok(Some(ExitStatus::default())),
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many log lines contain every one of `needles`.
    pub fn log_count(&self, needles: &[&str]) -> usize {
        self.log_text()
            .lines()
            .filter(|l| needles.iter().all(|n| line_has(l, n)))
            .count()
    }

    pub fn wait_log(&self, needles: &[&str], count: usize) {
        wait_until(&format!("{count} log line(s) with {needles:?}"), || {
            self.log_count(needles) >= count
        });
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).unwrap();
    }

    /// Wait for the process to exit (bounded) and return its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "commander did not exit; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copy a binary into a fresh 0755 dir under /tmp so uid 65534 can execute it.
pub fn copy_for_nobody(src: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("ruroco-nobody.")
        .tempdir_in("/tmp")
        .unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let dst = dir.path().join(src.file_name().unwrap());
    // A hard link writes nothing: a copy's write descriptor, inherited by a child another test
    // thread forks meanwhile, makes exec of the copy fail with ETXTBSY.
    if fs::hard_link(src, &dst).is_err() {
        fs::copy(src, &dst).unwrap();
    }
    fs::set_permissions(&dst, fs::Permissions::from_mode(0o755)).unwrap();
    (dir, dst)
}

/// `setpriv` arguments that run a command as nobody:nogroup with nothing else.
pub fn as_nobody(cmd: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "--bounding-set=-all",
        "--no-new-privs",
    ])
    .arg(cmd);
    c
}

/// Process ids whose process group is `pgid` (from /proc/*/stat).
pub fn members_of_group(pgid: i32) -> Vec<i32> {
    let mut v = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // Fields after the command name: state ppid pgrp ...
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid) && f.first() != Some(&"Z") {
            v.push(pid);
        }
    }
    v
}

/// Whether the logfmt log line `line` holds `needle`: a `key=value` needle must be a whole
/// pair of the line (`event=undo` does not match `event=undone`; `key=` matches any value),
/// any other needle is a substring (for text inside a quoted value).
pub fn line_has(line: &str, needle: &str) -> bool {
    if !needle.contains('=') {
        return line.contains(needle);
    }
    line.match_indices(needle).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + needle.len()..].chars().next();
        // A needle ending in `=` asks only for the key.
        let edge = |c: char| c == ' ' || c == '"';
        before.is_none_or(edge) && (needle.ends_with('=') || after.is_none_or(edge))
    })
}
