//! What a frame asks for and how it is carried out: the decision (run, unknown, malformed;
//! for a command with an undo: run, extend the grant, wait, or refuse), at most `max_parallel` children at once, at most `queue` frames
//! waiting for a slot (beyond: refused), the grant lifecycle of commands with an undo (run →
//! active → undo, repeats extend, failures undo at once; docs/grants.md), undos fired on
//! time, and a drain at shutdown.
//! It must never run a command whose grant could not be persisted, start an undo while its
//! run runs or a run while its undo runs, nor block one job on another.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ruroco_kit::notify;
use ruroco_proto::frame::FrameError;
use ruroco_proto::{AckOutcome, CmdHash, Frame};
use tokio::sync::{Mutex, Notify, OwnedSemaphorePermit, Semaphore, oneshot};

use crate::config::{Command, Commands};
use crate::exec::{self, Job, Kind};
use crate::quiet::Quiet;
use crate::schedule::{self, Admit, GrantKey, Grants, Now, Record, UndoReason, now_unix_ms};
use crate::store::{GrantError, Store};

/// The undo scheduler re-reads the wall clock at least this often (clock steps, suspend).
const UNDO_MAX_SLEEP: Duration = Duration::from_secs(30);

/// What a frame asks for (the sans-IO part of the commander).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision<'a> {
    /// A configured command, for this client IP.
    Run(&'a Command, IpAddr),
    /// No configured command has this hash.
    Unknown(CmdHash, IpAddr),
    /// Not a frame the server sends (docs/protocol.md).
    Malformed(FrameError),
}

/// The decision for one parsed (or malformed) frame against the commands in effect.
pub(crate) fn decide(commands: &Commands, frame: Result<Frame, FrameError>) -> Decision<'_> {
    match frame {
        Ok(f) => match commands.get(f.cmd) {
            Some(c) => Decision::Run(c, f.ip),
            None => Decision::Unknown(f.cmd, f.ip),
        },
        Err(e) => Decision::Malformed(e),
    }
}

/// Commands and the timeout used for undos whose command is gone; replaced on reload.
#[derive(Debug)]
pub(crate) struct Table {
    pub(crate) commands: Commands,
    pub(crate) default_timeout: Duration,
}

/// How `submit` took a frame.
#[derive(Debug)]
pub(crate) enum Submitted {
    /// Admitted: the outcome arrives when it is final; a closed receiver means the commander
    /// stopped before running it (the frame is not acknowledged, so the server sends it again).
    Queued(oneshot::Receiver<AckOutcome>),
    /// Refused at once (queue full).
    Refused,
}

/// One grant as `ruroco-commander grants` shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct GrantView {
    pub(crate) command: String,
    pub(crate) ip: IpAddr,
    /// `running`, `active` or `undoing`; in a revoke's answer also `revoked` (its undo started
    /// now).
    pub(crate) state: String,
    pub(crate) since_unix_ms: u64,
    /// Milliseconds until the undo (active grants only).
    pub(crate) expires_in_ms: Option<u64>,
}

#[derive(Debug)]
pub(crate) struct Dispatcher {
    table: RwLock<Arc<Table>>,
    slots: Arc<Semaphore>,
    max_parallel: usize,
    /// Jobs admitted and not finished (waiting + running).
    admitted: AtomicUsize,
    capacity: usize,
    stopping: AtomicBool,
    grants: Mutex<Grants>,
    store: Arc<Store>,
    /// Wakes the undo scheduler (a new deadline).
    wake: Notify,
    /// Signalled whenever a grant changed phase or went away (waiting requests re-check).
    changed: Notify,
    /// Signalled once when draining starts (connections stop reading frames).
    stop: Notify,
    /// Throttled warnings for what the server's uid can cause at any rate.
    pub(crate) quiet: Quiet,
    commands_len: AtomicUsize,
    /// Shown before the counts in `STATUS=` until the next reload: a failed reload, or
    /// settings waiting for a restart.
    note: RwLock<Option<String>>,
}

impl Dispatcher {
    pub(crate) fn new(
        table: Table,
        max_parallel: usize,
        queue: usize,
        grants: Grants,
        store: Store,
    ) -> Arc<Self> {
        let n = table.commands.len();
        Arc::new(Self {
            table: RwLock::new(Arc::new(table)),
            slots: Arc::new(Semaphore::new(max_parallel)),
            max_parallel,
            admitted: AtomicUsize::new(0),
            capacity: max_parallel.saturating_add(queue),
            stopping: AtomicBool::new(false),
            grants: Mutex::new(grants),
            store: Arc::new(store),
            wake: Notify::new(),
            changed: Notify::new(),
            stop: Notify::new(),
            quiet: Quiet::default(),
            commands_len: AtomicUsize::new(n),
            note: RwLock::new(None),
        })
    }

    pub(crate) fn table(&self) -> Arc<Table> {
        match self.table.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) async fn replace_table(&self, table: Table, max_grants: usize) {
        self.commands_len
            .store(table.commands.len(), Ordering::Relaxed);
        match self.table.write() {
            Ok(mut t) => *t = Arc::new(table),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(table),
        }
        let mut g = self.grants.lock().await;
        g.set_max_total(max_grants);
        self.report(&g);
    }

    /// Set (or clear) the note `STATUS=` shows before the counts; sent with the next status.
    pub(crate) fn set_note(&self, note: Option<String>) {
        match self.note.write() {
            Ok(mut n) => *n = note,
            Err(poisoned) => *poisoned.into_inner() = note,
        }
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Resolves once the commander is stopping.
    pub(crate) async fn stopped(&self) {
        let stop = self.stop.notified();
        tokio::pin!(stop);
        stop.as_mut().enable();
        if self.is_stopping() {
            return;
        }
        stop.await;
    }

    /// Admit a frame's command: it runs when a slot is free, or is refused if the queue is full.
    pub(crate) fn submit(self: &Arc<Self>, cmd: &Command, ip: IpAddr) -> Submitted {
        let admitted = self
            .admitted
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.capacity).then_some(n + 1)
            });
        if admitted.is_err() {
            if self.quiet.allow("queue_full") {
                tracing::warn!(event = "refused", reason = "queue_full", command = %cmd.name, ip = %ip, capacity = self.capacity);
            }
            return Submitted::Refused;
        }
        let (tx, rx) = oneshot::channel();
        let this = self.clone();
        let cmd = cmd.clone();
        tokio::spawn(async move {
            let outcome = match &cmd.undo {
                None => this.run_plain(&cmd, ip).await,
                Some(_) => this.run_grant(&cmd, ip).await,
            };
            this.admitted.fetch_sub(1, Ordering::SeqCst);
            if let Some(o) = outcome {
                let _ = tx.send(o);
            }
        });
        Submitted::Queued(rx)
    }

    /// A slot to run a child in; `None` once stopping (the frame stays unacknowledged).
    async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        let slot = self.slots.clone().acquire_owned().await.ok()?;
        (!self.is_stopping()).then_some(slot)
    }

    async fn run_plain(&self, cmd: &Command, ip: IpAddr) -> Option<AckOutcome> {
        let _slot = self.slot().await?;
        Some(outcome_of(&exec::run(&command_job(cmd, ip)).await))
    }

    /// A command with an undo: extend an active grant, wait for a running run or undo of the
    /// same grant, or persist a new grant, run, and then activate it or undo it at once.
    async fn run_grant(self: &Arc<Self>, cmd: &Command, ip: IpAddr) -> Option<AckOutcome> {
        let undo = cmd.undo.as_ref()?;
        let key: GrantKey = (cmd.name.clone(), ip);
        let slot = loop {
            let slot = self.slot().await?;
            // Registered before the check so a change in between is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let mut g = self.grants.lock().await;
            match g.admit(&key, cmd.max_grants) {
                Admit::Extend => {
                    let Some(record) = g.extend(&key, undo.after, Now::read()) else {
                        return Some(AckOutcome::Failed);
                    };
                    // On a failed write the file keeps the earlier deadline: a crash then undoes
                    // early, never late.
                    let persisted = self.persist(&record).await;
                    tracing::info!(
                        event = "extended",
                        command = %cmd.name,
                        ip = %ip,
                        expires_in_ms = expires_in_ms(&record),
                        persisted = persisted.is_ok(),
                    );
                    drop(g);
                    self.wake.notify_one();
                    return Some(AckOutcome::Done);
                }
                Admit::Wait => {
                    drop(g);
                    drop(slot);
                    tracing::debug!(event = "waiting", command = %cmd.name, ip = %ip);
                    changed.await;
                }
                Admit::Limit { per_command } => {
                    if self.quiet.allow("grant_limit") {
                        tracing::warn!(
                            event = "refused",
                            reason = "grant_limit",
                            command = %cmd.name,
                            ip = %ip,
                            limit = if per_command { "per_command" } else { "total" },
                            active = g.len(),
                            "refused before running: raise max_grants in commander.toml if this is legitimate"
                        );
                    }
                    return Some(AckOutcome::Refused);
                }
                Admit::Run => {
                    let run_as = cmd.run_as.as_deref().map(exec::RunAs::to_record);
                    let record = g.start_as(&key, &undo.run, undo.after, run_as, Now::read());
                    if let Err(e) = self.persist(&record).await {
                        g.abandon(&key);
                        tracing::error!(event = "failed", reason = "grant_persist", command = %cmd.name, ip = %ip, error = %e, "not run: its grant could not be recorded");
                        self.changed.notify_waiters();
                        return Some(AckOutcome::Refused);
                    }
                    self.report(&g);
                    break slot;
                }
            }
        };
        let outcome = exec::run(&command_job(cmd, ip)).await;
        let mut g = self.grants.lock().await;
        match g.run_finished(&key, outcome.success(), Now::read()) {
            Ok(record) => {
                let persisted = self.persist(&record).await;
                if let Err(e) = &persisted {
                    // The file still says "running": a restart undoes it at once (fail closed).
                    tracing::error!(event = "grant_state_write_failed", command = %cmd.name, ip = %ip, error = %e);
                }
                tracing::info!(
                    event = "granted",
                    command = %cmd.name,
                    ip = %ip,
                    expires_in_ms = expires_in_ms(&record),
                );
                drop(g);
                self.changed.notify_waiters();
                self.wake.notify_one();
                drop(slot);
            }
            Err(reason) => {
                let record = g.get(&key).map(|x| x.record.clone());
                drop(g);
                if let Some(record) = record {
                    self.run_undo(record, reason, slot).await;
                }
            }
        }
        Some(outcome_of(&outcome))
    }

    /// Run one undo in `slot`, then forget its grant (a failed undo is logged, not retried:
    /// re-running it forever could do more harm).
    async fn run_undo(&self, record: Record, reason: UndoReason, slot: OwnedSemaphorePermit) {
        let table = self.table();
        // The undo runs as its command ran (the identity recorded with the grant, root when
        // none), with the command's timeout now (default_timeout if it is gone from the config).
        let cmd = table.commands.by_name(&record.command);
        let timeout = cmd.map_or(table.default_timeout, |c| c.timeout);
        let run_as = record
            .run_as
            .as_ref()
            .map(|r| Arc::new(exec::RunAs::from_record(r)));
        tracing::info!(event = "undo", reason = reason.as_str(), command = %record.command, ip = %record.ip);
        let job = Job {
            kind: Kind::Undo,
            name: record.command.as_str().into(),
            run: record.undo.as_str().into(),
            ip: record.ip,
            timeout,
            run_as,
        };
        exec::run(&job).await;
        drop(slot);
        let key = (record.command.clone(), record.ip);
        let mut g = self.grants.lock().await;
        if let Err(e) = self.remove(&record).await {
            // The record stays: the next start undoes it again (at least once, never lost).
            tracing::error!(event = "grant_state_write_failed", command = %record.command, ip = %record.ip, error = %e);
        }
        g.undone(&key);
        self.report(&g);
        drop(g);
        self.changed.notify_waiters();
    }

    fn spawn_undo(self: &Arc<Self>, record: Record, reason: UndoReason) {
        let this = self.clone();
        tokio::spawn(async move {
            // Undos share the parallelism limit but never the refusing queue.
            if let Some(slot) = this.slot().await {
                this.run_undo(record, reason, slot).await;
            }
        });
    }

    /// Undo what start-up found to undo (earlier boot, interrupted runs, overdue), then fire
    /// undos as deadlines pass, until shutdown.
    pub(crate) async fn undo_loop(self: Arc<Self>) {
        let at_start = self.grants.lock().await.undoing();
        for (record, reason) in at_start {
            self.spawn_undo(record, reason);
        }
        loop {
            if self.is_stopping() {
                return;
            }
            let (due, next) = {
                let mut g = self.grants.lock().await;
                (g.take_due(Now::read()), g.next_deadline())
            };
            for record in due {
                self.spawn_undo(record, UndoReason::Expired);
            }
            let wait = next.map_or(UNDO_MAX_SLEEP, |n| {
                n.saturating_duration_since(Instant::now())
                    .min(UNDO_MAX_SLEEP)
            });
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    /// `ruroco-commander revoke`: undo matching active grants now; running ones are undone
    /// when their run ends. Returns what was revoked.
    pub(crate) async fn revoke(
        self: &Arc<Self>,
        command: Option<&str>,
        ip: Option<IpAddr>,
    ) -> Vec<GrantView> {
        let (now, later, undoing) = self.grants.lock().await.revoke(command, ip, Now::read());
        for r in &now {
            if let Err(e) = self.persist(r).await {
                // The record keeps its earlier deadline: a stop before the undo undoes it then.
                tracing::error!(event = "grant_state_write_failed", command = %r.command, ip = %r.ip, error = %e);
            }
        }
        let mut out: Vec<GrantView> = undoing.iter().map(|r| view(r, "undoing", None)).collect();
        for r in later {
            tracing::info!(event = "revoke", command = %r.command, ip = %r.ip, detail = "undone when its run ends");
            out.push(view(&r, "running", None));
        }
        for r in now {
            tracing::info!(event = "revoke", command = %r.command, ip = %r.ip);
            out.push(view(&r, "revoked", None));
            self.spawn_undo(r, UndoReason::Revoked);
        }
        out
    }

    /// Every grant, for `ruroco-commander grants`.
    pub(crate) async fn list(&self) -> Vec<GrantView> {
        let g = self.grants.lock().await;
        let now = Instant::now();
        g.list()
            .map(|x| match x.phase {
                schedule::Phase::Running { .. } => view(&x.record, "running", None),
                schedule::Phase::Active { deadline } => {
                    let left = deadline.saturating_duration_since(now);
                    let wall = x.record.deadline_unix_ms.saturating_sub(now_unix_ms());
                    let ms = u64::try_from(left.as_millis())
                        .unwrap_or(u64::MAX)
                        .min(wall);
                    view(&x.record, "active", Some(ms))
                }
                schedule::Phase::Undoing => view(&x.record, "undoing", None),
            })
            .collect()
    }

    /// Grants running or active right now, and all grants (records kept on disk).
    pub(crate) async fn grant_counts(&self) -> (usize, usize) {
        let g = self.grants.lock().await;
        (g.active_count(), g.len())
    }

    /// `STATUS=`: commands and active grants.
    fn report(&self, g: &Grants) {
        let line = status_line(self.commands_len.load(Ordering::Relaxed), g.active_count());
        let note = match self.note.read() {
            Ok(n) => n.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        match note {
            Some(n) => notify::status(&format!("{n}; {line}")),
            None => notify::status(&line),
        }
    }

    async fn persist(&self, record: &Record) -> Result<(), GrantError> {
        let store = self.store.clone();
        let record = record.clone();
        blocking(move || store.write(&record)).await
    }

    async fn remove(&self, record: &Record) -> Result<(), GrantError> {
        let store = self.store.clone();
        let (command, ip) = (record.command.clone(), record.ip);
        blocking(move || store.remove(&command, ip)).await
    }

    /// Stop admitting; wait for running children (each bounded by its timeout + grace); jobs
    /// still waiting for a slot end without an outcome.
    pub(crate) async fn drain(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stop.notify_waiters();
        self.wake.notify_one();
        self.changed.notify_waiters();
        let n = u32::try_from(self.max_parallel).unwrap_or(u32::MAX);
        let _all = self.slots.acquire_many(n).await;
        self.slots.close();
        self.changed.notify_waiters();
    }
}

/// `STATUS=` text of the commander.
pub(crate) fn status_line(commands: usize, active_grants: usize) -> String {
    format!("{commands} commands, {active_grants} active grants")
}

fn command_job(cmd: &Command, ip: IpAddr) -> Job {
    Job {
        kind: Kind::Command,
        name: cmd.name.as_str().into(),
        run: cmd.run.as_str().into(),
        ip,
        timeout: cmd.timeout,
        run_as: cmd.run_as.clone(),
    }
}

fn outcome_of(o: &exec::Outcome) -> AckOutcome {
    if o.success() {
        AckOutcome::Done
    } else {
        AckOutcome::Failed
    }
}

fn expires_in_ms(r: &Record) -> u64 {
    r.deadline_unix_ms.saturating_sub(now_unix_ms())
}

fn view(r: &Record, state: &str, expires_in_ms: Option<u64>) -> GrantView {
    GrantView {
        command: r.command.clone(),
        ip: r.ip,
        state: state.to_owned(),
        since_unix_ms: r.since_unix_ms,
        expires_in_ms,
    }
}

async fn blocking(
    f: impl FnOnce() -> Result<(), GrantError> + Send + 'static,
) -> Result<(), GrantError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(GrantError::Io {
            path: "grant state".to_owned(),
            source: std::io::Error::other(e),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    #[test]
    fn decisions() {
        let c = Config::parse("[commands]\nhello = \"true\"\n", Path::new("t")).unwrap();
        let ip: IpAddr = "2001:db8::5".parse().unwrap();
        let known = Frame {
            cmd: CmdHash::of_name("hello"),
            ip,
        };
        assert!(
            matches!(decide(&c.commands, Ok(known)), Decision::Run(cmd, i) if cmd.name == "hello" && i == ip)
        );
        let unknown = Frame {
            cmd: CmdHash::of_name("nope"),
            ip,
        };
        assert_eq!(
            decide(&c.commands, Ok(unknown)),
            Decision::Unknown(CmdHash::of_name("nope"), ip)
        );
        let mut zero_ip = known.to_bytes();
        zero_ip[8..].fill(0);
        assert_eq!(
            decide(&c.commands, Frame::from_bytes(&zero_ip)),
            Decision::Malformed(FrameError::NoIp)
        );
    }
}
