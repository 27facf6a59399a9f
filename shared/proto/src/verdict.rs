//! The sans-IO acceptance decision: datagram bytes + source + now + key + replay floor +
//! policy → accepted frame or a rejection reason. Owns no state and does no I/O; the
//! server applies the rate limit between `key_id` and `judge` and persists floors itself.

use std::net::IpAddr;

use crate::frame::Frame;
use crate::ids::{CmdHash, KeyId};
use crate::ip;
use crate::key::Key;
use crate::protocol::{self, OpenError};

/// Every reason a datagram is not forwarded, in validation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    BadLength,
    UnknownKey,
    RateLimited,
    BadTag,
    BadVersion,
    /// Authenticated, with a counter at or below the key's floor that was not accepted
    /// recently: an old datagram sent again (a captured one, or a client whose counter went
    /// back).
    Replay,
    /// Authenticated, with the counter of a datagram this server accepted: a copy of it, as
    /// a client makes when it sends one counter to several addresses of the server (SPEC §5),
    /// or the network duplicated. Rejected like a replay (nothing runs twice), reported apart.
    Duplicate,
    Future,
    TooOld,
    WrongDestination,
    SourceMismatch,
    /// The address the command would get (claimed, else the real source) is unspecified,
    /// broadcast or multicast (`ip::can_be_client`).
    NotAClient,
    NotAllowed,
}

impl Reject {
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
    /// Addresses this server answers to; `dst_ip` must be one of them.
    pub ips: Vec<IpAddr>,
    /// Counters further than this into the future are rejected.
    pub max_clock_skew_ns: u128,
    /// When set, counters older than now minus this are rejected.
    pub max_age_ns: Option<u128>,
}

/// A datagram that passed every check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub key_id: KeyId,
    pub counter: u128,
    pub frame: Frame,
}

/// Steps 1–2 of validation: length, then the clear key id.
pub fn key_id(datagram: &[u8]) -> Result<KeyId, Reject> {
    protocol::key_id(datagram).map_err(Reject::from)
}

/// Steps 4–8: decrypt, version, replay floor, clock, destination, source (a claim that does
/// not match in strict mode, then an address that cannot be a client's), allow-list.
/// `floor` is the highest counter already accepted for this key (0 for none).
/// `allowed` is the key's allow-list, `None` meaning every command.
/// A counter at or below the floor is `Duplicate` when it equals a non-zero floor (the floor
/// is an accepted counter), else `Replay`; see [`judge_recent`] to recognise older copies.
pub fn judge(
    key: &Key,
    allowed: Option<&[CmdHash]>,
    datagram: &[u8],
    source: IpAddr,
    now_ns: u128,
    floor: u128,
    policy: &Policy,
) -> Result<Accepted, Reject> {
    judge_recent(
        key,
        allowed,
        datagram,
        source,
        now_ns,
        floor,
        |_| false,
        policy,
    )
}

/// [`judge`], where `accepted(counter)` tells whether this key recently had a datagram with
/// that counter accepted: a counter at or below the floor for which it is true is also a
/// `Duplicate` (a copy that arrived after a newer datagram of the same key), not a `Replay`.
/// It only changes the reason: such a datagram is rejected all the same.
#[allow(clippy::too_many_arguments)]
pub fn judge_recent(
    key: &Key,
    allowed: Option<&[CmdHash]>,
    datagram: &[u8],
    source: IpAddr,
    now_ns: u128,
    floor: u128,
    accepted: impl Fn(u128) -> bool,
    policy: &Policy,
) -> Result<Accepted, Reject> {
    let pt = protocol::open(key, datagram)?;
    if pt.counter <= floor {
        let copy = (pt.counter == floor && floor != 0) || accepted(pt.counter);
        return Err(if copy {
            Reject::Duplicate
        } else {
            Reject::Replay
        });
    }
    if pt.counter > now_ns.saturating_add(policy.max_clock_skew_ns) {
        return Err(Reject::Future);
    }
    if let Some(max_age) = policy.max_age_ns {
        if pt.counter < now_ns.saturating_sub(max_age) {
            return Err(Reject::TooOld);
        }
    }
    match pt.dst_ip {
        Some(dst) if policy.ips.contains(&dst) => {}
        _ => return Err(Reject::WrongDestination),
    }
    let source = ip::canonical(source);
    if let Some(claimed) = pt.src_ip {
        if pt.strict && claimed != source {
            return Err(Reject::SourceMismatch);
        }
    }
    let for_ip = pt.src_ip.unwrap_or(source);
    if !ip::can_be_client(for_ip) {
        return Err(Reject::NotAClient);
    }
    if let Some(list) = allowed {
        if !list.contains(&pt.cmd) {
            return Err(Reject::NotAllowed);
        }
    }
    Ok(Accepted {
        key_id: key.id(),
        counter: pt.counter,
        frame: Frame {
            cmd: pt.cmd,
            ip: for_ip,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Plaintext, seal};
    use std::net::Ipv4Addr;

    const NOW: u128 = 1_800_000_000_000_000_000;
    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn key() -> Key {
        Key::from_parts(KeyId([3; 8]), [4; 32])
    }
    fn policy() -> Policy {
        Policy {
            ips: vec![LOCAL],
            max_clock_skew_ns: 3600 * 1_000_000_000,
            max_age_ns: None,
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
    fn run(
        p: Plaintext,
        src: IpAddr,
        floor: u128,
        pol: &Policy,
        allow: Option<&[CmdHash]>,
    ) -> Result<Accepted, Reject> {
        let d = seal(&key(), &p, [5; 12]);
        judge(&key(), allow, &d, src, NOW, floor, pol)
    }

    #[test]
    fn accepts_and_uses_real_source_when_none_claimed() {
        let a = run(pt(), LOCAL, 0, &policy(), None);
        assert_eq!(a.map(|a| (a.frame.ip, a.counter)), Ok((LOCAL, NOW)));
    }

    #[test]
    fn v4_mapped_source_matches_claim() {
        let mut p = pt();
        p.src_ip = Some(LOCAL);
        let mapped = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
        assert!(run(p, mapped, 0, &policy(), None).is_ok());
    }

    #[test]
    fn replay_and_clock_rules() {
        assert_eq!(
            run(pt(), LOCAL, NOW + 1, &policy(), None),
            Err(Reject::Replay)
        );
        assert!(run(pt(), LOCAL, NOW - 1, &policy(), None).is_ok());
        let mut p = pt();
        p.counter = NOW + 3601 * 1_000_000_000;
        assert_eq!(run(p, LOCAL, 0, &policy(), None), Err(Reject::Future));
        let mut pol = policy();
        pol.max_age_ns = Some(60 * 1_000_000_000);
        let mut p = pt();
        p.counter = NOW - 61 * 1_000_000_000;
        assert_eq!(run(p, LOCAL, 0, &pol, None), Err(Reject::TooOld));
        p.counter = NOW - 59 * 1_000_000_000;
        assert!(run(p, LOCAL, 0, &pol, None).is_ok());
    }

    #[test]
    fn a_copy_of_an_accepted_counter_is_a_duplicate_not_a_replay() {
        // The floor is the last accepted counter: the same counter again is a copy (another
        // address of this server, or a network duplicate).
        assert_eq!(
            run(pt(), LOCAL, NOW, &policy(), None),
            Err(Reject::Duplicate)
        );
        // Whatever its destination: the copy to the server's other address.
        let mut p = pt();
        p.dst_ip = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(run(p, LOCAL, NOW, &policy(), None), Err(Reject::Duplicate));
        // An older counter is a replay, unless it was accepted recently.
        let d = seal(&key(), &pt(), [5; 12]);
        let older = |seen: u128| {
            judge_recent(
                &key(),
                None,
                &d,
                LOCAL,
                NOW,
                NOW + 9,
                |c| c == seen,
                &policy(),
            )
        };
        assert_eq!(older(NOW), Err(Reject::Duplicate));
        assert_eq!(older(NOW - 1), Err(Reject::Replay));
        // A zero floor means "none accepted": counter 0 is not a copy of anything.
        let mut p = pt();
        p.counter = 0;
        assert_eq!(run(p, LOCAL, 0, &policy(), None), Err(Reject::Replay));
    }

    #[test]
    fn destination_source_and_allow_list() {
        let mut p = pt();
        p.dst_ip = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(
            run(p, LOCAL, 0, &policy(), None),
            Err(Reject::WrongDestination)
        );
        p.dst_ip = None;
        assert_eq!(
            run(p, LOCAL, 0, &policy(), None),
            Err(Reject::WrongDestination)
        );

        let claimed = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
        let mut p = pt();
        p.src_ip = Some(claimed);
        assert_eq!(
            run(p, LOCAL, 0, &policy(), None),
            Err(Reject::SourceMismatch)
        );
        p.strict = false;
        assert_eq!(
            run(p, LOCAL, 0, &policy(), None).map(|a| a.frame.ip),
            Ok(claimed)
        );

        let other = [CmdHash::of_name("other")];
        assert_eq!(
            run(pt(), LOCAL, 0, &policy(), Some(&other)),
            Err(Reject::NotAllowed)
        );
        let ok = [CmdHash::of_name("hello")];
        assert!(run(pt(), LOCAL, 0, &policy(), Some(&ok)).is_ok());
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
                run(p, LOCAL, 0, &policy(), None),
                Err(Reject::NotAClient),
                "{bad}"
            );
        }
        // An unclaimed datagram from such a source (never delivered by a sane network) too.
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        assert_eq!(run(pt(), any, 0, &policy(), None), Err(Reject::NotAClient));
        // Ordinary unicast claims still pass, including the network's own edge cases.
        for good in ["192.0.2.255", "10.0.0.0", "2001:db8::"] {
            let mut p = pt();
            p.strict = false;
            p.src_ip = Some(good.parse().unwrap());
            assert!(run(p, LOCAL, 0, &policy(), None).is_ok(), "{good}");
        }
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
}
