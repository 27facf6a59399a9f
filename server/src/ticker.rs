//! The server's one periodic timer: a kernel `timerfd` that fires once per period, read
//! through the event loop. Everything periodic (the `STATUS=` line, rejection summaries, the
//! watchdog ping) runs off it, so an idle server wakes exactly once per period.
//!
//! Why not `tokio::time::interval`: tokio's hierarchical timer wheel wakes a one-second
//! timer twice (once at the start of its coarse slot, then again at the deadline), which
//! doubles the idle wake-ups; a `timerfd` is one kernel timer and one wake.

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};
use tokio::net::unix::pipe;

/// A periodic timer on `CLOCK_MONOTONIC`. Create it inside a tokio runtime, before the
/// seccomp filter (which allows reading it, not creating or arming one).
pub struct Ticker {
    /// The timerfd, registered for read readiness. tokio's pipe receiver is its one safe
    /// wrapper that registers a caller's descriptor for reading (`AsyncFd` needs `unsafe`
    /// now); a non-blocking timerfd reads like a pipe: 8 bytes per read, `EAGAIN` until the
    /// next expiry.
    fd: pipe::Receiver,
    period: Duration,
}

impl std::fmt::Debug for Ticker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticker")
            .field("period", &self.period)
            .finish()
    }
}

impl Ticker {
    pub fn new(period: Duration) -> io::Result<Self> {
        let period = period.max(Duration::from_millis(1));
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        timer.set(
            Expiration::Interval(TimeSpec::from_duration(period)),
            TimerSetTimeFlags::empty(),
        )?;
        Ok(Self {
            fd: pipe::Receiver::from_owned_fd_unchecked(OwnedFd::from(timer))?,
            period,
        })
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    /// Wait for the next expiry (one wake however many periods passed meanwhile).
    pub async fn tick(&self) -> io::Result<()> {
        // The expiry count (a u64) is not needed: missed periods are not made up.
        let mut expiries = [0u8; 8];
        loop {
            self.fd.readable().await?;
            match self.fd.try_read(&mut expiries) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// The tick period for the status line and an optional watchdog: the status interval, or the
/// watchdog period when that is shorter.
pub fn period(status: Duration, watchdog: Option<Duration>) -> Duration {
    watchdog.map_or(status, |w| w.min(status))
}

/// When a watchdog ping is due, checked on every tick: pings come at most one tick late of
/// their period, and a period shorter than the tick pings on every tick.
#[derive(Debug)]
pub struct Watchdog {
    period: Duration,
    last: Instant,
}

impl Watchdog {
    pub fn new(period: Duration, now: Instant) -> Self {
        Self { period, last: now }
    }

    /// True when a ping is due at `now` for a ticker of period `tick` (and records it).
    pub fn due(&mut self, now: Instant, tick: Duration) -> bool {
        // Half a tick of slack, so a timer that fires a hair early does not skip a period.
        if now.saturating_duration_since(self.last) + tick / 2 >= self.period {
            self.last = now;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_period_is_the_shorter_of_status_and_watchdog() {
        let s = Duration::from_secs(1);
        assert_eq!(period(s, None), s);
        assert_eq!(period(s, Some(Duration::from_secs(15))), s);
        assert_eq!(
            period(s, Some(Duration::from_millis(200))),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn a_15_s_watchdog_on_a_1_s_tick_pings_every_15_ticks() {
        let start = Instant::now();
        let tick = Duration::from_secs(1);
        let mut w = Watchdog::new(Duration::from_secs(15), start);
        let pings: Vec<u64> = (1..=45u64)
            // the kernel timer may fire a little early or late; alternate both
            .map(|i| {
                let jitter = if i % 2 == 0 { 3 } else { 0 };
                (i, start + tick * i as u32 - Duration::from_millis(jitter))
            })
            .filter_map(|(i, now)| w.due(now, tick).then_some(i))
            .collect();
        assert_eq!(pings, vec![15, 30, 45]);
    }

    #[test]
    fn a_watchdog_shorter_than_the_tick_pings_every_tick() {
        let start = Instant::now();
        let tick = Duration::from_millis(200);
        let mut w = Watchdog::new(Duration::from_millis(200), start);
        assert!((1..=10u32).all(|i| w.due(start + tick * i, tick)));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_timer_fires_and_counts_as_one_wake_per_expiry() {
        let start = Instant::now();
        let ticker = Ticker::new(Duration::from_millis(20)).unwrap();
        assert_eq!(ticker.period(), Duration::from_millis(20));
        for _ in 0..3 {
            ticker.tick().await.unwrap();
        }
        // three expiries of a 20 ms timer cannot come sooner than 60 ms
        assert!(start.elapsed() >= Duration::from_millis(60));
    }
}
