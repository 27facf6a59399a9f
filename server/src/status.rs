//! Outcome counters, the `STATUS=` line built from them, and the throttled rejection summary
//! (one event per reason and source, per interval, for at most `SUMMARY_SOURCES` sources).
//! It must never log once per datagram nor grow with the number of sources.

use ruroco_proto::Reject;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Source addresses remembered per reason between two summaries; the rest are only counted.
pub const SUMMARY_SOURCES: usize = 8;

/// Counters shared by the receive loop and the commander link.
#[derive(Debug, Default)]
pub struct Counters {
    /// Datagrams read from the socket.
    pub received: AtomicU64,
    /// Datagrams that passed every check and whose floor is durable.
    pub accepted: AtomicU64,
    /// Frames written to the commander's socket (the first time; a resend is not counted again).
    pub forwarded: AtomicU64,
    /// Frames the commander acknowledged, whatever the outcome.
    pub delivered: AtomicU64,
    /// Frames that will never reach the commander: queue full or stale.
    pub queue_dropped: AtomicU64,
    /// Accepted datagrams not forwarded because their floor could not be written.
    pub persist_failed: AtomicU64,
    rejected: [AtomicU64; Reject::ALL.len()],
}

impl Counters {
    /// Count one.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Count `n`.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Count one rejection for `r`.
    pub fn reject(&self, r: Reject) {
        Self::inc(&self.rejected[r.index()]);
    }

    /// Rejections counted for `r`.
    pub fn rejected(&self, r: Reject) -> u64 {
        self.rejected[r.index()].load(Ordering::Relaxed)
    }

    /// `received=N accepted=N forwarded=N delivered=N queue_dropped=N persist_failed=N
    /// <reason>=N...`
    pub fn status_line(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut s = format!(
            "received={} accepted={} forwarded={} delivered={} queue_dropped={} persist_failed={}",
            get(&self.received),
            get(&self.accepted),
            get(&self.forwarded),
            get(&self.delivered),
            get(&self.queue_dropped),
            get(&self.persist_failed),
        );
        for r in Reject::ALL {
            let _ = write!(s, " {}={}", r.as_str(), self.rejected(r));
        }
        s
    }
}

/// One remembered source: its address, its count, and the last destination it used (for
/// `wrong_destination`).
type Slot = (IpAddr, u64, Option<IpAddr>);

#[derive(Debug, Clone, Copy, Default)]
struct Pending {
    sources: [Option<Slot>; SUMMARY_SOURCES],
    /// Rejections from sources beyond the remembered ones.
    others: u64,
    /// Monotonic seconds of the last summary for this reason.
    last_flush: Option<u64>,
}

/// One summary line per reason and source per interval.
#[derive(Debug)]
pub struct RejectLog {
    interval_s: u64,
    pending: [Pending; Reject::ALL.len()],
}

/// One line of a summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SummaryLine {
    Source {
        reason: Reject,
        ip: IpAddr,
        count: u64,
        /// The server address the datagram named (`dst_ip`), for `wrong_destination`; the
        /// last one seen from this source in the interval.
        dst: Option<IpAddr>,
    },
    Others {
        reason: Reject,
        count: u64,
    },
}

impl RejectLog {
    pub fn new(interval_s: u64) -> Self {
        Self {
            interval_s,
            pending: [Pending::default(); Reject::ALL.len()],
        }
    }

    /// Remember one rejection (O(SUMMARY_SOURCES)).
    pub fn record(&mut self, reason: Reject, ip: IpAddr) {
        self.record_to(reason, ip, None);
    }

    /// Remember one rejection of a datagram that named `dst` as the server's address.
    pub fn record_to(&mut self, reason: Reject, ip: IpAddr, dst: Option<IpAddr>) {
        let p = &mut self.pending[reason.index()];
        for slot in p.sources.iter_mut() {
            match slot {
                Some((seen, n, last)) if *seen == ip => {
                    *n += 1;
                    *last = dst.or(*last);
                    return;
                }
                None => {
                    *slot = Some((ip, 1, dst));
                    return;
                }
                Some(_) => {}
            }
        }
        p.others += 1;
    }

    /// The lines due at `now_s`: reasons with pending rejections whose last summary is at
    /// least one interval old (a quiet reason is reported at the first tick).
    pub fn due(&mut self, now_s: u64) -> Vec<SummaryLine> {
        let mut out = Vec::new();
        for r in Reject::ALL {
            let p = &mut self.pending[r.index()];
            if p.sources[0].is_none() {
                continue;
            }
            if p.last_flush
                .is_some_and(|t| now_s.saturating_sub(t) < self.interval_s)
            {
                continue;
            }
            for (ip, count, dst) in p.sources.iter().flatten() {
                out.push(SummaryLine::Source {
                    reason: r,
                    ip: *ip,
                    count: *count,
                    dst: *dst,
                });
            }
            if p.others > 0 {
                out.push(SummaryLine::Others {
                    reason: r,
                    count: p.others,
                });
            }
            *p = Pending {
                last_flush: Some(now_s),
                ..Pending::default()
            };
        }
        out
    }
}

/// What an operator does about a rejection a key holder caused (`None` for the reasons the
/// fail2ban filter counts: nothing to fix on this side).
pub fn hint(reason: Reject) -> Option<&'static str> {
    Some(match reason {
        Reject::Duplicate => {
            "a copy of a datagram already accepted (the client sends one to every address of this server, or the network duplicated it): it ran once, nothing to do"
        }
        Reject::BadVersion => "the client speaks another protocol version: use matching releases",
        Reject::Future => {
            "the counter is ahead of the clock of this server by more than max_clock_skew: fix the clock of the client or of this server"
        }
        Reject::TooOld => {
            "the counter is older than max_age: fix the clock of the client, or run `ruroco-client reseed` on it"
        }
        Reject::WrongDestination => {
            "the client sent to an address not in `ips` of server.toml: add dst_ip to `ips` if it is an address of this server (e.g. the public address in front of a NAT), else fix the address the client sends to"
        }
        Reject::SourceMismatch => {
            "the client is behind a NAT or proxy: send with `--permissive`, or claim the public address with `-i`"
        }
        Reject::NotAClient => {
            "the claimed client address is unspecified, broadcast or multicast: fix `-i` of the client"
        }
        Reject::NotAllowed => {
            "the command is not in the allow-list of this key: add it to `[keys.<name>] commands` in server.toml, or use another key"
        }
        Reject::BadLength
        | Reject::UnknownKey
        | Reject::RateLimited
        | Reject::BadTag
        | Reject::Replay => return None,
    })
}

/// Emit summary lines. The reasons the fail2ban filter counts ([`Reject::is_hostile`]) are
/// `rejected` warnings whose message, `rejected <reason> from <ip> count=<n>`, is what the
/// filter matches. The other reasons a key holder causes are `rejected` warnings of the
/// same shape with a `hint` field (and `dst_ip` for `wrong_destination`, also in the
/// message): the filter names the reasons it counts. `duplicate` is an `info` event
/// `duplicate` (`duplicate from <ip> count=<n>: not run again`).
pub fn log_summary(lines: &[SummaryLine]) {
    for l in lines {
        match l {
            SummaryLine::Source {
                reason: reason @ Reject::Duplicate,
                ip,
                count,
                ..
            } => tracing::info!(
                event = "duplicate",
                reason = %reason,
                src_ip = %ip,
                count = count,
                hint = hint(*reason),
                "duplicate from {ip} count={count}: not run again"
            ),
            SummaryLine::Source {
                reason, ip, count, ..
            } if reason.is_hostile() => tracing::warn!(
                event = "rejected",
                reason = %reason,
                src_ip = %ip,
                count = count,
                "rejected {reason} from {ip} count={count}"
            ),
            SummaryLine::Source {
                reason,
                ip,
                count,
                dst,
            } => tracing::warn!(
                event = "rejected",
                reason = %reason,
                src_ip = %ip,
                dst_ip = dst.map(tracing::field::display),
                count = count,
                hint = hint(*reason),
                "rejected {reason} from {ip} count={count}{}",
                dst.map(|d| format!(" dst_ip={d}")).unwrap_or_default()
            ),
            SummaryLine::Others { reason, count } => tracing::warn!(
                event = "rejected",
                reason = %reason,
                count = count,
                "rejected {reason} from further sources count={count}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn status_line_lists_every_reason_in_order() {
        let c = Counters::default();
        Counters::inc(&c.received);
        c.reject(Reject::Replay);
        let s = c.status_line();
        assert!(s.starts_with(
            "received=1 accepted=0 forwarded=0 delivered=0 queue_dropped=0 persist_failed=0 \
             bad_length=0"
        ));
        assert!(s.contains(" replay=1 duplicate=0 "));
        assert!(s.ends_with(" not_allowed=0"));
        assert_eq!(s.split(' ').count(), 6 + Reject::ALL.len());
    }

    #[test]
    fn summary_is_throttled_and_bounded() {
        let mut log = RejectLog::new(10);
        let ip = |n: u8| IpAddr::V4(Ipv4Addr::new(10, 0, 0, n));
        for n in 0..20u8 {
            for _ in 0..3 {
                log.record(Reject::BadTag, ip(n));
            }
        }
        let lines = log.due(100);
        assert_eq!(lines.len(), SUMMARY_SOURCES + 1);
        assert_eq!(
            lines[0],
            SummaryLine::Source {
                reason: Reject::BadTag,
                ip: ip(0),
                count: 3,
                dst: None
            }
        );
        assert_eq!(
            lines[SUMMARY_SOURCES],
            SummaryLine::Others {
                reason: Reject::BadTag,
                count: 36
            }
        );
        log.record(Reject::BadTag, ip(1));
        assert!(log.due(105).is_empty(), "one summary per 10 s");
        assert_eq!(log.due(110).len(), 1);
        assert!(log.due(200).is_empty(), "nothing pending, nothing logged");
    }
}

#[cfg(test)]
mod wrong_destination_tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn wrong_destination_carries_the_destination_the_client_used() {
        let mut log = RejectLog::new(10);
        let src = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
        let dst = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
        log.record_to(Reject::WrongDestination, src, Some(dst));
        log.record_to(Reject::WrongDestination, src, None);
        assert_eq!(
            log.due(0),
            vec![SummaryLine::Source {
                reason: Reject::WrongDestination,
                ip: src,
                count: 2,
                dst: Some(dst)
            }]
        );
    }

    #[test]
    fn every_reason_a_key_holder_causes_has_a_hint() {
        for r in Reject::ALL {
            assert_eq!(hint(r).is_none(), r.is_hostile(), "{r}");
            // Nothing logfmt would escape (quotes, backslashes, apostrophes).
            assert!(
                !hint(r).unwrap_or_default().contains(['\'', '"', '\\']),
                "{r}"
            );
        }
    }
}
