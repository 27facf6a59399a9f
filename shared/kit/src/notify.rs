//! sd_notify messages for both daemons: READY, RELOADING (with MONOTONIC_USEC), STOPPING,
//! STATUS and WATCHDOG. A missing NOTIFY_SOCKET makes every call a no-op; failures to
//! notify are logged, never fatal (the daemon's work matters more than its status line).
//! It must never block the daemon: the notify socket's queue is short (10 datagrams by
//! default) and a service manager that does not read it must not stall the receive loop.
//! That is why messages go out through a non-blocking sendto(2) (`MSG_DONTWAIT`) here, not
//! `sd_notify::notify` (a blocking send); the `sd-notify` crate supplies `MONOTONIC_USEC` and
//! sd_watchdog_enabled(3).

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, sendto, socket};
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

/// Lifecycle messages (READY, RELOADING, STOPPING) are retried this often when the queue is
/// full, 10 ms apart: the service manager acts on them. STATUS and WATCHDOG are sent once
/// (a newer one follows).
const LIFECYCLE_ATTEMPTS: u32 = 50;
const RETRY_PAUSE: Duration = Duration::from_millis(10);

fn address(path: &std::ffi::OsStr) -> Result<UnixAddr, Errno> {
    let bytes = path.as_bytes();
    match bytes.strip_prefix(b"@") {
        Some(name) => UnixAddr::new_abstract(name),
        None => UnixAddr::new(bytes),
    }
}

fn send(message: &str, attempts: u32) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        deliver(&path, message, attempts);
    }
}

/// One datagram to the notify socket at `path` (`@name` for the abstract namespace).
fn deliver(path: &std::ffi::OsStr, message: &str, attempts: u32) {
    let result = address(path).and_then(|addr| {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        let mut left = attempts.max(1);
        loop {
            match sendto(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                message.as_bytes(),
                &addr,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            ) {
                Err(Errno::EAGAIN) if left > 1 => {
                    left -= 1;
                    std::thread::sleep(RETRY_PAUSE);
                }
                other => return other.map(|_| ()),
            }
        }
    });
    if let Err(e) = result {
        tracing::warn!(event = "notify_failed", error = %e, message = message.lines().next().unwrap_or(""));
    }
}

/// `MONOTONIC_USEC=<now>`, as systemd wants it beside `RELOADING=1`.
fn monotonic_usec_line() -> Option<String> {
    sd_notify::NotifyState::monotonic_usec_now()
        .ok()
        .map(|s| s.to_string())
}

/// `READY=1`: start-up is complete (sd_notify(3)); retried while the queue is full.
pub fn ready() {
    send("READY=1\n", LIFECYCLE_ATTEMPTS);
}

/// `READY=1` with `STATUS=<status>` in the same datagram, so the first status line shown is
/// never missing; `status` must be one line. Retried while the queue is full.
pub fn ready_with_status(status: &str) {
    send(
        &format!("READY=1\nSTATUS={}\n", one_line(status)),
        LIFECYCLE_ATTEMPTS,
    );
}

/// `RELOADING=1` with `MONOTONIC_USEC=<CLOCK_MONOTONIC in µs>` (sd_notify(3)): a reload has
/// begun; `Type=notify-reload` needs the timestamp, other types ignore it. Retried while the
/// queue is full; `READY=1` ends the reload.
pub fn reloading() {
    match monotonic_usec_line() {
        Some(line) => send(&format!("RELOADING=1\n{line}\n"), LIFECYCLE_ATTEMPTS),
        None => send("RELOADING=1\n", LIFECYCLE_ATTEMPTS),
    }
}

/// `STOPPING=1`: shutdown has begun (sd_notify(3)); retried while the queue is full.
pub fn stopping() {
    send("STOPPING=1\n", LIFECYCLE_ATTEMPTS);
}

/// `STATUS=<text>`: the one-line status `systemctl status` shows (sd_notify(3)); `text`
/// must be one line. Sent once: dropped when the queue is full, the next one replaces it.
pub fn status(text: &str) {
    send(&format!("STATUS={}\n", one_line(text)), 1);
}

/// `text` with every control character (a newline above all: it would start another
/// `VAR=value` assignment in the datagram, e.g. `STOPPING=1`) written as its escape (`\n`).
fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect::<String>()
            .into()
    } else {
        text.into()
    }
}

/// `WATCHDOG=1`: the keep-alive for `WatchdogSec=` (sd_notify(3), sd_watchdog_enabled(3)).
/// Sent once: dropped when the queue is full, the next one follows within the period.
pub fn watchdog() {
    send("WATCHDOG=1\n", 1);
}

/// Half the watchdog interval systemd asked for, if it asked: `WATCHDOG_USEC` (µs) when
/// `WATCHDOG_PID` is this process (sd_watchdog_enabled(3)); `None` when not asked or
/// the variables are malformed. The variables are left in the environment.
pub fn watchdog_period() -> Option<Duration> {
    let mut usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some(Duration::from_micros(usec / 2))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn a_status_text_cannot_add_an_assignment() {
        assert_eq!(
            one_line("reload failed: a\nSTOPPING=1"),
            "reload failed: a\\nSTOPPING=1"
        );
        assert_eq!(one_line("plain, one line"), "plain, one line");
    }

    #[test]
    fn messages_arrive_and_a_full_queue_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let to = path.as_os_str();
        deliver(to, "READY=1\nSTATUS=x=1\n", LIFECYCLE_ATTEMPTS);
        let mut buf = [0u8; 256];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=x=1\n");
        // Nobody reads: far more messages than the queue holds, and none of them blocks
        // (a blocking send would hang this test on the eleventh).
        for i in 0..1000 {
            deliver(to, &format!("STATUS=n={i}\n"), 1);
        }
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STATUS=n=0\n");
    }

    #[test]
    fn abstract_and_path_addresses() {
        let a = address(std::ffi::OsStr::new("@ruroco-test")).unwrap();
        assert_eq!(a.as_abstract(), Some(&b"ruroco-test"[..]));
        let p = address(std::ffi::OsStr::new("/run/systemd/notify")).unwrap();
        assert_eq!(p.path(), Some(std::path::Path::new("/run/systemd/notify")));
    }

    #[test]
    fn monotonic_clock_reads() {
        let line = monotonic_usec_line().unwrap();
        let usec: u64 = line
            .strip_prefix("MONOTONIC_USEC=")
            .unwrap()
            .parse()
            .unwrap();
        assert!(usec > 0);
    }
}
