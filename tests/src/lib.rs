//! End-to-end harness: runs the real ruroco binaries (commander as root, server as an
//! unprivileged user, socket-activated or binding itself) in a temp dir, owns their notify
//! sockets, sends datagrams, reads outcomes. It must never leave a process it started running,
//! nor touch anything outside its own temp dirs.
//!
//! What is not specific to the whole chain (waits, datagrams, logfmt, `/proc`, files, ports,
//! `Daemon`) lives in `ruroco-testkit`.
// A harness failure is a test failure: panicking with a clear message is the intended way out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use nix::sys::signal::Signal;
use ruroco_proto::Key;
use ruroco_testkit::{
    DEADLINE, Daemon, POLL, as_nobody, chmod, chown_to, free_udp_port, link_or_copy, plaintext,
    seal, send_from, temp_dir, toml_string, udp_queue, unspecified_like, wait_for, write_file,
};
use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The server binary's name.
pub const SERVER: &str = "ruroco-server";
/// The commander binary's name.
pub const COMMANDER: &str = "ruroco-commander";
/// The client binary's name.
pub const CLIENT: &str = "ruroco-client";
/// The counters the server reports in `STATUS=` besides one per rejection reason.
pub const STATUS_TOTALS: [&str; 5] = [
    "received",
    "accepted",
    "forwarded",
    "queue_dropped",
    "persist_failed",
];
/// Receive-queue bytes above which paced senders wait for the server to catch up: well below
/// the kernel's default socket buffer (`rmem_default`, 208 KiB) so nothing is dropped.
const PACE_QUEUE_BYTES: u64 = 64 * 1024;
/// How long a paced sender waits for the server to drain its queue: longer than
/// [`DEADLINE`] because a durable write on a busy disk may hold the server for seconds.
const PACE_DEADLINE: Duration = Duration::from_secs(60);

/// The cargo target profile dir holding the binaries: the test exe lives in `<it>/deps/`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

/// Copy the three binaries into `dest` (mode 0755) so an unprivileged user can run them
/// wherever the checkout lives.
pub fn install_binaries(dest: &Path) {
    let src = profile_dir();
    fs::create_dir_all(dest).unwrap();
    chmod(dest, 0o755);
    for name in [SERVER, COMMANDER, CLIENT] {
        let from = src.join(name);
        if !from.is_file() {
            panic!(
                "{} is missing: run `cargo build --workspace` first (the end-to-end tests start \
                 the real binaries)",
                from.display()
            );
        }
        link_or_copy(&from, &dest.join(name));
    }
}

/// How the server gets its UDP socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activation {
    /// `systemd-socket-activate --datagram -l HOST:PORT ...` running the server through
    /// `setpriv` as the server user from the start. Hosts like "127.0.0.1" or "[::]".
    Socket(Vec<String>),
    /// The server started as root binds `listen` (HOST) itself and switches to the user.
    Direct(String),
}

/// Describes a chain before it starts.
#[derive(Debug, Clone)]
pub struct ChainBuilder {
    keys: Vec<String>,
    key_texts: Vec<(String, String)>,
    allow: Vec<(String, Vec<String>)>,
    commands: Vec<(String, String)>,
    ips: Vec<String>,
    activation: Activation,
    server_user: String,
    socket_group: String,
    server_extra: Vec<String>,
    rate_limit: Vec<String>,
    commander_extra: Vec<String>,
    start_commander: bool,
    start_server: bool,
}

impl Default for ChainBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// Shell text that records one run: a line `<command> <ip>` appended to `out`.
pub fn record(out: &Path) -> String {
    format!("echo \"$RUROCO_COMMAND $RUROCO_IP\" >> '{}'", out.display())
}

impl ChainBuilder {
    /// One key `k1`, commands `default`, `hello`, `other` recording to the out file,
    /// `ips = ["127.0.0.1"]`, socket-activated on 127.0.0.1, server as nobody, rate limits
    /// high enough that one test source never hits them.
    pub fn new() -> Self {
        Self {
            keys: vec!["k1".to_owned()],
            key_texts: Vec::new(),
            allow: Vec::new(),
            commands: ["default", "hello", "other"]
                .iter()
                .map(|c| ((*c).to_owned(), "@record".to_owned()))
                .collect(),
            ips: vec!["127.0.0.1".to_owned()],
            activation: Activation::Socket(vec!["127.0.0.1".to_owned()]),
            server_user: "nobody".to_owned(),
            socket_group: "nogroup".to_owned(),
            server_extra: Vec::new(),
            rate_limit: vec![
                "per_source = 100000.0".to_owned(),
                "burst = 100000".to_owned(),
                "global = 10000000".to_owned(),
            ],
            commander_extra: Vec::new(),
            start_commander: true,
            start_server: true,
        }
    }

    /// Generated keys named `names` (files `<name>.key`), replacing the default `k1`.
    pub fn keys(mut self, names: &[&str]) -> Self {
        self.keys = names.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// A key file with the given text (e.g. the reference vectors' keys).
    pub fn key_text(mut self, name: &str, text: &str) -> Self {
        self.key_texts.push((name.to_owned(), text.to_owned()));
        self
    }

    /// `[keys.KEY] commands = [...]` in server.toml: what `key` may run.
    pub fn allow(mut self, key: &str, commands: &[&str]) -> Self {
        self.allow.push((
            key.to_owned(),
            commands.iter().map(|s| (*s).to_owned()).collect(),
        ));
        self
    }

    /// A command recording its runs to the out file.
    pub fn record_command(mut self, name: &str) -> Self {
        self.commands.retain(|(n, _)| n != name);
        self.commands.push((name.to_owned(), "@record".to_owned()));
        self
    }

    /// A command with a raw TOML value (string or inline table); `@OUT` in it becomes the
    /// quoted-safe path of the out file, `@DIR` the chain dir.
    pub fn command(mut self, name: &str, toml_value: &str) -> Self {
        self.commands.retain(|(n, _)| n != name);
        self.commands.push((name.to_owned(), toml_value.to_owned()));
        self
    }

    /// The server's `ips` (its own addresses a datagram may name).
    pub fn ips(mut self, ips: &[&str]) -> Self {
        self.ips = ips.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// How the server gets its socket (default: socket-activated on 127.0.0.1).
    pub fn activation(mut self, a: Activation) -> Self {
        self.activation = a;
        self
    }

    /// The commander's `socket_group` (default nogroup; the commander refuses one
    /// `server_user` is not a member of).
    pub fn socket_group(mut self, group: &str) -> Self {
        self.socket_group = group.to_owned();
        self
    }

    /// Run the server as this user (group stays nogroup, which may read the keys).
    pub fn server_user(mut self, user: &str) -> Self {
        self.server_user = user.to_owned();
        self
    }

    /// Extra top-level lines for server.toml.
    pub fn server_line(mut self, line: &str) -> Self {
        self.server_extra.push(line.to_owned());
        self
    }

    /// Replace the `[rate_limit]` lines.
    pub fn rate_limit(mut self, lines: &[&str]) -> Self {
        self.rate_limit = lines.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Extra top-level lines for commander.toml.
    pub fn commander_line(mut self, line: &str) -> Self {
        self.commander_extra.push(line.to_owned());
        self
    }

    /// Prepare everything but do not start the commander.
    pub fn without_commander(mut self) -> Self {
        self.start_commander = false;
        self
    }

    /// Prepare everything but do not start the server.
    pub fn without_server(mut self) -> Self {
        self.start_server = false;
        self
    }

    /// Write the temp dir, configs and keys, then start the commander and the server.
    pub fn start(self) -> Chain {
        let dir = temp_dir("ruroco-e2e.");
        let root = dir.path().to_path_buf();
        let bin = root.join("bin");
        install_binaries(&bin);
        let keys_dir = root.join("keys");
        let state_dir = root.join("state");
        let cstate_dir = root.join("commander-state");
        let run_dir = root.join("run");
        let client_state = root.join("client-state");
        for d in [&keys_dir, &state_dir, &cstate_dir, &run_dir, &client_state] {
            fs::create_dir(d).unwrap();
        }
        chmod(&keys_dir, 0o750);
        chown_to(&keys_dir, None, Some("nogroup"));
        chmod(&state_dir, 0o700);
        chown_to(&state_dir, Some(&self.server_user), Some("nogroup"));
        chmod(&cstate_dir, 0o700);
        chmod(&run_dir, 0o755);
        chmod(&client_state, 0o700);
        let out = root.join("out");
        let port = free_udp_port();
        let mut chain = Chain {
            server: None,
            commander: None,
            bin,
            keys_dir,
            state_dir,
            cstate_dir,
            run_dir: run_dir.clone(),
            client_state,
            out,
            server_toml: root.join("server.toml"),
            commander_toml: root.join("commander.toml"),
            socket: run_dir.join("commander.sock"),
            port,
            kicks: 0,
            baseline: BTreeMap::new(),
            cfg: self,
            root,
            dir: Some(dir),
        };
        for name in chain.cfg.keys.clone() {
            let key = Key::generate().expect("generate key");
            chain.write_key(&name, &key.to_file_text());
        }
        for (name, text) in chain.cfg.key_texts.clone() {
            chain.write_key(&name, &text);
        }
        chain.write_server_config();
        chain.write_commander_config();
        if chain.cfg.start_commander {
            chain.start_commander();
        }
        if chain.cfg.start_server {
            chain.start_server();
        }
        chain
    }
}

/// A running (or ready to run) commander + server pair in a temp dir.
#[derive(Debug)]
pub struct Chain {
    // Declared first so they are killed before the temp dir goes.
    /// The running server, if started.
    pub server: Option<Daemon>,
    /// The running commander, if started.
    pub commander: Option<Daemon>,
    /// The 0755 dir holding the three binaries.
    pub bin: PathBuf,
    /// The server's `keys_dir` (0750 root:nogroup).
    pub keys_dir: PathBuf,
    /// The server's `state_dir` (0700, owned by the server user).
    pub state_dir: PathBuf,
    /// The commander's `state_dir` (0700 root).
    pub cstate_dir: PathBuf,
    /// The dir of the commander's socket (0755).
    pub run_dir: PathBuf,
    /// The client's `--state-dir` (0700).
    pub client_state: PathBuf,
    /// Every recorded command appends `<command> <ip>` here.
    pub out: PathBuf,
    /// The server's config file.
    pub server_toml: PathBuf,
    /// The commander's config file.
    pub commander_toml: PathBuf,
    /// The commander's socket path (also the server's `commander_socket`).
    pub socket: PathBuf,
    /// The server's UDP port.
    pub port: u16,
    /// Datagrams the harness sent to wake socket activation since the server started.
    pub kicks: u64,
    /// Counters at server start (after the kicks were counted); tests speak in deltas.
    pub baseline: BTreeMap<String, u64>,
    /// What the chain was built from.
    pub cfg: ChainBuilder,
    /// The chain's temp dir.
    pub root: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl Drop for Chain {
    /// With `RUROCO_E2E_KEEP` set, the temp dir (configs, logs, out file) stays for a look.
    fn drop(&mut self) {
        if std::env::var_os("RUROCO_E2E_KEEP").is_some() {
            if let Some(d) = self.dir.take() {
                eprintln!("kept {}", d.keep().display());
            }
        }
    }
}

impl Chain {
    /// A builder with the defaults of [`ChainBuilder::new`].
    pub fn builder() -> ChainBuilder {
        ChainBuilder::new()
    }

    /// The commander's root-only control socket (in a 0700 dir the commander creates).
    pub fn control_socket(&self) -> PathBuf {
        self.root.join("control").join("control.sock")
    }

    /// `ruroco-commander --control <socket> <args>` (as root).
    pub fn commander_op(&self, args: &[&str]) -> Output {
        Command::new(self.bin.join(COMMANDER))
            .arg("--control")
            .arg(self.control_socket())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ruroco-commander")
    }

    /// The file of the key `name` (`<keys_dir>/<name>.key`).
    pub fn key_path(&self, name: &str) -> PathBuf {
        self.keys_dir.join(format!("{name}.key"))
    }

    /// Write a key file the way an operator would for a server running as an unprivileged
    /// user: 0640 root:nogroup.
    pub fn write_key(&self, name: &str, text: &str) {
        write_file(&self.key_path(name), text, 0o640, None, Some("nogroup"));
    }

    /// The key `name`, read back from its file.
    pub fn key(&self, name: &str) -> Key {
        ruroco_kit::key_file::load(&self.key_path(name)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn expand(&self, text: &str) -> String {
        text.replace("@OUT", &self.out.display().to_string())
            .replace("@DIR", &self.root.display().to_string())
    }

    /// (Re)write server.toml (0644) from [`Self::cfg`].
    pub fn write_server_config(&self) {
        let c = &self.cfg;
        let ips: Vec<String> = c.ips.iter().map(|i| format!("\"{i}\"")).collect();
        let listen = match &c.activation {
            Activation::Direct(host) => format!("{host}:{}", self.port),
            Activation::Socket(_) => format!("127.0.0.1:{}", self.port),
        };
        let mut t = format!(
            "ips = [{}]\nlisten = \"{listen}\"\nkeys_dir = \"{}\"\nstate_dir = \"{}\"\n\
             commander_socket = \"{}\"\nuser = \"{}\"\n",
            ips.join(", "),
            self.keys_dir.display(),
            self.state_dir.display(),
            self.socket.display(),
            c.server_user,
        );
        for l in &c.server_extra {
            t.push_str(&self.expand(l));
            t.push('\n');
        }
        t.push_str("\n[rate_limit]\n");
        for l in &c.rate_limit {
            t.push_str(l);
            t.push('\n');
        }
        for (key, cmds) in &c.allow {
            let list: Vec<String> = cmds.iter().map(|c| format!("\"{c}\"")).collect();
            t.push_str(&format!(
                "\n[keys.{key}]\ncommands = [{}]\n",
                list.join(", ")
            ));
        }
        write_file(&self.server_toml, &t, 0o644, None, None);
    }

    /// (Re)write commander.toml (0600) from [`Self::cfg`].
    pub fn write_commander_config(&self) {
        let c = &self.cfg;
        let mut t = format!(
            "server_user = \"{}\"\nsocket = \"{}\"\nsocket_group = \"{}\"\nstate_dir = \"{}\"\n\
             control_socket = \"{}\"\n",
            c.server_user,
            self.socket.display(),
            c.socket_group,
            self.cstate_dir.display(),
            self.control_socket().display(),
        );
        for l in &c.commander_extra {
            t.push_str(&self.expand(l));
            t.push('\n');
        }
        t.push_str("\n[commands]\n");
        for (name, v) in &c.commands {
            let value = if v == "@record" {
                toml_string(&record(&self.out))
            } else {
                self.expand(v)
            };
            t.push_str(&format!("{name} = {value}\n"));
        }
        write_file(&self.commander_toml, &t, 0o600, None, None);
    }

    /// Start the commander as root and wait for READY=1.
    pub fn start_commander(&mut self) {
        let mut cmd = Command::new(self.bin.join(COMMANDER));
        cmd.arg("--config").arg(&self.commander_toml);
        let mut d = Daemon::spawn(
            "commander",
            cmd,
            &self.root,
            &self.root.join("commander.log"),
        );
        d.wait_notify("READY=1", 1);
        self.commander = Some(d);
    }

    /// Start the server as configured and wait for READY=1 (waking socket activation with an
    /// empty datagram, counted as `bad_length`, when needed).
    pub fn start_server(&mut self) {
        let log = self.root.join("server.log");
        let user = self.cfg.server_user.clone();
        let d = match self.cfg.activation.clone() {
            Activation::Socket(hosts) => {
                let mut cmd = Command::new("systemd-socket-activate");
                cmd.arg("--datagram");
                for h in &hosts {
                    cmd.arg("-l").arg(format!("{h}:{}", self.port));
                }
                cmd.arg("-E")
                    .arg("NOTIFY_SOCKET")
                    .arg("-E")
                    .arg("RUROCO_LOG")
                    .arg("setpriv")
                    .arg(format!("--reuid={user}"))
                    .arg("--regid=nogroup")
                    .args(["--clear-groups", "--bounding-set=-all", "--no-new-privs"])
                    .arg(self.bin.join(SERVER))
                    .arg("--config")
                    .arg(&self.server_toml);
                let mut d = Daemon::spawn("server", cmd, &self.root, &log);
                // systemd-socket-activate starts the daemon on the first datagram.
                let host = hosts[0].trim_start_matches('[').trim_end_matches(']');
                let target: IpAddr = match host {
                    "::" => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
                    "0.0.0.0" => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    h => h.parse().expect("listen host"),
                };
                let pid = d.pid();
                wait_for("systemd-socket-activate to listen", DEADLINE, || {
                    udp_queue(self.port, Some(pid)).map(|_| ())
                });
                send_from(
                    unspecified_like(target),
                    SocketAddr::new(target, self.port),
                    &[],
                );
                self.kicks = 1;
                d.wait_notify("READY=1", 1);
                d
            }
            Activation::Direct(_) => {
                let mut cmd = Command::new(self.bin.join(SERVER));
                cmd.arg("--config").arg(&self.server_toml);
                self.kicks = 0;
                let mut d = Daemon::spawn("server", cmd, &self.root, &log);
                d.wait_notify("READY=1", 1);
                d
            }
        };
        self.server = Some(d);
        self.baseline = BTreeMap::new();
        if self.kicks > 0 {
            let kicks = self.kicks;
            let base = wait_for(
                "the server to count the activation datagram",
                DEADLINE,
                || {
                    let s = self.server_mut().status();
                    (s.get("received") == Some(&kicks)).then_some(s)
                },
            );
            self.baseline = base;
        }
    }

    /// The running server; fails the test when it is not running.
    pub fn server_mut(&mut self) -> &mut Daemon {
        self.server.as_mut().expect("server not running")
    }

    /// The running commander; fails the test when it is not running.
    pub fn commander_mut(&mut self) -> &mut Daemon {
        self.commander.as_mut().expect("commander not running")
    }

    /// The running server's pid; fails the test when it is not running.
    pub fn server_pid(&self) -> u32 {
        self.server.as_ref().expect("server not running").pid()
    }

    /// Stop the server with `sig` (SIGTERM or SIGKILL) and reap it; returns its exit status.
    pub fn stop_server(&mut self, sig: Signal) -> ExitStatus {
        let mut d = self.server.take().expect("server not running");
        d.signal(sig);
        let st = d.wait_exit();
        // Keep the log of earlier runs readable: the next start appends.
        drop(d);
        st
    }

    /// Stop the commander with `sig` and reap it; returns its exit status.
    pub fn stop_commander(&mut self, sig: Signal) -> ExitStatus {
        let mut d = self.commander.take().expect("commander not running");
        d.signal(sig);
        let st = d.wait_exit();
        drop(d);
        st
    }

    /// The server's log of every run so far.
    pub fn server_log(&self) -> String {
        fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
    }

    /// The commander's log of every run so far.
    pub fn commander_log(&self) -> String {
        fs::read_to_string(self.root.join("commander.log")).unwrap_or_default()
    }

    /// The server's destination for IPv4 (127.0.0.1:port).
    pub fn addr4(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port)
    }

    /// The server's destination for IPv6 ([::1]:port).
    pub fn addr6(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), self.port)
    }

    /// Run the real client with this chain's state dir.
    pub fn client(&self, args: &[&str]) -> Output {
        Command::new(self.bin.join(CLIENT))
            .arg("--state-dir")
            .arg(&self.client_state)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ruroco-client")
    }

    /// `ruroco-client send -a <addr> -k <key> <extra...>`; fails the test unless it exits 0.
    pub fn client_send(&self, addr: &str, key: &str, extra: &[&str]) -> Output {
        let kp = self.key_path(key);
        let mut args = vec!["send", "-a", addr, "-k", kp.to_str().unwrap()];
        args.extend_from_slice(extra);
        let o = self.client(&args);
        assert!(
            o.status.success(),
            "ruroco-client {args:?} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    /// Send `bytes` to the server from `from` (port chosen by the kernel).
    pub fn send_raw(&self, from: IpAddr, bytes: &[u8]) {
        let to = if from.is_ipv4() {
            self.addr4()
        } else {
            self.addr6()
        };
        send_from(from, to, bytes);
    }

    /// Send many datagrams from one source at a pace the server's socket buffer absorbs.
    pub fn send_paced<'a>(&mut self, from: IpAddr, datagrams: impl IntoIterator<Item = &'a [u8]>) {
        let to = if from.is_ipv4() {
            self.addr4()
        } else {
            self.addr6()
        };
        let sock = UdpSocket::bind(SocketAddr::new(from, 0)).expect("bind sender");
        for (i, d) in datagrams.into_iter().enumerate() {
            if i % 32 == 0 {
                self.wait_queue_below(PACE_QUEUE_BYTES);
            }
            sock.send_to(d, to).expect("send_to");
        }
    }

    /// Wait until the server socket's receive queue holds at most `bytes`.
    pub fn wait_queue_below(&mut self, bytes: u64) {
        let port = self.port;
        let pid = self.server.as_ref().map(Daemon::pid);
        let until = Instant::now() + PACE_DEADLINE;
        loop {
            let q = udp_queue(port, pid);
            match q {
                Some((rx, _)) if rx > bytes => {}
                _ => return,
            }
            if Instant::now() > until {
                let alive = self.server.as_mut().map(|s| s.alive());
                let st = self.status_delta();
                let proc_state = pid.map(|p| {
                    let read =
                        |f: &str| fs::read_to_string(format!("/proc/{p}/{f}")).unwrap_or_default();
                    format!(
                        "stat: {} wchan: {} syscall: {}",
                        read("stat").trim(),
                        read("wchan").trim(),
                        read("syscall").trim()
                    )
                });
                panic!(
                    "timed out waiting for the server's receive queue to drain below {bytes} B: \
                     (rx_queue, drops) {q:?}, server alive {alive:?}, STATUS delta {st:?}\n\
                     server process: {proc_state:?}\nserver log:\n{}",
                    self.server_log()
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Kernel drops counted on the server's UDP socket(s).
    pub fn udp_drops(&self) -> u64 {
        let pid = self.server.as_ref().map(Daemon::pid);
        udp_queue(self.port, pid).map(|(_, d)| d).unwrap_or(0)
    }

    /// Current counters minus the baseline at server start.
    pub fn status_delta(&mut self) -> BTreeMap<String, u64> {
        let base = self.baseline.clone();
        let mut s = self.server_mut().status();
        for (k, v) in s.iter_mut() {
            *v = v.saturating_sub(base.get(k).copied().unwrap_or(0));
        }
        s
    }

    /// Wait until the `STATUS=` counters, as deltas since the server started, are exactly
    /// `expected` for the listed names and zero for every other counter except those in
    /// `ignore`. Fails at once if a counter already exceeds its expectation.
    pub fn expect_status(&mut self, expected: &[(&str, u64)], ignore: &[&str]) {
        let mut names: Vec<String> = STATUS_TOTALS.iter().map(|s| (*s).to_owned()).collect();
        names.extend(
            ruroco_proto::Reject::ALL
                .iter()
                .map(|r| r.as_str().to_owned()),
        );
        let until = Instant::now() + DEADLINE;
        loop {
            let d = self.status_delta();
            let mut ok = true;
            for n in &names {
                if ignore.contains(&n.as_str()) {
                    continue;
                }
                let want = expected
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| *v)
                    .unwrap_or(0);
                let got = d.get(n).copied().unwrap_or(0);
                if got > want {
                    panic!(
                        "STATUS counter {n} is {got}, expected {want}\nexpected {expected:?}\n\
                         got (delta since start) {d:?}\nserver log:\n{}",
                        self.server_log()
                    );
                }
                if got != want {
                    ok = false;
                }
            }
            if ok {
                return;
            }
            if Instant::now() > until {
                panic!(
                    "timed out waiting for STATUS counters {expected:?} (others zero, ignoring \
                     {ignore:?}); last seen (delta since start) {d:?}; server log:\n{}",
                    self.server_log()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Wait until `name` (delta since start) is at least `n`.
    pub fn wait_counter(&mut self, name: &str, n: u64) -> BTreeMap<String, u64> {
        let until = Instant::now() + DEADLINE;
        loop {
            let d = self.status_delta();
            if d.get(name).copied().unwrap_or(0) >= n {
                return d;
            }
            if let Some(s) = self.server.as_mut() {
                s.assert_alive();
            }
            if Instant::now() > until {
                panic!(
                    "timed out waiting for STATUS {name} >= {n}; last seen (delta) {d:?}; \
                     server log:\n{}",
                    self.server_log()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Lines recorded by the commands so far.
    pub fn out_lines(&self) -> Vec<String> {
        fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Wait until at least `n` lines were recorded; returns them.
    pub fn wait_out(&self, n: usize) -> Vec<String> {
        let until = Instant::now() + DEADLINE;
        loop {
            let lines = self.out_lines();
            if lines.len() >= n {
                return lines;
            }
            if Instant::now() > until {
                panic!(
                    "timed out waiting for {n} recorded runs, have {lines:?}\nserver log:\n{}\n\
                     commander log:\n{}",
                    self.server_log(),
                    self.commander_log()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Send a fresh permissive `hello` claiming 198.51.100.250 from `src` (a source of its
    /// own) with `key`; returns the line its run records.
    pub fn send_marker(&self, key: &str, src: IpAddr) -> String {
        let k = self.key(key);
        let dst = if src.is_ipv4() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        };
        let mut pt = plaintext("hello", dst);
        pt.strict = false;
        let marker_ip = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 250));
        pt.src_ip = Some(marker_ip);
        self.send_raw(src, &seal(&k, &pt));
        format!("hello {marker_ip}")
    }

    /// Wait until `line` was recorded; returns every recorded line.
    pub fn wait_line(&self, line: &str) -> Vec<String> {
        let until = Instant::now() + DEADLINE;
        loop {
            let lines = self.out_lines();
            if lines.iter().any(|l| l == line) {
                return lines;
            }
            if Instant::now() > until {
                panic!(
                    "timed out waiting for the run {line:?}, have {} lines\nserver log:\n{}\n\
                     commander log:\n{}",
                    lines.len(),
                    self.server_log(),
                    self.commander_log()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Prove that nothing more than `expected` ran: send a marker (see [`Self::send_marker`])
    /// from `marker_src`, wait for it to run, then require the recorded lines to be exactly
    /// `expected` plus the marker (order aside: commands run in parallel).
    pub fn assert_only_ran(&mut self, key: &str, expected: &[&str], marker_src: IpAddr) {
        let marker = self.send_marker(key, marker_src);
        let mut lines = self.wait_line(&marker);
        lines.sort();
        let mut want: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        want.push(marker.clone());
        want.sort();
        assert_eq!(
            lines, want,
            "recorded runs (sorted; includes the marker {marker:?})"
        );
    }

    /// Assert both daemons still run.
    pub fn assert_alive(&mut self) {
        if let Some(s) = self.server.as_mut() {
            s.assert_alive();
        }
        if let Some(c) = self.commander.as_mut() {
            c.assert_alive();
        }
    }

    /// Copy the current test executable to a 0755 dir so `nobody` can run a probe from it.
    pub fn probe_exe(&self) -> PathBuf {
        let exe = std::env::current_exe().expect("current_exe");
        let to = self.bin.join(exe.file_name().expect("exe name"));
        if !to.exists() {
            link_or_copy(&exe, &to);
        }
        to
    }

    /// Start `probe` (an #[ignore]d test fn of the current test binary) as uid/gid
    /// 65534 with no capabilities, passing `env`.
    pub fn spawn_probe_as_nobody(&self, probe: &str, env: &[(&str, &str)], log: &Path) -> Daemon {
        let exe = self.probe_exe();
        let mut cmd = as_nobody(&exe);
        cmd.args([
            "--exact",
            probe,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .current_dir("/");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Daemon::spawn(probe, cmd, &self.root, log)
    }

    /// The chain's temp dir path.
    pub fn path(&self) -> &Path {
        &self.root
    }
}
