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

/// `--check` and the daemon both exit 78 with a line containing every needle (`--check` may add
/// the config line and a caret), and the daemon creates no socket.
fn refused_alike(env: &Env, needles: &[&str]) {
    for args in [&["--check"][..], &[][..]] {
        let o = env.run_binary(args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(78), "{args:?}: {e}");
        for n in needles {
            assert!(e.contains(n), "{args:?}: expected {n:?} in {e:?}");
        }
        assert_refusal_shape(!args.is_empty(), &e);
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

fn grants_dir(env: &Env) -> std::path::PathBuf {
    let g = env.state_dir().join("grants");
    std::fs::create_dir_all(&g).unwrap();
    std::fs::set_permissions(env.state_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&g, std::fs::Permissions::from_mode(0o700)).unwrap();
    g
}

/// `<state_dir>/grants` gets the rule the start applies: others may change it, another user
/// owns it, or it carries an ACL (the fix is `setfacl -b`, not a chmod that leaves the ACL).
#[test]
fn a_grants_directory_the_start_refuses_is_refused_by_check() {
    let env = Env::new();
    env.write_config("", HELLO);
    let g = grants_dir(&env);
    let d = g.display().to_string();
    std::fs::set_permissions(&g, std::fs::Permissions::from_mode(0o777)).unwrap();
    refused_alike(&env, &[&d, &format!("chmod 0755 {d}")]);
    std::fs::set_permissions(&g, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&g, Some(1), Some(1)).unwrap();
    refused_alike(&env, &[&d, &format!("mv {d} {d}.untrusted")]);
    std::os::unix::fs::chown(&g, Some(0), Some(0)).unwrap();
    setfacl(&["-m", "u:nobody:rwx,m::r-x"], &g);
    refused_alike(&env, &[&format!("setfacl -b {d}")]);
    setfacl(&["-b"], &g);
    let o = env.run_binary(&["--check"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// A server_user outside socket_group could never connect: refused, naming both fields.
#[test]
fn a_server_user_outside_the_socket_group_is_refused() {
    let env = Env::new();
    env.write_config("", HELLO);
    let text = std::fs::read_to_string(env.config())
        .unwrap()
        .replace("server_user = \"root\"", "server_user = \"nobody\"");
    std::fs::write(env.config(), text).unwrap();
    refused_alike(
        &env,
        &[
            "server_user \"nobody\"",
            "socket_group \"root\"",
            "usermod -aG root nobody",
        ],
    );
}

/// A symlinked commander.toml is refused as such (its fix never chmods the link's target).
#[test]
fn a_symlinked_config_is_refused() {
    let env = Env::new();
    env.write_config("", HELLO);
    let real = env.path("real.toml");
    std::fs::rename(env.config(), &real).unwrap();
    std::os::unix::fs::symlink(&real, env.config()).unwrap();
    let c = env.config().display().to_string();
    refused_alike(&env, &[&c, "is a symlink"]);
}
