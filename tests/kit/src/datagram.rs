//! Clocks and hand-made datagrams: the current time in ns (what the protocol's counters are
//! made of), a strictly increasing counter, a plaintext and its sealed 94-byte datagram
//! (SPEC "Datagram"). It must never reuse a counter within one process.

use ruroco_proto::protocol::{self, Plaintext};
use ruroco_proto::{CmdHash, DATAGRAM_LEN, Key};
use std::net::IpAddr;
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

/// A plaintext of the current protocol version for `cmd`, with a [`fresh_counter`], strict,
/// no source claimed, addressed to `dst`.
pub fn plaintext(cmd: &str, dst: IpAddr) -> Plaintext {
    Plaintext {
        version: protocol::VERSION,
        cmd: CmdHash::of_name(cmd),
        counter: fresh_counter(),
        strict: true,
        src_ip: None,
        dst_ip: Some(dst),
    }
}

/// `pt` sealed with `key` under a random nonce: one whole datagram.
///
/// # Panics
/// When the OS random generator fails.
pub fn seal(key: &Key, pt: &Plaintext) -> [u8; DATAGRAM_LEN] {
    protocol::seal_random(key, pt).expect("OS random generator")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn counters_strictly_increase_and_follow_the_clock() {
        let before = now_ns();
        let a = fresh_counter();
        let b = fresh_counter();
        assert!(a >= before && b > a, "{before} {a} {b}");
    }

    #[test]
    fn a_sealed_plaintext_opens_to_itself() {
        let key = Key::generate().unwrap();
        let pt = plaintext("hello", IpAddr::V4(Ipv4Addr::LOCALHOST));
        let d = seal(&key, &pt);
        assert_eq!(protocol::open(&key, &d).unwrap(), pt);
        assert_eq!(pt.cmd, CmdHash::of_name("hello"));
    }
}
