//! In-process confinement applied after the privilege drop: Landlock (read-only config and
//! keys, writable state dir only) and a seccomp allow-list of the syscalls the server needs.
//! It must never weaken anything systemd already applied; failure to confine is reported, and
//! the caller decides whether that is fatal.
//!
//! Both layers only ever add restrictions (the kernel stacks them on top of whatever the
//! service manager installed). Missed syscalls fail with `EPERM` instead of killing the
//! daemon: one operation fails and is logged, the daemon keeps answering (see SECURITY.md).
//!
//! The seccomp filter also pins the inherited UDP socket to receiving: no send, write,
//! connect or setsockopt on its descriptor number, no way to duplicate any descriptor
//! (`dup*`, `fcntl(F_DUPFD*)`) and no `sendmsg`/`sendmmsg` at all, so no descriptor can be
//! passed to another process (`SCM_RIGHTS`) either.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use crate::writer::Writer;
use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, LandlockStatus, PathBeneath, PathFd,
    RestrictSelfAttr, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};
use nix::libc;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// The paths the running server still needs after start-up.
#[derive(Debug, Clone, Copy)]
pub struct Paths<'a> {
    pub config: &'a Path,
    pub keys_dir: &'a Path,
    pub state_dir: &'a Path,
    pub commander_socket: &'a Path,
}

/// What was applied, for the start-up log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub landlock: String,
    pub seccomp: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("sandbox: {0}")]
    Failed(String),
}

/// Test probe, only in builds with the `selftest` feature (the tests enable it; release
/// builds do not have it): when set to a path, the server tries to open it for reading right
/// after confining itself, and then tries every way out the filter closes (see
/// [`selftest`]), logging `event="sandbox_selftest" probe=… result="denied"|"allowed"`.
#[cfg(feature = "selftest")]
pub const SELFTEST_ENV: &str = "RUROCO_SANDBOX_SELFTEST";
/// With the probe: a UDP address (`127.0.0.1:port`) the probe tries to reach from the
/// server's own UDP socket.
#[cfg(feature = "selftest")]
pub const SELFTEST_UDP_ENV: &str = "RUROCO_SANDBOX_SELFTEST_UDP";
/// With the probe: a Unix stream socket path, unrelated to the server, it tries to connect to.
#[cfg(feature = "selftest")]
pub const SELFTEST_UNIX_ENV: &str = "RUROCO_SANDBOX_SELFTEST_UNIX";

/// The Landlock ABI whose filesystem rights this module was written and reviewed against.
/// V9 adds `ResolveUnix` (pathname `connect`/`sendto` on Unix sockets), which is granted
/// below on the directories of the sockets the server talks to.
const FS_ABI: ABI = ABI::V9;
/// Network rights: the server never binds, connects or sends on TCP or UDP after start-up
/// (its UDP socket is already bound and it never replies), so every handled right is denied.
const NET_ABI: ABI = ABI::V10;

/// Directories too broad to grant beneath: for a config file directly inside one of them
/// only the file itself is granted (an editor that replaces the file then needs a restart
/// instead of SIGHUP to be picked up).
const BROAD_DIRS: [&str; 9] = [
    "/", "/etc", "/usr", "/var", "/tmp", "/run", "/home", "/root", "/opt",
];

/// Where journald's native protocol socket lives (tracing-journald sends there).
const JOURNALD_SOCKET_DIR: &str = "/run/systemd/journal";

/// Landlock is in place; seccomp is not yet.
#[derive(Debug)]
#[must_use = "call restrict_syscalls to finish confining"]
pub struct FilesRestricted {
    landlock: String,
}

/// Step 1: Landlock. Threads started after this inherit the ruleset even on kernels where
/// Landlock cannot reach threads that already exist; start them here, before step 2 (seccomp
/// forbids `clone`).
pub fn restrict_files(paths: &Paths<'_>) -> Result<FilesRestricted, SandboxError> {
    Ok(FilesRestricted {
        landlock: apply_landlock(paths)?,
    })
}

impl FilesRestricted {
    /// Step 2: the seccomp filter, for every thread of the process. `udp` is the server's
    /// UDP socket, which the filter lets it receive on and nothing else. It takes the floor
    /// writer because that thread must exist first: the filter forbids creating threads.
    pub fn restrict_syscalls(
        self,
        udp: BorrowedFd<'_>,
        _writer: &Writer,
    ) -> Result<Applied, SandboxError> {
        let seccomp = apply_seccomp(udp.as_raw_fd())?;
        #[cfg(feature = "selftest")]
        if let Some(probe) = std::env::var_os(SELFTEST_ENV) {
            selftest::run(Path::new(&probe), udp);
        }
        Ok(Applied {
            landlock: self.landlock,
            seccomp,
        })
    }
}

/// The confinement probe of test builds: each way out is tried once and its outcome logged.
/// It reads no file content and sends nothing the sandbox lets through.
#[cfg(feature = "selftest")]
mod selftest {
    use super::{SELFTEST_UDP_ENV, SELFTEST_UNIX_ENV};
    use nix::fcntl::{FcntlArg, fcntl};
    use nix::sys::socket::{
        AddressFamily, MsgFlags, SockFlag, SockType, SockaddrIn, UnixAddr, connect, sendto, socket,
    };
    use std::os::fd::{AsRawFd, BorrowedFd};
    use std::path::Path;

    fn report<T, E: std::fmt::Display>(probe: &str, r: Result<T, E>) {
        match r {
            Ok(_) => tracing::warn!(event = "sandbox_selftest", probe, result = "allowed"),
            Err(e) => tracing::info!(
                event = "sandbox_selftest",
                probe,
                result = "denied",
                error = %e
            ),
        }
    }

    pub(super) fn run(path: &Path, udp: BorrowedFd<'_>) {
        report("open_file", std::fs::File::open(path));
        let fd = udp.as_raw_fd();
        report("udp_dup", nix::unistd::dup(udp));
        // (A descriptor these two returned would stay open: the test fails on "allowed".)
        report("udp_fcntl_dupfd", fcntl(udp, FcntlArg::F_DUPFD(100)));
        report(
            "udp_fcntl_dupfd_cloexec",
            fcntl(udp, FcntlArg::F_DUPFD_CLOEXEC(100)),
        );
        report("udp_write", nix::unistd::write(udp, b"ruroco selftest"));
        let target = std::env::var(SELFTEST_UDP_ENV)
            .ok()
            .and_then(|a| a.parse::<std::net::SocketAddrV4>().ok());
        if let Some(to) = target {
            let to = SockaddrIn::from(to);
            report(
                "udp_sendto",
                sendto(fd, b"ruroco selftest", &to, MsgFlags::empty()),
            );
            report("udp_connect", connect(fd, &to));
        }
        if let Some(path) = std::env::var_os(SELFTEST_UNIX_ENV) {
            let r = UnixAddr::new(Path::new(&path)).and_then(|addr| {
                let s = socket(
                    AddressFamily::Unix,
                    SockType::Stream,
                    SockFlag::SOCK_CLOEXEC,
                    None,
                )?;
                connect(s.as_raw_fd(), &addr)
            });
            report("unix_connect_elsewhere", r);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Landlock
// ---------------------------------------------------------------------------------------

/// One path-beneath rule: where, and which rights.
#[derive(Debug)]
struct Grant {
    path: PathBuf,
    access: BitFlags<AccessFs>,
    what: &'static str,
}

fn read_file() -> BitFlags<AccessFs> {
    AccessFs::ReadFile.into()
}

fn read_dir() -> BitFlags<AccessFs> {
    AccessFs::ReadFile | AccessFs::ReadDir
}

/// The state dir holds the replay file, replaced by write-temp, fsync, rename, fsync-dir.
fn state_rights() -> BitFlags<AccessFs> {
    AccessFs::ReadFile
        | AccessFs::ReadDir
        | AccessFs::WriteFile
        | AccessFs::MakeReg
        | AccessFs::RemoveFile
        | AccessFs::Truncate
}

fn resolve_unix() -> BitFlags<AccessFs> {
    AccessFs::ResolveUnix.into()
}

/// The nearest existing directory at or above `dir` (a socket directory may not exist yet
/// when the server starts before the commander).
fn existing_ancestor(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|p| !p.as_os_str().is_empty() && p.is_dir())
        .map(Path::to_path_buf)
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Every filesystem grant, from the configured paths and the notify/journal environment.
fn grants(paths: &Paths<'_>, notify_socket: Option<&str>, journald: bool) -> Vec<Grant> {
    let mut out = Vec::new();
    // The config is re-read on SIGHUP; editors replace the file (new inode), so grant its
    // directory unless that directory is a broad system one. Resolved first: a relative
    // `--config server.toml` must not turn into "." (the cwd, often "/"), and Landlock
    // checks the target of a symlink, not the link.
    let config = std::fs::canonicalize(paths.config)
        .or_else(|_| std::path::absolute(paths.config))
        .unwrap_or_else(|_| paths.config.into());
    let config_dir = parent_of(&config);
    let broad = BROAD_DIRS.iter().any(|d| config_dir == Path::new(d));
    // The directory may be listed too: a `keys_dir` moved beneath it is read on SIGHUP.
    out.push(Grant {
        path: if broad { config } else { config_dir },
        access: if broad { read_file() } else { read_dir() },
        what: "config",
    });
    out.push(Grant {
        path: paths.keys_dir.to_path_buf(),
        access: read_dir(),
        what: "keys_dir",
    });
    out.push(Grant {
        path: paths.state_dir.to_path_buf(),
        access: state_rights(),
        what: "state_dir",
    });
    // The commander may recreate its socket (new inode) on restart: grant the directory.
    if let Some(dir) = existing_ancestor(&parent_of(paths.commander_socket)) {
        out.push(Grant {
            path: dir,
            access: resolve_unix(),
            what: "commander_socket",
        });
    }
    if let Some(sock) = notify_socket.filter(|s| s.starts_with('/'))
        && let Some(dir) = existing_ancestor(&parent_of(Path::new(sock)))
    {
        out.push(Grant {
            path: dir,
            access: resolve_unix(),
            what: "NOTIFY_SOCKET",
        });
    }
    if journald && Path::new(JOURNALD_SOCKET_DIR).is_dir() {
        out.push(Grant {
            path: PathBuf::from(JOURNALD_SOCKET_DIR),
            access: resolve_unix(),
            what: "journald",
        });
    }
    out
}

/// The directories whose files and listings stay readable once confined: the config's
/// directory (unless it is a broad system directory) and `keys_dir` as at start, resolved.
/// A `keys_dir` changed on SIGHUP can be read only beneath one of them.
pub fn readable_dirs(paths: &Paths<'_>) -> Vec<PathBuf> {
    grants(paths, None, false)
        .into_iter()
        .filter(|g| g.access.contains(AccessFs::ReadDir) && g.what != "state_dir")
        .map(|g| std::fs::canonicalize(&g.path).unwrap_or(g.path))
        .collect()
}

/// Scopes (ABI 6): no signals to processes outside the sandbox; no abstract Unix sockets
/// unless NOTIFY_SOCKET is one (`@...`), which sd_notify must keep reaching.
fn scopes(notify_socket: Option<&str>) -> BitFlags<Scope> {
    if notify_socket.is_some_and(|s| s.starts_with('@')) {
        Scope::Signal.into()
    } else {
        Scope::Signal | Scope::AbstractUnixSocket
    }
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(1)
}

fn landlock_err(e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Failed(format!("landlock: {e}"))
}

fn apply_landlock(paths: &Paths<'_>) -> Result<String, SandboxError> {
    let notify = std::env::var("NOTIFY_SOCKET").ok();
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    // Read before confining: /proc is not among the grants.
    let threads = thread_count();

    let ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(FS_ABI))
        .map_err(landlock_err)?
        .handle_access(AccessNet::from_all(NET_ABI))
        .map_err(landlock_err)?
        .scope(scopes(notify.as_deref()))
        .map_err(landlock_err)?
        .create()
        .map_err(landlock_err)?;
    let mut created = ruleset;
    for g in grants(paths, notify.as_deref(), journald) {
        let fd = PathFd::new(&g.path).map_err(|e| {
            SandboxError::Failed(format!(
                "landlock: cannot open {} ({}) to grant access: {e}",
                g.path.display(),
                g.what
            ))
        })?;
        created = created
            .add_rule(PathBeneath::new(fd, g.access))
            .map_err(landlock_err)?;
    }
    let status = created
        .all_threads(true)
        .map_err(landlock_err)?
        .restrict_self()
        .map_err(landlock_err)?;

    let abi = match status.landlock {
        LandlockStatus::Available { effective_abi, .. } => format!("{effective_abi:?}"),
        LandlockStatus::NotEnabled => "not enabled in this kernel".to_owned(),
        LandlockStatus::NotImplemented => "not built into this kernel".to_owned(),
    };
    let mut text = match status.ruleset {
        RulesetStatus::FullyEnforced => format!("fully enforced ({abi})"),
        RulesetStatus::PartiallyEnforced => format!("partially enforced ({abi})"),
        RulesetStatus::NotEnforced => format!("not enforced ({abi})"),
    };
    if status.ruleset != RulesetStatus::NotEnforced && !status.all_threads && threads > 1 {
        text.push_str(&format!(
            ", {} other thread(s) unrestricted",
            threads.saturating_sub(1)
        ));
    }
    Ok(text)
}

// ---------------------------------------------------------------------------------------
// seccomp
// ---------------------------------------------------------------------------------------

/// The action for any syscall not on the list. EPERM rather than a kill: an overlooked
/// syscall on a rare path (say, a reload) fails that one operation with a logged error
/// instead of taking the daemon and its replay protection down.
const DEFAULT_ACTION: SeccompAction = SeccompAction::Errno(libc::EPERM as u32);

/// Syscalls allowed with any arguments, on every architecture. (Those that could send on,
/// connect or reconfigure the UDP socket are allowed further down, on other descriptors
/// only.)
/// Found by running the server under `strace -f` through start, accepted and rejected
/// datagrams, persisting, commander reconnects, SIGHUP reload, STATUS/WATCHDOG and SIGTERM.
const ALLOWED_COMMON: &[libc::c_long] = &[
    // tokio current_thread runtime: epoll, its eventfd waker, timers
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_epoll_ctl,
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    // datagrams in (frames and sd_notify messages out: see `NOT_ON_UDP`)
    libc::SYS_recvmmsg,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_getsockopt,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_shutdown,
    // files: keys/config (reload), the replay state
    libc::SYS_openat,
    libc::SYS_close,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_lseek,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_renameat2,
    libc::SYS_unlinkat,
    libc::SYS_getdents64,
    // the trust checks of a reload (`ruroco_kit::trust`): ACL attributes, symlinks of the
    // ancestors, the process's groups; all read-only
    libc::SYS_getxattr,
    libc::SYS_fgetxattr,
    libc::SYS_readlinkat,
    libc::SYS_getgroups,
    // randomness (rate-limit hash key), signals, identity
    libc::SYS_getrandom,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    // memory
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_brk,
    libc::SYS_madvise,
    // thread exit paths
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_restart_syscall,
];

/// x86_64 has the legacy path-based variants that std and libc still use there.
#[cfg(target_arch = "x86_64")]
const ALLOWED_ARCH: &[libc::c_long] = &[
    libc::SYS_epoll_wait,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_unlink,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_readlink,
    libc::SYS_poll,
];
/// glibc's `rename` uses `renameat` (nr 38) on aarch64, which libc's table there lacks.
#[cfg(target_arch = "aarch64")]
const ALLOWED_ARCH: &[libc::c_long] = &[libc::SYS_ppoll, 38];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ALLOWED_ARCH: &[libc::c_long] = &[libc::SYS_ppoll];

/// Allowed on any descriptor except the UDP socket: the commander link writes frames
/// (`write`/`writev`), sd_notify and journald get datagrams (`sendto`), the link connects
/// (`connect`). `sendmsg`/`sendmmsg` are not allowed at all (nothing needs them, and they
/// could pass descriptors).
const NOT_ON_UDP: &[libc::c_long] = &[
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_sendto,
    libc::SYS_connect,
    libc::SYS_setsockopt,
];

/// The only `fcntl` commands allowed: read and set descriptor and status flags. No
/// `F_DUPFD`/`F_DUPFD_CLOEXEC` (duplicating), no `F_SETOWN`/`F_SETSIG` (signals to others),
/// no locks or leases.
const FCNTL_ALLOWED: [libc::c_int; 4] =
    [libc::F_GETFD, libc::F_SETFD, libc::F_GETFL, libc::F_SETFL];

/// Seccomp compares 32-bit `int` arguments (descriptors, `fcntl` commands) as the kernel reads
/// them: the low 32 bits only, so upper bits set by a caller cannot slip past a comparison.
fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SandboxError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
        .map_err(|e| SandboxError::Failed(format!("seccomp condition: {e}")))
}

fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule, SandboxError> {
    SeccompRule::new(conds).map_err(|e| SandboxError::Failed(format!("seccomp rule: {e}")))
}

/// The seccomp filter for this architecture, with `udp_fd` the server's UDP socket.
pub fn build_filter(udp_fd: std::os::fd::RawFd) -> Result<BpfProgram, SandboxError> {
    let udp = u64::try_from(udp_fd)
        .map_err(|_| SandboxError::Failed(format!("seccomp: bad UDP descriptor {udp_fd}")))?;
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| {
        SandboxError::Failed(format!(
            "seccomp: no filter for architecture {}: {e}",
            std::env::consts::ARCH
        ))
    })?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for &nr in ALLOWED_COMMON.iter().chain(ALLOWED_ARCH) {
        rules.insert(nr, Vec::new());
    }
    for &nr in NOT_ON_UDP {
        rules.insert(nr, vec![rule(vec![cond(0, SeccompCmpOp::Ne, udp)?])?]);
    }
    rules.insert(
        libc::SYS_fcntl,
        FCNTL_ALLOWED
            .iter()
            .map(|&c| rule(vec![cond(1, SeccompCmpOp::Eq, c as u64)?]))
            .collect::<Result<_, _>>()?,
    );
    // New sockets only of family AF_UNIX (commander reconnects, sd_notify); never network.
    rules.insert(
        libc::SYS_socket,
        vec![rule(vec![cond(
            0,
            SeccompCmpOp::Eq,
            libc::AF_UNIX as u64,
        )?])?],
    );
    // panic = "abort" raises SIGABRT on itself: tgkill only towards our own process (Landlock's
    // signal scope does the same on kernels that have it).
    rules.insert(
        libc::SYS_tgkill,
        vec![rule(vec![cond(
            0,
            SeccompCmpOp::Eq,
            u64::from(std::process::id()),
        )?])?],
    );
    // No executable memory: mmap/mprotect only without PROT_EXEC.
    let no_exec = || -> Result<Vec<SeccompRule>, SandboxError> {
        Ok(vec![rule(vec![cond(
            2,
            SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64),
            0,
        )?])?])
    };
    rules.insert(libc::SYS_mmap, no_exec()?);
    rules.insert(libc::SYS_mprotect, no_exec()?);
    // Only the non-blocking / close-on-exec ioctls std and tokio use on sockets.
    // (The request type differs between libc targets, hence the casts.)
    #[allow(clippy::unnecessary_cast)]
    let (fionbio, fioclex) = (libc::FIONBIO as u64, libc::FIOCLEX as u64);
    rules.insert(
        libc::SYS_ioctl,
        vec![
            rule(vec![cond(1, SeccompCmpOp::Eq, fionbio)?])?,
            rule(vec![cond(1, SeccompCmpOp::Eq, fioclex)?])?,
        ],
    );
    let filter = SeccompFilter::new(rules, DEFAULT_ACTION, SeccompAction::Allow, arch)
        .map_err(|e| SandboxError::Failed(format!("seccomp filter: {e}")))?;
    filter.try_into().map_err(|e: seccompiler::BackendError| {
        SandboxError::Failed(format!("seccomp compile: {e}"))
    })
}

/// True when the running kernel has seccomp filter support (`Seccomp:` in /proc status).
fn seccomp_supported() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Seccomp:")))
        .unwrap_or(false)
}

fn apply_seccomp(udp_fd: std::os::fd::RawFd) -> Result<bool, SandboxError> {
    let program = build_filter(udp_fd)?;
    match seccompiler::apply_filter_all_threads(&program) {
        Ok(()) => Ok(true),
        Err(e) if !seccomp_supported() => {
            tracing::warn!(event = "sandbox", seccomp = "unsupported", error = %e);
            Ok(false)
        }
        Err(e) => Err(SandboxError::Failed(format!("seccomp: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_builds_for_this_arch() {
        let prog = build_filter(3).unwrap();
        assert!(!prog.is_empty());
    }

    #[test]
    fn no_duplicate_syscalls() {
        let mut all: Vec<_> = ALLOWED_COMMON.iter().chain(ALLOWED_ARCH).collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }

    #[test]
    fn dangerous_syscalls_not_listed() {
        for nr in [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_ptrace,
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_bind,
            libc::SYS_listen,
            libc::SYS_accept4,
            libc::SYS_mount,
            libc::SYS_setuid,
            libc::SYS_prctl,
            libc::SYS_socket,
            libc::SYS_kill,
            libc::SYS_tgkill,
            // ways to send on, duplicate or pass on the UDP socket
            libc::SYS_write,
            libc::SYS_writev,
            libc::SYS_sendto,
            libc::SYS_sendmsg,
            libc::SYS_sendmmsg,
            libc::SYS_connect,
            libc::SYS_setsockopt,
            libc::SYS_fcntl,
            libc::SYS_dup,
            libc::SYS_dup3,
            libc::SYS_pwrite64,
            libc::SYS_pwritev,
            libc::SYS_pwritev2,
            libc::SYS_sendfile,
            libc::SYS_splice,
            libc::SYS_vmsplice,
            libc::SYS_io_uring_setup,
            libc::SYS_pidfd_getfd,
            libc::SYS_socketpair,
            libc::SYS_memfd_create,
        ] {
            assert!(
                !ALLOWED_COMMON.contains(&nr) && !ALLOWED_ARCH.contains(&nr),
                "syscall {nr} must not be allowed unconditionally"
            );
        }
    }

    #[test]
    fn grants_cover_paths_and_socket_dirs() {
        let p = Paths {
            config: Path::new("/etc/ruroco/server.toml"),
            keys_dir: Path::new("/etc/ruroco/keys"),
            state_dir: Path::new("/var/lib/ruroco"),
            commander_socket: Path::new("/tmp/ruroco-no-such-dir/commander.sock"),
        };
        let g = grants(&p, Some("/tmp/notify.sock"), false);
        let find = |w: &str| g.iter().find(|g| g.what == w).unwrap();
        assert_eq!(find("config").path, Path::new("/etc/ruroco"));
        assert_eq!(find("config").access, read_dir());
        assert_eq!(find("keys_dir").access, read_dir());
        assert!(find("state_dir").access.contains(AccessFs::MakeReg));
        assert!(!find("state_dir").access.contains(AccessFs::Execute));
        // Missing socket dir: the nearest existing ancestor.
        assert_eq!(find("commander_socket").path, Path::new("/tmp"));
        assert_eq!(find("NOTIFY_SOCKET").access, resolve_unix());
        assert!(g.iter().all(|g| g.what != "journald"));
    }

    #[test]
    fn config_in_broad_dir_grants_only_the_file() {
        let p = Paths {
            config: Path::new("/etc/ruroco-server.toml"),
            keys_dir: Path::new("/k"),
            state_dir: Path::new("/s"),
            commander_socket: Path::new("/run/ruroco/c.sock"),
        };
        let g = grants(&p, None, false);
        assert_eq!(g[0].path, Path::new("/etc/ruroco-server.toml"));
        assert_eq!(g[0].access, read_file());
        assert_eq!(readable_dirs(&p), [Path::new("/k")]);
    }

    #[test]
    fn relative_or_symlinked_config_grants_its_real_directory() {
        let real = tempfile::tempdir().unwrap();
        let file = real.path().join("server.toml");
        std::fs::write(&file, "").unwrap();
        let links = tempfile::tempdir().unwrap();
        let link = links.path().join("server.toml");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let p = Paths {
            config: &link,
            keys_dir: Path::new("/k"),
            state_dir: Path::new("/s"),
            commander_socket: Path::new("/run/ruroco/c.sock"),
        };
        let g = grants(&p, None, false);
        assert_eq!(g[0].path, std::fs::canonicalize(real.path()).unwrap());
        // A bare file name never grants "." (the working directory).
        let p = Paths {
            config: Path::new("no-such-server.toml"),
            ..p
        };
        let g = grants(&p, None, false);
        assert_ne!(g[0].path, Path::new("."));
    }

    #[test]
    fn abstract_notify_socket_keeps_abstract_scope_open() {
        assert!(!scopes(Some("@/org/x")).contains(Scope::AbstractUnixSocket));
        assert!(scopes(Some("/run/systemd/notify")).contains(Scope::AbstractUnixSocket));
        assert!(scopes(None).contains(Scope::Signal));
    }
}
