//! Microbenchmark of opening a datagram with a bad tag, the work a bad-tag flood makes the
//! server repeat: `protocol::open` (the seam `Key::open_in_place`: the `aes-gcm-siv` crate over
//! the encryption-only `aes::Aes256Enc`, the buffer zeroed on failure) against the crate's
//! default `Aes256GcmSiv` (over `aes::Aes256`, which also expands the decryption round keys) on
//! the same key and bytes, interleaved in one process. Not a test, never run in CI; it must
//! never be read as more than a ratio on a shared machine.
//! Run: `cargo run --release -p ruroco-proto --example open_cost`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aes_gcm_siv::aead::{AeadInPlace, KeyInit};
use aes_gcm_siv::{Aes256GcmSiv, Nonce, Tag};
use ruroco_proto::protocol::{self, DATAGRAM_LEN};
use ruroco_proto::{Key, KeyId};
use std::hint::black_box;
use std::time::Instant;

/// Opens per batch; batches of the two alternate, so a burst of other work on a shared
/// machine hits both alike, and the fastest batches are the least disturbed ones.
const BATCH: u32 = 20_000;
/// Batches of each per round: 2,000,000 opens each way.
const BATCHES: u32 = 100;

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
    let seam = |from: u32| {
        let t = Instant::now();
        for i in from..from + BATCH {
            let d = datagram(i);
            black_box(protocol::open(&key, black_box(&d)).is_ok());
        }
        t.elapsed().as_nanos() as f64 / f64::from(BATCH)
    };
    let default = |from: u32| {
        let t = Instant::now();
        for i in from..from + BATCH {
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
        t.elapsed().as_nanos() as f64 / f64::from(BATCH)
    };
    for round in 1..=3 {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for b in 0..BATCHES {
            ours.push(seam(b * BATCH));
            theirs.push(default(b * BATCH));
        }
        let (o, t) = (summary(&mut ours), summary(&mut theirs));
        println!(
            "round {round}: protocol::open (the seam, Aes256Enc) {:.0} ns, Aes256GcmSiv decrypt {:.0} ns \
             per bad-tag open ({:.0}%; fastest batches {:.0} / {:.0} ns, {:.0}%)",
            o.0,
            t.0,
            o.0 / t.0 * 100.0,
            o.1,
            t.1,
            o.1 / t.1 * 100.0
        );
    }
}

/// (median, minimum) of per-batch nanoseconds per open.
fn summary(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0])
}
