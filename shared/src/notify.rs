//! sd_notify messages for both daemons: READY, RELOADING (with MONOTONIC_USEC), STOPPING,
//! STATUS and WATCHDOG. A missing NOTIFY_SOCKET makes every call a no-op; failures to
//! notify are logged, never fatal (the daemon's work matters more than its status line).

use sd_notify::NotifyState;
use std::time::Duration;

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(event = "notify_failed", error = %e);
    }
}

pub fn ready() {
    send(&[NotifyState::Ready]);
}

pub fn ready_with_status(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1` must carry `MONOTONIC_USEC` for `Type=notify-reload`; harmless otherwise.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// Half the watchdog interval systemd asked for, if it asked (`WATCHDOG_USEC` for our pid).
pub fn watchdog_period() -> Option<Duration> {
    let mut usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some(Duration::from_micros(usec / 2))
    } else {
        None
    }
}
