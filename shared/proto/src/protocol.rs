//! Wire protocol v1: the 94-byte datagram `key_id || IV || tag || ciphertext` and its
//! 58-byte plaintext. Pure functions over bytes; must never panic on any input.

use std::net::IpAddr;

use crate::ids::{CmdHash, KeyId};
use crate::ip;
use crate::key::Key;

/// Every valid datagram is exactly this long; anything else is dropped before any crypto.
pub const DATAGRAM_LEN: usize = 94;
/// Plaintext size inside the datagram.
pub const PLAINTEXT_LEN: usize = 58;
/// The only protocol version this implementation speaks.
pub const VERSION: u8 = 1;

const KEY_ID: std::ops::Range<usize> = 0..8;
const IV: std::ops::Range<usize> = 8..20;
const TAG: std::ops::Range<usize> = 20..36;
const CIPHERTEXT: std::ops::Range<usize> = 36..94;

/// The decrypted content of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plaintext {
    /// Protocol version (byte 0); only [`VERSION`] is accepted.
    pub version: u8,
    /// The command's hash (bytes 1–8, big-endian).
    pub cmd: CmdHash,
    /// Strictly increasing per key; nanoseconds since the Unix epoch when seeded.
    pub counter: u128,
    /// Enforce that the claimed source IP matches the real one.
    pub strict: bool,
    /// The client's claimed address, if any.
    pub src_ip: Option<IpAddr>,
    /// The server address the client sent to.
    pub dst_ip: Option<IpAddr>,
}

impl Plaintext {
    /// The 58-byte plaintext: version, command hash, counter (big-endian), strict flag,
    /// claimed source and destination (16 bytes each, `ip::encode`).
    pub fn to_bytes(&self) -> [u8; PLAINTEXT_LEN] {
        let mut b = [0u8; PLAINTEXT_LEN];
        b[0] = self.version;
        b[1..9].copy_from_slice(&self.cmd.to_bytes());
        b[9..25].copy_from_slice(&self.counter.to_be_bytes());
        b[25] = u8::from(self.strict);
        b[26..42].copy_from_slice(&ip::encode(self.src_ip));
        b[42..58].copy_from_slice(&ip::encode(self.dst_ip));
        b
    }

    /// Field split of a plaintext; the version is reported, not judged, here.
    pub fn from_bytes(b: &[u8; PLAINTEXT_LEN]) -> Self {
        let mut cmd = [0u8; 8];
        cmd.copy_from_slice(&b[1..9]);
        let mut counter = [0u8; 16];
        counter.copy_from_slice(&b[9..25]);
        let mut src = [0u8; 16];
        src.copy_from_slice(&b[26..42]);
        let mut dst = [0u8; 16];
        dst.copy_from_slice(&b[42..58]);
        Self {
            version: b[0],
            cmd: CmdHash(u64::from_be_bytes(cmd)),
            counter: u128::from_be_bytes(counter),
            strict: b[25] != 0,
            src_ip: ip::decode(src),
            dst_ip: ip::decode(dst),
        }
    }
}

/// Why a datagram could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Not exactly [`DATAGRAM_LEN`] bytes.
    BadLength,
    /// The tag does not verify under the key (forged, changed, or another key).
    BadTag,
    /// Authentic, but its version byte is not [`VERSION`].
    BadVersion,
}

/// The clear key id of a datagram, or `BadLength` for anything but exactly 94 bytes.
pub fn key_id(datagram: &[u8]) -> Result<KeyId, OpenError> {
    let datagram = datagram.try_into().map_err(|_| OpenError::BadLength)?;
    Ok(key_id_exact(datagram))
}

/// Encrypt a plaintext under `key` with the given 96-bit IV.
pub fn seal(key: &Key, plaintext: &Plaintext, iv: [u8; 12]) -> [u8; DATAGRAM_LEN] {
    let mut out = [0u8; DATAGRAM_LEN];
    out[KEY_ID].copy_from_slice(&key.id().0);
    out[IV].copy_from_slice(&iv);
    let body = &mut out[CIPHERTEXT];
    body.copy_from_slice(&plaintext.to_bytes());
    let tag = key.seal_in_place(&iv, body);
    out[TAG].copy_from_slice(&tag);
    out
}

/// Encrypt with a fresh random IV from the OS.
pub fn seal_random(
    key: &Key,
    plaintext: &Plaintext,
) -> Result<[u8; DATAGRAM_LEN], getrandom::Error> {
    let mut iv = [0u8; 12];
    getrandom::fill(&mut iv)?;
    Ok(seal(key, plaintext, iv))
}

/// Verify and decrypt a datagram with `key` (the caller already matched its key id).
/// The version is checked only after the tag verifies.
pub fn open(key: &Key, datagram: &[u8]) -> Result<Plaintext, OpenError> {
    let datagram = datagram.try_into().map_err(|_| OpenError::BadLength)?;
    open_exact(key, datagram)
}

/// The clear key id of a datagram whose length is already checked (SPEC §2: bytes 0–7).
pub fn key_id_exact(datagram: &[u8; DATAGRAM_LEN]) -> KeyId {
    let mut id = [0u8; 8];
    id.copy_from_slice(&datagram[KEY_ID]);
    KeyId(id)
}

/// [`open`] for a datagram whose length is already checked: the gate checks it once.
pub fn open_exact(key: &Key, datagram: &[u8; DATAGRAM_LEN]) -> Result<Plaintext, OpenError> {
    let mut body = [0u8; PLAINTEXT_LEN];
    body.copy_from_slice(&datagram[CIPHERTEXT]);
    let mut iv = [0u8; 12];
    iv.copy_from_slice(&datagram[IV]);
    let mut tag = [0u8; 16];
    tag.copy_from_slice(&datagram[TAG]);
    key.open_in_place(&iv, &tag, &mut body)
        .map_err(|_| OpenError::BadTag)?;
    let pt = Plaintext::from_bytes(&body);
    if pt.version != VERSION {
        return Err(OpenError::BadVersion);
    }
    Ok(pt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn key() -> Key {
        Key::from_parts(KeyId([7; 8]), [9; 32])
    }

    fn pt() -> Plaintext {
        Plaintext {
            version: 1,
            cmd: CmdHash::of_name("default"),
            counter: 1_795_459_243_528_273_418,
            strict: true,
            src_ip: None,
            dst_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        }
    }

    #[test]
    fn seal_open_round_trip() {
        let k = key();
        let d = seal(&k, &pt(), [1; 12]);
        assert_eq!(key_id(&d), Ok(KeyId([7; 8])));
        assert_eq!(open(&k, &d), Ok(pt()));
    }

    #[test]
    fn other_key_fails_tag() {
        let d = seal(&key(), &pt(), [1; 12]);
        let other = Key::from_parts(KeyId([7; 8]), [8; 32]);
        assert_eq!(open(&other, &d), Err(OpenError::BadTag));
    }

    #[test]
    fn wrong_version_rejected_after_tag() {
        let mut p = pt();
        p.version = 2;
        let d = seal(&key(), &p, [1; 12]);
        assert_eq!(open(&key(), &d), Err(OpenError::BadVersion));
    }

    #[test]
    fn lengths_other_than_94_rejected() {
        for len in [0, 1, 93, 95, 200] {
            assert_eq!(key_id(&vec![0; len]), Err(OpenError::BadLength));
            assert_eq!(open(&key(), &vec![0; len]), Err(OpenError::BadLength));
        }
    }

    #[test]
    fn any_nonzero_strict_byte_is_true() {
        let mut b = pt().to_bytes();
        b[25] = 0x80;
        assert!(Plaintext::from_bytes(&b).strict);
        b[25] = 0;
        assert!(!Plaintext::from_bytes(&b).strict);
    }
}
