//! Black-box proof of the server's in-process sandbox: the real binary, started as root (it
//! switches to `nobody`), runs under seccomp with no_new_privs, cannot open a world-readable
//! file outside its allowed paths, and still receives, persists, reloads and forwards.
//! Keeps its own set-up (not the black-box `Env`) so the sandbox is exercised exactly as
//! packaged; takes only generic helpers from the test kit. Never leaves the daemon running.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ruroco_proto::frame::Frame;
use ruroco_proto::protocol;
use ruroco_proto::{CmdHash, Key};
use ruroco_testkit::{DEADLINE, StubCommander, free_udp_port, plaintext, seal};

const NOBODY: u32 = 65534;
const NOGROUP: u32 = 65534;

/// Kills and reaps the server whatever happens in the test.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mkdir(path: &Path, mode: u32, owner: Option<(u32, u32)>) {
    fs::create_dir_all(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    if let Some((u, g)) = owner {
        chown(path, Some(u), Some(g)).unwrap();
    }
}

fn write_key(dir: &Path, name: &str) -> Key {
    let key = Key::generate().unwrap();
    let path = dir.join(format!("{name}.key"));
    fs::write(&path, key.to_file_text().as_bytes()).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    chown(&path, Some(NOBODY), Some(NOGROUP)).unwrap();
    key
}

fn datagram(key: &Key, command: &str) -> [u8; protocol::DATAGRAM_LEN] {
    seal(key, &plaintext(command, IpAddr::V4(Ipv4Addr::LOCALHOST)))
}

/// Wait for a notify message with the line `needle`, looking first at messages in `seen`
/// from index `from` on; returns the index of the message that had it.
fn wait_notify(sock: &UnixDatagram, needle: &str, seen: &mut Vec<String>, from: usize) -> usize {
    let has = |m: &String| m.lines().any(|l| l == needle);
    if let Some(i) = seen.iter().skip(from).position(has) {
        return from + i;
    }
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < DEADLINE {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            if seen.last().is_some_and(has) {
                return seen.len() - 1;
            }
        }
    }
    panic!("no {needle} on NOTIFY_SOCKET within {DEADLINE:?}; saw {seen:?}");
}

/// Wait until the server's stderr log contains every one of `needles`.
fn wait_log(log: &Path, needles: &[&str]) -> String {
    let start = Instant::now();
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if needles.iter().all(|n| text.contains(n)) {
            return text;
        }
        if start.elapsed() > DEADLINE {
            panic!("server log lacks {needles:?} after {DEADLINE:?}:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status_field(status: &str, field: &str) -> Option<String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
}

/// Independent of the server's own report: can this kernel enforce a Landlock ruleset?
/// Probed in a throw-away thread (a ruleset binds only the thread that applies it; as root
/// no_new_privs is not needed, so the test process stays unrestricted).
fn landlock_in_kernel() -> bool {
    use landlock::{AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus};
    std::thread::spawn(|| {
        Ruleset::default()
            .handle_access(AccessFs::Execute)
            .and_then(|r| r.create())
            .map(|r| r.no_new_privs(false))
            .and_then(|r| r.restrict_self())
            .map(|st| st.ruleset != RulesetStatus::NotEnforced)
            .unwrap_or(false)
    })
    .join()
    .unwrap_or(false)
}

struct Setup {
    _tmp: tempfile::TempDir,
    outside: tempfile::TempDir,
    base: PathBuf,
    keys: PathBuf,
    state: PathBuf,
    forbidden: PathBuf,
    port: u16,
}

fn setup() -> Setup {
    let tmp = tempfile::Builder::new()
        .prefix("ruroco-sandbox")
        .tempdir_in("/tmp")
        .unwrap();
    let base = tmp.path().to_path_buf();
    mkdir(&base, 0o755, None);
    let keys = base.join("keys");
    let state = base.join("state");
    // Root's to change, the server's group may list it (what the package installs).
    mkdir(&keys, 0o750, Some((0, NOGROUP)));
    mkdir(&state, 0o700, Some((NOBODY, NOGROUP)));
    mkdir(&base.join("run"), 0o755, None);
    // A file `nobody` may read by its mode, outside every path the sandbox grants.
    let outside = tempfile::Builder::new()
        .prefix("ruroco-outside")
        .tempdir_in("/tmp")
        .unwrap();
    mkdir(outside.path(), 0o755, None);
    let forbidden = outside.path().join("readable.txt");
    fs::write(&forbidden, "not for the server\n").unwrap();
    fs::set_permissions(&forbidden, fs::Permissions::from_mode(0o644)).unwrap();
    let port = free_udp_port();
    let config = format!(
        "ips = [\"127.0.0.1\"]\n\
         listen = \"127.0.0.1:{port}\"\n\
         keys_dir = \"{}\"\n\
         state_dir = \"{}\"\n\
         commander_socket = \"{}\"\n\
         user = \"nobody\"\n\
         [rate_limit]\nper_source = 1000.0\nburst = 1000\n",
        keys.display(),
        state.display(),
        base.join("run/commander.sock").display()
    );
    let cfg = base.join("server.toml");
    fs::write(&cfg, config).unwrap();
    fs::set_permissions(&cfg, fs::Permissions::from_mode(0o644)).unwrap();
    Setup {
        _tmp: tmp,
        outside,
        base,
        keys,
        state,
        forbidden,
        port,
    }
}

/// The stub commander (frames out) and the notify socket, both reachable by `nobody`.
fn peers(s: &Setup) -> (StubCommander, UnixDatagram, PathBuf) {
    // Mode 0777: `nobody` needs write permission on a socket file to connect or send to it.
    let frames = StubCommander::start(&s.base.join("run/commander.sock"));
    let notify_path = s.base.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    fs::set_permissions(&notify_path, fs::Permissions::from_mode(0o777)).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    (frames, notify, notify_path)
}

/// Status fields that prove confinement, as the kernel reports them for `pid`.
fn assert_confined(pid: u32) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(
        status_field(&status, "Seccomp").as_deref(),
        Some("2"),
        "{status}"
    );
    assert_eq!(
        status_field(&status, "NoNewPrivs").as_deref(),
        Some("1"),
        "{status}"
    );
    assert_eq!(
        status_field(&status, "CapEff").as_deref(),
        Some("0000000000000000"),
        "{status}"
    );
    let uid = status_field(&status, "Uid").unwrap_or_default();
    assert!(
        uid.split_whitespace().all(|u| u == NOBODY.to_string()),
        "server uids: {uid}"
    );
}

/// Where the in-server probe tries to get out: a UDP socket it must not reach from its own
/// socket, and a Unix socket, unrelated to the server, it must not connect to (where the
/// kernel can enforce that).
struct Targets {
    udp: UdpSocket,
    _unix: UnixListener,
    unix_path: PathBuf,
}

fn targets(outside: &Path) -> Targets {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let unix_path = outside.join("unrelated.sock");
    let unix = UnixListener::bind(&unix_path).unwrap();
    // Writable by everyone, as many system sockets are: only the sandbox can stop `nobody`.
    fs::set_permissions(&unix_path, fs::Permissions::from_mode(0o777)).unwrap();
    Targets {
        udp,
        _unix: unix,
        unix_path,
    }
}

/// The probe's environment for `targets`.
fn probe_env(s: &Setup, t: &Targets) -> Vec<(&'static str, String)> {
    vec![
        ("RUROCO_SANDBOX_SELFTEST", s.forbidden.display().to_string()),
        (
            "RUROCO_SANDBOX_SELFTEST_UDP",
            t.udp.local_addr().unwrap().to_string(),
        ),
        (
            "RUROCO_SANDBOX_SELFTEST_UNIX",
            t.unix_path.display().to_string(),
        ),
    ]
}

/// The outcome the probe logged for `probe`.
fn probe_result(text: &str, probe: &str) -> String {
    let needle = format!("probe={probe}");
    let line = text
        .lines()
        .find(|l| l.contains("sandbox_selftest") && l.split(' ').any(|pair| pair == needle))
        .unwrap_or_else(|| panic!("no self-test line for {probe}:\n{text}"));
    ["denied", "allowed"]
        .into_iter()
        .find(|r| line.split(' ').any(|pair| pair == format!("result={r}")))
        .unwrap_or_else(|| panic!("no result in {line}"))
        .to_owned()
}

/// The Landlock ABI the server reports having enforced, e.g. 9 for `(V9)`.
fn landlock_abi(text: &str) -> Option<u32> {
    let at = text.find("landlock=")?;
    let rest = &text[at..];
    let v = rest.find("(V")?;
    let digits: String = rest[v + 2..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// From inside the running server: the forbidden file could not be opened (when the kernel
/// has Landlock at all; otherwise the server must say it is not enforced), its UDP socket
/// could not be sent on, written to, connected or duplicated, nothing reached the UDP target,
/// and a Unix socket elsewhere could not be connected to where Landlock has ABI 9 (below it
/// the kernel cannot stop that, as SECURITY.md says; the test pins that down too).
fn assert_selftest_denied(log: &Path, t: &Targets) {
    let text = wait_log(log, &["probe=unix_connect_elsewhere", "seccomp=true"]);
    if landlock_in_kernel() {
        assert_eq!(probe_result(&text, "open_file"), "denied", "{text}");
        assert!(
            text.contains("landlock=\"fully enforced")
                || text.contains("landlock=\"partially enforced"),
            "{text}"
        );
    } else {
        assert!(text.contains("landlock=\"not enforced"), "{text}");
    }
    for probe in [
        "udp_dup",
        "udp_fcntl_dupfd",
        "udp_fcntl_dupfd_cloexec",
        "udp_write",
        "udp_sendto",
        "udp_connect",
    ] {
        assert_eq!(probe_result(&text, probe), "denied", "{probe}:\n{text}");
    }
    let mut buf = [0u8; 64];
    assert_eq!(
        t.udp.recv_from(&mut buf).map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::WouldBlock),
        "a datagram from the sandboxed server arrived"
    );
    let unix = probe_result(&text, "unix_connect_elsewhere");
    match landlock_abi(&text) {
        Some(abi) if abi >= 9 => assert_eq!(unix, "denied", "ABI {abi}:\n{text}"),
        abi => {
            assert_eq!(unix, "allowed", "Landlock {abi:?} cannot deny it:\n{text}");
            eprintln!("Landlock ABI {abi:?}: connecting elsewhere is not enforced here");
        }
    }
}

/// Did the filter refuse anything the server itself needed (the probe's refusals aside)?
fn refused_outside_probe(text: &str) -> bool {
    text.lines()
        .any(|l| l.contains("Operation not permitted") && !l.contains("sandbox_selftest"))
}

fn wait_exit(server: &mut Server) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(st) = server.0.try_wait().unwrap() {
            return st.code();
        }
        assert!(
            start.elapsed() < DEADLINE,
            "server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sandboxed_server_denies_foreign_files_and_still_forwards() {
    let s = setup();
    let key = write_key(&s.keys, "laptop");

    let (frames, notify, notify_path) = peers(&s);

    let t = targets(s.outside.path());
    let log = s.base.join("server.log");
    let child = Command::new(env!("CARGO_BIN_EXE_ruroco-server"))
        .arg("--config")
        .arg(s.base.join("server.toml"))
        .env("NOTIFY_SOCKET", &notify_path)
        .envs(probe_env(&s, &t))
        .env_remove("JOURNAL_STREAM")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut server = Server(child);
    let mut seen = Vec::new();
    wait_notify(&notify, "READY=1", &mut seen, 0);

    // Confinement as the kernel reports it, and the probe run after confinement (the file
    // is 0644, so only Landlock can deny it).
    assert_confined(pid);
    assert_selftest_denied(&log, &t);

    // Still does its job: a valid datagram is persisted (state dir writable) and forwarded.
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    sender
        .send_to(&datagram(&key, "hello"), ("127.0.0.1", s.port))
        .unwrap();
    let expected = Frame {
        cmd: CmdHash::of_name("hello"),
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    assert_eq!(frames.next_frame(), expected);
    // ... and its acknowledgement is read back under the filter.
    wait_log(&log, &["event=delivered"]);
    let replay = fs::read_to_string(s.state.join("replay")).unwrap();
    assert!(
        replay.contains(&key.id().to_string()),
        "replay file: {replay}"
    );

    // SIGHUP re-reads config and keys dir under the sandbox: a key added now is accepted,
    // and a config replaced the way editors do it (new file renamed over the old) is read.
    let key2 = write_key(&s.keys, "phone");
    let cfg = s.base.join("server.toml");
    let mut text = fs::read_to_string(&cfg).unwrap();
    text.push_str("[keys.phone]\ncommands = [\"open_ssh\"]\n");
    let tmp_cfg = s.base.join("server.toml.new");
    fs::write(&tmp_cfg, text).unwrap();
    fs::set_permissions(&tmp_cfg, fs::Permissions::from_mode(0o644)).unwrap();
    fs::rename(&tmp_cfg, &cfg).unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGHUP).unwrap();
    let at = seen.len();
    let reloading = wait_notify(&notify, "RELOADING=1", &mut seen, at);
    wait_notify(&notify, "READY=1", &mut seen, reloading);
    sender
        .send_to(&datagram(&key2, "open_ssh"), ("127.0.0.1", s.port))
        .unwrap();
    assert_eq!(frames.next_frame().cmd, CmdHash::of_name("open_ssh"));
    let text = wait_log(&log, &["event=reloaded"]);
    assert!(
        text.contains("keys=2"),
        "reload did not see both keys:\n{text}"
    );
    assert!(!text.contains("reload failed"), "{text}");

    // A clean stop still works with the filter in place.
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    let at = seen.len();
    wait_notify(&notify, "STOPPING=1", &mut seen, at);
    let code = wait_exit(&mut server);
    assert_eq!(code, Some(0));
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        !refused_outside_probe(&text),
        "a syscall was refused by the filter:\n{text}"
    );
}

#[test]
fn sandbox_holds_when_socket_activated_as_nobody() {
    let s = setup();
    let key = write_key(&s.keys, "laptop");
    let (frames, notify, notify_path) = peers(&s);
    // The binary must be executable by nobody even if the checkout is not reachable.
    let bin_dir = s.base.join("bin");
    mkdir(&bin_dir, 0o755, None);
    let bin = bin_dir.join("ruroco-server");
    fs::copy(env!("CARGO_BIN_EXE_ruroco-server"), &bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();

    let t = targets(s.outside.path());
    let log = s.base.join("server.log");
    let child = Command::new("systemd-socket-activate")
        .arg("--datagram")
        .arg("-l")
        .arg(format!("127.0.0.1:{}", s.port))
        .args(["-E", "NOTIFY_SOCKET", "-E", "RUROCO_SANDBOX_SELFTEST"])
        .args(["-E", "RUROCO_SANDBOX_SELFTEST_UDP"])
        .args(["-E", "RUROCO_SANDBOX_SELFTEST_UNIX"])
        .args([
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
        ])
        .args(["--bounding-set=-all", "--no-new-privs"])
        .arg(&bin)
        .arg("--config")
        .arg(s.base.join("server.toml"))
        .env("NOTIFY_SOCKET", &notify_path)
        .envs(probe_env(&s, &t))
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .expect("systemd-socket-activate (package systemd) must be installed");
    // systemd-socket-activate and setpriv exec: the child's pid becomes the server's.
    let pid = child.id();
    let mut server = Server(child);

    // The server starts on the first datagram; an empty one only counts as bad_length.
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|m: &String| m.lines().any(|l| l == "READY=1"))
    {
        assert!(
            start.elapsed() < DEADLINE,
            "no READY=1 from the socket-activated server; log:\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        let _ = sender.send_to(&[], ("127.0.0.1", s.port));
        if let Ok(n) = notify.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
        bin,
        "pid {pid} is not the server"
    );
    assert_confined(pid);
    assert_selftest_denied(&log, &t);

    sender
        .send_to(&datagram(&key, "hello"), ("127.0.0.1", s.port))
        .unwrap();
    assert_eq!(frames.next_frame().cmd, CmdHash::of_name("hello"));
    assert!(
        fs::read_to_string(s.state.join("replay"))
            .unwrap()
            .contains(&key.id().to_string())
    );

    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    let at = seen.len();
    wait_notify(&notify, "STOPPING=1", &mut seen, at);
    assert_eq!(wait_exit(&mut server), Some(0));
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("activation=true"), "{text}");
    assert!(!refused_outside_probe(&text), "{text}");
}
