//! Load generator of the benchmark: UDP floods sent with `sendmmsg` + UDP GSO (one system
//! call carries thousands of datagrams), from one source or from many distinct 127/8 sources
//! (one `sendmsg` per source with `IP_PKTINFO` choosing the source address) or IPv6 sources of
//! one /64 (`IPV6_PKTINFO` on an `IP_FREEBIND` socket; the caller routes that /64 to `lo`), at
//! full speed or paced to a rate. It must never send anywhere but the loopback target it is
//! given.

use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrIn, SockaddrIn6, sendmmsg, sendmsg, setsockopt,
    sockopt,
};
use std::io::IoSlice;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Datagrams per GSO message (the kernel accepts up to 64 segments on every supported kernel).
pub const GSO_SEGMENTS: usize = 64;
/// GSO messages per `sendmmsg` call.
pub const MESSAGES_PER_CALL: usize = 16;

/// What a flood sends.
#[derive(Debug, Clone)]
pub struct Flood {
    /// Payloads, cycled; all the same length (GSO cuts the buffer at that length).
    pub payloads: Vec<Vec<u8>>,
    /// Where to (a loopback socket of this machine).
    pub dest: SocketAddr,
    /// Source addresses: one (bound) or many (`IP_PKTINFO` per `sendmsg`).
    pub sources: Sources,
    /// Stop after this long...
    pub duration: Duration,
    /// ...but not before this many datagrams (so every distinct source gets its turn).
    pub min_datagrams: u64,
    /// Datagrams per second, or `None` for as fast as the sender can.
    pub rate: Option<f64>,
}

#[derive(Debug, Clone, Copy)]
pub enum Sources {
    One(Ipv4Addr),
    /// `count` consecutive addresses from `first`, each sending `per_source` datagrams in one
    /// GSO message before the next source takes over.
    Many {
        first: Ipv4Addr,
        count: u32,
        per_source: usize,
    },
    /// The same from `count` consecutive IPv6 addresses from `first` (the caller keeps them
    /// inside one /64 routed to `lo`); the destination must be IPv6.
    Many6 {
        first: Ipv6Addr,
        count: u32,
        per_source: usize,
    },
}

/// What was sent and how long it took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sent {
    pub datagrams: u64,
    pub elapsed: Duration,
    pub errors: u64,
    /// Distinct sources used (1 for a single source).
    pub sources: u64,
}

impl Sent {
    pub fn rate(&self) -> f64 {
        self.datagrams as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Run `flood` on the calling thread until its duration (and minimum count) are reached or
/// `stop` is set.
pub fn run(flood: &Flood, stop: &AtomicBool) -> Result<Sent, String> {
    match flood.sources {
        Sources::One(src) => run_one(flood, src, stop),
        Sources::Many {
            first,
            count,
            per_source,
        } => run_many(flood, first, count, per_source, stop),
        Sources::Many6 {
            first,
            count,
            per_source,
        } => run_many6(flood, first, count, per_source, stop),
    }
}

/// Run `flood` on `threads` threads at once (the rate, if any, is split between them).
pub fn run_parallel(flood: &Flood, threads: usize) -> Result<Sent, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let threads = threads.max(1);
    let mut per = flood.clone();
    per.rate = flood.rate.map(|r| r / threads as f64);
    per.min_datagrams = flood.min_datagrams.div_ceil(threads as u64);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let f = per.clone();
            let s = stop.clone();
            std::thread::spawn(move || run(&f, &s))
        })
        .collect();
    let mut total = Sent::default();
    for h in handles {
        let s = h
            .join()
            .map_err(|_| "a sender thread panicked".to_owned())??;
        total.datagrams += s.datagrams;
        total.errors += s.errors;
        total.elapsed = total.elapsed.max(s.elapsed);
        total.sources = total.sources.max(s.sources);
    }
    Ok(total)
}

fn len_of(flood: &Flood) -> Result<usize, String> {
    let len = flood.payloads.first().map(Vec::len).unwrap_or(0);
    if len == 0 || flood.payloads.iter().any(|p| p.len() != len) {
        return Err("flood payloads must be non-empty and of one length".to_owned());
    }
    Ok(len)
}

/// Lay `segments` payloads (cycling from `*next`) one after the other into `buf`.
fn fill(buf: &mut Vec<u8>, payloads: &[Vec<u8>], next: &mut usize, segments: usize) {
    buf.clear();
    for _ in 0..segments {
        buf.extend_from_slice(&payloads[*next % payloads.len()]);
        *next = (*next + 1) % payloads.len();
    }
}

/// Sleep until `sent` datagrams are due at `rate` since `t0`.
fn pace(t0: Instant, sent: u64, rate: Option<f64>) {
    if let Some(rate) = rate {
        let due = t0 + Duration::from_secs_f64(sent as f64 / rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
}

fn done(flood: &Flood, t0: Instant, sent: u64, stop: &AtomicBool) -> bool {
    stop.load(Ordering::Relaxed) || (t0.elapsed() >= flood.duration && sent >= flood.min_datagrams)
}

fn run_one(flood: &Flood, src: Ipv4Addr, stop: &AtomicBool) -> Result<Sent, String> {
    let len = len_of(flood)?;
    let sock = UdpSocket::bind((src, 0)).map_err(|e| format!("bind sender {src}: {e}"))?;
    sock.connect(flood.dest)
        .map_err(|e| format!("connect sender to {}: {e}", flood.dest))?;
    let gso = u16::try_from(len).map_err(|_| "payload too long".to_owned())?;
    let use_gso = setsockopt(&sock, sockopt::UdpGsoSegment, &i32::from(gso)).is_ok();
    let (segments, messages) = if use_gso {
        (GSO_SEGMENTS, MESSAGES_PER_CALL)
    } else {
        (1, GSO_SEGMENTS)
    };
    // A paced flood sends one message per call so the pacing stays smooth.
    let messages = if flood.rate.is_some() { 1 } else { messages };
    let mut bufs: Vec<Vec<u8>> = vec![Vec::with_capacity(segments * len); messages];
    let mut next = 0usize;
    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(messages, None);
    let addrs: Vec<Option<SockaddrIn>> = vec![None; messages];
    let mut sent = 0u64;
    let mut errors = 0u64;
    let t0 = Instant::now();
    while !done(flood, t0, sent, stop) {
        pace(t0, sent, flood.rate);
        for b in bufs.iter_mut() {
            fill(b, &flood.payloads, &mut next, segments);
        }
        let slices: Vec<[IoSlice<'_>; 1]> = bufs.iter().map(|b| [IoSlice::new(b)]).collect();
        match sendmmsg(
            sock.as_raw_fd(),
            &mut headers,
            &slices,
            &addrs,
            [],
            MsgFlags::empty(),
        ) {
            Ok(res) => sent += res.count() as u64 * segments as u64,
            Err(_) => errors += 1,
        }
    }
    Ok(Sent {
        datagrams: sent,
        elapsed: t0.elapsed(),
        errors,
        sources: 1,
    })
}

fn run_many(
    flood: &Flood,
    first: Ipv4Addr,
    count: u32,
    per_source: usize,
    stop: &AtomicBool,
) -> Result<Sent, String> {
    let len = len_of(flood)?;
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .map_err(|e| format!("bind multi-source sender: {e}"))?;
    let gso = u16::try_from(len).map_err(|_| "payload too long".to_owned())?;
    let SocketAddr::V4(dest) = flood.dest else {
        return Err(format!(
            "{}: the 127/8 sources need an IPv4 target",
            flood.dest
        ));
    };
    let dest = SockaddrIn::from(dest);
    let base = u32::from(first);
    let per_source = per_source.clamp(1, GSO_SEGMENTS);
    let mut buf = Vec::with_capacity(per_source * len);
    let mut next = 0usize;
    let mut sent = 0u64;
    let mut errors = 0u64;
    let mut calls = 0u64;
    let t0 = Instant::now();
    while !done(flood, t0, sent, stop) {
        pace(t0, sent, flood.rate);
        let src = base.wrapping_add((calls % u64::from(count.max(1))) as u32);
        calls += 1;
        let info = libc::in_pktinfo {
            ipi_ifindex: 0,
            ipi_spec_dst: libc::in_addr {
                s_addr: src.to_be(),
            },
            ipi_addr: libc::in_addr { s_addr: 0 },
        };
        fill(&mut buf, &flood.payloads, &mut next, per_source);
        let r = send_from_source(
            sock.as_raw_fd(),
            &buf,
            ControlMessage::Ipv4PacketInfo(&info),
            &gso,
            per_source,
            &dest,
        );
        match r {
            Ok(_) => sent += per_source as u64,
            Err(_) => errors += 1,
        }
    }
    Ok(Sent {
        datagrams: sent,
        elapsed: t0.elapsed(),
        errors,
        sources: calls.min(u64::from(count)),
    })
}

/// One `sendmsg` of `buf` with `info` (the source's packet info), and UDP GSO when the call
/// carries more than one datagram.
fn send_from_source<S: nix::sys::socket::SockaddrLike>(
    fd: std::os::fd::RawFd,
    buf: &[u8],
    info: ControlMessage<'_>,
    gso: &u16,
    per_source: usize,
    dest: &S,
) -> nix::Result<usize> {
    let iov = [IoSlice::new(buf)];
    if per_source > 1 {
        let cmsgs = [info, ControlMessage::UdpGsoSegments(gso)];
        sendmsg(fd, &iov, &cmsgs, MsgFlags::empty(), Some(dest))
    } else {
        sendmsg(fd, &iov, &[info], MsgFlags::empty(), Some(dest))
    }
}

fn run_many6(
    flood: &Flood,
    first: Ipv6Addr,
    count: u32,
    per_source: usize,
    stop: &AtomicBool,
) -> Result<Sent, String> {
    let len = len_of(flood)?;
    let SocketAddr::V6(dest) = flood.dest else {
        return Err(format!("{}: IPv6 sources need an IPv6 target", flood.dest));
    };
    let sock = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))
        .map_err(|e| format!("bind IPv6 multi-source sender: {e}"))?;
    // IPV6_PKTINFO takes a source that is not an address of an interface (a local route is
    // not enough) only on a socket allowed to bind non-local addresses.
    setsockopt(&sock, sockopt::IpFreebind, &true)
        .map_err(|e| format!("IP_FREEBIND on the IPv6 sender: {e}"))?;
    let gso = u16::try_from(len).map_err(|_| "payload too long".to_owned())?;
    let dest = SockaddrIn6::from(dest);
    let base = u128::from(first);
    let per_source = per_source.clamp(1, GSO_SEGMENTS);
    let mut buf = Vec::with_capacity(per_source * len);
    let mut next = 0usize;
    let mut sent = 0u64;
    let mut errors = 0u64;
    let mut calls = 0u64;
    let mut last_error = None;
    let t0 = Instant::now();
    while !done(flood, t0, sent, stop) {
        pace(t0, sent, flood.rate);
        let src = base.wrapping_add(u128::from(calls % u64::from(count.max(1))));
        calls += 1;
        let info = libc::in6_pktinfo {
            ipi6_addr: libc::in6_addr {
                s6_addr: src.to_be_bytes(),
            },
            ipi6_ifindex: 0,
        };
        fill(&mut buf, &flood.payloads, &mut next, per_source);
        let r = send_from_source(
            sock.as_raw_fd(),
            &buf,
            ControlMessage::Ipv6PacketInfo(&info),
            &gso,
            per_source,
            &dest,
        );
        match r {
            Ok(_) => sent += per_source as u64,
            Err(e) => {
                errors += 1;
                last_error = Some(e);
            }
        }
        // Every send failing (no route, no IPv6) is a broken set-up, not a measurement.
        if sent == 0 && errors >= 1000 {
            return Err(format!(
                "IPv6 multi-source sender: every send failed ({})",
                last_error.map_or_else(String::new, |e| e.to_string())
            ));
        }
    }
    Ok(Sent {
        datagrams: sent,
        elapsed: t0.elapsed(),
        errors,
        sources: calls.min(u64::from(count)),
    })
}

/// Send each of `datagrams` exactly once, in order, from `src`, in GSO messages of up to
/// `GSO_SEGMENTS`, waiting before each message while `wait` says the receiver is behind.
pub fn send_once(
    datagrams: &[Vec<u8>],
    src: Ipv4Addr,
    dest: SocketAddrV4,
    mut wait: impl FnMut(),
) -> Result<Sent, String> {
    let len = datagrams.first().map(Vec::len).unwrap_or(0);
    let sock = UdpSocket::bind((src, 0)).map_err(|e| format!("bind sender {src}: {e}"))?;
    sock.connect(dest)
        .map_err(|e| format!("connect sender to {dest}: {e}"))?;
    let gso = u16::try_from(len).map_err(|_| "payload too long".to_owned())?;
    let segments = if setsockopt(&sock, sockopt::UdpGsoSegment, &i32::from(gso)).is_ok() {
        GSO_SEGMENTS
    } else {
        1
    };
    let t0 = Instant::now();
    let mut sent = 0u64;
    let mut errors = 0u64;
    let mut buf = Vec::with_capacity(segments * len);
    for chunk in datagrams.chunks(segments) {
        wait();
        buf.clear();
        for d in chunk {
            buf.extend_from_slice(d);
        }
        match sock.send(&buf) {
            Ok(_) => sent += chunk.len() as u64,
            Err(_) => errors += 1,
        }
    }
    Ok(Sent {
        datagrams: sent,
        elapsed: t0.elapsed(),
        errors,
        sources: 1,
    })
}
