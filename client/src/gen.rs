//! `gen`: make a new key and write it to a 0600 file (or print it to stdout).
//! Never overwrites an existing key file unless asked to with `--force`.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ruroco_kit::fsutil;
use ruroco_proto::{Key, KeyError, KeyId};

/// Mode of a key file the client writes.
const KEY_FILE_MODE: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("cannot generate a key: {0}")]
    Generate(#[from] KeyError),
    #[error(
        "key file {0} already exists: pass --force to overwrite it (the old key stops working)"
    )]
    Exists(PathBuf),
    #[error("key file {path}: cannot write: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot write the key to stdout: {0}")]
    Stdout(io::Error),
}

/// Write a fresh key to `path` with mode 0600: a new file unless `force`, in which case any
/// existing file is replaced atomically. Returns the new key's id.
pub fn gen_to_file(path: &Path, force: bool) -> Result<KeyId, GenError> {
    let key = Key::generate()?;
    let text = key.to_file_text();
    let write_err = |source| GenError::Write {
        path: path.to_owned(),
        source,
    };
    if force {
        fsutil::write_atomic(path, text.as_bytes(), KEY_FILE_MODE).map_err(write_err)?;
    } else {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(KEY_FILE_MODE)
            .open(path)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    GenError::Exists(path.to_owned())
                } else {
                    write_err(e)
                }
            })?;
        f.write_all(text.as_bytes()).map_err(write_err)?;
        f.sync_all().map_err(write_err)?;
    }
    Ok(key.id())
}

/// Print a fresh key's file text to `out`.
pub fn gen_to_writer(out: &mut impl Write) -> Result<KeyId, GenError> {
    let key = Key::generate()?;
    out.write_all(key.to_file_text().as_bytes())
        .and_then(|()| out.flush())
        .map_err(GenError::Stdout)?;
    Ok(key.id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_0600_and_refuses_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        let id = gen_to_file(&p, false).unwrap();
        let k = ruroco_kit::key_file::load(&p).unwrap();
        assert_eq!(k.id(), id);
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(matches!(gen_to_file(&p, false), Err(GenError::Exists(_))));
        assert_eq!(ruroco_kit::key_file::load(&p).unwrap().id(), id);
        let id2 = gen_to_file(&p, true).unwrap();
        assert_ne!(id, id2);
        assert_eq!(ruroco_kit::key_file::load(&p).unwrap().id(), id2);
    }

    #[test]
    fn prints_a_parsable_key() {
        let mut out = Vec::new();
        let id = gen_to_writer(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(Key::parse(&text).unwrap().id(), id);
    }
}
