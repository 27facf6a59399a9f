//! `ruroco-server gen-key PATH`: write a new key file the server accepts, so a server needs no
//! client package to get a key. The key comes from `ruroco_proto::Key::generate` (the same
//! code as `ruroco-client gen`); the file is owned by the caller (root) and the server's group,
//! mode 0640, the ownership the keys directory's files need (ruroco-server(8), FILES).
//! It must never overwrite a file nor leave a half-written key behind.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ruroco_kit::exit::{self, ExitStatus};
use ruroco_proto::{Key, KeyError, KeyId};

/// Mode of a key file `gen-key` writes: the owner (root) reads and writes, the server's group
/// reads, others nothing (what `fsutil::check_secret_mode` accepts).
pub const KEY_FILE_MODE: u32 = 0o640;
/// Mode while the key is written, before the group is set: nobody else may read it meanwhile.
const CREATE_MODE: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum GenKeyError {
    #[error(
        "group {0:?} does not exist: create it (the package's sysusers.d does: systemd-sysusers) or pass --group with the group ruroco-server runs as"
    )]
    NoGroup(String),
    #[error("cannot look up group {group:?}: {source}")]
    Lookup { group: String, source: io::Error },
    #[error("cannot generate a key: {0}")]
    Generate(#[from] KeyError),
    #[error(
        "key file {0} already exists: choose another name, or remove it first to replace the key (the old key stops working)"
    )]
    Exists(PathBuf),
    #[error(
        "key file {path}: cannot create: {source} (does the directory exist and may you write to it?)"
    )]
    Create { path: PathBuf, source: io::Error },
    #[error(
        "key file {path}: inherited an extended POSIX ACL from the default ACL of {dir}, which the server refuses: the file was removed; remove the default ACL with `setfacl -k {dir}` (or all ACLs with `setfacl -b {dir}`) and run gen-key again"
    )]
    Acl { path: PathBuf, dir: PathBuf },
    #[error("key file {path}: cannot write: {source} (the file was removed)")]
    Write { path: PathBuf, source: io::Error },
}

/// The sysexits code (ruroco-server(8), EXIT STATUS).
impl ExitStatus for GenKeyError {
    fn exit_code(&self) -> u8 {
        match self {
            GenKeyError::NoGroup(_) => exit::NOUSER,
            GenKeyError::Generate(_) => exit::SOFTWARE,
            GenKeyError::Exists(_) | GenKeyError::Create { .. } | GenKeyError::Acl { .. } => {
                exit::CANTCREAT
            }
            GenKeyError::Lookup { .. } | GenKeyError::Write { .. } => exit::IOERR,
        }
    }
}

/// Write a fresh key to the new file `path`, owned by the caller and `group`, mode 0640.
/// Refuses an existing path (also a dangling symbolic link); on a failure after the file was
/// created the file is removed. Returns the key's id.
pub fn gen_key(path: &Path, group: &str) -> Result<KeyId, GenKeyError> {
    let gid = match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => g.gid.as_raw(),
        Ok(None) => return Err(GenKeyError::NoGroup(group.to_owned())),
        Err(e) => {
            return Err(GenKeyError::Lookup {
                group: group.to_owned(),
                source: e.into(),
            });
        }
    };
    let key = Key::generate()?;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(CREATE_MODE)
        .open(path)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                GenKeyError::Exists(path.to_owned())
            } else {
                GenKeyError::Create {
                    path: path.to_owned(),
                    source: e,
                }
            }
        })?;
    // A default ACL on the directory gives the new file an access ACL (acl(5)); the server
    // would refuse the key, so refuse it here before writing the key into it.
    if !matches!(ruroco_kit::trust::acl_of_file(&file), Ok(None)) {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(GenKeyError::Acl {
            path: path.to_owned(),
            dir: match path.parent().filter(|p| !p.as_os_str().is_empty()) {
                Some(d) => d.to_owned(),
                None => PathBuf::from("."),
            },
        });
    }
    write_key(file, &key, gid, path).map_err(|source| {
        let _ = std::fs::remove_file(path);
        GenKeyError::Write {
            path: path.to_owned(),
            source,
        }
    })?;
    Ok(key.id())
}

fn write_key(mut file: File, key: &Key, gid: u32, path: &Path) -> io::Result<()> {
    file.write_all(key.to_file_text().as_bytes())?;
    std::os::unix::fs::fchown(&file, None, Some(gid))?;
    // The mode last: a chown may clear mode bits.
    file.set_permissions(Permissions::from_mode(KEY_FILE_MODE))?;
    file.sync_all()?;
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => ruroco_kit::fsutil::sync_dir(dir),
        None => ruroco_kit::fsutil::sync_dir(Path::new(".")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeySet;
    use std::collections::BTreeMap;
    use std::os::unix::fs::MetadataExt;

    /// The caller's primary group: always exists, and fchown to it needs no privilege.
    fn own_group() -> String {
        let gid = nix::unistd::getegid();
        nix::unistd::Group::from_gid(gid).unwrap().unwrap().name
    }

    #[test]
    fn writes_a_key_the_server_loads_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("laptop.key");
        let id = gen_key(&p, &own_group()).unwrap();
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.mode() & 0o7777, KEY_FILE_MODE);
        assert_eq!(meta.gid(), nix::unistd::getegid().as_raw());
        assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
        let keys = KeySet::load(dir.path(), &BTreeMap::new()).unwrap();
        assert_eq!(keys.sorted()[0].key.id(), id);

        let before = std::fs::read(&p).unwrap();
        let e = gen_key(&p, &own_group()).unwrap_err();
        assert!(matches!(e, GenKeyError::Exists(_)), "{e}");
        assert_eq!(e.exit_code(), 73);
        assert_eq!(std::fs::read(&p).unwrap(), before);
    }

    #[test]
    fn unknown_group_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.key");
        let e = gen_key(&p, "no-such-group-ruroco").unwrap_err();
        assert!(matches!(e, GenKeyError::NoGroup(_)), "{e}");
        assert!(e.to_string().contains("--group"), "{e}");
        assert!(!p.exists());
    }

    #[test]
    fn refuses_a_dangling_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.key");
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &p).unwrap();
        let e = gen_key(&p, &own_group()).unwrap_err();
        assert!(matches!(e, GenKeyError::Exists(_)), "{e}");
        assert!(!dir.path().join("elsewhere").exists());
    }
}
