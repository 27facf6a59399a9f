//! Throttled warnings for events the server's uid can cause at any rate (unknown, malformed,
//! refused frames): the first of each reason per interval is logged in full, the rest are only
//! counted and reported as one `suppressed` line when the interval ends.
//! It must never log once per frame under a flood, nor grow with the number of frames.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Length of one throttling window.
pub(crate) const INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Window {
    started: Option<Instant>,
    suppressed: u64,
}

/// Per-reason windows (the reasons are a fixed set of static names, so the map is bounded).
#[derive(Debug, Default)]
pub(crate) struct Quiet {
    windows: Mutex<BTreeMap<&'static str, Window>>,
    suppressed: Notify,
}

impl Quiet {
    /// Should this event of `reason` be logged in full? Otherwise it is counted.
    pub(crate) fn allow(&self, reason: &'static str) -> bool {
        let now = Instant::now();
        let mut w = match self.windows.lock() {
            Ok(w) => w,
            Err(p) => p.into_inner(),
        };
        let win = w.entry(reason).or_default();
        match win.started {
            Some(s) if now.duration_since(s) < INTERVAL => {
                win.suppressed += 1;
                if win.suppressed == 1 {
                    self.suppressed.notify_one();
                }
                false
            }
            _ => {
                win.started = Some(now);
                true
            }
        }
    }

    /// Report and reset the counts of windows that ended.
    fn flush(&self) {
        let now = Instant::now();
        let mut w = match self.windows.lock() {
            Ok(w) => w,
            Err(p) => p.into_inner(),
        };
        for (reason, win) in w.iter_mut() {
            let ended = win
                .started
                .is_none_or(|s| now.duration_since(s) >= INTERVAL);
            if ended && win.suppressed > 0 {
                tracing::warn!(
                    event = "suppressed",
                    reason = *reason,
                    count = win.suppressed,
                    interval_s = INTERVAL.as_secs(),
                    "more frames like the one logged were not logged one by one"
                );
                win.suppressed = 0;
                win.started = None;
            }
        }
    }

    /// Emit `suppressed` lines as windows end; sleeps while nothing is suppressed.
    pub(crate) async fn run(&self) {
        loop {
            self.suppressed.notified().await;
            tokio::time::sleep(INTERVAL).await;
            self.flush();
        }
    }

    /// Counted (not logged) events of `reason` in the current window.
    #[cfg(test)]
    fn suppressed(&self, reason: &'static str) -> u64 {
        match self.windows.lock() {
            Ok(w) => w.get(reason).map_or(0, |x| x.suppressed),
            Err(p) => p.into_inner().get(reason).map_or(0, |x| x.suppressed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_of_each_reason_logs_the_rest_count() {
        let q = Quiet::default();
        assert!(q.allow("unknown_command"));
        assert!(q.allow("malformed"));
        for _ in 0..1000 {
            assert!(!q.allow("unknown_command"));
        }
        assert_eq!(q.suppressed("unknown_command"), 1000);
        assert_eq!(q.suppressed("malformed"), 0);
        q.flush();
        assert_eq!(q.suppressed("unknown_command"), 1000, "window not over");
    }
}
