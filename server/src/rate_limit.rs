//! Token-bucket rate limits per source IP and over all sources, in a fixed-capacity table.
//! O(1) per datagram: a keyed hash picks one small set of `WAYS` slots; a new source replaces
//! the least recently seen slot of its set. It must never allocate after construction nor scan
//! the whole table, whatever the number of distinct sources.

use std::hash::BuildHasher;
use std::net::IpAddr;

/// Slots per set: a source competes only with the few others hashed to its set.
pub const WAYS: usize = 4;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// The source address as 16 bytes (IPv4 mapped); meaningful only when `used`.
    ip: u128,
    tokens: f64,
    /// Last refill, nanoseconds on the limiter's clock.
    last_ns: u64,
    used: bool,
}

/// A token bucket refilled continuously.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last_ns: u64,
}

impl Bucket {
    fn take(&mut self, now_ns: u64) -> bool {
        refill(
            &mut self.tokens,
            &mut self.last_ns,
            now_ns,
            self.rate,
            self.burst,
        );
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn refill(tokens: &mut f64, last_ns: &mut u64, now_ns: u64, rate: f64, burst: f64) {
    let elapsed = now_ns.saturating_sub(*last_ns);
    if elapsed > 0 {
        *tokens = (*tokens + elapsed as f64 * 1e-9 * rate).min(burst);
        *last_ns = now_ns;
    }
}

/// Per-source and global limits.
#[derive(Debug)]
pub struct RateLimiter {
    slots: Box<[Slot]>,
    sets: usize,
    per_source: f64,
    burst: f64,
    global: Bucket,
    hasher: std::collections::hash_map::RandomState,
}

impl RateLimiter {
    /// `sources` is the table capacity (rounded up to a multiple of `WAYS`); the global
    /// bucket holds one second's worth of datagrams.
    pub fn new(per_source: f64, burst: u32, global: f64, sources: usize) -> Self {
        let sets = sources.div_ceil(WAYS).max(1);
        Self {
            slots: vec![Slot::default(); sets * WAYS].into_boxed_slice(),
            sets,
            per_source,
            burst: f64::from(burst),
            global: Bucket {
                rate: global,
                burst: global.max(1.0),
                tokens: global.max(1.0),
                last_ns: 0,
            },
            // Keyed with per-process random keys, so a remote sender cannot aim many
            // sources at one set to evict a legitimate client.
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Number of slots (fixed for the limiter's life).
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// May a datagram from `ip` pass at `now_ns` (monotonic nanoseconds)?
    pub fn allow(&mut self, ip: IpAddr, now_ns: u64) -> bool {
        let key = u128::from_be_bytes(ruroco_shared::ip::encode(Some(ip)));
        let set = (self.hasher.hash_one(key) % self.sets as u64) as usize;
        let start = set * WAYS;
        let (per_source, burst) = (self.per_source, self.burst);
        let ways = &mut self.slots[start..start + WAYS];
        let mut victim = 0;
        let mut found = None;
        for (i, s) in ways.iter().enumerate() {
            if s.used && s.ip == key {
                found = Some(i);
                break;
            }
            let v = &ways[victim];
            if !s.used || (v.used && s.last_ns < v.last_ns) {
                victim = i;
            }
        }
        let idx = match found {
            Some(i) => i,
            None => {
                ways[victim] = Slot {
                    ip: key,
                    tokens: burst,
                    last_ns: now_ns,
                    used: true,
                };
                victim
            }
        };
        let s = &mut ways[idx];
        refill(&mut s.tokens, &mut s.last_ns, now_ns, per_source, burst);
        // Touch even when empty, so an active source stays "recently seen".
        s.last_ns = s.last_ns.max(now_ns);
        if s.tokens < 1.0 {
            return false;
        }
        s.tokens -= 1.0;
        self.global.take(now_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const SEC: u64 = 1_000_000_000;

    fn v4(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn per_source_burst_then_refill() {
        let mut rl = RateLimiter::new(2.0, 5, 1000.0, 64);
        let a = v4(1);
        let passed = (0..10).filter(|_| rl.allow(a, SEC)).count();
        assert_eq!(passed, 5);
        assert!(rl.allow(v4(2), SEC), "another source is unaffected");
        assert!(!rl.allow(a, SEC + SEC / 4));
        assert!(rl.allow(a, SEC + SEC / 2), "2/s refills one token in 0.5 s");
        assert!(!rl.allow(a, SEC + SEC / 2));
    }

    #[test]
    fn global_limit_caps_all_sources() {
        let mut rl = RateLimiter::new(100.0, 100, 10.0, 1024);
        let passed = (0..100).filter(|i| rl.allow(v4(*i), SEC)).count();
        assert_eq!(passed, 10);
        assert!(rl.allow(v4(500), 2 * SEC));
    }

    #[test]
    fn a_million_sources_do_not_grow_the_table() {
        let mut rl = RateLimiter::new(2.0, 5, 1e12, 1024);
        let cap = rl.capacity();
        assert_eq!(cap, 1024);
        for i in 0..1_000_000u32 {
            assert!(rl.allow(v4(i), SEC + u64::from(i)), "fresh source {i}");
        }
        assert_eq!(rl.capacity(), cap);
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!((0..10).filter(|_| rl.allow(v6, 3 * SEC)).count(), 5);
    }

    #[test]
    fn mapped_and_plain_v4_are_one_source() {
        let mut rl = RateLimiter::new(1.0, 1, 1000.0, 64);
        assert!(rl.allow(v4(7), SEC));
        let mapped = IpAddr::V6(Ipv4Addr::from(7u32).to_ipv6_mapped());
        assert!(!rl.allow(mapped, SEC));
    }
}
