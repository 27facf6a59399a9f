//! The benchmark's rig: a temp dir on a real disk (/var/tmp), the real commander (root) and
//! server (started as root, binding itself, switching to `nobody`), the ceiling subprocess,
//! the /proc readings (CPU ticks, RSS, socket drops) and the one system change it makes: a
//! local route of a documentation /64 on `lo` for the IPv6 sources, removed when dropped. It
//! must never touch anything else outside its own temp dir, nor leave a process it started
//! running or a route it added.

use nix::unistd::{Gid, Uid, chown};
use ruroco_proto::Key;
use ruroco_testkit::{Daemon, free_udp_port, kb_field, proc_status, udp_queue};
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

pub type R<T> = Result<T, String>;

/// uid/gid of `nobody`/`nogroup`: the server's user in the benchmark.
const NOBODY: u32 = 65534;
/// Receive buffer the server is configured with (its default) and the ceiling copies.
pub const RECEIVE_BUFFER: usize = 4 * 1024 * 1024;

pub fn chmod(p: &Path, mode: u32) -> R<()> {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {mode:o} {}: {e}", p.display()))
}

fn chown_nobody(p: &Path, user: bool) -> R<()> {
    let uid = user.then(|| Uid::from_raw(NOBODY));
    chown(p, uid, Some(Gid::from_raw(NOBODY))).map_err(|e| format!("chown {}: {e}", p.display()))
}

/// Clock ticks per second for /proc/PID/stat.
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// utime + stime of `pid` in seconds (all threads).
pub fn cpu_seconds(pid: u32, ticks: f64) -> f64 {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, rest)) = text.rsplit_once(") ") else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (get(11) + get(12)) / ticks
}

/// A `/proc/PID/status` field in bytes (e.g. VmRSS, VmHWM).
pub fn mem_bytes(pid: u32, field: &str) -> u64 {
    proc_status(pid)
        .get(field)
        .map(|v| kb_field(v))
        .unwrap_or(0)
}

/// A numeric `/proc/PID/status` field (e.g. voluntary_ctxt_switches).
pub fn status_num(pid: u32, field: &str) -> u64 {
    proc_status(pid)
        .get(field)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Something that receives a flood: the server or the ceiling.
pub trait Receiver {
    fn pid(&self) -> u32;
    fn port(&self) -> u16;
    /// (rx_queue bytes, drops) of its UDP socket.
    fn queue(&self) -> (u64, u64) {
        udp_queue(self.port(), Some(self.pid())).unwrap_or((0, 0))
    }
    /// Called while waiting: read what the receiver reports (the server's notify socket
    /// must be drained, or its sd_notify blocks once 10 datagrams are queued).
    fn tick(&mut self) {}
    fn dest(&self) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port())
    }
    /// Wait up to `limit` until its receive queue is empty (all processed); on timeout,
    /// the bytes still queued.
    fn wait_drained(&mut self, limit: Duration) -> Result<(), u64> {
        let until = Instant::now() + limit;
        loop {
            self.tick();
            let q = self.queue().0;
            if q == 0 {
                return Ok(());
            }
            if Instant::now() > until {
                return Err(q);
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }
}

/// `state wchan` of a process, to tell "busy" from "asleep with data queued".
pub fn sched_state(pid: u32) -> String {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, r)| r.split_whitespace().next())
        .unwrap_or("?")
        .to_owned();
    let wchan = fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
    format!("{state} {wchan}")
}

/// The ceiling subprocess (`bench --sink`).
#[derive(Debug)]
pub struct Sink {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    port: u16,
    pub receive_buffer: usize,
}

impl Sink {
    pub fn start() -> R<Self> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut child = Command::new(exe)
            .arg("--sink")
            .arg(RECEIVE_BUFFER.to_string())
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("start the ceiling receiver: {e}"))?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().ok_or("sink stdout")?);
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .map_err(|e| format!("ceiling receiver: {e}"))?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let (port, rcvbuf) = match words.as_slice() {
            ["port", p, "rcvbuf", b] => (p.parse().ok(), b.parse().ok()),
            _ => (None, None),
        };
        let port = port.ok_or_else(|| format!("ceiling receiver said {line:?}"))?;
        Ok(Self {
            child,
            stdin,
            stdout,
            port,
            receive_buffer: rcvbuf.unwrap_or(0),
        })
    }

    /// Stop it and return how many datagrams it counted.
    pub fn stop(mut self) -> R<u64> {
        drop(self.stdin.take());
        let mut line = String::new();
        let _ = self.stdout.read_line(&mut line);
        let _ = self.child.wait();
        line.strip_prefix("count ")
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| format!("ceiling receiver ended with {line:?}"))
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Receiver for Sink {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn port(&self) -> u16 {
        self.port
    }
}

/// The real commander + server in a temp dir under /var/tmp.
#[derive(Debug)]
pub struct Rig {
    // Declared first: killed before the dir goes.
    pub server: Option<Daemon>,
    pub commander: Option<Daemon>,
    pub root: PathBuf,
    /// A FIFO the `started` command writes one line into: its first action.
    pub started: PathBuf,
    pub key: Key,
    pub port: u16,
    /// The server's address (its `ips` and `listen`): 127.0.0.1, or ::1 for [`Rig::ipv6`].
    pub ip: IpAddr,
    bin: PathBuf,
    _dir: tempfile::TempDir,
}

impl Receiver for Rig {
    fn pid(&self) -> u32 {
        self.server.as_ref().map_or(0, Daemon::pid)
    }
    fn tick(&mut self) {
        if let Some(d) = self.server.as_mut() {
            d.drain_notify();
        }
    }
    fn port(&self) -> u16 {
        self.port
    }
}

/// Where the binaries are: next to this executable (target/release or target/debug).
pub fn bin_dir() -> R<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut dir = exe.parent().ok_or("exe has no dir")?.to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    for name in ["ruroco-server", "ruroco-commander"] {
        if !dir.join(name).is_file() {
            let profile = if dir.ends_with("release") {
                " --release"
            } else {
                ""
            };
            return Err(format!(
                "{} is missing: run `cargo build{profile} -p ruroco-server -p ruroco-commander` first",
                dir.join(name).display()
            ));
        }
    }
    Ok(dir)
}

/// `[rate_limit]` of the main rig: lifted, so every flood datagram reaches the stage it is
/// meant to test (a real AEAD attempt for bad tags and replays) instead of being rate-limited.
pub const LIFTED_LIMITS: &str =
    "per_source = 1000000000.0\nburst = 1000000000\nglobal = 1000000000.0\n";
/// The shipped defaults (2/s burst 5 per source, 100,000/s in all), for the forged-junk rows.
pub const SHIPPED_LIMITS: &str = "per_source = 2.0\nburst = 5\nglobal = 100000.0\n";

impl Rig {
    /// A rig whose server has the lifted limits.
    pub fn new() -> R<Self> {
        Self::with_limits(LIFTED_LIMITS)
    }

    /// A rig whose server has the `[rate_limit]` lines `limits`.
    pub fn with_limits(limits: &str) -> R<Self> {
        Self::build(limits, IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// The same with the server on `[::1]:PORT` (`ips = ["::1"]`), for IPv6 sources: send
    /// to [`Rig::addr`] (`Receiver::dest` is the IPv4 one).
    pub fn ipv6(limits: &str) -> R<Self> {
        Self::build(limits, IpAddr::V6(Ipv6Addr::LOCALHOST))
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    fn build(limits: &str, ip: IpAddr) -> R<Self> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("ruroco-bench.")
            .tempdir_in("/var/tmp")
            .map_err(|e| format!("temp dir under /var/tmp: {e}"))?;
        let root = dir.path().to_path_buf();
        chmod(&root, 0o755)?;
        let keys = root.join("keys");
        let state_dir = root.join("state");
        let cstate = root.join("commander-state");
        let run = root.join("run");
        for d in [&keys, &state_dir, &cstate, &run] {
            fs::create_dir(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
        }
        chmod(&keys, 0o750)?;
        chown_nobody(&keys, false)?;
        chmod(&state_dir, 0o700)?;
        chown_nobody(&state_dir, true)?;
        chmod(&cstate, 0o700)?;
        chmod(&run, 0o755)?;
        let key = Key::generate().map_err(|e| format!("generate key: {e}"))?;
        let key_path = keys.join("bench.key");
        fs::write(&key_path, key.to_file_text().as_bytes())
            .map_err(|e| format!("write key: {e}"))?;
        chmod(&key_path, 0o640)?;
        chown_nobody(&key_path, false)?;
        let port = free_udp_port();
        let socket = run.join("commander.sock");
        let started = root.join("started");
        nix::unistd::mkfifo(
            &started,
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        )
        .map_err(|e| format!("mkfifo {}: {e}", started.display()))?;
        let server_toml = format!(
            "ips = [\"{ip}\"]\nlisten = \"{}\"\nkeys_dir = \"{}\"\n\
             state_dir = \"{}\"\ncommander_socket = \"{}\"\nuser = \"nobody\"\n\
             receive_buffer = {RECEIVE_BUFFER}\n\n[rate_limit]\n{limits}",
            SocketAddr::new(ip, port),
            keys.display(),
            state_dir.display(),
            socket.display(),
        );
        let commander_toml = format!(
            "server_user = \"nobody\"\nsocket = \"{}\"\nsocket_group = \"nogroup\"\n\
             control_socket = \"{}\"\nstate_dir = \"{}\"\nmax_parallel = 4\nqueue = 65536\n\n\
             [commands]\ntrue = \"true\"\nstarted = \"echo > '{}'\"\n",
            socket.display(),
            root.join("control").join("control.sock").display(),
            cstate.display(),
            started.display(),
        );
        let st = root.join("server.toml");
        let ct = root.join("commander.toml");
        fs::write(&st, server_toml).map_err(|e| format!("write server.toml: {e}"))?;
        chmod(&st, 0o644)?;
        fs::write(&ct, commander_toml).map_err(|e| format!("write commander.toml: {e}"))?;
        chmod(&ct, 0o600)?;
        Ok(Self {
            server: None,
            commander: None,
            root,
            started,
            key,
            port,
            ip,
            bin,
            _dir: dir,
        })
    }

    pub fn start(&mut self) -> R<()> {
        let mut c = Command::new(self.bin.join("ruroco-commander"));
        c.arg("--config").arg(self.root.join("commander.toml"));
        let mut d = Daemon::spawn("commander", c, &self.root, &self.root.join("commander.log"));
        d.wait_notify("READY=1", 1);
        self.commander = Some(d);
        let mut s = Command::new(self.bin.join("ruroco-server"));
        s.arg("--config").arg(self.root.join("server.toml"));
        let mut d = Daemon::spawn("server", s, &self.root, &self.root.join("server.log"));
        d.wait_notify("READY=1", 1);
        self.server = Some(d);
        Ok(())
    }

    /// The server's last STATUS= counters.
    pub fn status(&mut self) -> std::collections::BTreeMap<String, u64> {
        self.server.as_mut().map(Daemon::status).unwrap_or_default()
    }

    /// Wait (up to 5 s: STATUS= comes at most once a second) until `name` reaches `n`;
    /// returns the last value seen.
    pub fn wait_counter(&mut self, name: &str, n: u64) -> u64 {
        self.wait_counter_for(name, n, Duration::from_secs(5))
    }

    /// The same, waiting up to `limit`.
    pub fn wait_counter_for(&mut self, name: &str, n: u64, limit: Duration) -> u64 {
        let until = Instant::now() + limit;
        loop {
            let v = self.status().get(name).copied().unwrap_or(0);
            if v >= n || Instant::now() > until {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Lines of the commander log that report a successful run of `command`.
    pub fn executed(&self, command: &str) -> u64 {
        let text = fs::read_to_string(self.root.join("commander.log")).unwrap_or_default();
        let needle = format!("command={command}");
        text.lines()
            .filter(|l| {
                ruroco_testkit::line_has(l, "event=executed")
                    && ruroco_testkit::line_has(l, &needle)
            })
            .count() as u64
    }

    pub fn server_pid(&self) -> u32 {
        self.pid()
    }

    /// The replay floor file the server writes, for the one-write-per-datagram baseline.
    pub fn baseline_path(&self) -> PathBuf {
        self.root.join("baseline-replay")
    }
}

/// A local route of `prefix` on `lo` (`ip -6 route replace local PREFIX dev lo`): every
/// address in it counts as this machine's, so anything sent to one (an ICMP error to a
/// forged source) stays on loopback. Removed when dropped, on success, error and panic alike.
/// `replace` also takes over a route an interrupted run left behind, so the next run removes
/// it; the prefix is a documentation one that nothing else on the machine uses.
#[derive(Debug)]
pub struct LocalRoute {
    prefix: String,
}

impl LocalRoute {
    pub fn add(prefix: &str) -> R<Self> {
        ip_route("replace", prefix)?;
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }
}

impl Drop for LocalRoute {
    fn drop(&mut self) {
        if let Err(e) = ip_route("del", &self.prefix) {
            eprintln!(
                "bench: could not remove the route: {e}; remove it with `ip -6 route del local {} dev lo`",
                self.prefix
            );
        }
    }
}

fn ip_route(verb: &str, prefix: &str) -> R<()> {
    let out = Command::new("ip")
        .args(["-6", "route", verb, "local", prefix, "dev", "lo"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip -6 route {verb} local {prefix} dev lo: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip -6 route {verb} local {prefix} dev lo: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
