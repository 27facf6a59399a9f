//! Black-box test of `ruroco-server gen-key`: the key it writes is one `--check` loads, it never
//! overwrites, and a missing group is a usage-level refusal naming `--group`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Env;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

fn server(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ruroco-server"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn gen_key_writes_a_key_check_loads_and_never_overwrites() {
    // The test environment's server user is nobody:nogroup; its keys directory is root's.
    let env = Env::new();
    let keys = env.path("keys");
    let key = keys.join("laptop.key");
    let group = "nogroup";
    let k = key.to_str().unwrap();

    let (code, out, err) = server(&["gen-key", k, "--group", group]);
    assert_eq!(code, Some(0), "{err}");
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    let id = ruroco_kit::key_file::load(&key).unwrap().id();
    assert_eq!(out.trim(), format!("key {id} written to {k}"));

    // What --check loads as the server's user (nobody) is the key gen-key wrote.
    env.write_config();
    let (code, out, err) = env.run_once(&["--check"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&format!("key {id} {k}")), "{out}");

    let before = std::fs::read(&key).unwrap();
    let (code, _, err) = server(&["gen-key", k, "--group", group]);
    assert_eq!(code, Some(73), "{err}");
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read(&key).unwrap(), before);

    let other = keys.join("other.key");
    let (code, _, err) = server(&[
        "gen-key",
        other.to_str().unwrap(),
        "--group",
        "no-such-group-ruroco",
    ]);
    assert_eq!(code, Some(67), "{err}");
    assert!(err.contains("--group"), "{err}");
    assert!(!other.exists());
}
