//! Group commit of the replay floors, off the receive loop: the floor-writer thread and the
//! bookkeeping of what waits for which write. At most one write is in flight; what is
//! accepted meanwhile waits for the next one. It must never let a frame leave before the
//! write that covers its floor succeeded, nor hold more than `MAX_PENDING` datagrams.

use ruroco_proto::Accepted;
#[cfg(test)]
use ruroco_proto::KeyId;
use ruroco_proto::gate::{self, Floors};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::mpsc;
use tokio::sync::oneshot;

use crate::receive;
use crate::replay::{self, ReplayError, ReplayState};
use crate::sandbox::FilesRestricted;

/// Accepted datagrams that may wait for the next floor write while one is in flight. When
/// this many are waiting the socket is not read until the write completes: the kernel's
/// receive buffer takes the back-pressure and memory stays bounded.
pub(crate) const MAX_PENDING: usize = 4096;

/// One write for the [`Writer`] thread, and where to report its outcome.
#[derive(Debug)]
struct Job {
    floors: Floors,
    done: oneshot::Sender<Result<Floors, ReplayError>>,
}

/// The thread that performs durable writes, one at a time, off the receive loop.
///
/// A plain thread started once, before the sandbox, rather than `spawn_blocking`: tokio's
/// blocking pool creates threads lazily (and lets idle ones exit after 10 s), and after
/// confinement `clone` fails, which tokio treats as fatal. It must be started after Landlock
/// (so it inherits the ruleset on kernels without Landlock's thread sync: [`Writer::spawn`]
/// takes the proof) and before seccomp (which covers all threads and forbids `clone`:
/// [`FilesRestricted::restrict_syscalls`] takes the writer).
#[derive(Debug)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Start the thread writing `path`, once Landlock is in place. It ends when the `Writer`
    /// is dropped.
    pub(crate) fn spawn(path: PathBuf, _landlocked: &FilesRestricted) -> std::io::Result<Self> {
        Self::start(path)
    }

    /// [`Writer::spawn`] without the sandbox, for unit tests.
    #[cfg(test)]
    pub(crate) fn spawn_unconfined(path: PathBuf) -> std::io::Result<Self> {
        Self::start(path)
    }

    fn start(path: PathBuf) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (started, running) = mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("ruroco-persist".to_owned())
            .spawn(move || {
                let _ = started.send(());
                for job in rx {
                    let result = replay::write(&path, &job.floors).map(|()| job.floors);
                    let _ = job.done.send(result);
                }
            })?;
        // Return only once the thread runs its own code: its start-up (glibc's rseq
        // registration, which it treats as fatal when refused; the thread name) must be done
        // before seccomp is applied.
        running
            .recv()
            .map_err(|_| std::io::Error::other("the floor writer thread did not start"))?;
        Ok(Self { jobs })
    }

    /// Queue a durable write of `floors`; the receiver yields them back once they are on disk.
    /// If the thread is gone the receiver reports a closed channel (treat it as a failure).
    pub(crate) fn write(&self, floors: Floors) -> oneshot::Receiver<Result<Floors, ReplayError>> {
        let (done, rx) = oneshot::channel();
        // On a send error the job, and with it `done`, is dropped: `rx` then reports closed.
        let _ = self.jobs.send(Job { floors, done });
        rx
    }
}

/// An accepted datagram waiting for its floor to be durable: (decision, real source).
pub(crate) type Waiting = (Accepted, IpAddr);

/// How a write ended: its datagrams, and whether their floors are now durable.
pub(crate) type Written = (Vec<Waiting>, Result<(), ReplayError>);

/// Group commit: frames leave only after the write that covers their floor succeeded, so no
/// frame leaves before its floor is on disk; the file is only ever replaced by a complete,
/// fsynced state, so a crash at any instant leaves floors at least as high as every frame
/// that left.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    /// The floors on disk, as last written successfully.
    durable: ReplayState,
    in_flight: Option<InFlight>,
    /// Accepted since the in-flight write started (at most `MAX_PENDING`).
    pending: Vec<Waiting>,
    /// The highest counter per key in `pending`.
    pending_floors: Floors,
}

/// The write on its way to disk and the frames it releases.
#[derive(Debug)]
struct InFlight {
    batch: Vec<Waiting>,
    done: oneshot::Receiver<Result<Floors, ReplayError>>,
}

impl GroupCommit {
    /// Start from the floors on disk.
    pub(crate) fn new(durable: ReplayState) -> Self {
        Self {
            durable,
            in_flight: None,
            pending: Vec::with_capacity(receive::BATCH),
            pending_floors: Floors::new(),
        }
    }

    /// The floors on disk, as last written successfully.
    pub(crate) fn durable(&self) -> &ReplayState {
        &self.durable
    }

    /// The floors of the accepted datagrams that wait for the next write (not the failed
    /// one): with the durable floors, what the gate falls back to after a failed write.
    pub(crate) fn waiting_floors(&self) -> &Floors {
        &self.pending_floors
    }

    /// Whether a write is on its way to disk.
    pub(crate) fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// `a` (from `source`) waits for the next write.
    pub(crate) fn accept(&mut self, a: Accepted, source: IpAddr) {
        gate::raise(&mut self.pending_floors, a.key_id, a.counter);
        self.pending.push((a, source));
    }

    /// Room for one more receive batch without exceeding `MAX_PENDING`.
    pub(crate) fn has_room(&self) -> bool {
        self.pending.len() + receive::BATCH <= MAX_PENDING
    }

    /// Start a write of the pending batch, unless one is in flight or nothing is pending.
    pub(crate) fn start(&mut self, writer: &Writer) {
        if self.in_flight.is_some() || self.pending.is_empty() {
            return;
        }
        let floors = std::mem::take(&mut self.pending_floors);
        let done = writer.write(self.durable.raised(&floors));
        self.in_flight = Some(InFlight {
            batch: std::mem::replace(&mut self.pending, Vec::with_capacity(receive::BATCH)),
            done,
        });
    }

    /// Wait for the in-flight write (forever when there is none, for `select!`). On success
    /// its floors are durable from now on.
    pub(crate) async fn written(&mut self) -> Written {
        let Some(w) = self.in_flight.as_mut() else {
            return std::future::pending().await;
        };
        let result = (&mut w.done).await.unwrap_or_else(|_| {
            Err(ReplayError::Write {
                path: self.durable.path().to_owned(),
                source: std::io::Error::other("the floor writer thread is gone"),
            })
        });
        let batch = self.in_flight.take().map(|w| w.batch).unwrap_or_default();
        (batch, result.map(|floors| self.durable.install(floors)))
    }

    /// The durable floor of `id` (0 for none).
    #[cfg(test)]
    fn durable_floor(&self, id: &KeyId) -> u128 {
        self.durable.floor(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruroco_proto::gate::{Gate, Limits, Now, Permit};
    use ruroco_proto::protocol::{Plaintext, VERSION, seal_random};
    use ruroco_proto::{CmdHash, Key, Policy, Reject};
    use std::time::{SystemTime, UNIX_EPOCH};

    const A: KeyId = KeyId([1, 2, 3, 4, 5, 6, 7, 8]);

    #[test]
    fn writer_thread_writes_durably_and_reports_failure() {
        let d = tempfile::tempdir().unwrap();
        let mut s = ReplayState::load(d.path()).unwrap();
        let w = Writer::spawn_unconfined(s.path().to_owned()).unwrap();
        let floors = s.raised([(&A, &9)]);
        let written = w.write(floors).blocking_recv().unwrap().unwrap();
        s.install(written);
        assert_eq!(ReplayState::load(d.path()).unwrap().floor(&A), 9);
        assert_eq!(s.floor(&A), 9);
        let bad = Writer::spawn_unconfined(d.path().join("missing-dir").join(replay::STATE_FILE))
            .unwrap();
        assert!(
            bad.write(s.raised([(&KeyId([9; 8]), &1)]))
                .blocking_recv()
                .unwrap()
                .is_err()
        );
    }

    struct Rig {
        key_id: KeyId,
        datagram: [u8; ruroco_proto::DATAGRAM_LEN],
        source: IpAddr,
        now: Now,
        gate: Gate,
    }

    fn rig(floors: Floors) -> Rig {
        let key = Key::generate().unwrap();
        let server = IpAddr::from([192, 0, 2, 1]);
        let unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let datagram = seal_random(
            &key,
            &Plaintext {
                version: VERSION,
                cmd: CmdHash::of_name("open"),
                counter: unix_ns,
                strict: false,
                src_ip: None,
                dst_ip: Some(server),
            },
        )
        .unwrap();
        let policy = Policy {
            ips: vec![server],
            max_clock_skew_ns: 60_000_000_000,
            max_age_ns: None,
        };
        let limits = Limits {
            per_source: 2.0,
            burst: 5,
            global: 1000.0,
            sources: 16,
        };
        Rig {
            key_id: key.id(),
            datagram,
            source: IpAddr::from([198, 51, 100, 7]),
            now: Now {
                unix_ns,
                mono_ns: 0,
            },
            gate: Gate::new([Permit { key, allowed: None }], policy, limits, floors),
        }
    }

    #[test]
    fn a_copy_of_a_pending_in_flight_or_durable_datagram_is_rejected() {
        let d = tempfile::tempdir().unwrap();
        let durable = ReplayState::load(d.path()).unwrap();
        let writer = Writer::spawn_unconfined(durable.path().to_owned()).unwrap();
        let mut r = rig(durable.raised([]));
        let mut gc = GroupCommit::new(durable);
        let admit = |r: &mut Rig| r.gate.admit(&r.datagram, r.source, r.now);

        let a = admit(&mut r).unwrap();
        gc.accept(a, r.source);
        assert_eq!(admit(&mut r), Err(Reject::Duplicate), "pending");
        gc.start(&writer);
        assert!(gc.in_flight() && gc.pending.is_empty());
        assert_eq!(gc.durable_floor(&r.key_id), 0, "not durable yet");
        assert_eq!(admit(&mut r), Err(Reject::Duplicate), "in flight");

        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (batch, result) = rt.block_on(gc.written());
        assert!(result.is_ok() && batch.len() == 1);
        assert!(!gc.in_flight());
        assert_eq!(gc.durable_floor(&r.key_id), r.now.unix_ns);
        r.gate.raise_floors(gc.durable().floors());
        assert_eq!(admit(&mut r), Err(Reject::Duplicate), "durable");
        assert_eq!(
            ReplayState::load(d.path()).unwrap().floor(&r.key_id),
            r.now.unix_ns
        );
    }

    #[test]
    fn a_failed_write_forwards_nothing_and_the_floors_fall_back() {
        let d = tempfile::tempdir().unwrap();
        let durable = ReplayState::load(d.path()).unwrap();
        // A writer whose directory does not exist: every write fails.
        let writer =
            Writer::spawn_unconfined(d.path().join("gone").join(replay::STATE_FILE)).unwrap();
        let mut r = rig(durable.raised([]));
        let mut gc = GroupCommit::new(durable);
        let a = r.gate.admit(&r.datagram, r.source, r.now).unwrap();
        gc.accept(a, r.source);
        gc.start(&writer);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (batch, result) = rt.block_on(gc.written());
        assert!(result.is_err() && batch.len() == 1);
        assert_eq!(gc.durable_floor(&r.key_id), 0);
        r.gate
            .restore_floors(gc.durable().floors(), gc.waiting_floors());
        assert_eq!(r.gate.floor(&r.key_id), 0);
        assert!(
            r.gate.admit(&r.datagram, r.source, r.now).is_ok(),
            "the client's retry runs once"
        );
    }
}
