//! Token-bucket budgets that bound AEAD work: per source address (IPv6 sources also per /64)
//! and over all sources, in fixed-capacity tables. O(1) per datagram: a keyed hash picks one
//! small set of `WAYS` slots; a new source replaces the least recently seen slot of its set.
//! It must never allocate after construction nor scan a whole table, whatever the number of
//! distinct sources, and never let forged junk from an address lock out that address's
//! datagrams that authenticate.
//!
//! How the budgets work (SECURITY.md, "forged junk"):
//! - every datagram that reaches the AEAD check takes one token of the **global** bucket, so
//!   the global rate bounds all AEAD work;
//! - a source's own buckets are charged only for **failed** authentications
//!   ([`RateLimiter::failed`]); a datagram that authenticates costs its source nothing;
//! - a source whose bucket (or whose /64's bucket) is empty is *over budget*: its datagrams
//!   are still checked, but only while the global bucket holds more than its reserve
//!   (`RESERVE` of the burst). Junk forged from a client's address therefore never stops the
//!   client's own datagrams while the server has AEAD capacity to spare, and a flood from
//!   over-budget sources can never take the reserve that sources within budget still use.

use std::hash::BuildHasher;
use std::net::IpAddr;

/// Slots per set: a source competes only with the few others hashed to its set.
pub const WAYS: usize = 4;
/// Share of the global burst kept for sources within their own budget: over-budget sources
/// are checked only while the global bucket holds more than this.
pub const RESERVE: f64 = 0.5;

/// A token bucket refilled continuously.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last_ns: u64,
}

impl Bucket {
    /// Take one token if more than `keep` would remain above zero.
    fn take_above(&mut self, now_ns: u64, keep: f64) -> bool {
        refill(
            &mut self.tokens,
            &mut self.last_ns,
            now_ns,
            self.rate,
            self.burst,
        );
        if self.tokens >= 1.0 + keep {
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

/// One fixed-capacity, set-associative table of per-key buckets, one array per field. Each
/// array is allocated zeroed (`vec![0; n]` takes zeroed pages from the allocator), so a slot
/// costs resident memory only once a source touched it: an idle server with 65,536 slots per
/// table keeps almost none of their 3 MiB resident.
#[derive(Debug)]
struct Table {
    /// The source address (IPv4 mapped) or /64 prefix as 16 bytes; meaningful only when `used`.
    keys: Box<[u128]>,
    tokens: Box<[f64]>,
    /// Last refill, nanoseconds on the limiter's clock.
    last_ns: Box<[u64]>,
    used: Box<[bool]>,
    sets: usize,
    hasher: std::collections::hash_map::RandomState,
}

impl Table {
    fn new(capacity: usize) -> Self {
        let sets = capacity.div_ceil(WAYS).max(1);
        let n = sets * WAYS;
        Self {
            keys: vec![0; n].into_boxed_slice(),
            tokens: vec![0.0; n].into_boxed_slice(),
            last_ns: vec![0; n].into_boxed_slice(),
            used: vec![false; n].into_boxed_slice(),
            sets,
            // Keyed with per-process random keys, so a remote sender cannot aim many
            // sources at one set to evict a legitimate client.
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys.len()
    }

    /// The refilled tokens of `key` (taking over the least recently seen slot of its set for
    /// a new key, which starts with a full bucket).
    fn tokens(&mut self, key: u128, now_ns: u64, rate: f64, burst: f64) -> &mut f64 {
        let set = (self.hasher.hash_one(key) % self.sets as u64) as usize;
        let start = set * WAYS;
        let mut victim = start;
        let mut found = None;
        for i in start..start + WAYS {
            if self.used[i] && self.keys[i] == key {
                found = Some(i);
                break;
            }
            if !self.used[i] || (self.used[victim] && self.last_ns[i] < self.last_ns[victim]) {
                victim = i;
            }
        }
        let i = match found {
            Some(i) => i,
            None => {
                self.keys[victim] = key;
                self.tokens[victim] = burst;
                self.last_ns[victim] = now_ns;
                self.used[victim] = true;
                victim
            }
        };
        refill(
            &mut self.tokens[i],
            &mut self.last_ns[i],
            now_ns,
            rate,
            burst,
        );
        // Touch even when empty, so an active source stays "recently seen".
        self.last_ns[i] = self.last_ns[i].max(now_ns);
        &mut self.tokens[i]
    }
}

/// The keys a source is counted under: its address, and for IPv6 (not IPv4-mapped) its /64.
fn keys(ip: IpAddr) -> (u128, Option<u128>) {
    let addr = u128::from_be_bytes(crate::ip::encode(Some(ip.to_canonical())));
    match ip.to_canonical() {
        IpAddr::V4(_) => (addr, None),
        IpAddr::V6(_) => (addr, Some(addr & !u128::from(u64::MAX))),
    }
}

/// Per-source (and per-/64) and global budgets.
#[derive(Debug)]
pub struct RateLimiter {
    addresses: Table,
    prefixes: Table,
    per_source: f64,
    burst: f64,
    global: Bucket,
}

impl RateLimiter {
    /// `sources` is the capacity of each table (addresses, and IPv6 /64 prefixes; rounded up
    /// to a multiple of `WAYS`); the global bucket holds one second's worth of datagrams.
    pub fn new(per_source: f64, burst: u32, global: f64, sources: usize) -> Self {
        Self {
            addresses: Table::new(sources),
            prefixes: Table::new(sources),
            per_source,
            burst: f64::from(burst),
            global: Bucket {
                rate: global,
                burst: global.max(1.0),
                tokens: global.max(1.0),
                last_ns: 0,
            },
        }
    }

    /// New rates for a reload, keeping every source's bucket: what a source has spent stays
    /// spent (a bucket above the new `burst` is cut to it at its next refill), so a reload
    /// never hands an attacker a fresh burst. The tables' capacity (`sources`) cannot change
    /// here; a new capacity takes a new limiter.
    pub fn retune(&mut self, per_source: f64, burst: u32, global: f64) {
        self.per_source = per_source;
        self.burst = f64::from(burst);
        self.global.rate = global;
        self.global.burst = global.max(1.0);
        self.global.tokens = self.global.tokens.min(self.global.burst);
    }

    /// Number of address slots (fixed for the limiter's life; the /64 table is as large).
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.addresses.len()
    }

    /// Is `ip` within its own budget (and its /64's) at `now_ns`?
    fn within_budget(&mut self, ip: IpAddr, now_ns: u64) -> bool {
        let (rate, burst) = (self.per_source, self.burst);
        let (addr, prefix) = keys(ip);
        let own = *self.addresses.tokens(addr, now_ns, rate, burst) >= 1.0;
        let net = prefix.is_none_or(|p| *self.prefixes.tokens(p, now_ns, rate, burst) >= 1.0);
        own && net
    }

    /// May a datagram from `ip` be authenticated at `now_ns` (monotonic nanoseconds)? Takes
    /// one global token when it may. A source over its own budget gets one only while the
    /// global bucket holds more than its reserve.
    pub fn admit(&mut self, ip: IpAddr, now_ns: u64) -> bool {
        let keep = if self.within_budget(ip, now_ns) {
            0.0
        } else {
            self.global.burst * RESERVE
        };
        self.global.take_above(now_ns, keep)
    }

    /// A datagram from `ip` failed authentication: charge it to the source and its /64.
    pub fn failed(&mut self, ip: IpAddr, now_ns: u64) {
        let (rate, burst) = (self.per_source, self.burst);
        let (addr, prefix) = keys(ip);
        let t = self.addresses.tokens(addr, now_ns, rate, burst);
        *t = (*t - 1.0).max(0.0);
        if let Some(p) = prefix {
            let t = self.prefixes.tokens(p, now_ns, rate, burst);
            *t = (*t - 1.0).max(0.0);
        }
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

    fn v6(n: u128) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from(n))
    }

    /// What the server does: admit, then charge a failed authentication.
    fn junk(rl: &mut RateLimiter, ip: IpAddr, now: u64) -> bool {
        let admitted = rl.admit(ip, now);
        if admitted {
            rl.failed(ip, now);
        }
        admitted
    }

    #[test]
    fn failures_empty_the_source_budget_and_it_refills() {
        let mut rl = RateLimiter::new(2.0, 5, 1000.0, 64);
        let a = v4(1);
        for _ in 0..5 {
            assert!(rl.within_budget(a, SEC));
            assert!(junk(&mut rl, a, SEC));
        }
        assert!(!rl.within_budget(a, SEC), "five failures use the burst");
        assert!(rl.within_budget(v4(2), SEC), "another source is unaffected");
        assert!(!rl.within_budget(a, SEC + SEC / 4));
        assert!(
            rl.within_budget(a, SEC + SEC / 2),
            "2/s refills one in 0.5 s"
        );
    }

    #[test]
    fn success_costs_the_source_nothing() {
        let mut rl = RateLimiter::new(2.0, 5, 1000.0, 64);
        let a = v4(1);
        for _ in 0..100 {
            assert!(rl.admit(a, SEC));
        }
        assert!(rl.within_budget(a, SEC));
    }

    #[test]
    fn forged_junk_never_stops_a_source_while_the_global_budget_has_room() {
        // The attack: junk with a client's key id forged from its address at
        // 100/s, the client's valid datagram in between. Every one is still authenticated.
        let mut rl = RateLimiter::new(2.0, 5, 100_000.0, 64);
        let client = v4(7);
        let mut t = SEC;
        for _ in 0..20 {
            for _ in 0..5 {
                t += SEC / 100;
                assert!(junk(&mut rl, client, t), "junk is checked (and fails)");
            }
            assert!(!rl.within_budget(client, t), "the junk emptied the budget");
            assert!(rl.admit(client, t), "the client's datagram is checked");
        }
    }

    #[test]
    fn over_budget_sources_cannot_take_the_reserve() {
        let mut rl = RateLimiter::new(2.0, 5, 100.0, 64);
        let attacker = v4(1);
        let passed = (0..1000).filter(|_| junk(&mut rl, attacker, SEC)).count();
        // 5 within budget, then over budget down to the reserve (half of 100).
        assert_eq!(passed, 50);
        let honest = (0..100).filter(|i| rl.admit(v4(100 + i), SEC)).count();
        assert_eq!(honest, 50, "sources within budget use the rest");
    }

    #[test]
    fn global_limit_caps_all_sources() {
        let mut rl = RateLimiter::new(100.0, 100, 10.0, 1024);
        let passed = (0..100).filter(|i| rl.admit(v4(*i), SEC)).count();
        assert_eq!(passed, 10);
        assert!(rl.admit(v4(500), 2 * SEC));
    }

    #[test]
    fn one_ipv6_64_shares_one_budget() {
        let mut rl = RateLimiter::new(2.0, 5, 100_000.0, 1 << 16);
        let net: u128 = 0x2001_0db8_0000_0001 << 64;
        // Many addresses of one /64, each failing once: after five the /64 is over budget.
        for i in 0..5u128 {
            assert!(rl.within_budget(v6(net | (i + 1)), SEC));
            assert!(junk(&mut rl, v6(net | (i + 1)), SEC));
        }
        assert!(
            !rl.within_budget(v6(net | 0xffff), SEC),
            "a fresh address of that /64"
        );
        assert!(
            rl.within_budget(v6((net + (1 << 64)) | 1), SEC),
            "the next /64"
        );
        // 300,000 addresses of one /64 cannot take the reserve kept for the others.
        let flood = (0..300_000u128)
            .filter(|i| junk(&mut rl, v6(net | (i + 1000)), SEC))
            .count();
        assert!(flood <= 50_000, "{flood}");
        let honest = v6(0x2001_0db8_0000_0002 << 64 | 1);
        assert!(
            rl.admit(honest, SEC),
            "a client elsewhere still gets checked"
        );
    }

    #[test]
    fn a_million_sources_do_not_grow_the_table() {
        let mut rl = RateLimiter::new(2.0, 5, 1e12, 1024);
        let cap = rl.capacity();
        assert_eq!(cap, 1024);
        for i in 0..1_000_000u32 {
            assert!(junk(&mut rl, v4(i), SEC + u64::from(i)), "fresh source {i}");
        }
        assert_eq!(rl.capacity(), cap);
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!((0..10).filter(|_| junk(&mut rl, v6, 3 * SEC)).count(), 10);
        assert!(!rl.within_budget(v6, 3 * SEC));
    }

    #[test]
    fn mapped_and_plain_v4_are_one_source() {
        let mut rl = RateLimiter::new(1.0, 1, 1000.0, 64);
        assert!(junk(&mut rl, v4(7), SEC));
        let mapped = IpAddr::V6(Ipv4Addr::from(7u32).to_ipv6_mapped());
        assert!(!rl.within_budget(mapped, SEC));
    }

    #[test]
    fn retune_keeps_what_a_source_spent() {
        let mut rl = RateLimiter::new(2.0, 5, 1000.0, 64);
        let a = v4(1);
        for _ in 0..5 {
            assert!(junk(&mut rl, a, SEC));
        }
        rl.retune(1.0, 10, 1000.0);
        assert!(
            !rl.within_budget(a, SEC),
            "still over budget after the retune"
        );
        assert!(
            !rl.within_budget(a, SEC + SEC / 2),
            "the new, slower rate applies"
        );
        assert!(rl.within_budget(a, 2 * SEC));
        rl.retune(1.0, 10, 3.0);
        let passed = (0..10).filter(|i| rl.admit(v4(100 + i), 2 * SEC)).count();
        assert_eq!(passed, 3, "the new global burst");
    }
}
