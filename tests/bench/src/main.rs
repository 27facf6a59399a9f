//! `bench`: measures ruroco-server and ruroco-commander side by side with a bare receive loop
//! (the ceiling) in one run, prints a table and writes JSON. A benchmark, never a test: it
//! exits 0 whatever the numbers are, non-zero only when something broke. It must never
//! flood anything but loopback sockets it started itself.

mod load;
mod rig;
mod sink;

use clap::Parser;
use load::{Flood, Sent, Sources};
use rig::{R, Receiver, Rig, Sink};
use ruroco_kit::fsutil::write_atomic;
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// Source of the floods and of the valid datagrams (the server accepts any 127/8 source).
const FLOOD_SRC: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const VALID_SRC: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// First address of the distinct-source floods: 127.16.0.0/12 holds 1,048,576 of them.
const MANY_FIRST: Ipv4Addr = Ipv4Addr::new(127, 16, 0, 0);
/// The one /64 of the IPv6 flood (a documentation prefix, routed to `lo` during its row) and
/// its first source; the client is ::1, in another /64.
const FLOOD_64: &str = "2001:db8:6464::/64";
const FLOOD_64_FIRST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x6464, 0, 0, 0, 1, 0);
/// Distinct addresses of that /64 the flood cycles through (far more than the server's
/// 65,536 address slots, so an address is never remembered from one turn to its next).
const FLOOD_64_SOURCES: u32 = 1_000_000;
/// Datagrams per address and turn: under the shipped burst of 5, so no address ever exceeds
/// its own budget; only the count per /64 puts them over budget.
const FLOOD_64_PER_SOURCE: usize = 4;
/// While sending valid datagrams, wait whenever the server's queue holds more than this
/// (bytes of kernel accounting, about 1 KiB per datagram): no kernel drops, full batches.
const VALID_QUEUE_BYTES: u64 = 512 * 1024;
const MIB: f64 = 1024.0 * 1024.0;
/// A receiver that saturates drains its full queue (~9,000 datagrams) in milliseconds.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "Benchmark ruroco-server and ruroco-commander against a bare UDP receive loop"
)]
struct Args {
    /// Tiny durations and counts (CI): checks that the benchmark runs, measures nothing useful.
    #[arg(long)]
    smoke: bool,
    /// Where to write the JSON results (default: <target>/bench.json).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Seconds each flood lasts (default 3; 0.2 with --smoke).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Rounds of ceiling + floods (default 3; 1 with --smoke); medians are reported.
    #[arg(long, value_name = "N")]
    rounds: Option<usize>,
    /// Datagrams each distinct source sends per turn (one GSO message) in the
    /// distinct-source floods.
    #[arg(long, default_value_t = 8, value_name = "N")]
    per_source: usize,
    /// Sender threads for the floods.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Only measure the ceiling (and the sender's offered rate), for tuning the load generator.
    #[arg(long)]
    ceiling_only: bool,
    /// Record a `perf` profile (cpu-clock, call graphs) of the server during each flood of
    /// the first round, into <target>/bench-perf-<counter or sources-N>.data.
    #[arg(long)]
    perf: bool,
    /// Internal: run as the ceiling receiver with this SO_RCVBUF.
    #[arg(long, hide = true, value_name = "BYTES")]
    sink: Option<usize>,
}

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    flood: Duration,
    idle: Duration,
    valid: usize,
    baseline_writes: usize,
    latency_samples: usize,
    sources: [u32; 2],
    reps: usize,
}

fn main() {
    let args = Args::parse();
    if let Some(rcvbuf) = args.sink {
        if let Err(e) = sink::main(rcvbuf) {
            eprintln!("bench --sink: {e}");
            std::process::exit(74);
        }
        return;
    }
    match run(&args) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(70);
        }
    }
}

/// One flood against one receiver.
#[derive(Debug, Clone, Default)]
struct Measured {
    name: String,
    sent: Sent,
    drops: u64,
    processed: u64,
    secs: f64,
    rate: f64,
    cpu_s: f64,
    /// The server's own count for the flood (STATUS= delta), when a server received it.
    status_received: Option<u64>,
    /// The STATUS= counter the flood should move, and its delta.
    status_reason: Option<(String, u64)>,
    /// No kernel drops: the receiver kept up, so the rate is the sender's (a lower bound).
    sender_bound: bool,
    rss_peak: u64,
    /// The queue was not empty `DRAIN_LIMIT` after the sender stopped.
    stalled: Option<Value>,
}

impl Measured {
    fn cpu_per_million(&self) -> f64 {
        self.cpu_s / (self.processed.max(1) as f64 / 1e6)
    }

    fn json(&self) -> Value {
        json!({
            "name": self.name,
            "sent": self.sent.datagrams,
            "offered_per_s": self.sent.rate(),
            "send_errors": self.sent.errors,
            "distinct_sources": self.sent.sources,
            "kernel_drops": self.drops,
            "processed": self.processed,
            "seconds": self.secs,
            "rate_per_s": self.rate,
            "cpu_s": self.cpu_s,
            "cpu_s_per_million": self.cpu_per_million(),
            "status_received": self.status_received,
            "status_reason": self.status_reason.as_ref().map(|(k, v)| json!({"counter": k, "delta": v})),
            "sender_bound": self.sender_bound,
            "vm_hwm_bytes": self.rss_peak,
            "stalled": self.stalled,
        })
    }
}

/// A single-source flood: name, the STATUS= counter it moves, payloads, target ratio.
type Kind = (&'static str, &'static str, Vec<Vec<u8>>, Option<f64>);

/// One scenario measured once per round.
#[derive(Debug, Clone)]
struct Series {
    name: String,
    target: Option<f64>,
    runs: Vec<Measured>,
    /// Per round: rate over the same round's ceiling (or single-source rate).
    ratios: Vec<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

impl Series {
    fn new(name: &str, target: Option<f64>) -> Self {
        Self {
            name: name.to_owned(),
            target,
            runs: Vec::new(),
            ratios: Vec::new(),
        }
    }
    fn push(&mut self, m: Measured, ratio: f64) {
        self.runs.push(m);
        self.ratios.push(ratio);
    }
    /// The least disturbed round: interference on a shared machine only ever lowers a rate.
    fn best(&self) -> Option<&Measured> {
        self.runs
            .iter()
            .filter(|m| m.stalled.is_none())
            .max_by(|a, b| a.rate.total_cmp(&b.rate))
    }
    fn best_rate(&self) -> f64 {
        self.best().map_or(0.0, |m| m.rate)
    }
    /// The best round had no kernel drops: the receiver kept up, the rate is the sender's.
    fn best_sender_bound(&self) -> bool {
        self.best().is_some_and(|m| m.sender_bound)
    }
    fn median_rate(&self) -> f64 {
        median(self.runs.iter().map(|m| m.rate).collect())
    }
    fn median_ratio(&self) -> f64 {
        median(self.ratios.clone())
    }
    fn median_cpu(&self) -> f64 {
        median(self.runs.iter().map(Measured::cpu_per_million).collect())
    }
    /// Lowest CPU seconds per million over the rounds: interference only adds to it.
    fn best_cpu(&self) -> f64 {
        self.runs
            .iter()
            .filter(|m| m.stalled.is_none())
            .map(Measured::cpu_per_million)
            .min_by(f64::total_cmp)
            .unwrap_or(f64::NAN)
    }
    fn hwm(&self) -> u64 {
        self.runs.iter().map(|m| m.rss_peak).max().unwrap_or(0)
    }
    /// Rounds in which the receiver had no kernel drops (its rate is the sender's).
    fn sender_bound(&self) -> usize {
        self.runs.iter().filter(|m| m.sender_bound).count()
    }
    /// Every run's count (sent minus drops) equals the server's own STATUS= counters.
    fn cross_checked(&self) -> bool {
        self.runs.iter().all(|m| {
            m.status_received.is_none_or(|r| r == m.processed)
                && m.status_reason
                    .as_ref()
                    .is_none_or(|(_, d)| *d == m.processed)
        })
    }
    fn json(&self) -> Value {
        json!({
            "name": self.name,
            "target_ratio": self.target,
            "best_rate_per_s": self.best_rate(),
            "best_round_sender_bound": self.best_sender_bound(),
            "median_rate_per_s": self.median_rate(),
            "median_per_round_ratio": self.median_ratio(),
            "median_cpu_s_per_million": self.median_cpu(),
            "best_cpu_s_per_million": self.best_cpu(),
            "ratios": self.ratios,
            "vm_hwm_bytes": self.hwm(),
            "cross_checked_with_status": self.cross_checked(),
            "runs": self.runs.iter().map(Measured::json).collect::<Vec<_>>(),
        })
    }
}

struct Ctx {
    ticks: f64,
    threads: usize,
}

/// Send `flood` at `rx`, wait until its queue is empty, and count what it processed as
/// sent minus the socket's kernel drops.
fn measure(ctx: &Ctx, name: &str, rx: &mut dyn Receiver, flood: &Flood) -> R<Measured> {
    let pid = rx.pid();
    let (_, d0) = rx.queue();
    let c0 = rig::cpu_seconds(pid, ctx.ticks);
    let t0 = Instant::now();
    let sender = {
        let (f, threads) = (flood.clone(), ctx.threads);
        std::thread::spawn(move || load::run_parallel(&f, threads))
    };
    while !sender.is_finished() {
        rx.tick();
        std::thread::sleep(Duration::from_millis(100));
    }
    let sent = sender
        .join()
        .map_err(|_| "the sender thread panicked".to_owned())??;
    let mut stalled = None;
    if let Err(left) = rx.wait_drained(DRAIN_LIMIT) {
        // Not drained long after the sender stopped: note how (busy or asleep with data
        // queued), give it time, and keep this run out of the best-of.
        let state = rig::sched_state(pid);
        eprintln!(
            "bench: {name}: {left} B still queued {DRAIN_LIMIT:?} after the flood (receiver {state})"
        );
        let recovered = rx.wait_drained(Duration::from_secs(60)).is_ok();
        stalled = Some(
            json!({"queued_bytes": left, "receiver_state": state, "recovered_within_60s": recovered}),
        );
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu_s = rig::cpu_seconds(pid, ctx.ticks) - c0;
    let (_, d1) = rx.queue();
    let drops = d1.saturating_sub(d0);
    let processed = sent.datagrams.saturating_sub(drops);
    Ok(Measured {
        name: name.to_owned(),
        sent,
        drops,
        processed,
        secs,
        rate: processed as f64 / secs.max(1e-9),
        cpu_s,
        status_received: None,
        status_reason: None,
        // Under 1% dropped: the receiver kept up, so the rate is (about) the offered one.
        sender_bound: drops.saturating_mul(100) < sent.datagrams,
        stalled,
        rss_peak: rig::mem_bytes(pid, "VmHWM"),
    })
}

/// `measure` against the server, then cross-check with its STATUS= counters.
fn measure_server(
    ctx: &Ctx,
    rig: &mut Rig,
    name: &str,
    reason: &str,
    flood: &Flood,
) -> R<Measured> {
    let before = rig.status();
    let mut m = measure(ctx, name, &mut *rig, flood)?;
    let r0 = before.get("received").copied().unwrap_or(0);
    let x0 = before.get(reason).copied().unwrap_or(0);
    let r1 = rig.wait_counter("received", r0 + m.processed);
    let x1 = rig.status().get(reason).copied().unwrap_or(0);
    m.status_received = Some(r1 - r0);
    m.status_reason = Some((reason.to_owned(), x1.saturating_sub(x0)));
    // Let the STATUS= line settle so the next flood starts from exact counters.
    let _ = rig.wait_counter("received", r0 + m.processed);
    Ok(m)
}

fn random_bytes(n: usize) -> R<Vec<u8>> {
    let mut v = vec![0u8; n];
    getrandom_fill(&mut v)?;
    Ok(v)
}

fn getrandom_fill(buf: &mut [u8]) -> R<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|e| format!("/dev/urandom: {e}"))
}

fn flood(
    payloads: Vec<Vec<u8>>,
    dest: impl Into<SocketAddr>,
    sources: Sources,
    plan: &Plan,
) -> Flood {
    Flood {
        payloads,
        dest: dest.into(),
        sources,
        duration: plan.flood,
        min_datagrams: 0,
        rate: None,
    }
}

/// Datagrams of a known key but with a random IV/tag/ciphertext: each costs one AEAD attempt.
fn bad_tag_payloads(rig: &Rig, n: usize) -> R<Vec<Vec<u8>>> {
    let id = rig.key.id().0;
    (0..n)
        .map(|_| {
            let mut d = random_bytes(ruroco_proto::DATAGRAM_LEN)?;
            d[..8].copy_from_slice(&id);
            Ok(d)
        })
        .collect()
}

fn unknown_key_payloads(rig: &Rig, n: usize) -> R<Vec<Vec<u8>>> {
    let id = rig.key.id().0;
    (0..n)
        .map(|_| {
            let mut d = random_bytes(ruroco_proto::DATAGRAM_LEN)?;
            if d[..8] == id {
                d[0] ^= 0xff;
            }
            Ok(d)
        })
        .collect()
}

fn valid(rig: &Rig, cmd: &str) -> Vec<u8> {
    let pt = ruroco_tests::plaintext(cmd, FLOOD_SRC.into());
    ruroco_tests::seal(&rig.key, &pt).to_vec()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

/// Latency samples: each valid `started` datagram sent alone, timed until the command's
/// first action (a shell builtin writing a line into the rig's FIFO) reaches the benchmark;
/// returns (latencies in ms, missing).
fn latency(rig: &mut Rig, samples: usize) -> R<(Vec<f64>, usize)> {
    let sock = UdpSocket::bind((VALID_SRC, 0)).map_err(|e| format!("bind {VALID_SRC}: {e}"))?;
    let dest = rig.dest();
    let mut out = Vec::with_capacity(samples);
    let mut missing = 0;
    for _ in 0..samples {
        rig.tick();
        let d = valid(rig, "started");
        let got = time_to_fifo(&rig.started, || {
            sock.send_to(&d, dest)
                .map(drop)
                .map_err(|e| format!("send valid datagram: {e}"))
        })?;
        match got {
            Some(ms) => out.push(ms),
            None => missing += 1,
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    out.sort_by(f64::total_cmp);
    Ok((out, missing))
}

/// Open `fifo` for reading (non-blocking, so no writer is needed yet), run `start`, and
/// return the milliseconds from just before `start` until a line arrives; `None` after 5 s.
/// A FIFO reports nothing before its first writer, so any event is the command's write.
fn time_to_fifo(fifo: &std::path::Path, start: impl FnOnce() -> R<()>) -> R<Option<f64>> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)
        .map_err(|e| format!("open {}: {e}", fifo.display()))?;
    let t0 = Instant::now();
    start()?;
    let deadline = t0 + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => return Ok(None),
            Ok(_) => {
                let took = t0.elapsed().as_secs_f64() * 1e3;
                let mut line = [0u8; 16];
                let _ = f.read(&mut line);
                return Ok(Some(took));
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("poll {}: {e}", fifo.display())),
        }
    }
}

/// The same measure for `sh -c` started by the benchmark itself, as the commander starts
/// commands (clean environment, cwd /): the floor of any tool that runs a command through
/// `sh -c` (fork, exec, the shell's start-up).
fn sh_floor(fifo: &std::path::Path, samples: usize) -> R<f64> {
    let mut v = Vec::with_capacity(samples);
    for _ in 0..samples {
        let mut child = None;
        let got = time_to_fifo(fifo, || {
            let c = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("echo > '{}'", fifo.display()))
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .current_dir("/")
                .stdin(std::process::Stdio::null())
                .spawn()
                .map_err(|e| format!("spawn sh: {e}"))?;
            child = Some(c);
            Ok(())
        })?;
        if let Some(mut c) = child {
            let _ = c.wait();
        }
        v.extend(got);
    }
    v.sort_by(f64::total_cmp);
    Ok(percentile(&v, 0.5))
}

/// `count` durable writes of a one-line replay file at `path` (the server's `write_atomic`:
/// temp, fsync, rename, fsync of the directory), one after another; returns each one's
/// milliseconds, sorted, and the seconds they took together.
fn durable_writes(path: &std::path::Path, count: usize) -> R<(Vec<f64>, f64)> {
    let mut ms = Vec::with_capacity(count);
    let t0 = Instant::now();
    for i in 0..count {
        let line = format!(
            "0011223344556677 {}\n",
            1_700_000_000_000_000_000u128 + i as u128
        );
        let t = Instant::now();
        write_atomic(path, line.as_bytes(), 0o600)
            .map_err(|e| format!("baseline write {}: {e}", path.display()))?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let secs = t0.elapsed().as_secs_f64();
    ms.sort_by(f64::total_cmp);
    Ok((ms, secs))
}

/// Latency while one thread floods `payloads` from `FLOOD_SRC` at `rate`.
struct FloodLatency {
    samples: Vec<f64>,
    missing: usize,
    flood_rate: f64,
    kernel_drops: u64,
}

impl FloodLatency {
    fn json(&self) -> Value {
        json!({"p50": percentile(&self.samples, 0.5), "p99": percentile(&self.samples, 0.99),
               "samples": self.samples.len(), "missing": self.missing,
               "flood_per_s": self.flood_rate, "kernel_drops": self.kernel_drops})
    }
}

fn latency_under_flood(
    rig: &mut Rig,
    payloads: &[Vec<u8>],
    rate: f64,
    plan: &Plan,
) -> R<FloodLatency> {
    let stop = Arc::new(AtomicBool::new(false));
    let bg = {
        let mut f = flood(payloads.to_vec(), rig.dest(), Sources::One(FLOOD_SRC), plan);
        f.duration = Duration::from_secs(3600);
        f.rate = Some(rate);
        let s = stop.clone();
        std::thread::spawn(move || load::run(&f, &s))
    };
    let (_, drops0) = rig.queue();
    let lat = latency(rig, plan.latency_samples);
    let (_, drops1) = rig.queue();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = bg
        .join()
        .map_err(|_| "flood thread panicked".to_owned())??;
    let (samples, missing) = lat?;
    Ok(FloodLatency {
        samples,
        missing,
        flood_rate: sent.rate(),
        kernel_drops: drops1.saturating_sub(drops0),
    })
}

/// Keeps the rig's disk busy: `dd` writing 128 MiB with direct I/O and a final fsync, again
/// and again, into the rig's dir (the state dir's file system), until dropped.
struct BusyDisk {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BusyDisk {
    fn start(dir: &std::path::Path) -> R<Self> {
        let ballast = dir.join("ballast");
        let dd = move || {
            std::process::Command::new("dd")
                .arg("if=/dev/zero")
                .arg(format!("of={}", ballast.display()))
                .args(["bs=4M", "count=32", "oflag=direct", "conv=fsync"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
        };
        let mut child = dd().map_err(|e| format!("start dd: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            // dd is this process's own child, so it is always reaped here.
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    match dd() {
                        Ok(c) => child = c,
                        Err(_) => return,
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for BusyDisk {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Row {
    metric: String,
    measured: String,
    target: String,
    met: Option<bool>,
    /// Why `met` cannot be concluded from this run, if so.
    caveat: Option<String>,
}

/// Issue 14: junk with the client's key id forged from the client's own address, on a server
/// with the shipped limits, while the client sends one valid datagram every 50 ms from that
/// address. At 20/s and 100/s (one junk datagram at a time, evenly paced) every valid one must
/// be accepted. At full speed (GSO bursts, far above the global budget) the flood may take the
/// client's turn: measured, not judged, and its rate is compared with the bare receive loop.
fn forged_junk(ctx: &Ctx, plan: &Plan, ceiling: f64) -> R<Vec<Row>> {
    eprintln!("bench: junk forged from a client's address, shipped limits");
    let mut rig = Rig::with_limits(rig::SHIPPED_LIMITS)?;
    rig.start()?;
    let dest = rig.dest();
    let bad = bad_tag_payloads(&rig, 1024)?;
    let gap = Duration::from_millis(50);
    let count = (plan.flood.as_millis() / gap.as_millis()).max(1) as usize;
    let get = |m: &std::collections::BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    let mut rows = Vec::new();
    for (label, rate) in [
        ("20/s", Some(20u32)),
        ("100/s", Some(100)),
        ("full speed", None),
    ] {
        // Sealed now, in order: strictly increasing counters, each valid for the run.
        let client: Vec<Vec<u8>> = (0..count).map(|_| valid(&rig, "true")).collect();
        let before = rig.status();
        let (sent, junk_rate, drops) = match rate {
            Some(per_s) => {
                // One socket for both, as an on-path forger would look: same address.
                let sock = UdpSocket::bind((VALID_SRC, 0)).map_err(|e| format!("bind: {e}"))?;
                let t0 = Instant::now();
                let mut junk = 0u64;
                let mut next = 0usize;
                let end = gap * count as u32;
                let junk_total = (end.as_secs_f64() * f64::from(per_s)).round() as u64;
                while next < client.len() || junk < junk_total {
                    let now = t0.elapsed();
                    if next < client.len() && now >= gap * next as u32 {
                        sock.send_to(&client[next], dest)
                            .map_err(|e| format!("send: {e}"))?;
                        next += 1;
                    }
                    let junk_due = (now.as_secs_f64() * f64::from(per_s)) as u64;
                    while junk < junk_due.min(junk_total) {
                        sock.send_to(&bad[junk as usize % bad.len()], dest)
                            .map_err(|e| format!("send: {e}"))?;
                        junk += 1;
                    }
                    // Pacing the senders, not waiting for the server.
                    std::thread::sleep(Duration::from_millis(1));
                }
                let secs = t0.elapsed().as_secs_f64();
                (client.len(), junk as f64 / secs, 0)
            }
            None => {
                let f = flood(bad.clone(), dest, Sources::One(VALID_SRC), plan);
                let sender = std::thread::spawn(move || -> R<usize> {
                    let sock = UdpSocket::bind((VALID_SRC, 0)).map_err(|e| format!("bind: {e}"))?;
                    for d in &client {
                        let t = Instant::now();
                        sock.send_to(d, dest).map_err(|e| format!("send: {e}"))?;
                        // Pacing the client, not waiting for the server.
                        std::thread::sleep(gap.saturating_sub(t.elapsed()));
                    }
                    Ok(client.len())
                });
                let m = measure_server(ctx, &mut rig, "forged junk, full speed", "bad_tag", &f)?;
                let sent = sender
                    .join()
                    .map_err(|_| "the client thread panicked".to_owned())??;
                (sent, m.rate, m.drops)
            }
        };
        let a0 = get(&before, "accepted");
        let accepted = rig.wait_counter("accepted", a0 + sent as u64) - a0;
        let after = rig.status();
        let limited = get(&after, "rate_limited") - get(&before, "rate_limited");
        let bad_tags = get(&after, "bad_tag") - get(&before, "bad_tag");
        let paced = rate.is_some();
        let measured = if paced {
            format!(
                "client: {accepted}/{sent} valid accepted; junk {junk_rate:.0}/s, \
                 {bad_tags} bad_tag, {limited} rate_limited"
            )
        } else {
            format!(
                "client: {accepted}/{sent} valid accepted; junk {junk_rate:.0}/s = {:.0}% of \
                 ceiling, {bad_tags} bad_tag, {limited} rate_limited, {drops} kernel drops",
                junk_rate / ceiling.max(1e-9) * 100.0
            )
        };
        rows.push(row(
            &format!("junk forged from a client's address at {label} (shipped limits)"),
            measured,
            if paced {
                "all of the client's accepted"
            } else {
                "measured (above the global budget)"
            },
            paced.then_some(accepted == sent as u64),
        ));
    }
    Ok(rows)
}

/// The per-/64 budget: bad-tag datagrams (the client's key id, so each one reaches the rate
/// limiter and, when admitted, an AEAD attempt that fails and is charged to its address and
/// its /64; unknown-key junk is rejected before the limiter and would test nothing) from up
/// to `FLOOD_64_SOURCES` addresses of one /64, `FLOOD_64_PER_SOURCE` per address and turn, at
/// full speed, on an IPv6 server with the shipped limits, while the client sends one valid
/// datagram every 50 ms from ::1 (another /64). Every valid one must be accepted, and the
/// flood must get no more AEAD attempts than the global budget leaves above its reserve: the
/// flood's /64 is over budget after 5 failures, so it only gets tokens above the reserve that
/// the client, within its budget, still uses. Returns the row and its JSON.
fn one_64_flood(ctx: &Ctx, plan: &Plan, ceiling: f64) -> R<(Row, Value)> {
    let metric = format!("bad-tag flood from one IPv6 /64 ({FLOOD_64}), client at ::1");
    let target = "all of the client's accepted, flood within the budget above the reserve";
    eprintln!("bench: bad-tag flood from many addresses of {FLOOD_64}, shipped limits");
    // The route goes when `_route` is dropped: on every return below, and on a panic.
    let _route = match rig::LocalRoute::add(FLOOD_64) {
        Ok(r) => r,
        Err(e) => {
            // No IPv6 on loopback here: nothing to measure, nothing broken in ruroco.
            eprintln!("bench: {metric}: not measured: {e}");
            let measured = format!("not measured: {e}");
            return Ok((row(&metric, measured, target, None), json!({"skipped": e})));
        }
    };
    let mut rig = Rig::ipv6(rig::SHIPPED_LIMITS)?;
    rig.start()?;
    let dest = rig.addr();
    let bad = bad_tag_payloads(&rig, 1024)?;
    let gap = Duration::from_millis(50);
    // At least 0.5 s, so even a smoke run has 10 client datagrams inside the flood.
    let secs = plan.flood.max(Duration::from_millis(500));
    let count = (secs.as_millis() / gap.as_millis()).max(1) as usize;
    let client_ip = IpAddr::V6(Ipv6Addr::LOCALHOST);
    // Sealed now, in order: strictly increasing counters, each valid for the run.
    let client: Vec<Vec<u8>> = (0..count)
        .map(|_| ruroco_tests::seal(&rig.key, &ruroco_tests::plaintext("true", client_ip)).to_vec())
        .collect();
    let mut f = flood(
        bad,
        dest,
        Sources::Many6 {
            first: FLOOD_64_FIRST,
            count: FLOOD_64_SOURCES,
            per_source: FLOOD_64_PER_SOURCE,
        },
        plan,
    );
    f.duration = secs;
    let before = rig.status();
    let sender = std::thread::spawn(move || -> R<usize> {
        let sock =
            UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).map_err(|e| format!("bind [::1]: {e}"))?;
        for d in &client {
            let t = Instant::now();
            sock.send_to(d, dest).map_err(|e| format!("send: {e}"))?;
            // Pacing the client, not waiting for the server.
            std::thread::sleep(gap.saturating_sub(t.elapsed()));
        }
        Ok(client.len())
    });
    let m = measure(ctx, "bad tag, one /64", &mut rig, &f);
    let sent = sender
        .join()
        .map_err(|_| "the client thread panicked".to_owned())??;
    let m = m?;
    let get = |s: &std::collections::BTreeMap<String, u64>, k: &str| s.get(k).copied().unwrap_or(0);
    // Everything sent, flood and client, minus the socket's drops, must be counted received.
    let r0 = get(&before, "received");
    let received = rig.wait_counter("received", r0 + m.processed + sent as u64) - r0;
    let a0 = get(&before, "accepted");
    // Once `received` is complete, `accepted` follows within a floor write and a STATUS=.
    let accepted = rig.wait_counter_for("accepted", a0 + sent as u64, Duration::from_secs(2)) - a0;
    let after = rig.status();
    let rejected: Vec<(&str, u64)> = ruroco_proto::Reject::ALL
        .iter()
        .map(|r| {
            (
                r.as_str(),
                get(&after, r.as_str()).saturating_sub(get(&before, r.as_str())),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    let reasons = if rejected.is_empty() {
        "none".to_owned()
    } else {
        rejected
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ratio = m.rate / ceiling.max(1e-9);
    let bound = if m.sender_bound { ", sender-bound" } else { "" };
    // Over budget after its first failures, the /64 gets global tokens only above the
    // reserve: at most the burst less the reserve, plus the refill while it lasted, plus
    // the failures within the /64's own burst. More AEAD attempts than that (bad tags: the
    // client's datagrams are valid) mean the flood took the reserve the client relies on.
    let global = shipped_limit("global")?;
    let cap = global * (1.0 - ruroco_server::rate_limit::RESERVE)
        // (10 ms more for the last batch, judged after the queue read empty)
        + global * (m.secs + 0.01)
        + shipped_limit("burst")?;
    let flood_aead = get(&after, "bad_tag").saturating_sub(get(&before, "bad_tag"));
    let reserve_kept = flood_aead as f64 <= cap;
    let measured = format!(
        "client: {accepted}/{sent} valid accepted; flood from {} addresses, {:.0}/s = {:.0}% of \
         ceiling{bound}, {} kernel drops; flood AEAD attempts {flood_aead} (at most {cap:.0} \
         above the reserve); rejected: {reasons}",
        m.sent.sources,
        m.rate,
        ratio * 100.0,
        m.drops
    );
    let met = accepted == sent as u64 && reserve_kept;
    // With the reserve kept the client, within its budget, always got a token: a datagram
    // it lost then was dropped by the kernel while the server fell behind the flood, which
    // says nothing about the budget.
    let caveat = (!met && reserve_kept && m.drops > 0).then(|| {
        format!(
            "the reserve was kept, but the server fell behind the flood ({} kernel drops): \
             the client's lost datagrams were the kernel's, not the limiter's",
            m.drops
        )
    });
    let doc = json!({
        "prefix": FLOOD_64,
        "per_source_per_turn": FLOOD_64_PER_SOURCE,
        "client": {"address": client_ip.to_string(), "sent": sent, "accepted": accepted, "gap_ms": gap.as_millis()},
        "flood": m.json(),
        "ratio_to_ceiling": ratio,
        "flood_aead_attempts": flood_aead,
        "flood_aead_cap_above_reserve": cap,
        "reserve_kept": reserve_kept,
        "status_received": received,
        "received_matches_sent_minus_drops": received == m.processed + sent as u64,
        "rejected": rejected.iter().map(|(k, n)| (k.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "target": target,
        "met": met,
        "caveat": caveat,
    });
    let mut r = row(&metric, measured, target, Some(met));
    r.caveat = caveat;
    Ok((r, doc))
}

/// A number of `rig::SHIPPED_LIMITS` (`name = value` lines).
fn shipped_limit(name: &str) -> R<f64> {
    rig::SHIPPED_LIMITS
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == name).then(|| v.trim().parse().ok())?
        })
        .ok_or_else(|| format!("no {name} in the shipped limits"))
}

fn row(metric: &str, measured: String, target: &str, met: Option<bool>) -> Row {
    Row {
        metric: metric.to_owned(),
        measured,
        target: target.to_owned(),
        met,
        caveat: None,
    }
}

fn run(args: &Args) -> R<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err("run as root: the server is started as root and switches to nobody".into());
    }
    let plan = if args.smoke {
        Plan {
            flood: Duration::from_secs_f64(args.duration.unwrap_or(0.2)),
            idle: Duration::from_secs(1),
            valid: 200,
            baseline_writes: 20,
            latency_samples: 5,
            sources: [1_000, 10_000],
            reps: args.rounds.unwrap_or(1),
        }
    } else {
        Plan {
            flood: Duration::from_secs_f64(args.duration.unwrap_or(3.0)),
            idle: Duration::from_secs(10),
            valid: 5_000,
            baseline_writes: 300,
            latency_samples: 100,
            sources: [10_000, 1_000_000],
            reps: args.rounds.unwrap_or(3),
        }
    };
    let ctx = Ctx {
        ticks: rig::clock_ticks(),
        threads: args.threads,
    };
    let json_path = match &args.json {
        Some(p) => p.clone(),
        None => rig::bin_dir()?
            .parent()
            .map(|t| t.join("bench.json"))
            .unwrap_or_else(|| PathBuf::from("bench.json")),
    };
    if args.ceiling_only {
        let unknown: Vec<Vec<u8>> = (0..1024).map(|_| random_bytes(94)).collect::<R<_>>()?;
        let mut sink = Sink::start()?;
        let sink_dest = sink.dest();
        let mut runs = vec![measure(
            &ctx,
            "ceiling",
            &mut sink,
            &flood(unknown.clone(), sink_dest, Sources::One(FLOOD_SRC), &plan),
        )?];
        let mut f = flood(
            unknown,
            sink_dest,
            Sources::Many {
                first: MANY_FIRST,
                count: 10_000,
                per_source: args.per_source,
            },
            &plan,
        );
        f.min_datagrams = 10_000 * args.per_source as u64;
        runs.push(measure(&ctx, "ceiling, 10000 sources", &mut sink, &f)?);
        let counted = sink.stop()?;
        let js: Vec<Value> = runs.iter().map(Measured::json).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"runs": js, "counted": counted}))
                .unwrap_or_default()
        );
        return Ok(());
    }
    let started_at = ruroco_tests::now_ns();
    let load_before = load();
    eprintln!("bench: starting the commander and the server (state on /var/tmp)");
    let mut rig = Rig::new()?;
    rig.start()?;
    let spid = rig.server_pid();

    // Idle cost first, on the fresh server.
    std::thread::sleep(Duration::from_millis(500));
    let c0 = rig::cpu_seconds(spid, ctx.ticks);
    let w0 = rig::status_num(spid, "voluntary_ctxt_switches")
        + rig::status_num(spid, "nonvoluntary_ctxt_switches");
    let t0 = Instant::now();
    eprintln!("bench: idle for {:?}", plan.idle);
    std::thread::sleep(plan.idle);
    let idle_secs = t0.elapsed().as_secs_f64();
    let idle_cpu = (rig::cpu_seconds(spid, ctx.ticks) - c0) / idle_secs * 100.0;
    let idle_wakeups = (rig::status_num(spid, "voluntary_ctxt_switches")
        + rig::status_num(spid, "nonvoluntary_ctxt_switches"))
    .saturating_sub(w0) as f64
        / idle_secs;
    let idle_rss = rig::mem_bytes(spid, "VmRSS");

    let unknown = unknown_key_payloads(&rig, 1024)?;
    let dest = rig.dest();
    let wrong = (0..64)
        .map(|_| random_bytes(ruroco_proto::DATAGRAM_LEN - 1))
        .collect::<R<Vec<_>>>()?;
    let bad = bad_tag_payloads(&rig, 1024)?;
    // Replays: one valid datagram, accepted once, then copies of it (`duplicate`) in every round.
    let one = valid(&rig, "true");
    let acc0 = rig.status().get("accepted").copied().unwrap_or(0);
    UdpSocket::bind((FLOOD_SRC, 0))
        .and_then(|s| s.send_to(&one, dest))
        .map_err(|e| format!("send the datagram to replay: {e}"))?;
    rig.wait_counter("accepted", acc0 + 1);
    let kinds: [Kind; 4] = [
        ("wrong length (93 B)", "bad_length", wrong, None),
        ("unknown key id", "unknown_key", unknown.clone(), Some(0.7)),
        ("known key id, bad tag", "bad_tag", bad, Some(0.5)),
        ("replay of one valid datagram", "duplicate", vec![one], None),
    ];
    let mut ceil = Series::new("ceiling (bare recvmmsg loop)", None);
    let mut floods: Vec<Series> = kinds
        .iter()
        .map(|(n, _, _, t)| Series::new(&format!("{n} flood"), *t))
        .collect();
    let mut many: Vec<Series> = plan
        .sources
        .iter()
        .map(|c| Series::new(&format!("unknown key id, {c} sources"), Some(0.9)))
        .collect();
    // For each distinct-source flood, the same sender with a single source address: the
    // same arrival pattern and batching, so CPU per datagram differs only by the sources.
    let mut matched: Vec<Series> = plan
        .sources
        .iter()
        .map(|c| Series::new(&format!("unknown key id, 1 source sent like the {c}"), None))
        .collect();
    // Rounds interleave the ceiling and the floods, so each ratio compares runs made
    // seconds apart (this machine's load moves; medians over rounds are reported).
    let mut sink = Sink::start()?;
    let sink_dest = sink.dest();
    let sink_buf = sink.receive_buffer;
    for round in 0..plan.reps {
        eprintln!(
            "bench: round {}/{}: ceiling and floods",
            round + 1,
            plan.reps
        );
        let c = measure(
            &ctx,
            "ceiling",
            &mut sink,
            &flood(unknown.clone(), sink_dest, Sources::One(FLOOD_SRC), &plan),
        )?;
        let c_rate = c.rate;
        ceil.push(c, 1.0);
        let mut single = 0.0;
        for ((name, reason, payloads, _), series) in kinds.iter().zip(floods.iter_mut()) {
            let profiler = if args.perf && round == 0 {
                Some(start_perf(rig.server_pid(), reason)?)
            } else {
                None
            };
            let m = measure_server(
                &ctx,
                &mut rig,
                name,
                reason,
                &flood(payloads.clone(), dest, Sources::One(FLOOD_SRC), &plan),
            )?;
            if let Some(p) = profiler {
                stop_perf(p);
            }
            if *reason == "unknown_key" {
                single = m.rate;
            }
            let r = m.rate / c_rate.max(1e-9);
            series.push(m, r);
        }
        for (idx, (count, series)) in plan.sources.iter().zip(many.iter_mut()).enumerate() {
            eprintln!("bench: round {}/{}: {count} sources", round + 1, plan.reps);
            let mut f = flood(
                unknown.clone(),
                dest,
                Sources::Many {
                    first: MANY_FIRST,
                    count: *count,
                    per_source: args.per_source,
                },
                &plan,
            );
            f.min_datagrams = u64::from(*count) * args.per_source as u64;
            let profiler = if args.perf && round == 0 {
                Some(start_perf(rig.server_pid(), &format!("sources-{count}"))?)
            } else {
                None
            };
            let m = measure_server(&ctx, &mut rig, &series.name, "unknown_key", &f)?;
            if let Some(p) = profiler {
                stop_perf(p);
            }
            let r = m.rate / single.max(1e-9);
            let offered = m.sent.rate();
            series.push(m, r);
            // The same sender, the same syscall pattern (one sendmsg of `per_source`
            // datagrams per turn), but always the same source address.
            let mut same = flood(
                unknown.clone(),
                dest,
                Sources::Many {
                    first: MANY_FIRST,
                    count: 1,
                    per_source: args.per_source,
                },
                &plan,
            );
            same.min_datagrams = (offered * plan.flood.as_secs_f64()) as u64;
            let name = matched[idx].name.clone();
            let profiler = if args.perf && round == 0 {
                Some(start_perf(
                    rig.server_pid(),
                    &format!("sources-{count}-matched"),
                )?)
            } else {
                None
            };
            let m = measure_server(&ctx, &mut rig, &name, "unknown_key", &same)?;
            if let Some(p) = profiler {
                stop_perf(p);
            }
            matched[idx].push(m, 1.0);
        }
    }
    let sink_counted = sink.stop()?;
    let sink_processed: u64 = ceil.runs.iter().map(|m| m.processed).sum();
    let ceiling = ceil.best_rate();
    let ceiling_cost = ceil.best_cpu();

    // Valid datagrams end to end, group commit on a real disk, commander running `true`.
    eprintln!("bench: {} valid datagrams end to end", plan.valid);
    let datagrams: Vec<Vec<u8>> = (0..plan.valid).map(|_| valid(&rig, "true")).collect();
    let acc0 = rig.status().get("accepted").copied().unwrap_or(0);
    let exec0 = rig.executed("true");
    let (_, vd0) = rig.queue();
    let t0 = Instant::now();
    let vsent = load::send_once(&datagrams, VALID_SRC, dest, || {
        let until = Instant::now() + Duration::from_secs(20);
        while rig.queue().0 > VALID_QUEUE_BYTES && Instant::now() < until {
            std::thread::sleep(Duration::from_micros(200));
        }
    })?;
    let _ = rig.wait_drained(Duration::from_secs(60));
    let accept_secs = t0.elapsed().as_secs_f64();
    let (_, vd1) = rig.queue();
    let accepted = rig
        .wait_counter("accepted", acc0 + plan.valid as u64)
        .saturating_sub(acc0);
    let accepted_rate = accepted as f64 / accept_secs;
    let mut executed = 0;
    let mut last_progress = Instant::now();
    while executed < accepted {
        rig.tick();
        let e = rig.executed("true").saturating_sub(exec0);
        if e > executed {
            executed = e;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > Duration::from_secs(10) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let exec_secs = t0.elapsed().as_secs_f64();
    let executed_rate = executed as f64 / exec_secs;
    // Baseline: one durable write (temp, fsync, rename, fsync dir) per datagram, the same
    // write the server makes per batch, in the same directory, with nothing else to do.
    let bpath = rig.baseline_path();
    let (write_ms, write_secs) = durable_writes(&bpath, plan.baseline_writes)?;
    let baseline_rate = plan.baseline_writes as f64 / write_secs;

    // Latency, idle and under a garbage flood at half the unknown-key drop rate.
    eprintln!("bench: latency idle");
    let floor_ms = sh_floor(&rig.started, 20.min(plan.latency_samples * 4))?;
    let (lat_idle, miss_idle) = latency(&mut rig, plan.latency_samples)?;
    let half = floods[1].median_rate() / 2.0;
    eprintln!("bench: latency under an unknown-key flood at {half:.0}/s");
    let calm = latency_under_flood(&mut rig, &unknown, half, &plan)?;
    let _ = rig.wait_drained(Duration::from_secs(60));
    // The same with the disk busy: the floor writes slow down, the receive loop must not.
    eprintln!("bench: the same with the disk kept busy by dd (direct I/O)");
    let busy_disk = BusyDisk::start(&rig.root)?;
    let (busy_write_ms, _) = durable_writes(&bpath, plan.baseline_writes / 3)?;
    let busy = latency_under_flood(&mut rig, &unknown, half, &plan)?;
    drop(busy_disk);
    let _ = rig.wait_drained(Duration::from_secs(60));
    let peak = rig::mem_bytes(spid, "VmHWM");
    let log_lines = std::fs::read_to_string(rig.root.join("server.log"))
        .map(|t| t.lines().count())
        .unwrap_or(0);

    // The table.
    let pct = |x: f64| format!("{:.0}%", x * 100.0);
    let bound = |s: &Series| {
        if s.sender_bound() > 0 {
            format!(
                ", sender-bound in {}/{} rounds",
                s.sender_bound(),
                s.runs.len()
            )
        } else {
            String::new()
        }
    };
    let mut rows = vec![row(
        &ceil.name,
        format!(
            "{:.0}/s best of {} rounds (median {:.0}/s), {:.2} CPU s/M{}",
            ceiling,
            ceil.runs.len(),
            ceil.median_rate(),
            ceiling_cost,
            bound(&ceil)
        ),
        "-",
        None,
    )];
    // Rate ratio: best round over best ceiling round. Cost ratio: CPU seconds per million
    // of the ceiling over the flood's (what the rate ratio is when both saturate a core;
    // hardly moved by other load on the machine).
    let inconclusive = |best_bound: bool, ratio: f64, target: f64| {
        (best_bound && ratio < target)
            .then(|| "the sender, not the receiver, set the rate: a lower bound".to_owned())
    };
    // When the ceiling itself was sender-bound it is underestimated, so rate ratios are
    // optimistic and the cost ratio decides.
    let ceiling_bound = ceil.best_sender_bound();
    for f in &floods {
        let rr = f.best_rate() / ceiling.max(1e-9);
        let cr = ceiling_cost / f.best_cpu().max(1e-9);
        let judged = if ceiling_bound { cr } else { rr };
        let mut r = row(
            &f.name,
            format!(
                "{:.0}/s = {} of ceiling, cost ratio {} ({:.2} CPU s/M){}",
                f.best_rate(),
                pct(rr),
                pct(cr),
                f.best_cpu(),
                bound(f)
            ),
            &f.target
                .map_or("-".to_owned(), |t| format!(">= {}", pct(t))),
            f.target.map(|t| judged >= t),
        );
        r.caveat = f
            .target
            .and_then(|t| inconclusive(f.best_sender_bound() && !ceiling_bound, rr, t));
        rows.push(r);
    }
    let single = &floods[1];
    for (m, same) in many.iter().zip(matched.iter()) {
        let rr = m.best_rate() / single.best_rate().max(1e-9);
        let cr = same.best_cpu() / m.best_cpu().max(1e-9);
        // A sender-bound rate says nothing about capacity; the cost against one source
        // at the same rate does.
        let judged = if m.best_sender_bound() { cr } else { rr };
        rows.push(row(
            &m.name,
            format!(
                "{:.0}/s = {} of single source, cost ratio {} vs one source sent alike \
                 ({:.2} CPU s/M), VmHWM {:.1} MiB{}",
                m.best_rate(),
                pct(rr),
                pct(cr),
                m.best_cpu(),
                m.hwm() as f64 / MIB,
                bound(m)
            ),
            ">= 90%, <= 32 MiB",
            Some(judged >= 0.9 && m.hwm() as f64 <= 32.0 * MIB),
        ));
    }
    // Flat: the peak after the last (largest) flood is within 1 MiB of the first one's.
    let hwms: Vec<u64> = many
        .iter()
        .flat_map(|m| m.runs.iter().map(|r| r.rss_peak))
        .collect();
    let first_hwm = many
        .first()
        .and_then(|m| m.runs.first())
        .map_or(0, |r| r.rss_peak);
    let flat = hwms.iter().all(|h| *h <= first_hwm + 1024 * 1024);
    rows.push(row(
        "peak RSS flat as sources grow",
        many.iter()
            .map(|m| format!("{:.1} MiB", m.hwm() as f64 / MIB))
            .collect::<Vec<_>>()
            .join(" -> "),
        "grows < 1 MiB",
        Some(flat),
    ));
    let checked = std::iter::once(&ceil)
        .chain(floods.iter())
        .chain(many.iter())
        .chain(matched.iter())
        .all(Series::cross_checked)
        && sink_counted == sink_processed;
    rows.push(row(
        "sent - kernel drops == receiver's own count",
        if checked {
            "every run".to_owned()
        } else {
            "MISMATCH (see JSON)".to_owned()
        },
        "every run",
        Some(checked),
    ));
    rows.push(row(
        "valid end to end: accepted/s",
        format!(
            "{accepted_rate:.0}/s ({accepted}/{} accepted) = {:.1}x baseline {baseline_rate:.0}/s \
             (one write_atomic: p50 {:.2} ms, p99 {:.2} ms)",
            plan.valid,
            accepted_rate / baseline_rate.max(1e-9),
            percentile(&write_ms, 0.5),
            percentile(&write_ms, 0.99)
        ),
        ">= 5x baseline",
        Some(accepted_rate >= 5.0 * baseline_rate),
    ));
    rows.push(row(
        "valid end to end: executed/s (`true`)",
        format!("{executed_rate:.0}/s ({executed}/{accepted} executed)"),
        "all executed",
        Some(executed == accepted),
    ));
    let p = |v: &[f64], q| percentile(v, q);
    rows.push(row(
        "latency idle p50 / p99",
        format!(
            "{:.2} / {:.2} ms to the command's start ({} missing; `sh -c` started by the \
             benchmark itself: {floor_ms:.2} ms)",
            p(&lat_idle, 0.5),
            p(&lat_idle, 0.99),
            miss_idle
        ),
        "p50 <= 2 ms",
        Some(p(&lat_idle, 0.5) <= 2.0 && miss_idle == 0),
    ));
    rows.push(row(
        "latency under flood at half the drop rate p50 / p99",
        format!(
            "{:.2} / {:.2} ms ({} missing, flood {:.0}/s, {} kernel drops)",
            p(&calm.samples, 0.5),
            p(&calm.samples, 0.99),
            calm.missing,
            calm.flood_rate,
            calm.kernel_drops
        ),
        "all executed, p99 <= 50 ms",
        Some(p(&calm.samples, 0.99) <= 50.0 && calm.missing == 0),
    ));
    rows.push(row(
        "the same, disk kept busy (dd, direct I/O) p50 / p99",
        format!(
            "{:.2} / {:.2} ms ({} missing, flood {:.0}/s, {} kernel drops; one write_atomic \
             meanwhile p50 {:.2} ms, p99 {:.2} ms)",
            p(&busy.samples, 0.5),
            p(&busy.samples, 0.99),
            busy.missing,
            busy.flood_rate,
            busy.kernel_drops,
            percentile(&busy_write_ms, 0.5),
            percentile(&busy_write_ms, 0.99)
        ),
        "all executed (not an issue target)",
        Some(busy.missing == 0),
    ));
    rows.push(row(
        "idle RSS",
        format!("{:.1} MiB", idle_rss as f64 / MIB),
        "<= 8 MiB",
        Some(idle_rss as f64 <= 8.0 * MIB),
    ));
    rows.push(row(
        "idle CPU",
        format!("{idle_cpu:.3}% over {idle_secs:.0} s, {idle_wakeups:.1} wake-ups/s"),
        "< 0.1%, <= 1 timer/s",
        Some(idle_cpu < 0.1),
    ));
    rows.push(row(
        "server peak RSS (VmHWM, whole run)",
        format!("{:.1} MiB", peak as f64 / MIB),
        "<= 32 MiB",
        Some(peak as f64 <= 32.0 * MIB),
    ));

    drop(rig);
    rows.extend(forged_junk(&ctx, &plan, ceil.best_rate())?);
    let (one_64, one_64_json) = one_64_flood(&ctx, &plan, ceil.best_rate())?;
    rows.push(one_64);

    print_table(&rows, args.smoke);
    println!(
        "rate ratio: best round / best ceiling round. cost ratio: lowest server CPU s per million \
         datagrams of the reference (ceiling, or one source sent by the same distinct-source sender) / the \
         flood's. sender-bound: under 1% dropped, the receiver kept up. When the reference \
         was sender-bound, met? is judged on the cost ratio."
    );
    for r in rows
        .iter()
        .filter(|r| r.caveat.is_some() && r.met == Some(false))
    {
        println!(
            "n/a: {}: {}",
            r.metric,
            r.caveat.as_deref().unwrap_or_default()
        );
    }
    println!();
    println!(
        "runs (offered, sent, kernel drops, processed = sent - drops, seconds, STATUS received / reason):"
    );
    for m in std::iter::once(&ceil)
        .chain(floods.iter())
        .chain(many.iter())
        .chain(matched.iter())
        .flat_map(|s| s.runs.iter())
    {
        println!(
            "  {:<32} offered {:>9.0}/s sent {:>9} drops {:>9} processed {:>9} in {:.2} s; {:?} {:?}",
            m.name,
            m.sent.rate(),
            m.sent.datagrams,
            m.drops,
            m.processed,
            m.secs,
            m.status_received,
            m.status_reason
        );
        if let Some(st) = &m.stalled {
            println!("    STALLED: {st}");
        }
    }

    let doc = json!({
        "date_unix_ns": started_at.to_string(),
        "smoke": args.smoke,
        "machine": machine(),
        "sender_threads": ctx.threads,
        "flood_seconds": plan.flood.as_secs_f64(),
        "receive_buffer_bytes": sink_buf,
        "rounds": plan.reps,
        "load_before": load_before,
        "load_after": load(),
        "ceiling_per_s": ceiling,
        "ceiling": ceil.json(),
        "ceiling_receiver_counted": sink_counted,
        "floods": floods.iter().map(Series::json).collect::<Vec<_>>(),
        "distinct_sources": many.iter().map(Series::json).collect::<Vec<_>>(),
        "single_source_matched": matched.iter().map(Series::json).collect::<Vec<_>>(),
        "valid": {
            "datagrams": plan.valid, "sent": vsent.datagrams, "kernel_drops": vd1.saturating_sub(vd0),
            "accepted": accepted, "accepted_per_s": accepted_rate,
            "executed": executed, "executed_per_s": executed_rate,
            "baseline_durable_writes_per_s": baseline_rate,
            "baseline_write_ms": {"p50": percentile(&write_ms, 0.5), "p99": percentile(&write_ms, 0.99)},
            "ratio_to_baseline": accepted_rate / baseline_rate.max(1e-9),
        },
        "latency_ms": {
            "idle": {"p50": p(&lat_idle, 0.5), "p99": p(&lat_idle, 0.99), "samples": lat_idle.len(), "missing": miss_idle},
            "flood": calm.json(),
            "flood_busy_disk": busy.json(),
            "busy_disk_write_ms": {"p50": percentile(&busy_write_ms, 0.5), "p99": percentile(&busy_write_ms, 0.99)},
            "to": "the command's first action (a shell builtin writing into a FIFO)",
            "sh_started_by_bench_p50": floor_ms,
        },
        "idle": {"seconds": idle_secs, "rss_bytes": idle_rss, "cpu_percent": idle_cpu, "wakeups_per_s": idle_wakeups},
        "server_vm_hwm_bytes": peak,
        "server_log_lines": log_lines,
        "one_64_flood": one_64_json,
        "table": rows.iter().map(|r| json!({"metric": r.metric, "measured": r.measured, "target": r.target, "met": r.met, "caveat": r.caveat})).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| format!("json: {e}"))?;
    std::fs::write(&json_path, text + "\n")
        .map_err(|e| format!("write {}: {e}", json_path.display()))?;
    println!("\nJSON: {}", json_path.display());
    Ok(())
}

fn print_table(rows: &[Row], smoke: bool) {
    if smoke {
        println!("(smoke run: tiny durations, the numbers mean nothing)");
    }
    let w0 = rows.iter().map(|r| r.metric.len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.measured.len()).max().unwrap_or(0);
    let w2 = rows.iter().map(|r| r.target.len()).max().unwrap_or(0);
    println!(
        "| {:<w0$} | {:<w1$} | {:<w2$} | met? |",
        "metric", "measured", "target"
    );
    println!(
        "|{}|{}|{}|------|",
        "-".repeat(w0 + 2),
        "-".repeat(w1 + 2),
        "-".repeat(w2 + 2)
    );
    for r in rows {
        let met = match (r.met, &r.caveat) {
            (Some(true), _) => "yes",
            (Some(false), Some(_)) => "n/a",
            (Some(false), None) => "no",
            (None, _) => "-",
        };
        println!(
            "| {:<w0$} | {:<w1$} | {:<w2$} | {met:<4} |",
            r.metric, r.measured, r.target
        );
    }
}

/// `perf record` attached to `pid` (stopped with SIGINT so it writes its file).
fn start_perf(pid: u32, what: &str) -> R<std::process::Child> {
    let out = rig::bin_dir()?
        .parent()
        .map(|t| t.join(format!("bench-perf-{what}.data")))
        .ok_or("no target dir")?;
    std::process::Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-F", "4999", "-g", "-p"])
        .arg(pid.to_string())
        .arg("-o")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("perf record: {e} (is perf installed?)"))
}

fn stop_perf(mut child: std::process::Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
    let _ = child.wait();
}

/// Load average and CPU pressure: this benchmark shares the machine with whatever else runs.
fn load() -> Value {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.lines().next().unwrap_or_default().trim().to_owned())
            .unwrap_or_default()
    };
    json!({"loadavg": read("/proc/loadavg"), "cpu_pressure": read("/proc/pressure/cpu")})
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    json!({"cpu": cpu, "kernel": kernel, "cores": cores})
}
