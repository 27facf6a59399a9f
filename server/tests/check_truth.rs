//! `--check` tells the truth: it reaches the verdict the start (and a SIGHUP reload) reaches,
//! as the server's user sees things. Each case here passed `--check` once and then failed (or
//! worse, ran) later. Runs as root; the server user is `nobody`, another local user `daemon`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use nix::sys::signal::Signal;
use ruroco_proto::{CmdHash, Key};
use std::os::unix::fs::chown;
use std::path::Path;
use std::process::Command;

/// uid and gid of `daemon`, a local user that is neither root nor the server user.
const DAEMON: u32 = 1;

/// `--check` refuses with exit 78 and one line containing every needle; when the problem has
/// a place in server.toml, that line and a caret follow. Returns the first line.
fn check_refuses(env: &Env, needles: &[&str]) -> String {
    env.write_config();
    let (code, out, err) = env.run_once(&["--check"]);
    assert_eq!(code, Some(78), "stdout: {out} stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    match lines[..] {
        [_] => {}
        [first, quoted, caret] => {
            assert!(first.contains("server.toml:"), "{err}");
            assert!(quoted.contains(" | "), "{err}");
            assert!(caret.trim_end().ends_with('^'), "{err}");
        }
        _ => panic!("neither one line nor a line with its caret: {err}"),
    }
    for n in needles {
        assert!(lines[0].contains(n), "expected {n:?} in {err:?}");
    }
    lines[0].to_owned()
}

/// The start refuses the same way (exit 78, the same line).
fn start_refuses(env: &Env, line: &str) {
    let (code, _, err) = env.run_once(&[]);
    assert_eq!(code, Some(78), "{err}");
    // The start logs the line as a logfmt `message="..."` value, with `\`, `"` and `'` escaped.
    let unescaped = err
        .replace("\\'", "'")
        .replace("\\\"", "\"")
        .replace("\\\\", "\\");
    assert!(
        unescaped.contains(line.trim()),
        "start said {err:?}, --check said {line:?}"
    );
}

fn refused_alike(env: &Env, needles: &[&str]) {
    let line = check_refuses(env, needles);
    start_refuses(env, &line);
}

fn setfacl(args: &[&str], path: &Path) {
    let st = Command::new("setfacl").args(args).arg(path).status();
    assert!(
        st.is_ok_and(|s| s.success()),
        "setfacl {args:?} (install the package `acl`)"
    );
}

fn env_with_key() -> (Env, Key) {
    let env = Env::new();
    let k = Key::generate().unwrap();
    env.add_key("k", &k);
    (env, k)
}

#[test]
fn a_state_dir_the_server_user_cannot_write_is_refused() {
    let (env, _) = env_with_key();
    chown(env.path("state"), Some(0), Some(0)).unwrap();
    chmod(&env.path("state"), 0o755);
    let s = env.path("state").display().to_string();
    refused_alike(
        &env,
        &[
            "state_dir",
            &s,
            "nobody",
            &format!("chown nobody:nogroup {s}"),
        ],
    );
}

#[test]
fn a_root_only_key_file_is_refused_for_the_server_user() {
    let (env, _) = env_with_key();
    let p = env.path("keys/k.key");
    chown(&p, Some(0), Some(0)).unwrap();
    chmod(&p, 0o600);
    let k = p.display().to_string();
    refused_alike(
        &env,
        &[
            &k,
            "nobody",
            &format!("chown root:nogroup {k} && chmod 0640 {k}"),
        ],
    );
    // The remedy it names works.
    chown(&p, Some(0), Some(NOBODY)).unwrap();
    chmod(&p, 0o640);
    env.write_config();
    let (code, _, err) = env.run_once(&["--check"]);
    assert_eq!(code, Some(0), "{err}");
}

/// Started as the server user itself (as systemd's User= does), it checks as itself and
/// refuses the root-only key with the same line `--check` (as root) printed.
#[test]
fn started_as_the_server_user_it_reaches_the_check_verdict() {
    let (mut env, _) = env_with_key();
    let p = env.path("keys/k.key");
    chown(&p, Some(0), Some(0)).unwrap();
    let line = check_refuses(&env, &["k.key"]);
    env.as_nobody = true;
    let bin = env.path("ruroco-server");
    std::fs::copy(server_bin(), &bin).unwrap();
    chmod(&bin, 0o755);
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(&bin)
        .arg("--config")
        .arg(env.path("server.toml"))
        .env_remove("LISTEN_FDS")
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains(line.trim()),
        "as nobody: {err:?}; --check: {line:?}"
    );
}

#[test]
fn a_user_that_does_not_exist_is_refused() {
    let (mut env, _) = env_with_key();
    env.extra_config = String::new();
    env.write_config();
    let cfg = env.path("server.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("user = \"nobody\"", "user = \"no-such-user-ruroco\"");
    std::fs::write(&cfg, text).unwrap();
    let (code, _, err) = env.run_once(&["--check"]);
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("`user`") && err.contains("no-such-user-ruroco"),
        "{err}"
    );
}

#[test]
fn zero_max_age_and_max_clock_skew_are_refused() {
    for (field, line) in [
        ("max_age", "max_age = \"0s\"\n"),
        ("max_clock_skew", "max_clock_skew = \"0s\"\n"),
    ] {
        let (mut env, _) = env_with_key();
        env.extra_config = line.to_owned();
        let first = check_refuses(&env, &[&format!("`{field}`")]);
        start_refuses(&env, &first);
        // --check places the refused value: its line of server.toml with a caret under "0s".
        let (_, _, err) = env.run_once(&["--check"]);
        assert!(err.contains(&format!(" | {field} = \"0s\"")), "{err}");
        assert!(
            err.lines().nth(2).is_some_and(|l| l.ends_with(" ^^^^")),
            "{err}"
        );
    }
}

#[test]
fn a_keys_dir_others_may_write_is_refused() {
    let (env, _) = env_with_key();
    let d = env.path("keys");
    chmod(&d, 0o777);
    let d = d.display().to_string();
    refused_alike(&env, &["keys_dir", &format!("chmod 0755 {d}")]);
    // Owned by someone else than root: refused too, and not adopted (it may hold their keys).
    chmod(&env.path("keys"), 0o755);
    chown(env.path("keys"), Some(DAEMON), None).unwrap();
    refused_alike(
        &env,
        &[
            "keys_dir",
            "owned by daemon",
            &format!("mv {d} {d}.untrusted"),
        ],
    );
}

#[test]
fn a_config_others_may_change_or_with_an_acl_is_refused() {
    let (env, _) = env_with_key();
    env.write_config();
    let cfg = env.path("server.toml");
    let c = cfg.display().to_string();
    // write_config resets the mode; change it after.
    let check = |needles: &[&str]| {
        let (code, out, err) = env.run_once(&["--check"]);
        assert_eq!(code, Some(78), "stdout: {out} stderr: {err}");
        for n in needles {
            assert!(err.contains(n), "expected {n:?} in {err:?}");
        }
        let (code, _, start) = env.run_once(&[]);
        assert_eq!(code, Some(78), "{start}");
        assert!(
            start.contains(err.trim()),
            "start: {start:?}, --check: {err:?}"
        );
    };
    chmod(&cfg, 0o664);
    check(&[&c, &format!("chmod 0644 {c}")]);
    chmod(&cfg, 0o644);
    chown(&cfg, Some(DAEMON), None).unwrap();
    check(&[&c, "owned by daemon", "chown root:"]);
    chown(&cfg, Some(0), None).unwrap();
    setfacl(&["-m", "u:daemon:rw,m::r"], &cfg);
    check(&[&format!("setfacl -b {c}")]);
}

#[test]
fn a_commander_socket_directory_the_server_user_cannot_search_is_refused() {
    let (mut env, _) = env_with_key();
    let run = env.path("run");
    std::fs::create_dir(&run).unwrap();
    chmod(&run, 0o700);
    env.commander_socket = run.join("commander.sock");
    let r = run.display().to_string();
    refused_alike(&env, &[&r, "nobody", "cannot search"]);
}

/// The planted key: another local user, through a keys directory it may write, adds a key
/// whose ACL reads as 0640. Neither `--check` nor a SIGHUP reload may accept it, and its
/// datagrams never reach the commander.
#[test]
fn a_planted_key_with_an_acl_is_refused_by_check_and_by_reload() {
    let (mut env, a) = env_with_key();
    let stub = env.stub();
    env.start();
    // Planted by `daemon`, readable by the server through an ACL entry, mode reads 0640.
    let planted = Key::generate().unwrap();
    let p = env.path("keys/planted.key");
    std::fs::write(&p, planted.to_file_text().as_bytes()).unwrap();
    chown(&p, Some(DAEMON), Some(DAEMON)).unwrap();
    chmod(&p, 0o600);
    setfacl(&["-m", "u:nobody:r,m::r"], &p);
    let mode = std::fs::metadata(&p).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o640
    );
    check_refuses(&env, &["planted.key"]);
    // Owned by root, with an ACL only: refused for the ACL.
    chown(&p, Some(0), Some(0)).unwrap();
    check_refuses(&env, &["planted.key", "setfacl -b"]);
    chown(&p, Some(DAEMON), Some(DAEMON)).unwrap();

    env.signal(Signal::SIGHUP);
    env.wait_note("RELOADING=1");
    env.wait_note("READY=1");
    assert!(env.log().contains("planted.key"), "{}", env.log());
    env.send(&seal(&planted, &pt("planted")));
    env.wait_status("the planted key unknown", |s| get(s, "unknown_key") == 1);
    env.send(&seal(&a, &pt("hello")));
    let f = stub.next_frame();
    assert_eq!(
        f.cmd,
        CmdHash::of_name("hello"),
        "only the real key's frame"
    );
}

#[test]
fn check_prints_addresses_as_they_are_matched() {
    let (mut env, _) = env_with_key();
    env.write_config();
    let cfg = env.path("server.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "ips = [\"127.0.0.1\", \"::1\"]",
        "ips = [\"::ffff:127.0.0.1\", \"::1\"]",
    );
    std::fs::write(&cfg, text).unwrap();
    env.extra_config = String::new();
    let (code, out, err) = env.run_once(&["--check"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("ips=127.0.0.1,::1\n"), "{out}");
    assert!(!out.contains("::ffff:"), "{out}");
}

/// A missing `state_dir` once passed and then failed at the first datagram.
#[test]
fn a_missing_state_dir_is_refused_with_the_command_that_creates_it() {
    let (env, _) = env_with_key();
    std::fs::remove_dir(env.path("state")).unwrap();
    let s = env.path("state").display().to_string();
    refused_alike(
        &env,
        &[
            "state_dir",
            &format!("install -d -m 0700 -o nobody -g nogroup {s}"),
        ],
    );
}

fn no_slash(p: &Path) -> String {
    p.display().to_string().trim_end_matches('/').to_owned()
}

/// The replay floors and the reload record in `state_dir`, when they exist, are files the
/// server reads and replaces as its user: one it cannot use fails the start, so `--check`
/// refuses it too, with the `chown`.
#[test]
fn a_state_file_the_server_user_cannot_use_is_refused() {
    let (env, _) = env_with_key();
    for name in ["replay", "reload"] {
        let f = env.path(&format!("state/{name}"));
        std::fs::write(&f, "").unwrap();
        chmod(&f, 0o600);
        let s = f.display().to_string();
        refused_alike(&env, &[&s, &format!("chown nobody:nogroup {s}")]);
        std::fs::remove_file(&f).unwrap();
    }
}

/// A replay file the start would refuse (empty, as a truncated write or a `touch` leaves it)
/// is refused by `--check` too, with the start's message.
#[test]
fn an_empty_replay_file_is_refused_alike() {
    let (env, _) = env_with_key();
    let f = env.path("state/replay");
    std::fs::write(&f, "").unwrap();
    chmod(&f, 0o600);
    chown(&f, Some(65534), Some(65534)).unwrap();
    let s = f.display().to_string();
    refused_alike(&env, &[&s, "it is empty"]);
}

/// A directory above a trusted path with an access ACL is refused (ACLs are not
/// interpreted), naming the directory and `setfacl -b`.
#[test]
fn an_ancestor_with_an_acl_is_refused() {
    let (mut env, _) = env_with_key();
    let a = env.path("a");
    std::fs::create_dir_all(a.join("run")).unwrap();
    chmod(&a, 0o755);
    chmod(&a.join("run"), 0o755);
    setfacl(&["-m", "u:nobody:---"], &a);
    env.commander_socket = a.join("run/commander.sock");
    let d = a.display().to_string();
    refused_alike(&env, &["above it", &format!("`setfacl -b {d}`")]);
}

/// An ancestor the server user may search only through its group gets `chmod g+x`.
#[test]
fn an_ancestor_the_server_user_cannot_search_names_it_and_the_right_class() {
    let (mut env, _) = env_with_key();
    let g = env.path("g");
    std::fs::create_dir_all(g.join("run")).unwrap();
    chown(&g, Some(0), Some(NOBODY)).unwrap();
    chmod(&g, 0o701);
    chmod(&g.join("run"), 0o755);
    env.commander_socket = g.join("run/commander.sock");
    let d = g.display().to_string();
    refused_alike(&env, &[&d, &format!("chmod g+x {d}")]);
}

/// A directory above a trusted path that others may write (not sticky) lets them rename the
/// path away and plant another.
#[test]
fn an_ancestor_others_may_write_is_refused() {
    let (env, _) = env_with_key();
    chmod(&env.path(""), 0o777);
    let d = no_slash(&env.path(""));
    refused_alike(&env, &[&d, &format!("chmod go-w {d}")]);
}

/// The printed fix must work when run: 0604 -> "chmod 0600" would lock the server user out.
#[test]
fn a_key_others_may_read_gets_a_fix_that_keeps_it_readable() {
    let (env, _) = env_with_key();
    let k = env.path("keys/k.key");
    chown(&k, Some(0), Some(0)).unwrap();
    chmod(&k, 0o604);
    let k = k.display().to_string();
    refused_alike(
        &env,
        &[&format!("chown root:nogroup {k} && chmod 0640 {k}")],
    );
}

/// A symlinked key is refused as such, never told to `chmod` the link (its target).
#[test]
fn a_symlinked_key_is_refused_without_a_chmod() {
    let (env, _) = env_with_key();
    let p = env.path("keys/p.key");
    std::os::unix::fs::symlink("/etc/passwd", &p).unwrap();
    let line = check_refuses(&env, &[&p.display().to_string(), "is a symlink"]);
    assert!(!line.contains("chmod"), "{line}");
    start_refuses(&env, &line);
}

/// A file with an ACL and a bad mode gets `setfacl -b` first (it changes the mode shown).
#[test]
fn the_acl_is_named_before_the_mode() {
    let (env, _) = env_with_key();
    let k = env.path("keys/k.key");
    setfacl(&["-m", "u:daemon:rw"], &k);
    let k = k.display().to_string();
    refused_alike(&env, &[&format!("setfacl -b {k}")]);
}

/// A state_dir another user owns is not adopted with chown: it is moved away and made anew.
#[test]
fn a_state_dir_another_user_owns_is_moved_away_not_adopted() {
    let (env, _) = env_with_key();
    chown(env.path("state"), Some(DAEMON), Some(DAEMON)).unwrap();
    let s = env.path("state").display().to_string();
    let line = check_refuses(&env, &[&format!("mv {s} {s}.untrusted")]);
    assert!(!line.contains("chown"), "{line}");
    start_refuses(&env, &line);
}

/// An existing commander socket the server user may not connect to is refused.
#[test]
fn a_commander_socket_the_server_user_cannot_connect_to_is_refused() {
    let (env, _) = env_with_key();
    let _l = std::os::unix::net::UnixListener::bind(&env.commander_socket).unwrap();
    chmod(&env.commander_socket, 0o600);
    let s = env.commander_socket.display().to_string();
    refused_alike(&env, &[&s, "nobody", "socket_group"]);
}

/// Durations under a second are refused (they were printed as 0s).
#[test]
fn sub_second_durations_are_refused() {
    for field in ["max_age", "max_clock_skew"] {
        let (mut env, _) = env_with_key();
        env.extra_config = format!("{field} = \"1ms\"\n");
        refused_alike(&env, &[&format!("`{field}`"), "1s"]);
    }
}

/// A FIFO or a directory named `*.key` is not silently skipped.
#[test]
fn a_key_that_is_not_a_file_is_named_in_a_warning() {
    let (env, _) = env_with_key();
    let d = env.path("keys/dir.key");
    std::fs::create_dir(&d).unwrap();
    env.write_config();
    let (code, _, err) = env.run_once(&["--check"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains(&format!("warning: {}", d.display())), "{err}");
}

/// gen-key into a directory with a default ACL would write a key the server refuses.
#[test]
fn gen_key_refuses_a_directory_with_a_default_acl() {
    let env = Env::new();
    let d = env.path("acl-keys");
    std::fs::create_dir(&d).unwrap();
    setfacl(&["-d", "-m", "u:daemon:r"], &d);
    let k = d.join("a.key");
    let o = Command::new(env!("CARGO_BIN_EXE_ruroco-server"))
        .args(["gen-key", &k.display().to_string(), "--group", "nogroup"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!("setfacl -k {}", d.display())),
        "{err}"
    );
    assert!(!k.exists(), "no key left behind");
}

/// A commander socket the server user may not connect to (appearing after the start): the
/// log names the permission problem, never "start the commander" (which runs).
#[test]
fn a_connect_refused_for_permission_logs_a_permission_hint() {
    let (mut env, k) = env_with_key();
    env.start();
    let _l = std::os::unix::net::UnixListener::bind(&env.commander_socket).unwrap();
    chmod(&env.commander_socket, 0o600);
    env.send(&seal(&k, &pt("hello")));
    let down = wait_for("commander_down", DEADLINE, || {
        events(&env.log(), "commander_down").into_iter().next()
    });
    assert!(down.contains("may not connect"), "{down}");
    assert!(down.contains("mode 0600"), "{down}");
    assert!(down.contains("socket_group"), "{down}");
    assert!(!down.contains("start the commander"), "{down}");
}

#[test]
fn a_type_error_is_shown_on_its_line_with_a_caret_and_logged_as_one_line() {
    let (mut env, _) = env_with_key();
    env.extra_config = "receive_buffer = \"big\"\n".to_owned();
    let config = env.write_config();
    let (code, out, err) = env.run_once(&["--check"]);
    assert_eq!(code, Some(78), "stdout: {out} stderr: {err}");
    let text = std::fs::read_to_string(&config).unwrap();
    let number = text
        .lines()
        .position(|l| l.starts_with("receive_buffer"))
        .unwrap()
        + 1;
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].starts_with(&format!("config {}:{number}:18: ", config.display()))
            && lines[0].contains("receive_buffer"),
        "{err}"
    );
    assert_eq!(lines[1], format!("  {number} | receive_buffer = \"big\""));
    let caret = lines[2].find('^').unwrap();
    assert_eq!(&lines[2][caret..], "^^^^^", "{err}");
    assert_eq!(
        caret,
        lines[1].find("\"big\"").unwrap(),
        "the caret is under the value: {err}"
    );
    // The start logs the first line alone.
    start_refuses(&env, lines[0]);
}
