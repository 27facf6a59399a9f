//! Black-box tests of `ruroco-client gen`, `completions`, help, and every failure a user can
//! hit: each must exit non-zero with one clear line. Never sends to a real server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use ruroco_proto::Key;

fn assert_fails(out: &Output, code: i32, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in stderr: {err}");
    }
}

#[test]
fn gen_to_file_0600_refuses_overwrite_force_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("new.key");
    let ps = path_str(&p);
    let out = Command::new(bin())
        .args(["gen", "-o", ps])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mode = std::fs::metadata(&p).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let key = ruroco_kit::key_file::load(&p).unwrap();
    assert!(
        stderr(&out).contains(&format!("key id {}", key.id())),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty(), "key printed to stdout too");

    let before = std::fs::read(&p).unwrap();
    let out = Command::new(bin())
        .args(["gen", "-o", ps])
        .output()
        .unwrap();
    assert_fails(&out, 73, &["already exists", "--force"]);
    assert_eq!(std::fs::read(&p).unwrap(), before);

    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(bin())
        .args(["gen", "--force", "-o", ps])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let again = ruroco_kit::key_file::load(&p).unwrap();
    assert_ne!(again.id(), key.id());
    let mode = std::fs::metadata(&p).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn gen_to_stdout_parses() {
    let out = Command::new(bin()).arg("gen").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1);
    Key::parse(&text).unwrap();
}

#[test]
fn completions_for_bash_mention_send() {
    let out = Command::new(bin())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("send"), "{text}");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = Command::new(bin())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
}

#[test]
fn help_documents_exit_codes() {
    let out = Command::new(bin())
        .args(["send", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for n in ["34020", "--permissive", "64", "65", "66", "68", "74"] {
        assert!(text.contains(n), "{n} not in help: {text}");
    }
}

#[test]
fn usage_errors_exit_64() {
    let out = Command::new(bin())
        .args(["send", "-k", "x", "-c", "x"])
        .output()
        .unwrap();
    assert_fails(&out, 64, &["no server address", "-a HOST"]);
    let out = Command::new(bin()).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = Command::new(bin())
        .args(["send", "-a", "127.0.0.1", "-k", "x", "-i", "not-an-ip"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn missing_key_file() {
    let ctx = Ctx::new();
    let missing = ctx.dir.path().join("missing.key");
    let out = ctx.run(&[
        "send",
        "-c",
        "x",
        "-a",
        "127.0.0.1:9",
        "-k",
        path_str(&missing),
    ]);
    assert_fails(&out, 66, &["missing.key", "cannot read"]);
    assert!(!ctx.counter_path().exists(), "counter moved");
}

#[test]
fn malformed_key_file() {
    let ctx = Ctx::new();
    let bad = ctx.dir.path().join("bad.key");
    std::fs::write(&bad, "this is not a key\n").unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = ctx.run(&["send", "-c", "x", "-a", "127.0.0.1:9", "-k", path_str(&bad)]);
    assert_fails(&out, 65, &["bad.key", "base64"]);
    std::fs::write(&bad, "AAAA\n").unwrap();
    let out = ctx.run(&["send", "-c", "x", "-a", "127.0.0.1:9", "-k", path_str(&bad)]);
    assert_fails(&out, 65, &["bad.key", "expected 40"]);
    assert!(!ctx.counter_path().exists(), "counter moved");
}

#[test]
fn bad_addresses() {
    let ctx = Ctx::new();
    let k = path_str(&ctx.key_path);
    for a in ["", "host:", "host:99999", "[::1", "[nope]:5", "1.2.3.4:0"] {
        let out = ctx.run(&["send", "-c", "x", "-a", a, "-k", k]);
        assert_fails(&out, 64, &["address"]);
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
    assert!(!ctx.counter_path().exists(), "counter moved");
}

#[test]
fn unresolvable_name() {
    let ctx = Ctx::new();
    let out = ctx.run(&[
        "send",
        "-c",
        "x",
        "-a",
        "no-such-host.invalid",
        "-k",
        path_str(&ctx.key_path),
    ]);
    assert_fails(&out, 68, &["no-such-host.invalid", "cannot resolve"]);
    assert!(!ctx.counter_path().exists(), "counter moved");
}

#[test]
fn family_filter_leaves_nothing() {
    let ctx = Ctx::new();
    let k = path_str(&ctx.key_path);
    let out = ctx.run(&["send", "-c", "x", "-a", "127.0.0.1:9", "-6", "-k", k]);
    assert_fails(&out, 68, &["127.0.0.1", "IPv6"]);
    let out = ctx.run(&["send", "-c", "x", "-a", "[::1]:9", "-4", "-k", k]);
    assert_fails(&out, 68, &["::1", "IPv4"]);
    assert!(!ctx.counter_path().exists(), "counter moved");
}

#[test]
fn corrupt_counter_file_says_reseed() {
    let ctx = Ctx::new();
    let (sock, addr) = listener("127.0.0.1");
    std::fs::create_dir_all(ctx.state_dir()).unwrap();
    std::fs::write(ctx.counter_path(), "12x4\n").unwrap();
    let k = path_str(&ctx.key_path);
    let out = ctx.run(&["send", "-c", "x", "-a", &addr.to_string(), "-k", k]);
    assert_fails(
        &out,
        65,
        &[
            "corrupt",
            path_str(&ctx.counter_path()),
            "ruroco-client reseed",
        ],
    );
    assert!(!has_pending(&sock), "sent despite a corrupt counter");
    assert_eq!(
        std::fs::read_to_string(ctx.counter_path()).unwrap(),
        "12x4\n"
    );

    let out = ctx.run(&["reseed"]);
    assert!(out.status.success(), "{}", stderr(&out));
    ctx.send_ok(&["-a", &addr.to_string()]);
    assert_eq!(ctx.open(&recv(&sock)).counter, ctx.stored_counter());
}

#[test]
fn every_send_failing_exits_74() {
    // Broadcast without SO_BROADCAST is refused by the kernel (EACCES).
    let ctx = Ctx::new();
    let out = ctx.run(&[
        "send",
        "-c",
        "x",
        "-a",
        "255.255.255.255:9",
        "-k",
        path_str(&ctx.key_path),
    ]);
    assert_fails(
        &out,
        74,
        &["cannot send to 255.255.255.255:9", "every send failed"],
    );
}

#[test]
fn unusable_state_dir() {
    let ctx = Ctx::new();
    let file = ctx.dir.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let out = Command::new(bin())
        .args(["--state-dir", path_str(&file), "reseed"])
        .output()
        .unwrap();
    assert_fails(&out, 77, &["plain-file", "is not a directory"]);
}

#[test]
fn no_state_dir_without_home_exits_78() {
    let out = Command::new(bin())
        .arg("reseed")
        .env_remove("HOME")
        .env_remove("XDG_STATE_HOME")
        .output()
        .unwrap();
    assert_fails(&out, 78, &["--state-dir"]);
}

/// The README's client sections say what the client does, including what `--wait` cannot tell.
#[test]
fn readme_describes_list_and_the_limits_of_wait() {
    let readme = include_str!("../../README.md")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(!readme.contains("(profile, default, command line)"));
    assert!(readme.contains("`list` takes no override flags"));
    for n in [
        "already open",
        "one-shot listener",
        "runs the command a second time",
        "longer `--wait-timeout`",
        "kex_exchange_identification: Connection closed by remote host",
        "fail2ban",
        "prefer `--connect`",
        "`--connect=relay`",
        "socat",
    ] {
        assert!(readme.contains(n), "README lacks {n:?}");
    }
}
