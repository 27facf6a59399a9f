//! The measuring half of the benchmark: runs what the plan names (idle, the rounds of ceiling
//! and floods, valid datagrams end to end, latency, the shipped-limits rows) against the rig
//! and collects raw numbers. It must never judge a number against a target, nor format the
//! table: that is `report`'s.

use crate::load::{self, Flood, Sources};
use crate::plan::{Kind, Plan};
use crate::rig::{self, R, Receiver, Rig, Sink};
use crate::stats::{Measured, Series, percentile, sender_bound};
use ruroco_kit::fsutil::write_atomic;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
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
pub const FLOOD_64: &str = "2001:db8:6464::/64";
const FLOOD_64_FIRST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x6464, 0, 0, 0, 1, 0);
/// Distinct addresses of that /64 the flood cycles through (far more than the server's
/// 65,536 address slots, so an address is never remembered from one turn to its next).
const FLOOD_64_SOURCES: u32 = 1_000_000;
/// Datagrams per address and turn: under the shipped burst of 5, so no address ever exceeds
/// its own budget; only the count per /64 puts them over budget.
pub const FLOOD_64_PER_SOURCE: usize = 4;
/// While sending valid datagrams, wait whenever the server's queue holds more than this
/// (bytes of kernel accounting, about 1 KiB per datagram): no kernel drops, full batches.
const VALID_QUEUE_BYTES: u64 = 512 * 1024;
/// A receiver that saturates drains its full queue (~9,000 datagrams) in milliseconds.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Everything one run measured, raw.
#[derive(Debug)]
pub struct Raw {
    pub started_at: u128,
    pub machine: Value,
    pub load_before: Value,
    pub load_after: Value,
    pub sink_receive_buffer: usize,
    pub ceiling: Series,
    /// What the ceiling receiver counted itself over all its floods.
    pub sink_counted: u64,
    /// One series per flood of the plan, in its order.
    pub floods: Vec<(Kind, Series)>,
    /// The rest of a full run; `None` with `--only`.
    pub full: Option<Full>,
}

/// The measurements of a full run besides the ceiling and the single-source floods.
#[derive(Debug)]
pub struct Full {
    pub idle: Idle,
    /// The distinct-source floods, and for each the same sender with one source address.
    pub many: Vec<Series>,
    pub matched: Vec<Series>,
    pub valid: Valid,
    pub latency: Latency,
    /// The server's VmHWM at the end of the main rig's part.
    pub peak: u64,
    pub log_lines: usize,
    pub junk: Vec<Junk>,
    /// The one-/64 row, or why it could not be measured.
    pub one_64: Result<One64, String>,
}

/// 10 s (1 s smoke) of the fresh server without traffic.
#[derive(Debug)]
pub struct Idle {
    pub secs: f64,
    pub cpu_percent: f64,
    pub wakeups_per_s: f64,
    pub rss: u64,
}

/// Valid datagrams end to end, and the one-durable-write-per-datagram baseline.
#[derive(Debug)]
pub struct Valid {
    pub datagrams: usize,
    pub sent: u64,
    pub kernel_drops: u64,
    pub accepted: u64,
    pub accepted_rate: f64,
    pub executed: u64,
    pub executed_rate: f64,
    pub baseline_rate: f64,
    /// Each baseline write's milliseconds, sorted.
    pub write_ms: Vec<f64>,
}

/// Latency samples in ms, sorted.
#[derive(Debug)]
pub struct Latency {
    /// `sh -c` started by the benchmark itself, p50.
    pub floor_ms: f64,
    pub idle: Vec<f64>,
    pub idle_missing: usize,
    pub calm: FloodLatency,
    pub busy: FloodLatency,
    /// `write_atomic` while `dd` keeps the disk busy, sorted.
    pub busy_write_ms: Vec<f64>,
}

/// Latency while one thread floods `payloads` from `FLOOD_SRC` at `rate`.
#[derive(Debug)]
pub struct FloodLatency {
    pub samples: Vec<f64>,
    pub missing: usize,
    pub flood_rate: f64,
    pub kernel_drops: u64,
}

impl FloodLatency {
    pub fn json(&self) -> Value {
        json!({"p50": percentile(&self.samples, 0.5), "p99": percentile(&self.samples, 0.99),
               "samples": self.samples.len(), "missing": self.missing,
               "flood_per_s": self.flood_rate, "kernel_drops": self.kernel_drops})
    }
}

/// One row of junk forged from the client's address, shipped limits.
#[derive(Debug)]
pub struct Junk {
    pub label: &'static str,
    /// Paced (20/s, 100/s), or at full speed.
    pub paced: bool,
    pub sent: usize,
    pub accepted: u64,
    pub junk_rate: f64,
    pub bad_tags: u64,
    pub limited: u64,
    pub drops: u64,
}

/// The bad-tag flood from one IPv6 /64 while the client sends from ::1, shipped limits.
#[derive(Debug)]
pub struct One64 {
    pub flood: Measured,
    pub client_ip: IpAddr,
    pub gap: Duration,
    pub sent: usize,
    pub accepted: u64,
    /// The server's `received` delta: flood and client.
    pub received: u64,
    /// Rejections by reason (STATUS= deltas), the non-zero ones.
    pub rejected: Vec<(String, u64)>,
    /// The flood's AEAD attempts: its `bad_tag` delta (the client's datagrams are valid).
    pub flood_aead: u64,
}

struct Ctx {
    ticks: f64,
    threads: usize,
}

/// Run the plan.
pub fn run(plan: &Plan) -> R<Raw> {
    let ctx = Ctx {
        ticks: rig::clock_ticks(),
        threads: plan.threads,
    };
    let started_at = ruroco_testkit::now_ns();
    let load_before = load();
    eprintln!("bench: starting the commander and the server (state on /var/tmp)");
    let mut rig = Rig::new()?;
    rig.start()?;
    let idle = if plan.full {
        Some(idle(&ctx, &rig, plan.idle))
    } else {
        None
    };

    let unknown = unknown_key_payloads(&rig, 1024)?;
    let dest = rig.dest();
    let mut payloads = Vec::new();
    for kind in &plan.kinds {
        payloads.push(match kind {
            Kind::BadLength => (0..64)
                .map(|_| random_bytes(ruroco_proto::DATAGRAM_LEN - 1))
                .collect::<R<Vec<_>>>()?,
            Kind::UnknownKey => unknown.clone(),
            Kind::BadTag => bad_tag_payloads(&rig, 1024)?,
            Kind::Duplicate => {
                // Replays: one valid datagram, accepted once, then copies of it
                // (`duplicate`) in every round.
                let one = valid(&rig, "true");
                let acc0 = rig.status().get("accepted").copied().unwrap_or(0);
                UdpSocket::bind((FLOOD_SRC, 0))
                    .and_then(|s| s.send_to(&one, dest))
                    .map_err(|e| format!("send the datagram to replay: {e}"))?;
                rig.wait_counter("accepted", acc0 + 1);
                vec![one]
            }
        });
    }
    let mut ceiling = Series::new("ceiling (bare recvmmsg loop)", None);
    let mut floods: Vec<(Kind, Series)> = plan
        .kinds
        .iter()
        .map(|k| (*k, Series::new(&format!("{} flood", k.name()), k.target())))
        .collect();
    let sources: &[u32] = if plan.full { &plan.sources } else { &[] };
    let mut many: Vec<Series> = sources
        .iter()
        .map(|c| Series::new(&format!("unknown key id, {c} sources"), Some(0.9)))
        .collect();
    // For each distinct-source flood, the same sender with a single source address: the
    // same arrival pattern and batching, so CPU per datagram differs only by the sources.
    let mut matched: Vec<Series> = sources
        .iter()
        .map(|c| Series::new(&format!("unknown key id, 1 source sent like the {c}"), None))
        .collect();
    // Rounds interleave the ceiling and the floods, so each ratio compares runs made
    // seconds apart (this machine's load moves; medians over rounds are reported).
    let mut sink = Sink::start()?;
    let sink_dest = sink.dest();
    let sink_receive_buffer = sink.receive_buffer;
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
            &flood(unknown.clone(), sink_dest, Sources::One(FLOOD_SRC), plan),
        )?;
        let c_rate = c.rate;
        ceiling.push(c, 1.0);
        let mut single = 0.0;
        for ((kind, series), payloads) in floods.iter_mut().zip(&payloads) {
            let reason = kind.counter();
            let profiler = perf_if(plan, round, &rig, reason)?;
            let m = measure_server(
                &ctx,
                &mut rig,
                kind.name(),
                reason,
                &flood(payloads.clone(), dest, Sources::One(FLOOD_SRC), plan),
            )?;
            if let Some(p) = profiler {
                stop_perf(p);
            }
            if *kind == Kind::UnknownKey {
                single = m.rate;
            }
            let r = m.rate / c_rate.max(1e-9);
            series.push(m, r);
        }
        for (idx, (count, series)) in sources.iter().zip(many.iter_mut()).enumerate() {
            eprintln!("bench: round {}/{}: {count} sources", round + 1, plan.reps);
            let mut f = flood(
                unknown.clone(),
                dest,
                Sources::Many {
                    first: MANY_FIRST,
                    count: *count,
                    per_source: plan.per_source,
                },
                plan,
            );
            f.min_datagrams = u64::from(*count) * plan.per_source as u64;
            let profiler = perf_if(plan, round, &rig, &format!("sources-{count}"))?;
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
                    per_source: plan.per_source,
                },
                plan,
            );
            same.min_datagrams = (offered * plan.flood.as_secs_f64()) as u64;
            let name = matched[idx].name.clone();
            let profiler = perf_if(plan, round, &rig, &format!("sources-{count}-matched"))?;
            let m = measure_server(&ctx, &mut rig, &name, "unknown_key", &same)?;
            if let Some(p) = profiler {
                stop_perf(p);
            }
            matched[idx].push(m, 1.0);
        }
    }
    let sink_counted = sink.stop()?;
    let full = match idle {
        Some(idle) => {
            let half = floods
                .iter()
                .find(|(k, _)| *k == Kind::UnknownKey)
                .map_or(0.0, |(_, s)| s.median_rate())
                / 2.0;
            let valid = valid_end_to_end(&mut rig, plan)?;
            let latency = latencies(&mut rig, plan, &unknown, half)?;
            let peak = rig::mem_bytes(rig.server_pid(), "VmHWM");
            let log_lines = std::fs::read_to_string(rig.root.join("server.log"))
                .map(|t| t.lines().count())
                .unwrap_or(0);
            drop(rig);
            let junk = forged_junk(&ctx, plan)?;
            let one_64 = one_64_flood(&ctx, plan)?;
            Some(Full {
                idle,
                many,
                matched,
                valid,
                latency,
                peak,
                log_lines,
                junk,
                one_64,
            })
        }
        None => None,
    };
    Ok(Raw {
        started_at,
        machine: machine(),
        load_before,
        load_after: load(),
        sink_receive_buffer,
        ceiling,
        sink_counted,
        floods,
        full,
    })
}

/// `--ceiling-only`: the ceiling from one source and from 10,000, for tuning the sender.
pub fn ceiling_only(plan: &Plan) -> R<Value> {
    let ctx = Ctx {
        ticks: rig::clock_ticks(),
        threads: plan.threads,
    };
    let unknown: Vec<Vec<u8>> = (0..1024).map(|_| random_bytes(94)).collect::<R<_>>()?;
    let mut sink = Sink::start()?;
    let sink_dest = sink.dest();
    let mut runs = vec![measure(
        &ctx,
        "ceiling",
        &mut sink,
        &flood(unknown.clone(), sink_dest, Sources::One(FLOOD_SRC), plan),
    )?];
    let mut f = flood(
        unknown,
        sink_dest,
        Sources::Many {
            first: MANY_FIRST,
            count: 10_000,
            per_source: plan.per_source,
        },
        plan,
    );
    f.min_datagrams = 10_000 * plan.per_source as u64;
    runs.push(measure(&ctx, "ceiling, 10000 sources", &mut sink, &f)?);
    let counted = sink.stop()?;
    let js: Vec<Value> = runs.iter().map(Measured::json).collect();
    Ok(json!({"runs": js, "counted": counted}))
}

/// Idle cost first, on the fresh server: CPU, wake-ups (context switches) and RSS.
fn idle(ctx: &Ctx, rig: &Rig, idle: Duration) -> Idle {
    let spid = rig.server_pid();
    std::thread::sleep(Duration::from_millis(500));
    let switches = || {
        rig::status_num(spid, "voluntary_ctxt_switches")
            + rig::status_num(spid, "nonvoluntary_ctxt_switches")
    };
    let c0 = rig::cpu_seconds(spid, ctx.ticks);
    let w0 = switches();
    let t0 = Instant::now();
    eprintln!("bench: idle for {idle:?}");
    std::thread::sleep(idle);
    let secs = t0.elapsed().as_secs_f64();
    Idle {
        secs,
        cpu_percent: (rig::cpu_seconds(spid, ctx.ticks) - c0) / secs * 100.0,
        wakeups_per_s: switches().saturating_sub(w0) as f64 / secs,
        rss: rig::mem_bytes(spid, "VmRSS"),
    }
}

/// Valid datagrams end to end (group commit on a real disk, commander running `true`), then
/// the baseline: one durable write (temp, fsync, rename, fsync dir) per datagram, the same
/// write the server makes per batch, in the same directory, with nothing else to do.
fn valid_end_to_end(rig: &mut Rig, plan: &Plan) -> R<Valid> {
    eprintln!("bench: {} valid datagrams end to end", plan.valid);
    let dest = rig.dest();
    let datagrams: Vec<Vec<u8>> = (0..plan.valid).map(|_| valid(rig, "true")).collect();
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
    let (write_ms, write_secs) = durable_writes(&rig.baseline_path(), plan.baseline_writes)?;
    Ok(Valid {
        datagrams: plan.valid,
        sent: vsent.datagrams,
        kernel_drops: vd1.saturating_sub(vd0),
        accepted,
        accepted_rate: accepted as f64 / accept_secs,
        executed,
        executed_rate: executed as f64 / exec_secs,
        baseline_rate: plan.baseline_writes as f64 / write_secs,
        write_ms,
    })
}

/// Latency, idle and under a garbage flood at `half` (half the unknown-key drop rate), then
/// the same with the disk busy: the floor writes slow down, the receive loop must not.
fn latencies(rig: &mut Rig, plan: &Plan, unknown: &[Vec<u8>], half: f64) -> R<Latency> {
    eprintln!("bench: latency idle");
    let floor_ms = sh_floor(&rig.started, 20.min(plan.latency_samples * 4))?;
    let (idle, idle_missing) = latency(rig, plan.latency_samples)?;
    eprintln!("bench: latency under an unknown-key flood at {half:.0}/s");
    let calm = latency_under_flood(rig, unknown, half, plan)?;
    let _ = rig.wait_drained(Duration::from_secs(60));
    eprintln!("bench: the same with the disk kept busy by dd (direct I/O)");
    let busy_disk = BusyDisk::start(&rig.root)?;
    let (busy_write_ms, _) = durable_writes(&rig.baseline_path(), plan.baseline_writes / 3)?;
    let busy = latency_under_flood(rig, unknown, half, plan)?;
    drop(busy_disk);
    let _ = rig.wait_drained(Duration::from_secs(60));
    Ok(Latency {
        floor_ms,
        idle,
        idle_missing,
        calm,
        busy,
        busy_write_ms,
    })
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
        sender_bound: sender_bound(sent.datagrams, drops),
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
    let pt = ruroco_testkit::plaintext(cmd, FLOOD_SRC.into());
    ruroco_testkit::seal(&rig.key, &pt).to_vec()
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

fn counter(m: &BTreeMap<String, u64>, k: &str) -> u64 {
    m.get(k).copied().unwrap_or(0)
}

/// Issue 14: junk with the client's key id forged from the client's own address, on a server
/// with the shipped limits, while the client sends one valid datagram every 50 ms from that
/// address. At 20/s and 100/s (one junk datagram at a time, evenly paced) every valid one must
/// be accepted. At full speed (GSO bursts, far above the global budget) the flood may take the
/// client's turn: measured, not judged, and its rate is compared with the bare receive loop.
fn forged_junk(ctx: &Ctx, plan: &Plan) -> R<Vec<Junk>> {
    eprintln!("bench: junk forged from a client's address, shipped limits");
    let mut rig = Rig::with_limits(rig::SHIPPED_LIMITS)?;
    rig.start()?;
    let dest = rig.dest();
    let bad = bad_tag_payloads(&rig, 1024)?;
    let gap = Duration::from_millis(50);
    let count = (plan.flood.as_millis() / gap.as_millis()).max(1) as usize;
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
        let a0 = counter(&before, "accepted");
        let accepted = rig.wait_counter("accepted", a0 + sent as u64) - a0;
        let after = rig.status();
        rows.push(Junk {
            label,
            paced: rate.is_some(),
            sent,
            accepted,
            junk_rate,
            bad_tags: counter(&after, "bad_tag") - counter(&before, "bad_tag"),
            limited: counter(&after, "rate_limited") - counter(&before, "rate_limited"),
            drops,
        });
    }
    Ok(rows)
}

/// The per-/64 budget: bad-tag datagrams (the client's key id, so each one reaches the rate
/// limiter and, when admitted, an AEAD attempt that fails and is charged to its address and
/// its /64; unknown-key junk is rejected before the limiter and would test nothing) from up
/// to `FLOOD_64_SOURCES` addresses of one /64, `FLOOD_64_PER_SOURCE` per address and turn, at
/// full speed, on an IPv6 server with the shipped limits, while the client sends one valid
/// datagram every 50 ms from ::1 (another /64). `Ok(Err(why))` when it cannot be measured
/// here (no IPv6 on loopback): nothing broken in ruroco.
fn one_64_flood(ctx: &Ctx, plan: &Plan) -> R<Result<One64, String>> {
    eprintln!("bench: bad-tag flood from many addresses of {FLOOD_64}, shipped limits");
    // The route goes when `_route` is dropped: on every return below, and on a panic.
    let _route = match rig::LocalRoute::add(FLOOD_64) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "bench: bad-tag flood from one IPv6 /64 ({FLOOD_64}), client at ::1: not measured: {e}"
            );
            return Ok(Err(e));
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
        .map(|_| {
            ruroco_testkit::seal(&rig.key, &ruroco_testkit::plaintext("true", client_ip)).to_vec()
        })
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
    // Everything sent, flood and client, minus the socket's drops, must be counted received.
    let r0 = counter(&before, "received");
    let received = rig.wait_counter("received", r0 + m.processed + sent as u64) - r0;
    let a0 = counter(&before, "accepted");
    // Once `received` is complete, `accepted` follows within a floor write and a STATUS=.
    let accepted = rig.wait_counter_for("accepted", a0 + sent as u64, Duration::from_secs(2)) - a0;
    let after = rig.status();
    let rejected = ruroco_proto::Reject::ALL
        .iter()
        .map(|r| {
            let k = r.as_str();
            (
                k.to_owned(),
                counter(&after, k).saturating_sub(counter(&before, k)),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    Ok(Ok(One64 {
        flood_aead: counter(&after, "bad_tag").saturating_sub(counter(&before, "bad_tag")),
        flood: m,
        client_ip,
        gap,
        sent,
        accepted,
        received,
        rejected,
    }))
}

fn perf_if(plan: &Plan, round: usize, rig: &Rig, what: &str) -> R<Option<std::process::Child>> {
    if plan.perf && round == 0 {
        start_perf(rig.server_pid(), what).map(Some)
    } else {
        Ok(None)
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
