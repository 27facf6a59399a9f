//! The grant schedule, sans-IO: one grant per (command, IP) whose command has an undo, its
//! lifecycle run → active until a deadline → undo → gone, repeats that extend it, the limits,
//! and which undo is due when. Every decision takes the time as an argument ([`Now`]); the
//! only clock reads here are `Now::read` and `now_unix_ms`, which the callers use to make that
//! argument. The records it hands out are persisted by the caller (store.rs). Design:
//! docs/grants.md.
//! It must never lose a grant that may have applied, let an undo overlap its run, keep a
//! deadline further than `undo_after` from now, nor touch a file, a socket or a process.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Hard bound on grant records loaded at start; `max_grants` cannot be set higher, so the
/// commander never writes more records than it loads.
pub(crate) const MAX_GRANTS_HARD: usize = 65536;
/// Longest undo text a command may have (config check), so every record stays small.
pub(crate) const MAX_UNDO_TEXT_BYTES: usize = 8 * 1024;
/// Longest command name (config check), so every record stays small.
pub(crate) const MAX_COMMAND_NAME_BYTES: usize = 256;
/// Longest `undo_after` (config check); also caps a deadline read from a record.
pub(crate) const MAX_UNDO_AFTER: Duration = Duration::from_secs(366 * 86_400);

/// The two clocks a schedule decision reads: monotonic for the timers, wall clock for the
/// deadlines persisted in records (so a reboot or a restart can still tell what is due).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Now {
    /// Monotonic time of the decision.
    pub(crate) mono: Instant,
    /// Wall-clock milliseconds since the Unix epoch (0 before 1970).
    pub(crate) wall_ms: u64,
}

impl Now {
    /// Both clocks, read now.
    pub(crate) fn read() -> Self {
        Self {
            mono: Instant::now(),
            wall_ms: now_unix_ms(),
        }
    }
}

/// A grant as stored: `<state_dir>/grants/<cmd hash>_<ip>`, TOML, mode 0600.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Record {
    pub(crate) command: String,
    pub(crate) ip: IpAddr,
    /// The undo text at grant time, so a later config change still undoes what was done.
    pub(crate) undo: String,
    pub(crate) undo_after_ms: u64,
    /// `/proc/sys/kernel/random/boot_id` of the boot that made the grant.
    pub(crate) boot_id: String,
    /// `running` (the command may be half-applied) or `active`.
    pub(crate) state: Stored,
    /// Wall-clock ms when the grant's run started.
    pub(crate) since_unix_ms: u64,
    /// Wall-clock ms of the undo (`active` only; 0 while running).
    pub(crate) deadline_unix_ms: u64,
    /// Who the command ran as (`user`/`group`), so its undo runs as the same identity even
    /// when the command is gone from the config or its user changed; absent: root (also for
    /// records written before commands had a `user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) run_as: Option<RecordedRunAs>,
}

/// The identity a grant's command ran as, as ids (a user deleted or renamed since still
/// undoes as the ids that ran), with the name and home for `USER`/`LOGNAME`/`HOME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecordedRunAs {
    pub(crate) user: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Supplementary groups (initgroups(3) at config load), gid included.
    pub(crate) groups: Vec<u32>,
    pub(crate) home: String,
}

/// The persisted state of a grant; an undo in progress is stored as what it undoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Stored {
    Running,
    Active,
}

/// Where a grant is in its lifecycle, in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
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
pub(crate) enum UndoReason {
    Expired,
    RunFailed,
    Revoked,
    /// Recorded under an earlier boot.
    Reboot,
    /// Recorded as running: the commander stopped during the run.
    Interrupted,
}

impl UndoReason {
    pub(crate) fn as_str(self) -> &'static str {
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
pub(crate) struct Grant {
    pub(crate) record: Record,
    pub(crate) phase: Phase,
    /// Set while `Undoing`: why.
    pub(crate) reason: Option<UndoReason>,
}

/// Identifies a grant.
pub(crate) type GrantKey = (String, IpAddr);

/// What `Grants::revoke` matched: to undo now, undone when their run ends, already undoing.
pub(crate) type Revoked = (Vec<Record>, Vec<Record>, Vec<Record>);

/// What a request for a command with an undo may do now (see `Grants::admit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
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
pub(crate) struct Grants {
    boot_id: String,
    max_total: usize,
    map: BTreeMap<GrantKey, Grant>,
    per_command: BTreeMap<String, usize>,
}

impl Grants {
    pub(crate) fn new(boot_id: String, max_total: usize) -> Self {
        Self {
            boot_id,
            max_total: max_total.min(MAX_GRANTS_HARD),
            map: BTreeMap::new(),
            per_command: BTreeMap::new(),
        }
    }

    /// Change the total limit (reload); existing grants stay.
    pub(crate) fn set_max_total(&mut self, max_total: usize) {
        self.max_total = max_total.min(MAX_GRANTS_HARD);
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Grants that are applied right now (running or active, not being undone).
    pub(crate) fn active_count(&self) -> usize {
        self.map
            .values()
            .filter(|g| g.phase != Phase::Undoing)
            .count()
    }

    pub(crate) fn get(&self, key: &GrantKey) -> Option<&Grant> {
        self.map.get(key)
    }

    /// What a request for `command` at `ip` may do; `per_command_max` is the command's limit.
    pub(crate) fn admit(&self, key: &GrantKey, per_command_max: usize) -> Admit {
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

    /// `start_as` for a command that runs as root.
    #[cfg(test)]
    fn start(&mut self, key: &GrantKey, undo: &str, undo_after: Duration, now: Now) -> Record {
        self.start_as(key, undo, undo_after, None, now)
    }

    /// Start a grant whose run begins at `now`, its command run as `run_as` (root when `None`;
    /// its undo will run as the same identity). Returns the record to persist before running.
    pub(crate) fn start_as(
        &mut self,
        key: &GrantKey,
        undo: &str,
        undo_after: Duration,
        run_as: Option<RecordedRunAs>,
        now: Now,
    ) -> Record {
        let record = Record {
            command: key.0.clone(),
            ip: key.1,
            undo: undo.to_owned(),
            undo_after_ms: millis(undo_after),
            boot_id: self.boot_id.clone(),
            state: Stored::Running,
            since_unix_ms: now.wall_ms,
            deadline_unix_ms: 0,
            run_as,
        };
        self.insert(record.clone(), Phase::Running { revoke: false }, None);
        record
    }

    /// Forget a grant whose start could not be persisted.
    pub(crate) fn abandon(&mut self, key: &GrantKey) {
        self.remove(key);
    }

    /// The run ended. On success (and not revoked meanwhile) the grant becomes active until
    /// now + `undo_after` and its record is returned for persisting; otherwise it is to be
    /// undone at once, for the returned reason.
    pub(crate) fn run_finished(
        &mut self,
        key: &GrantKey,
        success: bool,
        now: Now,
    ) -> Result<Record, UndoReason> {
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
        activate(g, now);
        Ok(g.record.clone())
    }

    /// A repeat while active: the deadline becomes now + `undo_after` (the command's current
    /// one, so a reload that shortened it applies). Returns the record to persist, or `None` if
    /// the grant is not active.
    pub(crate) fn extend(
        &mut self,
        key: &GrantKey,
        undo_after: Duration,
        now: Now,
    ) -> Option<Record> {
        let g = self.map.get_mut(key)?;
        if !matches!(g.phase, Phase::Active { .. }) {
            return None;
        }
        g.record.undo_after_ms = millis(undo_after);
        g.phase = Phase::Active {
            deadline: later(now.mono, undo_after),
        };
        // The wall-clock deadline is exactly undo_after from now, even if the clock went back.
        g.record.deadline_unix_ms = now.wall_ms.saturating_add(g.record.undo_after_ms);
        Some(g.record.clone())
    }

    /// Active grants past their deadline (monotonic or wall clock) become `Undoing`.
    pub(crate) fn take_due(&mut self, now: Now) -> Vec<Record> {
        let mut due = Vec::new();
        for g in self.map.values_mut() {
            if let Phase::Active { deadline } = g.phase
                && (deadline <= now.mono || g.record.deadline_unix_ms <= now.wall_ms)
            {
                g.phase = Phase::Undoing;
                g.reason = Some(UndoReason::Expired);
                due.push(g.record.clone());
            }
        }
        due
    }

    /// Grants already `Undoing` whose undo has not been handed out (start-up, revoke).
    pub(crate) fn undoing(&self) -> Vec<(Record, UndoReason)> {
        self.map
            .values()
            .filter(|g| g.phase == Phase::Undoing)
            .map(|g| (g.record.clone(), g.reason.unwrap_or(UndoReason::Expired)))
            .collect()
    }

    /// The earliest monotonic deadline of an active grant.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.map
            .values()
            .filter_map(|g| match g.phase {
                Phase::Active { deadline } => Some(deadline),
                _ => None,
            })
            .min()
    }

    /// The undo ran (whatever its exit): the grant is gone.
    pub(crate) fn undone(&mut self, key: &GrantKey) {
        self.remove(key);
    }

    /// Revoke matching grants: active ones become `Undoing` with their deadline now (returned,
    /// to be persisted and undone now); running ones are undone as soon as their run ends.
    /// Returns (to undo now, running, already being undone).
    pub(crate) fn revoke(
        &mut self,
        command: Option<&str>,
        ip: Option<IpAddr>,
        now: Now,
    ) -> Revoked {
        let mut at_once = Vec::new();
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
                    g.record.deadline_unix_ms = now.wall_ms;
                    at_once.push(g.record.clone());
                }
                Phase::Running { .. } => {
                    g.phase = Phase::Running { revoke: true };
                    later.push(g.record.clone());
                }
                Phase::Undoing => undoing.push(g.record.clone()),
            }
        }
        (at_once, later, undoing)
    }

    /// Every grant, for `ruroco-commander grants`.
    pub(crate) fn list(&self) -> impl Iterator<Item = &Grant> {
        self.map.values()
    }

    /// Take a loaded record: of an earlier boot, or recorded while running, it is undone at
    /// once; an active one keeps its deadline, cut to at most `undo_after` from now (a clock
    /// that was ahead when it was made must not keep it open). Returns the record to persist
    /// again when its deadline was cut.
    pub(crate) fn load(&mut self, mut record: Record, now: Now) -> Option<Record> {
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
        let latest = now.wall_ms.saturating_add(record.undo_after_ms);
        let cut = record.deadline_unix_ms > latest;
        if cut {
            record.deadline_unix_ms = latest;
        }
        let left = record.deadline_unix_ms.saturating_sub(now.wall_ms);
        let deadline = later(now.mono, Duration::from_millis(left));
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

fn activate(g: &mut Grant, now: Now) {
    let after = Duration::from_millis(g.record.undo_after_ms);
    g.phase = Phase::Active {
        deadline: later(now.mono, after),
    };
    g.reason = None;
    g.record.state = Stored::Active;
    g.record.deadline_unix_ms = now.wall_ms.saturating_add(g.record.undo_after_ms);
}

/// `now + d` for a deadline; a span no `Instant` can hold (a hand-edited record, a
/// `undo_after` of centuries) is cut to `MAX_UNDO_AFTER` instead of overflowing.
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(MAX_UNDO_AFTER))
        .or_else(|| now.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(now)
}

/// Wall-clock milliseconds since the epoch (persisted deadlines; 0 before 1970).
pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

/// A duration in whole milliseconds, saturating at `u64::MAX`.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
pub(crate) mod tests {
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
        let r = g.start(&k, "close", AFTER, Now::read());
        assert_eq!(r.state, Stored::Running);
        assert_eq!(g.admit(&k, 10), Admit::Wait, "no second run while running");
        let r = g.run_finished(&k, true, Now::read()).unwrap();
        assert_eq!(r.state, Stored::Active);
        assert!(r.deadline_unix_ms >= r.since_unix_ms + 300_000);
        assert_eq!(g.admit(&k, 10), Admit::Extend);
        let before = g.next_deadline().unwrap();
        let e = g.extend(&k, AFTER, Now::read()).unwrap();
        assert!(e.deadline_unix_ms >= r.deadline_unix_ms);
        assert!(g.next_deadline().unwrap() >= before);
        assert!(g.take_due(Now::read()).is_empty());
        let due = g.take_due(Now {
            mono: Instant::now() + AFTER + Duration::from_secs(1),
            wall_ms: 0,
        });
        assert_eq!(due.len(), 1);
        assert_eq!(g.admit(&k, 10), Admit::Wait, "no run while its undo runs");
        g.undone(&k);
        assert!(g.is_empty());
        assert_eq!(g.admit(&k, 10), Admit::Run);
    }

    /// The schedule reads no clock: the same `Now`s give the same deadlines to the millisecond.
    #[test]
    fn deadlines_follow_the_given_time_only() {
        let t0 = Instant::now();
        let at = |s: u64| Now {
            mono: t0 + Duration::from_secs(s),
            wall_ms: 1_000_000 + s * 1000,
        };
        let mut g = Grants::new("b".into(), 10);
        let k = key("open", "192.0.2.7");
        assert_eq!(g.start(&k, "close", AFTER, at(0)).since_unix_ms, 1_000_000);
        let r = g.run_finished(&k, true, at(1)).unwrap();
        assert_eq!(r.deadline_unix_ms, 1_001_000 + 300_000);
        assert_eq!(g.next_deadline(), Some(at(1).mono + AFTER));
        let e = g.extend(&k, AFTER, at(10)).unwrap();
        assert_eq!(e.deadline_unix_ms, 1_010_000 + 300_000);
        assert_eq!(g.next_deadline(), Some(at(10).mono + AFTER));
        assert!(g.take_due(at(309)).is_empty());
        assert_eq!(g.take_due(at(310)).len(), 1);
        let (now, ..) = g.revoke(None, None, at(311));
        assert!(now.is_empty(), "already undoing");
    }

    #[test]
    fn failed_or_revoked_runs_are_undone_at_once() {
        let mut g = Grants::new("b".into(), 10);
        let k = key("open", "2001:db8::1");
        g.start(&k, "close", AFTER, Now::read());
        assert_eq!(
            g.run_finished(&k, false, Now::read()),
            Err(UndoReason::RunFailed)
        );
        assert_eq!(g.undoing().len(), 1);
        g.undone(&k);
        g.start(&k, "close", AFTER, Now::read());
        let (now, later, undoing) = g.revoke(Some("open"), None, Now::read());
        assert!(now.is_empty() && later.len() == 1 && undoing.is_empty());
        assert_eq!(
            g.run_finished(&k, true, Now::read()),
            Err(UndoReason::Revoked)
        );
    }

    #[test]
    fn wall_clock_deadline_fires_even_if_monotonic_has_not() {
        let mut g = Grants::new("b".into(), 10);
        let k = key("open", "192.0.2.1");
        g.start(&k, "close", AFTER, Now::read());
        let r = g.run_finished(&k, true, Now::read()).unwrap();
        assert_eq!(
            g.take_due(Now {
                mono: Instant::now(),
                wall_ms: r.deadline_unix_ms
            })
            .len(),
            1
        );
    }

    #[test]
    fn limits_total_and_per_command() {
        let mut g = Grants::new("b".into(), 3);
        for i in 0..2 {
            g.start(&key("a", &format!("192.0.2.{i}")), "u", AFTER, Now::read());
        }
        assert_eq!(
            g.admit(&key("a", "192.0.2.9"), 2),
            Admit::Limit { per_command: true }
        );
        assert_eq!(g.admit(&key("b", "192.0.2.9"), 2), Admit::Run);
        g.start(&key("b", "192.0.2.9"), "u", AFTER, Now::read());
        assert_eq!(
            g.admit(&key("c", "192.0.2.9"), 2),
            Admit::Limit { per_command: false }
        );
        assert_eq!(g.admit(&key("a", "192.0.2.0"), 2), Admit::Wait);
    }

    /// A grant record of `open` for 192.0.2.7 (shared with the store's tests).
    pub(crate) fn record(boot: &str, state: Stored, deadline: u64) -> Record {
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
            g.load(
                record("earlier", Stored::Active, wall + 1000),
                Now {
                    mono: now,
                    wall_ms: wall
                }
            )
            .is_none()
        );
        assert_eq!(g.undoing()[0].1, UndoReason::Reboot);
        let mut g = Grants::new("this".into(), 10);
        g.load(
            record("this", Stored::Running, 0),
            Now {
                mono: now,
                wall_ms: wall,
            },
        );
        assert_eq!(g.undoing()[0].1, UndoReason::Interrupted);
        // Made with the clock 30 days ahead: cut to undo_after from now, and persisted so.
        let mut g = Grants::new("this".into(), 10);
        let far = wall + 30 * 86_400_000;
        let cut = g
            .load(
                record("this", Stored::Active, far),
                Now {
                    mono: now,
                    wall_ms: wall,
                },
            )
            .unwrap();
        assert_eq!(cut.deadline_unix_ms, wall + 300_000);
        assert!(g.next_deadline().unwrap() <= now + Duration::from_millis(300_000));
        // An ordinary one keeps its deadline.
        let mut g = Grants::new("this".into(), 10);
        assert!(
            g.load(
                record("this", Stored::Active, wall + 10),
                Now {
                    mono: now,
                    wall_ms: wall
                }
            )
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
        g.load(
            r,
            Now {
                mono: now,
                wall_ms: 5,
            },
        );
        assert!(g.next_deadline().unwrap() <= now + MAX_UNDO_AFTER);
        let k = key("open", "192.0.2.7");
        assert!(g.extend(&k, Duration::MAX, Now::read()).is_some());
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
                        Admit::Run => { g.start(&k, "u", Duration::from_secs(1), Now::read()); }
                        Admit::Extend => { proptest::prop_assert!(g.extend(&k, Duration::from_secs(1), Now::read()).is_some()); }
                        Admit::Wait => proptest::prop_assert!(g.get(&k).is_some()),
                        Admit::Limit { .. } => proptest::prop_assert!(g.get(&k).is_none()),
                    },
                    1 => if matches!(g.get(&k).map(|x| x.phase), Some(Phase::Running { .. })) {
                        let _ = g.run_finished(&k, flag, Now::read());
                    },
                    2 => { t += Duration::from_millis(700); g.take_due(Now { mono: t, wall_ms: 0 }); }
                    3 => if g.get(&k).map(|x| x.phase) == Some(Phase::Undoing) { g.undone(&k); },
                    _ => { g.revoke(flag.then_some("a"), None, Now::read()); }
                }
                proptest::prop_assert!(g.len() <= 3);
                proptest::prop_assert!(g.per_command.values().all(|n| *n <= 2));
            }
        }
    }
}
