//! Runs one configured shell text as `sh -c` in a clean, bounded child: cleared environment,
//! stdin /dev/null, cwd /, its own process group, a timeout enforced on the whole group, and a
//! bounded amount of its output logged. It must never splice request data into the shell text
//! (the IP travels only as `RUROCO_IP`) and never wait on a child without a deadline.
//!
//! A command with `user` runs as that user: the child is this binary again in its internal
//! run-as mode (`RUN_AS_ARG`, see [`run_as_if_asked`]), which sets the supplementary groups,
//! then the gid, then the uid (setgroups(2), setgid(2), setuid(2): groups need CAP_SETGID, so
//! they go first) and then execs the shell in place, so the shell keeps the pid, the process
//! group, the pipes and the environment. This avoids `pre_exec` (unsafe code is forbidden here)
//! and std's unstable `CommandExt::groups`; every id is numeric, resolved when the config was
//! loaded, so no user database is read between fork and exec.

use std::convert::Infallible;
use std::ffi::{CString, OsStr, OsString};
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Gid, Pid, Uid};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The only environment a command sees besides `RUROCO_IP` and `RUROCO_COMMAND`.
pub(crate) const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The shell every command runs in.
pub(crate) const SHELL: &str = "/bin/sh";
/// After the timeout the group gets SIGTERM, then this long to exit before SIGKILL.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(2);
/// How often to check whether a group's leftover processes are gone during `KILL_GRACE`.
const LEFTOVER_POLL: Duration = Duration::from_millis(50);
/// Output lines logged per run (stdout and stderr together); the rest are counted.
pub(crate) const MAX_OUTPUT_LINES: usize = 64;
/// A longer output line is cut to this many bytes in the log.
pub(crate) const MAX_LINE_BYTES: usize = 1024;
/// After the shell exited, how long its output pipes may take to reach EOF (a background child
/// that inherited them could hold them open forever).
pub(crate) const OUTPUT_DRAIN: Duration = Duration::from_secs(1);

/// The first argument that puts this binary into its internal run-as mode:
/// `ruroco-commander RUN_AS_ARG UID GID GROUPS -c TEXT`, GROUPS comma-separated gids (may be
/// empty). Not an operator interface.
pub(crate) const RUN_AS_ARG: &str = "--internal-run-as";
/// The program run-as re-executes: this very binary, even if the file was replaced since start.
const SELF_EXE: &str = "/proc/self/exe";
/// Exit status of a run-as child that could not take the identity (or exec the shell).
pub(crate) const RUN_AS_FAILED: i32 = 126;

/// Who a command and its undo run as (`user` and `group` in commander.toml), resolved from the
/// user and group databases (passwd(5), group(5)) when the config is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunAs {
    /// The user name: `USER` and `LOGNAME` of the command.
    pub(crate) user: String,
    pub(crate) uid: Uid,
    /// `group`, or the user's primary group.
    pub(crate) gid: Gid,
    /// The supplementary groups as initgroups(3) computes them for (user, gid), gid included.
    pub(crate) groups: Vec<Gid>,
    /// The user's home directory: `HOME` of the command.
    pub(crate) home: String,
}

impl RunAs {
    /// The ids to keep in a grant record ([`crate::schedule::RecordedRunAs`]).
    pub(crate) fn to_record(&self) -> crate::schedule::RecordedRunAs {
        crate::schedule::RecordedRunAs {
            user: self.user.clone(),
            uid: self.uid.as_raw(),
            gid: self.gid.as_raw(),
            groups: self.groups.iter().map(|g| g.as_raw()).collect(),
            home: self.home.clone(),
        }
    }

    /// The identity a grant record holds, to undo as exactly what ran.
    pub(crate) fn from_record(r: &crate::schedule::RecordedRunAs) -> Self {
        Self {
            user: r.user.clone(),
            uid: Uid::from_raw(r.uid),
            gid: Gid::from_raw(r.gid),
            groups: r.groups.iter().map(|g| Gid::from_raw(*g)).collect(),
            home: r.home.clone(),
        }
    }
}

/// Whether this run is a command or the undo of one (they log differently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Command,
    Undo,
}

/// Everything needed to run one shell text.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) kind: Kind,
    pub(crate) name: Arc<str>,
    pub(crate) run: Arc<str>,
    pub(crate) ip: IpAddr,
    pub(crate) timeout: Duration,
    /// `None`: root, the commander's own identity. `Some` re-executes `/proc/self/exe`, so it
    /// works only in the `ruroco-commander` binary, whose `main` calls [`run_as_if_asked`].
    pub(crate) run_as: Option<Arc<RunAs>>,
}

/// How a run ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    Exited(i32),
    Signaled(i32),
    TimedOut,
    SpawnFailed(std::io::Error),
    WaitFailed(std::io::Error),
}

impl Outcome {
    pub(crate) fn success(&self) -> bool {
        matches!(self, Outcome::Exited(0))
    }
}

fn command_for(job: &Job) -> tokio::process::Command {
    let mut c = match &job.run_as {
        None => tokio::process::Command::new(SHELL),
        Some(r) => {
            let groups: Vec<String> = r.groups.iter().map(Gid::to_string).collect();
            let mut c = tokio::process::Command::new(SELF_EXE);
            c.arg(RUN_AS_ARG)
                .arg(r.uid.to_string())
                .arg(r.gid.to_string())
                .arg(groups.join(","));
            c
        }
    };
    c.arg("-c")
        .arg(&*job.run)
        .env_clear()
        .env("PATH", CHILD_PATH)
        .env("RUROCO_IP", job.ip.to_string())
        .env("RUROCO_COMMAND", &*job.name);
    if let Some(r) = &job.run_as {
        // What su(1)/runuser(1) and systemd's User= give a login-less service.
        c.env("HOME", &r.home)
            .env("USER", &r.user)
            .env("LOGNAME", &r.user);
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .current_dir("/")
        .process_group(0)
        .kill_on_drop(false);
    c
}

/// Run the job to completion (or its timeout), logging start, output and outcome.
pub(crate) async fn run(job: &Job) -> Outcome {
    run_with_grace(job, KILL_GRACE).await
}

/// `run` with another SIGTERM→SIGKILL grace (tests use a long one to show that a run ends
/// when its group is gone, not when the grace is over).
async fn run_with_grace(job: &Job, grace: Duration) -> Outcome {
    let start = Instant::now();
    let outcome = run_inner(job, grace).await;
    log_outcome(job, &outcome, start.elapsed());
    outcome
}

async fn run_inner(job: &Job, grace: Duration) -> Outcome {
    let mut child = match command_for(job).spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::SpawnFailed(e),
    };
    let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
        return Outcome::WaitFailed(std::io::Error::other("child exited before it was watched"));
    };
    // process_group(0) makes the child the leader of a group whose id is its pid.
    let pgid = Pid::from_raw(pid);
    tracing::info!(event = "started", command = %job.name, ip = %job.ip, pid, undo = job.kind == Kind::Undo);
    let budget = Arc::new(AtomicUsize::new(MAX_OUTPUT_LINES));
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(log_output(
            out,
            "stdout",
            job.clone(),
            budget.clone(),
        )));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(log_output(
            err,
            "stderr",
            job.clone(),
            budget.clone(),
        )));
    }
    let outcome = match tokio::time::timeout(job.timeout, child.wait()).await {
        Ok(Ok(status)) => {
            // The shell is done; whatever it left running in its group is not allowed to
            // outlive it. The group id cannot be reused while any member is alive.
            if killpg(pgid, None).is_ok() {
                tracing::warn!(event = "killed_leftovers", command = %job.name, ip = %job.ip, pgid = pgid.as_raw());
                let _ = killpg(pgid, Signal::SIGTERM);
                end_leftovers(pgid, tokio::time::Instant::now() + grace).await;
            }
            exit_outcome(status)
        }
        Ok(Err(e)) => Outcome::WaitFailed(e),
        Err(_) => {
            // The shell is not reaped yet, so its pid (the group id) cannot belong to an
            // unrelated process while we signal the group.
            let _ = killpg(pgid, Signal::SIGTERM);
            let deadline = tokio::time::Instant::now() + grace;
            // Woken by SIGCHLD when the shell exits, not by polling.
            match tokio::time::timeout_at(deadline, child.wait()).await {
                Ok(_) => end_leftovers(pgid, deadline).await,
                Err(_) => {
                    // Still unreaped: the group id is still ours.
                    let _ = killpg(pgid, Signal::SIGKILL);
                    let _ = child.wait().await;
                }
            }
            Outcome::TimedOut
        }
    };
    let mut dropped = 0usize;
    let drain = async {
        for r in &mut readers {
            dropped += r.await.unwrap_or(0);
        }
    };
    if tokio::time::timeout(OUTPUT_DRAIN, drain).await.is_err() {
        for r in &readers {
            r.abort();
        }
    }
    if dropped > 0 {
        tracing::info!(event = "output_truncated", command = %job.name, ip = %job.ip, dropped_lines = dropped);
    }
    outcome
}

/// After the SIGTERM, wait until the group (whose leader, the shell, is reaped) is empty or
/// `deadline` passes, then SIGKILL whatever is left. Returns at once when the group is already
/// empty, which is the usual case: everything exited on SIGTERM together with the shell.
///
/// The kernel has no "process group empty" event, so members that outlive the shell are
/// probed with `kill(-pgid, 0)` (kill(2)) every `LEFTOVER_POLL`; ESRCH ends the wait and no
/// signal is sent after it. A live member keeps the group id from being reused; only a group
/// that empties in the instant between the last probe and the SIGKILL, with its id taken by a
/// new group in that same instant (pid wrap-around), could be hit.
async fn end_leftovers(pgid: Pid, deadline: tokio::time::Instant) {
    loop {
        if killpg(pgid, None).is_err() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = killpg(pgid, Signal::SIGKILL);
            return;
        }
        tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + LEFTOVER_POLL)).await;
    }
}

fn exit_outcome(status: std::process::ExitStatus) -> Outcome {
    match (status.code(), status.signal()) {
        (Some(code), _) => Outcome::Exited(code),
        (None, Some(sig)) => Outcome::Signaled(sig),
        (None, None) => Outcome::WaitFailed(std::io::Error::other("unknown exit status")),
    }
}

fn log_outcome(job: &Job, outcome: &Outcome, elapsed: Duration) {
    let duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    let undo = job.kind == Kind::Undo;
    let (name, ip) = (&job.name, job.ip);
    match outcome {
        Outcome::Exited(0) if undo => {
            tracing::info!(event = "undone", command = %name, ip = %ip, exit = 0, duration_ms);
        }
        Outcome::Exited(0) => {
            tracing::info!(event = "executed", command = %name, ip = %ip, exit = 0, duration_ms);
        }
        Outcome::Exited(code) => {
            tracing::warn!(event = "failed", reason = "exit", command = %name, ip = %ip, exit = code, duration_ms, undo);
        }
        Outcome::Signaled(sig) => {
            tracing::warn!(event = "failed", reason = "signal", command = %name, ip = %ip, exit = 128 + sig, signal = sig, duration_ms, undo);
        }
        Outcome::TimedOut => {
            tracing::warn!(event = "failed", reason = "timeout", command = %name, ip = %ip, timeout_ms = u64::try_from(job.timeout.as_millis()).unwrap_or(u64::MAX), duration_ms, undo);
        }
        Outcome::SpawnFailed(e) => {
            tracing::error!(event = "failed", reason = "spawn", command = %name, ip = %ip, error = %e, undo);
        }
        Outcome::WaitFailed(e) => {
            tracing::error!(event = "failed", reason = "wait", command = %name, ip = %ip, error = %e, duration_ms, undo);
        }
    }
}

/// Log a child's output line by line within the shared budget; returns lines not logged.
async fn log_output<R: AsyncRead + Unpin>(
    mut r: R,
    stream: &'static str,
    job: Job,
    budget: Arc<AtomicUsize>,
) -> usize {
    let mut buf = [0u8; 4096];
    let mut line: Vec<u8> = Vec::with_capacity(128);
    let mut dropped = 0usize;
    let mut emit = |line: &[u8]| {
        let allowed = budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if allowed {
            let text = printable(line);
            tracing::info!(event = "output", command = %job.name, ip = %job.ip, stream, line = %text);
        } else {
            dropped += 1;
        }
    };
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                emit(&line);
                line.clear();
            } else if line.len() < MAX_LINE_BYTES {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        emit(&line);
    }
    dropped
}

/// The internal run-as mode (module docs): when this process was started as
/// `ruroco-commander RUN_AS_ARG UID GID GROUPS -c TEXT`, take that identity and exec
/// `SHELL -c TEXT` with the inherited environment; this never returns then (a failure is one
/// line on stderr, logged as the command's output, and exit status `RUN_AS_FAILED`).
/// Otherwise it returns at once. Call it first thing in `main`.
pub(crate) fn run_as_if_asked() {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).map(OsString::as_os_str) != Some(OsStr::new(RUN_AS_ARG)) {
        return;
    }
    let e = match become_and_exec(args.get(2..).unwrap_or_default()) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    eprintln!("ruroco-commander: run as another user: {e}");
    std::process::exit(RUN_AS_FAILED);
}

fn text_of(s: &OsString) -> Result<&str, String> {
    s.to_str().ok_or_else(|| format!("not UTF-8: {s:?}"))
}

fn become_and_exec(args: &[OsString]) -> Result<Infallible, String> {
    let [uid, gid, groups, dash_c, text] = args else {
        return Err(format!(
            "usage: {RUN_AS_ARG} UID GID GROUPS -c TEXT (an internal mode)"
        ));
    };
    if dash_c != "-c" {
        return Err(format!("expected -c, got {dash_c:?}"));
    }
    let id = |s: &str| {
        s.parse::<u32>()
            .map_err(|_| format!("not a numeric id: {s:?}"))
    };
    let uid = Uid::from_raw(id(text_of(uid)?)?);
    let gid = Gid::from_raw(id(text_of(gid)?)?);
    let groups = text_of(groups)?
        .split(',')
        .filter(|g| !g.is_empty())
        .map(|g| id(g).map(Gid::from_raw))
        .collect::<Result<Vec<_>, _>>()?;
    let cap = "(ruroco-commander.service needs CAP_SETUID CAP_SETGID in CapabilityBoundingSet)";
    nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups: {e} {cap}"))?;
    nix::unistd::setgid(gid).map_err(|e| format!("setgid({gid}): {e} {cap}"))?;
    nix::unistd::setuid(uid).map_err(|e| format!("setuid({uid}): {e} {cap}"))?;
    // setuid(2) by a privileged process sets the real, effective and saved ids; make sure.
    let ids = nix::unistd::getresuid().map_err(|e| format!("getresuid: {e}"))?;
    let gids = nix::unistd::getresgid().map_err(|e| format!("getresgid: {e}"))?;
    if [ids.real, ids.effective, ids.saved] != [uid; 3]
        || [gids.real, gids.effective, gids.saved] != [gid; 3]
    {
        return Err(format!("ids did not change to {uid}:{gid}"));
    }
    let cstr =
        |b: &[u8]| CString::new(b).map_err(|_| "the shell text contains a NUL byte".to_owned());
    let shell = cstr(SHELL.as_bytes())?;
    let argv = [cstr(b"sh")?, cstr(b"-c")?, cstr(text.as_bytes())?];
    nix::unistd::execv(&shell, &argv).map_err(|e| format!("exec {SHELL}: {e}"))
}

/// Output as one log-safe line: invalid UTF-8 replaced, control characters shown as `?`.
pub(crate) fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(run: &str, timeout: Duration) -> Job {
        Job {
            kind: Kind::Command,
            name: "t".into(),
            run: run.into(),
            ip: "192.0.2.1".parse().unwrap(),
            timeout,
            run_as: None,
        }
    }

    #[tokio::test]
    async fn clean_environment_and_cwd() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let j = job(
            &format!(
                "env | sort > {}; pwd >> {}; read x; echo \"read=$?\" >> {}",
                out.display(),
                out.display(),
                out.display()
            ),
            Duration::from_secs(20),
        );
        assert!(run(&j).await.success());
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.contains("RUROCO_IP=192.0.2.1\n"), "{text}");
        assert!(text.contains("RUROCO_COMMAND=t\n"), "{text}");
        assert!(text.contains(&format!("PATH={CHILD_PATH}\n")), "{text}");
        assert!(!text.contains("HOME="), "{text}");
        assert!(text.contains("\n/\n"), "cwd is /: {text}");
        assert!(text.contains("read=1"), "stdin is /dev/null: {text}");
    }

    #[tokio::test]
    async fn exit_codes() {
        assert!(matches!(
            run(&job("exit 3", Duration::from_secs(20))).await,
            Outcome::Exited(3)
        ));
        assert!(matches!(
            run(&job("kill -9 $$", Duration::from_secs(20))).await,
            Outcome::Signaled(9)
        ));
    }

    #[tokio::test]
    async fn timeout_kills_group() {
        let o = run(&job("sleep 1000 & sleep 1000", Duration::from_millis(200))).await;
        assert!(matches!(o, Outcome::TimedOut), "{o:?}");
    }

    /// Everything in the group exits on SIGTERM; with a grace of an hour only a run that stops
    /// waiting once the group is empty ends within the (generous) test deadline.
    #[tokio::test]
    async fn a_timed_out_run_ends_when_its_group_is_gone_not_after_the_grace() {
        let j = job("sleep 1000 & sleep 1000", Duration::from_millis(200));
        let o = tokio::time::timeout(
            Duration::from_secs(60),
            run_with_grace(&j, Duration::from_secs(3600)),
        )
        .await;
        assert!(matches!(o, Ok(Outcome::TimedOut)), "{o:?}");
    }

    /// A member that ignores SIGTERM outlives the shell and is killed when the grace is over.
    #[tokio::test]
    async fn a_member_ignoring_sigterm_is_killed_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let j = job(
            &format!(
                "(trap '' TERM; exec sleep 1000) & echo $! > {}; sleep 1000",
                pidfile.display()
            ),
            Duration::from_millis(300),
        );
        let o = run_with_grace(&j, Duration::from_millis(300)).await;
        assert!(matches!(o, Outcome::TimedOut), "{o:?}");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        wait_not_running(pid);
    }

    /// Killed, then reaped by init (or still a zombie): not running any more.
    fn wait_not_running(pid: i32) {
        let running = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").and_then(|(_, r)| r.chars().next()))
                .is_some_and(|state| state != 'Z' && state != 'X')
        };
        let start = std::time::Instant::now();
        while running() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "leftover {pid} still runs"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[tokio::test]
    async fn background_leftovers_are_killed_when_the_shell_exits() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let j = job(
            &format!("sleep 1000 & echo $! > {}", pidfile.display()),
            Duration::from_secs(20),
        );
        assert!(run(&j).await.success());
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        wait_not_running(pid);
    }

    #[test]
    fn printable_strips_controls() {
        assert_eq!(printable(b"a\x1b[31mb\r\xff"), "a?[31mb?\u{fffd}");
    }
}
