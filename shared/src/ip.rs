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

/// IPv4-mapped IPv6 (as a dual-stack socket reports IPv4 peers) becomes plain IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

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
}
