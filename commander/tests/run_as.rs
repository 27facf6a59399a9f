//! Black-box tests of `user` and `group`: the real commander runs a command and its undo as the
//! configured user with that user's supplementary groups and login variables, root stays the
//! default, and an unknown user or group stops both `--check` and the start, naming the field.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::ffi::CString;

/// The shell text that prints who it runs as, tagged so the log line is unambiguous.
fn whoami(tag: &str) -> String {
    format!(
        "echo \"{tag} uid=$(id -u) gid=$(id -g) groups=$(id -G | tr \\  ,) home=$HOME user=$USER logname=$LOGNAME\""
    )
}

/// What `whoami` prints for `user` running with primary group `gid`: its initgroups(3) set.
fn expected(tag: &str, user: &str, gid: u32) -> String {
    let u = nix::unistd::User::from_name(user).unwrap().unwrap();
    let mut groups: Vec<u32> = nix::unistd::getgrouplist(
        &CString::new(user).unwrap(),
        nix::unistd::Gid::from_raw(gid),
    )
    .unwrap()
    .into_iter()
    .map(|g| g.as_raw())
    .collect();
    groups.sort_unstable();
    groups.dedup();
    // id -G lists the effective gid first, then the others.
    groups.retain(|&g| g != gid);
    groups.insert(0, gid);
    let groups: Vec<String> = groups.iter().map(u32::to_string).collect();
    format!(
        "{tag} uid={} gid={gid} groups={} home={} user={user} logname={user}",
        u.uid,
        groups.join(","),
        u.dir.display()
    )
}

fn gid_of(group: &str) -> u32 {
    nix::unistd::Group::from_name(group)
        .unwrap()
        .unwrap()
        .gid
        .as_raw()
}

#[test]
fn a_command_runs_as_its_user_with_its_groups_and_root_stays_the_default() {
    let env = Env::new();
    let nobody_gid = nix::unistd::User::from_name("nobody")
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    env.write_config(
        "",
        &format!(
            "as_root = '{}'\nas_nobody = {{ run = '{}', user = 'nobody' }}\n\
             as_nobody_in_group = {{ run = '{}', user = 'nobody', group = 'daemon' }}",
            "echo \"root uid=$(id -u) gid=$(id -g) home=${HOME-unset}\"",
            whoami("nobody"),
            whoami("grouped"),
        ),
    );
    let d = env.start();
    let mut s = env.connect();
    for name in ["as_root", "as_nobody", "as_nobody_in_group"] {
        send(&mut s, name, "192.0.2.9");
        d.wait_log_lines(&["event=executed", &format!("command={name}")], 1);
    }
    d.wait_log_lines(&["event=output", "root uid=0 gid=0 home=unset"], 1);
    d.wait_log_lines(
        &["event=output", &expected("nobody", "nobody", nobody_gid)],
        1,
    );
    d.wait_log_lines(
        &[
            "event=output",
            &expected("grouped", "nobody", gid_of("daemon")),
        ],
        1,
    );
}

#[test]
fn the_undo_runs_as_the_same_user() {
    let env = Env::new();
    env.write_config(
        "",
        "open = { run = 'echo \"run uid=$(id -u) gid=$(id -g)\"', undo = 'echo \"undo uid=$(id -u) gid=$(id -g)\"', undo_after = '1s', user = 'nobody', group = 'daemon' }",
    );
    let d = env.start();
    let mut s = env.connect();
    send(&mut s, "open", "192.0.2.10");
    let uid = nix::unistd::User::from_name("nobody")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    let gid = gid_of("daemon");
    d.wait_log_lines(&["event=output", &format!("run uid={uid} gid={gid}")], 1);
    d.wait_log_lines(&["event=undone", "command=open"], 1);
    d.wait_log_lines(&["event=output", &format!("undo uid={uid} gid={gid}")], 1);
}

/// The undo runs as its command ran, even once the command is gone from the config (a reload
/// removed it): the identity is kept with the grant, never replaced by root.
#[test]
fn the_undo_of_a_removed_command_runs_as_the_user_that_ran() {
    let env = Env::new();
    env.write_config(
        "",
        "open = { run = 'echo \"run uid=$(id -u)\"', undo = 'echo \"undo uid=$(id -u)\"', undo_after = '1h', user = 'nobody' }\nother = 'true'",
    );
    let d = env.start();
    let mut s = env.connect();
    send(&mut s, "open", "192.0.2.11");
    let uid = nix::unistd::User::from_name("nobody")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    d.wait_log_lines(&["event=output", &format!("run uid={uid}")], 1);
    d.wait_log_lines(&["event=granted"], 1);
    env.write_config("", "other = 'true'");
    let out = env.op(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    let out = env.op(&["revoke", "open", "192.0.2.11"]);
    assert!(out.status.success(), "{out:?}");
    d.wait_log_lines(&["event=undone", "command=open"], 1);
    d.wait_log_lines(&["event=output", &format!("undo uid={uid}")], 1);
    assert_eq!(d.log_count(&["undo uid=0"]), 0, "{}", d.log_text());
}

/// Both the daemon and `--check` refuse the config with exit 78 and one line naming the command
/// and the field.
#[test]
fn an_unknown_user_or_group_is_refused_by_check_and_at_start() {
    let cases = [
        (
            "x = { run = 'true', user = 'no-such-user-ruroco' }",
            "`commands.x`: user \"no-such-user-ruroco\" does not exist",
        ),
        (
            "x = { run = 'true', user = 'nobody', group = 'no-such-group-ruroco' }",
            "`commands.x`: group \"no-such-group-ruroco\" does not exist",
        ),
        (
            "x = { run = 'true', group = 'daemon' }",
            "`commands.x`: group without user",
        ),
    ];
    for (commands, needle) in cases {
        let env = Env::new();
        env.write_config("", commands);
        for args in [&[][..], &["--check"][..]] {
            let o = env.run_binary(args);
            let e = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(78), "{commands} {args:?}: {e}");
            assert!(e.contains(needle), "{args:?}: expected {needle:?} in {e:?}");
            assert_refusal_shape(!args.is_empty(), &e);
        }
        assert!(!env.socket().exists(), "no socket created");
    }
}

/// The internal run-as mode fails closed: without the privilege to change ids (here: run as
/// nobody) or with malformed arguments it runs nothing, says why on one line of stderr and
/// exits 126.
#[test]
fn the_run_as_mode_runs_nothing_when_it_cannot_take_the_identity() {
    let env = Env::new();
    let marker = env.path("ran");
    let (_dir, bin) = copy_for_nobody(std::path::Path::new(BIN));
    let text = format!("touch {}", marker.display());
    let o = as_nobody(&bin)
        .args(["--internal-run-as", "0", "0", "0", "-c", &text])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(126), "{e}");
    assert!(e.contains("setgroups") && e.contains("CAP_SETGID"), "{e}");
    let o = std::process::Command::new(BIN)
        .args(["--internal-run-as", "65534", "x", "", "-c", &text])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(126), "{e}");
    assert!(e.contains("not a numeric id: \"x\""), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "one line: {e:?}");
    assert!(!marker.exists(), "nothing ran");
}
