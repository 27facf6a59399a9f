//! `--check` reaches the verdict the start reaches: the same refusals, exit 78, one line naming
//! the file or field and the fix, for users and groups that do not exist, a commander.toml
//! others may read or that carries an extended ACL, and a state or socket directory others may
//! change.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

const HELLO: &str = r#"hello = 'echo "$RUROCO_IP $RUROCO_COMMAND" >> $DIR/out'"#;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `--check` and the daemon both exit 78 with one line containing every needle, and the
/// daemon creates no socket.
fn refused_alike(env: &Env, needles: &[&str]) {
    for args in [&["--check"][..], &[][..]] {
        let o = env.run_binary(args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(78), "{args:?}: {e}");
        for n in needles {
            assert!(e.contains(n), "{args:?}: expected {n:?} in {e:?}");
        }
        assert_eq!(e.trim_end().lines().count(), 1, "{args:?}: one line: {e:?}");
    }
    assert!(!env.socket().exists(), "no socket created");
}

fn setfacl(args: &[&str], path: &std::path::Path) {
    let st = Command::new("setfacl").args(args).arg(path).status();
    assert!(
        st.is_ok_and(|s| s.success()),
        "setfacl {args:?} (install the package `acl`)"
    );
}

#[test]
fn unknown_server_user_is_refused_by_check_as_at_start() {
    let env = Env::new();
    env.write_config("", HELLO);
    let text = std::fs::read_to_string(env.config()).unwrap().replace(
        "server_user = \"root\"",
        "server_user = \"no-such-user-ruroco\"",
    );
    std::fs::write(env.config(), text).unwrap();
    refused_alike(
        &env,
        &["server_user", "no-such-user-ruroco", "does not exist"],
    );
}

#[test]
fn unknown_socket_group_is_refused_by_check_as_at_start() {
    let mut env = Env::new();
    env.socket_group = "no-such-group-ruroco".to_owned();
    env.write_config("", HELLO);
    refused_alike(
        &env,
        &["socket_group", "no-such-group-ruroco", "does not exist"],
    );
}

#[test]
fn a_config_others_may_read_is_refused() {
    let env = Env::new();
    env.write_config("", HELLO);
    for mode in [0o644, 0o640, 0o604] {
        std::fs::set_permissions(env.config(), std::fs::Permissions::from_mode(mode)).unwrap();
        let c = env.config().display().to_string();
        refused_alike(&env, &[&c, &format!("chmod 0600 {c}")]);
    }
}

/// An ACL entry can give another user the file while the mode still reads 0600.
#[test]
fn a_config_with_an_extended_acl_is_refused() {
    let env = Env::new();
    env.write_config("", HELLO);
    setfacl(&["-m", "u:nobody:r,m::-"], &env.config());
    let mode = std::fs::metadata(env.config())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the ACL hides behind the mode");
    let c = env.config().display().to_string();
    refused_alike(&env, &[&format!("setfacl -b {c}")]);
    setfacl(&["-b"], &env.config());
    let o = env.run_binary(&["--check"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn a_state_dir_others_may_change_is_refused_by_check_as_at_start() {
    let env = Env::new();
    env.write_config("", HELLO);
    std::fs::create_dir(env.state_dir()).unwrap();
    std::fs::set_permissions(env.state_dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = env.run_binary(&["--check"]);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(stderr(&o).contains("state_dir"), "{}", stderr(&o));
    let o = env.run_binary(&[]);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
}

#[test]
fn a_socket_directory_others_may_change_is_refused_by_check_as_at_start() {
    let env = Env::new();
    std::fs::set_permissions(env.path(""), std::fs::Permissions::from_mode(0o777)).unwrap();
    env.write_config("", HELLO);
    let d = env.path("").display().to_string();
    let d = d.trim_end_matches('/');
    refused_alike(&env, &[d, "chmod go-w"]);
}

#[test]
fn a_socket_directory_with_an_acl_is_refused_by_check_as_at_start() {
    let env = Env::new();
    env.write_config("", HELLO);
    setfacl(&["-m", "u:nobody:rwx,m::r-x"], &env.path(""));
    let d = env.path("").display().to_string();
    refused_alike(&env, &[&format!("setfacl -b {}", d.trim_end_matches('/'))]);
}

#[test]
fn a_clean_config_passes_check() {
    let env = Env::new();
    env.write_config("", HELLO);
    let o = env.run_binary(&["--check"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "hello a7b6eda801e5347d\n"
    );
}
