//! Batched datagram receive: `recvmmsg` into fixed buffers one byte larger than a valid
//! datagram (so oversize is seen, not truncated into validity), with a `recv_from` fallback.
//! It must never allocate per datagram nor block: it reads only what is already queued.

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrLike, SockaddrStorage, recvfrom, recvmmsg};
use ruroco_proto::DATAGRAM_LEN;
use std::io::IoSliceMut;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

/// Datagrams read per system call.
pub(crate) const BATCH: usize = 64;
/// One byte more than a valid datagram, so an oversized one reads as 95 bytes.
pub(crate) const BUF_LEN: usize = DATAGRAM_LEN + 1;

/// One received datagram: its (possibly truncated) length and source address.
#[derive(Debug, Clone, Copy)]
struct Meta {
    len: usize,
    source: Option<IpAddr>,
}

/// Reusable receive buffers and headers.
#[derive(Debug)]
pub struct Receiver {
    bufs: Box<[[u8; BUF_LEN]; BATCH]>,
    headers: MultiHeaders<SockaddrStorage>,
    meta: Vec<Meta>,
    single: bool,
}

impl Default for Receiver {
    fn default() -> Self {
        Self::new()
    }
}

impl Receiver {
    /// Buffers for one batch of 64 datagrams of up to 95 bytes, allocated once.
    pub fn new() -> Self {
        Self {
            bufs: Box::new([[0u8; BUF_LEN]; BATCH]),
            headers: MultiHeaders::preallocate(BATCH, None),
            meta: Vec::with_capacity(BATCH),
            single: false,
        }
    }

    /// Read up to 64 queued datagrams (recvmmsg(2), non-blocking); returns how many, or
    /// `WouldBlock` when none is queued.
    pub fn recv(&mut self, sock: &impl AsRawFd) -> std::io::Result<usize> {
        self.meta.clear();
        if !self.single {
            match self.recv_many(sock) {
                Err(Errno::ENOSYS) => self.single = true,
                Err(e) => return Err(e.into()),
                Ok(n) => return Ok(n),
            }
        }
        let (len, from) = recvfrom::<SockaddrStorage>(sock.as_raw_fd(), &mut self.bufs[0])?;
        self.meta.push(Meta {
            len: len.min(BUF_LEN),
            source: from.as_ref().and_then(to_ip),
        });
        Ok(1)
    }

    fn recv_many(&mut self, sock: &impl AsRawFd) -> nix::Result<usize> {
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = self
            .bufs
            .iter_mut()
            .map(|b| [IoSliceMut::new(&mut b[..])])
            .collect();
        let res = recvmmsg(
            sock.as_raw_fd(),
            &mut self.headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )?;
        for m in res {
            self.meta.push(Meta {
                len: m.bytes.min(BUF_LEN),
                source: m.address.and_then(|a| to_ip(&a)),
            });
        }
        Ok(self.meta.len())
    }

    /// The datagrams of the last `recv`: bytes (a 95-byte one was oversized) and the source
    /// as the socket reports it (`None` for a non-IP address family).
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], Option<IpAddr>)> {
        self.meta
            .iter()
            .zip(self.bufs.iter())
            .map(|(m, b)| (&b[..m.len], m.source))
    }
}

fn to_ip(a: &SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(IpAddr::V4(v4.ip()));
    }
    if let Some(v6) = a.as_sockaddr_in6() {
        return Some(IpAddr::V6(v6.ip()));
    }
    let _ = a.family();
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn reads_a_batch_with_lengths_and_sources() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for len in [94usize, 10, 200] {
            tx.send_to(&vec![7u8; len], rx.local_addr().unwrap())
                .unwrap();
        }
        let mut r = Receiver::new();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while got.len() < 3 && std::time::Instant::now() < deadline {
            match r.recv(&rx) {
                Ok(_) => got.extend(r.datagrams().map(|(b, s)| (b.len(), s))),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        let src = Some(IpAddr::from([127, 0, 0, 1]));
        assert_eq!(got, vec![(94, src), (10, src), (BUF_LEN, src)]);
    }
}
