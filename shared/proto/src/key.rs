//! Keys: one line of standard base64 holding `key_id (8) || AES-256 key (32)`, and the one
//! seam through which datagrams are sealed and opened (AES-256-GCM-SIV, RFC 8452, from the
//! `aes-gcm-siv` crate). The secret half is zeroized on drop and never printed; only the key
//! id may be logged. Reading key files (with their size bound) is the daemon kit's job.

use aes::Aes256Enc;
use aes_gcm_siv::aead::{AeadInPlace, KeyInit};
use aes_gcm_siv::{AesGcmSiv, Nonce, Tag};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::fmt;
use zeroize::{Zeroize, Zeroizing};

use crate::ids::KeyId;

/// Decoded size of a key file: key id plus the AES-256 key.
pub const KEY_FILE_BYTES: usize = 40;

/// Why key text is not a key (`Key::parse`) or a key could not be made (`Key::generate`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The text is not standard base64 (RFC 4648 §4); carries the decoder's message.
    #[error("not valid base64: {0} (a key file is one line made by `ruroco-client gen`)")]
    BadBase64(String),
    /// The base64 decodes to this many bytes instead of [`KEY_FILE_BYTES`].
    #[error("decodes to {0} bytes, expected {KEY_FILE_BYTES} (8-byte key id + 32-byte key)")]
    WrongLength(usize),
    /// getrandom(2) failed; carries its message.
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

/// The tag did not verify: the datagram was not sealed with this key, or was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadTag;

/// AES-256-GCM-SIV over the encryption-only AES-256 key schedule: GCM-SIV only ever runs the
/// block cipher forwards (key derivation, CTR, tag), so the decryption round keys of
/// `aes::Aes256` would be expanded for nothing.
type Cipher = AesGcmSiv<Aes256Enc>;

/// A shared key: its public id, the secret, and the secret's expanded AES key schedule
/// (built once per key, used by every seal and open).
pub struct Key {
    id: KeyId,
    secret: Zeroizing<[u8; 32]>,
    cipher: Cipher,
}

impl Key {
    /// A key from its id and 32-byte AES-256 secret.
    pub fn from_parts(id: KeyId, secret: [u8; 32]) -> Self {
        let secret = Zeroizing::new(secret);
        let cipher = Cipher::new(aes_gcm_siv::Key::<Cipher>::from_slice(&secret[..]));
        Self { id, secret, cipher }
    }

    /// Parse the text of a key file; surrounding whitespace is ignored.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let raw = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|e| KeyError::BadBase64(e.to_string()))?,
        );
        let raw: &[u8; KEY_FILE_BYTES] = raw[..]
            .try_into()
            .map_err(|_| KeyError::WrongLength(raw.len()))?;
        Ok(Self::from_file_bytes(raw))
    }

    /// A new key from the OS CSPRNG.
    pub fn generate() -> Result<Self, KeyError> {
        let mut raw = Zeroizing::new([0u8; KEY_FILE_BYTES]);
        getrandom::fill(&mut raw[..]).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self::from_file_bytes(&raw))
    }

    /// A key from the decoded key file bytes `key_id (8) || AES-256 key (32)`; the stack copy
    /// of the secret is zeroized.
    fn from_file_bytes(raw: &[u8; KEY_FILE_BYTES]) -> Self {
        let mut id = [0u8; 8];
        id.copy_from_slice(&raw[..8]);
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&raw[8..]);
        let key = Self::from_parts(KeyId(id), secret);
        secret.zeroize();
        key
    }

    /// The key file text (base64 line plus newline).
    pub fn to_file_text(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new([0u8; KEY_FILE_BYTES]);
        raw[..8].copy_from_slice(&self.id.0);
        raw[8..].copy_from_slice(&self.secret[..]);
        let mut s = Zeroizing::new(STANDARD.encode(&raw[..]));
        s.push('\n');
        s
    }

    /// The public key id that opens every datagram sealed with this key.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// Seal `buf` in place under the 96-bit `iv` with no associated data (RFC 8452 §4) and
    /// return the 16-byte tag. Sealing fails only beyond RFC 8452's 2^36-byte plaintext
    /// limit, which callers with fixed-size buffers never reach; then the tag is all zeros and
    /// cannot verify.
    pub fn seal_in_place(&self, iv: &[u8; 12], buf: &mut [u8]) -> [u8; 16] {
        self.cipher
            .encrypt_in_place_detached(Nonce::from_slice(iv), &[], buf)
            .map(Into::into)
            .unwrap_or_default()
    }

    /// Verify `tag` over `buf` under `iv` and decrypt `buf` in place (RFC 8452 §5). On
    /// [`BadTag`] `buf` is zeroed, so no unauthenticated bytes are left behind.
    pub fn open_in_place(
        &self,
        iv: &[u8; 12],
        tag: &[u8; 16],
        buf: &mut [u8],
    ) -> Result<(), BadTag> {
        self.cipher
            .decrypt_in_place_detached(Nonce::from_slice(iv), &[], buf, Tag::from_slice(tag))
            .map_err(|_| {
                buf.zeroize();
                BadTag
            })
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "CYYGI5tFI3LsycszivNer7DvZgIDGg2ytXepnL3mQYU2zBXSlcHYNA==";

    #[test]
    fn parses_reference_key_with_whitespace() {
        let k = Key::parse(&format!("  {K1}\n\n")).map_err(|e| e.to_string());
        assert_eq!(
            k.map(|k| k.id().to_string()),
            Ok("098606239b452372".to_owned())
        );
    }

    #[test]
    fn rejects_bad_keys() {
        assert!(matches!(
            Key::parse("not base64!"),
            Err(KeyError::BadBase64(_))
        ));
        assert_eq!(Key::parse("AAAA").err(), Some(KeyError::WrongLength(3)));
        assert_eq!(Key::parse("").err(), Some(KeyError::WrongLength(0)));
    }

    #[test]
    fn debug_never_shows_secret() {
        let k = Key::parse(K1).map_err(|e| e.to_string());
        let dbg = format!("{k:?}");
        assert!(dbg.contains("redacted"));
        assert!(!dbg.contains("K1"));
        assert!(!dbg.to_lowercase().contains("de6601a"));
    }

    #[test]
    fn generate_round_trips_through_file_text() -> Result<(), KeyError> {
        let k = Key::generate()?;
        let again = Key::parse(&k.to_file_text())?;
        assert_eq!(k.id(), again.id());
        assert_eq!(k.secret[..], again.secret[..]);
        assert_ne!(Key::generate()?.id(), k.id());
        Ok(())
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 8452 Appendix C.2 (AEAD_AES_256_GCM_SIV) vectors without associated data, and the
    /// two Appendix C.3 counter-wrap vectors: key, nonce, plaintext, ciphertext || tag.
    const RFC_8452: &[(&str, &str, &str, &str)] = &[
        (
            "0100000000000000000000000000000000000000000000000000000000000000",
            "030000000000000000000000",
            "",
            "07f5f4169bbf55a8400cd47ea6fd400f",
        ),
        (
            "0100000000000000000000000000000000000000000000000000000000000000",
            "030000000000000000000000",
            "0100000000000000",
            "c2ef328e5c71c83b843122130f7364b761e0b97427e3df28",
        ),
        (
            "0100000000000000000000000000000000000000000000000000000000000000",
            "030000000000000000000000",
            "010000000000000000000000",
            "9aab2aeb3faa0a34aea8e2b18ca50da9ae6559e48fd10f6e5c9ca17e",
        ),
        (
            "0100000000000000000000000000000000000000000000000000000000000000",
            "030000000000000000000000",
            "01000000000000000000000000000000",
            "85a01b63025ba19b7fd3ddfc033b3e76c9eac6fa700942702e90862383c6c366",
        ),
        (
            "0100000000000000000000000000000000000000000000000000000000000000",
            "030000000000000000000000",
            "0100000000000000000000000000000002000000000000000000000000000000",
            "4a6a9db4c8c6549201b9edb53006cba821ec9cf850948a7c86c68ac7539d027f\
             e819e63abcd020b006a976397632eb5d",
        ),
        (
            "0100000000000000000000000000000000000000000000000000000000000000",
            "030000000000000000000000",
            "0100000000000000000000000000000002000000000000000000000000000000\
             03000000000000000000000000000000",
            "c00d121893a9fa603f48ccc1ca3c57ce7499245ea0046db16c53c7c66fe717e3\
             9cf6c748837b61f6ee3adcee17534ed5790bc96880a99ba804bd12c0e6a22cc4",
        ),
        (
            "0100000000000000000000000000000000000000000000000000000000000000",
            "030000000000000000000000",
            "0100000000000000000000000000000002000000000000000000000000000000\
             0300000000000000000000000000000004000000000000000000000000000000",
            "c2d5160a1f8683834910acdafc41fbb1632d4a353e8b905ec9a5499ac34f96c7\
             e1049eb080883891a4db8caaa1f99dd004d80487540735234e3744512c6f90ce\
             112864c269fc0d9d88c61fa47e39aa08",
        ),
        (
            "e66021d5eb8e4f4066d4adb9c33560e4f46e44bb3da0015c94f7088736864200",
            "e0eaf5284d884a0e77d31646",
            "",
            "169fbb2fbf389a995f6390af22228a62",
        ),
        (
            "0000000000000000000000000000000000000000000000000000000000000000",
            "000000000000000000000000",
            "000000000000000000000000000000004db923dc793ee6497c76dcc03a98e108",
            "f3f80f2cf0cb2dd9c5984fcda908456cc537703b5ba70324a6793a7bf218d3ea\
             ffffffff000000000000000000000000",
        ),
        (
            "0000000000000000000000000000000000000000000000000000000000000000",
            "000000000000000000000000",
            "eb3640277c7ffd1303c7a542d02d3e4c0000000000000000",
            "18ce4f0b8cb4d0cac65fea8f79257b20888e53e72299e56dffffffff000000000000000000000000",
        ),
    ];

    fn parts(secret: &[u8], nonce: &[u8], sealed: &[u8]) -> (Key, [u8; 12], [u8; 16]) {
        let secret: [u8; 32] = secret.try_into().unwrap();
        let nonce: [u8; 12] = nonce.try_into().unwrap();
        let tag: [u8; 16] = sealed[sealed.len() - 16..].try_into().unwrap();
        (Key::from_parts(KeyId([0; 8]), secret), nonce, tag)
    }

    #[test]
    fn the_seam_seals_and_opens_every_rfc_8452_vector_without_aad() {
        for (i, (secret, nonce, plaintext, sealed)) in RFC_8452.iter().enumerate() {
            let (secret, nonce, plaintext, sealed) =
                (unhex(secret), unhex(nonce), unhex(plaintext), unhex(sealed));
            let (key, nonce, tag) = parts(&secret, &nonce, &sealed);
            let mut buf = sealed[..sealed.len() - 16].to_vec();
            assert_eq!(
                key.open_in_place(&nonce, &tag, &mut buf),
                Ok(()),
                "vector {i}"
            );
            assert_eq!(buf, plaintext, "vector {i}");
            assert_eq!(key.seal_in_place(&nonce, &mut buf), tag, "vector {i}");
            assert_eq!(buf, sealed[..sealed.len() - 16], "vector {i}");
        }
    }

    #[test]
    fn every_single_bit_flip_of_an_rfc_vector_is_rejected_and_zeroed() {
        let (secret, nonce, _, sealed) = RFC_8452[6];
        let (secret, nonce, sealed) = (unhex(secret), unhex(nonce), unhex(sealed));
        let mut rejected = 0;
        for bit in 0..(nonce.len() + sealed.len()) * 8 {
            let (mut nonce, mut sealed) = (nonce.clone(), sealed.clone());
            let (byte, mask) = (bit / 8, 1u8 << (bit % 8));
            if byte < nonce.len() {
                nonce[byte] ^= mask;
            } else {
                sealed[byte - nonce.len()] ^= mask;
            }
            let (key, nonce, tag) = parts(&secret, &nonce, &sealed);
            let mut buf = sealed[..sealed.len() - 16].to_vec();
            assert_eq!(
                key.open_in_place(&nonce, &tag, &mut buf),
                Err(BadTag),
                "bit {bit}"
            );
            assert!(
                buf.iter().all(|&b| b == 0),
                "bit {bit}: plaintext left behind"
            );
            rejected += 1;
        }
        assert_eq!(rejected, (12 + 80) * 8);
    }
}
