//! The 16-byte address encoding shared by datagrams and frames: IPv6, IPv4 as IPv4-mapped
//! IPv6, all zeros for "none". Decoding always yields the canonical form (IPv4 stays IPv4).

use std::net::{IpAddr, Ipv6Addr};

/// Encode an optional address; `None` is sixteen zero bytes.
pub fn encode(ip: Option<IpAddr>) -> [u8; 16] {
    match ip {
        None => [0; 16],
        Some(IpAddr::V4(v4)) => v4.to_ipv6_mapped().octets(),
        Some(IpAddr::V6(v6)) => v6.octets(),
    }
}

/// Decode sixteen bytes; all zeros is `None`, an IPv4-mapped address becomes IPv4.
pub fn decode(bytes: [u8; 16]) -> Option<IpAddr> {
    if bytes == [0; 16] {
        return None;
    }
    Some(canonical(IpAddr::V6(Ipv6Addr::from(bytes))))
}

/// Can `ip` be a client's address? Not the unspecified address (`0.0.0.0`, `::`), the IPv4
/// broadcast address or a multicast address (224.0.0.0/4, ff00::/8): a command given one of
/// these as `RUROCO_IP` would act for nobody, or for everybody (`nft add element … { 0.0.0.0 }`
/// is one typo from opening everything). Expects the canonical form (see `canonical`).
pub fn can_be_client(ip: IpAddr) -> bool {
    !(ip.is_unspecified() || ip.is_multicast() || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()))
}

/// IPv4-mapped IPv6 (as a dual-stack socket reports IPv4 peers) becomes plain IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// A datagram's source address in canonical form ([`canonical`]), made once per datagram: the
/// gate's source checks and rate limit, the logs and the fail2ban address all read this one
/// value. `From<IpAddr>` canonicalizes; a `Source` passed on is never converted again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    /// The canonical address.
    pub fn addr(self) -> IpAddr {
        self.0
    }
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Self {
        Self(canonical(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn addresses_that_cannot_be_a_client() {
        for bad in [
            "0.0.0.0",
            "::",
            "255.255.255.255",
            "224.0.0.1",
            "239.1.2.3",
            "ff02::1",
        ] {
            assert!(!can_be_client(bad.parse().unwrap()), "{bad}");
        }
        for good in ["192.0.2.1", "10.0.0.255", "2001:db8::1", "::1", "127.0.0.1"] {
            assert!(can_be_client(good.parse().unwrap()), "{good}");
        }
    }

    #[test]
    fn round_trips() {
        for ip in [
            None,
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1))),
            Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9))),
            Some(
                "2001:db8::1"
                    .parse()
                    .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            ),
        ] {
            assert_eq!(decode(encode(ip)), ip);
        }
    }

    #[test]
    fn ipv4_is_mapped() {
        let b = encode(Some(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4))));
        assert_eq!(&b[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(&b[12..], &[1, 2, 3, 4]);
    }

    #[test]
    fn a_source_is_canonical_once_made() {
        let mapped = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
        let source = Source::from(mapped);
        assert_eq!(source.addr(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(Source::from(v6).addr(), v6);
    }
}
