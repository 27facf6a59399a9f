//! The acceptance gate (SPEC §3), sans-IO and stateful like ntpd-rs's `Server::handle`: it
//! owns the key table (key id → key and allow-list), the rate limiter and the floor view, and
//! [`Gate::admit`] runs the whole acceptance order on the datagram bytes, the real source and
//! the time. It counts nothing and persists nothing: the server counts each outcome, writes
//! the floors durably and tells the gate how each write ended. It must never accept a counter
//! at or below its key's floor, nor read a clock or a file.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;

use crate::frame::Frame;
use crate::ids::{CmdHash, KeyId};
use crate::ip::{self, Source};
use crate::key::Key;
use crate::protocol::{self, DATAGRAM_LEN, OpenError};
use crate::rate_limit::RateLimiter;

pub use crate::rate_limit::RESERVE;

/// Every reason a datagram is not forwarded, in validation order (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    /// Not exactly [`DATAGRAM_LEN`] bytes.
    BadLength,
    /// The clear key id names no configured key.
    UnknownKey,
    /// The rate limiter refused the AEAD work (`rate_limit` in server.toml).
    RateLimited,
    /// The tag does not verify: forged, changed in transit, or sealed with another key.
    BadTag,
    /// Authentic, but a protocol version this server does not speak.
    BadVersion,
    /// Authenticated, with a counter at or below the key's floor that was not accepted
    /// recently: an old datagram sent again (a captured one, or a client whose counter went
    /// back).
    Replay,
    /// Authenticated, with the counter of a datagram this server accepted: a copy of it, as
    /// a client makes when it sends one counter to several addresses of the server (SPEC §5),
    /// or the network duplicated. Rejected like a replay (nothing runs twice), reported apart.
    Duplicate,
    /// The counter is further ahead of the server's clock than `max_clock_skew`.
    Future,
    /// The counter is older than `max_age`.
    TooOld,
    /// The datagram names a destination (`dst_ip`) that is not one of the server's `ips`.
    WrongDestination,
    /// Strict mode, and the claimed source is not the real one.
    SourceMismatch,
    /// The address the command would get (claimed, else the real source) is unspecified,
    /// broadcast or multicast (`ip::can_be_client`).
    NotAClient,
    /// The key's allow-list (`[keys.NAME] commands`) does not name the command.
    NotAllowed,
}

impl Reject {
    /// Every reason, in validation order; `ALL[r.index()] == r`.
    pub const ALL: [Reject; 13] = [
        Reject::BadLength,
        Reject::UnknownKey,
        Reject::RateLimited,
        Reject::BadTag,
        Reject::BadVersion,
        Reject::Replay,
        Reject::Duplicate,
        Reject::Future,
        Reject::TooOld,
        Reject::WrongDestination,
        Reject::SourceMismatch,
        Reject::NotAClient,
        Reject::NotAllowed,
    ];

    /// The stable name used in logs, `STATUS=` and the fail2ban filter.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::BadLength => "bad_length",
            Reject::UnknownKey => "unknown_key",
            Reject::RateLimited => "rate_limited",
            Reject::BadTag => "bad_tag",
            Reject::BadVersion => "bad_version",
            Reject::Replay => "replay",
            Reject::Duplicate => "duplicate",
            Reject::Future => "future",
            Reject::TooOld => "too_old",
            Reject::WrongDestination => "wrong_destination",
            Reject::SourceMismatch => "source_mismatch",
            Reject::NotAClient => "not_a_client",
            Reject::NotAllowed => "not_allowed",
        }
    }

    /// The position in [`Reject::ALL`] (0–12), for arrays of counters.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether the datagram could only come from an unauthenticated sender or a replayed
    /// capture: failed before authentication (`bad_length`, `unknown_key`, `rate_limited`,
    /// `bad_tag`) or an old authenticated datagram (`replay`). These are the reasons the
    /// shipped fail2ban filter counts. The others passed the tag, so a holder of the key sent
    /// them: a copy of an accepted datagram (`duplicate`) or a client or server
    /// misconfiguration (clock, `ips`, `--permissive`, allow-list, protocol version) that the
    /// log line names; banning would lock out a real client.
    pub fn is_hostile(self) -> bool {
        matches!(
            self,
            Reject::BadLength
                | Reject::UnknownKey
                | Reject::RateLimited
                | Reject::BadTag
                | Reject::Replay
        )
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<OpenError> for Reject {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::BadLength => Reject::BadLength,
            OpenError::BadTag => Reject::BadTag,
            OpenError::BadVersion => Reject::BadVersion,
        }
    }
}

/// Server-wide acceptance rules (from the server config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Addresses this server answers to, canonical (`ip::canonical`); `dst_ip` must be one.
    pub ips: Vec<IpAddr>,
    /// Counters further than this many nanoseconds into the future are rejected.
    pub max_clock_skew_ns: u128,
    /// When set, counters older than now minus this many nanoseconds are rejected.
    pub max_age_ns: Option<u128>,
}

/// The rate limits (server.toml `[rate_limit]`, SECURITY.md "forged junk").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Failed authentications per second each source (and IPv6 /64) may cost.
    pub per_source: f64,
    /// How many failures a source may spend at once.
    pub burst: u32,
    /// AEAD checks per second over all sources (the global bucket holds one second's worth).
    pub global: f64,
    /// Slots of the per-address table (and of the /64 table), fixed for a limiter's life.
    pub sources: usize,
}

/// The two clocks one receive batch is judged at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Wall clock, nanoseconds since the Unix epoch: compared with datagram counters.
    pub unix_ns: u128,
    /// A monotonic clock in nanoseconds (any origin): the rate limiter refills on it, so a
    /// wall-clock step neither empties nor refills a budget.
    pub mono_ns: u64,
}

/// A configured key and the commands it may run.
#[derive(Debug)]
pub struct Permit {
    /// The key; its id is the table's key.
    pub key: Key,
    /// `None`: every command; `Some`: only these hashes.
    pub allowed: Option<Vec<CmdHash>>,
}

/// A datagram that passed every check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The key that authenticated it.
    pub key_id: KeyId,
    /// Its counter, now the key's floor in the gate's view.
    pub counter: u128,
    /// What the commander gets: the command hash and the address it acts for (claimed, else
    /// the real source, canonical).
    pub frame: Frame,
}

/// Replay floors: the highest accepted counter per key id (absent: 0, none accepted).
pub type Floors = BTreeMap<KeyId, u128>;

/// Raise `id`'s floor in `floors` to `counter`; a floor never goes down.
pub fn raise(floors: &mut Floors, id: KeyId, counter: u128) {
    let f = floors.entry(id).or_insert(0);
    *f = (*f).max(counter);
}

/// How many accepted datagrams [`Recent`] remembers.
pub const RECENT_LEN: usize = 1024;

/// The (key id, counter) of the last [`RECENT_LEN`] accepted datagrams, to tell a late copy
/// of an accepted datagram (`duplicate`: a send to another address of this server, or a
/// network duplicate, arriving after a newer datagram of the same key) from an old datagram
/// sent again (`replay`). It never decides acceptance: the floor does. Bounded: 24 bytes an
/// entry; a lookup scans it, and runs only for authenticated datagrams at or below their
/// key's floor.
#[derive(Debug, Default)]
struct Recent {
    accepted: VecDeque<(KeyId, u128)>,
}

impl Recent {
    /// Remember an accepted datagram, forgetting the oldest beyond [`RECENT_LEN`].
    fn remember(&mut self, id: KeyId, counter: u128) {
        if self.accepted.len() == RECENT_LEN {
            self.accepted.pop_front();
        }
        self.accepted.push_back((id, counter));
    }

    /// Whether a datagram of `id` with `counter` is among the remembered ones.
    fn contains(&self, id: &KeyId, counter: u128) -> bool {
        self.accepted.iter().any(|(k, c)| k == id && *c == counter)
    }
}

/// The acceptance state and decision: keys, policy, rate limiter and the floor view.
///
/// The floor view is, per key, the highest counter accepted so far, whether its floor is
/// durable yet or still waiting for a write: a copy of a datagram whose write is in flight is
/// a `duplicate` like one of a datagram already on disk. When a write fails the server
/// restores the view to what is durable plus what still waits ([`Gate::restore_floors`]).
#[derive(Debug)]
pub struct Gate {
    keys: HashMap<KeyId, Permit>,
    policy: Policy,
    limits: Limits,
    limiter: RateLimiter,
    floors: Floors,
    recent: Recent,
}

impl Gate {
    /// A gate over `keys` (a later key with the same id replaces an earlier one), starting
    /// from the durable `floors`.
    pub fn new(
        keys: impl IntoIterator<Item = Permit>,
        policy: Policy,
        limits: Limits,
        floors: Floors,
    ) -> Self {
        Self {
            keys: keys.into_iter().map(|p| (p.key.id(), p)).collect(),
            policy,
            limits,
            limiter: RateLimiter::new(
                limits.per_source,
                limits.burst,
                limits.global,
                limits.sources,
            ),
            floors,
            recent: Recent::default(),
        }
    }

    /// Judge one datagram from `source` (as the socket reported it) at `now`, in SPEC §3
    /// order: length, key id, rate limit, tag, version, replay floor, clock, destination,
    /// source claim, client address, allow-list. An accepted datagram raises its key's floor
    /// in the view at once. Every check after the rate limit that fails is charged to the
    /// source's budget; one that passes costs the source nothing.
    pub fn admit(
        &mut self,
        datagram: &[u8],
        source: impl Into<Source>,
        now: Now,
    ) -> Result<Accepted, Reject> {
        let Ok(datagram) = <&[u8; DATAGRAM_LEN]>::try_from(datagram) else {
            return Err(Reject::BadLength);
        };
        let id = protocol::key_id_exact(datagram);
        let Some(permit) = self.keys.get(&id) else {
            return Err(Reject::UnknownKey);
        };
        let source = source.into().addr();
        // Every AEAD attempt is admitted by the global budget; only one that is not accepted
        // is charged to its source: forged junk cannot lock the real sender out, and a source
        // replaying a captured datagram (it authenticates, then is a `replay`) goes over its
        // budget like junk, so it cannot take the share kept for sources within theirs.
        if !self.limiter.admit(source, now.mono_ns) {
            return Err(Reject::RateLimited);
        }
        let judged = 'judged: {
            let pt = match protocol::open_exact(&permit.key, datagram) {
                Ok(pt) => pt,
                Err(e) => break 'judged Err(Reject::from(e)),
            };
            let floor = self.floors.get(&id).copied().unwrap_or(0);
            if pt.counter <= floor {
                // The floor is an accepted counter (0 is "none accepted").
                let copy =
                    (pt.counter == floor && floor != 0) || self.recent.contains(&id, pt.counter);
                break 'judged Err(if copy {
                    Reject::Duplicate
                } else {
                    Reject::Replay
                });
            }
            let policy = &self.policy;
            if pt.counter > now.unix_ns.saturating_add(policy.max_clock_skew_ns) {
                break 'judged Err(Reject::Future);
            }
            if let Some(max_age) = policy.max_age_ns {
                if pt.counter < now.unix_ns.saturating_sub(max_age) {
                    break 'judged Err(Reject::TooOld);
                }
            }
            if !pt.dst_ip.is_some_and(|dst| policy.ips.contains(&dst)) {
                break 'judged Err(Reject::WrongDestination);
            }
            if let Some(claimed) = pt.src_ip {
                if pt.strict && claimed != source {
                    break 'judged Err(Reject::SourceMismatch);
                }
            }
            let for_ip = pt.src_ip.unwrap_or(source);
            if !ip::can_be_client(for_ip) {
                break 'judged Err(Reject::NotAClient);
            }
            if let Some(list) = &permit.allowed {
                if !list.contains(&pt.cmd) {
                    break 'judged Err(Reject::NotAllowed);
                }
            }
            Ok(Accepted {
                key_id: id,
                counter: pt.counter,
                frame: Frame {
                    cmd: pt.cmd,
                    ip: for_ip,
                },
            })
        };
        match judged {
            Ok(a) => {
                raise(&mut self.floors, id, a.counter);
                self.recent.remember(id, a.counter);
                Ok(a)
            }
            Err(r) => {
                self.limiter.failed(source, now.mono_ns);
                Err(r)
            }
        }
    }

    /// The server address an authenticated datagram names (`dst_ip`), for the log line of a
    /// `wrong_destination`: decrypted again, off the hot path. `None` when it does not open.
    #[cold]
    #[inline(never)]
    pub fn destination(&self, datagram: &[u8]) -> Option<IpAddr> {
        let id = protocol::key_id(datagram).ok()?;
        let permit = self.keys.get(&id)?;
        protocol::open(&permit.key, datagram).ok()?.dst_ip
    }

    /// Replace the key table (a reload). Floors stay, also those of keys no longer present.
    pub fn set_keys(&mut self, keys: impl IntoIterator<Item = Permit>) {
        self.keys = keys.into_iter().map(|p| (p.key.id(), p)).collect();
    }

    /// Replace the acceptance rules (a reload).
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// Replace the rate limits (a reload). Every source keeps what it spent unless `sources`
    /// (the tables' capacity) changed, which takes a new, empty limiter.
    pub fn set_limits(&mut self, limits: Limits) {
        if limits.sources != self.limits.sources {
            self.limiter = RateLimiter::new(
                limits.per_source,
                limits.burst,
                limits.global,
                limits.sources,
            );
        } else if limits != self.limits {
            self.limiter
                .retune(limits.per_source, limits.burst, limits.global);
        }
        self.limits = limits;
    }

    /// A durable write of `floors` succeeded: raise the view to them (it already holds every
    /// counter accepted, so this only ever confirms).
    pub fn raise_floors(&mut self, floors: &Floors) {
        for (id, counter) in floors {
            raise(&mut self.floors, *id, *counter);
        }
    }

    /// A durable write failed: its datagrams are not forwarded, so the view falls back to the
    /// `durable` floors (what is on disk) raised by the `waiting` ones (accepted since, not yet
    /// written); it never goes below `durable`. A client that retries such a datagram after
    /// the disk recovers gets it accepted once. The recently accepted counters stay: they only
    /// name a copy, never accept one.
    pub fn restore_floors(&mut self, durable: &Floors, waiting: &Floors) {
        let mut view = durable.clone();
        for (id, counter) in waiting {
            raise(&mut view, *id, *counter);
        }
        self.floors = view;
    }

    /// The floor of `id` in the view: the highest counter accepted, 0 for none.
    pub fn floor(&self, id: &KeyId) -> u128 {
        self.floors.get(id).copied().unwrap_or(0)
    }

    /// Every floor of the view.
    pub fn floors(&self) -> &Floors {
        &self.floors
    }

    /// How many keys the table holds.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Plaintext, seal};
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    const NOW: u128 = 1_800_000_000_000_000_000;
    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const T: Now = Now {
        unix_ns: NOW,
        mono_ns: 1_000_000_000,
    };
    const ID: KeyId = KeyId([3; 8]);

    fn key() -> Key {
        Key::from_parts(ID, [4; 32])
    }
    fn policy() -> Policy {
        Policy {
            ips: vec![LOCAL],
            max_clock_skew_ns: 3600 * 1_000_000_000,
            max_age_ns: None,
        }
    }
    fn limits() -> Limits {
        Limits {
            per_source: 2.0,
            burst: 5,
            global: 100_000.0,
            sources: 64,
        }
    }
    fn pt() -> Plaintext {
        Plaintext {
            version: 1,
            cmd: CmdHash::of_name("hello"),
            counter: NOW,
            strict: true,
            src_ip: None,
            dst_ip: Some(LOCAL),
        }
    }
    fn gate_with(floor: u128, pol: Policy, allow: Option<&[CmdHash]>) -> Gate {
        let permit = Permit {
            key: key(),
            allowed: allow.map(<[CmdHash]>::to_vec),
        };
        let floors = (floor != 0).then_some((ID, floor)).into_iter().collect();
        Gate::new([permit], pol, limits(), floors)
    }
    fn gate() -> Gate {
        gate_with(0, policy(), None)
    }
    fn sealed(p: &Plaintext) -> [u8; DATAGRAM_LEN] {
        seal(&key(), p, [5; 12])
    }
    /// One datagram of `p` from `src` through a fresh gate.
    fn run(
        p: Plaintext,
        src: IpAddr,
        floor: u128,
        pol: Policy,
        allow: Option<&[CmdHash]>,
    ) -> Result<Accepted, Reject> {
        gate_with(floor, pol, allow).admit(&sealed(&p), src, T)
    }

    #[test]
    fn step_1_a_datagram_of_any_other_length_is_bad_length() {
        let d = sealed(&pt());
        let mut g = gate();
        for len in [0, 8, DATAGRAM_LEN - 1] {
            assert_eq!(g.admit(&d[..len], LOCAL, T), Err(Reject::BadLength));
        }
        let mut long = d.to_vec();
        long.push(0);
        assert_eq!(g.admit(&long, LOCAL, T), Err(Reject::BadLength));
        assert!(g.admit(&d, LOCAL, T).is_ok());
    }

    #[test]
    fn step_2_an_unconfigured_key_id_is_unknown_key() {
        let other = Key::from_parts(KeyId([9; 8]), [4; 32]);
        let d = seal(&other, &pt(), [5; 12]);
        assert_eq!(gate().admit(&d, LOCAL, T), Err(Reject::UnknownKey));
    }

    #[test]
    fn step_3_the_global_budget_limits_aead_work() {
        let mut g = gate();
        g.set_limits(Limits {
            global: 2.0,
            ..limits()
        });
        let mut bad = sealed(&pt());
        bad[40] ^= 1;
        assert_eq!(g.admit(&bad, LOCAL, T), Err(Reject::BadTag));
        assert_eq!(g.admit(&bad, LOCAL, T), Err(Reject::BadTag));
        // The bucket is empty: even a valid datagram is not opened until it refills.
        assert_eq!(g.admit(&sealed(&pt()), LOCAL, T), Err(Reject::RateLimited));
        let later = Now {
            mono_ns: T.mono_ns + 1_000_000_000,
            ..T
        };
        assert!(g.admit(&sealed(&pt()), LOCAL, later).is_ok());
    }

    #[test]
    fn step_4_a_changed_byte_is_bad_tag() {
        let d = sealed(&pt());
        for i in 8..DATAGRAM_LEN {
            let mut bad = d;
            bad[i] ^= 0x80;
            assert_eq!(
                gate().admit(&bad, LOCAL, T),
                Err(Reject::BadTag),
                "byte {i}"
            );
        }
    }

    #[test]
    fn step_5_another_version_is_bad_version() {
        let mut p = pt();
        p.version = 2;
        assert_eq!(run(p, LOCAL, 0, policy(), None), Err(Reject::BadVersion));
    }

    #[test]
    fn step_6_counters_at_or_below_the_floor_are_replays_or_duplicates() {
        assert_eq!(
            run(pt(), LOCAL, NOW + 1, policy(), None),
            Err(Reject::Replay)
        );
        assert!(run(pt(), LOCAL, NOW - 1, policy(), None).is_ok());
        // The floor is the last accepted counter: the same counter again is a copy (another
        // address of this server, or a network duplicate), whatever its destination.
        assert_eq!(
            run(pt(), LOCAL, NOW, policy(), None),
            Err(Reject::Duplicate)
        );
        let mut p = pt();
        p.dst_ip = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(run(p, LOCAL, NOW, policy(), None), Err(Reject::Duplicate));
        // A zero floor means "none accepted": counter 0 is not a copy of anything.
        let mut p = pt();
        p.counter = 0;
        assert_eq!(run(p, LOCAL, 0, policy(), None), Err(Reject::Replay));
    }

    #[test]
    fn an_accepted_datagram_raises_the_floor_and_a_late_copy_is_a_duplicate() {
        let mut g = gate();
        let first = sealed(&pt());
        assert_eq!(g.admit(&first, LOCAL, T).map(|a| a.counter), Ok(NOW));
        assert_eq!(g.floor(&ID), NOW);
        assert_eq!(g.admit(&first, LOCAL, T), Err(Reject::Duplicate));
        let mut newer = pt();
        newer.counter = NOW + 9;
        assert!(g.admit(&sealed(&newer), LOCAL, T).is_ok());
        // Below the floor now, but accepted recently: still a copy, not a replay.
        assert_eq!(g.admit(&first, LOCAL, T), Err(Reject::Duplicate));
        let mut never = pt();
        never.counter = NOW - 1;
        assert_eq!(g.admit(&sealed(&never), LOCAL, T), Err(Reject::Replay));
    }

    #[test]
    fn a_failed_write_restores_the_floors_and_a_retry_is_accepted_once() {
        let mut g = gate_with(7, policy(), None);
        let d = sealed(&pt());
        assert!(g.admit(&d, LOCAL, T).is_ok());
        g.restore_floors(&[(ID, 7)].into_iter().collect(), &Floors::new());
        assert_eq!(g.floor(&ID), 7);
        assert!(g.admit(&d, LOCAL, T).is_ok(), "the retry after the failure");
        g.raise_floors(&[(ID, NOW)].into_iter().collect());
        assert_eq!(g.admit(&d, LOCAL, T), Err(Reject::Duplicate));
        g.raise_floors(&[(ID, 3)].into_iter().collect());
        assert_eq!(g.floor(&ID), NOW, "a floor never goes down by raising");
    }

    #[test]
    fn a_restored_view_is_the_durable_floors_raised_by_the_waiting_ones_never_lower() {
        let other = KeyId([9; 8]);
        let mut g = gate_with(0, policy(), None);
        let durable: Floors = [(ID, 10)].into_iter().collect();
        let waiting: Floors = [(ID, 5), (other, 3)].into_iter().collect();
        g.restore_floors(&durable, &waiting);
        assert_eq!((g.floor(&ID), g.floor(&other)), (10, 3));
        let waiting: Floors = [(ID, 12)].into_iter().collect();
        g.restore_floors(&durable, &waiting);
        assert_eq!(g.floor(&ID), 12);
    }

    #[test]
    fn step_7_the_clock_rules() {
        let mut p = pt();
        p.counter = NOW + 3601 * 1_000_000_000;
        assert_eq!(run(p, LOCAL, 0, policy(), None), Err(Reject::Future));
        p.counter = NOW + 3599 * 1_000_000_000;
        assert!(run(p, LOCAL, 0, policy(), None).is_ok());
        let mut pol = policy();
        pol.max_age_ns = Some(60 * 1_000_000_000);
        let mut p = pt();
        p.counter = NOW - 61 * 1_000_000_000;
        assert_eq!(run(p, LOCAL, 0, pol.clone(), None), Err(Reject::TooOld));
        p.counter = NOW - 59 * 1_000_000_000;
        assert!(run(p, LOCAL, 0, pol, None).is_ok());
    }

    #[test]
    fn step_8_the_destination_must_be_one_of_ips() {
        let elsewhere = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let mut p = pt();
        p.dst_ip = Some(elsewhere);
        let mut g = gate();
        let d = sealed(&p);
        assert_eq!(g.admit(&d, LOCAL, T), Err(Reject::WrongDestination));
        assert_eq!(g.destination(&d), Some(elsewhere), "named for the log");
        p.dst_ip = None;
        assert_eq!(
            run(p, LOCAL, 0, policy(), None),
            Err(Reject::WrongDestination)
        );
    }

    #[test]
    fn step_9_a_strict_claim_must_be_the_real_source() {
        let claimed = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
        let mut p = pt();
        p.src_ip = Some(claimed);
        assert_eq!(
            run(p, LOCAL, 0, policy(), None),
            Err(Reject::SourceMismatch)
        );
        p.strict = false;
        assert_eq!(
            run(p, LOCAL, 0, policy(), None).map(|a| a.frame.ip),
            Ok(claimed)
        );
        // A dual-stack socket reports IPv4 peers mapped: the same address.
        p.strict = true;
        p.src_ip = Some(LOCAL);
        let mapped = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
        assert_eq!(
            run(p, mapped, 0, policy(), None).map(|a| a.frame.ip),
            Ok(LOCAL)
        );
        assert_eq!(
            run(pt(), mapped, 0, policy(), None).map(|a| a.frame.ip),
            Ok(LOCAL),
            "an unclaimed datagram acts for the canonical real source"
        );
    }

    #[test]
    fn claims_that_cannot_be_a_client_are_rejected() {
        for bad in [
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "239.255.255.250",
            // (`::` is sixteen zero bytes on the wire: "none claimed", the real source.)
            "ff02::1",
            "::ffff:0.0.0.0",
            "::ffff:224.0.0.1",
        ] {
            let claimed: IpAddr = bad.parse().unwrap();
            let mut p = pt();
            p.strict = false;
            p.src_ip = Some(ip::canonical(claimed));
            assert_eq!(
                run(p, LOCAL, 0, policy(), None),
                Err(Reject::NotAClient),
                "{bad}"
            );
        }
        // An unclaimed datagram from such a source (never delivered by a sane network) too.
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        assert_eq!(run(pt(), any, 0, policy(), None), Err(Reject::NotAClient));
        // Ordinary unicast claims still pass, including the network's own edge cases.
        for good in ["192.0.2.255", "10.0.0.0", "2001:db8::"] {
            let mut p = pt();
            p.strict = false;
            p.src_ip = Some(good.parse().unwrap());
            assert!(run(p, LOCAL, 0, policy(), None).is_ok(), "{good}");
        }
    }

    #[test]
    fn step_11_the_allow_list() {
        let other = [CmdHash::of_name("other")];
        assert_eq!(
            run(pt(), LOCAL, 0, policy(), Some(&other)),
            Err(Reject::NotAllowed)
        );
        let ok = [CmdHash::of_name("hello")];
        assert!(run(pt(), LOCAL, 0, policy(), Some(&ok)).is_ok());
        // A reload replaces the table and the allow-lists with it.
        let mut g = gate_with(0, policy(), Some(&other));
        g.set_keys([Permit {
            key: key(),
            allowed: Some(ok.to_vec()),
        }]);
        assert!(g.admit(&sealed(&pt()), LOCAL, T).is_ok());
        g.set_keys([]);
        assert_eq!(g.key_count(), 0);
        assert_eq!(g.admit(&sealed(&pt()), LOCAL, T), Err(Reject::UnknownKey));
    }

    #[test]
    fn failures_after_the_rate_limit_are_charged_to_the_source_successes_are_not() {
        // With a global bucket of 10 (reserve 5), a source over its own budget is checked
        // only while more than 5 tokens remain; one within its budget gets the rest.
        let tight = Limits {
            per_source: 0.001,
            burst: 1,
            global: 10.0,
            sources: 64,
        };
        let mut g = Gate::new(
            [Permit {
                key: key(),
                allowed: None,
            }],
            policy(),
            tight,
            Floors::new(),
        );
        let mut p = pt();
        for _ in 0..4 {
            p.counter += 1;
            assert!(g.admit(&sealed(&p), LOCAL, T).is_ok());
        }
        // Four successes cost 4 global tokens and nothing of the source's own budget; a
        // failure takes a fifth and empties the source's budget, so its next datagram may
        // only use tokens above the reserve, and there are none left.
        let mut bad = sealed(&p);
        bad[50] ^= 1;
        assert_eq!(g.admit(&bad, LOCAL, T), Err(Reject::BadTag));
        p.counter += 1;
        assert_eq!(g.admit(&sealed(&p), LOCAL, T), Err(Reject::RateLimited));
        let other = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        p.counter += 1;
        assert!(g.admit(&sealed(&p), other, T).is_ok(), "within its budget");
    }

    #[test]
    fn set_policy_applies_to_the_next_datagram() {
        let mut g = gate();
        g.set_policy(Policy {
            ips: vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))],
            ..policy()
        });
        assert_eq!(
            g.admit(&sealed(&pt()), LOCAL, T),
            Err(Reject::WrongDestination)
        );
    }

    #[test]
    fn recent_remembers_a_bounded_number_of_accepted_counters() {
        let mut r = Recent::default();
        let a = KeyId([1; 8]);
        let b = KeyId([2; 8]);
        r.remember(a, 10);
        assert!(r.contains(&a, 10));
        assert!(!r.contains(&b, 10) && !r.contains(&a, 11));
        for c in 0..RECENT_LEN as u128 {
            r.remember(b, 100 + c);
        }
        assert!(!r.contains(&a, 10), "the oldest is forgotten");
        assert!(r.contains(&b, 100) && r.accepted.len() == RECENT_LEN);
    }

    #[test]
    fn names_are_distinct() {
        let mut names: Vec<_> = Reject::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Reject::ALL.len());
        for (i, r) in Reject::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        /// No input panics the gate, and random bytes never pass it, even under the known id.
        #[test]
        fn random_bytes_never_pass(tail in proptest::collection::vec(any::<u8>(), 0..=120), known in any::<bool>()) {
            let mut g = gate();
            let mut d = if known { ID.0.to_vec() } else { Vec::new() };
            d.extend_from_slice(&tail);
            prop_assert!(g.admit(&d, LOCAL, T).is_err());
        }

        /// Whatever the floor, a datagram is accepted exactly when its counter is above it,
        /// and then never again.
        #[test]
        fn accepted_once_exactly_above_the_floor(floor in any::<u128>(), delta in -3i64..3) {
            let mut p = pt();
            p.counter = NOW.saturating_add_signed(i128::from(delta));
            let mut g = gate_with(floor, policy(), None);
            let d = sealed(&p);
            let first = g.admit(&d, LOCAL, T);
            prop_assert_eq!(first.is_ok(), p.counter > floor);
            prop_assert!(g.admit(&d, LOCAL, T).is_err());
        }
    }
}
