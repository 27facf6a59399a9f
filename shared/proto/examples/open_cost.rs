//! Microbenchmark of opening a datagram with a bad tag, the work a bad-tag flood makes the
//! server repeat: `protocol::open` (shared/src/siv.rs) against the `aes-gcm-siv` crate's
//! `decrypt_in_place_detached` on the same key and bytes, interleaved in one process.
//! Not a test, never run in CI. Run: `cargo run --release -p ruroco-proto --example open_cost`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aes_gcm_siv::aead::{AeadInPlace, KeyInit};
use aes_gcm_siv::{Aes256GcmSiv, Nonce, Tag};
use ruroco_proto::protocol::{self, DATAGRAM_LEN};
use ruroco_proto::{Key, KeyId};
use std::hint::black_box;
use std::time::Instant;

const OPENS: u32 = 2_000_000;

fn main() {
    let secret = [9u8; 32];
    let key = Key::from_parts(KeyId([7; 8]), secret);
    let crate_cipher = Aes256GcmSiv::new_from_slice(&secret).unwrap();
    // Distinct IVs and bodies per open, a tag that never verifies.
    let datagram = |i: u32| {
        let mut d = [0u8; DATAGRAM_LEN];
        d[..8].copy_from_slice(&[7; 8]);
        d[8..12].copy_from_slice(&i.to_le_bytes());
        d[20..36].fill(1);
        d[36..40].copy_from_slice(&i.to_be_bytes());
        d
    };
    for round in 1..=3 {
        let t = Instant::now();
        for i in 0..OPENS {
            let d = datagram(i);
            black_box(protocol::open(&key, black_box(&d)).is_ok());
        }
        let ours = t.elapsed().as_nanos() as f64 / f64::from(OPENS);
        let t = Instant::now();
        for i in 0..OPENS {
            let d = datagram(i);
            let mut body = [0u8; 58];
            body.copy_from_slice(&d[36..]);
            let r = crate_cipher.decrypt_in_place_detached(
                Nonce::from_slice(&d[8..20]),
                &[],
                &mut body,
                Tag::from_slice(&d[20..36]),
            );
            black_box(r.is_ok());
        }
        let theirs = t.elapsed().as_nanos() as f64 / f64::from(OPENS);
        println!(
            "round {round}: protocol::open {ours:.0} ns, aes-gcm-siv decrypt {theirs:.0} ns per bad-tag open ({:.0}%)",
            ours / theirs * 100.0
        );
    }
}
