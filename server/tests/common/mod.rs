//! Test harness for the server's black-box tests: a temp dir laid out for a server that drops
//! to `nobody`, a stub commander (a Unix listener the test owns), a NOTIFY_SOCKET, and the
//! real binary. It must never sleep to synchronise: every wait polls a condition with a deadline.
//! What the other test crates share (waits, datagrams, logfmt, `/proc`, the stub commander)
//! comes from `ruroco-testkit` and is re-exported here for the test files.
// Each test binary compiles this module and uses a different part of it and of the re-exports.
#![allow(dead_code, unused_imports)]

use ruroco_proto::protocol::Plaintext;
use ruroco_proto::{ACK_LEN, Ack, AckOutcome, CmdHash, FRAME_LEN, Frame, Key};
pub use ruroco_testkit::stub::bind_commander;
pub use ruroco_testkit::{
    DEADLINE, Notify, POLL, StubCommander, chmod, events, free_udp_port, line_has, now_ns,
    parse_status, plaintext, proc_status, seal, temp_dir, udp_queue, wait_for, write_file,
};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Instant;

pub const NOBODY: u32 = 65534;
pub const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

pub fn server_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ruroco-server")
}

/// `c` run by `sh -c "<prelude> \"$0\" \"$@\""`: the shell does `prelude` (ending in `exec`)
/// and becomes the program, with the same arguments and environment.
fn via_shell(c: &Command, prelude: &str) -> Command {
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(format!("{prelude} \"$0\" \"$@\""))
        .arg(c.get_program())
        .args(c.get_args())
        .envs(c.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .stdin(Stdio::null());
    sh
}

/// A plaintext for `cmd` to 127.0.0.1, strict, nothing claimed, a fresh counter.
pub fn pt(cmd: &str) -> Plaintext {
    plaintext(cmd, LOCAL)
}

/// Send one valid datagram for `cmd` with `key` from 127.0.0.1 and assert it is the very next
/// frame, from 127.0.0.1: proves no other frame came before it.
pub fn assert_next_frame_is(env: &Env, stub: &StubCommander, key: &Key, cmd: &str) {
    env.send(&seal(key, &pt(cmd)));
    assert_eq!(
        stub.next_frame(),
        Frame {
            cmd: CmdHash::of_name(cmd),
            ip: LOCAL
        }
    );
}

/// The server's next connection to `l`, with reads bounded by the deadline.
pub fn accept(l: &UnixListener) -> UnixStream {
    l.set_nonblocking(true).unwrap();
    let c = wait_for(
        "the server to connect to the commander socket",
        DEADLINE,
        || match l.accept() {
            Ok((c, _)) => Some(c),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
            Err(e) => panic!("accept: {e}"),
        },
    );
    c.set_nonblocking(false).unwrap();
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    c
}

/// Read exactly `n` frames from `c`.
pub fn read_frames(c: &mut UnixStream, n: usize) -> Vec<Frame> {
    (0..n)
        .map(|i| {
            let mut b = [0u8; FRAME_LEN];
            c.read_exact(&mut b)
                .unwrap_or_else(|e| panic!("frame {i} of {n} not received: {e}"));
            Frame::from_bytes(&b).unwrap()
        })
        .collect()
}

/// Write one acknowledgement (raw, so tests can send undecodable ones).
pub fn write_ack(c: &mut UnixStream, bytes: [u8; ACK_LEN]) {
    c.write_all(&bytes).unwrap();
}

/// Acknowledge `seq` with `outcome`.
pub fn ack(c: &mut UnixStream, seq: u64, outcome: AckOutcome) {
    write_ack(c, Ack { seq, outcome }.to_bytes());
}

/// Wait until the server closes `c` (EOF), failing if it sends anything first.
pub fn wait_closed(c: &mut UnixStream) {
    let mut b = [0u8; FRAME_LEN];
    match c.read(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(n) => panic!("expected the server to close the connection, got {n} bytes"),
        Err(e) => panic!("the server did not close the connection: {e}"),
    }
}

/// A temp dir laid out for one server.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub notify: Notify,
    pub notes: Vec<String>,
    pub extra_config: String,
    pub commander_socket: PathBuf,
    pub child: Option<Child>,
    /// Start the server as nobody through setpriv (from a 0755 copy of the binary).
    pub as_nobody: bool,
    /// Host part of `listen` (the port is `port`).
    pub listen_host: String,
    /// Extra environment for the server process.
    pub extra_env: Vec<(String, String)>,
    /// The counters of the last STATUS= seen.
    pub last_status: BTreeMap<String, u64>,
    /// Open this descriptor on /dev/null (without close-on-exec) in a shell that then execs
    /// the server, as a careless parent would leave it.
    pub inherit_fd: Option<u32>,
}

impl Env {
    pub fn new() -> Self {
        let dir = temp_dir("ruroco-server-test");
        let keys = dir.path().join("keys");
        std::fs::create_dir(&keys).unwrap();
        chmod(&keys, 0o755);
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::os::unix::fs::chown(&state, Some(NOBODY), Some(NOBODY)).unwrap();
        chmod(&state, 0o700);
        let notify = Notify::bind(&dir.path().join("notify.sock"));
        let commander_socket = dir.path().join("commander.sock");
        Self {
            commander_socket,
            dir,
            port: free_udp_port(),
            notify,
            notes: Vec::new(),
            extra_config: String::new(),
            child: None,
            last_status: BTreeMap::new(),
            extra_env: Vec::new(),
            listen_host: "127.0.0.1".to_owned(),
            as_nobody: false,
            inherit_fd: None,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((LOCAL, self.port))
    }

    /// Write `key` as `keys/<name>.key`, 0600 and owned by nobody (so a reload can read it).
    pub fn add_key(&self, name: &str, key: &Key) -> PathBuf {
        let p = self.path(&format!("keys/{name}.key"));
        write_file(
            &p,
            &key.to_file_text(),
            0o600,
            Some("nobody"),
            Some("nogroup"),
        );
        p
    }

    pub fn stub(&self) -> StubCommander {
        StubCommander::start(&self.commander_socket)
    }

    pub fn write_config(&self) -> PathBuf {
        let p = self.path("server.toml");
        let text = format!(
            "ips = [\"127.0.0.1\", \"::1\"]\nlisten = \"{host}:{port}\"\nkeys_dir = \"{keys}\"\n\
             state_dir = \"{state}\"\ncommander_socket = \"{sock}\"\nuser = \"nobody\"\n{extra}",
            port = self.port,
            host = self.listen_host,
            keys = self.path("keys").display(),
            state = self.path("state").display(),
            sock = self.commander_socket.display(),
            extra = self.extra_config,
        );
        write_file(&p, &text, 0o644, None, None);
        p
    }

    fn command(&self) -> Command {
        let mut c = Command::new(server_bin());
        c.arg("--config")
            .arg(self.path("server.toml"))
            .env("NOTIFY_SOCKET", self.path("notify.sock"))
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("JOURNAL_STREAM")
            .env_remove("WATCHDOG_USEC")
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        c
    }

    fn log_file(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("server.log"))
            .unwrap()
    }

    /// Start the server (config written first) and wait for READY=1.
    pub fn start(&mut self) {
        self.write_config();
        let mut c = self.command();
        if self.extra_env.iter().any(|(k, _)| k == "WATCHDOG_USEC") {
            // systemd sets WATCHDOG_PID to the service's pid; exec keeps the shell's pid.
            c = via_shell(&c, "WATCHDOG_PID=$$ exec");
        }
        if let Some(fd) = self.inherit_fd {
            c = via_shell(&c, &format!("exec {fd}</dev/null; exec"));
        }
        if self.as_nobody {
            let bin = self.path("ruroco-server");
            std::fs::copy(server_bin(), &bin).unwrap();
            chmod(&bin, 0o755);
            let mut sp = Command::new("setpriv");
            sp.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
                .arg(&bin)
                .args(c.get_args())
                .envs(c.get_envs().filter_map(|(k, v)| Some((k, v?))))
                .env_remove("LISTEN_FDS")
                .env_remove("LISTEN_PID")
                .stdin(Stdio::null());
            c = sp;
        }
        c.stdout(self.log_file()).stderr(self.log_file());
        self.child = Some(c.spawn().unwrap());
        self.wait_note("READY=1");
    }

    /// Start under `systemd-socket-activate`; it starts the server on the first datagram.
    pub fn start_activated(&mut self, first: &[u8]) {
        self.write_config();
        let mut c = Command::new("systemd-socket-activate");
        c.arg("--datagram")
            .arg("-l")
            .arg(self.addr().to_string())
            .arg("-E")
            .arg(format!(
                "NOTIFY_SOCKET={}",
                self.path("notify.sock").display()
            ))
            .arg(server_bin())
            .arg("--config")
            .arg(self.path("server.toml"))
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .stdin(Stdio::null())
            .stdout(self.log_file())
            .stderr(self.log_file());
        self.child = Some(c.spawn().unwrap());
        // Wait until the activator listens, then trigger the start.
        wait_for("systemd-socket-activate to listen", DEADLINE, || {
            std::fs::read_to_string("/proc/net/udp")
                .ok()?
                .contains(&format!(":{:04X} ", self.port))
                .then_some(())
        });
        self.send(first);
        self.wait_note("READY=1");
    }

    /// Run the binary to completion with extra args; (exit code, stdout, stderr).
    pub fn run_once(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let out = self.command().args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("server.log")).unwrap_or_default()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Wait for the child to exit and return its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        wait_for("the server to exit", DEADLINE, || child.try_wait().unwrap())
    }

    /// Drain the notify socket into `notes`.
    pub fn poll_notes(&mut self) {
        self.notify.recv_into(&mut self.notes);
    }

    /// Wait until a notify message contains `line` (as one of its lines); consumes messages
    /// up to and including it.
    pub fn wait_note(&mut self, line: &str) {
        let log = self.path("server.log");
        let end = Instant::now() + DEADLINE;
        loop {
            self.poll_notes();
            if let Some(i) = self.notes.iter().position(|m| m.lines().any(|l| l == line)) {
                self.notes.drain(..=i);
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!(
                        "server exited ({st}) before {line}: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
            if Instant::now() > end {
                panic!(
                    "no {line} on NOTIFY_SOCKET within {DEADLINE:?}; log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Wait until a STATUS= message satisfies `pred`; returns its counters.
    pub fn wait_status(
        &mut self,
        what: &str,
        pred: impl Fn(&BTreeMap<String, u64>) -> bool,
    ) -> BTreeMap<String, u64> {
        let log = self.path("server.log");
        let end = Instant::now() + DEADLINE;
        let mut last = std::mem::take(&mut self.last_status);
        loop {
            self.poll_notes();
            for m in self.notes.drain(..) {
                for l in m.lines() {
                    if let Some(s) = l.strip_prefix("STATUS=") {
                        last = parse_status(s);
                    }
                }
            }
            if pred(&last) {
                self.last_status = last.clone();
                return last;
            }
            if Instant::now() > end {
                panic!(
                    "STATUS never showed {what}; last {last:?}; log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Send from 127.0.0.1 (any port).
    pub fn send(&self, data: &[u8]) {
        self.send_from(LOCAL, data);
    }

    pub fn send_from(&self, src: IpAddr, data: &[u8]) {
        let s = UdpSocket::bind(SocketAddr::from((src, 0))).unwrap();
        s.send_to(data, self.addr()).unwrap();
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- server log ---\n{}", self.log());
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Counter `k` of a `STATUS=` (0 when absent).
pub fn get(m: &BTreeMap<String, u64>, k: &str) -> u64 {
    m.get(k).copied().unwrap_or(0)
}
