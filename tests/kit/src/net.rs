//! Ports and senders on loopback: a UDP port free on both address families, a free TCP port,
//! one datagram from a chosen source. It must never send anywhere but the address it is
//! given.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};

/// A UDP port free on both the IPv4 and the IPv6 wildcard (so on loopback too) right now.
///
/// # Panics
/// When no such port is found in 100 tries.
pub fn free_udp_port() -> u16 {
    for _ in 0..100 {
        let s = UdpSocket::bind("[::]:0").expect("bind [::]:0");
        let port = s.local_addr().unwrap().port();
        drop(s);
        if UdpSocket::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    panic!("no free UDP port");
}

/// A TCP port free on IPv4 loopback right now (for a listener a test command starts).
///
/// # Panics
/// When binding 127.0.0.1:0 fails.
pub fn free_tcp_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// The unspecified address of the same family as `ip` (a "bind anywhere" source).
pub fn unspecified_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// Send `bytes` as one datagram from `from` (a port the kernel picks) to `to`.
///
/// # Panics
/// When binding `from` or sending fails.
pub fn send_from(from: IpAddr, to: SocketAddr, bytes: &[u8]) {
    let sock = UdpSocket::bind(SocketAddr::new(from, 0))
        .unwrap_or_else(|e| panic!("bind sender {from}: {e}"));
    sock.send_to(bytes, to)
        .unwrap_or_else(|e| panic!("send {from} -> {to}: {e}"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_free_port_binds_and_a_sent_datagram_arrives_from_the_source() {
        let port = free_udp_port();
        let r = UdpSocket::bind(("127.0.0.1", port)).unwrap();
        r.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        send_from(lo, r.local_addr().unwrap(), b"hi");
        let mut b = [0u8; 8];
        let (n, src) = r.recv_from(&mut b).unwrap();
        assert_eq!((&b[..n], src.ip()), (&b"hi"[..], lo));
        assert!(unspecified_like(lo).is_unspecified() && unspecified_like(lo).is_ipv4());
        assert_ne!(free_tcp_port(), 0);
    }
}
