//! Waiting for a condition: poll it every [`POLL`] until it holds, fail the test after a
//! deadline naming what was awaited. It must never wait without a deadline.

use std::time::{Duration, Instant};

/// How long any wait for a condition may take before the test fails (generous: CI machines
/// are slow and shared).
pub const DEADLINE: Duration = Duration::from_secs(20);
/// How often a condition is polled.
pub const POLL: Duration = Duration::from_millis(20);

/// Poll `f` every [`POLL`] until it returns `Some`, and return that value.
///
/// # Panics
/// After `deadline`, with a message naming `what`.
pub fn wait_for<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > until {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
}

/// Poll `cond` every [`POLL`] until it holds.
///
/// # Panics
/// After `deadline`, with a message naming `what`.
pub fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    wait_for(what, deadline, || cond().then_some(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_for_returns_the_first_value_the_condition_yields() {
        let mut calls = 0;
        let v = wait_for("the third call", DEADLINE, || {
            calls += 1;
            (calls == 3).then_some(calls * 10)
        });
        assert_eq!((v, calls), (30, 3));
    }

    #[test]
    fn wait_for_times_out_naming_what_it_waited_for() {
        let start = Instant::now();
        let r = std::panic::catch_unwind(|| {
            wait_for::<()>("godot", Duration::from_millis(50), || None);
        });
        let msg = r.expect_err("a condition that never holds must fail the test");
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("waiting for godot"), "{msg}");
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert!(
            start.elapsed() < DEADLINE,
            "waited the default deadline instead"
        );
    }

    #[test]
    fn wait_until_returns_once_the_condition_holds() {
        let mut n = 0;
        wait_until("n to reach 2", DEADLINE, || {
            n += 1;
            n >= 2
        });
        assert_eq!(n, 2);
    }
}
