//! The benchmark's raw numbers and the statistics over its rounds: one flood against one
//! receiver (`Measured`), one scenario over all rounds (`Series`), medians and percentiles.
//! Pure data and arithmetic; it must never measure, print or judge against a target.

use crate::load::Sent;
use serde_json::{Value, json};

/// One flood against one receiver.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub name: String,
    pub sent: Sent,
    pub drops: u64,
    pub processed: u64,
    pub secs: f64,
    pub rate: f64,
    pub cpu_s: f64,
    /// The server's own count for the flood (STATUS= delta), when a server received it.
    pub status_received: Option<u64>,
    /// The STATUS= counter the flood should move, and its delta.
    pub status_reason: Option<(String, u64)>,
    /// No kernel drops: the receiver kept up, so the rate is the sender's (a lower bound).
    pub sender_bound: bool,
    pub rss_peak: u64,
    /// The queue was not empty `DRAIN_LIMIT` after the sender stopped.
    pub stalled: Option<Value>,
}

/// Under 1% of what was sent dropped by the kernel: the receiver kept up, so the rate is
/// (about) the offered one, the sender's, and only a lower bound of the receiver's capacity.
pub fn sender_bound(sent: u64, drops: u64) -> bool {
    drops.saturating_mul(100) < sent
}

impl Measured {
    /// CPU seconds of the receiver per million datagrams it processed.
    pub fn cpu_per_million(&self) -> f64 {
        self.cpu_s / (self.processed.max(1) as f64 / 1e6)
    }

    pub fn json(&self) -> Value {
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

/// One scenario measured once per round.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub target: Option<f64>,
    pub runs: Vec<Measured>,
    /// Per round: rate over the same round's ceiling (or single-source rate).
    pub ratios: Vec<f64>,
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

/// The nearest-rank percentile `p` (0..=1) of `sorted`; NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

impl Series {
    pub fn new(name: &str, target: Option<f64>) -> Self {
        Self {
            name: name.to_owned(),
            target,
            runs: Vec::new(),
            ratios: Vec::new(),
        }
    }
    pub fn push(&mut self, m: Measured, ratio: f64) {
        self.runs.push(m);
        self.ratios.push(ratio);
    }
    /// The least disturbed round: interference on a shared machine only ever lowers a rate.
    pub fn best(&self) -> Option<&Measured> {
        self.runs
            .iter()
            .filter(|m| m.stalled.is_none())
            .max_by(|a, b| a.rate.total_cmp(&b.rate))
    }
    pub fn best_rate(&self) -> f64 {
        self.best().map_or(0.0, |m| m.rate)
    }
    /// The best round had no kernel drops: the receiver kept up, the rate is the sender's.
    pub fn best_sender_bound(&self) -> bool {
        self.best().is_some_and(|m| m.sender_bound)
    }
    pub fn median_rate(&self) -> f64 {
        median(self.runs.iter().map(|m| m.rate).collect())
    }
    pub fn median_ratio(&self) -> f64 {
        median(self.ratios.clone())
    }
    pub fn median_cpu(&self) -> f64 {
        median(self.runs.iter().map(Measured::cpu_per_million).collect())
    }
    /// Lowest CPU seconds per million over the rounds: interference only adds to it.
    pub fn best_cpu(&self) -> f64 {
        self.runs
            .iter()
            .filter(|m| m.stalled.is_none())
            .map(Measured::cpu_per_million)
            .min_by(f64::total_cmp)
            .unwrap_or(f64::NAN)
    }
    pub fn hwm(&self) -> u64 {
        self.runs.iter().map(|m| m.rss_peak).max().unwrap_or(0)
    }
    /// Rounds in which the receiver had no kernel drops (its rate is the sender's).
    pub fn sender_bound(&self) -> usize {
        self.runs.iter().filter(|m| m.sender_bound).count()
    }
    /// Every run's count (sent minus drops) equals the server's own STATUS= counters.
    pub fn cross_checked(&self) -> bool {
        self.runs.iter().all(|m| {
            m.status_received.is_none_or(|r| r == m.processed)
                && m.status_reason
                    .as_ref()
                    .is_none_or(|(_, d)| *d == m.processed)
        })
    }
    pub fn json(&self) -> Value {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A run with `rate`/s, `cpu_s` CPU seconds for `processed` datagrams.
    pub(crate) fn run(rate: f64, processed: u64, cpu_s: f64, bound: bool) -> Measured {
        Measured {
            name: "x".into(),
            processed,
            rate,
            cpu_s,
            sender_bound: bound,
            ..Measured::default()
        }
    }

    #[test]
    fn under_one_percent_dropped_is_sender_bound() {
        assert!(sender_bound(1000, 9));
        assert!(!sender_bound(1000, 10));
        assert!(!sender_bound(0, 0), "nothing sent says nothing");
        assert!(sender_bound(u64::MAX, 1), "no overflow");
    }

    #[test]
    fn percentile_is_nearest_rank_and_median_sorts() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.5), 2.0);
        assert_eq!(percentile(&v, 0.99), 4.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert!(percentile(&[], 0.5).is_nan());
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    }

    #[test]
    fn cpu_per_million_scales_and_survives_zero() {
        assert_eq!(run(0.0, 2_000_000, 1.0, false).cpu_per_million(), 0.5);
        assert_eq!(run(0.0, 0, 1.0, false).cpu_per_million(), 1e6);
    }

    #[test]
    fn best_round_skips_stalled_runs_and_takes_the_highest_rate_and_lowest_cost() {
        let mut s = Series::new("s", Some(0.5));
        s.push(run(100.0, 1_000_000, 0.9, false), 1.0);
        s.push(run(300.0, 1_000_000, 0.7, true), 1.0);
        let mut stalled = run(900.0, 1_000_000, 0.1, false);
        stalled.stalled = Some(json!({}));
        s.push(stalled, 1.0);
        assert_eq!(s.best_rate(), 300.0);
        assert!(s.best_sender_bound());
        assert!((s.best_cpu() - 0.7).abs() < 1e-12);
        assert_eq!(s.sender_bound(), 1);
        assert_eq!(s.median_rate(), 300.0);
        assert!(Series::new("empty", None).best_cpu().is_nan());
        assert_eq!(Series::new("empty", None).best_rate(), 0.0);
    }

    #[test]
    fn cross_check_compares_processed_with_both_status_counters() {
        let mut m = run(1.0, 10, 0.0, false);
        let mut s = Series::new("s", None);
        s.push(m.clone(), 1.0);
        assert!(s.cross_checked(), "no STATUS= (the ceiling) checks nothing");
        m.status_received = Some(10);
        m.status_reason = Some(("bad_tag".into(), 10));
        s.push(m.clone(), 1.0);
        assert!(s.cross_checked());
        m.status_reason = Some(("bad_tag".into(), 9));
        s.push(m, 1.0);
        assert!(!s.cross_checked());
    }
}
