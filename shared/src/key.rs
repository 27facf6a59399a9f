//! Key files: one line of standard base64 holding `key_id (8) || AES-256 key (32)`.
//! The secret half is zeroized on drop and never printed; only the key id may be logged.

use aes_gcm_siv::Aes256GcmSiv;
use aes_gcm_siv::aead::KeyInit;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::fmt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

use crate::ids::KeyId;
use crate::siv::KeyGeneratingKey;

/// Decoded size of a key file: key id plus the AES-256 key.
pub const KEY_FILE_BYTES: usize = 40;
/// A key file is one short line; anything longer is not a key file and is not read whole.
pub const KEY_FILE_MAX_LEN: u64 = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("not valid base64: {0} (a key file is one line made by `ruroco-client gen`)")]
    BadBase64(String),
    #[error("decodes to {0} bytes, expected {KEY_FILE_BYTES} (8-byte key id + 32-byte key)")]
    WrongLength(usize),
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("key file {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path}: larger than {KEY_FILE_MAX_LEN} bytes, not a key file")]
    TooLarge { path: PathBuf },
    #[error("key file {path}: {source}")]
    Parse { path: PathBuf, source: KeyError },
}

/// A shared key: its public id, the secret, and the secret's expanded AES key for opening
/// datagrams (the server's hot path). Sealing builds the crate's cipher per call.
pub struct Key {
    id: KeyId,
    secret: Zeroizing<[u8; 32]>,
    opener: KeyGeneratingKey,
}

impl Key {
    pub fn from_parts(id: KeyId, secret: [u8; 32]) -> Self {
        let secret = Zeroizing::new(secret);
        let opener = KeyGeneratingKey::new(&secret);
        Self { id, secret, opener }
    }

    /// Parse the text of a key file; surrounding whitespace is ignored.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let raw = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|e| KeyError::BadBase64(e.to_string()))?,
        );
        if raw.len() != KEY_FILE_BYTES {
            return Err(KeyError::WrongLength(raw.len()));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&raw[..8]);
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&raw[8..]);
        let key = Self::from_parts(KeyId(id), secret);
        zeroize::Zeroize::zeroize(&mut secret);
        Ok(key)
    }

    /// Read and parse a key file, naming the file in every error.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let file = std::fs::File::open(path).map_err(|source| KeyFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::read_from(file, path)
    }

    /// Parse a key file already opened (so its metadata can be checked on the same inode);
    /// `path` names it in errors.
    pub fn read_from(file: std::fs::File, path: &Path) -> Result<Self, KeyFileError> {
        use std::io::Read;
        let mut text = Zeroizing::new(String::new());
        file.take(KEY_FILE_MAX_LEN + 1)
            .read_to_string(&mut text)
            .map_err(|source| KeyFileError::Read {
                path: path.to_owned(),
                source,
            })?;
        if text.len() as u64 > KEY_FILE_MAX_LEN {
            return Err(KeyFileError::TooLarge {
                path: path.to_owned(),
            });
        }
        Self::parse(&text).map_err(|source| KeyFileError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// A new key from the OS CSPRNG.
    pub fn generate() -> Result<Self, KeyError> {
        let mut raw = Zeroizing::new([0u8; KEY_FILE_BYTES]);
        getrandom::fill(&mut raw[..]).map_err(|e| KeyError::Random(e.to_string()))?;
        let mut id = [0u8; 8];
        id.copy_from_slice(&raw[..8]);
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&raw[8..]);
        let key = Self::from_parts(KeyId(id), secret);
        zeroize::Zeroize::zeroize(&mut secret);
        Ok(key)
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

    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The `aes-gcm-siv` cipher for sealing (zeroized on drop).
    pub(crate) fn cipher(&self) -> Aes256GcmSiv {
        Aes256GcmSiv::new(aes_gcm_siv::Key::<Aes256GcmSiv>::from_slice(
            &self.secret[..],
        ))
    }

    pub(crate) fn opener(&self) -> &KeyGeneratingKey {
        &self.opener
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
}
