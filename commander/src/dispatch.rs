//! Admission and scheduling: at most `max_parallel` children at once, at most `queue` frames
//! waiting for a slot (beyond: dropped and logged), undo deadlines persisted before their
//! command runs and fired on time, and a drain at shutdown.
//! It must never run a command whose undo could not be persisted, nor block one job on another.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{Mutex, Notify, Semaphore};

use crate::config::{Command, Commands};
use crate::exec::{self, Job, Kind};
use crate::undo::{self, Entry, Store};

/// The undo scheduler re-reads the wall clock at least this often (clock steps, suspend).
const UNDO_MAX_SLEEP: Duration = Duration::from_secs(30);

/// Commands and the timeout used for undos whose command is gone; replaced on reload.
#[derive(Debug)]
pub struct Table {
    pub commands: Commands,
    pub default_timeout: Duration,
}

#[derive(Debug)]
pub struct Dispatcher {
    table: RwLock<Arc<Table>>,
    slots: Arc<Semaphore>,
    max_parallel: usize,
    /// Jobs admitted and not finished (waiting + running).
    admitted: AtomicUsize,
    capacity: usize,
    stopping: AtomicBool,
    undo: Mutex<Store>,
    undo_wake: Notify,
    /// Signalled whenever an undo finished (a repeat request waits for a running undo).
    undo_done: Notify,
}

impl Dispatcher {
    pub fn new(table: Table, max_parallel: usize, queue: usize, store: Store) -> Arc<Self> {
        Arc::new(Self {
            table: RwLock::new(Arc::new(table)),
            slots: Arc::new(Semaphore::new(max_parallel)),
            max_parallel,
            admitted: AtomicUsize::new(0),
            capacity: max_parallel.saturating_add(queue),
            stopping: AtomicBool::new(false),
            undo: Mutex::new(store),
            undo_wake: Notify::new(),
            undo_done: Notify::new(),
        })
    }

    pub fn table(&self) -> Arc<Table> {
        match self.table.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn replace_table(&self, table: Table) {
        match self.table.write() {
            Ok(mut t) => *t = Arc::new(table),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(table),
        }
    }

    /// Admit a frame's command: run it when a slot is free, or drop it if the queue is full.
    pub fn submit(self: &Arc<Self>, cmd: &Command, ip: IpAddr) {
        if self.stopping.load(Ordering::SeqCst) {
            tracing::warn!(event = "dropped", reason = "stopping", command = %cmd.name, ip = %ip);
            return;
        }
        let admitted = self
            .admitted
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.capacity).then_some(n + 1)
            });
        if admitted.is_err() {
            tracing::warn!(event = "dropped", reason = "queue_full", command = %cmd.name, ip = %ip, capacity = self.capacity);
            return;
        }
        let this = self.clone();
        let cmd = cmd.clone();
        tokio::spawn(async move {
            this.run_admitted(&cmd, ip).await;
            this.admitted.fetch_sub(1, Ordering::SeqCst);
        });
    }

    async fn run_admitted(self: &Arc<Self>, cmd: &Command, ip: IpAddr) {
        let _slot = loop {
            let Ok(slot) = self.slots.clone().acquire_owned().await else {
                return;
            };
            if self.stopping.load(Ordering::SeqCst) {
                tracing::warn!(event = "dropped", reason = "stopping", command = %cmd.name, ip = %ip);
                return;
            }
            let Some(u) = &cmd.undo else {
                break slot;
            };
            // Registered before the check so an undo finishing in between is not missed.
            let done = self.undo_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            // Persist the undo before doing what it undoes; if that fails, do nothing at all.
            let due = undo::now_unix_ms()
                .saturating_add(u64::try_from(u.after.as_millis()).unwrap_or(u64::MAX));
            match self.schedule_undo(&cmd.name, ip, &u.run, due).await {
                Ok(true) => break slot,
                Ok(false) => {
                    // This command's undo for this IP is running: let it finish first (without
                    // holding a slot it may need), so the command is never undone by an undo
                    // that started before it.
                    drop(slot);
                    tracing::info!(event = "waiting_for_undo", command = %cmd.name, ip = %ip);
                    done.await;
                }
                Err(e) => {
                    tracing::error!(event = "failed", reason = "undo_persist", command = %cmd.name, ip = %ip, error = %e);
                    return;
                }
            }
        };
        let job = Job {
            kind: Kind::Command,
            name: cmd.name.as_str().into(),
            run: cmd.run.as_str().into(),
            ip,
            timeout: cmd.timeout,
        };
        exec::run(&job).await;
    }

    /// Schedule (or extend) and persist an undo; `Ok(false)` if that undo is running right now.
    async fn schedule_undo(
        &self,
        name: &str,
        ip: IpAddr,
        run: &str,
        due: u64,
    ) -> Result<bool, undo::UndoError> {
        let mut store = self.undo.lock().await;
        if store.schedule.is_in_flight(name, ip) {
            return Ok(false);
        }
        let before = store.schedule.get(name, ip);
        let what = store.schedule.schedule(name, ip, run, due);
        let persisted = match store.snapshot() {
            Ok((path, text)) => persist(path, text).await,
            Err(e) => Err(e),
        };
        if let Err(e) = persisted {
            store.schedule.restore(name, ip, before);
            return Err(e);
        }
        tracing::info!(event = "undo_scheduled", command = %name, ip = %ip, due_unix_ms = due, extended = what == undo::Scheduled::Extended);
        drop(store);
        self.undo_wake.notify_one();
        Ok(true)
    }

    /// Fire undos as they come due until shutdown (overdue ones from the state file at once).
    pub async fn undo_loop(self: Arc<Self>) {
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let (due, next) = {
                let mut store = self.undo.lock().await;
                let now = undo::now_unix_ms();
                (store.schedule.take_due(now), store.schedule.next_due())
            };
            for entry in due {
                let this = self.clone();
                tokio::spawn(async move { this.run_undo(entry).await });
            }
            let wait = next.map_or(UNDO_MAX_SLEEP, |n| {
                Duration::from_millis(n.saturating_sub(undo::now_unix_ms())).min(UNDO_MAX_SLEEP)
            });
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.undo_wake.notified() => {}
            }
        }
    }

    async fn run_undo(self: Arc<Self>, entry: Entry) {
        // Undos share the parallelism limit but never the drop-prone queue.
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            return;
        };
        if self.stopping.load(Ordering::SeqCst) {
            // Still in the state file: the next start runs it.
            return;
        }
        let table = self.table();
        let timeout = table
            .commands
            .by_name(&entry.command)
            .map_or(table.default_timeout, |c| c.timeout);
        let job = Job {
            kind: Kind::Undo,
            name: entry.command.as_str().into(),
            run: entry.run.as_str().into(),
            ip: entry.ip,
            timeout,
        };
        // A failed undo is logged and not retried: re-running it forever could do more harm.
        exec::run(&job).await;
        drop(slot);
        let mut store = self.undo.lock().await;
        store.schedule.finished(&entry);
        let persisted = match store.snapshot() {
            Ok((path, text)) => persist(path, text).await,
            Err(e) => Err(e),
        };
        if let Err(e) = persisted {
            // The entry stays in the file and runs again after a restart: at least once, never lost.
            tracing::error!(event = "undo_state_write_failed", command = %entry.command, ip = %entry.ip, error = %e);
        }
        drop(store);
        self.undo_done.notify_waiters();
        self.undo_wake.notify_one();
    }

    pub async fn pending_undos(&self) -> usize {
        self.undo.lock().await.schedule.len()
    }

    /// Stop admitting; wait for running children (each bounded by its timeout + grace).
    pub async fn drain(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.undo_wake.notify_one();
        let n = u32::try_from(self.max_parallel).unwrap_or(u32::MAX);
        let _all = self.slots.acquire_many(n).await;
    }
}

async fn persist(path: std::path::PathBuf, text: String) -> Result<(), undo::UndoError> {
    match tokio::task::spawn_blocking(move || undo::write(&path, &text)).await {
        Ok(r) => r,
        Err(e) => Err(undo::UndoError::Io {
            path: "undo state".to_owned(),
            source: std::io::Error::other(e),
        }),
    }
}
