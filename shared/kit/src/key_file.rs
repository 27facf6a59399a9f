//! Reading key files from disk: bounded to [`KEY_FILE_MAX_LEN`] bytes, read into zeroized
//! memory, parsed by [`Key::parse`], every error naming the file. Never writes a key file.

use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

use ruroco_proto::key::{Key, KeyError};

/// A key file is one short line; anything longer is not a key file and is not read whole.
pub const KEY_FILE_MAX_LEN: u64 = 4096;

/// Why a key file could not be read as a key; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// open(2) or read(2) failed.
    #[error("key file {path}: cannot read: {source}")]
    Read {
        /// The key file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file holds more than [`KEY_FILE_MAX_LEN`] bytes.
    #[error("key file {path}: larger than {KEY_FILE_MAX_LEN} bytes, not a key file")]
    TooLarge {
        /// The key file.
        path: PathBuf,
    },
    /// The text is not a key ([`Key::parse`]).
    #[error("key file {path}: {source}")]
    Parse {
        /// The key file.
        path: PathBuf,
        /// What is wrong with its text.
        source: KeyError,
    },
}

/// Open, read and parse the key file at `path`.
pub fn load(path: &Path) -> Result<Key, KeyFileError> {
    let file = std::fs::File::open(path).map_err(|source| KeyFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    read_from(file, path)
}

/// Read and parse a key file already opened (so its metadata can be checked on the same
/// inode); `path` names it in errors.
pub fn read_from(file: std::fs::File, path: &Path) -> Result<Key, KeyFileError> {
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
    Key::parse(&text).map_err(|source| KeyFileError::Parse {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn errors_name_the_file_and_oversize_is_not_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.key");
        let e = load(&missing).unwrap_err();
        assert!(matches!(e, KeyFileError::Read { .. }));
        assert!(e.to_string().contains("missing.key"), "{e}");

        let big = dir.path().join("big.key");
        let mut f = std::fs::File::create(&big).unwrap();
        f.write_all(&[b'A'; KEY_FILE_MAX_LEN as usize + 1]).unwrap();
        assert!(matches!(load(&big), Err(KeyFileError::TooLarge { .. })));

        let good = dir.path().join("good.key");
        let key = Key::generate().unwrap();
        std::fs::write(&good, key.to_file_text().as_bytes()).unwrap();
        assert_eq!(load(&good).unwrap().id(), key.id());

        std::fs::write(&good, "AAAA\n").unwrap();
        assert!(matches!(
            load(&good),
            Err(KeyFileError::Parse {
                source: KeyError::WrongLength(3),
                ..
            })
        ));
    }
}
