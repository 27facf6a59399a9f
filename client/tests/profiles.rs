//! Black-box tests of profiles (`send NAME`, `list`), the explicit command, `--wait` against
//! stub UDP and TCP sockets the test owns, and the state directory checks. Never sleeps to
//! synchronise and never talks to a real server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Output;

use ruroco_proto::CmdHash;

/// `ctx` plus `$XDG_CONFIG_HOME/ruroco/client.toml` holding `toml`; the key is copied next to it.
struct Profiles {
    ctx: Ctx,
    xdg: PathBuf,
}

impl Profiles {
    fn new(toml: &str) -> Self {
        let ctx = Ctx::new();
        let xdg = ctx.dir.path().join("xdg");
        let dir = xdg.join("ruroco");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&ctx.key_path, dir.join("home.key")).unwrap();
        std::fs::set_permissions(dir.join("home.key"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::fs::write(dir.join("client.toml"), toml).unwrap();
        Self { ctx, xdg }
    }

    fn run(&self, args: &[&str]) -> Output {
        self.ctx
            .cmd(args)
            .env("XDG_CONFIG_HOME", &self.xdg)
            .env_remove("HOME")
            .output()
            .unwrap()
    }

    fn config(&self) -> PathBuf {
        self.xdg.join("ruroco/client.toml")
    }
}

fn home_profile(addr: &str, extra: &str) -> String {
    format!(
        "[servers.home]\naddress = \"{addr}\"\nkey = \"home.key\"\ncommand = \"open_ssh\"\n{extra}"
    )
}

#[test]
fn send_name_uses_the_profile_with_a_key_relative_to_the_config() {
    let (sock, addr) = listener("127.0.0.1");
    let p = Profiles::new(&home_profile(
        &addr.to_string(),
        "permissive = true\nip = \"203.0.113.9\"\n",
    ));
    let out = p.run(&["send", "home"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pt = p.ctx.open(&recv(&sock));
    assert_eq!(pt.cmd, CmdHash::of_name("open_ssh"));
    assert!(!pt.strict);
    assert_eq!(pt.src_ip, Some("203.0.113.9".parse().unwrap()));
    assert_eq!(pt.dst_ip, Some(addr.ip()));
}

#[test]
fn flags_override_the_profile() {
    let (s1, a1) = listener("127.0.0.1");
    let (s2, a2) = listener("127.0.0.1");
    let p = Profiles::new(&home_profile(&a1.to_string(), "permissive = true\n"));
    let out = p.run(&[
        "send",
        "home",
        "-c",
        "hello",
        "--strict",
        "-a",
        &a2.to_string(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pt = p.ctx.open(&recv(&s2));
    assert_eq!(pt.cmd, CmdHash::of_name("hello"));
    assert!(pt.strict);
    assert!(!has_pending(&s1), "sent to the profile's address too");
}

#[test]
fn dash_a_without_a_port_keeps_the_profiles_port() {
    let (sock, addr) = listener("127.0.0.1");
    let p = Profiles::new(&home_profile(
        "unused.invalid",
        &format!("port = {}\n", addr.port()),
    ));
    let out = p.run(&["send", "home", "-a", "127.0.0.1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("to {addr} ")),
        "{}",
        stderr(&out)
    );
    let pt = p.ctx.open(&recv(&sock));
    assert_eq!(pt.cmd, CmdHash::of_name("open_ssh"));
    // --port overrides it, for the profile's address as for -a's.
    let (sock2, addr2) = listener("127.0.0.1");
    let port2 = addr2.port().to_string();
    let out = p.run(&["send", "home", "-a", "127.0.0.1", "--port", &port2]);
    assert!(out.status.success(), "{}", stderr(&out));
    recv(&sock2);
}

#[test]
fn unknown_profile_lists_the_known_ones() {
    let p = Profiles::new("[servers.home]\n[servers.work]\n");
    let out = p.run(&["send", "nope", "-c", "x"]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("\"nope\"") && err.contains("home, work"),
        "{err}"
    );
    assert!(!p.ctx.counter_path().exists(), "counter moved");
}

#[test]
fn no_command_is_an_error_that_says_how_to_give_one() {
    let (sock, addr) = listener("127.0.0.1");
    let p = Profiles::new(&format!(
        "[servers.home]\naddress = \"{addr}\"\nkey = \"home.key\"\n"
    ));
    let out = p.run(&["send", "home"]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("-c NAME") && err.contains("[servers.home]"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let k = path_str(&p.ctx.key_path).to_owned();
    let out = p.run(&["send", "-a", &addr.to_string(), "-k", &k]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("-c NAME"), "{}", stderr(&out));
    assert!(!has_pending(&sock), "sent without a command");
    assert!(!p.ctx.counter_path().exists(), "counter moved");
}

#[test]
fn config_errors_are_one_line_with_file_line_field_and_exit_78() {
    let p = Profiles::new("[servers.home]\nadress = \"h\"\n");
    let out = p.run(&["send", "home", "-c", "x"]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    for n in [
        &format!("{}:2:", path_str(&p.config())),
        "adress",
        "address",
    ] {
        assert!(err.contains(n), "{n} not in {err}");
    }
    let out = p.run(&["list"]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
}

#[test]
fn a_world_readable_key_in_a_profile_is_refused_with_the_chmod() {
    let (sock, addr) = listener("127.0.0.1");
    let p = Profiles::new(&home_profile(&addr.to_string(), ""));
    let key = p.xdg.join("ruroco/home.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = p.run(&["send", "home"]);
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("chmod 0600 {}", key.display())),
        "{}",
        stderr(&out)
    );
    assert!(!has_pending(&sock));
}

#[test]
fn list_shows_values_and_their_sources() {
    let p = Profiles::new(&home_profile("h.example:99", "wait = 22\n"));
    let out = p.run(&["list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(path_str(&p.config())), "{text}");
    let line = |f: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(f))
            .unwrap_or_else(|| panic!("{f} not in {text}"))
            .to_owned()
    };
    assert!(line("address").contains("h.example:99"), "{text}");
    assert!(line("key").contains(&p.xdg.join("ruroco/home.key").display().to_string()));
    assert!(
        line("key").contains("relative to the config file"),
        "{text}"
    );
    assert!(line("command").ends_with("profile"), "{text}");
    assert!(line("delay").ends_with("default"), "{text}");
    assert!(line("wait ").contains("TCP port 22"), "{text}");
}

#[test]
fn wait_exits_0_when_the_port_answers() {
    let (sock, addr) = listener("127.0.0.1");
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port().to_string();
    let out = p_send(&["-a", &addr.to_string(), "-c", "x", "--wait", &port]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("TCP port {port} at 127.0.0.1 answered after")),
        "{}",
        stderr(&out)
    );
    recv(&sock);
}

fn p_send(args: &[&str]) -> Output {
    let ctx = Ctx::new();
    let mut all = vec!["send", "-k", path_str(&ctx.key_path)];
    all.extend_from_slice(args);
    ctx.run(&all)
}

#[test]
fn wait_resends_with_a_new_counter_then_exits_69() {
    let ctx = Ctx::new();
    let (sock, addr) = listener("127.0.0.1");
    // A port nobody listens on: every connect is refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let k = path_str(&ctx.key_path).to_owned();
    let out = ctx.run(&[
        "send",
        "-k",
        &k,
        "-a",
        &addr.to_string(),
        "-c",
        "open_ssh",
        "--wait",
        &port,
        "--wait-timeout",
        "1s",
    ]);
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    let err = stderr(&out);
    for n in [
        "did not answer",
        "firewall",
        "ips",
        "key",
        "\"open_ssh\"",
        "2 sends",
    ] {
        assert!(err.contains(n), "{n} not in {err}");
    }
    let first = ctx.open(&recv(&sock)).counter;
    let second = ctx.open(&recv(&sock)).counter;
    assert!(second > first, "{second} not above {first}");
    assert_eq!(ctx.stored_counter(), second);
}

#[test]
fn connect_without_a_port_is_a_usage_error() {
    let ctx = Ctx::new();
    let k = path_str(&ctx.key_path).to_owned();
    let out = ctx.run(&[
        "send",
        "-k",
        &k,
        "-a",
        "127.0.0.1:9",
        "-c",
        "x",
        "--connect",
    ]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("--wait PORT"), "{}", stderr(&out));
}

#[test]
fn wait_timeout_without_a_port_is_a_usage_error() {
    let (sock, addr) = listener("127.0.0.1");
    let a = addr.to_string();
    let out = p_send(&["-a", &a, "-c", "x", "--wait-timeout", "2s"]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--wait-timeout") && stderr(&out).contains("--wait PORT"),
        "{}",
        stderr(&out)
    );
    assert!(!has_pending(&sock), "sent anyway");
    // A profile without `wait` gets the same refusal, naming where to set it.
    let p = Profiles::new(&home_profile(&a, ""));
    let out = p.run(&["send", "home", "--wait-timeout", "2s"]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("[servers.home]"), "{}", stderr(&out));
    assert!(!has_pending(&sock), "sent anyway");
}

#[test]
fn a_dangling_lock_link_is_refused_and_not_followed() {
    let ctx = Ctx::new();
    std::fs::create_dir(ctx.state_dir()).unwrap();
    std::fs::set_permissions(ctx.state_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let elsewhere = ctx.dir.path().join("elsewhere");
    std::os::unix::fs::symlink(&elsewhere, ctx.state_dir().join("counter.lock")).unwrap();
    let out = ctx.run(&["reseed"]);
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
    assert!(!elsewhere.exists(), "created a file through the link");
}

#[test]
fn a_state_dir_writable_by_others_is_refused() {
    let ctx = Ctx::new();
    std::fs::create_dir(ctx.state_dir()).unwrap();
    std::fs::set_permissions(ctx.state_dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = ctx.run(&["reseed"]);
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    assert!(stderr(&out).contains("chmod 0700"), "{}", stderr(&out));
    assert!(!ctx.counter_path().exists());
}

#[test]
fn help_of_gen_and_reseed_shows_only_what_applies() {
    let ctx = Ctx::new();
    let gen_help = String::from_utf8(ctx.run(&["gen", "--help"]).stdout).unwrap();
    assert!(!gen_help.contains("--state-dir"), "{gen_help}");
    assert!(
        !gen_help.contains("send:") && !gen_help.contains("69"),
        "{gen_help}"
    );
    assert!(gen_help.contains("73"), "{gen_help}");
    let reseed = String::from_utf8(ctx.run(&["reseed", "--help"]).stdout).unwrap();
    assert!(reseed.contains("--state-dir"), "{reseed}");
    assert!(!reseed.contains("66") && !reseed.contains("69"), "{reseed}");
}

#[test]
fn a_key_that_is_a_directory_is_not_a_regular_file_not_world_readable() {
    let ctx = Ctx::new();
    let d = ctx.dir.path().join("home-tester");
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = ctx.run(&["send", "-a", "127.0.0.1:9", "-k", path_str(&d), "-c", "x"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(66), "{err}");
    assert!(
        err.contains("not a regular file") && err.contains("directory"),
        "{err}"
    );
    assert!(
        !err.contains("chmod") && !err.contains("world-readable"),
        "{err}"
    );
    assert!(!ctx.counter_path().exists(), "counter moved");
}

#[test]
fn a_fifo_as_key_or_config_is_refused_at_once() {
    let ctx = Ctx::new();
    let fifo = ctx.dir.path().join("fifo");
    mkfifo(&fifo);
    let f = path_str(&fifo);
    let out = output_with_fifo(
        &mut ctx.cmd(&["send", "-a", "127.0.0.1:9", "-k", f, "-c", "x"]),
        &fifo,
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(66), "{err}");
    assert!(
        err.contains("not a regular file") && err.contains("FIFO"),
        "{err}"
    );
    let out = output_with_fifo(&mut ctx.cmd(&["list", "--config", f]), &fifo);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("not a regular file") && err.contains("FIFO"),
        "{err}"
    );
    assert!(err.contains(f), "{err}");
}

/// A config of another user: root running with that user's HOME, or a link to their file.
/// The fix is never to `chown` their file to us.
#[test]
fn another_users_config_says_whose_it_is_not_chown() {
    if !is_root() {
        eprintln!("skipped: needs root to make a file of another uid");
        return;
    }
    let p = Profiles::new("[servers.home]\n");
    let cfg = p.config();
    std::os::unix::fs::chown(&cfg, Some(1001), Some(1001)).unwrap();
    let out = p.run(&["list"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{err}");
    for n in ["belongs to uid 1001", "not to you (uid 0)", "--config"] {
        assert!(err.contains(n), "{n} not in {err}");
    }
    assert!(!err.contains("chown"), "{err}");
    let link = p.ctx.dir.path().join("link.toml");
    std::os::unix::fs::symlink(&cfg, &link).unwrap();
    let out = p.run(&["list", "--config", path_str(&link)]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{err}");
    for n in ["symbolic link to", path_str(&cfg), "uid 1001"] {
        assert!(err.contains(n), "{n} not in {err}");
    }
    assert!(!err.contains("chown"), "{err}");
}

/// A lock file the user cannot open for writing (root's, mode 0644) is exit 77 with the `rm`
/// that fixes it, as the README promises, not 74 "Permission denied".
#[test]
fn a_lock_file_we_cannot_write_is_77_with_the_rm() {
    use std::os::unix::process::CommandExt;
    let ctx = Ctx::new();
    let sd = ctx.state_dir();
    std::fs::create_dir(&sd).unwrap();
    std::fs::set_permissions(&sd, std::fs::Permissions::from_mode(0o700)).unwrap();
    let lock = sd.join("counter.lock");
    std::fs::write(&lock, "").unwrap();
    let mut cmd = ctx.cmd(&["reseed"]);
    if is_root() {
        // Root's 0644 lock in the directory of uid 1001, who runs the client.
        std::fs::set_permissions(ctx.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&sd, Some(1001), Some(1001)).unwrap();
        std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o644)).unwrap();
        cmd.uid(1001).gid(1001);
    } else {
        std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o444)).unwrap();
    }
    let out = cmd.output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(77), "{err}");
    assert!(err.contains(&format!("rm {}", lock.display())), "{err}");
    assert!(!ctx.counter_path().exists());
}

#[test]
fn state_dir_refusals_see_through_trailing_slashes_and_files() {
    let ctx = Ctx::new();
    let real = ctx.dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = ctx.dir.path().join("sd3");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let slashed = format!("{}/", link.display());
    let out = ctx.run(&["reseed", "--state-dir", &slashed]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(77), "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert!(!real.join("counter").exists(), "wrote through the link");
    let file = ctx.dir.path().join("passwd");
    std::fs::write(&file, "root:x:0:0\n").unwrap();
    let out = ctx.run(&["reseed", "--state-dir", path_str(&file)]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(77), "{err}");
    assert!(err.contains("is not a directory"), "{err}");
}

/// Run `send` while the test holds the state lock, release it once the client is blocked on
/// it (seen in /proc/locks, no sleeping), and return the client's output.
fn send_behind_a_held_lock(quiet: bool) -> Output {
    use nix::fcntl::{Flock, FlockArg};
    let ctx = Ctx::new();
    let (sock, addr) = listener("127.0.0.1");
    std::fs::create_dir(ctx.state_dir()).unwrap();
    std::fs::set_permissions(ctx.state_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(ctx.state_dir().join("counter.lock"))
        .unwrap();
    std::fs::set_permissions(
        ctx.state_dir().join("counter.lock"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let held = Flock::lock(lock, FlockArg::LockExclusiveNonblock).unwrap();
    let mut args = vec!["send", "-k", path_str(&ctx.key_path), "-c", "x"];
    let a = addr.to_string();
    args.extend_from_slice(&["-a", &a]);
    if quiet {
        args.push("--quiet");
    }
    let child = ctx
        .cmd(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let waiter = format!(" -> FLOCK  ADVISORY  WRITE {} ", child.id());
    let deadline = std::time::Instant::now() + DEADLINE;
    while !std::fs::read_to_string("/proc/locks")
        .unwrap()
        .contains(&waiter)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "client never blocked on the lock"
        );
        std::thread::yield_now();
    }
    drop(held);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    recv(&sock);
    out
}

#[test]
fn quiet_silences_the_waiting_for_the_lock_line() {
    let out = send_behind_a_held_lock(false);
    assert!(stderr(&out).contains("waiting for"), "{}", stderr(&out));
    let out = send_behind_a_held_lock(true);
    assert_eq!(stderr(&out), "", "--quiet printed something");
}

#[test]
fn list_with_a_relative_config_shows_absolute_paths() {
    let p = Profiles::new(&home_profile("h.example", ""));
    let dir = p.xdg.join("ruroco");
    let out = p
        .ctx
        .cmd(&["list", "--config", "client.toml"])
        .current_dir(&dir)
        .env_remove("HOME")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!("profiles in {}", p.config().display())),
        "{text}"
    );
    let key = dir.join("home.key").display().to_string();
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("key") && l.contains(&key)),
        "{key} not in {text}"
    );
}

#[test]
fn bad_profile_addresses_and_keys_are_refused_at_load() {
    for (toml, needle) in [
        ("address = \"http://h.example:80\"\n", "without a scheme"),
        ("address = \"h.example\"\nkey = \"~\"\n", "not a key file"),
        (
            "address = \"h.example\"\nkey = \"~bob/k\"\n",
            "only a leading ~/",
        ),
    ] {
        let p = Profiles::new(&format!("[servers.home]\n{toml}"));
        let out = p.run(&["list"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(78), "{err}");
        assert!(err.contains(needle), "{needle} not in {err}");
        assert!(err.contains(path_str(&p.config())), "{err}");
    }
}
