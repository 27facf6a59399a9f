//! Reference datagrams from the ruroco v0.14.2 client: each decodes to exactly its listed
//! fields, the gate accepts them in order and rejects each again as a replay, and
//! no single-bit flip of any of them survives.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failure
use proptest::prelude::*;
use ruroco_proto::gate::{Floors, Gate, Limits, Now, Permit, Policy, Reject};
use ruroco_proto::protocol::{self, OpenError, Plaintext};
use ruroco_proto::{CmdHash, Key};
use serde_json::Value;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

struct Vector {
    key_file: String,
    bytes: Vec<u8>,
    source: IpAddr,
    expected: Plaintext,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_else(|e| panic!("hex {s}: {e}")))
        .collect()
}

fn ip_field(v: &Value) -> Option<IpAddr> {
    v.as_str()
        .map(|s| s.parse().unwrap_or_else(|e| panic!("ip {s}: {e}")))
}

fn load() -> (HashMap<String, Key>, Vec<Vector>, HashMap<String, String>) {
    let text = std::fs::read_to_string(dir().join("packets.json"))
        .unwrap_or_else(|e| panic!("packets.json: {e}"));
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("packets.json: {e}"));
    let mut keys = HashMap::new();
    for name in ["k1.key", "k2.key"] {
        let text =
            std::fs::read_to_string(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let k = Key::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        keys.insert(name.to_owned(), k);
    }
    let names = doc["command_names"]
        .as_object()
        .unwrap_or_else(|| panic!("command_names"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();
    let vectors = doc["packets"]
        .as_array()
        .unwrap_or_else(|| panic!("packets"))
        .iter()
        .map(|p| Vector {
            key_file: p["key_file"].as_str().unwrap_or_default().to_owned(),
            bytes: hex(p["packet_hex"].as_str().unwrap_or_default()),
            source: ip_field(&p["source"]).unwrap_or_else(|| panic!("source")),
            expected: Plaintext {
                version: p["version"].as_u64().unwrap_or(0) as u8,
                cmd: CmdHash(
                    u64::from_str_radix(p["cmd_hash"].as_str().unwrap_or_default(), 16)
                        .unwrap_or(0),
                ),
                counter: p["counter"]
                    .as_str()
                    .unwrap_or_default()
                    .parse()
                    .unwrap_or(0),
                strict: p["strict"].as_u64() == Some(1),
                src_ip: ip_field(&p["src_ip"]),
                dst_ip: ip_field(&p["dst_ip"]),
            },
        })
        .collect();
    (keys, vectors, names)
}

#[test]
fn command_names_hash_as_listed() {
    let (_, _, names) = load();
    assert_eq!(names.len(), 3);
    for (name, hash) in names {
        assert_eq!(CmdHash::of_name(&name).to_string(), hash, "{name}");
    }
}

#[test]
fn every_vector_decodes_to_its_fields() {
    let (keys, vectors, _) = load();
    assert_eq!(vectors.len(), 6);
    for v in &vectors {
        let key = &keys[&v.key_file];
        assert_eq!(v.bytes.len(), protocol::DATAGRAM_LEN);
        assert_eq!(protocol::key_id(&v.bytes), Ok(key.id()));
        assert_eq!(protocol::open(key, &v.bytes), Ok(v.expected));
    }
}

/// The encoder is byte-compatible with the reference client: re-sealing each vector's fields
/// with its IV (GCM-SIV is deterministic for a key, nonce and plaintext) gives back exactly the
/// reference datagram, so a ruroco v1 server decodes what our client sends.
#[test]
fn sealing_the_listed_fields_reproduces_every_vector() {
    let (keys, vectors, _) = load();
    for v in &vectors {
        let key = &keys[&v.key_file];
        let iv: [u8; 12] = v.bytes[8..20].try_into().unwrap();
        let sealed = protocol::seal(key, &v.expected, iv);
        assert_eq!(
            sealed.as_slice(),
            v.bytes.as_slice(),
            "vector with counter {}",
            v.expected.counter
        );
    }
}

/// Generous limits: the vectors test the decision, not the budgets.
const LIMITS: Limits = Limits {
    per_source: 1e9,
    burst: 1_000_000,
    global: 1e9,
    sources: 64,
};

fn gate(policy: Policy) -> Gate {
    let permits = load()
        .0
        .into_values()
        .map(|key| Permit { key, allowed: None });
    Gate::new(permits, policy, LIMITS, Floors::new())
}

#[test]
fn the_gate_accepts_in_order_then_rejects_replays() {
    let (keys, vectors, _) = load();
    let policy = Policy {
        ips: vec!["127.0.0.1".parse().unwrap_or(IpAddr::from([127, 0, 0, 1]))],
        max_clock_skew_ns: u128::MAX / 2,
        max_age_ns: None,
    };
    let now = Now {
        unix_ns: vectors[0].expected.counter,
        mono_ns: 0,
    };
    let mut gate = gate(policy);
    for v in &vectors {
        let a = gate
            .admit(&v.bytes, v.source, now)
            .unwrap_or_else(|r| panic!("vector with counter {} rejected: {r}", v.expected.counter));
        assert_eq!(a.frame.cmd, v.expected.cmd);
        assert_eq!(a.frame.ip, v.expected.src_ip.unwrap_or(v.source));
        assert_eq!(a.key_id, keys[&v.key_file].id());
    }
    // Every one again is a copy of an accepted datagram: the last of each key is its floor,
    // the older ones were accepted recently.
    for v in &vectors {
        assert_eq!(gate.admit(&v.bytes, v.source, now), Err(Reject::Duplicate));
    }
    // A fresh gate with the same floors (a restart: nothing recent) calls the older ones
    // replays.
    let floors: Floors = keys
        .values()
        .map(|k| (k.id(), gate.floor(&k.id())))
        .collect();
    let mut restarted = self::gate(Policy {
        ips: vec![IpAddr::from([127, 0, 0, 1])],
        max_clock_skew_ns: u128::MAX / 2,
        max_age_ns: None,
    });
    restarted.restore_floors(&floors, &Default::default());
    for v in &vectors {
        let key = &keys[&v.key_file];
        let expected = if v.expected.counter == floors[&key.id()] {
            Reject::Duplicate
        } else {
            Reject::Replay
        };
        assert_eq!(restarted.admit(&v.bytes, v.source, now), Err(expected));
    }
}

#[test]
fn every_single_bit_flip_is_rejected() {
    let (keys, vectors, _) = load();
    let mut flips = 0;
    for v in &vectors {
        let key = &keys[&v.key_file];
        for bit in 0..v.bytes.len() * 8 {
            let mut d = v.bytes.clone();
            d[bit / 8] ^= 1 << (bit % 8);
            flips += 1;
            match protocol::key_id(&d) {
                // A flipped key id names no configured key: rejected as unknown_key.
                Ok(id) if id != key.id() => assert!(keys.values().all(|k| k.id() != id)),
                Ok(_) => assert_eq!(protocol::open(key, &d), Err(OpenError::BadTag), "bit {bit}"),
                Err(e) => panic!("length changed? {e:?}"),
            }
        }
    }
    assert_eq!(flips, 6 * 94 * 8);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn random_input_of_any_length_never_panics_or_passes(data in proptest::collection::vec(any::<u8>(), 0..=200)) {
        let policy = Policy { ips: vec![IpAddr::from([127, 0, 0, 1])], max_clock_skew_ns: 0, max_age_ns: None };
        let mut gate = gate(policy);
        let r = gate.admit(&data, IpAddr::from([127, 0, 0, 1]), Now { unix_ns: 0, mono_ns: 0 });
        prop_assert!(r.is_err());
        if data.len() != 94 {
            prop_assert_eq!(r, Err(Reject::BadLength));
        }
    }

    #[test]
    fn random_94_byte_datagrams_with_known_key_id_fail_the_tag(tail in proptest::collection::vec(any::<u8>(), 86)) {
        let keys = cached_keys();
        for key in keys {
            let mut d = key.id().0.to_vec();
            d.extend_from_slice(&tail);
            prop_assert_eq!(protocol::open(key, &d), Err(OpenError::BadTag));
        }
    }
}

fn cached_keys() -> &'static [Key] {
    use std::sync::OnceLock;
    static KEYS: OnceLock<Vec<Key>> = OnceLock::new();
    KEYS.get_or_init(|| load().0.into_values().collect())
}

#[test]
fn every_length_0_to_200_never_panics() {
    let (keys, _, _) = load();
    for len in 0..=200usize {
        let d = vec![0x09u8; len];
        for key in keys.values() {
            assert!(protocol::open(key, &d).is_err());
        }
        assert_eq!(protocol::key_id(&d).is_ok(), len == 94);
    }
}
