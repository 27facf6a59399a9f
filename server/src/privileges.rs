//! Dropping privileges after the socket is taken: switch from root to the configured user
//! (setgroups, setgid, setuid), clear every capability set, set `PR_SET_NO_NEW_PRIVS`, and
//! verify all of it by reading it back. It must never leave a capability or root uid behind:
//! any doubt is an error (fail closed).

use caps::CapSet;
use nix::unistd::{Gid, Uid, User, setgroups};

/// What the drop did, for the start-up line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// `Some(name)` when we switched from root to `name`.
    pub switched_to: Option<String>,
    pub uid: u32,
    pub gid: u32,
    /// False when the bounding set could not be emptied (not root, systemd's
    /// `CapabilityBoundingSet=` is then in charge; harmless with no_new_privs).
    pub bounding_cleared: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    #[error(
        "config field `user`: no such user {0:?}: create it (e.g. via sysusers.d) or set `user`"
    )]
    NoUser(String),
    #[error("config field `user`: {0:?} has uid 0; the server must run unprivileged")]
    RootUser(String),
    #[error("privilege drop: {step} failed: {detail}")]
    Step { step: &'static str, detail: String },
    #[error("privilege drop: verification failed: {0} (refusing to run with privileges left)")]
    Verify(String),
}

fn step(step: &'static str) -> impl Fn(String) -> PrivError {
    move |detail| PrivError::Step { step, detail }
}

/// Switch away from root if we are root, then drop every capability.
pub fn drop_privileges(user: &str) -> Result<Dropped, PrivError> {
    let root = Uid::effective().is_root();
    let mut switched_to = None;
    if root {
        let u = User::from_name(user)
            .map_err(|e| step("user lookup")(e.to_string()))?
            .ok_or_else(|| PrivError::NoUser(user.to_owned()))?;
        if u.uid.is_root() {
            return Err(PrivError::RootUser(user.to_owned()));
        }
        // The bounding set needs CAP_SETPCAP, which the uid change takes away: clear it first.
        caps::clear(None, CapSet::Bounding)
            .map_err(|e| step("clear bounding set")(e.to_string()))?;
        // The user's groups as initgroups(3) and systemd's User= give them, so `--check` (which
        // evaluates access with the same list) and the running server agree.
        let groups = std::ffi::CString::new(user)
            .ok()
            .and_then(|c| nix::unistd::getgrouplist(&c, u.gid).ok())
            .unwrap_or_else(|| vec![u.gid]);
        setgroups(&groups).map_err(|e| step("setgroups")(e.to_string()))?;
        nix::unistd::setresgid(u.gid, u.gid, u.gid).map_err(|e| step("setgid")(e.to_string()))?;
        nix::unistd::setresuid(u.uid, u.uid, u.uid).map_err(|e| step("setuid")(e.to_string()))?;
        switched_to = Some(user.to_owned());
    }
    let bounding_cleared = match caps::clear(None, CapSet::Bounding) {
        Ok(()) => true,
        // Without CAP_SETPCAP the bounding set cannot shrink; with empty permitted sets and
        // no_new_privs nothing can be regained from it.
        Err(_) if !root => false,
        Err(e) => return Err(step("clear bounding set")(e.to_string())),
    };
    caps::clear(None, CapSet::Ambient).map_err(|e| step("clear ambient set")(e.to_string()))?;
    // capset only when something is left: under systemd the sets arrive empty, and the unit
    // can then forbid capset altogether.
    for set in [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable] {
        let have =
            caps::read(None, set).map_err(|e| step("read capability sets")(e.to_string()))?;
        if !have.is_empty() {
            caps::clear(None, set).map_err(|e| step("clear capability sets")(e.to_string()))?;
        }
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| step("PR_SET_NO_NEW_PRIVS")(e.to_string()))?;
    verify(bounding_cleared)?;
    Ok(Dropped {
        switched_to,
        uid: Uid::current().as_raw(),
        gid: Gid::current().as_raw(),
        bounding_cleared,
    })
}

/// Read back uids, capabilities and no_new_privs; any privilege left is an error.
fn verify(bounding_cleared: bool) -> Result<(), PrivError> {
    let (r, e, s) = (
        Uid::current(),
        Uid::effective(),
        nix::unistd::getresuid()
            .map_err(|e| PrivError::Verify(e.to_string()))?
            .saved,
    );
    if r.is_root() || e.is_root() || s.is_root() {
        return Err(PrivError::Verify(format!(
            "still uid 0 (real {r}, effective {e}, saved {s})"
        )));
    }
    let mut sets = vec![
        CapSet::Effective,
        CapSet::Permitted,
        CapSet::Inheritable,
        CapSet::Ambient,
    ];
    if bounding_cleared {
        sets.push(CapSet::Bounding);
    }
    for set in sets {
        let have = caps::read(None, set).map_err(|e| PrivError::Verify(e.to_string()))?;
        if !have.is_empty() {
            return Err(PrivError::Verify(format!(
                "{set:?} set still holds {have:?}"
            )));
        }
    }
    // caps only knows the capabilities it was built with; the kernel's own view is final.
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| PrivError::Verify(format!("/proc/self/status: {e}")))?;
    for line in status.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let must_be_zero = matches!(name, "CapInh" | "CapPrm" | "CapEff" | "CapAmb")
            || (name == "CapBnd" && bounding_cleared);
        if must_be_zero && u64::from_str_radix(value.trim(), 16) != Ok(0) {
            return Err(PrivError::Verify(format!("{name} is {}", value.trim())));
        }
    }
    if !nix::sys::prctl::get_no_new_privs().map_err(|e| PrivError::Verify(e.to_string()))? {
        return Err(PrivError::Verify("no_new_privs is not set".to_owned()));
    }
    Ok(())
}
