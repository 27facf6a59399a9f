//! The checks behind every fuzz target, shared by the cargo-fuzz binaries (nightly) and the
//! stable corpus replay (`tests/tests/corpus.rs` includes this file as a module).
//! Each function takes arbitrary bytes and must never panic; it returns `Ok` when the input
//! was accepted and `Err(reason)` when it was rejected. The asserts are the properties a
//! fuzzer should break: they never fire for correct code, whatever the input.
//! Only `std` and the ruroco crates may be used here (the tests crate has no other deps).
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use ruroco_proto::frame::{FRAME_LEN, Frame};
use ruroco_proto::gate::{Floors, Gate, Limits, Now, Permit, Policy, Reject};
use ruroco_proto::ids::CmdHash;
use ruroco_proto::ip;
use ruroco_proto::key::Key;
use ruroco_proto::protocol::{self, DATAGRAM_LEN, PLAINTEXT_LEN, Plaintext};

/// What a target made of one input: accepted, or rejected with a reason.
pub type Outcome = Result<(), String>;

/// One target's check.
pub type Check = fn(&[u8]) -> Outcome;

/// Every target, by the name of its corpus directory and cargo-fuzz binary.
pub const TARGETS: [(&str, Check); 7] = [
    ("datagram", datagram),
    ("plaintext", plaintext),
    ("frame", frame),
    ("key_file", key_file),
    ("server_config", server_config),
    ("commander_config", commander_config),
    ("replay_state", replay_state),
];

/// The reference keys (public test data) that made the datagram seeds.
const KEY_FILES: [&str; 2] = [
    include_str!("../../shared/proto/tests/vectors/k1.key"),
    include_str!("../../shared/proto/tests/vectors/k2.key"),
];

/// A fixed "now" shortly after the reference datagrams were made, so runs are repeatable.
pub const NOW_NS: u128 = 1_795_459_300_000_000_000;
const SKEW_NS: u128 = 3600 * 1_000_000_000;

fn policy() -> Policy {
    Policy {
        ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        max_clock_skew_ns: SKEW_NS,
        max_age_ns: None,
    }
}

/// Budgets no single input reaches: the targets test the decision, not the rate limiter.
const LIMITS: Limits = Limits {
    per_source: 1.0,
    burst: 1,
    global: 1e9,
    sources: 4,
};

/// The fixed "now" on both of the gate's clocks.
const NOW: Now = Now {
    unix_ns: NOW_NS,
    mono_ns: 0,
};

fn keys() -> Vec<Key> {
    KEY_FILES
        .iter()
        .filter_map(|t| Key::parse(t).ok())
        .collect()
}

/// The server's whole per-datagram decision (SPEC §3) through a fresh gate holding the
/// reference keys with no floors: an accepted datagram must then be a duplicate of itself,
/// and its frame must round-trip.
pub fn datagram(data: &[u8]) -> Outcome {
    let ids: Vec<_> = keys().iter().map(Key::id).collect();
    let permits = keys().into_iter().map(|key| Permit { key, allowed: None });
    let mut gate = Gate::new(permits, policy(), LIMITS, Floors::new());
    let source = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let accepted = gate.admit(data, source, NOW).map_err(|r| {
        match r {
            Reject::BadLength => assert_ne!(data.len(), DATAGRAM_LEN),
            Reject::UnknownKey => assert!(ids.iter().all(|id| id.0[..] != data[..8])),
            _ => {}
        }
        r.to_string()
    })?;
    assert_eq!(accepted.key_id.0[..], data[..8]);
    assert!(accepted.counter > 0 && accepted.counter <= NOW_NS + SKEW_NS);
    assert_eq!(
        gate.admit(data, source, NOW).err(),
        Some(Reject::Duplicate),
        "an accepted datagram must be a duplicate of itself"
    );
    let bytes = accepted.frame.to_bytes();
    assert_eq!(Frame::from_bytes(&bytes), Ok(accepted.frame));
    Ok(())
}

/// Input layout of the `plaintext` target: plaintext, floor, real source, flags.
pub const PLAINTEXT_INPUT_LEN: usize = PLAINTEXT_LEN + 16 + 16 + 1;

/// The checks after decryption, which random bytes never reach through the AEAD: the input
/// is a plaintext (sealed here with a reference key), the replay floor, the real source and
/// flags (bit 0: the key's allow-list is `["hello"]`; bit 1: the source arrives IPv4-mapped,
/// as a dual-stack socket reports it). The gate must agree with SPEC §3, steps 4–8, in order.
pub fn plaintext(data: &[u8]) -> Outcome {
    if data.len() < PLAINTEXT_INPUT_LEN {
        return Err(format!("input shorter than {PLAINTEXT_INPUT_LEN} bytes"));
    }
    let mut raw = [0u8; PLAINTEXT_LEN];
    raw.copy_from_slice(&data[..PLAINTEXT_LEN]);
    let pt = Plaintext::from_bytes(&raw);
    let mut floor = [0u8; 16];
    floor.copy_from_slice(&data[PLAINTEXT_LEN..PLAINTEXT_LEN + 16]);
    let floor = u128::from_be_bytes(floor);
    let mut src = [0u8; 16];
    src.copy_from_slice(&data[PLAINTEXT_LEN + 16..PLAINTEXT_LEN + 32]);
    let source = ip::decode(src).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let flags = data[PLAINTEXT_LEN + 32];
    let allow = (flags & 1 == 1).then(|| vec![CmdHash::of_name("hello")]);
    let seen_source = match source {
        IpAddr::V4(v4) if flags & 2 == 2 => IpAddr::V6(v4.to_ipv6_mapped()),
        other => other,
    };

    let key = keys()
        .into_iter()
        .next()
        .ok_or("reference key does not parse")?;
    let policy = policy();
    let d = protocol::seal(&key, &pt, [7; 12]);
    let floors = [(key.id(), floor)].into_iter().collect();
    let permit = Permit {
        key,
        allowed: allow.clone(),
    };
    let got = Gate::new([permit], policy.clone(), LIMITS, floors).admit(&d, seen_source, NOW);

    // The rules written out again, independently, in SPEC order.
    let expected = if pt.version != protocol::VERSION {
        Err(Reject::BadVersion)
    } else if pt.counter == floor && floor != 0 {
        Err(Reject::Duplicate)
    } else if pt.counter <= floor {
        Err(Reject::Replay)
    } else if pt.counter > NOW_NS + SKEW_NS {
        Err(Reject::Future)
    } else if !pt.dst_ip.is_some_and(|d| policy.ips.contains(&d)) {
        Err(Reject::WrongDestination)
    } else if pt.strict && pt.src_ip.is_some_and(|claimed| claimed != source) {
        Err(Reject::SourceMismatch)
    } else if !ip::can_be_client(pt.src_ip.unwrap_or(source)) {
        Err(Reject::NotAClient)
    } else if allow.as_ref().is_some_and(|l| !l.contains(&pt.cmd)) {
        Err(Reject::NotAllowed)
    } else {
        Ok(Frame {
            cmd: pt.cmd,
            ip: pt.src_ip.unwrap_or(source),
        })
    };
    assert_eq!(got.map(|a| a.frame), expected, "plaintext {pt:?}");
    expected.map(|_| ()).map_err(|r| r.to_string())
}

/// The commander's only parser: its codec cuts the server's byte stream into 24-byte frames
/// (hash + non-zero IP), each exactly what `Frame::from_bytes` makes of its 24 bytes, and says
/// when the stream ends inside one; re-encoding a frame is stable. Accepted: exactly one valid
/// frame.
pub fn frame(data: &[u8]) -> Outcome {
    use ruroco_commander::codec::{BytesMut, Chunk, Decoder, FrameCodec};
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::from(data);
    let mut frames = Vec::new();
    while let Some(chunk) = codec.decode(&mut buf).map_err(|e| e.to_string())? {
        if let Chunk::Frame(f) = chunk {
            frames.push(f);
        }
    }
    assert!(buf.len() < FRAME_LEN, "a whole frame left in the buffer");
    let short = codec.decode_eof(&mut buf).err().map(|e| e.to_string());
    assert_eq!(frames.len(), data.len() / FRAME_LEN);
    assert_eq!(short.is_some(), data.len() % FRAME_LEN != 0);
    for (f, chunk) in frames.iter().zip(data.chunks_exact(FRAME_LEN)) {
        let mut bytes = [0u8; FRAME_LEN];
        bytes.copy_from_slice(chunk);
        assert_eq!(*f, Frame::from_bytes(&bytes));
        if let Ok(f) = f {
            assert_eq!(Frame::from_bytes(&f.to_bytes()), Ok(*f));
        }
    }
    match (frames.as_slice(), short) {
        (_, Some(e)) => Err(e),
        ([one], None) => one.map(|_| ()).map_err(|e| e.to_string()),
        (all, None) => Err(format!("{} frames, not one", all.len())),
    }
}

/// Key file text: a parsed key writes back to a file that parses to the same key.
pub fn key_file(data: &[u8]) -> Outcome {
    let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
    let key = Key::parse(text).map_err(|e| e.to_string())?;
    let again = Key::parse(&key.to_file_text()).map_err(|e| e.to_string());
    assert_eq!(again.as_ref().map(Key::id), Ok(key.id()));
    assert_eq!(
        again.map(|k| k.to_file_text().to_string()),
        Ok(key.to_file_text().to_string())
    );
    Ok(())
}

/// `server.toml`: parse and validate; a valid config yields a policy with its `ips`.
pub fn server_config(data: &[u8]) -> Outcome {
    let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
    let cfg = ruroco_server::config::Config::parse(text, Path::new("fuzz/server.toml"))
        .map_err(|e| e.to_string())?;
    assert!(!cfg.policy().ips.is_empty());
    Ok(())
}

/// `commander.toml`: parse and validate (commands, undo, limits).
pub fn commander_config(data: &[u8]) -> Outcome {
    let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
    ruroco_commander::config::Config::parse(text, Path::new("fuzz/commander.toml"))
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The server's replay file: a parsed state renders to text that parses to the same floors.
pub fn replay_state(data: &[u8]) -> Outcome {
    let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
    let floors = ruroco_server::replay::parse(text).map_err(|e| e.to_string())?;
    let again = ruroco_server::replay::parse(&ruroco_server::replay::render(&floors));
    assert_eq!(again, Ok(floors));
    Ok(())
}
