//! Identities that travel on the wire: key ids and command hashes, as newtypes.
//! Never derive a key id or hash from anything but the bytes the protocol defines.

use blake2::Blake2bVar;
use blake2::digest::{Update, VariableOutput};
use std::fmt;

/// The 8 clear bytes at the start of every datagram naming which key encrypted it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// Parse the 16-hex-digit form used in logs and state files.
    pub fn from_hex(s: &str) -> Option<Self> {
        let v = u64::from_str_radix(s, 16).ok()?;
        if s.len() != 16 {
            return None;
        }
        Some(Self(v.to_be_bytes()))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", u64::from_be_bytes(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Blake2b with an 8-byte output of a command name, read big-endian.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CmdHash(pub u64);

impl CmdHash {
    /// Hash a command name exactly as ruroco v1 clients do (`Blake2bVar::new(8)`).
    pub fn of_name(name: &str) -> Self {
        let mut out = [0u8; 8];
        // Blake2bVar accepts every output size from 1 to 64, and `out` is exactly the size asked
        // for, so neither call can fail; the fallback keeps this function total anyway.
        match Blake2bVar::new(8) {
            Ok(mut h) => {
                h.update(name.as_bytes());
                if h.finalize_variable(&mut out).is_err() {
                    out = [0; 8];
                }
            }
            Err(_) => out = [0; 8],
        }
        Self(u64::from_be_bytes(out))
    }

    /// The 8 wire bytes (big-endian), as in datagrams and frames.
    pub fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

impl fmt::Display for CmdHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for CmdHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CmdHash({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_command_hashes() {
        assert_eq!(CmdHash::of_name("default").to_string(), "fe98b07b1ba6b3a2");
        assert_eq!(
            CmdHash::of_name("open_port").to_string(),
            "9b93083959d8550a"
        );
        assert_eq!(CmdHash::of_name("hello").to_string(), "a7b6eda801e5347d");
    }

    #[test]
    fn key_id_hex_round_trip() {
        let id = KeyId([0x09, 0x86, 0x06, 0x23, 0x9b, 0x45, 0x23, 0x72]);
        assert_eq!(id.to_string(), "098606239b452372");
        assert_eq!(KeyId::from_hex("098606239b452372"), Some(id));
        assert_eq!(KeyId::from_hex("98606239b452372"), None);
        assert_eq!(KeyId::from_hex("zz8606239b452372"), None);
    }
}
