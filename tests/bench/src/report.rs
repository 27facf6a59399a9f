//! The reporting half of the benchmark: from the raw numbers, the ratios, the judgement
//! against the project's targets, the table on stdout and the JSON document. Pure except for
//! printing; it must never measure anything, and never fail a run on a number.

use crate::measure::{FLOOD_64, FLOOD_64_PER_SOURCE, Full, Junk, One64, Raw};
use crate::plan::{Kind, Plan};
use crate::rig::{self, R};
use crate::stats::{Series, percentile};
use serde_json::{Value, json};

const MIB: f64 = 1024.0 * 1024.0;

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub metric: String,
    pub measured: String,
    pub target: String,
    pub met: Option<bool>,
    /// Why `met` cannot be concluded from this run, if so.
    pub caveat: Option<String>,
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

/// Rate ratio: a rate over its reference's (the best ceiling round, or one source).
pub fn rate_ratio(rate: f64, reference: f64) -> f64 {
    rate / reference.max(1e-9)
}

/// Cost ratio: the reference's CPU seconds per million over the flood's; what the rate ratio
/// is when both saturate a core, and hardly moved by other load on the machine.
pub fn cost_ratio(reference_cpu: f64, cpu: f64) -> f64 {
    reference_cpu / cpu.max(1e-9)
}

/// The ratio a target is judged on: when the reference was sender-bound its rate is
/// underestimated, the rate ratio optimistic, and the cost ratio decides.
pub fn judged(reference_sender_bound: bool, rate_ratio: f64, cost_ratio: f64) -> f64 {
    if reference_sender_bound {
        cost_ratio
    } else {
        rate_ratio
    }
}

/// A rate ratio below its target says nothing when the flood's best round was sender-bound
/// (and the reference was not): the sender, not the receiver, set the rate.
pub fn inconclusive(best_sender_bound: bool, ratio: f64, target: f64) -> Option<String> {
    (best_sender_bound && ratio < target)
        .then(|| "the sender, not the receiver, set the rate: a lower bound".to_owned())
}

/// The met? column.
pub fn met_label(met: Option<bool>, caveat: Option<&str>) -> &'static str {
    match (met, caveat) {
        (Some(true), _) => "yes",
        (Some(false), Some(_)) => "n/a",
        (Some(false), None) => "no",
        (None, _) => "-",
    }
}

/// A number of `[rate_limit]` lines (`name = value`).
pub fn shipped_limit(limits: &str, name: &str) -> R<f64> {
    limits
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == name).then(|| v.trim().parse().ok())?
        })
        .ok_or_else(|| format!("no {name} in the shipped limits"))
}

/// The most AEAD attempts a /64 over its budget may get in `secs` of flood: over budget
/// after its first failures, it gets global tokens only above the reserve: the burst less
/// the reserve, plus the refill while it lasted (10 ms more for the last batch, judged after
/// the queue read empty), plus the failures within the /64's own burst. More than that (bad
/// tags: the client's datagrams are valid) means the flood took the reserve the client
/// relies on.
pub fn aead_cap(global: f64, burst: f64, reserve: f64, secs: f64) -> f64 {
    global * (1.0 - reserve) + global * (secs + 0.01) + burst
}

/// Peak RSS stays flat as sources grow: every peak within 1 MiB of the first flood's.
pub fn rss_flat(first: u64, peaks: &[u64]) -> bool {
    peaks.iter().all(|h| *h <= first + 1024 * 1024)
}

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

/// ", sender-bound in N/M rounds" when any round was.
fn bound(s: &Series) -> String {
    if s.sender_bound() > 0 {
        format!(
            ", sender-bound in {}/{} rounds",
            s.sender_bound(),
            s.runs.len()
        )
    } else {
        String::new()
    }
}

/// The table's rows, in order: the ceiling and floods, then (full run) distinct sources,
/// the cross-check, valid datagrams, latency, idle, memory, the shipped-limits rows.
pub fn rows(raw: &Raw) -> R<Vec<Row>> {
    let ceil = &raw.ceiling;
    let ceiling = ceil.best_rate();
    let ceiling_cost = ceil.best_cpu();
    let mut rows = vec![row(
        &ceil.name,
        format!(
            "{:.0}/s best of {} rounds (median {:.0}/s), {:.2} CPU s/M{}",
            ceiling,
            ceil.runs.len(),
            ceil.median_rate(),
            ceiling_cost,
            bound(ceil)
        ),
        "-",
        None,
    )];
    let ceiling_bound = ceil.best_sender_bound();
    for (_, f) in &raw.floods {
        let rr = rate_ratio(f.best_rate(), ceiling);
        let cr = cost_ratio(ceiling_cost, f.best_cpu());
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
            f.target.map(|t| judged(ceiling_bound, rr, cr) >= t),
        );
        r.caveat = f
            .target
            .and_then(|t| inconclusive(f.best_sender_bound() && !ceiling_bound, rr, t));
        rows.push(r);
    }
    let Some(full) = &raw.full else {
        rows.push(cross_check(raw, &[]));
        return Ok(rows);
    };
    let single = raw
        .floods
        .iter()
        .find(|(k, _)| *k == Kind::UnknownKey)
        .map(|(_, s)| s)
        .ok_or("a full run without the unknown-key flood")?;
    for (m, same) in full.many.iter().zip(full.matched.iter()) {
        let rr = rate_ratio(m.best_rate(), single.best_rate());
        let cr = cost_ratio(same.best_cpu(), m.best_cpu());
        // A sender-bound rate says nothing about capacity; the cost against one source
        // at the same rate does.
        let j = judged(m.best_sender_bound(), rr, cr);
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
            Some(j >= 0.9 && m.hwm() as f64 <= 32.0 * MIB),
        ));
    }
    let peaks: Vec<u64> = full
        .many
        .iter()
        .flat_map(|m| m.runs.iter().map(|r| r.rss_peak))
        .collect();
    let first = full
        .many
        .first()
        .and_then(|m| m.runs.first())
        .map_or(0, |r| r.rss_peak);
    rows.push(row(
        "peak RSS flat as sources grow",
        full.many
            .iter()
            .map(|m| format!("{:.1} MiB", m.hwm() as f64 / MIB))
            .collect::<Vec<_>>()
            .join(" -> "),
        "grows < 1 MiB",
        Some(rss_flat(first, &peaks)),
    ));
    rows.push(cross_check(raw, &[&full.many, &full.matched]));
    rows.extend(full_rows(full));
    rows.extend(full.junk.iter().map(|j| junk_row(j, ceiling)));
    rows.push(match &full.one_64 {
        Ok(o) => one_64(o, ceiling)?.0,
        Err(e) => row(
            &one_64_metric(),
            format!("not measured: {e}"),
            ONE_64_TARGET,
            None,
        ),
    });
    Ok(rows)
}

/// Every run's count matched the receiver's own: the server's STATUS= counters, and the
/// ceiling's count over all its floods.
fn cross_check(raw: &Raw, more: &[&[Series]]) -> Row {
    let sink_processed: u64 = raw.ceiling.runs.iter().map(|m| m.processed).sum();
    let checked = std::iter::once(&raw.ceiling)
        .chain(raw.floods.iter().map(|(_, s)| s))
        .chain(more.iter().flat_map(|s| s.iter()))
        .all(Series::cross_checked)
        && raw.sink_counted == sink_processed;
    row(
        "sent - kernel drops == receiver's own count",
        if checked {
            "every run".to_owned()
        } else {
            "MISMATCH (see JSON)".to_owned()
        },
        "every run",
        Some(checked),
    )
}

/// Valid datagrams, latency, idle and memory.
fn full_rows(full: &Full) -> Vec<Row> {
    let v = &full.valid;
    let l = &full.latency;
    let p = |v: &[f64], q| percentile(v, q);
    vec![
        row(
            "valid end to end: accepted/s",
            format!(
                "{:.0}/s ({}/{} accepted) = {:.1}x baseline {:.0}/s \
                 (one write_atomic: p50 {:.2} ms, p99 {:.2} ms)",
                v.accepted_rate,
                v.accepted,
                v.datagrams,
                rate_ratio(v.accepted_rate, v.baseline_rate),
                v.baseline_rate,
                p(&v.write_ms, 0.5),
                p(&v.write_ms, 0.99)
            ),
            ">= 5x baseline",
            Some(v.accepted_rate >= 5.0 * v.baseline_rate),
        ),
        row(
            "valid end to end: executed/s (`true`)",
            format!(
                "{:.0}/s ({}/{} executed)",
                v.executed_rate, v.executed, v.accepted
            ),
            "all executed",
            Some(v.executed == v.accepted),
        ),
        row(
            "latency idle p50 / p99",
            format!(
                "{:.2} / {:.2} ms to the command's start ({} missing; `sh -c` started by the \
                 benchmark itself: {:.2} ms)",
                p(&l.idle, 0.5),
                p(&l.idle, 0.99),
                l.idle_missing,
                l.floor_ms
            ),
            "p50 <= 2 ms",
            Some(p(&l.idle, 0.5) <= 2.0 && l.idle_missing == 0),
        ),
        row(
            "latency under flood at half the drop rate p50 / p99",
            format!(
                "{:.2} / {:.2} ms ({} missing, flood {:.0}/s, {} kernel drops)",
                p(&l.calm.samples, 0.5),
                p(&l.calm.samples, 0.99),
                l.calm.missing,
                l.calm.flood_rate,
                l.calm.kernel_drops
            ),
            "all executed, p99 <= 50 ms",
            Some(p(&l.calm.samples, 0.99) <= 50.0 && l.calm.missing == 0),
        ),
        row(
            "the same, disk kept busy (dd, direct I/O) p50 / p99",
            format!(
                "{:.2} / {:.2} ms ({} missing, flood {:.0}/s, {} kernel drops; one write_atomic \
                 meanwhile p50 {:.2} ms, p99 {:.2} ms)",
                p(&l.busy.samples, 0.5),
                p(&l.busy.samples, 0.99),
                l.busy.missing,
                l.busy.flood_rate,
                l.busy.kernel_drops,
                p(&l.busy_write_ms, 0.5),
                p(&l.busy_write_ms, 0.99)
            ),
            "all executed (not an issue target)",
            Some(l.busy.missing == 0),
        ),
        row(
            "idle RSS",
            format!("{:.1} MiB", full.idle.rss as f64 / MIB),
            "<= 8 MiB",
            Some(full.idle.rss as f64 <= 8.0 * MIB),
        ),
        row(
            "idle CPU",
            format!(
                "{:.3}% over {:.0} s, {:.1} wake-ups/s",
                full.idle.cpu_percent, full.idle.secs, full.idle.wakeups_per_s
            ),
            "< 0.1%, <= 1 timer/s",
            Some(full.idle.cpu_percent < 0.1),
        ),
        row(
            "server peak RSS (VmHWM, whole run)",
            format!("{:.1} MiB", full.peak as f64 / MIB),
            "<= 32 MiB",
            Some(full.peak as f64 <= 32.0 * MIB),
        ),
    ]
}

fn junk_row(j: &Junk, ceiling: f64) -> Row {
    let measured = if j.paced {
        format!(
            "client: {}/{} valid accepted; junk {:.0}/s, {} bad_tag, {} rate_limited",
            j.accepted, j.sent, j.junk_rate, j.bad_tags, j.limited
        )
    } else {
        format!(
            "client: {}/{} valid accepted; junk {:.0}/s = {:.0}% of ceiling, {} bad_tag, \
             {} rate_limited, {} kernel drops",
            j.accepted,
            j.sent,
            j.junk_rate,
            rate_ratio(j.junk_rate, ceiling) * 100.0,
            j.bad_tags,
            j.limited,
            j.drops
        )
    };
    row(
        &format!(
            "junk forged from a client's address at {} (shipped limits)",
            j.label
        ),
        measured,
        if j.paced {
            "all of the client's accepted"
        } else {
            "measured (above the global budget)"
        },
        j.paced.then_some(j.accepted == j.sent as u64),
    )
}

const ONE_64_TARGET: &str =
    "all of the client's accepted, flood within the budget above the reserve";

fn one_64_metric() -> String {
    format!("bad-tag flood from one IPv6 /64 ({FLOOD_64}), client at ::1")
}

/// The one-/64 row and its JSON. Met: every valid datagram of the client accepted, and the
/// flood given no more AEAD attempts than the global budget leaves above its reserve.
fn one_64(o: &One64, ceiling: f64) -> R<(Row, Value)> {
    let m = &o.flood;
    let ratio = rate_ratio(m.rate, ceiling);
    let sender_bound = if m.sender_bound { ", sender-bound" } else { "" };
    let cap = aead_cap(
        shipped_limit(rig::SHIPPED_LIMITS, "global")?,
        shipped_limit(rig::SHIPPED_LIMITS, "burst")?,
        ruroco_proto::gate::RESERVE,
        m.secs,
    );
    let reserve_kept = o.flood_aead as f64 <= cap;
    let reasons = if o.rejected.is_empty() {
        "none".to_owned()
    } else {
        o.rejected
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let measured = format!(
        "client: {}/{} valid accepted; flood from {} addresses, {:.0}/s = {:.0}% of \
         ceiling{sender_bound}, {} kernel drops; flood AEAD attempts {} (at most {cap:.0} \
         above the reserve); rejected: {reasons}",
        o.accepted,
        o.sent,
        m.sent.sources,
        m.rate,
        ratio * 100.0,
        m.drops,
        o.flood_aead,
    );
    let met = o.accepted == o.sent as u64 && reserve_kept;
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
        "client": {"address": o.client_ip.to_string(), "sent": o.sent, "accepted": o.accepted, "gap_ms": o.gap.as_millis()},
        "flood": m.json(),
        "ratio_to_ceiling": ratio,
        "flood_aead_attempts": o.flood_aead,
        "flood_aead_cap_above_reserve": cap,
        "reserve_kept": reserve_kept,
        "status_received": o.received,
        "received_matches_sent_minus_drops": o.received == m.processed + o.sent as u64,
        "rejected": o.rejected.iter().map(|(k, n)| (k.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "target": ONE_64_TARGET,
        "met": met,
        "caveat": caveat,
    });
    let mut r = row(&one_64_metric(), measured, ONE_64_TARGET, Some(met));
    r.caveat = caveat;
    Ok((r, doc))
}

/// The table, its legend, the caveats and every run, on stdout.
pub fn print(raw: &Raw, rows: &[Row], smoke: bool) {
    print_table(rows, smoke);
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
    for m in all_series(raw).flat_map(|s| s.runs.iter()) {
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
}

fn all_series(raw: &Raw) -> impl Iterator<Item = &Series> {
    let (many, matched): (&[Series], &[Series]) = match &raw.full {
        Some(f) => (&f.many, &f.matched),
        None => (&[], &[]),
    };
    std::iter::once(&raw.ceiling)
        .chain(raw.floods.iter().map(|(_, s)| s))
        .chain(many.iter())
        .chain(matched.iter())
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
        let met = met_label(r.met, r.caveat.as_deref());
        println!(
            "| {:<w0$} | {:<w1$} | {:<w2$} | {met:<4} |",
            r.metric, r.measured, r.target
        );
    }
}

/// The JSON document: the plan, the machine, every series and run, and the table. A run
/// with `--only` has `null` for what it did not measure.
pub fn json(plan: &Plan, raw: &Raw, rows: &[Row]) -> R<Value> {
    let p = |v: &[f64], q| percentile(v, q);
    let full = raw.full.as_ref();
    let series = |s: &[Series]| s.iter().map(Series::json).collect::<Vec<_>>();
    let one_64_json = match full.map(|f| &f.one_64) {
        Some(Ok(o)) => one_64(o, raw.ceiling.best_rate())?.1,
        Some(Err(e)) => json!({"skipped": e}),
        None => Value::Null,
    };
    Ok(json!({
        "date_unix_ns": raw.started_at.to_string(),
        "smoke": plan.smoke,
        "machine": raw.machine,
        "sender_threads": plan.threads,
        "flood_seconds": plan.flood.as_secs_f64(),
        "receive_buffer_bytes": raw.sink_receive_buffer,
        "rounds": plan.reps,
        "load_before": raw.load_before,
        "load_after": raw.load_after,
        "ceiling_per_s": raw.ceiling.best_rate(),
        "ceiling": raw.ceiling.json(),
        "ceiling_receiver_counted": raw.sink_counted,
        "floods": raw.floods.iter().map(|(_, s)| s.json()).collect::<Vec<_>>(),
        "distinct_sources": full.map_or_else(Vec::new, |f| series(&f.many)),
        "single_source_matched": full.map_or_else(Vec::new, |f| series(&f.matched)),
        "valid": full.map(|f| {
            let v = &f.valid;
            json!({
                "datagrams": v.datagrams, "sent": v.sent, "kernel_drops": v.kernel_drops,
                "accepted": v.accepted, "accepted_per_s": v.accepted_rate,
                "executed": v.executed, "executed_per_s": v.executed_rate,
                "baseline_durable_writes_per_s": v.baseline_rate,
                "baseline_write_ms": {"p50": p(&v.write_ms, 0.5), "p99": p(&v.write_ms, 0.99)},
                "ratio_to_baseline": rate_ratio(v.accepted_rate, v.baseline_rate),
            })
        }),
        "latency_ms": full.map(|f| {
            let l = &f.latency;
            json!({
                "idle": {"p50": p(&l.idle, 0.5), "p99": p(&l.idle, 0.99), "samples": l.idle.len(), "missing": l.idle_missing},
                "flood": l.calm.json(),
                "flood_busy_disk": l.busy.json(),
                "busy_disk_write_ms": {"p50": p(&l.busy_write_ms, 0.5), "p99": p(&l.busy_write_ms, 0.99)},
                "to": "the command's first action (a shell builtin writing into a FIFO)",
                "sh_started_by_bench_p50": l.floor_ms,
            })
        }),
        "idle": full.map(|f| json!({"seconds": f.idle.secs, "rss_bytes": f.idle.rss, "cpu_percent": f.idle.cpu_percent, "wakeups_per_s": f.idle.wakeups_per_s})),
        "server_vm_hwm_bytes": full.map(|f| f.peak),
        "server_log_lines": full.map(|f| f.log_lines),
        "one_64_flood": one_64_json,
        "table": rows.iter().map(|r| json!({"metric": r.metric, "measured": r.measured, "target": r.target, "met": r.met, "caveat": r.caveat})).collect::<Vec<_>>(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Series;
    use crate::stats::tests::run;

    #[test]
    fn ratios_divide_and_never_by_zero() {
        assert_eq!(rate_ratio(500.0, 1000.0), 0.5);
        assert_eq!(cost_ratio(0.5, 1.0), 0.5);
        assert!(rate_ratio(1.0, 0.0).is_finite());
        assert!(cost_ratio(1.0, 0.0).is_finite());
    }

    #[test]
    fn a_sender_bound_reference_is_judged_on_cost() {
        assert_eq!(judged(true, 0.9, 0.4), 0.4);
        assert_eq!(judged(false, 0.9, 0.4), 0.9);
    }

    #[test]
    fn a_sender_bound_flood_below_target_is_inconclusive_not_failed() {
        assert!(inconclusive(true, 0.4, 0.5).is_some());
        assert!(inconclusive(true, 0.6, 0.5).is_none(), "met anyway");
        assert!(
            inconclusive(false, 0.4, 0.5).is_none(),
            "the receiver's own"
        );
        assert_eq!(met_label(Some(false), Some("why")), "n/a");
        assert_eq!(met_label(Some(false), None), "no");
        assert_eq!(met_label(Some(true), Some("why")), "yes");
        assert_eq!(met_label(None, None), "-");
    }

    #[test]
    fn shipped_limits_parse_and_a_missing_one_is_an_error() {
        assert_eq!(shipped_limit(rig::SHIPPED_LIMITS, "global"), Ok(100_000.0));
        assert_eq!(shipped_limit(rig::SHIPPED_LIMITS, "burst"), Ok(5.0));
        assert!(shipped_limit(rig::SHIPPED_LIMITS, "nope").is_err());
    }

    #[test]
    fn the_aead_cap_is_half_the_burst_plus_the_refill_plus_the_64s_burst() {
        // 100,000/s global, half kept: 50,000 + 100,000 x 3.01 s + 5.
        assert!((aead_cap(100_000.0, 5.0, 0.5, 3.0) - 351_005.0).abs() < 1e-6);
    }

    #[test]
    fn rss_is_flat_within_one_mib() {
        assert!(rss_flat(10 << 20, &[10 << 20, (11 << 20) - 1, 11 << 20]));
        assert!(!rss_flat(10 << 20, &[(11 << 20) + 1]));
    }

    fn raw_of(ceiling: Series, floods: Vec<(Kind, Series)>, sink_counted: u64) -> Raw {
        Raw {
            started_at: 0,
            machine: Value::Null,
            load_before: Value::Null,
            load_after: Value::Null,
            sink_receive_buffer: 0,
            ceiling,
            sink_counted,
            floods,
            full: None,
        }
    }

    #[test]
    fn flood_rows_give_both_ratios_and_judge_on_cost_when_the_ceiling_was_sender_bound() {
        let mut ceiling = Series::new("ceiling (bare recvmmsg loop)", None);
        ceiling.push(run(1_000_000.0, 3_000_000, 1.5, true), 1.0);
        let mut bad = Series::new("known key id, bad tag flood", Some(0.5));
        // Rate 60% of the ceiling, cost 0.5 / 1.25 = 40%: the cost decides, not met.
        bad.push(run(600_000.0, 2_000_000, 2.5, false), 0.6);
        let raw = raw_of(ceiling, vec![(Kind::BadTag, bad)], 3_000_000);
        let rows = rows(&raw).unwrap();
        assert_eq!(rows.len(), 3, "ceiling, the flood, the cross-check");
        let r = &rows[1];
        assert_eq!(
            r.measured,
            "600000/s = 60% of ceiling, cost ratio 40% (1.25 CPU s/M)"
        );
        assert_eq!(r.target, ">= 50%");
        assert_eq!(r.met, Some(false));
        assert!(r.caveat.is_none());
        assert_eq!(rows[2].met, Some(true), "the ceiling counted what was sent");
        assert!(
            rows[0].measured.ends_with("sender-bound in 1/1 rounds"),
            "{}",
            rows[0].measured
        );
    }

    #[test]
    fn a_sender_bound_flood_under_target_is_n_a_when_the_ceiling_saturated() {
        let mut ceiling = Series::new("ceiling", None);
        ceiling.push(run(1_000_000.0, 3_000_000, 1.5, false), 1.0);
        let mut bad = Series::new("bad", Some(0.5));
        bad.push(run(450_000.0, 1_000_000, 0.8, true), 0.45);
        let raw = raw_of(ceiling, vec![(Kind::BadTag, bad)], 1);
        let rows = rows(&raw).unwrap();
        assert_eq!(rows[1].met, Some(false), "judged on the rate, 45%");
        assert!(rows[1].caveat.is_some(), "but the flood was sender-bound");
        assert_eq!(met_label(rows[1].met, rows[1].caveat.as_deref()), "n/a");
        assert_eq!(rows[2].met, Some(false), "the ceiling's own count is off");
    }
}
