//! The clock of hand-made datagrams and log checks: the current time in ns (what the
//! protocol's counters are made of) and a strictly increasing counter. It must never hand out
//! the same counter twice within one process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch (0 for a clock before 1970).
pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A counter for a hand-made datagram: now in ns, strictly above every one handed out before
/// in this process (the same rule as the client's).
pub fn fresh_counter() -> u128 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    // ns since the epoch fit in u64 until 2554.
    let now = now_ns() as u64;
    let mut prev = LAST.load(Ordering::SeqCst);
    loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange(prev, next, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return u128::from(next),
            Err(p) => prev = p,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_strictly_increase_and_follow_the_clock() {
        let before = now_ns();
        let a = fresh_counter();
        let b = fresh_counter();
        assert!(a >= before && b > a, "{before} {a} {b}");
    }
}
