//! A small UDP load generator for measuring the server by hand (not a test, never run in CI):
//! floods 127.0.0.1:PORT with wrong-length, unknown-key, bad-tag or valid datagrams using
//! `sendmmsg` batches. It must never be shipped or pointed at a host you do not own.
//!
//! usage: loadgen PORT MODE COUNT [KEYFILE] [SOURCES]
//!   MODE: short | unknown | badtag | valid   (badtag/valid need KEYFILE)
//!   SOURCES: send from 127.0.1.x, x cycling 1..=SOURCES (default 1 = 127.0.0.1)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrIn, sendmmsg};
use ruroco_proto::CmdHash;
use ruroco_proto::protocol::{Plaintext, seal};
use std::io::IoSlice;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const BATCH: usize = 64;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: loadgen PORT short|unknown|badtag|valid COUNT [KEYFILE] [SOURCES]");
        std::process::exit(64);
    }
    let port: u16 = args[1].parse().unwrap();
    let mode = args[2].as_str();
    let count: usize = args[3].parse().unwrap();
    let key = args
        .get(4)
        .filter(|s| !s.is_empty())
        .map(|p| ruroco_kit::key_file::load(p.as_ref()).unwrap());
    let sources: u32 = args.get(5).map_or(1, |s| s.parse().unwrap());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    // Build all datagrams first, so the send loop measures sending only.
    let datagrams: Vec<Vec<u8>> = (0..count)
        .map(|i| match mode {
            "short" => vec![0u8; 50],
            "unknown" => {
                let mut d = vec![0x5au8; 94];
                d[..8].copy_from_slice(&(i as u64 | 1 << 63).to_be_bytes());
                d
            }
            "badtag" => {
                let k = key.as_ref().expect("badtag needs KEYFILE");
                let mut d = vec![0x5au8; 94];
                d[..8].copy_from_slice(&k.id().0);
                d[8..16].copy_from_slice(&(i as u64).to_be_bytes());
                d
            }
            "valid" => {
                let k = key.as_ref().expect("valid needs KEYFILE");
                let p = Plaintext {
                    version: 1,
                    cmd: CmdHash::of_name("true"),
                    counter: now + i as u128,
                    strict: false,
                    src_ip: None,
                    dst_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                };
                seal(k, &p, [(i % 251) as u8; 12]).to_vec()
            }
            other => panic!("unknown mode {other}"),
        })
        .collect();
    let socks: Vec<UdpSocket> = (0..sources)
        .map(|i| {
            let src = if sources == 1 {
                Ipv4Addr::LOCALHOST
            } else {
                Ipv4Addr::new(127, 0, 1 + (i / 250) as u8, 1 + (i % 250) as u8)
            };
            let s = UdpSocket::bind((src, 0)).unwrap();
            s.connect((Ipv4Addr::LOCALHOST, port)).unwrap();
            s
        })
        .collect();
    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    let addrs = [None::<SockaddrIn>; BATCH];
    let start = Instant::now();
    let mut sent = 0usize;
    for (n, chunk) in datagrams.chunks(BATCH).enumerate() {
        let sock = &socks[n % socks.len()];
        let iovs: Vec<[IoSlice<'_>; 1]> = chunk.iter().map(|d| [IoSlice::new(d)]).collect();
        let mut off = 0;
        while off < iovs.len() {
            match sendmmsg(
                sock.as_raw_fd(),
                &mut headers,
                &iovs[off..],
                &addrs[..iovs.len() - off],
                [],
                MsgFlags::empty(),
            ) {
                Ok(r) => {
                    let k = r.count();
                    off += k;
                    sent += k;
                }
                Err(nix::errno::Errno::ECONNREFUSED) => {}
                Err(e) => panic!("sendmmsg: {e}"),
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "mode={mode} sent={sent} seconds={secs:.3} rate={:.0}/s sources={sources}",
        sent as f64 / secs
    );
}
