//! Loading the key directory: every `*.key` file (stem = key name), permission checks,
//! duplicate ids, and the per-key allow-lists mapped to command hashes.
//! It must never log or print key material: only key ids and file names leave this module.

use ruroco_kit::key_file::KeyFileError;
use ruroco_kit::trust::{Access, Kind, Owner, Rule, TrustError, Who};
use ruroco_proto::gate::Permit;
use ruroco_proto::{CmdHash, Key, KeyId};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::config::KeyConfig;

/// More key files than this is a misconfiguration, not a deployment.
pub const MAX_KEYS: usize = 4096;

/// A key file: owned by root (or the server user), readable by the server user, never by
/// others, writable by nobody but its owner, without an extended ACL.
pub const KEY_RULE: Rule = Rule {
    what: "key file",
    kind: Kind::File,
    owner: Owner::RootOrUser,
    forbidden: 0o027,
    need: Access::READ,
    fix_access: "chown root:{group} {path} && chmod 0640 {path}",
    create: None,
};

/// One loaded key with what it may do.
#[derive(Debug)]
pub struct LoadedKey {
    pub name: String,
    pub path: PathBuf,
    pub key: Key,
    /// `None`: every command; `Some`: only these hashes.
    pub allowed: Option<Vec<CmdHash>>,
    /// The command names behind `allowed`, for `--check` output.
    pub allowed_names: Option<Vec<String>>,
}

/// All keys, looked up by the clear key id of a datagram.
#[derive(Debug, Default)]
pub struct KeySet {
    by_id: HashMap<KeyId, LoadedKey>,
    /// `*.key` entries that are neither a regular file nor a symlink (a directory, a FIFO…):
    /// skipped; `--check` prints and the start logs a warning naming each.
    pub skipped: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("keys_dir {path}: cannot read the directory: {source}")]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path}: cannot stat: {source}")]
    Stat {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error("{0}")]
    File(#[from] KeyFileError),
    #[error("key files {first} and {second} have the same key id {id}: remove one of them")]
    Duplicate {
        first: PathBuf,
        second: PathBuf,
        id: KeyId,
    },
    #[error(
        "keys_dir {0}: no *.key files: create one with `ruroco-server gen-key {0}/<name>.key` (root:ruroco 0640)"
    )]
    NoKeys(PathBuf),
    #[error("keys_dir {0}: more than {MAX_KEYS} key files")]
    TooMany(PathBuf),
    #[error(
        "config [keys.{name}]: no key file {dir}/{name}.key: fix the name or remove the section"
    )]
    UnknownSection { name: String, dir: PathBuf },
}

impl KeySet {
    /// Load every `*.key` file in `dir` and attach the allow-lists from `[keys.<stem>]`, as
    /// this process's own user (a reload, after the privilege drop).
    pub fn load(dir: &Path, sections: &BTreeMap<String, KeyConfig>) -> Result<Self, KeysError> {
        Self::load_for(dir, sections, &Who::current())
    }

    /// Load the keys as [`Self::load`], trusting `dir` ([`crate::config::KEYS_DIR_RULE`]) and
    /// each key file ([`KEY_RULE`]) only as `who` will see them.
    pub fn load_for(
        dir: &Path,
        sections: &BTreeMap<String, KeyConfig>,
        who: &Who,
    ) -> Result<Self, KeysError> {
        crate::config::KEYS_DIR_RULE.check_path(dir, who)?;
        let mut by_id: HashMap<KeyId, LoadedKey> = HashMap::new();
        let mut skipped = Vec::new();
        for path in key_files(dir)? {
            let Some(loaded) = load_file(path.clone(), sections, who)? else {
                skipped.push(path);
                continue;
            };
            if let Some(prev) = by_id.get(&loaded.key.id()) {
                return Err(KeysError::Duplicate {
                    first: prev.path.clone(),
                    second: loaded.path,
                    id: loaded.key.id(),
                });
            }
            by_id.insert(loaded.key.id(), loaded);
        }
        if by_id.is_empty() {
            return Err(KeysError::NoKeys(dir.to_owned()));
        }
        for name in sections.keys() {
            if !by_id.values().any(|k| &k.name == name) {
                return Err(KeysError::UnknownSection {
                    name: name.clone(),
                    dir: dir.to_owned(),
                });
            }
        }
        Ok(Self { by_id, skipped })
    }

    /// After a reload that failed: the keys of `previous` that still stand on their own. A key
    /// stays only if exactly one `*.key` file in `dir` holds it and that file passes every
    /// check [`KeySet::load`] makes; its allow-list is then taken from `sections`. A key whose
    /// file is gone, unreadable or refused is dropped, and no key that `previous` did not have
    /// is ever added: a failed reload can only take keys away. An unreadable or untrusted `dir`
    /// keeps none.
    pub fn salvage(
        previous: &KeyNames,
        dir: &Path,
        sections: &BTreeMap<String, KeyConfig>,
    ) -> Self {
        let who = Who::current();
        if crate::config::KEYS_DIR_RULE.check_path(dir, &who).is_err() {
            return Self::default();
        }
        let Ok(files) = key_files(dir) else {
            return Self::default();
        };
        let mut found: HashMap<KeyId, Option<LoadedKey>> = HashMap::new();
        for path in files {
            let Ok(Some(loaded)) = load_file(path, sections, &who) else {
                continue;
            };
            let id = loaded.key.id();
            if !previous.contains(&id) {
                continue;
            }
            // A second file with the same key makes its allow-list ambiguous: drop it.
            found
                .entry(id)
                .and_modify(|k| *k = None)
                .or_insert(Some(loaded));
        }
        Self {
            by_id: found
                .into_iter()
                .filter_map(|(id, k)| Some((id, k?)))
                .collect(),
            skipped: Vec::new(),
        }
    }

    #[cfg(test)]
    pub fn get(&self, id: &KeyId) -> Option<&LoadedKey> {
        self.by_id.get(id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The names of the keys, for reload messages once the keys went to the gate.
    pub fn names(&self) -> KeyNames {
        KeyNames {
            by_id: self
                .by_id
                .iter()
                .map(|(id, k)| (*id, (k.path.clone(), k.name.clone())))
                .collect(),
        }
    }

    /// The keys and their allow-lists, for the gate.
    pub fn into_permits(self) -> impl Iterator<Item = Permit> {
        self.by_id.into_values().map(|k| Permit {
            key: k.key,
            allowed: k.allowed,
        })
    }

    /// Keys sorted by file name, for stable `--check` output.
    pub fn sorted(&self) -> Vec<&LoadedKey> {
        let mut v: Vec<_> = self.by_id.values().collect();
        v.sort_by(|a, b| a.path.cmp(&b.path));
        v
    }
}

/// The keys in use by id, with their file and name: what a reload reports and what a failed
/// reload may keep ([`KeySet::salvage`]), while the keys themselves live in the gate.
#[derive(Debug, Default)]
pub struct KeyNames {
    by_id: HashMap<KeyId, (PathBuf, String)>,
}

impl KeyNames {
    /// Whether a key with this id is in use.
    pub fn contains(&self, id: &KeyId) -> bool {
        self.by_id.contains_key(id)
    }

    /// The names of the keys here that `other` lacks, in file-name order.
    pub fn missing_from(&self, other: &KeyNames) -> Vec<String> {
        let mut v: Vec<_> = self
            .by_id
            .iter()
            .filter(|(id, _)| !other.contains(id))
            .map(|(_, (path, name))| (path, name))
            .collect();
        v.sort();
        v.into_iter().map(|(_, name)| name.clone()).collect()
    }
}

/// The `*.key` paths in `dir`, sorted (at most [`MAX_KEYS`]).
fn key_files(dir: &Path) -> Result<Vec<PathBuf>, KeysError> {
    let rd = std::fs::read_dir(dir).map_err(|source| KeysError::ReadDir {
        path: dir.to_owned(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|source| KeysError::ReadDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "key") {
            files.push(path);
            if files.len() > MAX_KEYS {
                return Err(KeysError::TooMany(dir.to_owned()));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// One key file with its checks ([`KEY_RULE`] as `who` sees it) and allow-list; `Ok(None)`
/// when `path` is neither a regular file nor a symlink (it is skipped). A symlink is refused
/// by [`KEY_RULE`].
fn load_file(
    path: PathBuf,
    sections: &BTreeMap<String, KeyConfig>,
    who: &Who,
) -> Result<Option<LoadedKey>, KeysError> {
    let stat_err = |source| KeysError::Stat {
        path: path.clone(),
        source,
    };
    let ft = std::fs::symlink_metadata(&path)
        .map_err(stat_err)?
        .file_type();
    if !ft.is_file() && !ft.is_symlink() {
        return Ok(None);
    }
    // Checked by path first (so a file `who` cannot open gets its fix), then again on the
    // opened file, so the file checked is the one that gets read.
    KEY_RULE.check_path(&path, who)?;
    let file = std::fs::File::open(&path).map_err(|source| KeyFileError::Read {
        path: path.clone(),
        source,
    })?;
    KEY_RULE.check_file(&path, &file, who)?;
    let key = ruroco_kit::key_file::read_from(file, &path)?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let names = sections.get(&name).and_then(|s| s.commands.clone());
    Ok(Some(LoadedKey {
        allowed: names
            .as_ref()
            .map(|n| n.iter().map(|c| CmdHash::of_name(c)).collect()),
        allowed_names: names,
        name,
        path,
        key,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write_key(dir: &Path, name: &str, key: &Key, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, key.to_file_text().as_bytes()).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn loads_keys_and_allow_lists() {
        let d = tempfile::tempdir().unwrap();
        let a = Key::generate().unwrap();
        let b = Key::generate().unwrap();
        write_key(d.path(), "a.key", &a, 0o600);
        write_key(d.path(), "b.key", &b, 0o640);
        std::fs::write(d.path().join("README"), "not a key").unwrap();
        let mut sections = BTreeMap::new();
        sections.insert(
            "b".to_owned(),
            KeyConfig {
                commands: Some(vec!["hello".to_owned()]),
            },
        );
        let ks = KeySet::load(d.path(), &sections).unwrap();
        assert_eq!(ks.len(), 2);
        assert!(ks.get(&a.id()).unwrap().allowed.is_none());
        assert_eq!(
            ks.get(&b.id()).unwrap().allowed.as_deref(),
            Some(&[CmdHash::of_name("hello")][..])
        );
    }

    #[test]
    fn refuses_bad_key_dirs() {
        let d = tempfile::tempdir().unwrap();
        let none = BTreeMap::new();
        let e = KeySet::load(d.path(), &none).unwrap_err().to_string();
        assert!(e.contains("no *.key files"), "{e}");

        let a = Key::generate().unwrap();
        let p = write_key(d.path(), "a.key", &a, 0o644);
        let e = KeySet::load(d.path(), &none).unwrap_err().to_string();
        assert!(e.contains("chmod 0640") && e.contains("a.key"), "{e}");

        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_key(d.path(), "copy.key", &a, 0o600);
        let e = KeySet::load(d.path(), &none).unwrap_err().to_string();
        assert!(e.contains("same key id") && e.contains("copy.key"), "{e}");

        std::fs::remove_file(d.path().join("copy.key")).unwrap();
        let mut sections = BTreeMap::new();
        sections.insert("typo".to_owned(), KeyConfig { commands: None });
        let e = KeySet::load(d.path(), &sections).unwrap_err().to_string();
        assert!(e.contains("[keys.typo]"), "{e}");
    }

    #[test]
    fn salvage_keeps_only_previous_keys_that_still_load() {
        let d = tempfile::tempdir().unwrap();
        let (a, b, c, dup) = (
            Key::generate().unwrap(),
            Key::generate().unwrap(),
            Key::generate().unwrap(),
            Key::generate().unwrap(),
        );
        let pa = write_key(d.path(), "a.key", &a, 0o600);
        write_key(d.path(), "b.key", &b, 0o600);
        write_key(d.path(), "dup.key", &dup, 0o600);
        let previous = KeySet::load(d.path(), &BTreeMap::new()).unwrap();
        std::fs::remove_file(pa).unwrap();
        write_key(d.path(), "bad.key", &Key::generate().unwrap(), 0o644);
        write_key(d.path(), "new.key", &c, 0o600);
        write_key(d.path(), "dup2.key", &dup, 0o600);
        assert!(KeySet::load(d.path(), &BTreeMap::new()).is_err());
        let mut sections = BTreeMap::new();
        sections.insert(
            "b".to_owned(),
            KeyConfig {
                commands: Some(vec!["hello".to_owned()]),
            },
        );
        let kept = KeySet::salvage(&previous.names(), d.path(), &sections);
        assert_eq!(
            kept.len(),
            1,
            "only b: a is gone, new is new, dup is ambiguous"
        );
        assert_eq!(
            kept.get(&b.id()).unwrap().allowed.as_deref(),
            Some(&[CmdHash::of_name("hello")][..])
        );
        let gone = KeySet::salvage(&previous.names(), &d.path().join("nope"), &sections);
        assert_eq!(gone.len(), 0);
    }
}
