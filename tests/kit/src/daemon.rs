//! A daemon under test: spawned in its own process group with stdout and stderr appended to a
//! log file and `NOTIFY_SOCKET` pointing at a socket the test owns (sd_notify(3)); waits on
//! its notifications and log lines with a deadline. It must never leave a process it started
//! running: dropping a [`Daemon`] kills its whole process group.

use crate::fs::chmod;
use crate::logfmt::{line_has, parse_status};
use crate::wait::{DEADLINE, POLL, wait_for, wait_until};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Instant;

/// A notify socket the test owns: a non-blocking Unix datagram socket, writable by anyone so a
/// daemon that switched user can still notify; its file is removed when dropped.
#[derive(Debug)]
pub struct Notify {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Notify {
    /// Bind `path` (replacing a stale file), mode 0777, non-blocking.
    ///
    /// # Panics
    /// When the socket cannot be bound or set up.
    pub fn bind(path: &Path) -> Self {
        let _ = fs::remove_file(path);
        let socket = UnixDatagram::bind(path)
            .unwrap_or_else(|e| panic!("bind notify socket {}: {e}", path.display()));
        socket.set_nonblocking(true).unwrap();
        chmod(path, 0o777);
        Self {
            socket,
            path: path.to_path_buf(),
        }
    }

    /// The socket's path (the value of `NOTIFY_SOCKET`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append every notify datagram waiting on the socket to `into`, one string each (its
    /// `KEY=value` lines), without blocking.
    pub fn recv_into(&self, into: &mut Vec<String>) {
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.socket.recv(&mut buf) {
            into.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

impl Drop for Notify {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// A process the test started, with a notify socket of its own and a log file.
#[derive(Debug)]
pub struct Daemon {
    /// The name used in failure messages (and for the notify socket `<dir>/<name>.notify`).
    pub name: String,
    child: Child,
    notify: Notify,
    /// The file its stdout and stderr are appended to.
    pub log: PathBuf,
    /// Every notify datagram received so far, in order.
    pub messages: Vec<String>,
    exited: Option<ExitStatus>,
}

impl Daemon {
    /// Spawn `cmd` in its own process group from `/` (as under systemd), stdout and stderr
    /// appended to `log`, with `NOTIFY_SOCKET` at `<dir>/<name>.notify` and no inherited
    /// `JOURNAL_STREAM`, `LISTEN_FDS`, `LISTEN_PID` or `WATCHDOG_USEC`.
    ///
    /// # Panics
    /// When the log, the socket or the process cannot be created.
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path, log: &Path) -> Self {
        let notify = Notify::bind(&dir.join(format!("{name}.notify")));
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        cmd.env("NOTIFY_SOCKET", notify.path())
            .env_remove("JOURNAL_STREAM")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("WATCHDOG_USEC")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            // As under systemd; the checkout may be unreadable to an unprivileged daemon.
            .current_dir("/")
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        Self {
            name: name.to_owned(),
            child,
            notify,
            log: log.to_path_buf(),
            messages: Vec::new(),
            exited: None,
        }
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Collect every notify datagram waiting on the socket into [`Self::messages`].
    pub fn drain_notify(&mut self) {
        self.notify.recv_into(&mut self.messages);
    }

    /// How many notify datagrams so far carried the line `line` (e.g. "READY=1").
    pub fn count_notify(&mut self, line: &str) -> usize {
        self.drain_notify();
        self.messages
            .iter()
            .filter(|m| m.lines().any(|l| l == line))
            .count()
    }

    /// Wait until `line` has been seen in at least `n` notify datagrams in total.
    ///
    /// # Panics
    /// When the process exits first or after [`DEADLINE`], showing its log.
    pub fn wait_notify(&mut self, line: &str, n: usize) {
        let what = format!("{line} ({n} times)");
        self.wait_notify_line(&what, |l| l == line, n);
    }

    /// Wait until a notify line starts with `prefix` (e.g. "STATUS=reload failed"); returns
    /// the first such line seen.
    ///
    /// # Panics
    /// When the process exits first or after [`DEADLINE`], showing its log.
    pub fn wait_notify_prefix(&mut self, prefix: &str) -> String {
        let what = format!("a line starting with {prefix}");
        self.wait_notify_line(&what, |l| l.starts_with(prefix), 1);
        self.messages
            .iter()
            .flat_map(|m| m.lines())
            .find(|l| l.starts_with(prefix))
            .unwrap_or_default()
            .to_owned()
    }

    /// Wait until at least `n` notify datagrams hold a line matching `is`.
    fn wait_notify_line(&mut self, what: &str, is: impl Fn(&str) -> bool, n: usize) {
        let until = Instant::now() + DEADLINE;
        loop {
            self.drain_notify();
            let seen = self.messages.iter().filter(|m| m.lines().any(&is)).count();
            if seen >= n {
                return;
            }
            if let Some(st) = self.try_exit() {
                panic!(
                    "{} exited ({st}) before {what}; log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            if Instant::now() > until {
                panic!(
                    "timed out waiting for {} to send {what}; notify so far: {:?}; log:\n{}",
                    self.name,
                    self.messages,
                    self.log_text()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// The counters of the last `STATUS=` the daemon sent (empty before the first).
    pub fn status(&mut self) -> BTreeMap<String, u64> {
        self.drain_notify();
        self.messages
            .iter()
            .rev()
            .find_map(|m| m.lines().find_map(|l| l.strip_prefix("STATUS=")))
            .map(parse_status)
            .unwrap_or_default()
    }

    /// The log so far (empty when it cannot be read).
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until a line of the log holds `needle` (see [`line_has`]); returns the whole log.
    ///
    /// # Panics
    /// After [`DEADLINE`], showing the log.
    pub fn wait_log(&mut self, needle: &str) -> String {
        let until = Instant::now() + DEADLINE;
        loop {
            let text = self.log_text();
            if text.lines().any(|l| line_has(l, needle)) {
                return text;
            }
            if Instant::now() > until {
                panic!(
                    "timed out waiting for {:?} in the {} log:\n{text}",
                    needle, self.name
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// How many log lines hold every one of `needles` (see [`line_has`]).
    pub fn log_count(&self, needles: &[&str]) -> usize {
        self.log_text()
            .lines()
            .filter(|l| needles.iter().all(|n| line_has(l, n)))
            .count()
    }

    /// Wait until at least `count` log lines hold every one of `needles`.
    ///
    /// # Panics
    /// After [`DEADLINE`].
    pub fn wait_log_lines(&self, needles: &[&str], count: usize) {
        wait_until(
            &format!("{count} {} log line(s) with {needles:?}", self.name),
            DEADLINE,
            || self.log_count(needles) >= count,
        );
    }

    /// Exit status if the process has ended (reaped).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// Assert the process is still running.
    ///
    /// # Panics
    /// When it has exited, showing its log.
    pub fn assert_alive(&mut self) {
        if let Some(st) = self.try_exit() {
            panic!("{} died ({st}); log:\n{}", self.name, self.log_text());
        }
    }

    /// Send `sig` to the process (not its group) if it still runs.
    ///
    /// # Panics
    /// When kill(2) fails.
    pub fn signal(&mut self, sig: Signal) {
        if self.alive() {
            kill(Pid::from_raw(self.pid() as i32), sig)
                .unwrap_or_else(|e| panic!("kill -{sig} {}: {e}", self.name));
        }
    }

    /// Wait for the process to exit and reap it.
    ///
    /// # Panics
    /// After [`DEADLINE`].
    pub fn wait_exit(&mut self) -> ExitStatus {
        let name = self.name.clone();
        wait_for(&format!("{name} to exit"), DEADLINE, || self.try_exit())
    }

    /// SIGKILL the whole process group and reap the process.
    pub fn kill_group(&mut self) -> ExitStatus {
        if self.alive() {
            let _ = killpg(Pid::from_raw(self.pid() as i32), Signal::SIGKILL);
        }
        self.wait_exit()
    }

    /// The exit code, or 128 + the signal that ended it (as a shell reports it); -1 for
    /// neither.
    pub fn exit_code(st: ExitStatus) -> i32 {
        st.code()
            .or_else(|| st.signal().map(|s| 128 + s))
            .unwrap_or(-1)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = killpg(Pid::from_raw(self.pid() as i32), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// `program` run through `setpriv` as uid/gid 65534 (nobody:nogroup) with no supplementary
/// groups, an empty bounding set and no-new-privs: an unprivileged local user.
pub fn as_nobody(program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "--bounding-set=-all",
        "--no-new-privs",
    ])
    .arg(program);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::temp_dir;

    #[test]
    fn a_daemon_notifies_logs_and_is_reaped() {
        let d = temp_dir("ruroco-testkit.");
        let log = d.path().join("sh.log");
        let mut cmd = Command::new("python3");
        cmd.args([
            "-c",
            "import os, socket, sys, time\n\
             s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
             s.sendto(b'READY=1\\nSTATUS=received=2 x=y', os.environ['NOTIFY_SOCKET'])\n\
             print('event=started n=1', file=sys.stderr, flush=True)\n\
             time.sleep(60)\n",
        ]);
        let mut daemon = Daemon::spawn("sh", cmd, d.path(), &log);
        daemon.wait_notify("READY=1", 1);
        assert_eq!(
            daemon.wait_notify_prefix("STATUS="),
            "STATUS=received=2 x=y"
        );
        assert_eq!(daemon.status().get("received"), Some(&2));
        assert!(crate::logfmt::log_has(
            &daemon.wait_log("event=started"),
            "n=1"
        ));
        daemon.wait_log_lines(&["event=started", "n=1"], 1);
        assert_eq!(daemon.log_count(&["event=started", "n=2"]), 0);
        daemon.assert_alive();
        let st = daemon.kill_group();
        assert_eq!(Daemon::exit_code(st), 128 + 9);
        assert!(!daemon.alive());
    }

    #[test]
    fn a_daemon_that_exits_before_readiness_fails_the_wait_at_once() {
        let d = temp_dir("ruroco-testkit.");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo gone >&2; exit 3"]);
        let mut daemon = Daemon::spawn("quitter", cmd, d.path(), &d.path().join("q.log"));
        let start = Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            daemon.wait_notify("READY=1", 1)
        }));
        let msg = r.expect_err("an exited daemon is never ready");
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            msg.contains("quitter exited") && msg.contains("gone"),
            "{msg}"
        );
        assert!(start.elapsed() < DEADLINE);
        assert_eq!(Daemon::exit_code(daemon.wait_exit()), 3);
    }
}
