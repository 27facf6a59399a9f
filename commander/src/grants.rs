//! Grants: one (command, IP) whose command has an undo. Lifecycle run → active until a
//! deadline → undo → gone, held in memory here and persisted one root-only file per grant in
//! `<state_dir>/grants/` (atomic writes, so a crash at any instant leaves the old or the new
//! record). Design and decisions: docs/grants.md.
//! It must never lose a grant that may have applied, let an undo overlap its run, keep a
//! deadline further than `undo_after` from now, or write a state it would refuse to load.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ruroco_kit::fsutil;
use ruroco_proto::CmdHash;
use serde::{Deserialize, Serialize};

/// Directory of grant records inside `state_dir`.
pub const GRANTS_DIR: &str = "grants";
/// The pending-undo file of ruroco 0.1.0, imported once at start and then removed.
pub const LEGACY_UNDO_FILE: &str = "undo";
/// Hard bound on grant records loaded at start; `max_grants` cannot be set higher, so the
/// commander never writes more records than it loads.
pub const MAX_GRANTS_HARD: usize = 65536;
/// Longest undo text a command may have (config check), so every record stays small.
pub const MAX_UNDO_TEXT_BYTES: usize = 8 * 1024;
/// Longest command name (config check), so every record stays small.
pub const MAX_COMMAND_NAME_BYTES: usize = 256;
/// A record file larger than this is refused, at start and before it is written. The config
/// limits keep every record below it: TOML escapes a byte as at most 6 (`\u0001`), so undo
/// text and name take at most 6 × (8 KiB + 256) bytes, plus under 300 of fields.
pub const MAX_RECORD_BYTES: u64 = 64 * 1024;
/// The 0.1.0 undo file is read up to this size (its own limit).
const MAX_LEGACY_BYTES: u64 = 16 * 1024 * 1024;
/// Longest `undo_after` (config check); also caps a deadline read from a record.
pub const MAX_UNDO_AFTER: Duration = Duration::from_secs(366 * 86_400);
/// Where the kernel tells which boot this is (proc(5)).
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error(
        "grant record {path} is unreadable ({message}): the access it granted may still be open; run its undo by hand, then delete the file"
    )]
    Corrupt { path: String, message: String },
    #[error("grant state {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "state_dir {path} must be a root-owned directory without group/other write access: chown root {path} && chmod 0700 {path}"
    )]
    UnsafeDir { path: String },
    #[error("{0}")]
    Untrusted(ruroco_kit::trust::TrustError),
    #[error(
        "{path} holds more than {MAX_GRANTS_HARD} grant records: not written by ruroco-commander; move the directory aside after undoing what it lists"
    )]
    TooMany { path: String },
    #[error("cannot read the boot id from {BOOT_ID_PATH}: {source}")]
    BootId {
        #[source]
        source: std::io::Error,
    },
}

/// A grant as stored: `<state_dir>/grants/<cmd hash>_<ip>`, TOML, mode 0600.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub command: String,
    pub ip: IpAddr,
    /// The undo text at grant time, so a later config change still undoes what was done.
    pub undo: String,
    pub undo_after_ms: u64,
    /// `/proc/sys/kernel/random/boot_id` of the boot that made the grant.
    pub boot_id: String,
    /// `running` (the command may be half-applied) or `active`.
    pub state: Stored,
    /// Wall-clock ms when the grant's run started.
    pub since_unix_ms: u64,
    /// Wall-clock ms of the undo (`active` only; 0 while running).
    pub deadline_unix_ms: u64,
    /// Who the command ran as (`user`/`group`), so its undo runs as the same identity even
    /// when the command is gone from the config or its user changed; absent: root (also for
    /// records written before commands had a `user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<RecordedRunAs>,
}

/// The identity a grant's command ran as, as ids (a user deleted or renamed since still
/// undoes as the ids that ran), with the name and home for `USER`/`LOGNAME`/`HOME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedRunAs {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (initgroups(3) at config load), gid included.
    pub groups: Vec<u32>,
    pub home: String,
}

/// The persisted state of a grant; an undo in progress is stored as what it undoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stored {
    Running,
    Active,
}

/// Where a grant is in its lifecycle, in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Its command runs; `revoke` = undo as soon as it finished.
    Running { revoke: bool },
    /// Applied; undone at `deadline` (monotonic) or at the record's wall-clock deadline,
    /// whichever comes first.
    Active { deadline: Instant },
    /// Its undo is due or running; a request for it waits until it is gone.
    Undoing,
}

/// Why a grant is undone (logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UndoReason {
    Expired,
    RunFailed,
    Revoked,
    /// Recorded under an earlier boot.
    Reboot,
    /// Recorded as running: the commander stopped during the run.
    Interrupted,
}

impl UndoReason {
    pub fn as_str(self) -> &'static str {
        match self {
            UndoReason::Expired => "expired",
            UndoReason::RunFailed => "run_failed",
            UndoReason::Revoked => "revoked",
            UndoReason::Reboot => "earlier_boot",
            UndoReason::Interrupted => "interrupted",
        }
    }
}

/// One grant in memory.
#[derive(Debug, Clone)]
pub struct Grant {
    pub record: Record,
    pub phase: Phase,
    /// Set while `Undoing`: why.
    pub reason: Option<UndoReason>,
}

/// Identifies a grant.
pub type GrantKey = (String, IpAddr);

/// What `Grants::revoke` matched: to undo now, undone when their run ends, already undoing.
pub type Revoked = (Vec<Record>, Vec<Record>, Vec<Record>);

/// What a request for a command with an undo may do now (see `Grants::admit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// No grant: run the command (a `Running` record is to be persisted first).
    Run,
    /// Active: extend the deadline, do not run again.
    Extend,
    /// Its run or its undo is in progress: wait for it to end, then ask again.
    Wait,
    /// A limit is reached: refuse without running.
    Limit { per_command: bool },
}

/// The grant table with its limits. Sans-IO: callers persist the records it hands out.
#[derive(Debug)]
pub struct Grants {
    boot_id: String,
    max_total: usize,
    map: BTreeMap<GrantKey, Grant>,
    per_command: BTreeMap<String, usize>,
}

impl Grants {
    pub fn new(boot_id: String, max_total: usize) -> Self {
        Self {
            boot_id,
            max_total: max_total.min(MAX_GRANTS_HARD),
            map: BTreeMap::new(),
            per_command: BTreeMap::new(),
        }
    }

    /// Change the total limit (reload); existing grants stay.
    pub fn set_max_total(&mut self, max_total: usize) {
        self.max_total = max_total.min(MAX_GRANTS_HARD);
    }

    pub fn boot_id(&self) -> &str {
        &self.boot_id
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Grants that are applied right now (running or active, not being undone).
    pub fn active_count(&self) -> usize {
        self.map
            .values()
            .filter(|g| g.phase != Phase::Undoing)
            .count()
    }

    pub fn get(&self, key: &GrantKey) -> Option<&Grant> {
        self.map.get(key)
    }

    /// What a request for `command` at `ip` may do; `per_command_max` is the command's limit.
    pub fn admit(&self, key: &GrantKey, per_command_max: usize) -> Admit {
        match self.map.get(key).map(|g| g.phase) {
            Some(Phase::Active { .. }) => Admit::Extend,
            Some(Phase::Running { .. } | Phase::Undoing) => Admit::Wait,
            None if self.map.len() >= self.max_total => Admit::Limit { per_command: false },
            None if self.per_command.get(&key.0).copied().unwrap_or(0) >= per_command_max => {
                Admit::Limit { per_command: true }
            }
            None => Admit::Run,
        }
    }

    /// Start a grant whose run begins now, as root; returns the record to persist before
    /// running.
    pub fn start(&mut self, key: &GrantKey, undo: &str, undo_after: Duration) -> Record {
        self.start_as(key, undo, undo_after, None)
    }

    /// [`Self::start`] for a command that runs as `run_as` (its undo will too).
    pub fn start_as(
        &mut self,
        key: &GrantKey,
        undo: &str,
        undo_after: Duration,
        run_as: Option<RecordedRunAs>,
    ) -> Record {
        let record = Record {
            command: key.0.clone(),
            ip: key.1,
            undo: undo.to_owned(),
            undo_after_ms: millis(undo_after),
            boot_id: self.boot_id.clone(),
            state: Stored::Running,
            since_unix_ms: now_unix_ms(),
            deadline_unix_ms: 0,
            run_as,
        };
        self.insert(record.clone(), Phase::Running { revoke: false }, None);
        record
    }

    /// Forget a grant whose start could not be persisted.
    pub fn abandon(&mut self, key: &GrantKey) {
        self.remove(key);
    }

    /// The run ended. On success (and not revoked meanwhile) the grant becomes active until
    /// now + `undo_after` and its record is returned for persisting; otherwise it is to be
    /// undone at once, for the returned reason.
    pub fn run_finished(&mut self, key: &GrantKey, success: bool) -> Result<Record, UndoReason> {
        let Some(g) = self.map.get_mut(key) else {
            return Err(UndoReason::RunFailed);
        };
        let revoked = matches!(g.phase, Phase::Running { revoke: true });
        if !success || revoked {
            let reason = if success {
                UndoReason::Revoked
            } else {
                UndoReason::RunFailed
            };
            g.phase = Phase::Undoing;
            g.reason = Some(reason);
            return Err(reason);
        }
        activate(g, Instant::now(), now_unix_ms());
        Ok(g.record.clone())
    }

    /// A repeat while active: the deadline becomes now + `undo_after` (the command's current
    /// one, so a reload that shortened it applies). Returns the record to persist, or `None` if
    /// the grant is not active.
    pub fn extend(&mut self, key: &GrantKey, undo_after: Duration) -> Option<Record> {
        let g = self.map.get_mut(key)?;
        if !matches!(g.phase, Phase::Active { .. }) {
            return None;
        }
        g.record.undo_after_ms = millis(undo_after);
        g.phase = Phase::Active {
            deadline: later(Instant::now(), undo_after),
        };
        // The wall-clock deadline is exactly undo_after from now, even if the clock went back.
        g.record.deadline_unix_ms = now_unix_ms().saturating_add(g.record.undo_after_ms);
        Some(g.record.clone())
    }

    /// Active grants past their deadline (monotonic or wall clock) become `Undoing`.
    pub fn take_due(&mut self, now: Instant, now_unix_ms: u64) -> Vec<Record> {
        let mut due = Vec::new();
        for g in self.map.values_mut() {
            if let Phase::Active { deadline } = g.phase
                && (deadline <= now || g.record.deadline_unix_ms <= now_unix_ms)
            {
                g.phase = Phase::Undoing;
                g.reason = Some(UndoReason::Expired);
                due.push(g.record.clone());
            }
        }
        due
    }

    /// Grants already `Undoing` whose undo has not been handed out (start-up, revoke).
    pub fn undoing(&self) -> Vec<(Record, UndoReason)> {
        self.map
            .values()
            .filter(|g| g.phase == Phase::Undoing)
            .map(|g| (g.record.clone(), g.reason.unwrap_or(UndoReason::Expired)))
            .collect()
    }

    /// The earliest monotonic deadline of an active grant.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.map
            .values()
            .filter_map(|g| match g.phase {
                Phase::Active { deadline } => Some(deadline),
                _ => None,
            })
            .min()
    }

    /// The undo ran (whatever its exit): the grant is gone.
    pub fn undone(&mut self, key: &GrantKey) {
        self.remove(key);
    }

    /// Revoke matching grants: active ones become `Undoing` with their deadline now (returned,
    /// to be persisted and undone now); running ones are undone as soon as their run ends.
    /// Returns (to undo now, running, already being undone).
    pub fn revoke(&mut self, command: Option<&str>, ip: Option<IpAddr>) -> Revoked {
        let mut now = Vec::new();
        let mut later = Vec::new();
        let mut undoing = Vec::new();
        for g in self.map.values_mut() {
            if command.is_some_and(|c| c != g.record.command)
                || ip.is_some_and(|i| i != g.record.ip)
            {
                continue;
            }
            match g.phase {
                Phase::Active { .. } => {
                    g.phase = Phase::Undoing;
                    g.reason = Some(UndoReason::Revoked);
                    // Persisted as due now: a stop before the undo ran undoes it at the next start.
                    g.record.deadline_unix_ms = now_unix_ms();
                    now.push(g.record.clone());
                }
                Phase::Running { .. } => {
                    g.phase = Phase::Running { revoke: true };
                    later.push(g.record.clone());
                }
                Phase::Undoing => undoing.push(g.record.clone()),
            }
        }
        (now, later, undoing)
    }

    /// Every grant, for `ruroco-commander grants`.
    pub fn list(&self) -> impl Iterator<Item = &Grant> {
        self.map.values()
    }

    /// Take a loaded record: of an earlier boot, or recorded while running, it is undone at
    /// once; an active one keeps its deadline, cut to at most `undo_after` from now (a clock
    /// that was ahead when it was made must not keep it open). Returns the record to persist
    /// again when its deadline was cut.
    pub fn load(&mut self, mut record: Record, now: Instant, now_unix_ms: u64) -> Option<Record> {
        let reason = if record.boot_id != self.boot_id {
            Some(UndoReason::Reboot)
        } else if record.state == Stored::Running {
            Some(UndoReason::Interrupted)
        } else {
            None
        };
        if let Some(r) = reason {
            self.insert(record, Phase::Undoing, Some(r));
            return None;
        }
        let latest = now_unix_ms.saturating_add(record.undo_after_ms);
        let cut = record.deadline_unix_ms > latest;
        if cut {
            record.deadline_unix_ms = latest;
        }
        let left = record.deadline_unix_ms.saturating_sub(now_unix_ms);
        let deadline = later(now, Duration::from_millis(left));
        self.insert(record.clone(), Phase::Active { deadline }, None);
        cut.then_some(record)
    }

    fn insert(&mut self, record: Record, phase: Phase, reason: Option<UndoReason>) {
        let key = (record.command.clone(), record.ip);
        let grant = Grant {
            record,
            phase,
            reason,
        };
        if self.map.insert(key.clone(), grant).is_none() {
            *self.per_command.entry(key.0).or_default() += 1;
        }
    }

    fn remove(&mut self, key: &GrantKey) {
        if self.map.remove(key).is_some()
            && let Some(n) = self.per_command.get_mut(&key.0)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_command.remove(&key.0);
            }
        }
    }
}

fn activate(g: &mut Grant, now: Instant, now_unix_ms: u64) {
    let after = Duration::from_millis(g.record.undo_after_ms);
    g.phase = Phase::Active {
        deadline: later(now, after),
    };
    g.reason = None;
    g.record.state = Stored::Active;
    g.record.deadline_unix_ms = now_unix_ms.saturating_add(g.record.undo_after_ms);
}

/// `now + d` for a deadline; a span no `Instant` can hold (a hand-edited record, a
/// `undo_after` of centuries) is cut to `MAX_UNDO_AFTER` instead of overflowing.
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(MAX_UNDO_AFTER))
        .or_else(|| now.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(now)
}

/// What `Store::load_all` found.
#[derive(Debug, Default)]
pub struct Loaded {
    pub records: Vec<Record>,
    /// Entries skipped because the commander cannot have written them (logged as warnings).
    pub foreign: Vec<PathBuf>,
}

/// Can `name` be a record file (`<command hash, 16 hex digits>_<ip>`)?
fn is_record_name(name: &str) -> bool {
    name.split_once('_').is_some_and(|(hash, ip)| {
        hash.len() == 16
            && hash.bytes().all(|b| b.is_ascii_hexdigit())
            && ip.parse::<IpAddr>().is_ok()
    })
}

/// The grant records on disk.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Create `state_dir` (0700) and its `grants/` if missing, then check both with
    /// [`crate::config::STATE_DIR_RULE`] and [`crate::config::GRANTS_DIR_RULE`].
    pub fn open(state_dir: &Path) -> Result<Self, GrantError> {
        let dir = state_dir.join(GRANTS_DIR);
        for d in [state_dir, dir.as_path()] {
            let p = d.display().to_string();
            if !d.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(d)
                    .map_err(|source| GrantError::Io {
                        path: p.clone(),
                        source,
                    })?;
            }
            // The rules `--check` applies too (owner, mode, extended ACLs, the directories
            // above), so both reach one verdict.
            let rule = if d == state_dir {
                &crate::config::STATE_DIR_RULE
            } else {
                &crate::config::GRANTS_DIR_RULE
            };
            rule.check_path(d, &ruroco_kit::trust::Who::current())
                .map_err(GrantError::Untrusted)?;
        }
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of one grant: `<cmd hash hex>_<ip>`.
    pub fn path_of(&self, command: &str, ip: IpAddr) -> PathBuf {
        self.dir.join(format!("{}_{ip}", CmdHash::of_name(command)))
    }

    /// Every record on disk (at most `MAX_GRANTS_HARD`, each at most `MAX_RECORD_BYTES`).
    /// Entries the commander cannot have written (a name not `<16 hex digits>_<ip>`, a
    /// symlink, a directory or another non-regular file) are skipped and listed in `foreign`;
    /// a record file that is not root-owned, writable by others, too large or unreadable
    /// stops start-up (its grant may still be open).
    pub fn load_all(&self) -> Result<Loaded, GrantError> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let d = self.dir.display().to_string();
        let io = |source| GrantError::Io {
            path: d.clone(),
            source,
        };
        let mut loaded = Loaded::default();
        for entry in std::fs::read_dir(&self.dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // Temp files of an interrupted atomic write start with a dot.
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            if !is_record_name(&name) {
                loaded.foreign.push(path);
                continue;
            }
            if loaded.records.len() >= MAX_GRANTS_HARD {
                return Err(GrantError::TooMany { path: d });
            }
            let p = path.display().to_string();
            let corrupt = |message: String| GrantError::Corrupt {
                path: p.clone(),
                message,
            };
            // No symlink is followed, and a FIFO never blocks the start.
            let flags = nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK;
            let file = match std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(flags.bits())
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                    loaded.foreign.push(path);
                    continue;
                }
                Err(e) => return Err(corrupt(e.to_string())),
            };
            let meta = file.metadata().map_err(|e| corrupt(e.to_string()))?;
            if !meta.is_file() {
                loaded.foreign.push(path);
                continue;
            }
            if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
                return Err(corrupt(format!(
                    "owned by uid {} with mode {:04o}, not a root-owned file only root may write",
                    meta.uid(),
                    meta.mode() & 0o7777
                )));
            }
            let mut text = String::new();
            file.take(MAX_RECORD_BYTES + 1)
                .read_to_string(&mut text)
                .map_err(|e| corrupt(e.to_string()))?;
            if text.len() as u64 > MAX_RECORD_BYTES {
                return Err(corrupt(format!("larger than {MAX_RECORD_BYTES} bytes")));
            }
            let mut r: Record =
                toml::from_str(&text).map_err(|e| corrupt(e.to_string().replace('\n', " ")))?;
            r.ip = ruroco_proto::ip::canonical(r.ip);
            if path != self.path_of(&r.command, r.ip) {
                return Err(corrupt(
                    "file name does not match its command and ip".to_owned(),
                ));
            }
            loaded.records.push(r);
        }
        Ok(loaded)
    }

    /// Entries in the directory (records and anything else), for bounds checks.
    fn entries(&self) -> Result<usize, GrantError> {
        let io = |source| GrantError::Io {
            path: self.dir.display().to_string(),
            source,
        };
        Ok(std::fs::read_dir(&self.dir).map_err(io)?.count())
    }

    /// Durably write one record (temp file, fsync, rename, fsync of the directory).
    pub fn write(&self, r: &Record) -> Result<(), GrantError> {
        let path = self.path_of(&r.command, r.ip);
        let io = |source| GrantError::Io {
            path: path.display().to_string(),
            source,
        };
        let text = toml::to_string(r).map_err(|e| io(std::io::Error::other(e)))?;
        if text.len() as u64 > MAX_RECORD_BYTES {
            // Never write what the next start would refuse to load.
            return Err(io(std::io::Error::other(format!(
                "record of {} bytes is larger than {MAX_RECORD_BYTES}",
                text.len()
            ))));
        }
        fsutil::write_atomic(&path, text.as_bytes(), 0o600).map_err(io)
    }

    /// Durably remove one record.
    pub fn remove(&self, command: &str, ip: IpAddr) -> Result<(), GrantError> {
        let path = self.path_of(command, ip);
        let io = |source| GrantError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(e)),
        }
        fsutil::sync_dir(&self.dir).map_err(io)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyFile {
    #[serde(default)]
    undo: Vec<LegacyEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyEntry {
    command: String,
    ip: IpAddr,
    due_unix_ms: u64,
    run: String,
}

/// Import the 0.1.0 pending-undo file `<state_dir>/undo` as active grants of this boot (its
/// entries carry no boot id; an upgrade restarts the commander without a reboot). Each becomes
/// a record on disk before the old file is removed, so a crash in between imports it again.
/// `undo_after_of` gives a command's current `undo_after` (the clamp for its deadline).
pub fn import_legacy(
    state_dir: &Path,
    store: &Store,
    boot_id: &str,
    undo_after_of: impl Fn(&str) -> Option<Duration>,
) -> Result<usize, GrantError> {
    let path = state_dir.join(LEGACY_UNDO_FILE);
    let p = path.display().to_string();
    let text = match fsutil::read_bounded(&path, MAX_LEGACY_BYTES) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(GrantError::Corrupt {
                path: p,
                message: e.to_string(),
            });
        }
    };
    let file: LegacyFile = toml::from_str(&text).map_err(|e| GrantError::Corrupt {
        path: p.clone(),
        message: e.to_string().replace('\n', " "),
    })?;
    let now = now_unix_ms();
    let n = file.undo.len();
    // Checked before writing anything: an import must never leave more records than a start
    // loads.
    if n.saturating_add(store.entries()?) > MAX_GRANTS_HARD {
        return Err(GrantError::Corrupt {
            path: p,
            message: format!(
                "{n} entries, more than the {MAX_GRANTS_HARD} grant records a start loads"
            ),
        });
    }
    for e in file.undo {
        let ip = ruroco_proto::ip::canonical(e.ip);
        // Without a known undo_after, the old deadline itself bounds how long it stays open.
        let after = undo_after_of(&e.command).map_or(e.due_unix_ms.saturating_sub(now), millis);
        store.write(&Record {
            command: e.command,
            ip,
            undo: e.run,
            undo_after_ms: after,
            boot_id: boot_id.to_owned(),
            state: Stored::Active,
            since_unix_ms: now,
            deadline_unix_ms: e.due_unix_ms,
            run_as: None,
        })?;
    }
    std::fs::remove_file(&path)
        .and_then(|()| fsutil::sync_dir(state_dir))
        .map_err(|source| GrantError::Io { path: p, source })?;
    Ok(n)
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`, proc(5)).
pub fn boot_id() -> Result<String, GrantError> {
    std::fs::read_to_string(BOOT_ID_PATH)
        .map(|s| s.trim().to_owned())
        .map_err(|source| GrantError::BootId { source })
}

/// Wall-clock milliseconds since the epoch (persisted deadlines; 0 before 1970).
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: &str, ip: &str) -> GrantKey {
        (c.to_owned(), ip.parse().unwrap())
    }

    const AFTER: Duration = Duration::from_secs(300);

    #[test]
    fn lifecycle_run_active_extend_undo() {
        let mut g = Grants::new("boot-a".into(), 10);
        let k = key("open", "192.0.2.7");
        assert_eq!(g.admit(&k, 10), Admit::Run);
        let r = g.start(&k, "close", AFTER);
        assert_eq!(r.state, Stored::Running);
        assert_eq!(g.admit(&k, 10), Admit::Wait, "no second run while running");
        let r = g.run_finished(&k, true).unwrap();
        assert_eq!(r.state, Stored::Active);
        assert!(r.deadline_unix_ms >= r.since_unix_ms + 300_000);
        assert_eq!(g.admit(&k, 10), Admit::Extend);
        let before = g.next_deadline().unwrap();
        let e = g.extend(&k, AFTER).unwrap();
        assert!(e.deadline_unix_ms >= r.deadline_unix_ms);
        assert!(g.next_deadline().unwrap() >= before);
        assert!(g.take_due(Instant::now(), now_unix_ms()).is_empty());
        let due = g.take_due(Instant::now() + AFTER + Duration::from_secs(1), 0);
        assert_eq!(due.len(), 1);
        assert_eq!(g.admit(&k, 10), Admit::Wait, "no run while its undo runs");
        g.undone(&k);
        assert!(g.is_empty());
        assert_eq!(g.admit(&k, 10), Admit::Run);
    }

    #[test]
    fn failed_or_revoked_runs_are_undone_at_once() {
        let mut g = Grants::new("b".into(), 10);
        let k = key("open", "2001:db8::1");
        g.start(&k, "close", AFTER);
        assert_eq!(g.run_finished(&k, false), Err(UndoReason::RunFailed));
        assert_eq!(g.undoing().len(), 1);
        g.undone(&k);
        g.start(&k, "close", AFTER);
        let (now, later, undoing) = g.revoke(Some("open"), None);
        assert!(now.is_empty() && later.len() == 1 && undoing.is_empty());
        assert_eq!(g.run_finished(&k, true), Err(UndoReason::Revoked));
    }

    #[test]
    fn wall_clock_deadline_fires_even_if_monotonic_has_not() {
        let mut g = Grants::new("b".into(), 10);
        let k = key("open", "192.0.2.1");
        g.start(&k, "close", AFTER);
        let r = g.run_finished(&k, true).unwrap();
        assert_eq!(g.take_due(Instant::now(), r.deadline_unix_ms).len(), 1);
    }

    #[test]
    fn limits_total_and_per_command() {
        let mut g = Grants::new("b".into(), 3);
        for i in 0..2 {
            g.start(&key("a", &format!("192.0.2.{i}")), "u", AFTER);
        }
        assert_eq!(
            g.admit(&key("a", "192.0.2.9"), 2),
            Admit::Limit { per_command: true }
        );
        assert_eq!(g.admit(&key("b", "192.0.2.9"), 2), Admit::Run);
        g.start(&key("b", "192.0.2.9"), "u", AFTER);
        assert_eq!(
            g.admit(&key("c", "192.0.2.9"), 2),
            Admit::Limit { per_command: false }
        );
        assert_eq!(g.admit(&key("a", "192.0.2.0"), 2), Admit::Wait);
    }

    fn record(boot: &str, state: Stored, deadline: u64) -> Record {
        Record {
            command: "open".into(),
            ip: "192.0.2.7".parse().unwrap(),
            undo: "close".into(),
            undo_after_ms: 300_000,
            boot_id: boot.into(),
            state,
            since_unix_ms: 1,
            deadline_unix_ms: deadline,
            run_as: None,
        }
    }

    #[test]
    fn load_undoes_earlier_boots_and_interrupted_runs_and_cuts_far_deadlines() {
        let now = Instant::now();
        let wall = 1_000_000_000_000u64;
        let mut g = Grants::new("this".into(), 10);
        assert!(
            g.load(record("earlier", Stored::Active, wall + 1000), now, wall)
                .is_none()
        );
        assert_eq!(g.undoing()[0].1, UndoReason::Reboot);
        let mut g = Grants::new("this".into(), 10);
        g.load(record("this", Stored::Running, 0), now, wall);
        assert_eq!(g.undoing()[0].1, UndoReason::Interrupted);
        // Made with the clock 30 days ahead: cut to undo_after from now, and persisted so.
        let mut g = Grants::new("this".into(), 10);
        let far = wall + 30 * 86_400_000;
        let cut = g
            .load(record("this", Stored::Active, far), now, wall)
            .unwrap();
        assert_eq!(cut.deadline_unix_ms, wall + 300_000);
        assert!(g.next_deadline().unwrap() <= now + Duration::from_millis(300_000));
        // An ordinary one keeps its deadline.
        let mut g = Grants::new("this".into(), 10);
        assert!(
            g.load(record("this", Stored::Active, wall + 10), now, wall)
                .is_none()
        );
        assert_eq!(g.active_count(), 1);
    }

    #[test]
    fn absurd_spans_from_a_record_do_not_overflow() {
        let mut g = Grants::new("b".into(), 10);
        let mut r = record("b", Stored::Active, u64::MAX);
        r.undo_after_ms = u64::MAX;
        let now = Instant::now();
        g.load(r, now, 5);
        assert!(g.next_deadline().unwrap() <= now + MAX_UNDO_AFTER);
        let k = key("open", "192.0.2.7");
        assert!(g.extend(&k, Duration::MAX).is_some());
    }

    #[test]
    fn store_round_trip_and_refusals() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let st = Store::open(dir.path()).unwrap();
        let r = record("b", Stored::Active, 42);
        st.write(&r).unwrap();
        let mode = std::fs::metadata(st.path_of(&r.command, r.ip))
            .unwrap()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(st.load_all().unwrap().records, vec![r.clone()]);
        st.remove(&r.command, r.ip).unwrap();
        assert!(st.load_all().unwrap().records.is_empty());
        // Not ours: skipped (and warned about), never run.
        std::fs::write(st.dir().join("README"), "hi").unwrap();
        std::fs::write(st.dir().join("x~"), "command = 1").unwrap();
        std::fs::create_dir(st.dir().join("0123456789abcdef_192.0.2.9")).unwrap();
        std::os::unix::fs::symlink(
            st.dir().join("README"),
            st.path_of("open", "192.0.2.8".parse().unwrap()),
        )
        .unwrap();
        let l = st.load_all().unwrap();
        assert!(l.records.is_empty());
        assert_eq!(l.foreign.len(), 4, "{:?}", l.foreign);
        // Ours but unreadable: start-up stops.
        let p = st.path_of("open", "192.0.2.7".parse().unwrap());
        std::fs::write(&p, "command = 1").unwrap();
        let e = st.load_all().unwrap_err().to_string();
        assert!(e.contains("run its undo by hand"), "{e}");
        st.write(&r).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o622)).unwrap();
        let e = st.load_all().unwrap_err().to_string();
        assert!(e.contains("mode 0622"), "{e}");
    }

    #[test]
    fn a_record_at_the_limits_loads_again() {
        let dir = tempfile::tempdir().unwrap();
        let st = Store::open(dir.path()).unwrap();
        let mut r = record("b", Stored::Active, u64::MAX);
        // Control characters: the longest escapes TOML writes.
        r.undo = "\u{1}".repeat(MAX_UNDO_TEXT_BYTES);
        r.command = "\u{2}".repeat(MAX_COMMAND_NAME_BYTES);
        r.boot_id = boot_id().unwrap();
        r.undo_after_ms = u64::MAX;
        r.ip = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe".parse().unwrap();
        st.write(&r).unwrap();
        assert_eq!(st.load_all().unwrap().records, vec![r.clone()]);
        r.undo.push_str(&"\u{1}".repeat(4 * MAX_UNDO_TEXT_BYTES));
        let e = st.write(&r).unwrap_err().to_string();
        assert!(e.contains("larger than"), "refused before writing: {e}");
        assert_eq!(st.load_all().unwrap().records.len(), 1);
    }

    #[test]
    fn legacy_undo_file_is_imported_once() {
        let dir = tempfile::tempdir().unwrap();
        let st = Store::open(dir.path()).unwrap();
        let far = now_unix_ms() + 86_400_000;
        std::fs::write(
            dir.path().join(LEGACY_UNDO_FILE),
            format!("[[undo]]\ncommand = \"open\"\nip = \"::ffff:192.0.2.7\"\ndue_unix_ms = {far}\nrun = \"close\"\n"),
        )
        .unwrap();
        let n = import_legacy(dir.path(), &st, "this", |_| Some(AFTER)).unwrap();
        assert_eq!(n, 1);
        assert!(!dir.path().join(LEGACY_UNDO_FILE).exists());
        let loaded = st.load_all().unwrap().records;
        assert_eq!(loaded[0].ip, "192.0.2.7".parse::<IpAddr>().unwrap());
        let mut g = Grants::new("this".into(), 10);
        let cut = g.load(loaded[0].clone(), Instant::now(), now_unix_ms());
        assert!(cut.is_some(), "a day away, undo_after is 5 min: cut");
        assert_eq!(import_legacy(dir.path(), &st, "this", |_| None).unwrap(), 0);
    }

    #[test]
    fn a_legacy_file_larger_than_a_start_loads_is_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let st = Store::open(dir.path()).unwrap();
        let mut text = String::new();
        for i in 0..=MAX_GRANTS_HARD {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i as u32);
            text.push_str(&format!(
                "[[undo]]\ncommand=\"c\"\nip=\"{ip}\"\ndue_unix_ms=1\nrun=\"u\"\n"
            ));
        }
        std::fs::write(dir.path().join(LEGACY_UNDO_FILE), text).unwrap();
        let e = import_legacy(dir.path(), &st, "b", |_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("65537 entries"), "{e}");
        assert!(dir.path().join(LEGACY_UNDO_FILE).exists(), "kept");
        assert_eq!(st.entries().unwrap(), 0, "nothing written");
    }

    proptest::proptest! {
        /// Whatever the order of requests, run ends, deadlines, revokes and undo ends: at most
        /// one grant per (command, ip), no run admitted while its grant exists in any phase,
        /// and never more grants than the limits.
        #[test]
        fn invariants(ops in proptest::collection::vec((0u8..5, 0u8..4, proptest::bool::ANY), 0..80)) {
            let mut g = Grants::new("b".into(), 3);
            let t0 = Instant::now();
            let mut t = t0;
            for (op, who, flag) in ops {
                let k = key(if who % 2 == 0 { "a" } else { "b" }, &format!("192.0.2.{who}"));
                match op {
                    0 => match g.admit(&k, 2) {
                        Admit::Run => { g.start(&k, "u", Duration::from_secs(1)); }
                        Admit::Extend => { proptest::prop_assert!(g.extend(&k, Duration::from_secs(1)).is_some()); }
                        Admit::Wait => proptest::prop_assert!(g.get(&k).is_some()),
                        Admit::Limit { .. } => proptest::prop_assert!(g.get(&k).is_none()),
                    },
                    1 => if matches!(g.get(&k).map(|x| x.phase), Some(Phase::Running { .. })) {
                        let _ = g.run_finished(&k, flag);
                    },
                    2 => { t += Duration::from_millis(700); g.take_due(t, 0); }
                    3 => if g.get(&k).map(|x| x.phase) == Some(Phase::Undoing) { g.undone(&k); },
                    _ => { g.revoke(flag.then_some("a"), None); }
                }
                proptest::prop_assert!(g.len() <= 3);
                proptest::prop_assert!(g.per_command.values().all(|n| *n <= 2));
            }
        }
    }
}
