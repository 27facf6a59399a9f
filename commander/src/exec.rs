//! Runs one configured shell text as `sh -c` in a clean, bounded child: cleared environment,
//! stdin /dev/null, cwd /, its own process group, a timeout enforced on the whole group, and a
//! bounded amount of its output logged. It must never splice request data into the shell text
//! (the IP travels only as `RUROCO_IP`) and never wait on a child without a deadline.

use std::net::IpAddr;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The only environment a command sees besides `RUROCO_IP` and `RUROCO_COMMAND`.
pub const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The shell every command runs in.
pub const SHELL: &str = "/bin/sh";
/// After the timeout the group gets SIGTERM, then this long to exit before SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// How often to check whether a group's leftover processes are gone during `KILL_GRACE`.
const LEFTOVER_POLL: Duration = Duration::from_millis(50);
/// Output lines logged per run (stdout and stderr together); the rest are counted.
pub const MAX_OUTPUT_LINES: usize = 64;
/// A longer output line is cut to this many bytes in the log.
pub const MAX_LINE_BYTES: usize = 1024;
/// After the shell exited, how long its output pipes may take to reach EOF (a background child
/// that inherited them could hold them open forever).
pub const OUTPUT_DRAIN: Duration = Duration::from_secs(1);

/// Whether this run is a command or the undo of one (they log differently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Command,
    Undo,
}

/// Everything needed to run one shell text.
#[derive(Debug, Clone)]
pub struct Job {
    pub kind: Kind,
    pub name: Arc<str>,
    pub run: Arc<str>,
    pub ip: IpAddr,
    pub timeout: Duration,
}

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    Exited(i32),
    Signaled(i32),
    TimedOut,
    SpawnFailed(std::io::Error),
    WaitFailed(std::io::Error),
}

impl Outcome {
    pub fn success(&self) -> bool {
        matches!(self, Outcome::Exited(0))
    }
}

fn command_for(job: &Job) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(SHELL);
    c.arg("-c")
        .arg(&*job.run)
        .env_clear()
        .env("PATH", CHILD_PATH)
        .env("RUROCO_IP", job.ip.to_string())
        .env("RUROCO_COMMAND", &*job.name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .current_dir("/")
        .process_group(0)
        .kill_on_drop(false);
    c
}

/// Run the job to completion (or its timeout), logging start, output and outcome.
pub async fn run(job: &Job) -> Outcome {
    let start = Instant::now();
    let outcome = run_inner(job).await;
    log_outcome(job, &outcome, start.elapsed());
    outcome
}

async fn run_inner(job: &Job) -> Outcome {
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
                terminate_group(pgid).await;
            }
            exit_outcome(status)
        }
        Ok(Err(e)) => Outcome::WaitFailed(e),
        Err(_) => {
            // The shell is not reaped until after SIGKILL, so its pid (the group id) cannot be
            // reused by an unrelated process while we signal the group.
            let _ = killpg(pgid, Signal::SIGTERM);
            tokio::time::sleep(KILL_GRACE).await;
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = child.wait().await;
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

/// SIGTERM to a group whose leader is already reaped, up to `KILL_GRACE` for it to empty, then
/// SIGKILL.
async fn terminate_group(pgid: Pid) {
    let _ = killpg(pgid, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + KILL_GRACE;
    while killpg(pgid, None).is_ok() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(LEFTOVER_POLL).await;
    }
    let _ = killpg(pgid, Signal::SIGKILL);
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

/// Output as one log-safe line: invalid UTF-8 replaced, control characters shown as `?`.
pub fn printable(bytes: &[u8]) -> String {
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
        // Killed, then reaped by init (or still a zombie): not running any more.
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

    #[test]
    fn printable_strips_controls() {
        assert_eq!(printable(b"a\x1b[31mb\r\xff"), "a?[31mb?\u{fffd}");
    }
}
